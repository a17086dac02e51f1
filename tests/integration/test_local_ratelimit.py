"""`envoy.filters.http.local_ratelimit` in pyproxy, black box over real sockets: the issue's proof (100 requests
against a 10-token bucket: 10 successes, 90 × 429 with flag RL, then a refill), the per-route bucket under a
chain config that only names a stat_prefix (Istio's shape), the counters and their Prometheus form, and a bad
config refused by name. Envoy's side of the same: tests/differential/test_local_ratelimit_differential.py."""
from __future__ import annotations

import pytest

from pyproxy.observe.stats import render_prometheus
from pyproxy.server import ConfigRejected
from tests.differential.bootstraps import LOCAL_RATELIMIT, LOCAL_RATELIMIT_TYPE, local_ratelimit
from tests.support.proxy import bootstrap, run_proxy
from tests.support.ratelimit import check_burst, hundred_then_refill
from tests.support.traffic import stats_text, with_filters

FILL = 1.0  # one token per second: the refill is seen within about a second


def limited(upstream, tmp_path, per_route: dict | None, chain: dict | None = None) -> dict:
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "5s"},
               **({"typed_per_filter_config": per_route} if per_route else {})}]
    cfg = bootstrap({"backend": [upstream.port]}, routes=routes, access_log=tmp_path / "a.log")
    return with_filters(cfg, [{"name": LOCAL_RATELIMIT,
                               "typed_config": chain or {"@type": LOCAL_RATELIMIT_TYPE, "stat_prefix": "chain"}}])


async def test_hundred_requests_ten_tokens_ten_ok_ninety_429_rl_then_refill(traffic_proxy, upstream, tmp_path):
    per_route = local_ratelimit("hundred", max_tokens=10, fill=f"{FILL}s",
                                enable_x_ratelimit_headers="DRAFT_VERSION_03")
    p = await traffic_proxy(limited(upstream, tmp_path, per_route))
    burst = await hundred_then_refill(p.port, [], FILL)
    check_burst(burst, 10, FILL)
    ok = burst.statuses.count(200)
    print(f"\nlocal rate limit: {ok} ok, {100 - ok} x 429 in {burst.elapsed:.3f}s; refill after {burst.polls} polls")
    assert len(upstream.requests) == ok + 1  # the limited ones never reached the upstream
    log = p.access_log()
    assert sum(e["flags"] == "RL" and e["code"] == 429 for e in log) == 100 - ok + burst.polls
    assert p.stat("hundred.http_local_rate_limit.enabled") == 101 + burst.polls
    assert p.stat("hundred.http_local_rate_limit.ok") == ok + 1
    assert p.stat("hundred.http_local_rate_limit.rate_limited") == 100 - ok + burst.polls
    assert p.stat("hundred.http_local_rate_limit.enforced") == 100 - ok + burst.polls
    assert p.stat("chain.http_local_rate_limit.enabled") == 0  # the chain's config is disabled (no filter_enabled)


async def test_prometheus_names_the_prefix_as_envoy_does(traffic_proxy, upstream, tmp_path):
    p = await traffic_proxy(limited(upstream, tmp_path, local_ratelimit("rl_prom", max_tokens=1)))
    assert [(await p.fetch("GET", "/")).status for _ in range(2)] == [200, 429]
    assert "rl_prom.http_local_rate_limit.rate_limited: 1" in stats_text(p)
    text = render_prometheus(p.server.collect_stats())
    assert 'envoy_http_local_rate_limit_rate_limited{envoy_local_http_ratelimit_prefix="rl_prom"} 1' in text


async def test_chain_config_with_a_bucket_limits_every_route(traffic_proxy, upstream, tmp_path):
    p = await traffic_proxy(limited(upstream, tmp_path, None, local_ratelimit("whole", max_tokens=2)[LOCAL_RATELIMIT]))
    assert [(await p.fetch("GET", "/")).status for _ in range(3)] == [200, 200, 429]


async def test_bad_bucket_is_refused_with_its_field(upstream, tmp_path):
    cfg = limited(upstream, tmp_path, None, {"@type": LOCAL_RATELIMIT_TYPE, "stat_prefix": "x",
                                             "token_bucket": {"max_tokens": 1, "fill_interval": "0.01s"}})
    with pytest.raises((ConfigRejected, ValueError), match="fill_interval.*50ms"):
        async with run_proxy(cfg):
            pass
