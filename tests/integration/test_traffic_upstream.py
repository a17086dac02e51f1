"""Issue 3, upstream clusters: load balancing, circuit breakers, connection lifetime, black box.

`lb_policy` (ROUND_ROBIN weighted, LEAST_REQUEST power-of-choices, RANDOM, RING_HASH and MAGLEV with the
route's `hash_policy`) and endpoint `load_balancing_weight`; `circuit_breakers.thresholds` (max_connections,
max_pending_requests, max_requests: overflow is 503 with `x-envoy-overloaded: true`, flag UO, and Envoy's
counters); `max_requests_per_connection`, `connect_timeout`, upstream idle timeout and TCP keepalive.
Which upstream answered is read from the `x-upstream` response header; randomness comes from the seeded rng.
"""
from __future__ import annotations

import asyncio
import socket

import pytest

from tests.support.client import RawClient
from tests.support.upstream import default_handler
from tests.support.proxy import bootstrap, listeners_and_clusters, route
from tests.support.traffic import (
    binomial_bounds, endpoints_cluster, fetch_many, hosts_hit, retry_policy, thresholds, until,
)

OVERFLOW_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


async def three(upstream_factory):
    return [await upstream_factory(n) for n in ("a", "b", "c")]


async def sequence(proxy, n: int, headers_for=lambda i: None) -> list[str]:
    """`n` requests on one keep-alive connection; the `x-upstream` of each answer."""
    async with await RawClient.connect(proxy.port) as c:
        return [(await c.request("GET", "/", headers_for(i))).header("x-upstream") for i in range(n)]


# ---------------------------------------------------------------- load balancing

async def test_round_robin_rotates_over_equal_hosts(traffic_proxy, upstream_factory):
    ups = await three(upstream_factory)
    c = endpoints_cluster("backend", [u.port for u in ups], lb_policy="ROUND_ROBIN")
    seq = await sequence(await traffic_proxy(bootstrap([c])), 30)
    assert hosts_hit_names(seq) == {"a": 10, "b": 10, "c": 10}
    assert len(set(seq[:3])) == 3 and seq[3:] == seq[:-3]  # a fixed rotation


def hosts_hit_names(seq: list[str]) -> dict[str, int]:
    return {name: seq.count(name) for name in sorted(set(seq))}


async def test_weighted_round_robin_follows_endpoint_weights(traffic_proxy, upstream_factory):
    """load_balancing_weight 1:3 — of every 4 consecutive picks one goes to `a` (Envoy's EDF schedule)."""
    ua, ub = await upstream_factory("a"), await upstream_factory("b")
    c = endpoints_cluster("backend", {ua.port: 1, ub.port: 3}, lb_policy="ROUND_ROBIN")
    seq = await sequence(await traffic_proxy(bootstrap([c])), 400)
    assert abs(seq.count("a") - 100) <= 2, seq.count("a")
    assert all(1 <= seq[i:i + 8].count("a") <= 3 for i in range(0, 392, 8))  # interleaved, not in bursts


async def test_random_spreads_requests(traffic_proxy, upstream_factory):
    ua, ub = await upstream_factory("a"), await upstream_factory("b")
    c = endpoints_cluster("backend", [ua.port, ub.port], lb_policy="RANDOM")
    seq = await sequence(await traffic_proxy(bootstrap([c]), seed=9), 400)
    lo, hi = binomial_bounds(400, 0.5)
    assert lo <= seq.count("a") <= hi
    assert any(x == y for x, y in zip(seq, seq[1:]))  # not a rotation


async def _least_request_picks(traffic_proxy, upstream_factory, choice_count: int | None, n: int) -> int:
    """`busy` holds every request it gets; `idle` answers at once. Requests are started one after the other,
    each once the previous one is held by `busy` or answered; returns how many went to `busy`."""
    release = asyncio.Event()

    async def hold(conn, req):
        await release.wait()
        return await default_handler(conn, req)

    busy = await upstream_factory("busy", handler=hold)
    idle = await upstream_factory("idle")
    extra = {"least_request_lb_config": {"choice_count": choice_count}} if choice_count else {}
    c = endpoints_cluster("backend", [busy.port, idle.port], lb_policy="LEAST_REQUEST", **extra)
    p = await traffic_proxy(bootstrap([c]), seed=13)
    tasks = []
    try:
        for _ in range(n):
            held = len(busy.requests)
            task = asyncio.create_task(p.fetch("GET", "/"))
            tasks.append(task)
            await until(lambda: len(busy.requests) > held or task.done())  # held by `busy`, or answered
        return len(busy.requests)
    finally:
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_least_request_avoids_the_busy_host(traffic_proxy, upstream_factory):
    """Power of two choices over [busy, idle]: `busy` is taken only when both draws pick it (≈1/4), far
    below round robin's 1/2; with choice_count 10 almost never (2^-10)."""
    busy_two = await _least_request_picks(traffic_proxy, upstream_factory, None, 60)
    assert 1 <= busy_two < 30, busy_two
    busy_ten = await _least_request_picks(traffic_proxy, upstream_factory, 10, 60)
    assert busy_ten <= 2, busy_ten


def hashed(policy: dict, lb_policy: str, ports, **cluster_extra) -> dict:
    r = route("/", "backend", hash_policy=[policy])
    return bootstrap([endpoints_cluster("backend", ports, lb_policy=lb_policy, **cluster_extra)], routes=[r])


@pytest.mark.parametrize("lb_policy", ["RING_HASH", "MAGLEV"])
async def test_consistent_hash_on_a_header(traffic_proxy, upstream_factory, lb_policy):
    """The same `x-user` always reaches the same host; 60 users spread over all three hosts."""
    ups = await three(upstream_factory)
    p = await traffic_proxy(hashed({"header": {"header_name": "x-user"}}, lb_policy, [u.port for u in ups]))
    first = await sequence(p, 60, lambda i: [("x-user", f"user-{i}")])
    again = await sequence(p, 60, lambda i: [("x-user", f"user-{i}")])
    assert first == again
    assert set(first) == {"a", "b", "c"}
    assert len(set(await sequence(p, 10, lambda i: [("x-user", "same")]))) == 1


async def test_ring_hash_keeps_keys_when_another_host_leaves(traffic_proxy, upstream_factory):
    """Removing host `c` moves c's keys; most keys of `a` and `b` stay put. (Not all: Envoy's ring gives the
    remaining hosts more points, 512 instead of 342 each, and a new point can take a key. A modulo hash would
    keep only about half.)"""
    ups = await three(upstream_factory)
    cfg = hashed({"header": {"header_name": "x-user"}}, "RING_HASH", [u.port for u in ups])
    p = await traffic_proxy(cfg)
    users = lambda i: [("x-user", f"user-{i}")]  # noqa: E731
    before = await sequence(p, 80, users)
    await p.server.apply(*listeners_and_clusters(
        hashed({"header": {"header_name": "x-user"}}, "RING_HASH", [ups[0].port, ups[1].port])))
    after = await sequence(p, 80, users)
    assert "c" not in after
    kept = [a == b for a, b in zip(before, after) if a != "c"]
    assert sum(kept) >= 0.7 * len(kept), (sum(kept), len(kept))


@pytest.mark.parametrize("policy, headers", [
    ({"cookie": {"name": "session"}}, [("cookie", "theme=dark; session=abc123")]),
    ({"connection_properties": {"source_ip": True}}, None),
])
async def test_consistent_hash_on_cookie_and_source_ip(traffic_proxy, upstream_factory, policy, headers):
    """One cookie value (or one client address) → one host, on new connections too."""
    ups = await three(upstream_factory)
    p = await traffic_proxy(hashed(policy, "RING_HASH", [u.port for u in ups]))
    answered = hosts_hit(await fetch_many(p, 12, "/", headers))
    assert len(answered) == 1


async def test_consistent_hash_on_a_query_parameter(traffic_proxy, upstream_factory):
    """Istio `httpQueryParameterName`: the same `?user=` reaches the same host; different users spread."""
    ups = await three(upstream_factory)
    p = await traffic_proxy(hashed({"query_parameter": {"name": "user"}}, "RING_HASH", [u.port for u in ups]))
    async with await RawClient.connect(p.port) as c:
        same = {(await c.request("GET", "/?user=alice&x=" + str(i))).header("x-upstream") for i in range(10)}
        spread = {(await c.request("GET", f"/?user=u{i}")).header("x-upstream") for i in range(60)}
    assert len(same) == 1
    assert spread == {"a", "b", "c"}


async def test_ring_hash_honours_endpoint_weights(traffic_proxy, upstream_factory):
    """Weights 1:3 on the ring: about a quarter of 400 distinct keys land on `a`."""
    ua, ub = await upstream_factory("a"), await upstream_factory("b")
    p = await traffic_proxy(hashed({"header": {"header_name": "x-user"}}, "RING_HASH", {ua.port: 1, ub.port: 3}))
    seq = await sequence(p, 400, lambda i: [("x-user", f"k{i}")])
    assert 60 <= seq.count("a") <= 140, seq.count("a")  # ring placement is pseudo-random, not exact


# ---------------------------------------------------------------- circuit breakers

def overloaded(r) -> bool:
    return r.status == 503 and r.header("x-envoy-overloaded") == "true" and r.body == OVERFLOW_BODY


async def concurrent(proxy, n: int, path: str) -> list:
    return await fetch_many(proxy, n, path, concurrent=True)


async def test_max_requests_overflow_is_503_uo(traffic_proxy, upstream, tmp_path):
    """max_requests 2, 10 concurrent slow requests: 2 are served, 8 get 503 UO with x-envoy-overloaded."""
    c = endpoints_cluster("backend", [upstream.port], circuit_breakers=thresholds(max_requests=2))
    p = await traffic_proxy(bootstrap([c], access_log=tmp_path / "a.log"))
    rs = await concurrent(p, 10, "/delay/0.5")
    assert sum(r.status == 200 for r in rs) == 2
    assert sum(overloaded(r) for r in rs) == 8
    assert [e["flags"] for e in p.access_log()].count("UO") == 8
    assert p.stat("cluster.backend.upstream_rq_pending_overflow") == 8
    assert len(upstream.requests) == 2


async def test_max_pending_and_max_connections_1(traffic_proxy, upstream, tmp_path):
    """max_connections 1 + max_pending_requests 1, 20 concurrent slow requests: one connection, at most two
    requests served (one on it, one queued), the rest 503 UO with x-envoy-overloaded."""
    c = endpoints_cluster("backend", [upstream.port],
                          circuit_breakers=thresholds(max_connections=1, max_pending_requests=1))
    p = await traffic_proxy(bootstrap([c], access_log=tmp_path / "a.log"))
    rs = await concurrent(p, 20, "/delay/0.5")
    ok = sum(r.status == 200 for r in rs)
    assert 1 <= ok <= 2
    assert sum(overloaded(r) for r in rs) == 20 - ok
    assert p.stat("cluster.backend.upstream_rq_pending_overflow") == 20 - ok
    assert upstream.connections == 1
    assert [e["flags"] for e in p.access_log()].count("UO") == 20 - ok


async def test_max_pending_requests_1_with_default_connection_limit(traffic_proxy, upstream, tmp_path):
    """The issue's case: max_pending_requests 1 alone, 20 concurrent requests. A request waiting for its new
    connection is pending too (Envoy checks the pending limit before creating one), so while one waits the
    others overflow: some of the 20 get 503 UO with x-envoy-overloaded."""
    c = endpoints_cluster("backend", [upstream.port], circuit_breakers=thresholds(max_pending_requests=1))
    p = await traffic_proxy(bootstrap([c], access_log=tmp_path / "a.log"))
    rs = await concurrent(p, 20, "/delay/0.2")
    assert sum(overloaded(r) for r in rs) >= 1
    assert all(r.status == 200 or overloaded(r) for r in rs)
    assert p.stat("cluster.backend.upstream_rq_pending_overflow") == sum(overloaded(r) for r in rs)


async def test_max_connections_queues_instead_of_failing(traffic_proxy, upstream):
    """max_connections 2 (pending unlimited): 6 concurrent requests all succeed over 2 connections;
    upstream_cx_overflow counts the connections not opened."""
    c = endpoints_cluster("backend", [upstream.port], circuit_breakers=thresholds(max_connections=2))
    p = await traffic_proxy(bootstrap([c]))
    rs = await concurrent(p, 6, "/delay/0.1")
    assert [r.status for r in rs] == [200] * 6
    assert upstream.connections == 2
    assert p.stat("cluster.backend.upstream_cx_overflow") >= 1


async def test_overflow_is_never_retried(traffic_proxy, upstream):
    """A request refused by max_requests is not retried even with retry_on 5xx,reset."""
    c = endpoints_cluster("backend", [upstream.port], circuit_breakers=thresholds(max_requests=1))
    r0 = route("/", "backend")
    r0["route"]["retry_policy"] = retry_policy("5xx,reset,connect-failure", 3)
    p = await traffic_proxy(bootstrap([c], routes=[r0]))
    rs = await concurrent(p, 3, "/delay/0.5")
    assert sum(r.status == 200 for r in rs) == 1
    assert sum(overloaded(r) for r in rs) == 2
    assert p.stat("cluster.backend.upstream_rq_retry") == 0
    assert len(upstream.requests) == 1


async def test_circuit_breaker_gauges_and_remaining(traffic_proxy, upstream):
    """With track_remaining, remaining_rq drops while requests are in flight; rq_open is 1 at the limit."""
    limits = thresholds(max_requests=2)
    limits["thresholds"][0]["track_remaining"] = True
    c = endpoints_cluster("backend", [upstream.port], circuit_breakers=limits)
    p = await traffic_proxy(bootstrap([c]))
    assert p.stat("cluster.backend.circuit_breakers.default.remaining_rq") == 2
    tasks = [asyncio.create_task(p.fetch("GET", "/delay/0.3")) for _ in range(2)]
    await upstream.wait_requests(2)
    assert p.stat("cluster.backend.circuit_breakers.default.remaining_rq") == 0
    assert p.stat("cluster.backend.circuit_breakers.default.rq_open") == 1
    await asyncio.gather(*tasks)
    assert p.stat("cluster.backend.circuit_breakers.default.rq_open") == 0


# ---------------------------------------------------------------- connection lifetime

def http_options(**common) -> dict:
    """Cluster `typed_extension_protocol_options` with HttpProtocolOptions.common_http_protocol_options."""
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "common_http_protocol_options": common,
        "explicit_http_config": {"http_protocol_options": {}}}}


async def test_max_requests_per_connection_replaces_connections(traffic_proxy, upstream):
    """max_requests_per_connection 2: 6 sequential requests use 3 upstream connections, 2 requests each."""
    c = endpoints_cluster("backend", [upstream.port],
                          typed_extension_protocol_options=http_options(max_requests_per_connection=2))
    p = await traffic_proxy(bootstrap([c]))
    assert await sequence(p, 6) == ["upstream"] * 6
    assert upstream.connections == 3
    assert [rq.connection_id for rq in upstream.requests] == [0, 0, 1, 1, 2, 2]
    assert p.stat("cluster.backend.upstream_cx_max_requests") == 3


async def test_upstream_idle_timeout_closes_idle_connections(traffic_proxy, upstream):
    c = endpoints_cluster("backend", [upstream.port], typed_extension_protocol_options=http_options(idle_timeout="0.2s"))
    p = await traffic_proxy(bootstrap([c]))
    assert (await p.fetch("GET", "/")).status == 200
    await until(lambda: upstream.open_connections == 0, timeout=3)
    assert p.stat("cluster.backend.upstream_cx_idle_timeout") == 1
    assert (await p.fetch("GET", "/")).status == 200  # a new connection is opened for the next request
    assert upstream.connections == 2


@pytest.fixture
def unanswering_port():
    """A port whose listen queue is full: SYNs to it are dropped, so a connect hangs until it times out."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    yield port
    for s in fillers:
        s.close()
    srv.close()


async def test_connect_timeout_is_503_uf(traffic_proxy, unanswering_port, tmp_path):
    c = endpoints_cluster("backend", [unanswering_port], connect_timeout="0.2s")
    p = await traffic_proxy(bootstrap([c], access_log=tmp_path / "a.log"))
    r = await asyncio.wait_for(p.fetch("GET", "/"), 5)
    assert r.status == 503
    assert r.body.endswith(b"reset reason: connection timeout")
    assert p.access_log()[-1]["flags"] == "UF"
    assert p.stat("cluster.backend.upstream_cx_connect_timeout") == 1


async def test_tcp_keepalive_is_set_on_upstream_sockets(traffic_proxy, upstream):
    """upstream_connection_options.tcp_keepalive (Istio connectionPool.tcp.tcpKeepalive) reaches the socket."""
    ka = {"tcp_keepalive": {"keepalive_time": 7, "keepalive_interval": 3, "keepalive_probes": 4}}
    c = endpoints_cluster("backend", [upstream.port], upstream_connection_options=ka)
    p = await traffic_proxy(bootstrap([c]))
    assert (await p.fetch("GET", "/")).status == 200
    [pool] = p.server.clusters.get("backend").pools.values()
    sock = pool.idle[0].transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
