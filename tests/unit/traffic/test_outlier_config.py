"""The outlier detector's settings: Envoy's defaults (outlier_detection.proto) when a field is unset, the
field's own value when set. Pinned directly, because a default that drifts (5 -> 6 consecutive 5xx, 10 -> 11 %
max ejection) changes behaviour only after many requests, which the behaviour tests do not all reach."""
from __future__ import annotations

import random

import pytest

from pyproxy.config.decode import ConfigError
from pyproxy.config.model import OutlierDetection
from pyproxy.upstream.outlier import OutlierDetector

SETTINGS = ("interval", "base_ejection_time", "max_ejection_time", "max_ejection_time_jitter", "max_ejection_percent",
            "always_eject_one_host", "split", "consecutive_5xx", "consecutive_gateway_failure",
            "consecutive_local_origin_failure", "success_rate_minimum_hosts", "success_rate_request_volume",
            "success_rate_stdev_factor", "failure_percentage_threshold", "failure_percentage_minimum_hosts",
            "failure_percentage_request_volume")
ENFORCING = ("consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure", "success_rate",
             "local_origin_success_rate", "failure_percentage", "local_origin_failure_percentage")


def settings(d: OutlierDetector) -> dict:
    return {name: getattr(d, name) for name in SETTINGS}


def test_unset_fields_take_envoys_defaults():
    d = OutlierDetector(OutlierDetection(), [])
    assert settings(d) == dict(zip(SETTINGS, (10.0, 30.0, 300.0, 0.0, 10, False, False, 5, 5, 5, 5, 100, 1.9, 85, 5,
                                              50)))
    assert d.enforcing == dict(zip(ENFORCING, (100, 0, 100, 100, 100, 0, 0)))
    assert d.cfg is not None and isinstance(d.rng, random.Random)
    assert d.stats and set(d.stats.values()) == {0}  # every counter and the gauge start at zero


def test_set_fields_are_used_as_given():
    cfg = OutlierDetection(
        interval=2.0, base_ejection_time=3.0, max_ejection_time=40.0, max_ejection_time_jitter=0.5,
        max_ejection_percent=42, always_eject_one_host=True, split_external_local_origin_errors=True,
        consecutive_5xx=7, consecutive_gateway_failure=8, consecutive_local_origin_failure=9,
        success_rate_minimum_hosts=11, success_rate_request_volume=12, success_rate_stdev_factor=1500,
        failure_percentage_threshold=13, failure_percentage_minimum_hosts=14, failure_percentage_request_volume=15,
        enforcing_consecutive_5xx=21, enforcing_consecutive_gateway_failure=22,
        enforcing_consecutive_local_origin_failure=23, enforcing_success_rate=24,
        enforcing_local_origin_success_rate=25, enforcing_failure_percentage=26,
        enforcing_failure_percentage_local_origin=27)
    rng = random.Random(1)
    d = OutlierDetector(cfg, [], rng=rng)
    assert settings(d) == dict(zip(SETTINGS, (2.0, 3.0, 40.0, 0.5, 42, True, True, 7, 8, 9, 11, 12, 1.5, 13, 14, 15)))
    assert d.enforcing == dict(zip(ENFORCING, (21, 22, 23, 24, 25, 26, 27)))
    assert d.cfg is cfg and d.rng is rng


@pytest.mark.parametrize("base, want", [(30.0, 300.0), (300.0, 300.0), (301.0, 301.0), (400.0, 400.0)])
def test_max_ejection_time_defaults_to_300_s_or_the_base_when_larger(base, want):
    assert OutlierDetector(OutlierDetection(base_ejection_time=base), []).max_ejection_time == want


@pytest.mark.parametrize("given, want", [(100, 100), (101, 100), (150, 100), (99, 99)])
def test_max_ejection_percent_is_capped_at_100(given, want):
    assert OutlierDetector(OutlierDetection(max_ejection_percent=given), []).max_ejection_percent == want


def test_a_max_ejection_time_below_the_base_is_refused_by_name():
    with pytest.raises(ConfigError) as e:
        OutlierDetector(OutlierDetection(base_ejection_time=10.0, max_ejection_time=5.0), [])
    assert str(e.value) == ("outlier_detection.max_ejection_time: "
                            "max_ejection_time cannot be smaller than base_ejection_time")


def _detector(n=10, **cfg):
    from pyproxy.config.decode import decode
    from pyproxy.upstream.host import Host

    hosts = [Host(f"10.0.0.{i + 1}", 80) for i in range(n)]
    cfg.setdefault("max_ejection_percent", 100)
    return OutlierDetector(decode(OutlierDetection, cfg), hosts, rng=random.Random(0)), hosts


def _fail(d, host, times, status=500, now=0.0):
    return [e for _ in range(times) for e in d.record(host, status, now)]


def test_every_ejection_counts_once_in_each_counter_and_names_its_host():
    """Two hosts ejected (consecutive 5xx), one of them twice: the counters add up, they are not set to 1."""
    d, hs = _detector()
    (first,) = _fail(d, hs[0], 5, now=0.0)
    assert first == (hs[0], "eject", "consecutive_5xx", True)
    _fail(d, hs[1], 5, now=0.0)
    d.tick(30.0)  # both back
    _fail(d, hs[0], 5, now=31.0)
    assert {k: d.stats[k] for k in ("ejections_total", "ejections_enforced_total", "ejections_enforced_consecutive_5xx",
                                    "ejections_detected_consecutive_5xx", "ejections_active")} == {
        "ejections_total": 3, "ejections_enforced_total": 3, "ejections_enforced_consecutive_5xx": 3,
        "ejections_detected_consecutive_5xx": 3, "ejections_active": 1}
    assert (hs[0].times_ejected, hs[1].times_ejected) == (2, 1)


def test_the_deprecated_ejections_total_counts_consecutive_5xx_and_success_rate_only():
    """Envoy's deprecated `ejections_total` is bumped for consecutive 5xx and success rate, not for gateway
    failures (enforced here at 100 %)."""
    d, hs = _detector(enforcing_consecutive_gateway_failure=100, consecutive_5xx=1000)
    (event,) = _fail(d, hs[0], 5, status=502)
    assert event.type == "consecutive_gateway_failure" and event.enforced
    assert d.stats["ejections_total"] == 0 and d.stats["ejections_enforced_total"] == 1


def test_overflow_is_counted_per_refused_ejection():
    d, hs = _detector(max_ejection_percent=10)  # 10 hosts: one may be ejected
    _fail(d, hs[0], 5)
    _fail(d, hs[1], 5)
    _fail(d, hs[2], 5)
    assert d.stats["ejections_overflow"] == 2 and not hs[1].ejected and not hs[2].ejected


@pytest.mark.parametrize("enforcing, ejected", [(100, True), (0, False)])
def test_enforcing_percentage_decides_whether_a_detected_ejection_happens(enforcing, ejected):
    d, hs = _detector(enforcing_consecutive_5xx=enforcing)
    (event,) = _fail(d, hs[0], 5)
    assert (event.enforced, hs[0].ejected) == (ejected, ejected)
    assert d.stats["ejections_detected_consecutive_5xx"] == 1
    assert d.stats["ejections_enforced_consecutive_5xx"] == (1 if ejected else 0)


def test_jitter_is_drawn_in_whole_milliseconds_up_to_the_maximum():
    """max_ejection_time_jitter: a uniform draw in [0, jitter] ms, added to the ejection time."""
    d, hs = _detector(max_ejection_time_jitter="0.005s")
    rng = random.Random(0)
    expected = rng.randrange(6) / 1000.0  # the detector's rng is Random(0) too: first draw, 0..5 ms
    _fail(d, hs[0], 5, now=0.0)
    assert hs[0].eject_jitter == expected and 0.0 <= hs[0].eject_jitter <= 0.005
    draws = set()
    for i in range(1, 60):  # many ejections: every value 0..5 ms shows up, nothing above
        d.tick(1000.0 * i)
        _fail(d, hs[0], 5, now=1000.0 * i + 1)
        draws.add(round(hs[0].eject_jitter * 1000))
    assert draws == {0, 1, 2, 3, 4, 5}
