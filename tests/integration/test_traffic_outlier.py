"""Outlier detection and panic mode: a cluster's `outlier_detection` (Istio DestinationRule
`outlierDetection`) and `common_lb_config.healthy_panic_threshold` (Istio `minHealthPercent`), black box.

A host that keeps failing is ejected: traffic moves to the others, `/clusters` shows it
`/failed_outlier_check`, `cluster.<name>.outlier_detection.*` counts it, and it comes back after
base_ejection_time × the number of times it was ejected (capped by max_ejection_time). Timers are short
(interval 0.1-0.5 s, base_ejection_time 0.4-0.5 s); the tests poll /clusters for the engine's own timer,
bounded, and never sleep for a fixed time.
"""
from __future__ import annotations

import pytest

from tests.support.proxy import bootstrap, route
from tests.support.traffic import (
    always, clusters_text, endpoints_cluster, host_line, hosts_hit, outlier, retry_policy, scripted, stats_text, until,
)

OD = "cluster.backend.outlier_detection."
# The back-off tests eject a host again right after it came back; its back-off decays at the first sweep a whole
# interval after that, so a wide interval leaves the test's four requests ample time (they take milliseconds)
BACKOFF_INTERVAL = "0.5s"


def cluster_of(ports, od: dict | None = None, **extra) -> dict:
    return endpoints_cluster("backend", ports, lb_policy="ROUND_ROBIN", outlier_detection=od or outlier(), **extra)


def health(p, port: int) -> str:
    return host_line(clusters_text(p), "backend", port, "health_flags")


async def send(p, n: int, path: str = "/") -> list:
    return [await p.fetch("GET", path) for _ in range(n)]


async def back_in(p, port: int, timeout: float = 5.0) -> None:
    """Wait (bounded: a hang guard, not a measurement) until the host at `port` is back from its ejection.
    How long an ejection lasts is checked on the decision itself (`scheduled_ejection`), not on the clock."""
    await until(lambda: health(p, port) == "healthy", timeout=timeout)


async def test_consecutive_5xx_ejects_the_host_and_it_comes_back(traffic_proxy, upstream_factory):
    """The issue's case: consecutive_5xx 3. After `bad`'s third 503 it is ejected (visible in /clusters and
    the stats), every request goes to `good`; after base_ejection_time (0.5 s) it gets traffic again."""
    bad = await upstream_factory("bad", handler=always("/status/503"))
    good = await upstream_factory("good")
    p = await traffic_proxy(bootstrap([cluster_of([bad.port, good.port], outlier(consecutive_5xx=3))]))
    await send(p, 6)  # round robin: 3 to each
    assert len(bad.requests) == 3
    assert health(p, bad.port) == "/failed_outlier_check"
    assert health(p, good.port) == "healthy"
    assert p.stat(OD + "ejections_enforced_consecutive_5xx") == 1
    assert p.stat(OD + "ejections_detected_consecutive_5xx") == 1
    assert p.stat(OD + "ejections_active") == 1
    assert p.stat("cluster.backend.membership_healthy") == 1
    assert f"{OD}ejections_enforced_total: 1" in stats_text(p, filter="outlier_detection")
    assert hosts_hit(await send(p, 10)) == {"good": 10}
    assert scheduled_ejection(p, bad.port) == pytest.approx(0.5)  # base_ejection_time x 1 (first ejection)
    await back_in(p, bad.port)
    assert p.stat(OD + "ejections_active") == 0
    before = len(bad.requests)
    await send(p, 4)
    assert len(bad.requests) == before + 2  # back in the rotation


async def test_a_success_resets_the_consecutive_count(traffic_proxy, upstream):
    """503, 503, 200, 503, 503: never three in a row, never ejected."""
    upstream.handler = scripted("/status/503", "/status/503", "/", "/status/503", "/status/503")
    p = await traffic_proxy(bootstrap([cluster_of([upstream.port], outlier(consecutive_5xx=3))]))
    assert [r.status for r in await send(p, 5)] == [503, 503, 200, 503, 503]
    assert health(p, upstream.port) == "healthy"
    assert p.stat(OD + "ejections_enforced_total") == 0


async def test_resets_count_as_5xx(traffic_proxy, upstream_factory):
    """Without split_external_local_origin_errors a reset before the response counts like a 503."""
    bad = await upstream_factory("bad", handler=always("/reset-before-headers"))
    good = await upstream_factory("good")
    p = await traffic_proxy(bootstrap([cluster_of([bad.port, good.port], outlier(consecutive_5xx=3))]))
    await send(p, 6)
    assert health(p, bad.port) == "/failed_outlier_check"
    assert hosts_hit(await send(p, 4)) == {"good": 4}


async def test_ejection_time_grows_with_the_number_of_ejections(traffic_proxy, upstream_factory):
    """Second ejection right after the first: base_ejection_time × 2 (0.8 s) instead of × 1 (the scheduled
    ejection, read from the running proxy: the decision, not a wall-clock measurement)."""
    bad = await upstream_factory("bad", handler=always("/status/503"))
    good = await upstream_factory("good")
    od = outlier(consecutive_5xx=2, interval=BACKOFF_INTERVAL, base_ejection_time="0.4s")
    p = await traffic_proxy(bootstrap([cluster_of([bad.port, good.port], od)]))
    await send(p, 4)
    assert health(p, bad.port) == "/failed_outlier_check"
    assert scheduled_ejection(p, bad.port) == pytest.approx(0.4)
    await back_in(p, bad.port)
    await send(p, 4)  # at once: the back-off multiplier has not decayed yet (it does per healthy interval)
    assert health(p, bad.port) == "/failed_outlier_check"
    assert scheduled_ejection(p, bad.port) == pytest.approx(0.8)
    await back_in(p, bad.port)
    assert p.stat(OD + "ejections_enforced_consecutive_5xx") == 2


def scheduled_ejection(p, port: int) -> float:
    """How long the running proxy scheduled the host's current ejection for (Host.ejected_until - ejected_at):
    the decision itself, not a wall-clock measurement."""
    host = next(h for h in p.server.clusters.clusters["backend"].hosts if h.port == port)
    assert host.ejected_until is not None and host.ejected_at is not None
    return host.ejected_until - host.ejected_at


async def test_max_ejection_time_caps_the_ejection(traffic_proxy, upstream_factory):
    """max_ejection_time 0.5 s: the first ejection is base_ejection_time (0.4 s), the second is capped at
    0.5 s instead of 2 × 0.4 s (the pure detector's arithmetic is table-tested in tests/unit/traffic)."""
    bad = await upstream_factory("bad", handler=always("/status/503"))
    good = await upstream_factory("good")
    od = outlier(consecutive_5xx=2, interval=BACKOFF_INTERVAL, base_ejection_time="0.4s", max_ejection_time="0.5s")
    p = await traffic_proxy(bootstrap([cluster_of([bad.port, good.port], od)]))
    await send(p, 4)
    assert scheduled_ejection(p, bad.port) == pytest.approx(0.4)
    await back_in(p, bad.port)
    await send(p, 4)
    assert health(p, bad.port) == "/failed_outlier_check"
    assert scheduled_ejection(p, bad.port) == pytest.approx(0.5)
    await back_in(p, bad.port)  # and it does come back


async def test_max_ejection_percent_limits_ejections(traffic_proxy, upstream_factory):
    """Both hosts fail; max_ejection_percent 50 allows one ejection of two, the other is an overflow."""
    a = await upstream_factory("a", handler=always("/status/503"))
    b = await upstream_factory("b", handler=always("/status/503"))
    p = await traffic_proxy(bootstrap([cluster_of([a.port, b.port], outlier(consecutive_5xx=2,
                                                                           max_ejection_percent=50))]))
    await send(p, 6)
    flags = sorted([health(p, a.port), health(p, b.port)])
    assert flags == ["/failed_outlier_check", "healthy"]
    assert p.stat(OD + "ejections_active") == 1
    assert p.stat(OD + "ejections_overflow") >= 1


async def test_default_max_ejection_percent_ejects_nothing_of_two_hosts(traffic_proxy, upstream_factory):
    """Envoy's default max_ejection_percent is 10: one host of two would be 50 %, so it is not ejected."""
    bad = await upstream_factory("bad", handler=always("/status/503"))
    good = await upstream_factory("good")
    od = {"consecutive_5xx": 2, "interval": "0.1s", "base_ejection_time": "0.5s"}
    p = await traffic_proxy(bootstrap([cluster_of([bad.port, good.port], od)]))
    await send(p, 6)
    assert health(p, bad.port) == "healthy"
    assert p.stat(OD + "ejections_overflow") >= 1


async def test_enforcing_0_detects_without_ejecting(traffic_proxy, upstream):
    upstream.handler = always("/status/503")
    od = outlier(consecutive_5xx=2, enforcing_consecutive_5xx=0)
    p = await traffic_proxy(bootstrap([cluster_of([upstream.port], od)]))
    await send(p, 4)
    assert health(p, upstream.port) == "healthy"
    assert p.stat(OD + "ejections_detected_consecutive_5xx") >= 1
    assert p.stat(OD + "ejections_enforced_total") == 0


async def test_consecutive_gateway_failure(traffic_proxy, upstream_factory):
    """consecutive_gateway_failure 3 (enforced): three 502/503/504 eject; 500s do not count toward it."""
    gw = await upstream_factory("gw", handler=scripted("/status/502", "/status/504", "/status/503"))
    five = await upstream_factory("five", handler=always("/status/500"))
    good = await upstream_factory("good")
    od = outlier(consecutive_5xx=100, consecutive_gateway_failure=3, enforcing_consecutive_gateway_failure=100)
    p = await traffic_proxy(bootstrap([cluster_of([gw.port, five.port, good.port], od)]))
    await send(p, 9)
    assert health(p, gw.port) == "/failed_outlier_check"
    assert health(p, five.port) == "healthy"
    assert p.stat(OD + "ejections_enforced_consecutive_gateway_failure") == 1


async def test_success_rate_ejects_the_outlier(traffic_proxy, upstream_factory):
    """Success-rate detection (optional in Envoy, off in Istio): of three hosts the one failing everything falls
    below mean − 1.0 × stdev over an interval and is ejected at the interval sweep."""
    a, b = await upstream_factory("a"), await upstream_factory("b")
    c = await upstream_factory("c", handler=always("/status/500"))
    od = outlier(interval="0.5s", enforcing_consecutive_5xx=0, enforcing_success_rate=100,
                 success_rate_minimum_hosts=3, success_rate_request_volume=5, success_rate_stdev_factor=1000)
    p = await traffic_proxy(bootstrap([cluster_of([a.port, b.port, c.port], od)]))
    await send(p, 45)
    await until(lambda: health(p, c.port) == "/failed_outlier_check", timeout=3)
    assert (health(p, a.port), health(p, b.port)) == ("healthy", "healthy")
    assert p.stat(OD + "ejections_enforced_success_rate") == 1


async def test_retried_failures_still_count_for_outlier_detection(traffic_proxy, upstream_factory):
    """Retries hide `bad`'s 503s from clients, but every try is reported to outlier detection
    (router.cc updateOutlierDetection before the retry decision): `bad` is still ejected after 3."""
    bad = await upstream_factory("bad", handler=always("/status/503"))
    good = await upstream_factory("good")
    r0 = route("/", "backend")
    r0["route"]["retry_policy"] = retry_policy("5xx", 2)
    p = await traffic_proxy(bootstrap([cluster_of([bad.port, good.port], outlier(consecutive_5xx=3))], routes=[r0]))
    assert [r.status for r in await send(p, 8)] == [200] * 8
    assert len(bad.requests) >= 3
    assert health(p, bad.port) == "/failed_outlier_check"
    assert p.stat(OD + "ejections_enforced_consecutive_5xx") == 1


# ---------------------------------------------------------------- panic threshold

def panic(value: float) -> dict:
    return {"healthy_panic_threshold": {"value": value}}


async def test_no_panic_all_hosts_ejected_is_503_uh(traffic_proxy, upstream, tmp_path):
    """healthy_panic_threshold 0 (Istio's default minHealthPercent): with the only host ejected the proxy
    answers 503 `no healthy upstream`, flag UH; once the host returns it is used again."""
    upstream.handler = scripted("/status/503", "/status/503")
    c = cluster_of([upstream.port], outlier(consecutive_5xx=2), common_lb_config=panic(0))
    p = await traffic_proxy(bootstrap([c], access_log=tmp_path / "a.log"))
    await send(p, 2)
    r = await p.fetch("GET", "/")
    assert (r.status, r.body) == (503, b"no healthy upstream")
    assert p.access_log()[-1]["flags"] == "UH"
    assert len(upstream.requests) == 2
    await back_in(p, upstream.port)
    assert (await p.fetch("GET", "/")).status == 200


async def test_below_the_panic_threshold_all_hosts_are_used(traffic_proxy, upstream_factory):
    """healthy_panic_threshold 60 with one of two hosts ejected (50 % healthy): panic, the balancer ignores
    health and the ejected host still gets its share."""
    bad = await upstream_factory("bad", handler=always("/status/503"))
    good = await upstream_factory("good")
    od = outlier(consecutive_5xx=2, base_ejection_time="30s")
    p = await traffic_proxy(bootstrap([cluster_of([bad.port, good.port], od, common_lb_config=panic(60))]))
    await send(p, 4)
    assert health(p, bad.port) == "/failed_outlier_check"
    assert hosts_hit(await send(p, 10)) == {"bad": 5, "good": 5}


async def test_above_the_panic_threshold_the_ejected_host_is_skipped(traffic_proxy, upstream_factory):
    bad = await upstream_factory("bad", handler=always("/status/503"))
    good = await upstream_factory("good")
    od = outlier(consecutive_5xx=2, base_ejection_time="30s")
    p = await traffic_proxy(bootstrap([cluster_of([bad.port, good.port], od, common_lb_config=panic(40))]))
    await send(p, 4)
    assert hosts_hit(await send(p, 10)) == {"good": 10}


async def test_ejection_survives_a_config_swap(traffic_proxy, upstream_factory):
    """A new cluster config (here: a different connect_timeout) keeps the Host objects: still ejected."""
    from tests.support.proxy import listeners_and_clusters

    bad = await upstream_factory("bad", handler=always("/status/503"))
    good = await upstream_factory("good")
    od = outlier(consecutive_5xx=2, base_ejection_time="30s")
    p = await traffic_proxy(bootstrap([cluster_of([bad.port, good.port], od)]))
    await send(p, 4)
    assert health(p, bad.port) == "/failed_outlier_check"
    await p.server.apply(*listeners_and_clusters(
        bootstrap([cluster_of([bad.port, good.port], od, connect_timeout="2s")])))
    assert health(p, bad.port) == "/failed_outlier_check"
    assert hosts_hit(await send(p, 6)) == {"good": 6}
