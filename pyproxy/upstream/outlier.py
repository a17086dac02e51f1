"""Outlier detection: passive health checking that ejects misbehaving hosts (Envoy `Outlier::DetectorImpl`).

Where it sits: after every upstream try the router reports the result (`record`); every `interval` the engine
calls `tick(now)`. Ejection sets `Host.ejected_until`, which the load balancer honours on its next pick (and
`/clusters` shows as `/failed_outlier_check`). One detector per cluster (per worker; Envoy has one per cluster).

Envoy semantics (source/common/upstream/outlier_detection_impl.cc; cluster/v3/outlier_detection.proto;
arch_overview/upstream/outlier.rst). Istio's DestinationRule `outlierDetection` maps onto these fields.

* Results: an HTTP status, or a local-origin event. With `split_external_local_origin_errors: false` (default)
  local-origin events count as HTTP codes: a connect failure or reset as 503, a timeout as 504. With it true,
  they feed `consecutive_local_origin_failure` and a separate success rate instead, and any response resets it.
* consecutive_5xx (default 5, enforcing 100 %): every 5xx counts, anything else resets the count.
  consecutive_gateway_failure (default 5, enforcing 0 % ⇒ detected and counted, not enforced): 502/503/504 count,
  other 5xx reset it, non-5xx reset both. The host is ejected when a count reaches its threshold exactly, and the
  count restarts.
* A result for a host that has left the cluster (its try ended after EDS removed it) still counts on the host but
  ejects nothing: Envoy's `onConsecutiveErrorWorker` ignores hosts without a monitor.
* Ejection is allowed only if, counting this host, at most `max_ejection_percent` (default 10) of the hosts would
  be ejected; otherwise `ejections_overflow`. Note: with 10 % and fewer than 10 hosts nothing is ever ejected (set
  maxEjectionPercent, or `always_eject_one_host: true`, which always allows the first ejection).
  `enforcing_*` percentages are drawn with the injected rng; a detected but unenforced ejection only counts
  `ejections_detected_*`.
* Ejection time: base_ejection_time (30 s) × the host's back-off multiplier, which grows by one per ejection and
  shrinks by one per `interval` (10 s) that the host spends healthy, capped by max_ejection_time (default
  max(300 s, base)); plus a random jitter up to max_ejection_time_jitter. The host returns on the first `tick`
  after that, with its consecutive counters reset.
* Success rate (`enforcing_success_rate`, default 100) and failure percentage (`enforcing_failure_percentage`,
  default 0) run at each tick over the previous interval's counts: hosts with at least `*_request_volume`
  requests, if at least `*_minimum_hosts` such hosts; success-rate ejects below mean − stdev × factor/1000
  (`success_rate_stdev_factor` 1900), failure-percentage at or above `failure_percentage_threshold` (85).
  (Istio sets enforcing_success_rate to 0.)

Stats (`stats`, publish under `cluster.<name>.outlier_detection.`): Envoy's names, e.g. `ejections_active`
(gauge), `ejections_enforced_total`, `ejections_overflow`, `ejections_detected_consecutive_5xx`,
`ejections_enforced_consecutive_5xx`, the deprecated `ejections_total` and `ejections_consecutive_5xx`.
"""
from __future__ import annotations

import enum
import math
import random
from typing import Callable, Iterable, NamedTuple, Sequence

from pyproxy.config.model import OutlierDetection

from .host import Host

__all__ = ["OutlierDetector", "OutlierEvent", "OutlierResult", "EJECTION_TYPES"]

EJECTION_TYPES = (
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "consecutive_local_origin_failure",
    "success_rate",
    "local_origin_success_rate",
    "failure_percentage",
    "local_origin_failure_percentage",
)


class OutlierResult(enum.Enum):
    """Envoy `Outlier::Result` for events that are not an HTTP status."""

    LOCAL_ORIGIN_CONNECT_FAILED = "connect_failed"  # connect failure, or reset before a response
    LOCAL_ORIGIN_TIMEOUT = "timeout"
    LOCAL_ORIGIN_CONNECT_SUCCESS = "connect_success"


class OutlierEvent(NamedTuple):
    host: Host
    action: str  # "eject" or "uneject"
    type: str  # one of EJECTION_TYPES ("" for uneject)
    enforced: bool


def _get(value: int | float | None, default: int | float) -> int | float:
    return default if value is None else value


class OutlierDetector:
    """`OutlierDetector(cfg, hosts, rng=..., clock=...)`: `record()` per try, `tick(now)` every `interval`.
    `clock` (e.g. the runtime's monotonic clock) is only used when `record()` is called without `now`."""

    def __init__(self, cfg: OutlierDetection, hosts: Iterable[Host], *, rng: random.Random | None = None,
                 clock: Callable[[], float] | None = None):
        self.cfg = cfg
        self.rng = rng or random.Random()
        self.clock = clock
        self.interval = float(_get(cfg.interval, 10.0))
        self.base_ejection_time = float(_get(cfg.base_ejection_time, 30.0))
        self.max_ejection_time = float(_get(cfg.max_ejection_time, max(300.0, self.base_ejection_time)))
        self.max_ejection_time_jitter = float(_get(cfg.max_ejection_time_jitter, 0.0))
        self.max_ejection_percent = min(100, int(_get(cfg.max_ejection_percent, 10)))
        self.always_eject_one_host = bool(cfg.always_eject_one_host)
        self.split = cfg.split_external_local_origin_errors
        self.consecutive_5xx = int(_get(cfg.consecutive_5xx, 5))
        self.consecutive_gateway_failure = int(_get(cfg.consecutive_gateway_failure, 5))
        self.consecutive_local_origin_failure = int(_get(cfg.consecutive_local_origin_failure, 5))
        self.enforcing = {
            "consecutive_5xx": int(_get(cfg.enforcing_consecutive_5xx, 100)),
            "consecutive_gateway_failure": int(_get(cfg.enforcing_consecutive_gateway_failure, 0)),
            "consecutive_local_origin_failure": int(_get(cfg.enforcing_consecutive_local_origin_failure, 100)),
            "success_rate": int(_get(cfg.enforcing_success_rate, 100)),
            "local_origin_success_rate": int(_get(cfg.enforcing_local_origin_success_rate, 100)),
            "failure_percentage": int(_get(cfg.enforcing_failure_percentage, 0)),
            "local_origin_failure_percentage": int(_get(cfg.enforcing_failure_percentage_local_origin, 0)),
        }
        self.success_rate_minimum_hosts = int(_get(cfg.success_rate_minimum_hosts, 5))
        self.success_rate_request_volume = int(_get(cfg.success_rate_request_volume, 100))
        self.success_rate_stdev_factor = int(_get(cfg.success_rate_stdev_factor, 1900)) / 1000.0
        self.failure_percentage_threshold = int(_get(cfg.failure_percentage_threshold, 85))
        self.failure_percentage_minimum_hosts = int(_get(cfg.failure_percentage_minimum_hosts, 5))
        self.failure_percentage_request_volume = int(_get(cfg.failure_percentage_request_volume, 50))
        if self.max_ejection_time < self.base_ejection_time:
            from pyproxy.config.decode import ConfigError

            raise ConfigError("outlier_detection.max_ejection_time",
                              "max_ejection_time cannot be smaller than base_ejection_time")
        self.stats: dict[str, int] = {
            "ejections_active": 0,
            "ejections_total": 0,
            "ejections_overflow": 0,
            "ejections_enforced_total": 0,
            "ejections_consecutive_5xx": 0,
            "ejections_success_rate": 0,
        }
        for t in EJECTION_TYPES:
            self.stats[f"ejections_detected_{t}"] = 0
            self.stats[f"ejections_enforced_{t}"] = 0
        self.hosts: list[Host] = []
        self._members: set[int] = set()  # id() of self.hosts: Host has no __eq__/__hash__ of its own
        self.update_hosts(hosts)

    # ------------------------------------------------------------ membership
    def update_hosts(self, hosts: Iterable[Host]) -> None:
        """The cluster's host set changed: removed hosts that were ejected no longer count as ejected."""
        new = list(hosts)
        keep = {id(h) for h in new}
        for h in self.hosts:
            if id(h) not in keep and h.ejected_until is not None:
                self.stats["ejections_active"] -= 1
        for h in new:
            if id(h) not in self._members and h.ejected_until is not None:  # carried over from a previous detector
                self.stats["ejections_active"] += 1
        self.hosts = new
        self._members = keep

    # ------------------------------------------------------------ results
    def record(self, host: Host, status: int | OutlierResult | None = None, now: float | None = None, *,
               connect_failure: bool = False, reset: bool = False, timeout: bool = False) -> list[OutlierEvent]:
        """One try's result on `host`: an HTTP status, an OutlierResult, or (status None) the flags
        connect_failure / reset / timeout. Returns the ejections it caused (usually none)."""
        if now is None:
            now = self.clock() if self.clock is not None else 0.0
        if isinstance(status, OutlierResult):
            result: OutlierResult | None = status
            code = None
        elif status is not None:
            result, code = None, status
        elif timeout:
            result, code = OutlierResult.LOCAL_ORIGIN_TIMEOUT, None
        elif connect_failure or reset:
            result, code = OutlierResult.LOCAL_ORIGIN_CONNECT_FAILED, None
        else:
            return []
        events: list[OutlierEvent] = []
        if not self.split:
            if code is None:
                if result is OutlierResult.LOCAL_ORIGIN_CONNECT_SUCCESS:
                    return events
                code = 504 if result is OutlierResult.LOCAL_ORIGIN_TIMEOUT else 503
            self._http_code(host, code, now, events)
            return events
        if code is not None:
            self._local_no_failure(host)  # a response means the connection worked
            self._http_code(host, code, now, events)
        elif result is OutlierResult.LOCAL_ORIGIN_CONNECT_SUCCESS:
            self._local_no_failure(host)
        else:
            host.lo_total += 1
            host.consecutive_local_origin_failure += 1
            if host.consecutive_local_origin_failure == self.consecutive_local_origin_failure:
                self._consecutive(host, "consecutive_local_origin_failure", now, events)
        return events

    def _local_no_failure(self, host: Host) -> None:
        host.lo_total += 1
        host.lo_success += 1
        host.consecutive_local_origin_failure = 0

    def _http_code(self, host: Host, code: int, now: float, events: list[OutlierEvent]) -> None:
        host.sr_total += 1
        if 500 <= code <= 599:
            if code in (502, 503, 504):
                host.consecutive_gateway_failure += 1
                if host.consecutive_gateway_failure == self.consecutive_gateway_failure:
                    self._consecutive(host, "consecutive_gateway_failure", now, events)
            else:
                host.consecutive_gateway_failure = 0
            host.consecutive_5xx += 1
            if host.consecutive_5xx == self.consecutive_5xx:
                self._consecutive(host, "consecutive_5xx", now, events)
        else:
            host.sr_success += 1
            host.consecutive_5xx = 0
            host.consecutive_gateway_failure = 0

    def _consecutive(self, host: Host, kind: str, now: float, events: list[OutlierEvent]) -> None:
        # A try that ends after its host left the cluster (EDS removed it mid-request) still counts on the host,
        # but the detector ignores it, as Envoy's onConsecutiveErrorWorker does: no tick would ever return it,
        # and ejections_active would count it for good.
        if host.ejected_until is not None or id(host) not in self._members:
            return
        self.stats[f"ejections_detected_{kind}"] += 1
        self._eject(host, kind, now, events)
        if kind == "consecutive_5xx":
            self.stats["ejections_consecutive_5xx"] += 1
            host.consecutive_5xx = 0
        elif kind == "consecutive_gateway_failure":
            host.consecutive_gateway_failure = 0
        else:
            host.consecutive_local_origin_failure = 0

    # ------------------------------------------------------------ ejection
    def _eject(self, host: Host, kind: str, now: float, events: list[OutlierEvent]) -> None:
        active = self.stats["ejections_active"]
        allowed = 100.0 * (active + 1) / len(self.hosts) <= self.max_ejection_percent  # host is one of them
        if self.always_eject_one_host and active == 0:
            allowed = True
        if not allowed:
            self.stats["ejections_overflow"] += 1
            return
        if kind in ("consecutive_5xx", "success_rate"):
            self.stats["ejections_total"] += 1  # deprecated counter, kept as Envoy does
        if self.rng.randrange(100) >= self.enforcing[kind]:
            events.append(OutlierEvent(host, "eject", kind, False))
            return
        self.stats["ejections_active"] += 1
        self.stats["ejections_enforced_total"] += 1
        self.stats[f"ejections_enforced_{kind}"] += 1
        host.times_ejected += 1
        host.ejected_at = now
        # drawn even when the jitter is 0 (a draw of 0), as Envoy's `random() % (max_jitter_ms + 1)` is
        host.eject_jitter = self.rng.randrange(int(self.max_ejection_time_jitter * 1000) + 1) / 1000.0
        base = self.base_ejection_time
        if host.eject_backoff * base < self.max_ejection_time + base:
            host.eject_backoff += 1
        host.ejected_until = now + self._ejection_duration(host)
        events.append(OutlierEvent(host, "eject", kind, True))

    def _ejection_duration(self, host: Host) -> float:
        return min(self.base_ejection_time * host.eject_backoff, self.max_ejection_time) + host.eject_jitter

    def _uneject(self, host: Host, now: float, events: list[OutlierEvent]) -> None:
        self.stats["ejections_active"] -= 1
        host.ejected_until = None
        host.unejected_at = now
        host.consecutive_5xx = 0
        host.consecutive_gateway_failure = 0
        host.consecutive_local_origin_failure = 0
        events.append(OutlierEvent(host, "uneject", "", True))

    # ------------------------------------------------------------ the interval sweep
    def tick(self, now: float) -> list[OutlierEvent]:
        """Envoy's interval timer: return hosts whose ejection time is over, roll the success-rate windows, run
        success-rate and failure-percentage detection, and decay the back-off of hosts that stayed healthy."""
        events: list[OutlierEvent] = []
        for h in self.hosts:
            if h.ejected_until is not None and h.ejected_at is not None:
                if now - h.ejected_at >= self._ejection_duration(h):
                    self._uneject(h, now, events)
            h.sr_prev_total, h.sr_prev_success, h.sr_total, h.sr_success = h.sr_total, h.sr_success, 0, 0
            h.lo_prev_total, h.lo_prev_success, h.lo_total, h.lo_success = h.lo_total, h.lo_success, 0, 0
            h.success_rate = -1.0
            h.local_success_rate = -1.0
        self._success_rate_sweep(now, events, local=False)
        if self.split:
            self._success_rate_sweep(now, events, local=True)
        for h in self.hosts:
            if (h.ejected_until is None and h.unejected_at is not None and now - h.unejected_at >= self.interval
                    and h.eject_backoff > 0):
                h.eject_backoff -= 1
        return events

    def _success_rate_sweep(self, now: float, events: list[OutlierEvent], *, local: bool) -> None:
        hosts = self.hosts
        if len(hosts) < self.success_rate_minimum_hosts and len(hosts) < self.failure_percentage_minimum_hosts:
            return
        sr_volume, fp_volume = self.success_rate_request_volume, self.failure_percentage_request_volume
        sr_hosts: list[tuple[Host, float]] = []
        fp_hosts: list[tuple[Host, float]] = []
        for h in hosts:
            if h.ejected_until is not None:
                continue
            total, success = (h.lo_prev_total, h.lo_prev_success) if local else (h.sr_prev_total, h.sr_prev_success)
            if not total:
                continue
            rate = success * 100.0 / total
            if total >= min(sr_volume, fp_volume):
                if local:
                    h.local_success_rate = rate
                else:
                    h.success_rate = rate
            if total >= sr_volume:
                sr_hosts.append((h, rate))
            if total >= fp_volume:
                fp_hosts.append((h, rate))
        sr_kind = "local_origin_success_rate" if local else "success_rate"
        fp_kind = "local_origin_failure_percentage" if local else "failure_percentage"
        if sr_hosts and len(sr_hosts) >= self.success_rate_minimum_hosts:
            mean = sum(r for _, r in sr_hosts) / len(sr_hosts)
            stdev = math.sqrt(sum((r - mean) ** 2 for _, r in sr_hosts) / len(sr_hosts))
            threshold = mean - self.success_rate_stdev_factor * stdev
            for h, rate in sr_hosts:
                if rate < threshold:
                    if not local:
                        self.stats["ejections_success_rate"] += 1
                    self.stats[f"ejections_detected_{sr_kind}"] += 1
                    if h.ejected_until is None:
                        self._eject(h, sr_kind, now, events)
        if fp_hosts and len(fp_hosts) >= self.failure_percentage_minimum_hosts:
            for h, rate in fp_hosts:
                if 100.0 - rate >= self.failure_percentage_threshold:
                    self.stats[f"ejections_detected_{fp_kind}"] += 1
                    if h.ejected_until is None:
                        self._eject(h, fp_kind, now, events)

    def __repr__(self) -> str:
        return (f"<OutlierDetector hosts={len(self.hosts)} ejected={self.stats['ejections_active']} "
                f"interval={self.interval}s base={self.base_ejection_time}s max%={self.max_ejection_percent}>")


def detector_for(cluster_outlier: OutlierDetection | None, hosts: Sequence[Host], *, rng: random.Random,
                 clock: Callable[[], float] | None = None) -> OutlierDetector | None:
    """A detector when the cluster configures `outlier_detection` (Envoy runs none otherwise)."""
    if cluster_outlier is None:
        return None
    return OutlierDetector(cluster_outlier, hosts, rng=rng, clock=clock)
