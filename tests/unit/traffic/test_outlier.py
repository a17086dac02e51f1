"""OutlierDetector: Envoy's consecutive-error, success-rate and failure-percentage ejection, ejection time and
back-off, max_ejection_percent, enforcing percentages and stats."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyproxy.config.decode import decode
from pyproxy.config.model import OutlierDetection
from pyproxy.upstream.host import Host
from pyproxy.upstream.outlier import OutlierDetector, OutlierResult


def detector(n=10, **cfg):
    hosts = [Host(f"10.0.0.{i + 1}", 80) for i in range(n)]
    cfg.setdefault("max_ejection_percent", 100)
    return OutlierDetector(decode(OutlierDetection, cfg), hosts, rng=random.Random(0)), hosts


def fail(d, host, times, status=500, now=0.0):
    events = []
    for _ in range(times):
        events += d.record(host, status, now)
    return events


def test_consecutive_5xx_ejects_host_for_base_times_count():
    d, hs = detector()
    h = hs[0]
    assert fail(d, h, 4) == [] and not h.ejected
    (event,) = fail(d, h, 1, now=100.0)
    assert (event.action, event.type, event.enforced) == ("eject", "consecutive_5xx", True)
    assert h.ejected and h.ejected_until == 130.0  # base_ejection_time 30 s x 1
    assert d.stats["ejections_active"] == 1
    assert d.stats["ejections_enforced_consecutive_5xx"] == 1 and d.stats["ejections_detected_consecutive_5xx"] == 1
    assert d.tick(129.9) == [] and h.ejected  # back only at the first sweep after its time
    (back,) = d.tick(130.0)
    assert back.action == "uneject" and not h.ejected and d.stats["ejections_active"] == 0
    # ejected again soon after: 2 x base
    fail(d, h, 5, now=131.0)
    assert h.ejected_until == 131.0 + 60.0


def test_a_success_resets_the_consecutive_count():
    d, hs = detector()
    fail(d, hs[0], 4)
    d.record(hs[0], 200, 0.0)
    fail(d, hs[0], 4)
    assert not hs[0].ejected


@pytest.mark.parametrize("kwargs, outcome_count, ejected", [
    ({"connect_failure": True}, 5, True),  # local-origin failures count as 503 by default
    ({"reset": True}, 5, True),
    ({"timeout": True}, 5, True),  # as 504
    ({}, 5, False),  # nothing to record
])
def test_local_origin_failures_count_as_5xx_without_split(kwargs, outcome_count, ejected):
    d, hs = detector()
    for _ in range(outcome_count):
        d.record(hs[0], None, 0.0, **kwargs)
    assert hs[0].ejected is ejected


def test_split_mode_counts_local_origin_failures_separately():
    d, hs = detector(split_external_local_origin_errors=True, consecutive_local_origin_failure=3)
    h = hs[0]
    for _ in range(2):
        d.record(h, OutlierResult.LOCAL_ORIGIN_CONNECT_FAILED, 0.0)
    d.record(h, 200, 0.0)  # a response proves the connection works: local count restarts
    for _ in range(2):
        d.record(h, None, 0.0, timeout=True)
    assert not h.ejected and h.consecutive_5xx == 0
    (event,) = d.record(h, None, 0.0, connect_failure=True)
    assert event.type == "consecutive_local_origin_failure" and h.ejected


def test_503s_trip_both_detectors_but_only_5xx_is_enforced_by_default():
    d, hs = detector()
    events = fail(d, hs[0], 5, status=503)
    assert [(e.type, e.enforced) for e in events] == [("consecutive_gateway_failure", False), ("consecutive_5xx", True)]


def test_gateway_failure_is_detected_but_not_enforced_by_default():
    d, hs = detector(consecutive_5xx=100)
    events = fail(d, hs[0], 5, status=502)
    assert [(e.type, e.enforced) for e in events] == [("consecutive_gateway_failure", False)]
    assert not hs[0].ejected
    assert d.stats["ejections_detected_consecutive_gateway_failure"] == 1
    assert d.stats["ejections_enforced_consecutive_gateway_failure"] == 0


def test_gateway_failure_enforced_counts_only_502_503_504():
    d, hs = detector(consecutive_5xx=100, enforcing_consecutive_gateway_failure=100, consecutive_gateway_failure=3)
    fail(d, hs[0], 2, status=503)
    fail(d, hs[0], 1, status=500)  # another 5xx resets the gateway count
    fail(d, hs[0], 2, status=504)
    assert not hs[0].ejected
    fail(d, hs[0], 1, status=502)
    assert hs[0].ejected


def test_max_ejection_percent_is_strict_and_overflow_is_counted():
    d, hs = detector(n=3, max_ejection_percent=10)  # Envoy's default with 3 hosts: 33 % > 10 % ⇒ never
    fail(d, hs[0], 5)
    assert not hs[0].ejected and d.stats["ejections_overflow"] == 1


def test_always_eject_one_host_allows_the_first_ejection():
    d, hs = detector(n=3, max_ejection_percent=10, always_eject_one_host=True)
    fail(d, hs[0], 5)
    fail(d, hs[1], 5)
    assert hs[0].ejected and not hs[1].ejected
    assert d.stats["ejections_overflow"] == 1


def test_max_ejection_percent_50_of_4_hosts_ejects_two():
    d, hs = detector(n=4, max_ejection_percent=50)
    for h in hs:
        fail(d, h, 5)
    assert [h.ejected for h in hs] == [True, True, False, False]


def test_enforcing_percentage_is_drawn_from_rng():
    d, hs = detector(n=100, enforcing_consecutive_5xx=30)
    for h in hs:
        fail(d, h, 5)
    enforced = sum(h.ejected for h in hs)
    assert 15 <= enforced <= 45
    assert d.stats["ejections_detected_consecutive_5xx"] == 100


def test_ejection_time_is_capped_by_max_ejection_time_and_backoff_decays_while_healthy():
    d, hs = detector(base_ejection_time="10s", max_ejection_time="25s", interval="1s")
    h = hs[0]
    now = 0.0
    durations = []
    for _ in range(4):
        fail(d, h, 5, now=now)
        durations.append(h.ejected_until - now)
        now = h.ejected_until
        d.tick(now)
        assert not h.ejected
    assert durations == [10.0, 20.0, 25.0, 25.0]
    backoff = h.eject_backoff
    for step in range(1, 4):  # healthy sweeps, an interval apart
        d.tick(now + step * 1.0)
    assert h.eject_backoff == backoff - 3


def test_jitter_is_added_within_the_configured_bound():
    d, hs = detector(max_ejection_time_jitter="2s")
    fail(d, hs[0], 5, now=0.0)
    assert 30.0 <= hs[0].ejected_until <= 32.0


def volume(d, host, ok, bad):
    for _ in range(ok):
        d.record(host, 200, 0.0)
    for _ in range(bad):
        d.record(host, 500, 0.0)


def test_success_rate_ejects_the_outlier_after_the_interval():
    d, hs = detector(n=6, consecutive_5xx=1000)
    for h in hs[1:]:
        volume(d, h, 100, 0)
    volume(d, hs[0], 50, 50)
    events = d.tick(10.0)
    assert [(e.host, e.type) for e in events] == [(hs[0], "success_rate")]
    assert hs[1].success_rate == 100.0
    assert d.stats["ejections_enforced_success_rate"] == 1


def test_success_rate_needs_minimum_hosts_and_volume():
    d, hs = detector(n=4, consecutive_5xx=1000)  # fewer than success_rate_minimum_hosts (5)
    for h in hs[1:]:
        volume(d, h, 100, 0)
    volume(d, hs[0], 0, 100)
    assert d.tick(10.0) == []
    d, hs = detector(n=6, consecutive_5xx=1000)
    for h in hs:
        volume(d, h, 99, 0)  # below success_rate_request_volume (100)
    volume(d, hs[0], 0, 50)
    assert [e.type for e in d.tick(10.0)] == []


def test_failure_percentage_when_enforced():
    d, hs = detector(n=5, consecutive_5xx=1000, enforcing_success_rate=0, enforcing_failure_percentage=100)
    for h in hs[1:]:
        volume(d, h, 60, 0)
    volume(d, hs[0], 5, 55)  # 92 % failures >= 85 %
    events = [e for e in d.tick(10.0) if e.enforced]
    assert [(e.host, e.type) for e in events] == [(hs[0], "failure_percentage")]


def test_removed_ejected_host_no_longer_counts_as_active():
    d, hs = detector()
    fail(d, hs[0], 5)
    d.update_hosts(hs[1:])
    assert d.stats["ejections_active"] == 0


def test_clock_is_used_when_now_is_not_given():
    hosts = [Host("10.0.0.1", 80), Host("10.0.0.2", 80)]
    d = OutlierDetector(decode(OutlierDetection, {"max_ejection_percent": 100}), hosts, rng=random.Random(0),
                        clock=lambda: 500.0)
    for _ in range(5):
        d.record(hosts[0], 503)
    assert hosts[0].ejected_until == 530.0
    assert "ejected=1" in repr(d)


@pytest.mark.parametrize("ok, bad", [(100, 0), (90, 10), (50, 50)])
def test_equal_success_rates_eject_nobody(ok, bad):
    """Every host at the same rate: the threshold (mean - 1.9 x stdev) equals that rate, and Envoy ejects only a
    host strictly below it (`<`). With `<=` every host would be ejected."""
    d, hs = detector(n=6, consecutive_5xx=1000)
    for h in hs:
        volume(d, h, ok, bad)
    assert d.tick(10.0) == []
    assert all(h.ejected_until is None for h in hs)


@given(st.lists(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=40), min_size=2, max_size=12),
       st.integers(min_value=0, max_value=100), st.integers(min_value=1, max_value=4))
@settings(max_examples=150, deadline=None)
def test_never_more_ejected_than_max_ejection_percent(sequences, max_percent, sweeps):
    """Whatever the results (0: 200, 1: 500, 2: connect failure, 3: 503), at most max_ejection_percent of the hosts
    are ejected at once: Envoy ejects only when 100 x (active + 1) / hosts <= max_ejection_percent
    (always_eject_one_host, which overrides that for the first host, is off here)."""
    n = len(sequences)
    d, hs = detector(n=n, max_ejection_percent=max_percent, consecutive_5xx=2, consecutive_gateway_failure=2,
                     enforcing_consecutive_gateway_failure=100, success_rate_minimum_hosts=2,
                     success_rate_request_volume=1, enforcing_failure_percentage=100,
                     failure_percentage_minimum_hosts=2, failure_percentage_request_volume=1)
    outcomes = {0: 200, 1: 500, 2: OutlierResult.LOCAL_ORIGIN_CONNECT_FAILED, 3: 503}
    now = 0.0
    for sweep in range(sweeps):
        for host, seq in zip(hs, sequences):
            for code in seq:
                d.record(host, outcomes[code], now)
                ejected = sum(1 for h in hs if h.ejected_until is not None)
                assert ejected * 100 <= max_percent * n, (ejected, n, max_percent)
        now += 10.0
        d.tick(now)
        ejected = sum(1 for h in hs if h.ejected_until is not None)
        assert ejected * 100 <= max_percent * n, (ejected, n, max_percent)
        assert d.stats["ejections_active"] == ejected


def _cluster_config(outlier: dict | None):
    from pyproxy.config.decode import decode
    from pyproxy.config.model import Cluster

    raw = {"name": "c", "type": "STATIC", "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}} for p in (1, 2)]}]}}
    if outlier is not None:
        raw["outlier_detection"] = outlier
    return decode(Cluster, raw)


@pytest.mark.parametrize("outlier, still_ejected", [({"consecutive_5xx": 1}, True), (None, False)])
def test_a_cluster_update_keeps_an_ejection_only_while_outlier_detection_can_end_it(outlier, still_ejected):
    """A changed cluster adopts the old hosts (an ejected host stays ejected), but a new config without
    outlier_detection has no interval timer to return it: it must not stay ejected for good."""
    from pyproxy.observe.stats import Stats
    from pyproxy.upstream.cluster_manager import ClusterRuntime

    first = ClusterRuntime(_cluster_config({"consecutive_5xx": 1, "base_ejection_time": "60s",
                                            "max_ejection_percent": 100}), Stats())
    host = first.hosts[0]
    first.outlier.record(host, 503, now=1.0)
    assert host.ejected
    second = ClusterRuntime(_cluster_config(outlier), Stats(), previous=first)
    assert second.hosts[0] is host and host.ejected is still_ejected


def test_max_ejection_time_below_base_is_a_config_error():
    from pyproxy.config.decode import ConfigError
    with pytest.raises(ConfigError) as e:
        detector(base_ejection_time="30s", max_ejection_time="10s")
    assert e.value.path == "outlier_detection.max_ejection_time"
    assert "cannot be smaller than base_ejection_time" in e.value.message


def test_a_connect_success_counts_only_in_split_mode():
    d, hs = detector(consecutive_5xx=2)
    h = hs[0]
    d.record(h, 503, 0.0)
    assert d.record(h, OutlierResult.LOCAL_ORIGIN_CONNECT_SUCCESS, 0.0) == []
    assert h.sr_total == 1 and h.consecutive_5xx == 1  # not a response: nothing reset, nothing counted
    d, hs = detector(split_external_local_origin_errors=True, consecutive_local_origin_failure=2)
    h = hs[0]
    d.record(h, OutlierResult.LOCAL_ORIGIN_CONNECT_FAILED, 0.0)
    d.record(h, OutlierResult.LOCAL_ORIGIN_CONNECT_SUCCESS, 0.0)  # the connection worked: the count restarts
    assert d.record(h, OutlierResult.LOCAL_ORIGIN_CONNECT_FAILED, 0.0) == [] and not h.ejected
    assert (h.lo_total, h.lo_success) == (3, 1)


def test_split_mode_runs_a_local_origin_success_rate_sweep():
    d, hs = detector(n=6, split_external_local_origin_errors=True, consecutive_local_origin_failure=1000,
                     consecutive_5xx=1000)
    for h in hs[1:]:
        for _ in range(100):
            d.record(h, OutlierResult.LOCAL_ORIGIN_CONNECT_SUCCESS, 0.0)
    for i in range(100):
        d.record(hs[0], OutlierResult.LOCAL_ORIGIN_CONNECT_FAILED if i % 2 else OutlierResult.LOCAL_ORIGIN_CONNECT_SUCCESS,
                 0.0)
    events = d.tick(10.0)
    assert [(e.host, e.type) for e in events] == [(hs[0], "local_origin_success_rate")]
    assert hs[1].local_success_rate == 100.0 and hs[0].local_success_rate == 50.0
    assert hs[1].success_rate == -1.0  # no HTTP responses: no external success rate
    assert d.stats["ejections_success_rate"] == 0  # the legacy counter is the external one's only


def test_no_outlier_detection_no_detector_and_a_repr():
    from pyproxy.upstream.outlier import detector_for
    assert detector_for(None, [], rng=random.Random(0)) is None
    d = detector_for(decode(OutlierDetection, {"max_ejection_percent": 20}), [Host("10.0.0.1", 80)],
                     rng=random.Random(0))
    assert repr(d) == "<OutlierDetector hosts=1 ejected=0 interval=10.0s base=30.0s max%=20>"


def test_an_ejected_host_is_not_ejected_again_by_more_failures():
    d, hs = detector(consecutive_5xx=2, consecutive_gateway_failure=2, enforcing_consecutive_gateway_failure=100)
    h = hs[0]
    assert [e.type for e in fail(d, h, 2, status=503)] == ["consecutive_gateway_failure"]  # detected first
    assert fail(d, h, 4, status=503) == []  # still ejected: counted, never ejected twice
    assert d.stats["ejections_active"] == 1 and d.stats["ejections_enforced_total"] == 1
    assert d.stats["ejections_detected_consecutive_5xx"] == 0  # detection stops while it is out
