"""TLS with half-close, for the tcp_proxy's connections (Envoy: `SslSocket` under a connection with half-close
enabled, which `TcpProxy::Filter` turns on for both of its connections).

Envoy passes a FIN from one side of a tcp_proxy on as a FIN and keeps the other direction flowing. Over TLS a
FIN is the TLS `close_notify` alert followed by the TCP FIN: Envoy's `SslSocket::doWrite(end_stream)` sends
close_notify (`SSL_shutdown`) and then shuts down the socket's write side, and keeps reading; a close_notify
read (`SSL_ERROR_ZERO_RETURN`) is end-of-stream for the filter, and the connection stays open for writing.

asyncio's SSL protocol (and uvloop's, its port to Cython) cannot do either: its transport has no `write_eof`,
and a close_notify or TCP FIN from the peer starts its own shutdown whatever the application answers
(`eof_received()` returning True "has no effect when using ssl"). `HalfCloseSSLProtocol` is asyncio's pure-Python
`SSLProtocol` with three changes:

* the peer's close_notify (or a bare TCP FIN) is given to the application as `eof_received()`; if it answers
  True the TLS session stays up for writing (no shutdown starts, the socket stays open);
* the application transport's `write_eof()` flushes what was written, sends close_notify (`SSLObject.unwrap`,
  which queues the alert and then wants the peer's; that wait is not ours) and shuts down the TCP write side;
  reading goes on (OpenSSL reads after sending close_notify);
* the final shutdown (the application's `close()`) sends close_notify and does not wait for the peer's once the
  peer's TCP FIN has been seen (it can send nothing more).

Only tcp_proxy chains and their upstream connections use it: HTTP keeps uvloop's C implementation (an HTTP
connection never half-closes), so the cost of the pure-Python TLS record layer stays with L4 traffic.
"""
from __future__ import annotations

import asyncio
import asyncio.sslproto as _sslproto
import ssl
from typing import Any, Callable

_WRAPPED = _sslproto.SSLProtocolState.WRAPPED
_CON_MADE = _sslproto.AppProtocolState.STATE_CON_MADE
_EOF = _sslproto.AppProtocolState.STATE_EOF
_AGAIN = (ssl.SSLWantReadError, ssl.SSLSyscallError)


class _ReadsAfterShutdown:
    """The SSLObject, except that the peer's close_notify read after we sent ours is end-of-stream (b'' / 0), as
    it is before: CPython reports it as a clean EOF only while *only* the received-shutdown flag is set
    (`SSL_get_shutdown(ssl) == SSL_RECEIVED_SHUTDOWN`) and raises SSLZeroReturnError once both are."""

    __slots__ = ("_obj",)

    def __init__(self, obj: ssl.SSLObject):
        self._obj = obj

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # noqa: A002 - SSLObject.read's signature
        try:
            return self._obj.read(len, buffer) if buffer is not None else self._obj.read(len)
        except ssl.SSLZeroReturnError:
            return 0 if buffer is not None else b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._obj, name)


class HalfCloseTransport(_sslproto._SSLProtocolTransport):
    """The application's side of a `HalfCloseSSLProtocol`: adds `write_eof`."""

    def close(self) -> None:
        if not self._closed and self._ssl_protocol is not None:
            self._ssl_protocol._app_closing = True
        super().close()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._ssl_protocol is not None:
            self._ssl_protocol._write_eof()


class HalfCloseSSLProtocol(_sslproto.SSLProtocol):
    """asyncio's SSLProtocol whose application can half-close, and be half-closed, as over plain TCP."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sslobj = _ReadsAfterShutdown(self._sslobj)
        self._app_closing = False  # the application called close(): shut down as asyncio does
        self._peer_eof_kept = False  # the peer ended its stream and the application kept the connection open
        self._peer_fin = False  # the peer's TCP FIN arrived: it can send nothing more
        self._local_eof = False  # we sent close_notify and our FIN

    def _get_app_transport(self) -> HalfCloseTransport:
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError("Creating _SSLProtocolTransport twice")
            self._app_transport = HalfCloseTransport(self._loop, self)
            self._app_transport_created = True
        return self._app_transport

    # --- the peer's end of stream -------------------------------------------------------------------------
    def _call_eof_received(self) -> None:
        if self._app_state != _CON_MADE:
            return
        self._app_state = _EOF
        try:
            self._peer_eof_kept = bool(self._app_protocol.eof_received())
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as ex:
            self._fatal_error(ex, "Error calling eof_received()")

    def _start_shutdown(self) -> None:
        if self._peer_eof_kept and not self._app_closing:
            return  # the read path saw close_notify; the application still writes
        super()._start_shutdown()

    def eof_received(self) -> bool | None:
        """The peer's TCP FIN: end of its stream (after any close_notify already read)."""
        self._peer_fin = True
        if self._state == _WRAPPED and not self._app_closing:
            self._do_read()  # records still buffered, close_notify included; then a bare FIN (_do_read)
            if self._state == _WRAPPED and (self._peer_eof_kept or self._app_state == _CON_MADE):
                return True  # our direction still flows, or the application has not read everything yet
        return super().eof_received()

    def _do_read(self) -> None:
        super()._do_read()
        # a FIN without close_notify, once everything before it was read: Envoy ends the stream too
        if self._peer_fin and self._state == _WRAPPED and self._app_state == _CON_MADE \
                and not self._app_reading_paused and not self._incoming.pending:
            self._call_eof_received()
            if not self._peer_eof_kept:
                self._start_shutdown()

    def _do_shutdown(self) -> None:
        if not self._peer_fin or self._eof_received:
            super()._do_shutdown()
            return
        try:  # send our close_notify; the peer's will not come (its FIN was seen), so do not wait for it
            self._sslobj.unwrap()
        except _AGAIN:
            pass
        except ssl.SSLError as exc:
            self._on_shutdown_complete(exc)
            return
        self._flush_outgoing()
        self._on_shutdown_complete(None)

    # --- our end of stream ----------------------------------------------------------------------------------
    def _write_appdata(self, list_of_data: Any) -> None:
        if self._local_eof:
            self._conn_lost += 1  # written after write_eof: dropped, as a socket whose write side is shut
            return
        super()._write_appdata(list_of_data)

    def _write_eof(self) -> None:
        if self._local_eof or self._state != _WRAPPED:
            return
        self._local_eof = True
        try:
            self._do_write()
            self._sslobj.unwrap()  # queues close_notify, then wants the peer's: raises SSLWantReadError
        except _AGAIN:
            pass
        except ssl.SSLError as exc:
            self._fatal_error(exc, "Fatal error sending close_notify")
            return
        self._flush_outgoing()
        if self._transport is not None and self._transport.can_write_eof():
            self._transport.write_eof()

    def _flush_outgoing(self) -> None:
        """Everything the TLS layer produced goes to the socket now (even while the socket asked us to pause:
        its transport buffers it), so the TCP FIN that follows comes after it."""
        data = self._outgoing.read()
        if data and self._transport is not None:
            self._transport.write(data)


def half_close_tls(loop: asyncio.AbstractEventLoop, app_protocol: asyncio.BaseProtocol, context: ssl.SSLContext,
                   waiter: asyncio.Future, *, server_side: bool, server_hostname: str | None = None,
                   handshake_timeout: float | None = None) -> HalfCloseSSLProtocol:
    """The TLS layer for one tcp_proxy connection (give it the raw transport with `connection_made`)."""
    return HalfCloseSSLProtocol(loop, app_protocol, context, waiter, server_side, server_hostname,
                                call_connection_made=True, ssl_handshake_timeout=handshake_timeout)


async def connect_half_close_tls(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol],
                                 host: str, port: int, context: ssl.SSLContext, server_hostname: str
                                 ) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """`loop.create_connection(factory, host, port, ssl=context)` with a `HalfCloseSSLProtocol` as the TLS layer."""
    waiter = loop.create_future()
    app = factory()
    tls = half_close_tls(loop, app, context, waiter, server_side=False, server_hostname=server_hostname)
    raw, _ = await loop.create_connection(lambda: tls, host, port)
    try:
        await waiter
    except BaseException:
        raw.close()
        raise
    return tls._app_transport, app
