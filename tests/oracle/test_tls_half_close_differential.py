"""Oracle: TLS half-close through a tcp_proxy, real Envoy against pyproxy (`pyproxy run`, a real subprocess).

One bootstrap: a listener terminating TLS in front of a tcp_proxy whose cluster originates mutual TLS to a TLS
echo server. The client (SSLObject over a blocking socket, none of the proxy's code) sends bytes, then
close_notify and its FIN, and keeps reading: the FIN must reach the upstream as its close_notify (the echo
server answers `bye:<bytes>` after it) and that answer must come back over the half-closed client session.
Envoy does it (its SslSocket sends close_notify and shuts down the write side on end_stream, and keeps reading);
pyproxy must read the same bytes.
"""
from __future__ import annotations

from tests.support.envoy import require_envoy, start_either
from tests.support.pki import TestCA
from tests.support.proxy import cluster, socket_address
from tests.support.tcp import EchoServer, tcp_proxy, tls_half_close_exchange
from tests.support.tls import client_ctx, downstream_tls, server_ctx, upstream_tls


def bootstrap(ca: TestCA, leaves: dict, echo_port: int) -> dict:
    up = cluster("up", [echo_port], transport_socket=upstream_tls(leaves["client"], ca.cert_pem, sni="up.example.com"))
    return {"static_resources": {
        "listeners": [{"name": "front", "address": socket_address(0), "filter_chains": [{
            "filters": [tcp_proxy("up", stat_prefix="front")],
            "transport_socket": downstream_tls(leaves["front"])}]}],
        "clusters": [up]}}


async def test_tls_half_close_through_a_tcp_proxy_behaves_as_envoy(tmp_path):
    require_envoy()
    ca = TestCA("half-close")
    leaves = {"front": ca.issue(dns=["front.example.com"]), "up": ca.issue(dns=["up.example.com"]),
              "client": ca.issue(uris=["spiffe://cluster.local/ns/default/sa/client"])}
    payload = b"0123456789" * 5000
    views = []
    for who in ("envoy", "pyproxy"):
        d = tmp_path / who
        d.mkdir()
        echo = await EchoServer("up", ssl=server_ctx(leaves["up"], ca.cert_pem, require_client=True)).start()
        proc, (port,) = await start_either(who, bootstrap(ca, leaves, echo.port), d)
        try:
            got = await tls_half_close_exchange(port, payload, client_ctx(ca.cert_pem), "front.example.com")
            views.append((got, [c.eof for c in echo.conns]))
        finally:
            proc.stop()
            await echo.close()
    envoy, pyproxy = views
    assert envoy == (payload + b"up:bye:50000", [True])
    assert pyproxy == envoy
