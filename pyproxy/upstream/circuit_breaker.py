"""Circuit breakers: a cluster's resource counters and limits (Envoy `ResourceManagerImpl`, DEFAULT priority).

Where it sits: the connection pool asks before opening a connection, queueing a request or sending one; the
router asks before a retry (via RetryState). Every answer is a plain counter comparison; nothing waits. One
`ResourceLimits` per cluster per worker (Envoy keeps them per cluster; we run one event loop per worker).

Envoy semantics (envoy/config/cluster/v3/circuit_breaker.proto; arch_overview/upstream/circuit_breaking.rst):

* Limits from `circuit_breakers.thresholds[]` with `priority: DEFAULT` (HIGH is not routed here). Unset fields
  take Envoy's defaults: max_connections 1024, max_pending_requests 1024, max_requests 1024, max_retries 3.
  (Istio writes 2^32-1 for everything it does not set, so Istio-generated clusters are effectively unlimited.)
* `retry_budget` (budget_percent default 20 %, min_retry_concurrency default 3) replaces max_retries with
  max(min_retry_concurrency, budget_percent × (active + pending requests)).
* Overflow counters (cluster stats): `upstream_cx_overflow` (a connection was not opened: for HTTP/1 the
  request then waits as pending), `upstream_rq_pending_overflow` (the pending queue is full, or max_requests is
  reached: 503 UO with `x-envoy-overloaded: true`), `upstream_rq_retry_overflow` (a retry was not attempted).
* Gauges `circuit_breakers.default.{cx_open, rq_pending_open, rq_open, rq_retry_open}` are 1 while the resource
  is at its limit; with `track_remaining`, `circuit_breakers.default.remaining_{cx, pending, rq, retries}`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from pyproxy.config.model import Cluster, Thresholds

__all__ = ["Resource", "ResourceLimits", "OVERFLOW_COUNTERS"]

# Envoy defaults (circuit_breaker.proto)
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_PENDING_REQUESTS = 1024
DEFAULT_MAX_REQUESTS = 1024
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_BUDGET_PERCENT = 20.0
DEFAULT_MIN_RETRY_CONCURRENCY = 3

OVERFLOW_COUNTERS = ("upstream_cx_overflow", "upstream_rq_pending_overflow", "upstream_rq_retry_overflow")


class Resource:
    """One limited resource: a live count against a maximum (fixed, or computed for a retry budget)."""

    __slots__ = ("name", "count", "_max", "_max_fn")

    def __init__(self, name: str, maximum: int, max_fn: Callable[[], int] | None = None):
        self.name = name
        self.count = 0
        self._max = maximum
        self._max_fn = max_fn

    @property
    def max(self) -> int:
        return self._max_fn() if self._max_fn is not None else self._max

    def can_create(self) -> bool:
        return self.count < self.max

    def inc(self) -> None:
        self.count += 1

    def dec(self) -> None:
        if self.count <= 0:
            raise RuntimeError(f"circuit breaker resource {self.name!r} released more often than acquired")
        self.count -= 1

    @property
    def remaining(self) -> int:
        return max(0, self.max - self.count)

    @property
    def open(self) -> bool:
        """At (or over) its limit: Envoy's `*_open` gauge is 1."""
        return self.count >= self.max

    def __repr__(self) -> str:
        return f"Resource({self.name}: {self.count}/{self.max})"


def _percent(value: Any, default: float) -> float:
    if isinstance(value, Mapping):
        value = value.get("value")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _int(value: Any, default: int) -> int:
    if isinstance(value, Mapping):
        value = value.get("value")
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class ResourceLimits:
    """The DEFAULT-priority circuit breakers of one cluster: connections, pending requests, requests, retries.

    Use `try_acquire_*()` (True = go ahead, count it; False = overflow, counted in `stats`) and the matching
    `release_*()` exactly once per successful acquire. The finer-grained `can_create_*()` / `inc_*()` / `dec_*()`
    do the same without counting overflows (the caller counts them).

    `thresholds`: one Thresholds, the cluster's `circuit_breakers.thresholds` list (the first DEFAULT-priority
    entry is used), or None for Envoy's defaults."""

    __slots__ = ("connections", "pending_requests", "requests", "retries", "track_remaining", "stats")

    def __init__(self, thresholds: Thresholds | Iterable[Thresholds] | None = None):
        if thresholds is not None and not isinstance(thresholds, Thresholds):
            thresholds = next((t for t in thresholds if t.priority == "DEFAULT"), None)
        t = thresholds or Thresholds()
        self.track_remaining = t.track_remaining
        self.connections = Resource("cx", t.max_connections if t.max_connections is not None else DEFAULT_MAX_CONNECTIONS)
        self.pending_requests = Resource(
            "pending", t.max_pending_requests if t.max_pending_requests is not None else DEFAULT_MAX_PENDING_REQUESTS
        )
        self.requests = Resource("rq", t.max_requests if t.max_requests is not None else DEFAULT_MAX_REQUESTS)
        if t.retry_budget is not None:
            budget = _percent(t.retry_budget.get("budget_percent"), DEFAULT_RETRY_BUDGET_PERCENT)
            floor = _int(t.retry_budget.get("min_retry_concurrency"), DEFAULT_MIN_RETRY_CONCURRENCY)

            def budget_max() -> int:
                active = self.requests.count + self.pending_requests.count
                return max(floor, int(budget / 100.0 * active))

            self.retries = Resource("retries", 0, budget_max)
        else:
            self.retries = Resource("retries", t.max_retries if t.max_retries is not None else DEFAULT_MAX_RETRIES)
        self.stats: dict[str, int] = dict.fromkeys(OVERFLOW_COUNTERS, 0)

    @classmethod
    def for_cluster(cls, cluster: Cluster) -> "ResourceLimits":
        """The cluster's DEFAULT-priority thresholds (the first such entry), or Envoy's defaults."""
        return cls(cluster.circuit_breakers.thresholds if cluster.circuit_breakers is not None else None)

    # -- limits as numbers (Envoy's /clusters `default_priority` lines)
    @property
    def max_connections(self) -> int:
        return self.connections.max

    @property
    def max_pending_requests(self) -> int:
        return self.pending_requests.max

    @property
    def max_requests(self) -> int:
        return self.requests.max

    @property
    def max_retries(self) -> int:
        return self.retries.max

    def describe(self) -> dict[str, int]:
        """The `default_priority` lines of Envoy's /clusters."""
        return {
            "max_connections": self.max_connections,
            "max_pending_requests": self.max_pending_requests,
            "max_requests": self.max_requests,
            "max_retries": self.max_retries,
        }

    # -- check / count separately (no overflow stats: the caller counts them)
    def can_create_connection(self) -> bool:
        return self.connections.can_create()

    def can_create_pending(self) -> bool:
        return self.pending_requests.can_create()

    def can_create_request(self) -> bool:
        return self.requests.can_create()

    def inc_connections(self) -> None:
        self.connections.inc()

    def dec_connections(self) -> None:
        self.connections.dec()

    def inc_pending(self) -> None:
        self.pending_requests.inc()

    def dec_pending(self) -> None:
        self.pending_requests.dec()

    def inc_requests(self) -> None:
        self.requests.inc()

    def dec_requests(self) -> None:
        self.requests.dec()

    def dec_retries(self) -> None:
        self.retries.dec()

    # -- check and count in one step (overflow counted in `stats`)

    def record_overflow(self, overflow_stat: str) -> None:
        """An overflow decided elsewhere (the pool's pure decision step): counted here like the others, so
        `stats` is the one place overflow counts live."""
        self.stats[overflow_stat] += 1

    def _try(self, resource: Resource, overflow_stat: str) -> bool:
        if resource.count < resource.max:
            resource.count += 1
            return True
        self.stats[overflow_stat] += 1
        return False

    def try_acquire_connection(self) -> bool:
        """Open a new upstream connection? False counts `upstream_cx_overflow`."""
        return self._try(self.connections, "upstream_cx_overflow")

    def try_acquire_pending(self) -> bool:
        """Queue a request waiting for a connection? False (503 UO) counts `upstream_rq_pending_overflow`."""
        return self._try(self.pending_requests, "upstream_rq_pending_overflow")

    def try_acquire_request(self) -> bool:
        """Start an upstream request? False (503 UO) counts `upstream_rq_pending_overflow`, as Envoy does."""
        return self._try(self.requests, "upstream_rq_pending_overflow")

    def try_acquire_retry(self) -> bool:
        """Start a retry? False counts `upstream_rq_retry_overflow` (the retry is not attempted)."""
        return self._try(self.retries, "upstream_rq_retry_overflow")

    # (methods rather than `release_request = dec_requests`: the compiled build needs real methods)
    def release_request(self) -> None:
        self.dec_requests()

    def release_retry(self) -> None:
        self.dec_retries()

    def gauges(self) -> dict[str, int]:
        """Envoy's circuit-breaker gauges, named as under `cluster.<name>.`."""
        out = {
            "circuit_breakers.default.cx_open": int(self.connections.open),
            "circuit_breakers.default.rq_pending_open": int(self.pending_requests.open),
            "circuit_breakers.default.rq_open": int(self.requests.open),
            "circuit_breakers.default.rq_retry_open": int(self.retries.open),
        }
        if self.track_remaining:
            out["circuit_breakers.default.remaining_cx"] = self.connections.remaining
            out["circuit_breakers.default.remaining_pending"] = self.pending_requests.remaining
            out["circuit_breakers.default.remaining_rq"] = self.requests.remaining
            out["circuit_breakers.default.remaining_retries"] = self.retries.remaining
        return out

    def __repr__(self) -> str:
        return (
            f"ResourceLimits(cx={self.connections.count}/{self.connections.max}, "
            f"pending={self.pending_requests.count}/{self.pending_requests.max}, "
            f"rq={self.requests.count}/{self.requests.max}, retries={self.retries.count}/{self.retries.max})"
        )
