"""One HTTP/1.1 connection from the proxy to an upstream host (Envoy: the HTTP/1 codec client).

It carries one request at a time (HTTP/1.1 without upstream pipelining, as Envoy does) for whichever
router attempt the pool lent it to, parses the response with llhttp and reports events to that attempt:
`on_response_headers`, `on_response_data`, `on_response_end`, `on_upstream_reset`. When the exchange is
done it goes back to its pool (`pyproxy.upstream.pool`) if both sides allow keep-alive and the request was
sent whole (`end_request()`): an upstream may answer before the request body is finished, and a connection
reused then would carry the next client's request as the rest of that body (request desync). Envoy's rule is
the same: a connection is reusable only when the request was fully sent and the response fully received.

Things an upstream may do wrong and what happens (Envoy's behaviour): garbage instead of a status line ->
protocol error (503 UPE before headers); extra responses nobody asked for -> only the first is forwarded,
the connection is closed; closing before the response ends -> 503 UC, or the downstream is reset when the
response had already started.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httptools

from ..http.flush import BatchedWriter, batch_begin, batch_end
from ..http.headers import Headers, lower_name
from ..tls.sslobject import remember_session
from .connect import tune_upstream_socket

if TYPE_CHECKING:  # pragma: no cover
    from .pool import ConnectionPool


class UpstreamConnection(BatchedWriter, asyncio.Protocol):
    def __init__(self, pool: "ConnectionPool"):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.attempt: Any = None  # the RouterFilter (or a mirror's ShadowRequest) using us now
        self.requests_served = 0
        self.counted = False  # in the cluster's connection counts (set once established)
        self.closed = False
        self.reusable = True
        self.request_sent = True  # the current request went out whole (no request: trivially true)
        self.local_address: str | None = None  # ip:port once connected (%UPSTREAM_LOCAL_ADDRESS%)
        # (TLS?, the peer's first URI SAN, our own), read once by istio.stats: a connection's identities never change
        self.peer_identity: tuple[bool, str | None, str] | None = None
        self.session_unsaved = False  # TLS 1.3: its session (ticket) is not yet kept for resumption (pool.py)
        self._headers: list[tuple[str, str]] = []
        self._status = 0
        self._in_headers = False
        self._got_headers = False
        self._framed = False  # the response has content-length or transfer-encoding (else: ends by close)
        self._complete = False
        self._head = False  # the request was HEAD: the response has no body whatever it says
        self._read_paused = False
        self._wbuf: list[bytes] = []
        self._loop = asyncio.get_event_loop()
        self._idle_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self.tunnel: Any = None  # after a 101: bytes go to this pyproxy.http.tunnel.Tunnel, not the parser

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tune_upstream_socket(transport, self.pool.cluster)
        local = transport.get_extra_info("sockname")
        if local:
            host = str(local[0])
            self.local_address = f"[{host}]:{local[1]}" if ":" in host else f"{host}:{local[1]}"

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.tunnel is not None:
            self.pool.on_connection_closed(self)
            self.tunnel.close()
            return
        attempt, self.attempt = self.attempt, None
        self.pool.on_connection_closed(self)
        if attempt is not None:
            if self._got_headers and not self._complete and self._close_delimited():
                attempt.on_response_end()  # body delimited by connection close: this is its end
            else:
                attempt.on_upstream_reset("connection termination")

    def pause_writing(self) -> None:
        if self.attempt is not None:
            self.attempt.on_upstream_write_paused()

    def resume_writing(self) -> None:
        if self.attempt is not None:
            self.attempt.on_upstream_write_resumed()

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel  # (a local: the test below must not narrow `self.tunnel` to None for the compiled
        if tunnel is not None:  # build, scripts/build_compiled.py; the parse below can open the tunnel)
            tunnel.from_upstream(data)
            return
        batch_begin()  # what this callback writes leaves in one send per connection, at batch_end
        try:
            if self.attempt is None:
                # Bytes with no request outstanding: an upstream protocol violation; do not reuse.
                self.pool.stats_protocol_error.inc()
                self.close()
                return
            attempt = self.attempt
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as e:
                # a 101 answered an upgrade request: the router has opened the tunnel (on_response_headers)
                if self.tunnel is not None:
                    self.tunnel.from_upstream(data[e.args[0]:])
                else:  # a 101 nobody asked for, or an upgrade the downstream gave up on
                    self.attempt = None
                    self.close()
                    if attempt is not None and not self._got_headers:
                        attempt.on_upstream_reset("protocol error")
                return
            except httptools.HttpParserError:
                self.reusable = False
                self.pool.stats_protocol_error.inc()
                if self._complete:
                    # the response was whole; what followed (e.g. unrequested pipelined responses, conformance
                    # #14) only poisons this connection: forward the first response, close the connection
                    self._finish()
                else:
                    self.attempt = None
                    self.close()
                    attempt.on_upstream_reset("protocol error")
                return
            if self._complete:
                self._finish()
        finally:
            batch_end()

    # ------------------------------------------------------------ sending
    def send(self, attempt: Any, head: bytes, head_request: bool) -> None:
        self.attempt = attempt
        self._idle_since = None
        self._headers = []
        self._status = 0
        self._got_headers = False
        self._complete = False
        self._head = head_request
        self.request_sent = False
        self.requests_served += 1
        self.write(head)

    def end_request(self) -> None:
        """The request's last byte has been written: the connection may be reused once the response is done."""
        self.request_sent = True

    def pause_reading(self) -> None:
        if not self._read_paused and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if self._read_paused and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.flush()
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def mark_idle(self, timeout: float) -> None:
        """Back in the pool: close after `timeout` idle seconds (cluster common_http_protocol_options.idle_timeout,
        Envoy default 1 h). One lazily re-armed timer per connection, not one per request."""
        self._idle_since = self._loop.time()
        if timeout and self._idle_timer is None and not self.closed:
            self._idle_timer = self._loop.call_later(timeout, self._on_idle_timer, timeout)

    def _on_idle_timer(self, timeout: float) -> None:
        self._idle_timer = None
        if self.closed or self.attempt is not None or self._idle_since is None:
            return
        remaining = self._idle_since + timeout - self._loop.time()
        if remaining > 0:
            self._idle_timer = self._loop.call_later(remaining, self._on_idle_timer, timeout)
        else:
            self.pool.stats_idle_timeout.inc()
            self.close()

    def detach(self) -> None:
        """The attempt gives up on this exchange (timeout, downstream gone): the connection is unusable."""
        self.attempt = None
        self.abort()

    # ------------------------------------------------------------ llhttp callbacks
    def on_message_begin(self) -> None:
        if self._got_headers and self._complete:
            # a second response to one request (conformance #14): protocol error
            raise httptools.HttpParserError("unexpected pipelined response")
        self._headers = []
        self._in_headers = True

    def on_status(self, status: bytes) -> None:
        pass

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_headers:
            self._headers.append((lower_name(name), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_headers = False
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # interim response (100 Continue, 103): not forwarded (Envoy: proxy_100_continue false)
            self._headers = []
            return
        headers = Headers.from_lowered(self._headers)
        if status == 204 and ((headers.get_first("content-length") or "0").strip() != "0"
                              or "transfer-encoding" in headers):
            # a 204 announcing a body cannot be framed: Envoy 1.40 treats it as a protocol error (502 UPE)
            raise httptools.HttpParserError("204 response with a body")
        self._status = status
        self._got_headers = True
        # read now: the router edits `headers` in place (and its list is this parser's)
        self._framed = "content-length" in headers or "transfer-encoding" in headers
        if not self.parser.should_keep_alive():
            self.reusable = False  # `connection: close` or HTTP/1.0 upstream
        if self.attempt is not None:
            self.attempt.on_response_headers(status, headers)
        if self._head or status in (204, 304):
            self._complete = True
            self.parser = httptools.HttpResponseParser(self)  # llhttp would wait for the body otherwise

    def on_body(self, body: bytes) -> None:
        if self._complete or self.attempt is None:
            return
        self.attempt.on_response_data(body)

    def on_message_complete(self) -> None:
        if self._got_headers:
            self._complete = True

    # ------------------------------------------------------------ completion
    def _close_delimited(self) -> bool:
        return not self._framed and not self._head

    def _finish(self) -> None:
        if not self.request_sent:
            self.reusable = False  # answered before the request body was all sent: never reuse
        if self.session_unsaved and self.transport is not None:  # the ticket has arrived by now, as a rule
            self.session_unsaved = not remember_session(self.transport.get_extra_info("ssl_object"))
        attempt, self.attempt = self.attempt, None
        self.pool.release(self)
        if attempt is not None:
            attempt.on_response_end()

    def __repr__(self) -> str:
        state = "busy" if self.attempt is not None else ("closed" if self.closed else "idle")
        return f"<UpstreamConnection {self.local_address or '-'} {state} served={self.requests_served}>"
