"""Root rotation with a two-root trust bundle, following the steps in certs/README.md over real HTTPS and real
mTLS handshakes: during the overlap a leaf under the old root and a leaf under the new root verify each other;
a sidecar that never got the two-root bundle cannot verify the new leaves (why step 2 comes first); after the
old root is dropped, old leaves stop verifying."""
from __future__ import annotations

import ssl

import pytest
from prometheus_client import CollectorRegistry

from control.ca.server import CAMetrics, CertificateService, ca_app, server_ssl_context
from control.ca.store import create_ca_set, load_cacerts, token_signer, token_verifier
from pyproxy.tls.agent import CertificateAgent
from pyproxy.tls.identity import PeerIdentity
from pyproxy.tls.pki import KeyType, issued_by, load_certificates
from tests.support.ca import CAServer, mtls_exchange

SLEEP = PeerIdentity("cluster.local", "default", "sleep")
HTTPBIN = PeerIdentity("cluster.local", "prod", "httpbin")


def signed_under(secret, ca_cert_file) -> bool:
    """The leaf was signed by the intermediate in `ca_cert_file`, which the answer carries after the leaf."""
    leaf, intermediate = load_certificates(secret.cert_chain_pem)
    ca_cert = load_certificates(ca_cert_file.read_bytes())[0]
    return intermediate == ca_cert and issued_by(leaf, ca_cert)


async def test_root_rotation_steps(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    state = tmp_path / "state"
    root_file = tmp_path / "istio-ca-root-cert.pem"      # what sidecars mount to trust 15012
    verifier = token_verifier(state)
    service = CertificateService(load_cacerts(create_ca_set(old, trust_domain="cluster.local",
                                                            key_type=KeyType.EC_P256)),
                                 verifier, CAMetrics(CollectorRegistry(auto_describe=False)))
    root_file.write_bytes(service.authority.trust_bundle_pem)
    servers: list[CAServer] = []

    async def serve() -> str:
        """(Re)start the control plane's 15012 with a serving certificate from the current CA."""
        server = await CAServer(ca_app(service), server_ssl_context(service.authority)).start()
        servers.append(server)
        return server.url

    def agent(ident: PeerIdentity, url: str) -> CertificateAgent:
        token = tmp_path / f"token-{ident.service_account}"
        token.write_text(token_signer(state).create(ident.namespace, ident.service_account))
        return CertificateAgent(url, root_cert_path=root_file, token_path=token, identity=ident)

    try:
        url = await serve()
        sleep_agent, httpbin_agent = agent(SLEEP, url), agent(HTTPBIN, url)
        sleep_v1 = await sleep_agent.fetch()                  # bundle: old root only
        assert sleep_v1.root_bundle_pem.count(b"BEGIN CERTIFICATE") == 1

        # Step 1: a new root + intermediate; keep the new root alone aside.
        create_ca_set(new, trust_domain="cluster.local", key_type=KeyType.EC_P256)
        new_root = (new / "root-cert.pem").read_bytes()
        old_root = (old / "root-cert.pem").read_bytes()

        # Step 2: trust both roots everywhere, still signing with the old intermediate; sidecars renew.
        bundle = old_root + new_root
        for d in (old, new):
            (d / "root-cert.pem").write_bytes(bundle)
        service.replace_authority(load_cacerts(old))
        root_file.write_bytes(bundle)
        sleep_v2 = await sleep_agent.fetch()
        assert sleep_v2.root_bundle_pem.count(b"BEGIN CERTIFICATE") == 2
        assert signed_under(sleep_v2, old / "ca-cert.pem")  # leaf still from the old intermediate

        # Step 3: sign with the new intermediate (control plane restarted on the new cacerts).
        service.replace_authority(load_cacerts(new))
        httpbin_agent.ca_url = await serve()                  # its serving cert now chains to the new root
        httpbin = await httpbin_agent.fetch()
        assert signed_under(httpbin, new / "ca-cert.pem")
        assert httpbin.root_bundle_pem.count(b"BEGIN CERTIFICATE") == 2

        # Overlap: old leaf and new leaf verify each other, in both directions.
        assert await mtls_exchange(httpbin, sleep_v2, [HTTPBIN.uri]) == (HTTPBIN.uri, SLEEP.uri)
        assert await mtls_exchange(sleep_v2, httpbin, [SLEEP.uri]) == (SLEEP.uri, HTTPBIN.uri)
        # A sidecar still on the old-only bundle cannot verify the new leaf: step 2 must finish first.
        with pytest.raises(ssl.SSLCertVerificationError):
            await mtls_exchange(httpbin, sleep_v1)

        # Step 4: after every old leaf has expired or been renewed, drop the old root.
        (new / "root-cert.pem").write_bytes(new_root)
        service.replace_authority(load_cacerts(new))
        root_file.write_bytes(new_root)
        sleep_agent.ca_url = httpbin_agent.ca_url
        sleep_v3 = await sleep_agent.fetch()
        httpbin_v2 = await httpbin_agent.fetch()
        assert sleep_v3.root_bundle_pem == httpbin_v2.root_bundle_pem == new_root
        assert await mtls_exchange(httpbin_v2, sleep_v3, [HTTPBIN.uri]) == (HTTPBIN.uri, SLEEP.uri)
        # an old leaf is no longer trusted by a sidecar holding only the new root
        with pytest.raises(ssl.SSLCertVerificationError):
            await mtls_exchange(sleep_v2, httpbin_v2)
    finally:
        for server in servers:
            await server.close()
