"""Oracle: one static bootstrap with file-based TLS, run by real Envoy and by pyproxy.

The listener terminates TLS (DownstreamTlsContext from files, client certificate required) and the cluster
originates TLS to an HTTPS upstream (UpstreamTlsContext from files: client certificate, trusted CA, SNI, URI SAN
check). The same mTLS client talks to each proxy; what the client sees (status, body, TLS version, the server
certificate) and what the upstream sees (request line and headers, normalised; the TLS version, SNI and client
certificate of the proxy's connection) must match.
"""
from __future__ import annotations

import asyncio
import ssl

from tests.oracle.harness import VOLATILE_VALUES
from tests.support.client import RawClient
from tests.support.envoy import EnvoyProcess, require_envoy
from tests.support.pki import TestCA
from tests.support.process import ProxyProcess
from tests.support.proxy import bootstrap, cluster
from tests.support.tls import DOWNSTREAM, UPSTREAM, client_ctx
from tests.support.upstream import TestUpstream

PROXY_ID = "spiffe://cluster.local/ns/edge/sa/proxy"
UPSTREAM_ID = "spiffe://cluster.local/ns/server/sa/httpbin"
CLIENT_ID = "spiffe://cluster.local/ns/client/sa/sleep"


def _files(d, leaf, name):
    chain, key = leaf.write(d, name)
    return {"certificate_chain": {"filename": str(chain)}, "private_key": {"filename": str(key)}}


def tls_bootstrap(d, ca, proxy_leaf, upstream_port):
    ca_file = {"filename": str(ca.write_ca(d))}
    up_tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": UPSTREAM, "sni": "backend.example.com",
        "common_tls_context": {"tls_certificates": [_files(d, proxy_leaf, "proxy")],
                               "validation_context": {"trusted_ca": ca_file, "match_typed_subject_alt_names": [
                                   {"san_type": "URI", "matcher": {"exact": UPSTREAM_ID}}]}}}}
    b = bootstrap([cluster("backend", [upstream_port], transport_socket=up_tls)])
    b["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": DOWNSTREAM, "require_client_certificate": True,
            "common_tls_context": {"tls_certificates": [_files(d, proxy_leaf, "proxy")],
                                   "validation_context": {"trusted_ca": ca_file}}}}
    return b


async def observe(port, client, upstream, seen_sni):
    c = await RawClient.connect(port, ssl=client, server_hostname="edge.example.com")
    try:
        r = await c.request("GET", "/oracle?q=1", headers=[("x-custom", "v")])
        sslobj = c.writer.get_extra_info("ssl_object")
        client_view = (r.status, r.body, sslobj.version(), sslobj.getpeercert(binary_form=True))
    finally:
        c.writer.close()
    (req,) = await upstream.wait_requests(1)
    headers = sorted((k, "<v>" if k in VOLATILE_VALUES else v) for k, v in req.headers)
    up_view = (req.method, req.path, headers, upstream.peer_certs, seen_sni, upstream.tls_versions)
    return client_view, up_view


async def test_file_based_tls_termination_and_origination_match_envoy(tmp_path):
    require_envoy()
    ca = TestCA("oracle")
    proxy_leaf = ca.issue(uris=[PROXY_ID], dns=["edge.example.com"])
    up_leaf, client_leaf = ca.issue(uris=[UPSTREAM_ID]), ca.issue(uris=[CLIENT_ID])
    views = []
    for who in ("envoy", "pyproxy"):
        d = tmp_path / who
        d.mkdir()
        sni: list[str | None] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        from pyproxy.tls.contexts import load_cert_chain_pem
        load_cert_chain_pem(ctx, up_leaf.chain_pem, up_leaf.key_pem)
        ctx.load_verify_locations(cadata=ca.cert_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.sni_callback = lambda obj, name, _ctx, sni=sni: sni.append(name)
        up = await TestUpstream(name="tls", ssl=ctx).start()
        up.tls_versions = []
        orig = up._accept

        def accept(orig=orig, up=up):
            conn = orig()
            made = conn.connection_made

            def connection_made(transport, made=made):
                up.tls_versions.append(transport.get_extra_info("ssl_object").version())
                made(transport)
            conn.connection_made = connection_made
            return conn
        up._accept = accept
        up._server.close()
        up._server = await asyncio.get_running_loop().create_server(up._accept, "127.0.0.1", up.port, ssl=ctx)
        config = tls_bootstrap(d, ca, proxy_leaf, up.port)
        proc = EnvoyProcess(config, d) if who == "envoy" else ProxyProcess(config, d, "-l", "warning")
        proc.start()
        try:
            if who == "envoy":
                await proc.wait_ready()
                port = proc.port
            else:
                (port,) = await proc.wait_listening(1)
            views.append(await observe(port, client_ctx(ca.cert_pem, client_leaf), up, sni))
        finally:
            proc.stop()
            await up.close()
    envoy, pyproxy = views
    assert pyproxy == envoy
    client_view, up_view = envoy
    assert client_view[0] == 200 and up_view[4] == ["backend.example.com"]
