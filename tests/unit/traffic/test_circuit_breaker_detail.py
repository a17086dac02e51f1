"""ResourceLimits in detail: every resource's check / count / release pair, the gauges and /clusters numbers, the
retry budget's defaults and rounding, and how thresholds are read (wrapped, plain, string, bool values)."""
from __future__ import annotations

import pytest

from pyproxy.config.decode import decode
from pyproxy.config.model import Cluster, Thresholds
from pyproxy.upstream.circuit_breaker import Resource, ResourceLimits

# (resource attribute, check, count, release, /clusters name, threshold field, open gauge, remaining gauge)
RESOURCES = [
    ("connections", "can_create_connection", "inc_connections", "dec_connections", "max_connections",
     "cx_open", "remaining_cx"),
    ("pending_requests", "can_create_pending", "inc_pending", "dec_pending", "max_pending_requests",
     "rq_pending_open", "remaining_pending"),
    ("requests", "can_create_request", "inc_requests", "dec_requests", "max_requests", "rq_open", "remaining_rq"),
]


@pytest.mark.parametrize("attr, check, inc, dec, field, open_gauge, remaining_gauge", RESOURCES)
def test_check_count_and_release_each_resource(attr, check, inc, dec, field, open_gauge, remaining_gauge):
    lim = ResourceLimits(decode(Thresholds, {field: 2, "track_remaining": True}))
    seen = []
    for _ in range(2):
        seen.append((getattr(lim, check)(), lim.gauges()[f"circuit_breakers.default.{open_gauge}"],
                     lim.gauges()[f"circuit_breakers.default.{remaining_gauge}"]))
        getattr(lim, inc)()
    seen.append((getattr(lim, check)(), lim.gauges()[f"circuit_breakers.default.{open_gauge}"],
                 lim.gauges()[f"circuit_breakers.default.{remaining_gauge}"]))
    assert seen == [(True, 0, 2), (True, 0, 1), (False, 1, 0)]
    assert getattr(lim, field) == 2 and lim.describe()[field] == 2
    getattr(lim, dec)()
    assert getattr(lim, check)() and getattr(lim, attr).count == 1
    assert sum(lim.stats.values()) == 0  # the check-then-count API leaves overflows to the caller


def test_a_retry_slot_is_released_by_dec_retries():
    lim = ResourceLimits(decode(Thresholds, {"max_retries": 1}))
    assert lim.try_acquire_retry() and not lim.try_acquire_retry()
    lim.dec_retries()
    assert lim.try_acquire_retry()


def test_releasing_an_unheld_resource_names_it():
    r = Resource("pending", 1)
    r.inc()
    r.dec()
    with pytest.raises(RuntimeError, match="^circuit breaker resource 'pending' released more often than acquired$"):
        r.dec()
    assert r.count == 0 and repr(r) == "Resource(pending: 0/1)"


def test_all_gauges_by_name():
    lim = ResourceLimits(decode(Thresholds, {"max_connections": 1, "max_pending_requests": 2, "max_requests": 1,
                                              "max_retries": 3, "track_remaining": True}))
    lim.try_acquire_connection()
    lim.try_acquire_request()
    lim.try_acquire_pending()
    assert lim.gauges() == {
        "circuit_breakers.default.cx_open": 1, "circuit_breakers.default.rq_pending_open": 0,
        "circuit_breakers.default.rq_open": 1, "circuit_breakers.default.rq_retry_open": 0,
        "circuit_breakers.default.remaining_cx": 0, "circuit_breakers.default.remaining_pending": 1,
        "circuit_breakers.default.remaining_rq": 0, "circuit_breakers.default.remaining_retries": 3}
    assert repr(lim) == "ResourceLimits(cx=1/1, pending=1/2, rq=1/1, retries=0/3)"


def test_remaining_is_never_negative():
    """A budget can shrink below the retries in flight: remaining is then 0, not negative, and the gauge open."""
    lim = ResourceLimits(decode(Thresholds, {"retry_budget": {"min_retry_concurrency": 1}, "track_remaining": True}))
    for _ in range(10):
        lim.try_acquire_request()
    assert [lim.try_acquire_retry() for _ in range(3)] == [True, True, False]  # 20 % of 10
    for _ in range(10):
        lim.release_request()
    assert lim.retries.remaining == 0 and lim.retries.open
    assert lim.gauges()["circuit_breakers.default.remaining_retries"] == 0


@pytest.mark.parametrize("budget, requests, want", [
    ({}, 0, 3),  # min_retry_concurrency 3
    ({}, 20, 4),  # budget_percent 20 %
    ({}, 24, 4),  # 4.8 rounds down
    ({}, 14, 3),  # 2.8: the floor wins
    ({"budget_percent": 50, "min_retry_concurrency": "2"}, 0, 2),  # plain number, string number
    ({"budget_percent": {"value": 50.0}, "min_retry_concurrency": {"value": 1}}, 5, 2),  # wrapped values
    ({"budget_percent": True, "min_retry_concurrency": True}, 20, 4),  # not numbers: the defaults
    ({"budget_percent": "50", "min_retry_concurrency": "x"}, 20, 4),
])
def test_the_retry_budget(budget, requests, want):
    lim = ResourceLimits(decode(Thresholds, {"retry_budget": budget}))
    for _ in range(requests):
        lim.inc_requests()
    assert lim.max_retries == want


def test_thresholds_without_a_default_priority_entry_or_none_at_all_take_envoys_defaults():
    defaults = {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}
    high_only = decode(Cluster, {"name": "c", "circuit_breakers": {"thresholds": [
        {"priority": "HIGH", "max_connections": 1}]}})
    assert ResourceLimits.for_cluster(high_only).describe() == defaults
    assert ResourceLimits.for_cluster(decode(Cluster, {"name": "c"})).describe() == defaults
    assert not ResourceLimits().track_remaining
    assert "circuit_breakers.default.remaining_rq" not in ResourceLimits().gauges()


def test_every_overflow_decided_elsewhere_counts():
    lim = ResourceLimits()
    for _ in range(3):
        lim.record_overflow("upstream_rq_retry_overflow")
    assert lim.stats == {"upstream_cx_overflow": 0, "upstream_rq_pending_overflow": 0, "upstream_rq_retry_overflow": 3}


@pytest.mark.parametrize("field, method, counter", [
    ("max_connections", "try_acquire_connection", "upstream_cx_overflow"),
    ("max_retries", "try_acquire_retry", "upstream_rq_retry_overflow"),
])
def test_every_refused_acquire_counts(field, method, counter):
    lim = ResourceLimits(decode(Thresholds, {field: 1}))
    assert [getattr(lim, method)() for _ in range(4)] == [True, False, False, False]
    assert lim.stats[counter] == 3


@pytest.mark.parametrize("thresholds", [{}, {"retry_budget": {}}])
def test_each_resource_is_named_in_its_repr_and_its_errors(thresholds):
    lim = ResourceLimits(decode(Thresholds, thresholds))
    assert [repr(r) for r in (lim.connections, lim.pending_requests, lim.requests, lim.retries)] == [
        "Resource(cx: 0/1024)", "Resource(pending: 0/1024)", "Resource(rq: 0/1024)", "Resource(retries: 0/3)"]
    with pytest.raises(RuntimeError, match="'retries'"):
        lim.release_retry()
