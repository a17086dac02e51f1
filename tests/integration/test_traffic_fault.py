"""Issue 3, fault injection: `envoy.filters.http.fault` (Istio VirtualService `fault`), black box.

The filter-level HTTPFault and the per-route `typed_per_filter_config` override (where istiod puts a
VirtualService fault), fixed delays and aborts with their percentages (drawn from the proxy's seeded rng),
header-controlled faults, header matchers, and what they leave behind: flags DI / FI in the access log and
`http.<prefix>.fault.*` counters.
"""
from __future__ import annotations

import time

import pytest

from tests.support.client import RawClient
from tests.support.proxy import bootstrap, route
from tests.support.traffic import (
    binomial_bounds, fault_config, fault_filter, percent, with_filters,
)

ABORTS = "http.ingress_http.fault.aborts_injected"
DELAYS = "http.ingress_http.fault.delays_injected"


def faulty(upstream, tmp_path, fault: dict | None, routes: list[dict] | None = None, **kw) -> dict:
    cfg = bootstrap({"backend": [upstream.port]}, routes=routes, access_log=tmp_path / "a.log", **kw)
    return with_filters(cfg, [fault_filter(fault)])


async def test_abort_answers_locally_with_fi(traffic_proxy, upstream, tmp_path):
    p = await traffic_proxy(faulty(upstream, tmp_path, {"abort": {"http_status": 503, "percentage": percent(100)}}))
    r = await p.fetch("GET", "/")
    assert (r.status, r.body) == (503, b"fault filter abort")
    assert upstream.requests == []
    e = p.access_log()[-1]
    assert (e["code"], e["flags"]) == (503, "FI")
    assert p.stat(ABORTS) == 1


async def test_delay_holds_the_request_then_forwards_it_with_di(traffic_proxy, upstream, tmp_path):
    p = await traffic_proxy(faulty(upstream, tmp_path, {"delay": {"fixed_delay": "0.3s",
                                                                   "percentage": percent(100)}}))
    start = time.monotonic()
    r = await p.fetch("POST", "/", body=b"held body")
    assert time.monotonic() - start >= 0.3  # a lower bound, the delay's own semantics: load only lengthens it
    assert (r.status, r.body) == (200, b"ok")
    assert upstream.requests[-1].body_length == len(b"held body")
    assert p.access_log()[-1]["flags"] == "DI"
    assert p.stat(DELAYS) == 1


async def test_delay_then_abort_logs_both_flags(traffic_proxy, upstream, tmp_path):
    fault = {"delay": {"fixed_delay": "0.05s", "percentage": percent(100)},
             "abort": {"http_status": 418, "percentage": percent(100)}}
    p = await traffic_proxy(faulty(upstream, tmp_path, fault))
    assert (await p.fetch("GET", "/")).status == 418
    assert p.access_log()[-1]["flags"] == "DI,FI"
    assert (p.stat(DELAYS), p.stat(ABORTS)) == (1, 1)
    assert upstream.requests == []


async def test_the_route_timeout_starts_after_the_fault_delay(traffic_proxy, upstream, tmp_path):
    """A 0.4 s injected delay on a route with a 0.2 s timeout still gets the upstream's answer."""
    p = await traffic_proxy(faulty(upstream, tmp_path, {"delay": {"fixed_delay": "0.4s", "percentage": percent(100)}},
                                   route_timeout="0.2s"))
    r = await p.fetch("GET", "/")
    assert (r.status, r.body) == (200, b"ok")


@pytest.mark.parametrize("fraction, share", [
    (percent(30), 0.30),
    (percent(2500, "TEN_THOUSAND"), 0.25),
    (percent(100000, "MILLION"), 0.10),
])
async def test_abort_percentage(traffic_proxy, upstream, tmp_path, fraction, share):
    """About `share` of 400 requests are aborted (6σ bounds, seeded rng); the rest reach the upstream."""
    p = await traffic_proxy(faulty(upstream, tmp_path, {"abort": {"http_status": 500, "percentage": fraction}}),
                            seed=21)
    async with await RawClient.connect(p.port) as c:
        statuses = [(await c.request("GET", "/")).status for _ in range(400)]
    lo, hi = binomial_bounds(400, share)
    assert lo <= statuses.count(500) <= hi, statuses.count(500)
    assert statuses.count(500) + statuses.count(200) == 400
    assert len(upstream.requests) == statuses.count(200)
    assert p.stat(ABORTS) == statuses.count(500)


async def test_delay_percentage(traffic_proxy, upstream, tmp_path):
    p = await traffic_proxy(faulty(upstream, tmp_path, {"delay": {"fixed_delay": "0.001s",
                                                                   "percentage": percent(50)}}), seed=4)
    async with await RawClient.connect(p.port) as c:
        for _ in range(200):
            assert (await c.request("GET", "/")).status == 200
    flags = [e["flags"] for e in p.access_log()]
    lo, hi = binomial_bounds(200, 0.5)
    assert lo <= flags.count("DI") <= hi
    assert flags.count("DI") + flags.count("-") == 200
    assert p.stat(DELAYS) == flags.count("DI")


async def test_no_percentage_means_no_fault(traffic_proxy, upstream, tmp_path):
    """FractionalPercent unset = 0 %: nothing is injected."""
    p = await traffic_proxy(faulty(upstream, tmp_path, {"abort": {"http_status": 500}}))
    for _ in range(10):
        assert (await p.fetch("GET", "/")).status == 200
    assert p.stat(ABORTS) == 0


async def test_header_controlled_abort_and_delay(traffic_proxy, upstream, tmp_path):
    """header_abort / header_delay: the request's x-envoy-fault-* headers say what to inject."""
    fault = {"abort": {"header_abort": {}, "percentage": percent(100)},
             "delay": {"header_delay": {}, "percentage": percent(100)}}
    p = await traffic_proxy(faulty(upstream, tmp_path, fault))
    assert (await p.fetch("GET", "/")).status == 200  # no headers, no fault
    assert p.access_log()[-1]["flags"] == "-"
    assert (await p.fetch("GET", "/", [("x-envoy-fault-abort-request", "429")])).status == 429
    assert p.access_log()[-1]["flags"] == "FI"
    start = time.monotonic()
    r = await p.fetch("GET", "/", [("x-envoy-fault-delay-request", "200")])
    assert time.monotonic() - start >= 0.2  # a lower bound, the delay's own semantics: load only lengthens it
    assert r.status == 200
    assert p.access_log()[-1]["flags"] == "DI"


async def test_fault_only_for_matching_headers(traffic_proxy, upstream, tmp_path):
    fault = {"abort": {"http_status": 503, "percentage": percent(100)},
             "headers": [{"name": "x-user", "string_match": {"exact": "tester"}}]}
    p = await traffic_proxy(faulty(upstream, tmp_path, fault))
    assert (await p.fetch("GET", "/", [("x-user", "someone")])).status == 200
    assert (await p.fetch("GET", "/", [("x-user", "tester")])).status == 503


async def test_per_route_fault_overrides_the_filter_config(traffic_proxy, upstream, tmp_path):
    """Istio's shape: an empty filter in the chain, the fault in the route's typed_per_filter_config."""
    routes = [route("/faulty", "backend"), route("/", "backend")]
    routes[0]["typed_per_filter_config"] = fault_config({"abort": {"http_status": 500, "percentage": percent(100)}})
    p = await traffic_proxy(faulty(upstream, tmp_path, None, routes=routes))
    assert (await p.fetch("GET", "/faulty/x")).status == 500
    assert p.access_log()[-1]["flags"] == "FI"
    assert (await p.fetch("GET", "/other")).status == 200
    assert [rq.path for rq in upstream.requests] == ["/other"]
