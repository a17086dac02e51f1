"""Local rate limiting against Envoy 1.40: the same bootstrap (tests/differential/bootstraps.py `ratelimit`:
the filter in the chain with only a stat_prefix, buckets per route and per virtual host, as Istio users attach
them), the same requests; compared: statuses, headers (x-ratelimit-*, response_headers_to_add, no
x-envoy-ratelimited), bodies, what the origin saw (request_headers_to_add_when_not_enforced), the access log
(flag RL, details `local_rate_limited`), then the counters and their Prometheus names. Last, the issue's proof on
both proxies: 100 requests against a 10-token bucket, 10 ok and 90 × 429, then a refill.
Each row has its own route (so its own bucket, refilled once an hour): a row's answers do not depend on time."""
from __future__ import annotations

import re

import pytest

from tests.oracle.harness import Case, judge, tally
from tests.oracle.proxies import admin_get
from tests.oracle.test_http1_differential import get
from tests.support.ratelimit import check_burst, hundred_then_refill

pytestmark = pytest.mark.asyncio(loop_scope="module")


def via(route: str) -> bytes:
    return get("/", b"x-route: " + route.encode() + b"\r\n")


def client(route: str, name: str) -> bytes:
    return get("/", b"x-route: " + route.encode() + b"\r\nx-client: " + name.encode() + b"\r\n")


def row(id: str, send: bytes, status: tuple[int, ...], *after: bytes, **kw):
    return pytest.param(Case(id, send, group="ratelimit", envoy_status=status, after=after, **kw), id=id)


CASES = [
    row("rl-burst-2-then-429", via("burst"), (200, 200, 429), via("burst"), via("burst")),
    row("rl-not-enforced-adds-request-header", via("not-enforced"), (200, 200), via("not-enforced")),
    row("rl-custom-status", via("status"), (200, 503), via("status")),
    row("rl-per-connection", via("per-connection") * 2, (200, 429, 200), via("per-connection"), reads=2),
    row("rl-absent-filter-enabled-is-off", via("disabled"), (200, 200), via("disabled")),
    row("rl-virtual-host-config", get("/", host=b"limited.example"), (200, 429), get("/", host=b"limited.example")),
    row("rl-unlimited-route", get("/"), (200, 200), get("/")),
    row("rl-descriptor-request-header", client("desc-header", "a"), (200, 429, 200, 200),
        client("desc-header", "a"), client("desc-header", "b"), via("desc-header")),
    row("rl-descriptor-route-actions", client("desc-route", "tom"), (200, 429, 200),
        client("desc-route", "tom"), client("desc-route", "ann")),
    row("rl-descriptor-dynamic", client("desc-dynamic", "a"), (200, 429, 200, 429),
        client("desc-dynamic", "a"), client("desc-dynamic", "b"), client("desc-dynamic", "b")),
]


@pytest.mark.parametrize("c", CASES)
async def test_local_ratelimit_matches_envoy(differential, c: Case):
    envoy, pyproxy = await differential.run(c)
    judge(c, envoy, pyproxy, "docs/envoy-differences.md")


RL_STAT = re.compile(r"^(rl_(?!chain|hundred)\w+\.http_local_rate_limit\.\w+): (\d+)$", re.M)
RL_SERIES = re.compile(r'^(envoy_http_local_rate_limit_\w+\{envoy_local_http_ratelimit_prefix="rl_(?!chain|hundred)'
                       r'\w+"\}) (\d+)$', re.M)


async def test_local_ratelimit_counters_match_envoy(differential):
    """After the rows above (module order), each row's counters: pyproxy's equal Envoy's. Envoy makes a
    route's counters when it loads the route, pyproxy on the route's first request: only counters Envoy has
    at non-zero must be in pyproxy's set."""
    pair = await differential.pair("ratelimit")
    texts = [(await admin_get(url, "/stats"), await admin_get(url, "/stats/prometheus")) for url in pair.admin_urls]
    (envoy_stats, envoy_prom), (ours_stats, ours_prom) = texts
    for name, pattern, theirs, ours in (("rl-stats", RL_STAT, envoy_stats, ours_stats),
                                        ("rl-prometheus", RL_SERIES, envoy_prom, ours_prom)):
        want = {k: v for k, v in pattern.findall(theirs) if v != "0"}
        got = {k: v for k, v in pattern.findall(ours) if k in want or v != "0"}
        tally(name, want == got)
        assert want and got == want, (name, want, got)


async def test_hundred_requests_against_ten_tokens_on_both(differential):
    pair = await differential.pair("ratelimit")
    for who, port in (("envoy", pair.envoy.port), ("pyproxy", pair.pyproxy_port)):
        burst = await hundred_then_refill(port, [("x-route", "hundred")], 2.0)
        check_burst(burst, 10, 2.0)
        ok = burst.statuses.count(200)
        print(f"\n{who}: {ok} ok, {100 - ok} x 429 in {burst.elapsed:.3f}s; refill after {burst.polls} polls")
