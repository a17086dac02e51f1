"""Circuit breakers: a cluster's resource limits (Envoy: ResourceManagerImpl, `circuit_breakers.thresholds`).

Counts open connections, pending requests, active requests and active retries for the DEFAULT priority
and says whether one more is allowed. Envoy's defaults: 1024 connections, 1024 pending, 1024 requests,
3 retries (Istio raises all of them to 2^32-1 unless a DestinationRule sets them). Pure counting, no I/O.
"""
from __future__ import annotations

from typing import Any, Iterable

DEFAULTS = {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}


class ResourceLimits:
    __slots__ = ("max_connections", "max_pending_requests", "max_requests", "max_retries",
                 "connections", "pending", "requests", "retries")

    def __init__(self, thresholds: Iterable[Any] = ()):
        chosen = None
        for t in thresholds:
            if getattr(t, "priority", "DEFAULT") == "DEFAULT":
                chosen = t
        for key, default in DEFAULTS.items():
            value = getattr(chosen, key, None) if chosen is not None else None
            setattr(self, key, default if value is None else value)
        self.connections = 0
        self.pending = 0
        self.requests = 0
        self.retries = 0

    def can_create_connection(self) -> bool:
        return self.connections < self.max_connections

    def can_create_pending(self) -> bool:
        return self.pending < self.max_pending_requests

    def can_create_request(self) -> bool:
        return self.requests < self.max_requests

    def can_retry(self) -> bool:
        return self.retries < self.max_retries

    def inc_connections(self) -> None:
        self.connections += 1

    def dec_connections(self) -> None:
        self.connections -= 1

    def inc_pending(self) -> None:
        self.pending += 1

    def dec_pending(self) -> None:
        self.pending -= 1

    def inc_requests(self) -> None:
        self.requests += 1

    def dec_requests(self) -> None:
        self.requests -= 1

    def inc_retries(self) -> None:
        self.retries += 1

    def dec_retries(self) -> None:
        self.retries -= 1

    def describe(self) -> dict[str, int]:
        """The `default_priority` lines of Envoy's /clusters."""
        return {key: getattr(self, key) for key in DEFAULTS}

    def __repr__(self) -> str:
        return (f"<ResourceLimits cx={self.connections}/{self.max_connections} pending={self.pending}/"
                f"{self.max_pending_requests} rq={self.requests}/{self.max_requests} "
                f"retries={self.retries}/{self.max_retries}>")
