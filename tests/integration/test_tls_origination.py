"""TLS origination from a cluster (UpstreamTlsContext) and SDS secrets, with real handshakes.

A TLS upstream reached with a SAN check; each bad server refused as a connect failure (503 UF, Envoy 1.40's
`remote connection failure` body, the TLS reason in %UPSTREAM_TRANSPORT_FAILURE_REASON%) with its
`cluster.<name>.ssl.*` stat; transport_socket_matches (Istio auto-mTLS by endpoint metadata); SDS secrets that
arrive late (fail closed, then work) and rotate (new connections get the new certificate, a kept-alive one keeps
working); two pyproxies doing mTLS with SPIFFE certificates, the server side seeing the client's identity.
"""
from __future__ import annotations

import pytest

from pyproxy.tls.secrets import TlsCertificate, ValidationContext
from tests.support.client import RawClient
from tests.support.pki import TestCA
from tests.support.proxy import bootstrap, cluster
from tests.support.tls import client_ctx, downstream_tls, server_ctx, upstream_tls, uri_san, with_chains
from tests.support.loops import both_event_loops

SERVER_ID = "spiffe://cluster.local/ns/server/sa/httpbin"
CLIENT_ID = "spiffe://cluster.local/ns/client/sa/sleep"
LOG = {"code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "details": "%RESPONSE_CODE_DETAILS%",
       "utfr": "%UPSTREAM_TRANSPORT_FAILURE_REASON%", "peer": "%DOWNSTREAM_PEER_URI_SAN%"}


event_loop_policy = both_event_loops  # every test runs on asyncio and on uvloop


@pytest.fixture(scope="module")
def pki():
    ca, other = TestCA("mesh"), TestCA("other")
    return {"ca": ca, "server": ca.issue(uris=[SERVER_ID]), "client": ca.issue(uris=[CLIENT_ID]),
            "expired": ca.issue(uris=[SERVER_ID], not_before=-7200, not_after=-3600),
            "stranger": other.issue(uris=[SERVER_ID])}


def _config(tmp_path, clusters):
    b = bootstrap(clusters, access_log=tmp_path / "access.log")
    b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["access_log"][0][
        "typed_config"]["log_format"]["json_format"] = LOG
    return b


def _stat(proxy, name):
    return proxy.stat(f"cluster.backend.ssl.{name}")


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
async def test_a_new_upstream_connection_resumes_the_clusters_last_session(pki, upstream_factory, proxy_factory,
                                                                           tmp_path, version):
    """Envoy's UpstreamTlsContext max_session_keys (default 1): the next connection to the cluster offers the last
    session, the server takes it (no certificate exchange), `ssl.session_reused` counts it, and the SAN check and
    the client identity hold as on a full handshake. TLS 1.2 (Envoy's client default) has its ticket in the
    handshake; TLS 1.3 sends it after, so it is kept after the first response."""
    up = await upstream_factory("tls", ssl=server_ctx(pki["server"], pki["ca"].cert_pem))
    ts = upstream_tls(pki["client"], pki["ca"].cert_pem, sans=[uri_san(SERVER_ID)],
                      tls_params={"tls_minimum_protocol_version": version, "tls_maximum_protocol_version": version})
    proxy = await proxy_factory(_config(tmp_path, [cluster("backend", [up.port], transport_socket=ts)]))
    for _ in range(3):  # /conn-close: the upstream closes each connection after its answer, the next is new
        c = await RawClient.connect(proxy.port)
        assert (await c.request("GET", "/conn-close")).status == 200
        c.writer.close()
    assert up.connections == 3
    assert up.sessions_reused == [False, True, True]
    assert (_stat(proxy, "handshake"), _stat(proxy, "session_reused")) == (3, 2)
    client_der = pki["client"].cert.public_bytes(__import__("cryptography").hazmat.primitives.serialization
                                                 .Encoding.DER)
    assert up.peer_certs == [client_der] * 3  # the server still knows who the client is


async def test_origination_with_san_check_reaches_a_tls_upstream(pki, upstream_factory, proxy_factory, tmp_path):
    up = await upstream_factory("tls", ssl=server_ctx(pki["server"], pki["ca"].cert_pem))
    ts = upstream_tls(pki["client"], pki["ca"].cert_pem, sni="outbound_.80_._.httpbin.server.svc.cluster.local",
                      sans=[uri_san(SERVER_ID)])
    proxy = await proxy_factory(_config(tmp_path, [cluster("backend", [up.port], transport_socket=ts)]))
    c = await RawClient.connect(proxy.port)
    for _ in range(3):
        assert (await c.request("GET", "/")).status == 200
    c.writer.close()
    assert up.connections == 1  # the pooled TLS connection is kept and reused
    assert up.peer_certs == [pki["client"].cert.public_bytes(__import__("cryptography").hazmat.primitives.
                                                             serialization.Encoding.DER)]
    assert _stat(proxy, "handshake") == 1


@pytest.mark.parametrize("server, sans, stat, reason", [
    ("stranger", [uri_san(SERVER_ID)], "fail_verify_error",
     "TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify_cert_failed:_X509_verify_"
     "cert:_certificate_verification_error_at_depth_0:_unable_to_get_local_issuer_certificate:TLS_error_end"),
    ("expired", [uri_san(SERVER_ID)], "fail_verify_error",
     "TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify_cert_failed:_X509_verify_"
     "cert:_certificate_verification_error_at_depth_0:_certificate_has_expired:TLS_error_end"),
    ("server", [uri_san(prefix="spiffe://cluster.local/ns/other/")], "fail_verify_san",
     "TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify_cert_failed:_SAN_matcher,"
     f"_certificate_SANs_are_[{SERVER_ID}]:TLS_error_end"),
    (None, [uri_san(SERVER_ID)], "connection_error",
     "TLS_error:|268435703:SSL_routines:OPENSSL_internal:WRONG_VERSION_NUMBER:TLS_error_end"),
])
async def test_bad_upstreams_are_connect_failures_with_their_stat(pki, upstream_factory, proxy_factory, tmp_path,
                                                                  server, sans, stat, reason):
    up = await upstream_factory("tls", ssl=server_ctx(pki[server]) if server else None)
    ts = upstream_tls(None, pki["ca"].cert_pem, sans=sans)
    proxy = await proxy_factory(_config(tmp_path, [cluster("backend", [up.port], transport_socket=ts)]))
    r = await proxy.fetch("GET", "/")
    assert (r.status, r.body) == (503, b"upstream connect error or disconnect/reset before headers. "
                                       b"reset reason: remote connection failure")
    (entry,) = proxy.access_log()
    assert (entry["flags"], entry["utfr"]) == ("UF", reason)
    assert entry["details"] == f"upstream_reset_before_response_started{{remote_connection_failure|{reason}}}"
    assert up.requests == []
    assert (_stat(proxy, stat), _stat(proxy, "handshake")) == (1, 0)


async def test_transport_socket_matches_pick_mtls_per_endpoint(pki, upstream_factory, proxy_factory, tmp_path):
    """Istio auto-mTLS: endpoints labelled tlsMode=istio get the mTLS socket, the others plaintext."""
    tls_up = await upstream_factory("mesh", ssl=server_ctx(pki["server"], pki["ca"].cert_pem, require_client=True))
    plain_up = await upstream_factory("legacy")
    c = cluster("backend", [], transport_socket_matches=[
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
         "transport_socket": upstream_tls(pki["client"], pki["ca"].cert_pem, sans=[uri_san(SERVER_ID)])},
        {"name": "tlsMode-disabled", "match": {},
         "transport_socket": {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
             "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}}])
    c["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": tls_up.port}}},
         "metadata": {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}},
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": plain_up.port}}}}]
    proxy = await proxy_factory(_config(tmp_path, [c]))
    statuses = [(await proxy.fetch("GET", "/")).status for _ in range(4)]
    assert statuses == [200] * 4
    assert (len(tls_up.requests), len(plain_up.requests)) == (2, 2)
    assert _stat(proxy, "handshake") == 1


async def test_sds_secret_missing_fails_closed_then_works_and_rotates(pki, upstream_factory, proxy_factory,
                                                                     tmp_path):
    """Named secrets (istiod's `default` / `ROOTCA`): accepted before they exist; handshakes fail closed and
    are counted; the first connection after the secret arrives works; a rotation reaches new connections while
    a kept-alive connection keeps its handshake."""
    ca = pki["ca"]
    chains = [{"transport_socket": downstream_tls(None, cert_sds="default", ca_sds="ROOTCA", require_client=False)}]
    up = await upstream_factory()
    cfg = with_chains(_config(tmp_path, {"backend": [up.port]}), chains)
    proxy = await proxy_factory(cfg)
    lst = "listener.127.0.0.1_0.ssl."
    ctx = client_ctx(ca.cert_pem)
    with pytest.raises(Exception):
        await RawClient.connect(proxy.port, ssl=ctx)
    assert proxy.stat(lst + "connection_error") == 1
    first, second = ca.issue(uris=["spiffe://cluster.local/ns/s/sa/one"]), ca.issue(uris=[SERVER_ID])
    secrets = proxy.server.secrets
    secrets.set("ROOTCA", ValidationContext(ca.cert_pem))
    secrets.set("default", TlsCertificate(first.chain_pem, first.key_pem))
    kept = await RawClient.connect(proxy.port, ssl=ctx)
    assert (await kept.request("GET", "/")).status == 200
    secrets.set("default", TlsCertificate(second.chain_pem, second.key_pem))
    fresh = await RawClient.connect(proxy.port, ssl=ctx)
    assert (await fresh.request("GET", "/")).status == 200
    assert (await kept.request("GET", "/still")).status == 200  # the existing connection keeps working

    def serial(c):
        from cryptography import x509
        return x509.load_der_x509_certificate(
            c.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)).serial_number
    assert (serial(kept), serial(fresh)) == (first.cert.serial_number, second.cert.serial_number)
    kept.writer.close()
    fresh.writer.close()
    assert proxy.stat(lst + "handshake") == 2


async def test_two_pyproxies_do_mtls_and_the_server_sees_the_client_identity(pki, upstream, proxy_factory,
                                                                             tmp_path):
    """client app -> pyproxy A (outbound, ISTIO_MUTUAL shape over SDS) -> mTLS -> pyproxy B (inbound STRICT)
    -> app. B's access log and the x-forwarded-client-cert it adds name A's workload identity."""
    ca = pki["ca"]
    inbound = with_chains(_config(tmp_path / "b", {"backend": [upstream.port]}), [{
        "transport_socket": downstream_tls(None, cert_sds="default", ca_sds="ROOTCA", require_client=True),
        "hcm": {"forward_client_cert_details": "APPEND_FORWARD",
                "set_current_client_cert_details": {"subject": True, "uri": True}}}])
    (tmp_path / "b").mkdir()
    b = await proxy_factory(inbound)
    b.server.secrets.set("ROOTCA", ValidationContext(ca.cert_pem))
    b.server.secrets.set("default", TlsCertificate(pki["server"].chain_pem, pki["server"].key_pem))
    (tmp_path / "a").mkdir()
    ts = upstream_tls(None, None, cert_sds="default", ca_sds="ROOTCA", sans=[uri_san(SERVER_ID)],
                      sni="outbound_.8000_._.httpbin.server.svc.cluster.local", alpn=["istio"])
    a = await proxy_factory(_config(tmp_path / "a", [cluster("backend", [b.port], transport_socket=ts)]))
    a.server.secrets.install_workload_secret(type("W", (), {
        "root_bundle_pem": ca.cert_pem, "cert_chain_pem": pki["client"].chain_pem,
        "private_key_pem": pki["client"].key_pem})())
    r = await a.fetch("GET", "/hello")
    assert r.status == 200
    xfcc = upstream.requests[0].header("x-forwarded-client-cert")
    assert xfcc.startswith(f"By={SERVER_ID};Hash=") and xfcc.endswith(f';Subject="";URI={CLIENT_ID}')
    (entry,) = b.access_log()
    assert entry["peer"] == CLIENT_ID
    assert a.stat("cluster.backend.ssl.handshake") == 1
    assert b.stat("listener.127.0.0.1_0.ssl.handshake") == 1
