"""Accepting a connection on a listener with several filter chains or TLS (the I/O shell around
`chain_match` and `client_hello`).

    accept -> ChainAcceptor.connection_made
        [listener filters] keep the first bytes read until tls_inspector / http_inspector can decide
        select the chain (ChainSelector.select, pure); none -> close, `no_filter_chain_match`
        plaintext chain -> the transport's events go to a DownstreamConnection, the kept bytes first
        TLS chain       -> a server-side SSLProtocol with the chain's current SSLContext, fed the kept bytes
                           (the ClientHello) and then the rest; on success the
                           connection gets `tls` (a TlsSession: peer identity, version, SNI, ALPN) and the
                           HTTP connection manager takes over; on failure the connection is closed, counted
                           under `listener.<addr>.ssl.<reason>`.
        tcp_proxy chain -> the same, with a `pyproxy.tcp.proxy.TcpProxySession` instead of a DownstreamConnection;
                           a tcp_proxy chain without a DownstreamTlsContext matched by `server_names` is TLS
                           passthrough: the kept bytes (the ClientHello) are replayed to the upstream unchanged.

Why bytes are read, not peeked: once the chain is chosen the acceptor hands the raw transport to what serves
the connection (`transport.set_protocol`): the DownstreamConnection (plaintext) or a server-side SSLProtocol
(uvloop's own, in C, under uvloop; asyncio's otherwise) whose application side is the DownstreamConnection.
Because the proxy owns that TLS layer, the ClientHello bytes it already read are simply fed to it first
(`_replay`); no MSG_PEEK, no second poller, and `loop.start_tls` is not needed (it would want the bytes left
unread). An acceptor that stayed the transport's protocol and forwarded every read would cost one interpreted
Python call and a copy per TLS record: 5-7 % of an inbound sidecar's CPU at 1,000 req/s in the compiled build
(perf; docs/performance.md). A listener with one plaintext chain never comes here:
`ListenerRuntime` keeps today's direct path for it.

A `ChainView` is what a DownstreamConnection on such a listener uses as its `listener`: `current` resolves the
chain's HTTP connection manager in the listener's *current* chains (by chain key), so a config swap reaches
connections already open, as it does on single-chain listeners.
"""
from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import ssl
from typing import TYPE_CHECKING, Any

try:
    import uvloop
    from uvloop.loop import SSLProtocol as _UvSSLProtocol
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None
    _UvSSLProtocol = None

from ..http.connection import DownstreamConnection
from ..tcp.proxy import TcpProxySession
from ..tls.half_close import HalfCloseSSLProtocol
from ..tls.session import TlsSession
from ..tls.transport_socket import SecretNotReady, TlsContextProvider, classify_handshake_error
from .chain_match import ChainSelector, ConnectionFacts
from .client_hello import NEED_MORE, TlsHello, inspect_http, inspect_tls

if TYPE_CHECKING:  # pragma: no cover
    from ..server import HcmRuntime
    from ..tcp.proxy import TcpProxyRuntime

log = logging.getLogger("pyproxy.listener")

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
LISTENER_FILTERS_TIMEOUT = 15.0  # Listener.listener_filters_timeout default
HANDSHAKE_TIMEOUT = 10.0  # a stalled handshake is closed (Envoy: transport_socket_connect_timeout-like bound)


class ChainRuntime:
    """One filter chain ready to serve: its HTTP connection manager or its TCP proxy (exactly one is set), and its
    TLS provider (None: the chain does not terminate TLS)."""

    __slots__ = ("key", "config", "hcm", "tls", "tcp")

    def __init__(self, key: str, config: Any, hcm: "HcmRuntime | None", tls: TlsContextProvider | None,
                 tcp: "TcpProxyRuntime | None" = None):
        self.key, self.config, self.hcm, self.tls, self.tcp = key, config, hcm, tls, tcp

    def serve(self, listener_runtime: Any) -> Any:
        """The protocol that serves a connection on this chain once its transport is settled."""
        if self.tcp is not None:
            return TcpProxySession(ChainView(listener_runtime, self), self.tcp)
        return DownstreamConnection(ChainView(listener_runtime, self))

    def __repr__(self) -> str:
        kind = "tcp_proxy" if self.tcp is not None else "http"
        return f"<ChainRuntime {self.key} {kind} {'tls' if self.tls else 'plaintext'}>"


class ListenerChains:
    """A listener's chains for one config snapshot (swapped whole on apply)."""

    def __init__(self, selector: ChainSelector, runtimes: dict[int, ChainRuntime], listener_filters: set[str],
                 filters_timeout: float | None, continue_on_timeout: bool):
        self.selector = selector
        self.runtimes = runtimes  # by id() of the FilterChain config object the selector returns
        self.by_key = {rt.key: rt for rt in runtimes.values()}
        any_tls = any(rt.tls is not None for rt in runtimes.values())
        # Envoy adds tls_inspector itself when a chain needs SNI / transport protocol; pyproxy also inspects for
        # any TLS chain, so that %REQUESTED_SERVER_NAME% is known (Python's ssl does not expose a server's SNI)
        self.inspect_tls = TLS_INSPECTOR in listener_filters or any_tls or selector.needs_server_name or \
            selector.needs_transport
        self.inspect_http = HTTP_INSPECTOR in listener_filters
        self.timeout = LISTENER_FILTERS_TIMEOUT if filters_timeout is None else filters_timeout
        self.continue_on_timeout = continue_on_timeout

    def select(self, facts: ConnectionFacts) -> ChainRuntime | None:
        chain = self.selector.select(facts)
        return None if chain is None else self.runtimes[id(chain)]


class ChainView:
    """The `listener` a DownstreamConnection on a multi-chain/TLS listener talks to."""

    __slots__ = ("runtime", "key", "original")

    def __init__(self, runtime: Any, chain: ChainRuntime):
        self.runtime, self.key, self.original = runtime, chain.key, chain.hcm

    @property
    def current(self) -> "HcmRuntime":
        chains = self.runtime.chains
        rt = chains.by_key.get(self.key) if chains is not None else None
        return rt.hcm if rt is not None else self.original

    @property
    def draining(self) -> bool:
        return self.runtime.draining

    def on_connection_open(self, conn: DownstreamConnection) -> None:
        self.runtime.track(conn)

    def on_connection_close(self, conn: DownstreamConnection) -> None:
        self.runtime.untrack(conn)


def _addr(info: Any) -> tuple[str, int]:
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return "", 0


class ChainAcceptor(asyncio.Protocol):
    """Owns a new connection until its chain (and TLS) is settled, then hands it to the HCM."""

    def __init__(self, runtime: Any):
        self.runtime = runtime  # the ListenerRuntime
        self.chains: ListenerChains = runtime.chains
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self._inspecting = False
        self._pending: list[bytes] = []  # bytes read before the chain was chosen: replayed into it
        self._timer: asyncio.TimerHandle | None = None
        self.inner: Any = None  # what the raw transport's events go to once the chain is chosen
        self._inner_buffered = False
        self.done = False
        self.facts = ConnectionFacts()

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.runtime.accepted(self)
        src_ip, src_port = _addr(transport.get_extra_info("peername"))
        dst_ip, dst_port = _addr(transport.get_extra_info("sockname"))
        self.facts = ConnectionFacts(destination_port=dst_port, destination_ip=dst_ip, direct_source_ip=src_ip,
                                     source_ip=src_ip, source_port=src_port)
        if self.chains.inspect_tls or self.chains.inspect_http:
            self._inspecting = True
            self._start_inspection()
        else:
            self._dispatch(self.facts)

    # Events reach the acceptor only until `_forward_to` gives the transport to the chain's connection (or its
    # TLS layer): from then on they go there directly, so nothing here forwards.
    def data_received(self, data: bytes) -> None:
        if self._inspecting:
            self._on_first_bytes(data)

    def _feed(self, data: bytes) -> None:
        """Replay bytes read before the hand-over into what now serves the connection."""
        inner = self.inner
        if not self._inner_buffered:
            inner.data_received(data)
            return
        view = memoryview(data)
        while view:
            buf = inner.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            inner.buffer_updated(n)
            view = view[n:]

    def eof_received(self) -> bool | None:
        self._stop_timer()
        self._close()  # closed before its chain was known
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if not self.done:
            self.done = True
            self.runtime.rejected(self)

    def _forward_to(self, inner: Any) -> None:
        """From now on the raw transport's events go to `inner` directly; the bytes already read are replayed
        into it by `_replay` (through `_feed`). A connection lost during a TLS handshake still reaches the
        accounting: the SSLProtocol wakes the handshake's waiter, and `_handshake` closes and counts it."""
        self.inner = inner
        self._inner_buffered = isinstance(inner, asyncio.BufferedProtocol) or (
            _UvSSLProtocol is not None and isinstance(inner, _UvSSLProtocol))
        if self.transport is not None:
            self.transport.set_protocol(inner)

    # ------------------------------------------------------------------ listener filters
    def _start_inspection(self) -> None:
        if self.chains.timeout:
            self._timer = self.loop.call_later(self.chains.timeout, self._on_timeout)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_first_bytes(self, data: bytes) -> None:
        self._pending.append(data)
        facts = self._inspect(b"".join(self._pending), final=False)
        if facts is not None:
            self._stop_timer()
            self._dispatch(facts)

    def _on_timeout(self) -> None:
        self._timer = None
        self.runtime.stats_filters_timeout.inc()
        if self.chains.continue_on_timeout:
            self._dispatch(self.facts)
        else:
            self._close()

    def _inspect(self, data: bytes, final: bool) -> ConnectionFacts | None:
        """Facts from the first bytes, or None to wait for more."""
        transport, server_name, alpn = "raw_buffer", "", ()
        if self.chains.inspect_tls:
            hello = inspect_tls(data)
            if hello is NEED_MORE:
                return None
            if isinstance(hello, TlsHello):
                transport, server_name, alpn = "tls", hello.server_name, hello.alpn
        if transport == "raw_buffer" and self.chains.inspect_http:
            proto = inspect_http(data)
            if proto is NEED_MORE:
                return None
            if isinstance(proto, str):
                alpn = (proto,)
        f = self.facts
        return ConnectionFacts(f.destination_port, f.destination_ip, server_name, transport, tuple(alpn),
                               f.direct_source_ip, f.source_ip, f.source_port)

    # ------------------------------------------------------------------ chain and transport socket
    def _dispatch(self, facts: ConnectionFacts) -> None:
        self._inspecting = False
        self.facts = facts
        chain = self.chains.select(facts)
        if chain is None:
            self.runtime.stats_no_chain.inc()
            self._close()
            return
        if chain.tls is None:  # plaintext, or (tcp_proxy without a TLS context) TLS passed through unchanged
            conn = chain.serve(self.runtime)
            conn.requested_server_name = facts.server_name or None
            self._forward_to(conn)
            self._hand_over(conn, self.transport)
            self._replay()
            return
        task = self.loop.create_task(self._handshake(chain, facts))
        self.runtime.handshakes.add(task)
        task.add_done_callback(self.runtime.handshakes.discard)

    async def _handshake(self, chain: ChainRuntime, facts: ConnectionFacts) -> None:
        provider = chain.tls
        assert provider is not None
        stats = self.runtime.ssl_stats
        transport = self.transport
        try:
            if provider.require_sni and not facts.server_name:
                raise ssl.SSLError(1, "[SSL] require_sni: the ClientHello has no server name")
            ctx = provider.context()
            waiter = self.loop.create_future()
            early = _EarlyData(keep_open_on_eof=chain.tcp is not None)
            if chain.tcp is not None:  # a tcp_proxy passes FINs on: TLS that can half-close (tls/half_close.py)
                impl = HalfCloseSSLProtocol
            elif uvloop is not None and isinstance(self.loop, uvloop.Loop):
                impl = _UvSSLProtocol
            else:
                impl = asyncio.sslproto.SSLProtocol
            # call_connection_made=True: the application transport reaches us via _EarlyData.connection_made
            sslp = impl(self.loop, early, ctx, waiter, True, None, True, HANDSHAKE_TIMEOUT)
            self._forward_to(sslp)
            sslp.connection_made(transport)
            self._replay()
            await waiter
            ssl_transport = early.transport
            if ssl_transport is None:
                raise ConnectionError("TLS layer gave no transport")
        except (ssl.SSLError, SecretNotReady, ConnectionError, OSError, asyncio.TimeoutError, EOFError) as e:
            stat, reason = classify_handshake_error(e)
            stats[stat].inc()
            self.runtime.last_transport_failure = reason
            log.debug("listener %s: TLS handshake failed: %s", self.runtime.name, reason)
            self._close()
            return
        sslobj = ssl_transport.get_extra_info("ssl_object")
        peer_der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        stats["handshake"].inc()
        if sslobj is not None and sslobj.session_reused:  # a client that resumed a session this listener issued
            stats["session_reused"].inc()
        if peer_der is None:
            stats["no_certificate"].inc()
        tls = TlsSession.build(sslobj.version() if sslobj else "", facts.server_name,
                               (sslobj.selected_alpn_protocol() if sslobj else "") or "", peer_der,
                               provider.local_uri_sans, sslobj.getpeercert() if peer_der else None)
        conn = chain.serve(self.runtime)
        conn.tls = tls
        conn.requested_server_name = facts.server_name or None
        ssl_transport.set_protocol(conn)
        self._hand_over(conn, ssl_transport)
        for data in early.data:
            conn.data_received(data)
        if early.eof and not conn.eof_received() and early.keep_open_on_eof:
            ssl_transport.close()  # the TLS layer kept the connection for it; it does not want it
        early.target = conn

    def _replay(self) -> None:
        pending, self._pending = self._pending, []
        for data in pending:
            self._feed(data)

    def _hand_over(self, conn: Any, transport: Any) -> None:
        self.done = True
        self.runtime.handed_over(self)
        conn.connection_made(transport)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if not self.done:
            self.done = True
            self.runtime.rejected(self)


class _EarlyData(asyncio.Protocol):
    """The TLS layer's application side until the HTTP connection manager takes over: keeps what the client
    sent right after its Finished message (TLS 1.3 clients do), replayed in order."""

    def __init__(self, keep_open_on_eof: bool = False) -> None:
        self.data: list[bytes] = []
        self.eof = False
        # a tcp_proxy's TLS layer (HalfCloseSSLProtocol) can stay open after the client's close_notify: keep it
        # until the session, replayed the EOF, says what it wants (it passes the FIN on and still answers)
        self.keep_open_on_eof = keep_open_on_eof
        self.target: Any = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.target is not None:
            self.target.data_received(data)
        else:
            self.data.append(data)

    def eof_received(self) -> bool | None:
        if self.target is not None:
            return self.target.eof_received()
        self.eof = True
        return self.keep_open_on_eof

    def connection_lost(self, exc: Exception | None) -> None:
        if self.target is not None:
            self.target.connection_lost(exc)
