"""HTTP/1.1 Upgrade tunnels (WebSocket): after `101 Switching Protocols` the proxy only copies bytes.

Where it sits: the handshake is an ordinary request. `DownstreamConnection` parses it, the HTTP filters and the
router handle it like any other (route, cluster, host, connection), and the upstream's answer comes back through
the router. Envoy allows it only when the upgrade type is enabled (`codec.upgrade_allowed`: HCM
`upgrade_configs`, overridden per route by `RouteAction.upgrade_configs`); otherwise the client gets 403
(`upgrade_failed`, stat `downstream_rq_ws_on_non_ws_route`) and nothing is forwarded. When the upstream answers
101 the router calls `open()`: from then on both connections stop parsing HTTP and this object moves bytes
between them until either side closes, or nothing moved for the stream idle timeout (HCM `stream_idle_timeout`,
default 5 min, or the route's `idle_timeout`). Any other answer to the handshake is forwarded as a normal
response and the downstream connection closes (it cannot go back to HTTP after an upgrade request).

Bytes the client sent after the handshake, before the 101, are held (bounded: reading pauses above
`PENDING_LIMIT`) and delivered first. Back-pressure works as on a normal stream: a slow reader on one side pauses
reading on the other (the connections' `pause_writing` hooks). The stream's access-log line and its byte counts
are written when the tunnel closes, as Envoy logs an upgraded stream at its end.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .flush import flush_pending

if TYPE_CHECKING:  # pragma: no cover
    from .connection import ActiveStream

PENDING_LIMIT = 64 * 1024  # client bytes held before the 101 arrives, then reading pauses


class Tunnel:
    __slots__ = ("stream", "downstream", "upstream", "pending", "pending_bytes", "idle_timeout", "closed",
                 "_loop", "_last", "_timer", "_stats_active")

    def __init__(self, stream: "ActiveStream"):
        self.stream = stream
        self.downstream = stream.conn
        self.upstream: Any = None  # the UpstreamConnection, once the upstream said 101
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.idle_timeout = 0.0
        self.closed = False
        self._loop = asyncio.get_event_loop()
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._stats_active: Any = None

    # ------------------------------------------------------------ bytes
    def from_downstream(self, data: bytes) -> None:
        if self.closed:
            return
        self.stream.info.bytes_received += len(data)
        if self.upstream is None:
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > PENDING_LIMIT:
                self.downstream.pause_reading_for_upstream()
            return
        self._last = self._loop.time()
        self.upstream.write(data)
        flush_pending()

    def from_upstream(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self._last = self._loop.time()
        self.stream.info.bytes_sent += len(data)
        self.downstream.write(data)
        flush_pending()

    # ------------------------------------------------------------ lifecycle
    def open(self, upstream: Any, idle_timeout: float, stats_total: Any, stats_active: Any) -> None:
        """The upstream answered 101: connect the two connections and send what the client already sent."""
        self.upstream = upstream
        upstream.tunnel = self
        self.idle_timeout = idle_timeout
        stats_total.inc()
        stats_active.inc()
        self._stats_active = stats_active
        pending, self.pending = self.pending, []
        for chunk in pending:
            upstream.write(chunk)
        if self.pending_bytes > PENDING_LIMIT:
            self.downstream.resume_reading_for_upstream()
        self.pending_bytes = 0
        self._last = self._loop.time()
        if idle_timeout:
            self._timer = self._loop.call_later(idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._timer = None
        if self.closed:
            return
        remaining = self._last + self.idle_timeout - self._loop.time()
        if remaining > 0:
            self._timer = self._loop.call_later(remaining, self._on_idle)
            return
        self.stream.info.response_code_details = "stream_idle_timeout"
        self.close()

    def close(self) -> None:
        """Either side closed (or the idle timeout fired): close the other after flushing, log the stream."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stats_active is not None:
            self._stats_active.dec()
        if self.upstream is not None:
            self.upstream.close()
        self.downstream.close()
        self.stream.tunnel_closed()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self.upstream is not None else "pending")
        return f"<Tunnel {state} rx={self.stream.info.bytes_received} tx={self.stream.info.bytes_sent}>"
