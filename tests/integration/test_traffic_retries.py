"""Issue 3, timeouts and retries: the route's `timeout` and `retry_policy` (Istio VirtualService `timeout`,
`retries`), checked black box against Envoy's router semantics.

Each retry_on token is provoked for real by a scripted upstream (a status, a reset before the response, a
refused connection, a stall past the per-try timeout) and the test checks what the client got, how many
tries reached the upstreams (and with which `x-envoy-attempt-count`), the cluster's retry counters and the
access-log flags (URX when retries are exhausted, UT for timeouts, UO when the `max_retries` circuit breaker
refuses a retry).
"""
from __future__ import annotations

import asyncio
import dataclasses
import socket
import time

import pytest

from tests.support.proxy import INTERNAL_LOOPBACK, bootstrap, cluster, route
from tests.support.upstream import default_handler
from tests.support.traffic import (
    PREVIOUS_HOSTS, always, by_attempt, endpoints_cluster, retry_policy, scripted, thresholds,
)



def vhost(routes: list[dict], policy: dict | None = None, *, attempt_count: bool = True) -> dict:
    vh = {"name": "vh", "domains": ["*"], "routes": routes, "include_request_attempt_count": attempt_count}
    if policy is not None:
        vh["retry_policy"] = policy
    return vh


def retried(policy: dict | None, clusters: dict | list, *, timeout: str = "5s", log=None, hcm=None, **action) -> dict:
    r = route("/", "backend" if isinstance(clusters, dict) else clusters[0]["name"], timeout=timeout, **action)
    if policy is not None:
        r["route"]["retry_policy"] = policy
    return bootstrap(clusters, virtual_hosts=[vhost([r])], access_log=log, hcm=hcm)


def last_log(p) -> dict:
    return p.access_log()[-1]


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# ---------------------------------------------------------------- timeouts

async def test_route_timeout_is_504_ut(traffic_proxy, upstream, tmp_path):
    p = await traffic_proxy(retried(None, {"backend": [upstream.port]}, timeout="0.2s", log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/delay/2")
    assert (r.status, r.body) == (504, b"upstream request timeout")
    assert last_log(p)["flags"] == "UT"
    assert p.stat("cluster.backend.upstream_rq_timeout") == 1
    assert p.stat("cluster.backend.upstream_rq_tx_reset") == 1  # the proxy reset the upstream request


async def test_route_timeout_zero_disables_it(traffic_proxy, upstream):
    p = await traffic_proxy(retried(None, {"backend": [upstream.port]}, timeout="0s"))
    r = await p.fetch("GET", "/delay/0.3")
    assert (r.status, r.body) == (200, b"delayed")
    assert upstream.requests[-1].header("x-envoy-expected-rq-timeout-ms") is None


@pytest.mark.parametrize("policy, expected", [
    (None, "5000"),                                                     # the route timeout
    ({"retry_on": "5xx", "per_try_timeout": "0.5s"}, "500"),           # the per-try timeout wins
])
async def test_expected_rq_timeout_header_is_the_time_the_upstream_has(traffic_proxy, upstream, policy, expected):
    """Envoy's router sends x-envoy-expected-rq-timeout-ms = per-try timeout if set, else the route timeout."""
    p = await traffic_proxy(retried(policy, {"backend": [upstream.port]}, timeout="5s"))
    r = await p.fetch("GET", "/")
    assert r.status == 200
    assert upstream.requests[-1].header("x-envoy-expected-rq-timeout-ms") == expected


# ---------------------------------------------------------------- retry_on tokens

RESET = "reset"  # the client's connection is reset: the response had started and cannot be completed


@pytest.mark.parametrize("retry_on, first, retried_, client_sees", [
    ("5xx", "/status/503", True, 200),
    ("5xx", "/status/500", True, 200),
    ("5xx", "/reset-before-headers", True, 200),  # 5xx includes resets
    ("5xx", "/status/404", False, 404),
    ("gateway-error", "/status/502", True, 200),
    ("gateway-error", "/status/504", True, 200),
    ("gateway-error", "/status/500", False, 500),  # only 502/503/504
    ("reset", "/reset-before-headers", True, 200),
    ("reset", "/close-mid-body", False, RESET),  # the response had started: too late to retry
    ("reset", "/status/503", False, 503),
    ("connect-failure", "/status/503", False, 503),
    ("connect-failure", "/reset-before-headers", False, 503),  # connected fine: not a connect failure (UC)
    ("retriable-4xx", "/status/409", True, 200),
    ("retriable-4xx", "/status/429", False, 429),  # only 409
    ("refused-stream", "/reset-before-headers", False, 503),  # an HTTP/1 reset is not REFUSED_STREAM
    ("retriable-status-codes", "/status/418", True, 200),
    ("retriable-status-codes", "/status/503", False, 503),
])
async def test_retry_on(traffic_proxy, upstream, retry_on, first, retried_, client_sees):
    """First try answered as `first`, the retry (if any) as 200 `ok`; every row checks what the client got."""
    from tests.support.client import PeerClosed

    upstream.handler = scripted(first)
    policy = retry_policy(retry_on, retriable_status_codes=[418])
    p = await traffic_proxy(retried(policy, {"backend": [upstream.port]}))
    if client_sees == RESET:
        with pytest.raises((PeerClosed, ConnectionError)):
            await p.fetch("GET", "/")
    else:
        r = await p.fetch("GET", "/")
        assert r.status == client_sees
        if retried_:
            assert r.body == b"ok"
    assert len(upstream.requests) == (2 if retried_ else 1)
    assert p.stat("cluster.backend.upstream_rq_retry") == (1 if retried_ else 0)
    if retried_:
        assert p.stat("cluster.backend.upstream_rq_retry_success") == 1


async def test_connect_failure_retry_reaches_the_live_host(traffic_proxy, upstream, closed_port, tmp_path):
    """Endpoints [closed port, live]: with connect-failure every request ends on the live host."""
    c = endpoints_cluster("backend", [closed_port, upstream.port])
    p = await traffic_proxy(retried(retry_policy("connect-failure"), [c], log=tmp_path / "a.log"))
    for _ in range(4):
        r = await p.fetch("GET", "/")
        assert (r.status, r.header("x-upstream")) == (200, "upstream")
    assert p.stat("cluster.backend.upstream_cx_connect_fail") >= 1
    assert p.stat("cluster.backend.upstream_rq_retry") == p.stat("cluster.backend.upstream_cx_connect_fail")
    assert {e["upstream_host"] for e in p.access_log()} == {f"127.0.0.1:{upstream.port}"}


async def test_retry_on_request_header_without_a_policy(traffic_proxy, upstream):
    """No retry_policy: no retries (Envoy's default); `x-envoy-retry-on` from an internal client asks for them,
    and is not forwarded (from an external one it is removed unread: tests/differential forged-*)."""
    upstream.handler = scripted("/status/503", "/status/503")
    p = await traffic_proxy(retried(None, {"backend": [upstream.port]}, hcm=INTERNAL_LOOPBACK))
    assert (await p.fetch("GET", "/")).status == 503
    assert len(upstream.requests) == 1
    r = await p.fetch("GET", "/", [("x-envoy-retry-on", "5xx")])
    assert (r.status, r.body) == (200, b"ok")
    assert len(upstream.requests) == 3
    assert upstream.requests[-1].header("x-envoy-retry-on") is None


async def test_virtual_host_retry_policy_applies_when_the_route_has_none(traffic_proxy, upstream):
    upstream.handler = scripted("/status/503")
    r0 = route("/", "backend")
    p = await traffic_proxy(bootstrap({"backend": [upstream.port]},
                                      virtual_hosts=[vhost([r0], retry_policy("5xx"))]))
    assert (await p.fetch("GET", "/")).status == 200
    assert len(upstream.requests) == 2


async def test_a_retried_request_replays_its_body(traffic_proxy, upstream):
    """POST with a body: the retry sends the same bytes again."""
    upstream.handler = scripted("/status/503")
    p = await traffic_proxy(retried(retry_policy("5xx"), {"backend": [upstream.port]}))
    body = bytes(range(256)) * 40
    r = await p.fetch("POST", "/", body=body)
    assert r.status == 200
    assert [(rq.body_length, rq.complete) for rq in upstream.requests] == [(len(body), True)] * 2
    assert upstream.requests[0].body_sha256 == upstream.requests[1].body_sha256


@pytest.mark.parametrize("name, match, method, path, retried_", [
    (":method", {"exact": "GET"}, "GET", "/", True),
    (":method", {"exact": "GET"}, "POST", "/", False),
    (":path", {"prefix": "/idempotent/"}, "POST", "/idempotent/x", True),
    (":path", {"prefix": "/idempotent/"}, "POST", "/other", False),
])
async def test_retriable_request_headers_read_the_request_line(traffic_proxy, upstream, name, match, method, path,
                                                               retried_):
    """retriable_request_headers on a pseudo header: only a request whose request line matches is retried."""
    upstream.handler = scripted("/status/503")
    only = [{"name": name, "string_match": match}]
    p = await traffic_proxy(retried(retry_policy("5xx", retriable_request_headers=only), {"backend": [upstream.port]}))
    r = await p.fetch(method, path)
    assert r.status == (200 if retried_ else 503)
    assert len(upstream.requests) == (2 if retried_ else 1)


async def test_x_envoy_max_retries_overrides_num_retries(traffic_proxy, upstream, tmp_path):
    upstream.handler = always("/status/503")
    p = await traffic_proxy(retried(retry_policy("5xx", 1), {"backend": [upstream.port]}, log=tmp_path / "a.log",
                                    hcm=INTERNAL_LOOPBACK))
    assert (await p.fetch("GET", "/", [("x-envoy-max-retries", "3")])).status == 503
    assert len(upstream.requests) == 4
    assert upstream.requests[-1].header("x-envoy-max-retries") is None
    assert last_log(p)["flags"] == "URX"


# ---------------------------------------------------------------- limits of retrying

async def test_exhausted_retries_return_the_last_answer_with_urx(traffic_proxy, upstream, tmp_path):
    """num_retries 2 against an upstream that always fails: 3 tries with x-envoy-attempt-count 1, 2, 3, the
    last 503 goes to the client, flag URX, upstream_rq_retry_limit_exceeded."""
    upstream.handler = always("/status/503")
    p = await traffic_proxy(retried(retry_policy("5xx", 2), {"backend": [upstream.port]}, log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/")
    assert (r.status, r.header("x-upstream")) == (503, "upstream")
    assert [rq.header("x-envoy-attempt-count") for rq in upstream.requests] == ["1", "2", "3"]
    assert last_log(p)["flags"] == "URX"
    assert p.stat("cluster.backend.upstream_rq_retry") == 2
    assert p.stat("cluster.backend.upstream_rq_retry_limit_exceeded") == 1


async def test_attempt_count_is_sent_only_when_the_virtual_host_asks(traffic_proxy, upstream):
    upstream.handler = scripted("/status/503")
    r0 = route("/", "backend")
    r0["route"]["retry_policy"] = retry_policy("5xx")
    p = await traffic_proxy(bootstrap({"backend": [upstream.port]},
                                      virtual_hosts=[vhost([r0], attempt_count=False)]))
    assert (await p.fetch("GET", "/")).status == 200
    assert [rq.header("x-envoy-attempt-count") for rq in upstream.requests] == [None, None]


async def test_per_try_timeout_retries_a_stalled_try(traffic_proxy, upstream, tmp_path):
    """per_try_timeout 0.2 s: the first try stalls, the second answers; the client gets 200 without a flag."""
    upstream.handler = by_attempt({"1": "/delay/1"})
    policy = retry_policy("5xx", 1, per_try_timeout="0.2s")
    p = await traffic_proxy(retried(policy, {"backend": [upstream.port]}, log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/")
    assert (r.status, r.body) == (200, b"ok")
    assert [rq.header("x-envoy-attempt-count") for rq in upstream.requests] == ["1", "2"]
    assert p.stat("cluster.backend.upstream_rq_per_try_timeout") == 1


async def test_per_try_timeout_followed_by_success_logs_no_flag(traffic_proxy, upstream, tmp_path):
    """Envoy sets UT only when it gives up on a timed-out try (router.cc onPerTryTimeoutCommon)."""
    upstream.handler = by_attempt({"1": "/delay/1"})
    policy = retry_policy("5xx", 1, per_try_timeout="0.2s")
    p = await traffic_proxy(retried(policy, {"backend": [upstream.port]}, log=tmp_path / "a.log"))
    assert (await p.fetch("GET", "/")).status == 200
    assert last_log(p)["flags"] == "-"


async def test_per_try_timeout_is_not_retried_by_connect_failure(traffic_proxy, upstream, tmp_path):
    """A timed-out try is a reset after the request started: connect-failure alone does not retry it."""
    upstream.handler = always("/delay/1")
    policy = retry_policy("connect-failure", 3, per_try_timeout="0.2s")
    p = await traffic_proxy(retried(policy, {"backend": [upstream.port]}, log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/")
    assert r.status == 504
    assert len(upstream.requests) == 1
    assert last_log(p)["flags"] == "UT"


async def test_route_timeout_bounds_all_tries(traffic_proxy, upstream, tmp_path):
    """timeout 0.5 s over tries of 0.2 s with 5 retries allowed: the client gets 504 UT at the route timeout,
    after at most 3 tries."""
    upstream.handler = always("/delay/1")
    policy = retry_policy("5xx", 5, per_try_timeout="0.2s")
    p = await traffic_proxy(retried(policy, {"backend": [upstream.port]}, timeout="0.5s", log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/")
    assert (r.status, r.body) == (504, b"upstream request timeout")
    assert 2 <= len(upstream.requests) <= 3  # the route timeout ended the tries, not the 6 the policy allows
    assert "UT" in last_log(p)["flags"].split(",")
    assert p.stat("cluster.backend.upstream_rq_timeout") == 1


async def test_route_timeout_covers_the_back_off(traffic_proxy, upstream, tmp_path):
    """A back-off of up to 100 s (base_interval) cannot outlive the 0.3 s route timeout: 504 UT, one try."""
    upstream.handler = always("/status/503")
    policy = retry_policy("5xx", 3, retry_back_off={"base_interval": "100s"})
    p = await traffic_proxy(retried(policy, {"backend": [upstream.port]}, timeout="0.3s", log=tmp_path / "a.log"))
    r = await asyncio.wait_for(p.fetch("GET", "/"), 5)
    assert r.status == 504
    assert len(upstream.requests) == 1
    assert "UT" in last_log(p)["flags"].split(",")


async def test_default_back_off_lets_every_retry_happen(traffic_proxy, upstream):
    """Envoy's default back-off (base 25 ms, max 250 ms) between 3 retries of an always-503 upstream: all four
    tries reach it and the client gets the last 503. The back-off values themselves are the pure decision in
    pyproxy/routing/retry.py, pinned without a clock in tests/unit/traffic/test_retry.py."""
    upstream.handler = always("/status/503")
    p = await traffic_proxy(retried({"retry_on": "5xx", "num_retries": 3}, {"backend": [upstream.port]}))
    r = await p.fetch("GET", "/")
    assert r.status == 503
    assert len(upstream.requests) == 4
    assert p.stat("cluster.backend.upstream_rq_retry") == 3


# ---------------------------------------------------------------- hosts

async def test_retry_on_reset_reaches_a_second_host(traffic_proxy, upstream_factory, tmp_path):
    """Host `bad` resets every request; with retry_on reset and previous_hosts every request is answered by
    `good`, and the retried ones were tried on `bad` first."""
    bad = await upstream_factory("bad", handler=always("/reset-before-headers"))
    good = await upstream_factory("good")
    policy = retry_policy("reset", 1, retry_host_predicate=[PREVIOUS_HOSTS])
    p = await traffic_proxy(retried(policy, [endpoints_cluster("backend", [bad.port, good.port])],
                                    log=tmp_path / "a.log"))
    for _ in range(6):
        r = await p.fetch("GET", "/")
        assert (r.status, r.header("x-upstream")) == (200, "good")
    assert len(bad.requests) >= 1
    assert [rq.header("x-envoy-attempt-count") for rq in bad.requests] == ["1"] * len(bad.requests)
    assert sorted(rq.header("x-envoy-attempt-count") for rq in good.requests).count("2") == len(bad.requests)
    assert {e["upstream_host"] for e in p.access_log()} == {f"127.0.0.1:{good.port}"}


async def test_previous_hosts_with_host_selection_retry_max_attempts(traffic_proxy, upstream_factory):
    """RANDOM over [bad, good]: with previous_hosts and host_selection_retry_max_attempts 10 a retry re-picks
    until it finds a host not tried yet (chance of landing on `bad` again: 2^-11 per request)."""
    bad = await upstream_factory("bad", handler=always("/status/503"))
    good = await upstream_factory("good")
    policy = retry_policy("5xx", 1, retry_host_predicate=[PREVIOUS_HOSTS], host_selection_retry_max_attempts=10)
    c = endpoints_cluster("backend", [bad.port, good.port], lb_policy="RANDOM")
    p = await traffic_proxy(retried(policy, [c]), seed=5)
    statuses = [(await p.fetch("GET", "/")).status for _ in range(40)]
    assert statuses == [200] * 40
    assert [rq.header("x-envoy-attempt-count") for rq in bad.requests] == ["1"] * len(bad.requests)


async def test_without_previous_hosts_a_retry_may_hit_the_same_host(traffic_proxy, upstream_factory):
    """The contrast: RANDOM without the predicate sends some retries back to `bad` (≈1/4 of requests fail)."""
    bad = await upstream_factory("bad", handler=always("/status/503"))
    good = await upstream_factory("good")
    c = endpoints_cluster("backend", [bad.port, good.port], lb_policy="RANDOM")
    p = await traffic_proxy(retried(retry_policy("5xx", 1), [c]), seed=5)
    statuses = [(await p.fetch("GET", "/")).status for _ in range(40)]
    assert 503 in statuses and 200 in statuses
    assert "2" in [rq.header("x-envoy-attempt-count") for rq in bad.requests]


# ---------------------------------------------------------------- the max_retries circuit breaker

async def test_retry_overflow_returns_the_upstream_answer_with_uo(traffic_proxy, upstream, tmp_path):
    """max_retries 0: the retry is not attempted (upstream_rq_retry_overflow), the client gets the upstream's
    own 503 and the log says UO (router.cc: RetryStatus::NoOverflow sets the flag, the response goes on)."""
    upstream.handler = always("/status/503")
    c = cluster("backend", [upstream.port], circuit_breakers=thresholds(max_retries=0))
    p = await traffic_proxy(retried(retry_policy("5xx", 3), [c], log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/")
    assert len(upstream.requests) == 1
    assert p.stat("cluster.backend.upstream_rq_retry_overflow") == 1
    assert p.stat("cluster.backend.upstream_rq_retry") == 0
    assert last_log(p)["flags"] == "UO"
    assert (r.status, r.header("x-upstream"), r.body) == (503, "upstream", b"xxxxx")
    assert not r.has("x-envoy-overloaded")


async def test_max_retries_zero_prevents_every_retry(traffic_proxy, upstream, tmp_path):
    """The part of the above the engine gets right: no retry is attempted, the overflow is counted, flag UO."""
    upstream.handler = always("/status/503")
    c = cluster("backend", [upstream.port], circuit_breakers=thresholds(max_retries=0))
    p = await traffic_proxy(retried(retry_policy("5xx", 3), [c], log=tmp_path / "a.log"))
    assert (await p.fetch("GET", "/")).status == 503
    assert len(upstream.requests) == 1
    assert p.stat("cluster.backend.upstream_rq_retry_overflow") == 1
    assert "UO" in last_log(p)["flags"].split(",")


async def test_a_retry_in_flight_holds_the_max_retries_budget(traffic_proxy, upstream, tmp_path):
    """max_retries 1. Request A's first try fails and its retry stalls; while that retry is in flight request
    B's first try fails too: B's retry overflows (Envoy holds the retry resource from the retry decision until
    the retried try finishes: RetryStateImpl resetRetry), so B gets its 503 with flag UO."""
    release = asyncio.Event()
    async def handler(conn, req):
        if req.header("x-envoy-attempt-count") == "2" and req.header("x-req") == "A":
            await release.wait()
            return await default_handler(conn, req)
        return await default_handler(conn, dataclasses.replace(req, path="/status/503"))

    upstream.handler = handler
    c = cluster("backend", [upstream.port], circuit_breakers=thresholds(max_retries=1))
    p = await traffic_proxy(retried(retry_policy("5xx", 1), [c], log=tmp_path / "a.log"))
    task_a = asyncio.create_task(p.fetch("GET", "/", [("x-req", "A")]))
    try:
        await upstream.wait_requests(2)  # A's first try and its retry
        rb = await p.fetch("GET", "/", [("x-req", "B")])
        assert rb.status == 503
        assert [rq.header("x-req") for rq in upstream.requests] == ["A", "A", "B"]
        assert p.stat("cluster.backend.upstream_rq_retry_overflow") == 1
    finally:
        release.set()
    ra = await task_a
    assert (ra.status, ra.body) == (200, b"ok")
