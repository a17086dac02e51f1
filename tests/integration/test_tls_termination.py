"""TLS termination on a listener (DownstreamTlsContext), with real handshakes against a throwaway CA.

What a client sees: one-way TLS; mTLS with `require_client_certificate`; bad peers refused during the handshake
(expired, not yet valid, wrong CA, no certificate) each counted under Envoy's `listener.<addr>.ssl.*` name; the
PERMISSIVE shape (TLS and plaintext on one port, told apart by tls_inspector); chain selection by SNI;
ALPN and TLS versions from `common_tls_context`; the peer's identity in the access log and in
x-forwarded-client-cert.
"""
from __future__ import annotations

import ssl

import pytest

from pyproxy.tls.sslobject import remember_session, use_direct_sslobject
from tests.support.client import PeerClosed, RawClient
from tests.support.pki import TestCA
from tests.support.proxy import bootstrap
from tests.support.tls import TLS_INSPECTOR, client_ctx, downstream_tls, with_chains
from tests.support.loops import both_event_loops

SERVER_ID = "spiffe://cluster.local/ns/server/sa/httpbin"
CLIENT_ID = "spiffe://cluster.local/ns/client/sa/sleep"
LOG = {"code": "%RESPONSE_CODE%", "peer": "%DOWNSTREAM_PEER_URI_SAN%", "local": "%DOWNSTREAM_LOCAL_URI_SAN%",
       "version": "%DOWNSTREAM_TLS_VERSION%", "sni": "%REQUESTED_SERVER_NAME%",
       "subject": "%DOWNSTREAM_PEER_SUBJECT%", "xfp": "%REQ(X-FORWARDED-PROTO)%"}


event_loop_policy = both_event_loops  # every test runs on asyncio and on uvloop


@pytest.fixture(scope="module")
def pki():
    ca, other = TestCA("mesh"), TestCA("other")
    return {
        "ca": ca, "other": other,
        "server": ca.issue(uris=[SERVER_ID], dns=["server.example.com"]),
        "client": ca.issue(uris=[CLIENT_ID], common_name="sleep"),
        "expired": ca.issue(uris=[CLIENT_ID], not_before=-7200, not_after=-3600),
        "future": ca.issue(uris=[CLIENT_ID], not_before=3600, not_after=7200),
        "stranger": other.issue(uris=[CLIENT_ID]),
    }


def _config(upstream, tmp_path, chains, **kw):
    b = bootstrap({"backend": [upstream.port]}, access_log=tmp_path / "access.log")
    b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["access_log"][0][
        "typed_config"]["log_format"]["json_format"] = LOG
    return with_chains(b, chains, **kw)


async def _get(proxy, ctx=None, sni=None, path="/"):
    c = await RawClient.connect(proxy.port, ssl=ctx, server_hostname=sni)
    try:
        return await c.request("GET", path), c
    except BaseException:
        c.writer.close()
        raise


def _stat(proxy, name):
    return proxy.stat(f"listener.127.0.0.1_0.{name}")


async def test_one_way_tls_terminates_and_forwards_plaintext(pki, upstream, proxy_factory, tmp_path):
    proxy = await proxy_factory(_config(upstream, tmp_path, [{"transport_socket": downstream_tls(pki["server"])}]))
    r, c = await _get(proxy, client_ctx(pki["ca"].cert_pem), sni="server.example.com")
    c.writer.close()
    assert (r.status, r.body) == (200, b"ok")
    assert upstream.requests[0].header("x-forwarded-proto") == "https"
    assert upstream.requests[0].header("x-forwarded-client-cert") is None
    (entry,) = proxy.access_log()
    assert entry == {"code": 200, "peer": None, "local": SERVER_ID, "version": "TLSv1.3",
                     "sni": "server.example.com", "subject": None, "xfp": "https"}
    assert (_stat(proxy, "ssl.handshake"), _stat(proxy, "ssl.no_certificate")) == (1, 1)


async def test_mtls_exposes_the_client_identity_and_sets_xfcc(pki, upstream, proxy_factory, tmp_path):
    chain = {"transport_socket": downstream_tls(pki["server"], pki["ca"].cert_pem, require_client=True),
             "hcm": {"forward_client_cert_details": "APPEND_FORWARD",
                     "set_current_client_cert_details": {"subject": True, "uri": True, "dns": True}}}
    proxy = await proxy_factory(_config(upstream, tmp_path, [chain]))
    c = await RawClient.connect(proxy.port, ssl=client_ctx(pki["ca"].cert_pem, pki["client"]))
    r = await c.request("GET", "/", headers=[("x-forwarded-client-cert", "By=spiffe://earlier;URI=spiffe://x")])
    c.writer.close()
    assert r.status == 200
    cert = pki["client"].cert
    import hashlib
    from cryptography.hazmat.primitives import serialization
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert upstream.requests[0].header("x-forwarded-client-cert") == (
        f'By=spiffe://earlier;URI=spiffe://x,By={SERVER_ID};Hash={digest};Subject="CN=sleep";URI={CLIENT_ID}')
    (entry,) = proxy.access_log()
    assert (entry["peer"], entry["subject"], entry["local"]) == (CLIENT_ID, "CN=sleep", SERVER_ID)
    assert (_stat(proxy, "ssl.handshake"), _stat(proxy, "ssl.no_certificate")) == (1, 0)


async def test_the_xfcc_element_kept_per_connection_never_carries_a_clients_header_to_the_next_request(
        pki, upstream, proxy_factory, tmp_path):
    """The element is built once per TLS session (TlsSession.memo); what a client sends is appended to per
    request. Hostile sequence on one connection: a forged header, none, another forged one: the upstream gets
    each forgery only on its own request, and the proxy's element unchanged on all three."""
    chain = {"transport_socket": downstream_tls(pki["server"], pki["ca"].cert_pem, require_client=True),
             "hcm": {"forward_client_cert_details": "APPEND_FORWARD",
                     "set_current_client_cert_details": {"uri": True}}}
    proxy = await proxy_factory(_config(upstream, tmp_path, [chain]))
    c = await RawClient.connect(proxy.port, ssl=client_ctx(pki["ca"].cert_pem, pki["client"]))
    try:
        for forged in ("By=spiffe://evil;URI=spiffe://cluster.local/ns/x/sa/admin", None, "Hash=00;URI=spiffe://y"):
            headers = [("x-forwarded-client-cert", forged)] if forged else []
            assert (await c.request("GET", "/", headers=headers)).status == 200
    finally:
        c.writer.close()
    mine = [r.header("x-forwarded-client-cert") for r in upstream.requests]
    element = mine[1]
    assert element.startswith(f"By={SERVER_ID};Hash=") and element.endswith(f";URI={CLIENT_ID}")
    assert mine == [f"By=spiffe://evil;URI=spiffe://cluster.local/ns/x/sa/admin,{element}", element,
                    f"Hash=00;URI=spiffe://y,{element}"]


async def test_sanitize_is_the_default_and_removes_a_client_supplied_xfcc(pki, upstream, proxy_factory, tmp_path):
    chain = {"transport_socket": downstream_tls(pki["server"], pki["ca"].cert_pem, require_client=True)}
    proxy = await proxy_factory(_config(upstream, tmp_path, [chain]))
    c = await RawClient.connect(proxy.port, ssl=client_ctx(pki["ca"].cert_pem, pki["client"]))
    r = await c.request("GET", "/", headers=[("x-forwarded-client-cert", "By=spoofed")])
    c.writer.close()
    assert r.status == 200 and upstream.requests[0].header("x-forwarded-client-cert") is None


@pytest.mark.parametrize("who, stat", [
    ("expired", "ssl.fail_verify_error"),
    ("future", "ssl.fail_verify_error"),
    ("stranger", "ssl.fail_verify_error"),
    (None, "ssl.fail_verify_no_cert"),
])
async def test_bad_client_certificates_fail_closed_with_their_stat(pki, upstream, proxy_factory, tmp_path, who, stat):
    chain = {"transport_socket": downstream_tls(pki["server"], pki["ca"].cert_pem, require_client=True)}
    proxy = await proxy_factory(_config(upstream, tmp_path, [chain]))
    leaf = pki[who] if who else None
    with pytest.raises((ssl.SSLError, ConnectionError, EOFError, PeerClosed)):
        # TLS 1.3: the client learns of the refusal on its first read; 1.2 fails inside the handshake
        r, c = await _get(proxy, client_ctx(pki["ca"].cert_pem, leaf))
        c.writer.close()
    assert upstream.requests == []
    assert _stat(proxy, stat) == 1
    assert _stat(proxy, "ssl.handshake") == 0
    assert _stat(proxy, "downstream_cx_total") == 1


async def test_tls_versions_and_alpn_come_from_common_tls_context(pki, upstream, proxy_factory, tmp_path):
    ts = downstream_tls(pki["server"], alpn=["h2", "http/1.1"],
                        tls_params={"tls_minimum_protocol_version": "TLSv1_3"})
    proxy = await proxy_factory(_config(upstream, tmp_path, [{"transport_socket": ts}]))
    ctx = client_ctx(pki["ca"].cert_pem, alpn=["http/1.1"])
    c = await RawClient.connect(proxy.port, ssl=ctx)
    assert c.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    assert (await c.request("GET", "/")).status == 200
    c.writer.close()
    with pytest.raises((ssl.SSLError, ConnectionError, EOFError, PeerClosed)):
        await RawClient.connect(proxy.port, ssl=client_ctx(pki["ca"].cert_pem, max_version=ssl.TLSVersion.TLSv1_2))
    assert _stat(proxy, "ssl.connection_error") == 1


@pytest.mark.parametrize("offered", [["h2", "http/1.1"], ["istio-peer-exchange", "h2", "http/1.1"]])
async def test_a_client_offering_h2_first_gets_http_1_1(pki, upstream, proxy_factory, tmp_path, offered):
    """Istio's gateway config offers `h2,http/1.1` (its sidecars' TCP chains `istio-peer-exchange` first); curl
    offers the same. pyproxy speaks neither HTTP/2 nor the metadata exchange, so it must not agree to them (a
    client that got h2 sent an HTTP/2 preface and read an empty reply)."""
    ts = downstream_tls(pki["server"], alpn=offered)
    proxy = await proxy_factory(_config(upstream, tmp_path, [{"transport_socket": ts}]))
    c = await RawClient.connect(proxy.port, ssl=client_ctx(pki["ca"].cert_pem, alpn=offered))
    try:
        assert c.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        assert (await c.request("GET", "/")).status == 200
    finally:
        c.writer.close()


async def test_a_client_resuming_its_session_is_counted_and_still_known(pki, upstream, proxy_factory, tmp_path):
    """A client that comes back with the session this listener gave it: resumed (no certificates exchanged),
    counted in `ssl.session_reused`, and its identity (kept in the session) still reaches the access log."""
    chain = {"transport_socket": downstream_tls(pki["server"], pki["ca"].cert_pem, require_client=True)}
    proxy = await proxy_factory(_config(upstream, tmp_path, [chain]))
    # the client offers its last session as pyproxy's own upstream side does (pyproxy.tls.sslobject)
    ctx = use_direct_sslobject(client_ctx(pki["ca"].cert_pem, pki["client"], max_version=ssl.TLSVersion.TLSv1_2))
    first = await RawClient.connect(proxy.port, ssl=ctx)
    assert (await first.request("GET", "/")).status == 200
    assert remember_session(first.writer.get_extra_info("ssl_object"))
    first.writer.close()
    again = await RawClient.connect(proxy.port, ssl=ctx)
    try:
        assert again.writer.get_extra_info("ssl_object").session_reused
        assert (await again.request("GET", "/")).status == 200
    finally:
        again.writer.close()
    assert (_stat(proxy, "ssl.handshake"), _stat(proxy, "ssl.session_reused")) == (2, 1)
    assert [e["peer"] for e in proxy.access_log()] == [CLIENT_ID, CLIENT_ID]


async def test_permissive_listener_serves_tls_and_plaintext_on_one_port(pki, upstream, proxy_factory, tmp_path):
    """Istio's PERMISSIVE inbound: tls_inspector decides per connection which chain serves it."""
    chains = [{"name": "mtls", "filter_chain_match": {"transport_protocol": "tls"},
               "transport_socket": downstream_tls(pki["server"], pki["ca"].cert_pem, require_client=True)},
              {"name": "plaintext", "filter_chain_match": {"transport_protocol": "raw_buffer"}}]
    proxy = await proxy_factory(_config(upstream, tmp_path, chains, listener_filters=[TLS_INSPECTOR]))
    r, c = await _get(proxy, client_ctx(pki["ca"].cert_pem, pki["client"]))
    r2 = await c.request("GET", "/again")  # keep-alive on the TLS connection
    c.writer.close()
    p, c2 = await _get(proxy, None)
    c2.writer.close()
    assert (r.status, r2.status, p.status) == (200, 200, 200)
    assert [e["peer"] for e in proxy.access_log()] == [CLIENT_ID, CLIENT_ID, None]
    assert [e["xfp"] for e in proxy.access_log()] == ["https", "https", "http"]


async def test_a_chosen_chain_gets_the_raw_transport_itself(pki, upstream, proxy_factory, tmp_path):
    """After tls_inspector picked the chain, the listener's acceptor steps aside (`transport.set_protocol`):
    the plaintext connection's reads go to its DownstreamConnection, not through a forwarding acceptor."""
    chains = [{"name": "mtls", "filter_chain_match": {"transport_protocol": "tls"},
               "transport_socket": downstream_tls(pki["server"], pki["ca"].cert_pem, require_client=True)},
              {"name": "plaintext", "filter_chain_match": {"transport_protocol": "raw_buffer"}}]
    proxy = await proxy_factory(_config(upstream, tmp_path, chains, listener_filters=[TLS_INSPECTOR]))
    p, c = await _get(proxy, None)
    r, c2 = await _get(proxy, client_ctx(pki["ca"].cert_pem, pki["client"]))
    try:
        (listener,) = proxy.server.listeners.values()
        (plain,) = [conn for conn in listener.connections if conn.tls is None]
        (tls,) = [conn for conn in listener.connections if conn.tls is not None]
        assert (p.status, r.status) == (200, 200)
        assert plain.transport.get_protocol() is plain
        assert tls.transport.get_protocol() is tls  # the TLS layer's application side
        assert not listener.acceptors
        assert (await c.request("GET", "/again")).status == 200  # and the connection still serves
    finally:
        c.writer.close()
        c2.writer.close()


async def test_strict_listener_closes_plaintext_with_no_filter_chain_match(pki, upstream, proxy_factory, tmp_path):
    chains = [{"filter_chain_match": {"transport_protocol": "tls"},
               "transport_socket": downstream_tls(pki["server"], pki["ca"].cert_pem, require_client=True)}]
    proxy = await proxy_factory(_config(upstream, tmp_path, chains, listener_filters=[TLS_INSPECTOR]))
    c = await RawClient.connect(proxy.port)
    await c.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    try:
        answer = await c.reader.read()
    except ConnectionResetError:  # closed with the request unread: a reset
        answer = b""
    assert answer == b""  # closed without an answer
    assert _stat(proxy, "no_filter_chain_match") == 1
    assert upstream.requests == []


async def test_sni_selects_the_chain_and_its_certificate(pki, upstream, proxy_factory, tmp_path):
    ca = pki["ca"]
    a, b = ca.issue(dns=["a.example.com"]), ca.issue(dns=["b.example.com"])
    chains = [{"name": "a", "filter_chain_match": {"server_names": ["a.example.com"]},
               "transport_socket": downstream_tls(a), "hcm": {"via": "chain-a"}},
              {"name": "b", "filter_chain_match": {"server_names": ["*.example.com"]},
               "transport_socket": downstream_tls(b), "hcm": {"via": "chain-b"}}]
    proxy = await proxy_factory(_config(upstream, tmp_path, chains, listener_filters=[TLS_INSPECTOR]))
    seen = {}
    for sni in ("a.example.com", "x.example.com"):
        r, c = await _get(proxy, client_ctx(ca.cert_pem), sni=sni)
        der = c.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        c.writer.close()
        from cryptography import x509
        seen[sni] = (r.header("via"), x509.load_der_x509_certificate(der).serial_number)
    assert seen == {"a.example.com": ("chain-a", a.cert.serial_number),
                    "x.example.com": ("chain-b", b.cert.serial_number)}
    with pytest.raises((ssl.SSLError, ConnectionError, EOFError, PeerClosed)):
        r, c = await _get(proxy, client_ctx(ca.cert_pem), sni="other.org")
    assert _stat(proxy, "no_filter_chain_match") == 1
