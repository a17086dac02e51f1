"""ResourceLimits: Envoy's DEFAULT-priority circuit breakers, their defaults, overflow counters and gauges."""
from __future__ import annotations

import pytest

from pyproxy.config.decode import decode
from pyproxy.config.model import Cluster, Thresholds
from pyproxy.upstream.circuit_breaker import ResourceLimits


def limits(**fields) -> ResourceLimits:
    return ResourceLimits(decode(Thresholds, fields))


def test_envoy_defaults_when_nothing_is_set():
    assert ResourceLimits().describe() == {
        "max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}


def test_the_first_default_priority_threshold_of_a_cluster_is_used():
    cluster = decode(Cluster, {"name": "c", "circuit_breakers": {"thresholds": [
        {"priority": "HIGH", "max_connections": 1}, {"max_connections": 7}, {"max_connections": 9}]}})
    assert ResourceLimits.for_cluster(cluster).max_connections == 7
    assert ResourceLimits(cluster.circuit_breakers.thresholds).max_connections == 7


ACQUIRE = [
    # (threshold field, acquire method, overflow counter)
    ("max_connections", "try_acquire_connection", "upstream_cx_overflow"),
    ("max_pending_requests", "try_acquire_pending", "upstream_rq_pending_overflow"),
    ("max_requests", "try_acquire_request", "upstream_rq_pending_overflow"),  # Envoy counts it as pending overflow
    ("max_retries", "try_acquire_retry", "upstream_rq_retry_overflow"),
]


@pytest.mark.parametrize("field, method, counter", ACQUIRE)
def test_acquire_up_to_the_limit_then_overflow_is_counted(field, method, counter):
    lim = limits(**{field: 2})
    acquire = getattr(lim, method)
    assert [acquire(), acquire(), acquire()] == [True, True, False]
    assert lim.stats[counter] == 1
    assert sum(lim.stats.values()) == 1


def test_release_frees_a_slot_and_over_release_is_a_bug():
    lim = limits(max_requests=1)
    assert lim.try_acquire_request()
    lim.release_request()
    assert lim.try_acquire_request()
    lim.release_request()
    with pytest.raises(RuntimeError):
        lim.release_request()


def test_open_gauges_are_1_at_the_limit_and_remaining_needs_track_remaining():
    lim = limits(max_connections=1, max_retries=2, track_remaining=True)
    lim.try_acquire_connection()
    lim.try_acquire_retry()
    g = lim.gauges()
    assert g["circuit_breakers.default.cx_open"] == 1
    assert g["circuit_breakers.default.rq_retry_open"] == 0
    assert g["circuit_breakers.default.remaining_cx"] == 0
    assert g["circuit_breakers.default.remaining_retries"] == 1
    assert "circuit_breakers.default.remaining_cx" not in limits().gauges()


def test_retry_budget_scales_with_active_and_pending_requests():
    lim = limits(retry_budget={"budget_percent": {"value": 50.0}, "min_retry_concurrency": 2})
    assert lim.max_retries == 2  # the floor with no traffic
    for _ in range(10):
        lim.try_acquire_request()
    for _ in range(4):
        lim.try_acquire_pending()
    assert lim.max_retries == 7  # 50 % of 14


def test_istio_unlimited_thresholds():
    big = 2**32 - 1
    lim = limits(max_connections=big, max_pending_requests=big, max_requests=big, max_retries=big)
    assert all(lim.try_acquire_retry() for _ in range(1000))


def test_check_then_count_api_counts_no_stats():
    lim = limits(max_connections=1)
    assert lim.can_create_connection()
    lim.inc_connections()
    assert not lim.can_create_connection()
    assert lim.stats["upstream_cx_overflow"] == 0
    lim.dec_connections()
    assert repr(lim).startswith("ResourceLimits(cx=0/1")


def test_an_overflow_decided_elsewhere_is_counted_with_the_others():
    lim = ResourceLimits()
    lim.record_overflow("upstream_cx_overflow")
    lim.record_overflow("upstream_rq_pending_overflow")
    assert lim.stats["upstream_cx_overflow"] == 1
    assert lim.stats["upstream_rq_pending_overflow"] == 1
    assert lim.stats["upstream_rq_retry_overflow"] == 0
