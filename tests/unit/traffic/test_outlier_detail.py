"""OutlierDetector, the finer points of Envoy's outlier_detection_impl.cc: which draw enforces an ejection, when a
consecutive count restarts, how the success-rate windows roll, how many hosts (and requests) a sweep needs, the
ejection-time back-off's cap and decay, and what a changing host set does to `ejections_active`."""
from __future__ import annotations

import random

import pytest

from pyproxy.config.decode import decode
from pyproxy.config.model import OutlierDetection
from pyproxy.upstream.host import Host
from pyproxy.upstream.outlier import OutlierDetector, OutlierEvent, OutlierResult, detector_for
from tests.support.draws import FixedDraws
from tests.unit.traffic.test_outlier import detector, fail, volume

CF = OutlierResult.LOCAL_ORIGIN_CONNECT_FAILED
CS = OutlierResult.LOCAL_ORIGIN_CONNECT_SUCCESS


def one_host(rng, **cfg):
    hosts = [Host("10.0.0.1", 80)]
    cfg.setdefault("max_ejection_percent", 100)
    return OutlierDetector(decode(OutlierDetection, cfg), hosts, rng=rng), hosts[0]


@pytest.mark.parametrize("draw, enforcing, enforced", [
    (10**6, 100, True),  # the largest draw (99) is still below 100 %
    (29, 30, True),
    (30, 30, False),  # featureEnabled: draw % 100 < percent, strictly
    (0, 1, True),
    (0, 0, False),
])
def test_an_ejection_is_enforced_when_the_draw_is_below_the_percentage(draw, enforcing, enforced):
    d, h = one_host(FixedDraws(draw), enforcing_consecutive_5xx=enforcing)
    assert fail(d, h, 5, now=0.0) == [OutlierEvent(h, "eject", "consecutive_5xx", enforced)]
    assert h.ejected is enforced
    assert d.stats["ejections_detected_consecutive_5xx"] == 1


@pytest.mark.parametrize("jitter, ranges, until", [
    ("2s", [100, 2001], 132.0),  # 0..2000 ms, here the largest: base 30 s + 2 s
    (None, [100, 1], 130.0),  # no jitter: Envoy still draws, `random() % 1` = 0
])
def test_the_jitter_is_a_draw_of_whole_milliseconds_up_to_the_maximum(jitter, ranges, until):
    rng = FixedDraws(10**6)
    d, h = one_host(rng, **({"max_ejection_time_jitter": jitter} if jitter else {}))
    fail(d, h, 5, now=100.0)
    assert rng.ranges == ranges and h.ejected_until == until


@pytest.mark.parametrize("cfg, outcome, kind", [
    ({"enforcing_consecutive_5xx": 0}, 500, "consecutive_5xx"),
    ({"consecutive_5xx": 1000}, 502, "consecutive_gateway_failure"),  # enforcing_consecutive_gateway_failure: 0
    ({"split_external_local_origin_errors": True, "enforcing_consecutive_local_origin_failure": 0}, CF,
     "consecutive_local_origin_failure"),
])
def test_a_detection_restarts_its_count_even_when_not_enforced(cfg, outcome, kind):
    """Envoy resets the count that fired after every detection (onConsecutiveErrorWorker), enforced or not: 15
    failures in a row are detected three times, at the 5th, 10th and 15th."""
    d, (h, *_) = detector(**cfg)
    assert [i for i in range(1, 16) if d.record(h, outcome, 0.0)] == [5, 10, 15]
    assert not h.ejected and d.stats[f"ejections_detected_{kind}"] == 3
    assert d.stats["ejections_consecutive_5xx"] == (3 if kind == "consecutive_5xx" else 0)  # deprecated, 5xx only


@pytest.mark.parametrize("cfg, outcome", [
    ({}, 500),
    ({"consecutive_5xx": 1000, "enforcing_consecutive_gateway_failure": 100}, 503),
    ({"split_external_local_origin_errors": True}, OutlierResult.LOCAL_ORIGIN_TIMEOUT),
])
def test_a_returning_host_starts_its_failure_counts_from_zero(cfg, outcome):
    """Failures keep counting while a host is out (3 here); unejecting resets every consecutive count, so it takes
    5 new failures, not 2, to eject it again (Envoy unejectHost)."""
    d, (h, *_) = detector(**cfg)
    for _ in range(5 + 3):
        d.record(h, outcome, 0.0)
    assert h.ejected
    assert d.tick(30.0) == [OutlierEvent(h, "uneject", "", True)]
    assert [bool(d.record(h, outcome, 31.0)) for _ in range(5)] == [False] * 4 + [True]


@pytest.mark.parametrize("cfg, outcomes, ejected_by", [
    ({}, [599] * 5, "consecutive_5xx"),  # 5xx is 500..599
    ({}, [600] * 5, None),
    ({"consecutive_5xx": 1000, "enforcing_consecutive_gateway_failure": 100}, [504] * 5, "consecutive_gateway_failure"),
    ({"consecutive_5xx": 1000, "enforcing_consecutive_gateway_failure": 100, "consecutive_gateway_failure": 3},
     [503, 503, 200, 503, 503], None),  # a success restarts the gateway-failure count
    ({"consecutive_5xx": 1000, "enforcing_consecutive_gateway_failure": 100}, [{"timeout": True}] * 5,
     "consecutive_gateway_failure"),  # a timeout counts as 504, a gateway failure
    ({"consecutive_5xx": 1000, "enforcing_consecutive_gateway_failure": 100}, [{"connect_failure": True}] * 5,
     "consecutive_gateway_failure"),  # a connect failure as 503
])
def test_which_results_count_as_5xx_and_as_gateway_failures(cfg, outcomes, ejected_by):
    d, (h, *_) = detector(**cfg)
    events = []
    for o in outcomes:
        events += d.record(h, None, 0.0, **o) if isinstance(o, dict) else d.record(h, o, 0.0)
    assert [e.type for e in events if e.enforced] == ([ejected_by] if ejected_by else [])


def test_split_mode_still_ejects_on_consecutive_5xx_responses():
    d, (h, *_) = detector(split_external_local_origin_errors=True)
    assert fail(d, h, 5, now=7.0) == [OutlierEvent(h, "eject", "consecutive_5xx", True)]
    assert h.ejected_until == 37.0 and h.consecutive_local_origin_failure == 0


def test_without_a_clock_or_a_time_results_count_at_time_zero():
    d, (h, *_) = detector()
    for _ in range(5):
        d.record(h, 500)
    assert h.ejected_until == 30.0


def test_ejection_time_backoff_is_capped_and_decays_one_step_per_healthy_interval():
    """Envoy: the back-off grows while backoff x base < max + base (base 30 s, max 300 s: up to 11), the ejection
    lasts min(base x backoff, max), and each interval (10 s) a returned host stays healthy takes one step off."""
    d, (h, *_) = detector()
    now = 0.0
    durations = []
    for _ in range(15):  # ejected again as soon as it is back
        fail(d, h, 5, now=now)
        durations.append(h.ejected_until - now)
        now = h.ejected_until
        d.tick(now)
    assert durations == [30.0 * k for k in range(1, 10)] + [300.0] * 6 and h.eject_backoff == 11
    for step in (1, 2, 3):
        d.tick(now + 10.0 * step)
    fail(d, h, 5, now=now + 31.0)
    assert h.ejected_until - (now + 31.0) == 270.0  # backoff 11 - 3 + 1 = 9
    now = h.ejected_until
    d.tick(now)
    for step in range(1, 15):  # long enough to decay to 0, and not below
        d.tick(now + 10.0 * step)
    assert h.eject_backoff == 0
    fail(d, h, 5, now=now + 200.0)
    assert h.ejected_until - (now + 200.0) == 30.0


def test_each_sweep_reads_only_the_interval_before_it():
    """Two buckets per host (Envoy's SuccessRateAccumulator): a sweep reads the interval that just ended and starts
    a fresh one; a host below the request volume, or idle, shows no success rate (-1)."""
    d, (h, _) = detector(n=2, split_external_local_origin_errors=True, success_rate_minimum_hosts=1,
                         success_rate_request_volume=2, failure_percentage_request_volume=1000)
    for o in (200, 500, CF, CF):  # external 1 of 2; local-origin 2 of 4 (a response is a local success)
        d.record(h, o, 0.0)
    d.tick(10.0)
    assert (h.success_rate, h.local_success_rate) == (50.0, 50.0)
    for o in (500, 200):
        d.record(h, o, 11.0)
    d.tick(20.0)
    assert (h.success_rate, h.local_success_rate) == (50.0, 100.0)
    d.record(h, 200, 21.0)  # one request: below the volume of 2
    d.tick(30.0)
    assert (h.success_rate, h.local_success_rate) == (-1.0, -1.0)
    d.tick(40.0)
    assert (h.success_rate, h.local_success_rate) == (-1.0, -1.0)


def test_the_sweep_skips_ejected_and_idle_hosts_and_weighs_the_rest():
    d, hs = detector(n=7, consecutive_5xx=1000, enforcing_consecutive_gateway_failure=100)
    fail(d, hs[0], 5, status=502)  # ejected: out of the sweep
    # hs[1] idle
    for h in hs[2:6]:
        volume(d, h, 100, 0)
    volume(d, hs[6], 50, 50)  # mean 90, stdev 20: threshold 90 - 1.9 x 20 = 52
    assert d.tick(10.0) == [OutlierEvent(hs[6], "eject", "success_rate", True)]
    assert d.stats["ejections_total"] == 1  # the deprecated counter counts success rate, not gateway failures


@pytest.mark.parametrize("n, loaded, cfg, ejected_by", [
    (6, 4, {}, None),  # 4 hosts with enough requests, success_rate_minimum_hosts 5
    (5, 5, {"failure_percentage_minimum_hosts": 10}, "success_rate"),  # exactly the minimum
    (5, 5, {"enforcing_failure_percentage": 100, "success_rate_minimum_hosts": 10}, "failure_percentage"),
    (3, 3, {"enforcing_failure_percentage": 100, "failure_percentage_minimum_hosts": 3}, "failure_percentage"),
    (6, 4, {"enforcing_failure_percentage": 100, "success_rate_minimum_hosts": 1000}, None),
])
def test_a_sweep_needs_enough_hosts_with_enough_requests(n, loaded, cfg, ejected_by):
    """Envoy's processSuccessRateEjections: skip all when the cluster has fewer hosts than both minimums; each
    method then needs its own minimum of hosts with its request volume. The outlier: 50 % (success rate), 0 %
    (failure percentage, 100 % failures >= 85 %); the others 100 %."""
    d, hs = detector(n=n, consecutive_5xx=1000, **cfg)
    ok, bad = (0, 100) if "enforcing_failure_percentage" in cfg else (50, 50)
    volume(d, hs[0], ok, bad)
    for h in hs[1:loaded]:
        volume(d, h, 100, 0)
    assert [(e.host, e.type) for e in d.tick(10.0) if e.enforced] == ([(hs[0], ejected_by)] if ejected_by else [])


def test_failure_percentage_at_the_threshold_and_the_volume_and_every_detection_counted():
    """Ejected at failure_percentage_threshold (85 %) or above, not at 84 %; a host with exactly
    failure_percentage_request_volume requests counts."""
    d, hs = detector(n=7, consecutive_5xx=1000, enforcing_failure_percentage=100, success_rate_minimum_hosts=1000,
                     failure_percentage_request_volume=100)
    volume(d, hs[0], 15, 85)
    volume(d, hs[1], 16, 84)
    volume(d, hs[2], 0, 100)
    for h in hs[3:]:
        volume(d, h, 100, 0)
    assert [e.host for e in d.tick(10.0)] == [hs[0], hs[2]]
    assert d.stats["ejections_detected_failure_percentage"] == 2
    assert d.stats["ejections_enforced_failure_percentage"] == 2


def test_two_success_rate_outliers_are_both_counted():
    d, hs = detector(n=10, consecutive_5xx=1000)
    for h in hs[:2]:
        volume(d, h, 0, 100)  # mean 80, stdev 40: threshold 4
    for h in hs[2:]:
        volume(d, h, 100, 0)
    assert [e.host for e in d.tick(10.0)] == hs[:2]
    assert {k: d.stats[k] for k in ("ejections_success_rate", "ejections_detected_success_rate",
                                    "ejections_enforced_success_rate", "ejections_total")} == {
        "ejections_success_rate": 2, "ejections_detected_success_rate": 2, "ejections_enforced_success_rate": 2,
        "ejections_total": 2}


def test_split_mode_runs_a_local_origin_failure_percentage_sweep():
    d, hs = detector(n=6, split_external_local_origin_errors=True, consecutive_local_origin_failure=1000,
                     enforcing_failure_percentage_local_origin=100, success_rate_minimum_hosts=1000)
    for _ in range(100):
        d.record(hs[0], CF, 0.0)
        for h in hs[1:]:
            d.record(h, CS, 0.0)
    assert d.tick(10.0) == [OutlierEvent(hs[0], "eject", "local_origin_failure_percentage", True)]
    assert d.stats["ejections_detected_local_origin_failure_percentage"] == 1
    assert d.stats["ejections_detected_failure_percentage"] == 0


def test_ejections_active_follows_the_host_set():
    d, hs = detector(n=4)
    fail(d, hs[0], 5)
    d.update_hosts(list(reversed(hs)))  # the same hosts in another order: still one
    assert d.stats["ejections_active"] == 1
    other, carried = detector(n=2)  # hosts ejected under a previous detector (a cluster update adopts them)
    fail(other, carried[0], 5)
    fail(other, carried[1], 5)
    d.update_hosts(hs + carried)
    assert d.stats["ejections_active"] == 3
    d.update_hosts(hs + carried)
    assert d.stats["ejections_active"] == 3
    assert OutlierDetector(OutlierDetection(), carried).stats["ejections_active"] == 2
    d.update_hosts(hs[1:])
    assert d.stats["ejections_active"] == 0


def test_a_host_removed_mid_request_is_not_ejected_by_its_late_results():
    """A try that ends after EDS removed its host still reaches record(); Envoy ignores the detection (the host
    has no monitor in the detector any more). Ejecting it would count in ejections_active for good: no sweep
    would ever return it."""
    d, hs = detector(n=3)
    gone = hs[0]
    d.update_hosts(hs[1:])
    assert fail(d, gone, 5) == [] and not gone.ejected
    assert d.stats["ejections_active"] == 0 and d.stats["ejections_detected_consecutive_5xx"] == 0
    d.update_hosts(hs)  # it comes back: counted from zero on, not twice
    assert d.stats["ejections_active"] == 0


def test_detector_for_hands_over_the_rng_and_the_clock():
    rng, clock = random.Random(7), (lambda: 12.0)
    d = detector_for(OutlierDetection(), [Host("10.0.0.1", 80)], rng=rng, clock=clock)
    assert d.rng is rng and d.clock is clock
