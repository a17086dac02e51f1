"""Live tap: every finished HTTP stream, summarised, handed to whoever listens on the admin `/tap` stream.

Where it sits: the HTTP connection manager calls `TapHub.publish(info, direction)` where it hands the
`StreamInfo` to the access loggers (`pyproxy.http.connection.ActiveStream._log_and_count`), and only when
`hub.subscribers` is non-empty: with nobody listening the data path pays one attribute check and nothing is
built or queued. The admin server (`pyproxy.admin.server`, GET /tap) adds a `TapSubscriber` for each client and
writes its entries as newline-delimited JSON; `meshctl tap` (control/cli/tap.py) reads them.

Never blocking the data path: each subscriber has a bounded queue (`capacity` entries). `offer` appends when
there is room and otherwise drops the entry and counts it (`dropped`); the admin writer tells its client how
many were dropped. A slow reader therefore loses entries, never delays a request. Waking the writer is a
callback the admin gives (`asyncio.Event.set`), called at most once per batch.

Why not Envoy's tap: Envoy's admin `/tap` (POST, a `TapConfig` body) streams full traces of streams matched by
an `envoy.filters.http.tap` filter configured with an `admin_config` `config_id`; pyproxy's GET `/tap` needs no
filter config and streams one access-log-like summary per stream (what `linkerd viz tap` shows).

Pure apart from the wake callback: `TapFilter` and `tap_entry` take values and return values.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..tracing import context as trace_context
from .stream_info import StreamInfo, flags_in_set_order

__all__ = ["TapFilter", "TapHub", "TapSubscriber", "tap_entry", "DEFAULT_CAPACITY", "MAX_CAPACITY"]

DEFAULT_CAPACITY = 1000  # entries a subscriber may have queued before new ones are dropped
MAX_CAPACITY = 100_000


@dataclass(frozen=True, slots=True)
class TapFilter:
    """Which streams a subscriber wants (linkerd tap's --path / --method / --authority): `path` is a prefix of
    the request path, `method` and `authority` are exact (case-insensitive). Empty matches everything."""

    path: str = ""
    method: str = ""
    authority: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "TapFilter":
        """From the /tap query string; ValueError naming the parameter when a value cannot be a filter."""
        path = query.get("path", "")
        if path and not path.startswith("/"):
            raise ValueError(f"path={path!r}: a path prefix starts with '/'")
        method = query.get("method", "")
        if method and not method.isalpha():
            raise ValueError(f"method={method!r}: an HTTP method is letters only")
        return cls(path, method.upper(), query.get("authority", "").lower())

    def matches(self, method: str | None, path: str | None, authority: str | None) -> bool:
        if self.method and (method or "").upper() != self.method:
            return False
        if self.path and not (path or "").startswith(self.path):
            return False
        if self.authority and (authority or "").lower() != self.authority:
            return False
        return True

    def describe(self) -> dict[str, str]:
        return {k: v for k, v in (("path", self.path), ("method", self.method), ("authority", self.authority)) if v}


def trace_id_of(headers: Any) -> str | None:
    """The trace id the request carries (W3C traceparent, else B3), as 32 hex digits: after the tracer ran, the
    headers hold the context it propagated upstream, so this is the id the trace backend shows."""
    if headers is None:
        return None
    ctx = trace_context.extract(headers)
    return f"{ctx.trace_id:032x}" if ctx is not None else None


def tap_entry(info: StreamInfo, direction: str) -> dict[str, Any]:
    """One finished stream as the tap shows it. `direction` is the listener's traffic_direction."""
    end = info.last_downstream_tx
    duration = (end - info.start_monotonic) * 1000.0 if end is not None else None
    tls = info.downstream_tls
    peer = tls.peer_uri_sans[0] if tls is not None and tls.peer_uri_sans else None  # the SPIFFE principal
    headers = info.request_headers
    return {
        "start_time": info.start_time,
        "direction": direction.lower() if direction and direction != "UNSPECIFIED" else "-",
        "method": info.method,
        "authority": info.authority,
        "path": info.path,
        "status": info.response_code or 0,
        "duration_ms": round(duration, 3) if duration is not None else None,
        "response_flags": flags_in_set_order(info),
        "peer": peer,
        "mtls": peer is not None,
        "upstream_cluster": info.upstream_cluster,
        "upstream_host": info.upstream_host,
        "trace_id": trace_id_of(headers),
        "request_id": headers.get_first("x-request-id") if headers is not None else None,
    }


class TapSubscriber:
    """One tap client: its filter, its bounded queue, the entries it lost."""

    __slots__ = ("filter", "capacity", "queue", "dropped", "wake", "closed")

    def __init__(self, flt: TapFilter, capacity: int = DEFAULT_CAPACITY,
                 wake: Callable[[], None] | None = None):
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"buffer={capacity}: between 1 and {MAX_CAPACITY}")
        self.filter = flt
        self.capacity = capacity
        self.queue: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.wake = wake
        self.closed = False

    def offer(self, entry: dict[str, Any]) -> bool:
        """Queue `entry` when there is room, else drop it and count it. Never waits."""
        if len(self.queue) >= self.capacity:
            self.dropped += 1
            return False
        was_empty = not self.queue
        self.queue.append(entry)
        if was_empty and self.wake is not None:
            self.wake()
        return True

    def drain(self) -> list[dict[str, Any]]:
        out = list(self.queue)
        self.queue.clear()
        return out


class TapHub:
    """The proxy's tap subscribers (one hub per ProxyServer, shared by every HCM). `subscribers` is a tuple,
    replaced on subscribe/unsubscribe, so the data path reads it without copying and `if hub.subscribers:` is
    the whole cost of having no tap. Counters (`stats` given): tap.entries_queued, tap.entries_dropped and the
    gauge tap.subscribers, created by the first subscription, so a proxy nobody tapped lists only the stat
    names Envoy has (tests/differential/test_admin_stats_differential.py)."""

    def __init__(self, stats: Any = None):
        self.subscribers: tuple[TapSubscriber, ...] = ()
        self.published = 0  # streams offered to at least one subscriber's filter
        self._stats = stats
        self._queued: Any = None
        self._dropped: Any = None
        self._active: Any = None

    def subscribe(self, sub: TapSubscriber) -> TapSubscriber:
        if self._stats is not None and self._active is None:
            self._queued = self._stats.counter("tap.entries_queued")
            self._dropped = self._stats.counter("tap.entries_dropped")
            self._active = self._stats.gauge("tap.subscribers")
        self.subscribers = self.subscribers + (sub,)
        if self._active is not None:
            self._active.set(len(self.subscribers))
        return sub

    def unsubscribe(self, sub: TapSubscriber) -> None:
        self.subscribers = tuple(s for s in self.subscribers if s is not sub)
        if self._active is not None:
            self._active.set(len(self.subscribers))

    def close(self) -> None:
        """The proxy stops: every subscriber's writer ends its stream."""
        subs, self.subscribers = self.subscribers, ()
        for s in subs:
            s.closed = True
            if s.wake is not None:
                s.wake()
        if self._active is not None:
            self._active.set(0)

    def publish(self, info: StreamInfo, direction: str) -> None:
        """Called by the HCM for each finished stream while someone listens."""
        entry = None
        for sub in self.subscribers:
            if not sub.filter.matches(info.method, info.path, info.authority):
                continue
            if entry is None:
                entry = tap_entry(info, direction)
                self.published += 1
            if sub.offer(entry):
                if self._queued is not None:
                    self._queued.inc()
            elif self._dropped is not None:
                self._dropped.inc()
