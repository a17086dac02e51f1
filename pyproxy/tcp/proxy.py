"""The TCP proxy at run time: one `TcpProxySession` per downstream connection (Envoy: `TcpProxy::Filter`),
built on a chain's `TcpProxyRuntime` (Envoy: `TcpProxy::Config`, parsed once).

    connection_made   network RBAC filters of the chain (pyproxy.tcp.rbac): denied -> closed, nothing proxied;
                      reading paused; pick the cluster (ClusterPicker; the SNI after an sni_cluster filter), ask
                      its load balancer for a host
                      no cluster -> close, flag NC, `downstream_cx_no_route`
                      no host    -> close, flag UH, `cluster.<c>.upstream_cx_none_healthy`
                      circuit breaker max_connections reached -> close, flag UO, `upstream_cx_overflow`
    connect           TCP (+ UpstreamTlsContext handshake and SAN check: `pyproxy.upstream.connect`), bounded
                      by the cluster's connect_timeout; a failure counts `upstream_cx_connect_fail`, feeds outlier
                      detection and is retried on a new host while `max_connect_attempts` allow, then flag UF
    connected         the bytes read so far (for TLS passthrough: the ClientHello the listener's tls_inspector
                      read) go first, reading resumes, then bytes are copied both ways
    back-pressure     a side whose write buffer is over its high-water mark pauses reading on the other
    FIN               passed on as a FIN (HalfClose); the pair closes when both sides have sent one, or when
                      either closes. Over TLS a FIN is close_notify + the TCP FIN, both ways: the chain's and the
                      upstream's TLS layers are `pyproxy.tls.half_close` (asyncio's cannot half-close)
    idle_timeout      nothing moved either way for `idle_timeout` (default 1 h) -> both closed, `idle_timeout`
    end               one access-log line (%BYTES_RECEIVED% / %BYTES_SENT% are the downstream byte counts,
                      %DURATION% the connection's life, %RESPONSE_FLAGS% UF,URX / UH / UO / NC)

Stats: `tcp.<stat_prefix>.downstream_cx_total`, `downstream_cx_no_route`, `downstream_cx_rx_bytes_total`,
`downstream_cx_tx_bytes_total`, `downstream_flow_control_paused_reading_total`,
`downstream_flow_control_resumed_reading_total`, `idle_timeout`, `upstream_flush_total` (the downstream closed
while bytes for the upstream were still buffered: they are flushed before the upstream is closed),
`upstream_cx_connect_attempts_exceeded`; the cluster's `upstream_cx_total`, `upstream_cx_active`,
`upstream_cx_destroy`, `upstream_cx_connect_fail`, `upstream_cx_connect_timeout`, `upstream_cx_rx_bytes_total`,
`upstream_cx_tx_bytes_total`.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from ..filters.istio_stats import NAME as ISTIO_STATS
from ..filters.istio_stats import IstioTcpStats
from ..observe.access_log import build_access_loggers
from ..observe.stats import Stats
from ..observe.stream_info import ResponseFlag, StreamInfo
from ..tls.sslobject import remember_session
from ..upstream.connect import UpstreamTlsFailure, open_upstream, tune_upstream_socket
from ..upstream.load_balancer import LbContext
from .rbac import connection_facts, first_denial
from ..upstream.outlier import OutlierResult
from .logic import Action, ClusterPicker, ConnectAttempts, HalfClose, Side

log = logging.getLogger("pyproxy.tcp")


class TcpProxyRuntime:
    """A chain's TcpProxy config ready to serve: cluster picker, timeouts, stats, access loggers."""

    def __init__(self, config: Any, clusters: Any, stats: Stats, rng: random.Random, access_logs: Any = None,
                 sni_cluster: bool = False, rbac: tuple = (), network_filters: Any = (), node: Any = None,
                 traffic_direction: str = "UNSPECIFIED"):
        self.config = config
        self.sni_cluster = sni_cluster  # envoy.filters.network.sni_cluster before it: the SNI names the cluster
        self.rbac = rbac  # the chain's network RBAC filters (pyproxy.tcp.rbac), decided before connecting
        self.clusters = clusters
        self.node = node  # the proxy's node and the listener's direction: istio.stats' reporter and local side
        self.traffic_direction = traffic_direction
        # `istio.stats` network filters before the tcp_proxy (Istio's TCP metrics): at most one is used
        self.istio_stats: IstioTcpStats | None = None
        for f in network_filters:
            if f.name == ISTIO_STATS and self.istio_stats is None:
                self.istio_stats = IstioTcpStats(f.typed_config, stats, self)
        self.rng = rng
        self.picker = ClusterPicker(config)
        self.idle_timeout = config.effective_idle_timeout
        self.max_connect_attempts = config.max_connect_attempts or 1
        self.access_loggers = build_access_loggers(config.access_log, manager=access_logs)
        st = stats.scope(f"tcp.{config.stat_prefix}.")
        self.stats = st
        self.cx_total = st.counter("downstream_cx_total")
        self.cx_no_route = st.counter("downstream_cx_no_route")
        self.rx_bytes = st.counter("downstream_cx_rx_bytes_total")
        self.tx_bytes = st.counter("downstream_cx_tx_bytes_total")
        self.paused_reading = st.counter("downstream_flow_control_paused_reading_total")
        self.resumed_reading = st.counter("downstream_flow_control_resumed_reading_total")
        self.idle_timeouts = st.counter("idle_timeout")
        self.upstream_flush = st.counter("upstream_flush_total")
        self.attempts_exceeded = st.counter("upstream_cx_connect_attempts_exceeded")

    def __repr__(self) -> str:
        return f"<TcpProxyRuntime {self.config.stat_prefix} -> {self.picker!r} idle={self.idle_timeout}s>"


def _fmt(addr: Any) -> str | None:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return None


class UpstreamTcp(asyncio.Protocol):
    """The upstream side of one session: an asyncio protocol whose events go to the session."""

    def __init__(self, session: "TcpProxySession", host: Any):
        self.session = session
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.counted = False  # in the cluster's connection counts (ClusterRuntime.on_connection_established)
        self.closed = False

    @property
    def pool(self) -> "UpstreamTcp":  # ClusterRuntime's accounting reads conn.pool.host
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tune_upstream_socket(transport, self.session.cluster)

    def data_received(self, data: bytes) -> None:
        self.session.from_upstream(data)

    def eof_received(self) -> bool | None:
        keep = self.session.on_fin(Side.UPSTREAM)
        return keep and self.transport is not None and self.transport.can_write_eof()  # TLS: no half-open

    def pause_writing(self) -> None:
        self.session.upstream_write_paused(True)

    def resume_writing(self) -> None:
        self.session.upstream_write_paused(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.transport is not None:  # a TLS 1.3 ticket came after the handshake: keep it for the next one
            remember_session(self.transport.get_extra_info("ssl_object"))
        cluster = self.session.cluster
        if cluster is not None:
            cluster.on_connection_closed(self)
        self.session.on_closed(Side.UPSTREAM)

    def __repr__(self) -> str:
        return f"<UpstreamTcp {self.host.address}:{self.host.port}{' closed' if self.closed else ''}>"


class TcpProxySession(asyncio.Protocol):
    """One proxied downstream connection: the application-side protocol of the downstream transport."""

    def __init__(self, listener: Any, runtime: TcpProxyRuntime):
        self.listener = listener  # a ChainView: connection tracking and draining
        self.runtime = runtime
        self.loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.upstream: UpstreamTcp | None = None
        self.cluster: Any = None
        self.pending: list[bytes] = []  # read before the upstream was connected
        self.info = StreamInfo(time.time(), time.monotonic())
        self.tls: Any = None  # TlsSession when the chain terminated TLS
        self.requested_server_name: str | None = None
        self.draining = False
        self.closing = HalfClose()
        self.done = False
        self._connecting = True
        self._upstream_write_paused = False
        self._down_reading_paused = False
        self._last = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None  # the connect attempts (bounded by connect_timeout each)
        self._cluster_rx: Any = None
        self._cluster_tx: Any = None
        self._istio_labels: tuple[str, ...] | None = None  # the istio_tcp_* labels once "opened" was counted

    @property
    def streams(self) -> tuple:
        """Non-empty while the connection is open (a draining listener closes it at the end of the drain)."""
        return () if self.done else (self,)

    # ------------------------------------------------------------ downstream events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        info = self.info
        info.downstream_remote_address = _fmt(transport.get_extra_info("peername"))
        info.downstream_direct_remote_address = info.downstream_remote_address
        info.downstream_local_address = _fmt(transport.get_extra_info("sockname"))
        info.requested_server_name = self.requested_server_name
        info.downstream_tls = self.tls
        self.listener.on_connection_open(self)
        self.runtime.cx_total.inc()
        if self.runtime.rbac:
            denial = first_denial(self.runtime.rbac, connection_facts(info, self.tls))
            if denial is not None:  # envoy.filters.network.rbac: close, nothing proxied
                info.connection_termination_details = denial.details
                self.closing.closed(Side.DOWNSTREAM)
                self.close()
                return
        self._set_down_reading()
        # uvloop starts reading an accepted transport after connection_made returns, whatever the protocol
        # asked in it (CPython gh-103607's bug, still in uvloop 0.23): pause again once it has
        self.loop.call_soon(self._repause_down_reading)
        self._task = self.loop.create_task(self._connect())

    def _repause_down_reading(self) -> None:
        if self._down_reading_paused and self.transport is not None and not self.transport.is_closing() \
                and self.transport.is_reading():
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self.done or not data:
            return
        self.info.bytes_received += len(data)
        self.runtime.rx_bytes.inc(len(data))
        up = self.upstream
        if up is None or self._connecting:
            self.pending.append(data)
            return
        self._last = self.loop.time()
        up.transport.write(data)
        self._cluster_tx.inc(len(data))

    def eof_received(self) -> bool | None:
        keep = self.on_fin(Side.DOWNSTREAM)
        return keep and self.transport is not None and self.transport.can_write_eof()  # TLS: no half-open

    def pause_writing(self) -> None:  # the client reads slowly: stop reading the upstream
        if self.upstream is not None and self.upstream.transport is not None and not self.upstream.closed:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None and not self.upstream.closed:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_closed(Side.DOWNSTREAM)

    # ------------------------------------------------------------ upstream events (from UpstreamTcp)
    def from_upstream(self, data: bytes) -> None:
        if self.done or not data or self.transport is None:
            return
        self._last = self.loop.time()
        self.info.bytes_sent += len(data)
        self.runtime.tx_bytes.inc(len(data))
        self._cluster_rx.inc(len(data))
        self.transport.write(data)

    def upstream_write_paused(self, paused: bool) -> None:
        if paused == self._upstream_write_paused:
            return
        self._upstream_write_paused = paused
        (self.runtime.paused_reading if paused else self.runtime.resumed_reading).inc()
        self._set_down_reading()

    # ------------------------------------------------------------ connecting
    async def _connect(self) -> None:
        rt = self.runtime
        info = self.info
        # sni_cluster sets the cluster from the SNI (Envoy: filter state envoy.tcp_proxy.cluster); no SNI: unchanged
        name = self.requested_server_name if rt.sni_cluster and self.requested_server_name else rt.picker.pick(rt.rng)
        cluster = rt.clusters.get(name) if name is not None else None
        if cluster is None:
            rt.cx_no_route.inc()
            self._fail(ResponseFlag.NC)
            return
        self.cluster = cluster
        info.upstream_cluster = cluster.name
        attempts = ConnectAttempts(rt.max_connect_attempts)
        excluded: list[Any] = []
        while not self.done:
            host = cluster.choose_host(LbContext(excluded=tuple(excluded))) if excluded else \
                cluster.choose_host(LbContext())
            if host is None:
                cluster.stats_cx_none_healthy.inc()
                self._fail(ResponseFlag.UH)
                return
            if not cluster.limits.can_create_connection():
                cluster.limits.record_overflow("upstream_cx_overflow")
                self._fail(ResponseFlag.UO)
                return
            attempts.start()
            info.upstream_host = f"{host.address}:{host.port}"
            info.upstream_request_attempt_count = attempts.made
            cluster.on_connection_start(http1=False)
            up = UpstreamTcp(self, host)
            try:
                async with asyncio.timeout(cluster.connect_timeout):  # not wait_for: pyproxy/runtime/waits.py
                    transport, _ = await open_upstream(self.loop, cluster, host, cluster.tls_for(host), lambda: up,
                                                       half_close=True)
            except asyncio.TimeoutError:
                cluster.stats_cx_connect_timeout.inc()
                failed = True
            except UpstreamTlsFailure as e:
                info.upstream_transport_failure_reason = e.reason
                failed = True
            except OSError:
                failed = True
            else:
                failed = False
            if failed:
                cluster.on_connect_failure(host)
                cluster.record_outcome(host, None, connect_failure=True)
                if attempts.exhausted:  # Envoy: UF, and URX once the attempts are used up (even just one)
                    rt.attempts_exceeded.inc()
                    self._fail(ResponseFlag.UF | ResponseFlag.URX)
                    return
                excluded.append(host)
                continue
            cluster.on_connection_established(up)
            if cluster.outlier is not None:
                cluster.outlier.record(host, OutlierResult.LOCAL_ORIGIN_CONNECT_SUCCESS)
            self._connected(up, transport)
            return

    def _connected(self, up: UpstreamTcp, transport: asyncio.Transport) -> None:
        self.upstream = up
        cluster = self.cluster
        self._cluster_rx = cluster.stats.counter("upstream_cx_rx_bytes_total")
        self._cluster_tx = cluster.stats.counter("upstream_cx_tx_bytes_total")
        local = transport.get_extra_info("sockname")
        self.info.upstream_local_address = _fmt(local)
        if self.done:  # the client went away while we were connecting
            transport.close()
            return
        self._connecting = False
        if self.runtime.istio_stats is not None:
            self._istio_labels = self.runtime.istio_stats.opened(self)
        pending, self.pending = self.pending, []
        for chunk in pending:
            transport.write(chunk)
            self._cluster_tx.inc(len(chunk))
        self._last = self.loop.time()
        if self.runtime.idle_timeout:
            self._idle_timer = self.loop.call_later(self.runtime.idle_timeout, self._on_idle)
        if self._pending_fin:
            self._pending_fin = False
            self._apply(self.closing.fin(Side.DOWNSTREAM))
        self._set_down_reading()

    _pending_fin = False  # the client's FIN arrived before the upstream was connected

    def _fail(self, flag: int) -> None:
        self.info.response_flags |= flag
        self._finish()
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ flow control
    def _set_down_reading(self) -> None:
        """Read the client only when the upstream is connected and its write buffer is below the mark."""
        if self.transport is None or self.done:
            return
        paused = self._connecting or self._upstream_write_paused
        if paused == self._down_reading_paused:
            return
        self._down_reading_paused = paused
        if self.transport.is_closing():
            return
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # ------------------------------------------------------------ FIN and close
    def on_fin(self, side: Side) -> bool:
        """A FIN from `side`; True keeps that transport open for the other direction."""
        if side is Side.DOWNSTREAM and self._connecting:
            self._pending_fin = True
            return True
        self._apply(self.closing.fin(side))
        return not self.done

    def on_closed(self, side: Side) -> None:
        if side is Side.DOWNSTREAM and self.upstream is not None and not self.upstream.closed:
            ut = self.upstream.transport
            if ut is not None and ut.get_write_buffer_size():
                self.runtime.upstream_flush.inc()  # the rest goes out before the upstream close
        self._apply(self.closing.closed(side))

    def _apply(self, actions: tuple[Action, ...]) -> None:
        for action in actions:
            if action is Action.FIN_UPSTREAM:
                self._write_eof(self.upstream.transport if self.upstream is not None else None)
            elif action is Action.FIN_DOWNSTREAM:
                self._write_eof(self.transport)
            else:
                self.close()

    def _write_eof(self, transport: Any) -> None:
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:  # a transport without half-close: close it after flushing
            transport.close()

    def _on_idle(self) -> None:
        self._idle_timer = None
        if self.done:
            return
        remaining = self._last + self.runtime.idle_timeout - self.loop.time()
        if remaining > 0:
            self._idle_timer = self.loop.call_later(remaining, self._on_idle)
            return
        self.runtime.idle_timeouts.inc()
        self.info.connection_termination_details = "idle_timeout"
        self.closing.closed(Side.DOWNSTREAM)
        self.close()

    def close(self) -> None:
        """Close both sides (each flushes what it holds first) and log the connection."""
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()
        if self.transport is not None:
            self.transport.close()
        self._finish()

    def abort(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.abort()
        if self.transport is not None:
            self.transport.abort()
        self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        info = self.info
        info.request_complete = time.monotonic()
        if self.runtime.istio_stats is not None:
            self.runtime.istio_stats.closed(self, self._istio_labels)
        for logger in self.runtime.access_loggers:
            logger.log(info)
        self.listener.on_connection_close(self)

    def __repr__(self) -> str:
        return (f"<TcpProxySession {self.closing.state.value} -> {self.info.upstream_cluster}/"
                f"{self.info.upstream_host} rx={self.info.bytes_received} tx={self.info.bytes_sent}>")
