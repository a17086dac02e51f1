"""benchmarks/tls_bench.py's pieces on real processes: the PKI it builds with the project's CA, and the mTLS path
it measures (wrk → pyproxy over TLS → nginx origin that requires a client certificate) really is mutual TLS."""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from benchmarks import configs, procs, run, tls_bench

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def _chain(path: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(open(path, "rb").read())


def test_the_pki_issues_p256_and_rsa_leaves_under_one_intermediate(tmp_path):
    pki = tls_bench.make_pki(tmp_path)
    root = _chain(pki.root)
    assert len(root) == 1
    keys = {}
    for name in ("server_p256", "server_rsa", "proxy_client", "origin"):
        files = getattr(pki, name)
        leaf, intermediate = _chain(files.cert_chain)  # leaf + intermediate, no root
        leaf.verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root[0])
        assert oct(os.stat(files.private_key).st_mode & 0o777) == "0o600"
        keys[name] = leaf.public_key()
    assert isinstance(keys["server_p256"], ec.EllipticCurvePublicKey) and keys["server_p256"].curve.name == "secp256r1"
    assert isinstance(keys["server_rsa"], rsa.RSAPublicKey) and keys["server_rsa"].key_size == 2048
    assert (pki.proxy_client.trusted_ca, pki.origin.trusted_ca, pki.server_p256.trusted_ca) == (pki.root, pki.root, None)


def test_in_process_handshakes_cost_some_cpu_for_either_key(tmp_path):
    pki = tls_bench.make_pki(tmp_path)
    for files in (pki.server_p256, pki.server_rsa):
        assert tls_bench.handshake_cpu_us(files, 5) > 0


def _get(port: int, ctx: ssl.SSLContext) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (benchmarks/run.py installs it)")
def test_the_pyproxy_mtls_row_reaches_an_origin_that_refuses_clients_without_a_certificate(tmp_path):
    pki = tls_bench.make_pki(tmp_path / "pki")
    args = argparse.Namespace(pyproxy_cmd=None, proxy_cpus=None, start_timeout=20.0)
    with procs.Processes(tmp_path) as pm:
        plain_port, mtls_port = procs.free_ports(2)
        origin = run.start_nginx(pm, NGINX, tmp_path, "origin", configs.nginx_origin_config(
            workdir=str(tmp_path), port=plain_port, mtls_port=mtls_port, mtls=pki.origin), plain_port, None)
        procs.wait_listening(origin, mtls_port)
        port, admin_port, _ = tls_bench.start_pyproxy(pm, args, tmp_path, "pyproxy-mtls", mtls_port,
                                                      downstream_tls=pki.server_p256, upstream_tls=pki.proxy_client,
                                                      upstream_peer_uri=tls_bench.ORIGIN_ID)
        trusting_root = ssl.create_default_context(cafile=pki.root)  # verifies pyproxy's certificate (IP SAN)
        assert _get(port, trusting_root) == (200, configs.BODY.encode())
        # the origin itself: no client certificate, no answer (nginx: 400 "No required SSL certificate was sent")
        status, body = _get(mtls_port, trusting_root)
        assert status == 400 and b"No required SSL certificate" in body
        # pyproxy counted its upstream handshake with the origin (the cluster's ssl.handshake)
        _, stats = procs.http_get(admin_port, "/stats")
        assert "cluster.backend.ssl.handshake: 1" in stats.decode()
