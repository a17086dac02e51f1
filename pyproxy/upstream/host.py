"""An upstream endpoint and its live state (Envoy: HostImpl).

Config is swapped whole, but a `Host` is live state that must survive a swap when (address, port) is
unchanged: its active request count (least-request balancing), counters (`/clusters`) and outlier state
(an ejected host stays ejected). `ClusterRuntime.set_endpoints` reuses Host objects by (address, port).
"""
from __future__ import annotations

from typing import Any


class Host:
    __slots__ = (
        "address", "port", "weight", "metadata", "health_status", "active_requests", "rq_total", "rq_success",
        "rq_error", "rq_timeout", "cx_total", "cx_active", "stats_cx_connect_fail", "ejected_until",
        "times_ejected", "consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure",
        "__weakref__",
    )

    def __init__(self, address: str, port: int, *, weight: int = 1, metadata: Any = None,
                 health_status: str = "HEALTHY"):
        self.address = address
        self.port = port
        self.weight = weight
        self.metadata = metadata
        self.health_status = health_status
        self.active_requests = 0
        self.rq_total = 0
        self.rq_success = 0
        self.rq_error = 0
        self.rq_timeout = 0
        self.cx_total = 0
        self.cx_active = 0
        self.stats_cx_connect_fail = 0
        self.ejected_until: float | None = None  # monotonic time; None when not ejected
        self.times_ejected = 0
        self.consecutive_5xx = 0
        self.consecutive_gateway_failure = 0
        self.consecutive_local_origin_failure = 0

    @property
    def ejected(self) -> bool:
        return self.ejected_until is not None

    @property
    def healthy(self) -> bool:
        return self.ejected_until is None and self.health_status in ("HEALTHY", "UNKNOWN")

    def health_flags(self) -> str:
        """Envoy's /clusters health_flags: "healthy" or "/failed_outlier_check" etc."""
        flags = []
        if self.ejected_until is not None:
            flags.append("/failed_outlier_check")
        if self.health_status in ("UNHEALTHY", "TIMEOUT"):
            flags.append("/failed_eds_health")
        if self.health_status == "DRAINING":
            flags.append("/pending_dynamic_removal")
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
            "hostname": "",
            "health_flags": self.health_flags(),
            "weight": self.weight,
        }

    def __repr__(self) -> str:
        state = "ejected" if self.ejected else self.health_status.lower()
        return f"<Host {self.address}:{self.port} w={self.weight} {state} active={self.active_requests}>"
