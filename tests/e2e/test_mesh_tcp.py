"""TCP and TLS traffic between live sidecars over mutual TLS (docs/security.md "Proofs", docs/tls.md).

Real processes on 127.0.0.1 (tests/support/mesh.py, secure mode, PeerAuthentication STRICT):

* TCP: an echo app behind its sidecar (port `tcp-echo`); a client whose Sidecar resource gives it an egress
  listener on the service port (`captureMode: NONE`, bound on 127.0.0.1: how an app reaches a TCP service with
  explicit capture). The client sidecar originates ISTIO_MUTUAL (auto-mTLS), the server sidecar terminates it;
  a FIN from the client crosses both sidecars (close_notify + FIN on the mTLS leg) while the app's answer still
  flows back (Envoy's tcp_proxy half-close). meshConfig `accessLogFile: /dev/stdout` with a format naming
  `%DOWNSTREAM_PEER_URI_SAN%` puts the identity the server sidecar verified into its access log (stdout).
* TLS routes: apps that speak TLS themselves, routed by SNI by the client sidecar's VirtualService `tls` rules.
* AUTO_PASSTHROUGH: a gateway routing a peer's mTLS by its SNI without terminating it.
"""
from __future__ import annotations

import asyncio
import ssl

import pytest
from cryptography import x509

from pyproxy.tls.contexts import client_context

from tests.support.mesh import (NAMESPACE, Mesh, Workload, destination_rule, fqdn, free_ports, labels,
                                outbound_cluster, probe_secret, service)
from tests.support.process import poll
from tests.support.pki import TestCA
from tests.support.tcp import exchange, tls_half_close_exchange

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

CLIENT_ID = "spiffe://cluster.local/ns/default/sa/bookinfo-client"
STRICT_MESH = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
LOG_FORMAT = "TCPLOG %UPSTREAM_CLUSTER% peer=%DOWNSTREAM_PEER_URI_SAN% rx=%BYTES_RECEIVED% tx=%BYTES_SENT%"
ACCESS_LOG = {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
              "metadata": {"name": "control-plane", "namespace": "istio-system"},
              "spec": {"meshConfig": {"accessLogFile": "/dev/stdout", "accessLogFormat": LOG_FORMAT}}}


def egress_sidecar(port: int, protocol: str = "TCP") -> dict:
    """The client's Sidecar: an egress listener for the port, bound on 127.0.0.1 (captureMode NONE)."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": "client", "namespace": NAMESPACE},
            "spec": {"workloadSelector": {"labels": {"app": "client"}},
                     "egress": [{"port": {"number": port, "protocol": protocol, "name": f"{protocol.lower()}-app"},
                                 "captureMode": "NONE", "hosts": ["./*"]},
                                {"hosts": ["./*"]}]}}


async def tcp_round_trip(port: int, payload: bytes) -> bytes:
    """Send `payload` to 127.0.0.1:port and read back as many bytes (the echo); then close."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        writer.write(payload)
        return await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    finally:
        writer.close()


async def tcp_mesh(mesh: Mesh) -> tuple[Workload, Workload, int]:
    (port,) = free_ports(1)
    mesh.write("mesh.yaml", [STRICT_MESH, ACCESS_LOG, service("echo", (("tcp-echo", port),)), egress_sidecar(port)])
    await mesh.control_plane(secure=True)
    server = mesh.start_workload("echo-v1", labels("echo"), app="tcp-echo")
    client = mesh.start_workload("client-v1", labels("client"))
    for w in (server, client):
        await w.app.ready()
        await w.sidecar.ready()
    await mesh.wait_hosts(client.sidecar, outbound_cluster("echo", port), lambda h: h == {server.sidecar.endpoint},
                          "has echo-v1")
    return client, server, port


def access_log_lines(server: Workload) -> list[str]:
    return [line for line in server.sidecar.output(tail=None).splitlines() if line.startswith("TCPLOG ")]


async def test_tcp_bytes_cross_the_mesh_over_mtls_with_the_client_identity(mesh: Mesh):
    client, server, port = await tcp_mesh(mesh)
    payload = b"hello over mtls " * 4096  # 64 KiB: several TLS records each way

    async def answered() -> bytes | None:
        try:
            return await tcp_round_trip(port, payload)
        except (OSError, asyncio.IncompleteReadError):
            return None  # the egress listener is not bound yet
    echoed = await poll("the echo answers through both sidecars", answered, detail=mesh.logs)
    assert echoed == payload

    inbound = f"inbound|{port}||{fqdn('echo')}"

    async def logged() -> list[str] | None:
        lines = [line for line in access_log_lines(server) if f" rx={len(payload)} " in line]
        return lines or None
    (line, *_) = await poll("the server sidecar logs the connection", logged, detail=mesh.logs)
    assert line.split()[1:3] == [inbound, f"peer={CLIENT_ID}"], line  # mTLS, and whose certificate

    # half-close across the mesh: the client's FIN crosses both sidecars (as close_notify + FIN on the mTLS leg),
    # the app answers after it, and that answer comes back over the half-closed connections
    half_closed, _ = await exchange(port, b"last words")
    assert half_closed == b"last words" + b"echo-v1:bye:10"

    server_stats, client_stats = await server.sidecar.stats(), await client.sidecar.stats()
    assert server_stats.get(f"listener.0.0.0.0_{server.sidecar.inbound_port}.ssl.handshake", 0) >= 1, server_stats
    assert client_stats.get(f"cluster.{outbound_cluster('echo', port)}.ssl.handshake", 0) >= 1, client_stats


async def test_strict_refuses_plaintext_tcp_to_the_server_sidecar(mesh: Mesh):
    client, server, port = await tcp_mesh(mesh)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sidecar.inbound_port)
    try:
        writer.write(b"plaintext hello")
        got = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        got = b""
    finally:
        writer.close()
    assert got == b""  # closed without a byte from the app: no plaintext chain under STRICT
    assert not [line for line in access_log_lines(server) if "rx=15 " in line]


def auto_passthrough_gateway(port: int) -> dict:
    """Istio's cross-network gateway server: TLS AUTO_PASSTHROUGH for every `*.local` SNI."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "cross-network-gateway", "namespace": "istio-system"},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{
                "port": {"number": port, "name": "tls", "protocol": "TLS"}, "hosts": ["*.local"],
                "tls": {"mode": "AUTO_PASSTHROUGH"}}]}}


async def test_an_auto_passthrough_gateway_carries_a_peers_mtls_to_the_cluster_its_sni_names(mesh: Mesh):
    """A mesh client (a workload certificate for service account `probe`) opens mTLS to the gateway with the SNI a
    sidecar's ISTIO_MUTUAL sends for echo (`outbound_.<port>_._.echo...`), as a sidecar of another network does.
    The gateway does not terminate it (no VirtualService either): the certificate the client is shown is the echo
    sidecar's, the echo answers, and the echo sidecar's access log names the probe's identity."""
    port, gw_port = free_ports(2)
    mesh.write("mesh.yaml", [STRICT_MESH, ACCESS_LOG, service("echo", (("tcp-echo", port),)),
                             auto_passthrough_gateway(gw_port)])
    await mesh.control_plane(secure=True)
    server = mesh.start_workload("echo-v1", labels("echo"), app="tcp-echo")
    await server.app.ready()
    await server.sidecar.ready()
    gateway = await mesh.gateway()
    sni = f"outbound_.{port}_._.{fqdn('echo')}"
    await mesh.wait_hosts(gateway, sni, lambda h: h == {server.sidecar.endpoint}, "has echo-v1")
    probe = await probe_secret(mesh)
    ctx = client_context(probe.root_bundle_pem, probe.cert_chain_pem, probe.private_key_pem,
                         alpn_protocols=("istio-peer-exchange", "istio"))

    async def through_gateway() -> tuple[bytes, list[str]] | None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", gw_port, ssl=ctx, server_hostname=sni), 10)
        except (OSError, ssl.SSLError):
            return None  # the gateway's listener is not up yet
        try:
            leaf = x509.load_der_x509_certificate(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
            writer.write(b"across networks")
            echoed = await asyncio.wait_for(reader.readexactly(15), 10)
        finally:
            writer.close()
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return echoed, san.get_values_for_type(x509.UniformResourceIdentifier)
    echoed, server_ids = await poll("the gateway routes by SNI", through_gateway, detail=mesh.logs)
    assert echoed == b"across networks"
    assert server_ids == ["spiffe://cluster.local/ns/default/sa/bookinfo-echo"]  # the echo sidecar's, not the gateway's

    async def logged() -> list[str] | None:
        return [line for line in access_log_lines(server) if " rx=15 " in line] or None
    (line, *_) = await poll("the echo sidecar logs the connection", logged, detail=mesh.logs)
    assert line.split()[2] == "peer=spiffe://cluster.local/ns/default/sa/probe", line


def tls_routes(hosts: dict[str, str]) -> list[dict]:
    """Service `web` (a `tls-` port, its apps terminate their own TLS), subsets v1/v2, and a VirtualService whose
    `tls` rules route each SNI (`hosts`: sni -> subset)."""
    return [destination_rule("web", ("v1", "v2")),
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "web", "namespace": NAMESPACE},
             "spec": {"hosts": ["web", *hosts], "tls": [
                 {"match": [{"sniHosts": [sni]}], "route": [{"destination": {"host": "web", "subset": subset}}]}
                 for sni, subset in hosts.items()]}}]


async def test_sidecar_tls_routes_pick_the_subset_by_sni_and_carry_the_apps_own_tls(mesh: Mesh, tmp_path):
    """The client app originates TLS itself (SNI a.web.example or b.web.example) to its sidecar's egress listener
    for the `tls-` port; the sidecar reads the SNI (tls_inspector), picks the chain of the VirtualService `tls`
    rule, and carries the app's TLS unchanged inside the mesh mTLS to the subset's sidecar, whose app terminates
    it. Each SNI reaches its own subset (its `bye` line names the app), and a half-close crosses both layers."""
    ca = TestCA("web")
    chain, key = ca.issue(dns=["a.web.example", "b.web.example"]).write(tmp_path, "web")
    (port,) = free_ports(1)
    mesh.write("mesh.yaml", [STRICT_MESH, service("web", (("tls-web", port),)), egress_sidecar(port, "TLS"),
                             *tls_routes({"a.web.example": "v1", "b.web.example": "v2"})])
    await mesh.control_plane(secure=True)
    tls_app = ["--cert", str(chain), "--key", str(key)]
    v1 = mesh.start_workload("web-v1", labels("web", "v1"), app="tcp-echo", app_args=tls_app)
    v2 = mesh.start_workload("web-v2", labels("web", "v2"), app="tcp-echo", app_args=tls_app)
    client = mesh.start_workload("client-v1", labels("client"))
    for w in (v1, v2, client):
        await w.app.ready()
        await w.sidecar.ready()
    for subset, w in (("v1", v1), ("v2", v2)):
        await mesh.wait_hosts(client.sidecar, outbound_cluster("web", port, subset),
                              lambda h, w=w: h == {w.sidecar.endpoint}, f"has web-{subset}")
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())

    async def answer(sni: str) -> bytes | None:
        try:
            return await tls_half_close_exchange(port, b"to " + sni.encode(), ctx, sni)
        except (OSError, ssl.SSLError):
            return None  # the egress listener is not bound yet
    for sni, app in (("a.web.example", "web-v1"), ("b.web.example", "web-v2")):
        got = await poll(f"{sni} answers", lambda sni=sni: answer(sni), detail=mesh.logs)
        sent = b"to " + sni.encode()
        assert got == sent + f"{app}:bye:{len(sent)}".encode()
    # the apps terminated the TLS the client started (the client verified their certificate, not a mesh one)
    assert "SNI a.web.example" in v1.app.output() and "SNI b.web.example" in v2.app.output()
