"""An upstream endpoint and its live state (Envoy `HostImpl` + its outlier `DetectorHostMonitorImpl` state).

Config is swapped whole, but a `Host` is live state that must survive a swap when (address, port) is
unchanged: its active request count (least-request balancing), counters (`/clusters`) and outlier state (an
ejected host stays ejected). `HostSet.update()` (and the engine's `ClusterRuntime.set_endpoints`) reuse Host
objects by (address, port).

Health: EDS `health_status` HEALTHY / UNKNOWN / DEGRADED count as healthy (pyproxy has no separate degraded
tier), UNHEALTHY / DRAINING / TIMEOUT do not; an outlier-ejected host is not `available` either. Which hosts the
load balancer may use (and panic mode) is decided in `load_balancer.py`; ejection in `outlier.py`.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

from pyproxy.config.model import ClusterLoadAssignment, LbEndpoint

__all__ = ["Host", "HostSet", "HEALTHY_STATUSES", "health_epoch", "lb_endpoints_of"]

HEALTHY_STATUSES = frozenset({"HEALTHY", "UNKNOWN", "DEGRADED"})

_HEALTH_EPOCH = [0]  # bumped by every change to any host's health inputs (a list: see flush.py's _batches)


def health_epoch() -> int:
    """A number that moves whenever some host's `healthy` may have changed: an ejection or its end, a new EDS
    health_status. A load balancer recomputes its candidate hosts only when it moved, not per pick (Envoy too
    rebuilds a host set's healthy hosts on a health change): a pick no longer walks every host."""
    return _HEALTH_EPOCH[0]


class Host:
    """One endpoint: identity (address, port), config (weight, metadata, health_status) and live counters."""

    __slots__ = (
        # identity and config
        "address", "port", "weight", "metadata", "_health_status", "hostname", "locality", "priority",
        # live load and Envoy's per-host counters (/clusters)
        "active_requests", "rq_total", "rq_success", "rq_error", "rq_timeout",
        "cx_total", "cx_active", "stats_cx_connect_fail",
        # outlier detection state
        "_ejected_until", "ejected_at", "unejected_at", "times_ejected", "eject_backoff", "eject_jitter",
        "consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure",
        "sr_total", "sr_success", "sr_prev_total", "sr_prev_success",
        "lo_total", "lo_success", "lo_prev_total", "lo_prev_success", "success_rate", "local_success_rate",
        "__weakref__",
    )

    def __init__(self, address: str, port: int, *, weight: int = 1, metadata: Any = None,
                 health_status: str = "HEALTHY", hostname: str = "", locality: Any = None, priority: int = 0):
        self.address = address
        self.port = port
        self._health_status = ""  # none yet: update_config sets it (and moves the epoch)
        self.update_config(weight, metadata, health_status, hostname, locality, priority)
        self.active_requests = 0
        self.rq_total = 0
        self.rq_success = 0
        self.rq_error = 0
        self.rq_timeout = 0
        self.cx_total = 0
        self.cx_active = 0
        self.stats_cx_connect_fail = 0
        self.ejected_until = None
        self.ejected_at: float | None = None
        self.unejected_at: float | None = None
        self.times_ejected = 0  # Envoy num_ejections (ever)
        self.eject_backoff = 0  # Envoy ejectTimeBackoff: multiplies base_ejection_time, decays while healthy
        self.eject_jitter = 0.0
        self.consecutive_5xx = 0
        self.consecutive_gateway_failure = 0
        self.consecutive_local_origin_failure = 0
        # success-rate windows: current interval being written, previous one being read (Envoy's two buckets)
        self.sr_total = self.sr_success = self.sr_prev_total = self.sr_prev_success = 0
        self.lo_total = self.lo_success = self.lo_prev_total = self.lo_prev_success = 0
        self.success_rate = -1.0  # last computed external-origin success rate (/clusters), -1 = none
        self.local_success_rate = -1.0

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)

    @property
    def address_string(self) -> str:
        """`ip:port` as Envoy prints it (%UPSTREAM_HOST%, /clusters); IPv6 in brackets."""
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    # the two inputs of `healthy`: properties, so that every change moves health_epoch()
    @property
    def ejected_until(self) -> float | None:
        """Monotonic time the host may return; None when not ejected (outlier detection)."""
        return self._ejected_until

    @ejected_until.setter
    def ejected_until(self, value: float | None) -> None:
        self._ejected_until = value
        _HEALTH_EPOCH[0] += 1

    @property
    def health_status(self) -> str:
        """EDS health_status (HEALTHY, UNKNOWN, DEGRADED count as healthy)."""
        return self._health_status

    @health_status.setter
    def health_status(self, value: str) -> None:
        self._health_status = value
        _HEALTH_EPOCH[0] += 1

    @property
    def ejected(self) -> bool:
        return self._ejected_until is not None

    @property
    def healthy(self) -> bool:
        """Usable outside panic mode: EDS-healthy and not ejected by outlier detection."""
        return self._ejected_until is None and self._health_status in HEALTHY_STATUSES

    def update_config(self, weight: int, metadata: Any, health_status: str, hostname: str = "",
                      locality: Any = None, priority: int = 0) -> None:
        """New config for the same endpoint: live counters and outlier state are kept."""
        self.weight = weight if weight and weight > 0 else 1
        self.metadata = metadata
        if health_status != self._health_status:  # an unchanged host does not make every balancer recompute
            self.health_status = health_status
        self.hostname = hostname
        self.locality = locality
        self.priority = priority

    def health_flags(self) -> str:
        """Envoy's /clusters health_flags: "healthy" or "/failed_outlier_check" etc."""
        flags = []
        if self.ejected_until is not None:
            flags.append("/failed_outlier_check")
        if self.health_status in ("UNHEALTHY", "TIMEOUT"):
            flags.append("/failed_eds_health")
        if self.health_status == "DRAINING":
            flags.append("/pending_dynamic_removal")
        if self.health_status == "DEGRADED":
            flags.append("/degraded_eds_health")
        return "".join(flags) or "healthy"

    def describe(self) -> dict[str, Any]:
        """The per-host lines of Envoy's /clusters."""
        return {
            "cx_active": self.cx_active,
            "cx_connect_fail": self.stats_cx_connect_fail,
            "cx_total": self.cx_total,
            "rq_active": self.active_requests,
            "rq_error": self.rq_error,
            "rq_success": self.rq_success,
            "rq_timeout": self.rq_timeout,
            "rq_total": self.rq_total,
            "hostname": self.hostname,
            "health_flags": self.health_flags(),
            "weight": self.weight,
            "success_rate": self.success_rate,
            "local_origin_success_rate": self.local_success_rate,
        }

    def __repr__(self) -> str:
        state = f"ejected(x{self.times_ejected})" if self.ejected else self.health_status.lower()
        return f"<Host {self.address_string} w={self.weight} {state} active={self.active_requests}>"


def lb_endpoints_of(cla: ClusterLoadAssignment | None) -> list[tuple[LbEndpoint, Any, int]]:
    """(endpoint, locality, priority) for every lb_endpoint of a ClusterLoadAssignment, in order."""
    out: list[tuple[LbEndpoint, Any, int]] = []
    if cla is None:
        return out
    for group in cla.endpoints:
        for ep in group.lb_endpoints:
            out.append((ep, group.locality, group.priority))
    return out


def _host_args(ep: LbEndpoint) -> tuple[str, int, int]:
    assert ep.endpoint is not None and ep.endpoint.address is not None
    sa = ep.endpoint.address.socket_address
    assert sa is not None
    return sa.address, sa.port_value, ep.load_balancing_weight or 1


class HostSet(Sequence[Host]):
    """A cluster's hosts, in endpoint order. Immutable as a list; the Host objects in it are live."""

    __slots__ = ("hosts", "_by_key")

    def __init__(self, hosts: Iterable[Host] = ()):
        self.hosts: tuple[Host, ...] = tuple(hosts)
        by_key: dict[tuple[str, int], list[Host]] = {}
        for h in self.hosts:
            by_key.setdefault(h.key, []).append(h)
        self._by_key = by_key

    @classmethod
    def from_load_assignment(cls, cla: ClusterLoadAssignment | None) -> "HostSet":
        return cls().update(cla)

    def update(self, new_endpoints: ClusterLoadAssignment | Iterable[LbEndpoint] | None) -> "HostSet":
        """The host set for new endpoints, reusing this set's Host objects by (address, port) (duplicates are
        matched in order). Removed hosts are simply not in the result."""
        if new_endpoints is None or isinstance(new_endpoints, ClusterLoadAssignment):
            entries = lb_endpoints_of(new_endpoints)
        else:
            entries = [(ep, None, 0) for ep in new_endpoints]
        spare = {k: list(v) for k, v in self._by_key.items()}
        hosts: list[Host] = []
        for ep, locality, priority in entries:
            address, port, weight = _host_args(ep)
            hostname = ep.endpoint.hostname if ep.endpoint is not None else ""
            reuse = spare.get((address, port))
            if reuse:
                h = reuse.pop(0)
                h.update_config(weight, ep.metadata, ep.health_status, hostname, locality, priority)
            else:
                h = Host(address, port, weight=weight, metadata=ep.metadata, health_status=ep.health_status,
                         hostname=hostname, locality=locality, priority=priority)
            hosts.append(h)
        return HostSet(hosts)

    def removed_from(self, previous: "HostSet") -> list[Host]:
        """Hosts of `previous` that are not in this set (their pools should close)."""
        mine = {id(h) for h in self.hosts}
        return [h for h in previous.hosts if id(h) not in mine]

    def get(self, address: str, port: int) -> Host | None:
        found = self._by_key.get((address, port))
        return found[0] if found else None

    def __getitem__(self, i):  # type: ignore[override]
        return self.hosts[i]

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __repr__(self) -> str:
        healthy = sum(1 for h in self.hosts if h.healthy)
        return f"HostSet({len(self.hosts)} hosts, {healthy} healthy)"
