"""What a request looks like on the other side of the proxy, and how connections are kept.

Connection management (keep-alive reuse on both sides, `Connection: close` from either side), the
headers a proxy hop must remove (RFC 9110 §7.6.1) or add (Envoy's x-forwarded-proto, x-forwarded-for
with `use_remote_address`, x-request-id), routing by virtual host domain and path prefix, and a
config swap under a request in flight.
"""
from __future__ import annotations

import asyncio
import email.utils
import uuid

import pytest

from pyproxy.http.forwarded import local_address
from tests.support.proxy import INTERNAL_LOOPBACK, bootstrap, listeners_and_clusters, route, virtual_host


@pytest.fixture
async def proxy(upstream, proxy_factory):
    return await proxy_factory(bootstrap({"backend": [upstream.port]}))


# ---------------------------------------------------------------- connections

async def test_keep_alive_reuses_connections_on_both_sides(proxy, upstream):
    """Ten sequential requests on one downstream connection use one upstream connection."""
    c = await proxy.connect()
    for i in range(10):
        r = await c.request("GET", f"/n/{i}")
        assert (r.status, r.body) == (200, b"ok")
        assert not r.has("connection")
    assert [rq.path for rq in upstream.requests] == [f"/n/{i}" for i in range(10)]
    assert upstream.connections == 1


async def test_new_downstream_connections_share_the_upstream_pool(proxy, upstream):
    """Sequential requests on fresh downstream connections still reuse the idle upstream connection."""
    for _ in range(5):
        assert (await proxy.fetch("GET", "/")).status == 200
    assert upstream.connections == 1


async def test_client_connection_close_closes_after_the_response(proxy, upstream):
    """`Connection: close` from the client: the response says `connection: close` and the proxy closes
    the connection after it; the upstream gets no Connection header and its connection stays pooled."""
    c = await proxy.connect()
    r = await c.request("GET", "/", [("Connection", "close")])
    assert (r.status, r.body) == (200, b"ok")
    assert r.header("connection") == "close"
    await c.assert_closed()
    assert upstream.requests[0].header("connection") is None
    assert (await proxy.fetch("GET", "/")).status == 200
    assert upstream.connections == 1


async def test_upstream_connection_close_keeps_the_downstream_open(proxy, upstream):
    """`Connection: close` from the upstream ends that upstream connection only: the client's
    connection stays open and its next request goes over a new upstream connection."""
    c = await proxy.connect()
    r = await c.request("GET", "/conn-close")
    assert (r.status, r.body) == (200, b"closing")
    assert r.header("connection") is None
    again = await c.request("GET", "/")
    assert (again.status, again.body) == (200, b"ok")
    assert upstream.connections == 2


async def test_close_delimited_upstream_body_keeps_the_downstream_open(proxy, upstream):
    """A body the upstream ends by closing is re-framed (chunked) so the client's connection survives."""
    c = await proxy.connect()
    r = await c.request("GET", "/no-cl-close")
    assert (r.status, r.body, r.chunked) == (200, b"body until close", True)
    assert (await c.request("GET", "/")).status == 200


# ---------------------------------------------------------------- headers

async def test_hop_by_hop_request_headers_are_removed(proxy, upstream):
    """connection, keep-alive, proxy-connection, te, upgrade and every field named in Connection are
    not forwarded; end-to-end fields are."""
    r = await proxy.fetch("GET", "/", [
        ("Connection", "keep-alive, X-Private"), ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
        ("TE", "gzip"), ("Upgrade", "websocket"), ("X-Private", "secret"), ("X-Public", "yes")])
    assert r.status == 200
    rq = upstream.requests[0]
    for name in ("connection", "keep-alive", "proxy-connection", "te", "upgrade", "x-private"):
        assert rq.header(name) is None, name
    assert rq.header("x-public") == "yes"


async def test_te_trailers_is_forwarded(proxy, upstream):
    """`TE: trailers` is the one TE value a proxy passes on (gRPC needs it); Envoy keeps it."""
    await proxy.fetch("GET", "/", [("TE", "trailers")])
    assert upstream.requests[0].header("te") == "trailers"


async def test_hop_by_hop_response_headers_are_removed(proxy):
    r = await proxy.fetch("GET", "/hop-by-hop")
    assert (r.status, r.body) == (200, b"hop")
    for name in ("keep-alive", "proxy-connection", "x-private"):
        assert not r.has(name), name
    assert r.header("connection") is None
    assert r.header("x-kept") == "yes"


async def test_forwarding_headers_defaults(proxy, upstream):
    """Without use_remote_address: x-forwarded-proto set to http, x-forwarded-for left alone, a uuid4
    x-request-id generated, Host preserved."""
    await proxy.fetch("GET", "/", host="app.example.com:8080")
    rq = upstream.requests[0]
    assert rq.header("x-forwarded-proto") == "http"
    assert rq.header("x-forwarded-for") is None
    assert rq.header("host") == "app.example.com:8080"
    rid = rq.header("x-request-id")
    assert rid is not None and uuid.UUID(rid).version == 4 and str(uuid.UUID(rid)) == rid


async def test_request_id_is_unique_and_kept_when_present(proxy, upstream):
    await proxy.fetch("GET", "/")
    await proxy.fetch("GET", "/")
    await proxy.fetch("GET", "/", [("x-request-id", "my-id-123")])
    ids = [rq.header("x-request-id") for rq in upstream.requests]
    assert ids[0] != ids[1]
    assert ids[2] == "my-id-123"


async def test_use_remote_address_appends_the_peer_to_xff(upstream, proxy_factory):
    """`use_remote_address: true`: the client address is appended to x-forwarded-for; a loopback peer is
    appended as the proxy's own address, as Envoy appends `local_info.address()`. The client is external
    (Envoy 1.40 lists no internal address by default): its x-request-id is replaced and it gets
    x-envoy-external-address. An internal client (`internal_address_config`) keeps its x-request-id."""
    p = await proxy_factory(bootstrap({"backend": [upstream.port]}, hcm={"use_remote_address": True}))
    await p.fetch("GET", "/", [("X-Forwarded-For", "203.0.113.7"), ("x-request-id", "keep-me")])
    await p.fetch("GET", "/")
    first, second = upstream.requests
    assert [a.strip() for a in first.header("x-forwarded-for").split(",")] == ["203.0.113.7", local_address()]
    assert second.header("x-forwarded-for") == local_address()
    assert first.header("x-forwarded-proto") == "http"
    assert first.header("x-request-id") != "keep-me"
    assert first.header("x-envoy-external-address") == "127.0.0.1"
    p = await proxy_factory(bootstrap({"backend": [upstream.port]}, hcm=INTERNAL_LOOPBACK))
    await p.fetch("GET", "/", [("x-request-id", "keep-me")])
    assert upstream.requests[-1].header("x-request-id") == "keep-me"
    assert upstream.requests[-1].header("x-envoy-internal") == "true"


# ---------------------------------------------------------------- responses

async def test_upstream_status_and_body_pass_through(proxy):
    """An upstream error status is the upstream's answer, not the proxy's: forwarded as is, no flag."""
    c = await proxy.connect()
    r = await c.request("GET", "/status/503")
    assert (r.status, r.body) == (503, b"xxxxx")
    r = await c.request("GET", "/status/418")
    assert r.status == 418
    assert proxy.stat("cluster.backend.upstream_rq_5xx") == 1
    assert proxy.stat("http.ingress_http.downstream_rq_4xx") == 1


async def test_date_added_when_absent_and_upstream_date_kept(proxy):
    """Envoy's HCM adds a `date` (IMF-fixdate) to every response that lacks one and keeps the
    upstream's own (envoy.reloadable_features.preserve_upstream_date, on by default)."""
    c = await proxy.connect()
    r = await c.request("GET", "/")
    (date,) = r.header_values("date")
    assert email.utils.parsedate_to_datetime(date).tzinfo is not None and date.endswith(" GMT")
    r = await c.request("GET", "/dated")
    assert r.header_values("date") == ["Sun, 06 Nov 1994 08:49:37 GMT"]


async def test_upstream_100_continue_is_not_forwarded(proxy):
    """An interim `100 Continue` from the upstream is absorbed (Envoy: proxy_100_continue false)."""
    c = await proxy.connect()
    await c.send(b"GET /interim-100 HTTP/1.1\r\nHost: h\r\n\r\n")
    r = await c.read_response()
    assert r.interim == []
    assert (r.status, r.body) == (200, b"after interim")


async def test_upstream_trailers_are_dropped_body_kept(proxy):
    """HTTP/1 response trailers are not forwarded (Envoy: enable_trailers false); the body is intact
    and the chunked response is well-formed."""
    c = await proxy.connect()
    r = await c.request("GET", "/trailers")
    assert (r.status, r.body, r.chunked) == (200, b"trailed", True)
    assert r.trailers == []
    assert (await c.request("GET", "/")).status == 200


async def test_head_of_a_chunked_resource(proxy):
    """HEAD answered with `transfer-encoding: chunked` and no body: forwarded as such, and the
    connection is still in sync for the next request."""
    c = await proxy.connect()
    await c.send(b"HEAD /download/100 HTTP/1.1\r\nHost: h\r\n\r\n")
    r = await c.read_response(method="HEAD")
    assert r.status == 200 and r.header("transfer-encoding") == "chunked"
    again = await c.request("GET", "/")
    assert (again.status, again.body) == (200, b"ok")


async def test_zero_length_bodies(proxy, upstream):
    """Envoy: ValidZeroLengthContent: `content-length: 0` and an empty chunked body are valid."""
    c = await proxy.connect()
    assert (await c.request("POST", "/", [("content-length", "0")])).status == 200
    await c.send(b"POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
    assert (await c.read_response()).status == 200
    assert [rq.body_length for rq in upstream.requests] == [0, 0]
    assert all(rq.complete for rq in upstream.requests)


async def test_route_timeout_zero_disables_the_timeout(upstream, proxy_factory):
    """Envoy: a route `timeout: 0s` means no timeout."""
    p = await proxy_factory(bootstrap({"backend": [upstream.port]}, route_timeout="0s"))
    r = await p.fetch("GET", "/delay/0.3")
    assert (r.status, r.body) == (200, b"delayed")


# ---------------------------------------------------------------- routing

@pytest.fixture
async def routed(upstream_factory, proxy_factory, tmp_path):
    a = await upstream_factory("a")
    b = await upstream_factory("b")
    vhosts = [
        virtual_host("api", ["api.example.com", "api.example.com:*"],
                     [route("/v1/", "a"), route("/", "b")]),
        virtual_host("wild", ["*.shop.example.com"], [route("/cart", "a")]),
        virtual_host("default", ["*"], [route("/static/", "b")]),
    ]
    return await proxy_factory(bootstrap({"a": [a.port], "b": [b.port]}, virtual_hosts=vhosts,
                                         access_log=tmp_path / "a.log"))


@pytest.mark.parametrize("host,path,expected", [
    ("api.example.com", "/v1/users", "a"),
    ("api.example.com:443", "/v1/users", "a"),
    ("api.example.com", "/v2/users", "b"),
    ("API.Example.COM", "/v1/x", "a"),
    ("eu.shop.example.com", "/cart/1", "a"),
    ("www.example.com", "/static/logo.png", "b"),
    ("www.example.com", "/v1/users", 404),
    ("eu.shop.example.com", "/checkout", 404),
])
async def test_route_by_domain_and_prefix(routed, host, path, expected):
    r = await routed.fetch("GET", path, host=host)
    if expected == 404:
        assert r.status == 404
        assert routed.access_log()[-1]["flags"] == "NR"
    else:
        assert r.status == 200
        assert r.header("x-upstream") == expected


# ---------------------------------------------------------------- config swap

async def test_config_swap_during_a_long_request(upstream_factory, proxy_factory):
    """A request in flight when a new config is applied completes from the OLD upstream; the next
    request follows the new route."""
    old = await upstream_factory("old")
    new = await upstream_factory("new")
    p = await proxy_factory(bootstrap({"old": [old.port]}))
    # 0.2 s: well inside the proxy's 0.5 s drain (tests/support/proxy.py); a delay equal to the drain made the
    # test a race between the upstream's answer and the drain's deadline
    in_flight = asyncio.create_task(p.fetch("GET", "/delay/0.2"))
    await old.wait_requests(1)
    await p.server.apply(*listeners_and_clusters(bootstrap({"new": [new.port]})), version="2")
    after = await p.fetch("GET", "/")
    assert after.header("x-upstream") == "new"
    slow = await asyncio.wait_for(in_flight, 5)
    assert (slow.status, slow.body, slow.header("x-upstream")) == (200, b"delayed", "old")
    assert [rq.path for rq in new.requests] == ["/"]


async def test_config_swap_keeps_open_downstream_connections(upstream_factory, proxy_factory):
    """The listener keeps its socket across a swap: an idle keep-alive connection opened before it
    serves its next request with the new config."""
    old = await upstream_factory("old")
    new = await upstream_factory("new")
    p = await proxy_factory(bootstrap({"old": [old.port]}))
    port = p.port
    c = await p.connect()
    assert (await c.request("GET", "/")).header("x-upstream") == "old"
    await p.server.apply(*listeners_and_clusters(bootstrap({"new": [new.port]})), version="2")
    assert p.port == port
    assert (await c.request("GET", "/")).header("x-upstream") == "new"


async def test_removed_listener_drains_its_in_flight_request(upstream, proxy_factory):
    """A swap that replaces listener_0 by listener_1: the old port stops accepting, the request in
    flight on it still completes, and the new listener serves."""
    from tests.support.client import RawClient, fetch

    p = await proxy_factory(bootstrap({"backend": [upstream.port]}))
    old_port = p.port
    # 0.2 s: well inside the proxy's 0.5 s drain (tests/support/proxy.py); a delay equal to the drain made the
    # test a race between the upstream's answer and the drain's deadline
    in_flight = asyncio.create_task(p.fetch("GET", "/delay/0.2"))
    await upstream.wait_requests(1)
    await p.server.apply(*listeners_and_clusters(bootstrap({"backend": [upstream.port]},
                                                           listener_name="listener_1")), version="2")
    assert list(p.server.listeners) == ["listener_1"]
    new_port = p.server.listeners["listener_1"].port
    assert new_port != old_port
    assert (await fetch(new_port, "GET", "/")).status == 200
    with pytest.raises(OSError):
        await RawClient.connect(old_port)
    slow = await asyncio.wait_for(in_flight, 5)
    assert (slow.status, slow.body) == (200, b"delayed")
