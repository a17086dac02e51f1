"""HTTP/1.1 connection pool for one upstream host of one cluster (Envoy: Http1::ConnPoolImpl).

A request asks the pool for a connection. The pool answers at once with an idle keep-alive connection,
or starts a new connection if the cluster's circuit breaker allows one (`max_connections`), or queues the
request as *pending* if it may (`max_pending_requests`), or refuses: 503 with flag UO and
`x-envoy-overloaded: true` (the router does that). `max_requests_per_connection` retires connections.

The decision step (`_decide`) is plain code over counters; the I/O (connect with `connect_timeout`) is the
small async part at the bottom. Connection states: connecting -> busy <-> idle -> closed.

TLS (cluster `transport_socket` / `transport_socket_matches`, chosen per host once: `ClusterRuntime.tls_for`):
the connect step also runs the handshake with the provider's current `SSLContext`, SNI = `sni` (or none), then
checks the server's SANs against the matchers. A handshake or SAN failure is a connect failure (503 UF,
`remote connection failure`, the TLS text in `%UPSTREAM_TRANSPORT_FAILURE_REASON%`), counted under
`cluster.<name>.ssl.*`. The cluster's last resumable TLS session is offered on the next connect, to any of its
hosts (Envoy's `max_session_keys` 1; pyproxy.tls.sslobject), and `ssl.session_reused` counts the ones taken.
"""
from __future__ import annotations

import asyncio
import enum
import ipaddress
from collections import deque
from typing import TYPE_CHECKING, Any

from .connect import UpstreamTlsFailure, open_upstream
from .connection import UpstreamConnection

if TYPE_CHECKING:  # pragma: no cover
    from .cluster_manager import ClusterRuntime


class PoolFailure(enum.Enum):
    OVERFLOW = "overflow"  # circuit breaker: pending queue full (UO)
    CONNECT_FAILURE = "connection failure"  # UF
    CONNECT_TIMEOUT = "connection timeout"  # UF
    TLS_FAILURE = "remote connection failure"  # UF: the handshake (or the SAN check after it) failed


class Decision(enum.Enum):
    USE_IDLE = 1
    CONNECT = 2
    QUEUE = 3
    OVERFLOW = 4


class ConnectionPool:
    def __init__(self, cluster: "ClusterRuntime", host: Any):
        self.cluster = cluster
        self.host = host
        self.idle: list[UpstreamConnection] = []
        self.busy: set[UpstreamConnection] = set()
        self.pending: deque[Any] = deque()  # waiters: objects with on_pool_ready / on_pool_failure
        self.connecting = 0
        self.draining = False  # the host left the cluster: no new connections, busy ones finish
        self.stats_protocol_error = cluster.stats.counter("upstream_cx_protocol_error")
        self.stats_idle_timeout = cluster.stats.counter("upstream_cx_idle_timeout")
        self._tasks: set[asyncio.Task] = set()
        self.tls = cluster.tls_for(host) if hasattr(cluster, "tls_for") else None  # TlsContextProvider or None
        self.transport_failure: str = ""  # the last handshake failure's text (for the waiters it fails)

    # ------------------------------------------------------------ pure decision
    def _decide(self) -> Decision:
        if self.idle:
            return Decision.USE_IDLE
        limits = self.cluster.limits
        # A request waiting for a connection (new or busy) is *pending*: Envoy checks max_pending_requests
        # before it creates the pending stream (ConnPoolImplBase::newStreamImpl), connection or not.
        if not limits.can_create_pending():
            return Decision.OVERFLOW
        # Envoy only opens a connection for a request that has no connection coming yet
        if len(self.pending) >= self.connecting and limits.can_create_connection():
            return Decision.CONNECT
        return Decision.QUEUE

    # ------------------------------------------------------------ requests
    def acquire(self, waiter: Any) -> None:
        """Give `waiter` a connection now or later (`on_pool_ready(conn)`), or fail it (`on_pool_failure`)."""
        while True:
            d = self._decide()
            if d is Decision.USE_IDLE:
                conn = self.idle.pop()
                if conn.closed:
                    continue
                self.busy.add(conn)
                waiter.on_pool_ready(conn)
                return
            if d is Decision.CONNECT:
                self.pending.append(waiter)
                self.cluster.limits.inc_pending()
                self.cluster.stats_rq_pending_total.inc()
                self._connect()
                return
            if d is Decision.QUEUE:
                if not self.cluster.limits.can_create_connection():
                    self.cluster.limits.record_overflow("upstream_cx_overflow")
                self.pending.append(waiter)
                self.cluster.limits.inc_pending()
                self.cluster.stats_rq_pending_total.inc()
                return
            self.cluster.limits.record_overflow("upstream_rq_pending_overflow")
            waiter.on_pool_failure(PoolFailure.OVERFLOW)
            return

    def cancel(self, waiter: Any) -> None:
        """A pending request gave up (timeout, downstream reset)."""
        try:
            self.pending.remove(waiter)
        except ValueError:
            return
        self.cluster.limits.dec_pending()

    def release(self, conn: UpstreamConnection) -> None:
        """A request finished with `conn`: reuse it, hand it to a pending request, or close it."""
        self.busy.discard(conn)
        max_rq = self.cluster.max_requests_per_connection
        if self.draining and not self.pending:
            conn.close()
            return
        if conn.closed or not conn.reusable or self.cluster.retired or (max_rq and conn.requests_served >= max_rq):
            if max_rq and conn.requests_served >= max_rq:
                self.cluster.stats_cx_max_requests.inc()
            conn.close()
            self._maybe_connect_for_pending()
            return
        if self.pending:
            waiter = self.pending.popleft()
            self.cluster.limits.dec_pending()
            self.busy.add(conn)
            waiter.on_pool_ready(conn)
            return
        self.idle.append(conn)
        conn.mark_idle(self.cluster.idle_timeout)

    def on_connection_closed(self, conn: UpstreamConnection) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        self.cluster.on_connection_closed(conn)
        self._maybe_connect_for_pending()

    def _maybe_connect_for_pending(self) -> None:
        if len(self.pending) > self.connecting and self.cluster.limits.can_create_connection() and not self.draining:
            self._connect()

    # ------------------------------------------------------------ I/O: connecting
    def _connect(self) -> None:
        self.connecting += 1
        self.cluster.on_connection_start()
        task = asyncio.get_running_loop().create_task(self._do_connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _do_connect(self) -> None:
        loop = asyncio.get_running_loop()
        cluster = self.cluster
        failure: PoolFailure | None = None
        conn: UpstreamConnection | None = None
        tls = self.tls
        try:
            # asyncio.timeout, not wait_for, which can drop a cancellation (pyproxy/runtime/waits.py; nothing
            # cancels these tasks today) and runs the connect in a task of its own, one more per new connection
            async with asyncio.timeout(cluster.connect_timeout):
                if tls is None:
                    _, conn = await loop.create_connection(lambda: UpstreamConnection(self), self.host.address,
                                                           self.host.port)
                else:
                    conn = await self._connect_tls(loop, tls)
        except asyncio.TimeoutError:
            failure = PoolFailure.CONNECT_TIMEOUT
            cluster.stats_cx_connect_timeout.inc()
        except _TlsFailure:
            failure = PoolFailure.TLS_FAILURE
        except OSError:
            failure = PoolFailure.CONNECT_FAILURE
        finally:
            self.connecting -= 1
        if failure is not None:
            cluster.on_connect_failure(self.host)
            # Envoy fails every request pending on this host's pool when a connect attempt fails.
            waiters = list(self.pending)
            self.pending.clear()
            for w in waiters:
                cluster.limits.dec_pending()
                w.on_pool_failure(failure)
            return
        assert conn is not None
        cluster.on_connection_established(conn)
        if self.pending:
            waiter = self.pending.popleft()
            cluster.limits.dec_pending()
            self.busy.add(conn)
            waiter.on_pool_ready(conn)
        else:
            self.idle.append(conn)
            conn.mark_idle(cluster.idle_timeout)

    async def _connect_tls(self, loop: asyncio.AbstractEventLoop, tls: Any) -> UpstreamConnection:
        """TCP connect + handshake + SAN check (`open_upstream`). Raises _TlsFailure (reason kept), OSError."""
        try:
            transport, conn = await open_upstream(loop, self.cluster, self.host, tls, lambda: UpstreamConnection(self))
        except UpstreamTlsFailure as e:
            self.transport_failure = e.reason
            raise _TlsFailure(e.reason) from None
        sslobj = transport.get_extra_info("ssl_object")
        conn.tls_version = sslobj.version() if sslobj is not None else ""
        # TLS 1.3 sends its session ticket after the handshake: keep the session after the first response
        conn.session_unsaved = conn.tls_version == "TLSv1.3"
        return conn

    def drain(self) -> None:
        """The host was removed (EDS/DNS update): close idle connections now, busy ones after their request
        (Envoy drains a removed host's pool rather than cutting requests in flight)."""
        self.draining = True
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()

    def close(self) -> None:
        for conn in list(self.idle) + list(self.busy):
            conn.close()
        self.idle.clear()

    def __repr__(self) -> str:
        return (f"<ConnectionPool {self.host.address}:{self.host.port} idle={len(self.idle)} "
                f"busy={len(self.busy)} connecting={self.connecting} pending={len(self.pending)}>")


class _TlsFailure(Exception):
    """The upstream TLS handshake or its SAN check failed (a connect failure for the router)."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
