"""The HTTP connection manager: one downstream HTTP/1.1 connection and the streams on it.

Where it sits: listener accept() -> **DownstreamConnection** (this module) -> filter chain -> router
(`pyproxy.filters.router`) -> cluster -> upstream connection -> back through `ActiveStream.encode_*`.

Envoy's HttpConnectionManager does the same job: it owns the codec (here llhttp via `httptools`, fed bytes
in `data_received`), enforces the limits (`max_request_headers_kb` 60 KiB, `max_headers_count` 100,
`request_headers_timeout`), turns each request into an `ActiveStream`, and writes the response framing.
It is callback-driven on purpose: no task per request, bodies streamed chunk by chunk with
`pause_reading()`/`resume_reading()` for back-pressure in both directions.

Pipelined requests are served strictly in order: the first is active; the ones parsed behind it wait
(with their bodies buffered) and reading is paused until the active response is done.
"""
from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import httptools

from ..filters.base import FilterStatus
from ..observe.stream_info import ResponseFlag, StreamInfo
from ..routing.table import RouteMatchResult
from ..tls.session import forwarded_client_cert
from . import codec, local_reply
from .flush import BatchedWriter, batch_begin, batch_end
from .forwarded import forwarded_headers
from .headers import Headers, lower_name
from .local_reply import LocalReply
from .path import Verdict as PathVerdict
from .path import normalize as normalize_path
from .tunnel import Tunnel

if TYPE_CHECKING:  # pragma: no cover
    from ..filters.router import RouterFilter
    from ..server import HcmRuntime


class _Reject(Exception):
    """Raised inside a parser callback to abort parsing with a specific local reply."""

    def __init__(self, reply: LocalReply):
        self.reply = reply


_RID_RANDOM = random.Random(os.urandom(32))  # seeded once from the OS; ids must be unique, not secret
# a UUID's variant digit is 10xx in binary: each random hex digit keeps its two low bits (uniform over 8, 9, a, b)
_RID_VARIANT: dict[str, str] = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def new_request_id() -> str:
    """A random (version 4) UUID string, as Envoy generates for x-request-id. Unlike uuid.uuid4() it makes
    no getrandom() syscall per request: a request id is a correlation key, not a secret. 16 random bytes as
    hex, with the version digit written as "4" and the variant digit mapped onto 8-b (RFC 9562 §5.4): 0.30 µs
    compiled, against 0.36 through Random.randbytes (a Python-level method) and 0.7 for the same bits masked
    and formatted as one 128-bit integer (timeit)."""
    h = _RID_RANDOM.getrandbits(128).to_bytes(16, "little").hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_RID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _parser_error_reply(message: str) -> LocalReply:
    """The local reply for an llhttp error, with Envoy's details: llhttp refuses `chunked, gzip` itself (Envoy
    answers any transfer coding but chunked with 501) and Content-Length with Transfer-Encoding."""
    if "Invalid `Transfer-Encoding`" in message:
        return local_reply.INVALID_TRANSFER_ENCODING
    if "can't be present with" in message:  # Content-Length with Transfer-Encoding, either order
        return local_reply.CONTENT_LENGTH_AND_CHUNKED
    return local_reply.BAD_REQUEST


class ActiveStream:
    """One request/response exchange on a downstream connection (Envoy: ActiveStream)."""

    __slots__ = (
        "conn", "hcm", "info", "method", "path", "version", "headers", "keep_alive", "started",
        "request_complete", "pending_body", "router", "response_started", "response_chunked",
        "response_complete", "head_request", "expect_continue", "trailer_count", "request_chunked",
        "pending_error", "pending_headers", "route_match", "cluster_name", "cluster_weight", "filters",
        "filter_index", "upgrade", "span",
    )

    def __init__(self, conn: "DownstreamConnection", hcm: "HcmRuntime", method: str, path: str, version: str,
                 headers: Headers, keep_alive: bool):
        self.conn = conn
        self.hcm = hcm  # the config snapshot this stream runs on, whatever gets swapped meanwhile
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.head_request = method == "HEAD"
        self.started = False
        self.request_complete = False
        self.pending_body: list[bytes] | None = None
        self.router: RouterFilter | None = None
        self.response_started = False
        self.response_chunked = False
        self.response_complete = False
        self.expect_continue = False
        self.trailer_count = 0
        self.request_chunked = False
        self.pending_error: LocalReply | None = None  # a codec error to answer when this stream's turn comes
        self.pending_headers: Headers | None = None  # ... and the headers that go with it (a redirect's location)
        self.route_match: RouteMatchResult | None = None  # typed: compiled, its fields are read natively
        self.cluster_name: str | None = None
        self.cluster_weight: Any = None
        self.filters: list[Any] | None = None
        self.filter_index = 0
        self.upgrade: str | None = None  # the Upgrade value (or "CONNECT") of an upgrade request
        self.span: Any = None  # a pyproxy.tracing.tracer.ActiveSpan when this request is sampled
        info = self.info = StreamInfo(time.time(), time.monotonic())
        info.method = method
        info.path = path
        info.protocol = "HTTP/1.0" if version == "1.0" else "HTTP/1.1"
        info.request_headers = headers
        info.downstream_remote_address = conn.remote_address
        info.downstream_local_address = conn.local_address
        tls = conn.tls
        if tls is None:
            info.scheme = "http"
        else:  # a TLS connection (pyproxy.listener.accept): the session is visible to filters and the log
            info.scheme = "https"
            info.downstream_tls = tls
        info.requested_server_name = conn.requested_server_name

    # ------------------------------------------------------------ request side (decoder)
    def start(self) -> None:
        """Route the request, run it through the HTTP filters, then hand it to the router."""
        self.started = True
        hcm = self.hcm
        hcm.stats_rq_total.inc()
        hcm.stats_rq_active.inc()
        if self.pending_error is not None:
            self.send_local_reply(self.pending_error, extra_headers=self.pending_headers)
            return
        self._prepare_request_headers()
        if self.expect_continue:
            self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.clear_route_cache()  # Envoy resolves the route before the filters run, so they can read per-route config
        m = self.route_match
        if hcm.tracer is not None:  # the trace decision, once per request (pyproxy.tracing.tracer)
            self.span = hcm.tracer.start(self)
        if self.upgrade is not None and not codec.upgrade_allowed(
                self.upgrade, hcm.config.upgrade_configs,
                m.action.upgrade_configs if m is not None and m.action is not None else ()):
            hcm.stats_ws_on_non_ws_route.inc()  # Envoy counts every refused upgrade under this name
            self.send_local_reply(local_reply.UPGRADE_FAILED)
            return
        self.filter_index = 0
        if hcm.filter_factories:
            self.filters = [factory() for factory in hcm.filter_factories]
        self.continue_decoding()

    def clear_route_cache(self) -> None:
        """Pick the route (and cluster): before the filters, and again when a filter changed what routing reads
        (JWT claims in dynamic metadata; Envoy `clearRouteCache`). The router, made after the filters, uses it."""
        hcm = self.hcm
        m = self.route_match = hcm.route_table.match(self.info.authority or "", self.path, self.headers,
                                                     method=self.method, scheme=cast(str, self.info.scheme),
                                                     rng=hcm.rng,
                                                     metadata=self.info.dynamic_metadata)
        self.cluster_name = self.cluster_weight = None
        if m is not None and m.action is not None:
            self.cluster_name, self.cluster_weight = m.choose_cluster(self.headers, hcm.rng)

    def continue_decoding(self) -> None:
        """Run the remaining filters; when all said CONTINUE, start the router and feed it the body so far."""
        filters = self.filters
        while filters is not None and self.filter_index < len(filters):
            f = filters[self.filter_index]
            self.filter_index += 1
            if f.decode_headers(self) is FilterStatus.STOP or self.response_complete:
                return
        if self.response_complete:
            return
        self.router = self.hcm.router_factory(self)
        self.router.on_request_headers()
        if self.pending_body is not None:
            body, self.pending_body = self.pending_body, None
            for chunk in body:
                if self.response_complete:
                    break
                self.router.on_request_data(chunk)
        if self.request_complete and not self.response_complete:
            self.router.on_request_end()

    def _prepare_request_headers(self) -> None:
        """Envoy's request header normalisation (HCM `use_remote_address`, `generate_request_id`...)."""
        h = self.headers
        cfg = self.hcm.config
        if self.expect_continue:
            h.remove("expect")  # Envoy answers 100-continue itself and strips it (proxy_100_continue: false)
        self.request_chunked = codec.is_chunked(h)
        token = "upgrade"
        if self.upgrade is not None:
            token = next((t.strip() for t in (h.get("connection") or "").split(",")
                          if t.strip().lower() == "upgrade"), token)
        codec.strip_hop_by_hop(h)
        if self.upgrade is not None and self.upgrade != "CONNECT":
            h.add("connection", token)  # the handshake goes upstream as the client wrote it
            h.add("upgrade", self.upgrade)
        external = forwarded_headers(h, cfg, self.conn.remote_ip, cast(str, self.info.scheme))
        xfcc_mode = cfg.forward_client_cert_details
        if xfcc_mode != "SANITIZE" or self.conn.tls is not None or "x-forwarded-client-cert" in h:
            xfcc = forwarded_client_cert(xfcc_mode, cfg.set_current_client_cert_details, self.conn.tls,
                                         h.get("x-forwarded-client-cert"))
            if xfcc is None:
                h.remove("x-forwarded-client-cert")
            else:
                h.set("x-forwarded-client-cert", xfcc)
        if cfg.generate_request_id is not False:
            rid = h.get_first("x-request-id")
            if rid is None or (external and not cfg.preserve_external_request_id):
                h.set("x-request-id", new_request_id())
        if cfg.via:
            via = h.get("via")
            h.set("via", f"{via}, {cfg.via}" if via else cfg.via)

    def on_body(self, chunk: bytes) -> None:
        self.info.bytes_received += len(chunk)
        if self.response_complete:
            return  # answered already (early local reply): the rest of the body is dropped
        if self.router is None:  # not started yet, or held by a filter (e.g. a fault delay)
            if self.pending_body is None:
                self.pending_body = []
            self.pending_body.append(chunk)
        elif not self.response_complete:
            self.router.on_request_data(chunk)

    def on_complete(self) -> None:
        self.request_complete = True
        self.info.last_downstream_rx = time.monotonic()  # Envoy's last downstream byte received: %REQUEST_DURATION%
        if self.router is not None and not self.response_complete:
            self.router.on_request_end()

    # ------------------------------------------------------------ response side (encoder)
    def encode_headers(self, status: int, headers: Headers, end_stream: bool, *, framed_length: bool) -> None:
        """Write the response head. `framed_length`: the upstream gave a Content-Length we keep."""
        if self.response_started:
            return
        self.response_started = True
        info = self.info
        info.response_code = status
        info.response_headers = headers
        codec.strip_hop_by_hop(headers)
        if self.filters is not None:
            for f in self.filters:
                f.encode_headers(self, headers)
        self._add_server_and_date(headers)
        if self.hcm.config.always_set_request_id_in_response or "x-envoy-force-trace" in self.headers:
            # Envoy: a forced trace (an internal request's x-envoy-force-trace) returns its request id
            rid = self.headers.get_first("x-request-id")
            if rid is not None:
                headers.set("x-request-id", rid)
        no_body = status in codec.NO_BODY_STATUSES or 100 <= status < 200
        if status == 204:
            headers.remove("content-length")
        elif not no_body and not framed_length:
            headers.remove("content-length")
            if self.version == "1.1":
                headers.add("transfer-encoding", "chunked")
                self.response_chunked = not self.head_request
            else:
                self.keep_alive = False  # HTTP/1.0: body delimited by close
        if not self.request_complete and not self.conn._in_feed:
            # answered (by the upstream) before the request was whole: this connection cannot be resynced,
            # say so on the response (Envoy adds `connection: close` too)
            self.keep_alive = False
        close = not self.keep_alive or self.conn.draining
        if close:
            self.keep_alive = False
            headers.set("connection", "close")
        elif self.version == "1.0":
            headers.set("connection", "keep-alive")  # an HTTP/1.0 client assumes close otherwise
        head = codec.encode_head(codec.status_line(status, self.version), headers)
        self.conn.write(head)
        if end_stream or no_body or self.head_request:
            self._finish()

    def _add_server_and_date(self, headers: Headers) -> None:
        """`server` (HCM server_name / server_header_transformation), `via`, and a `date` when the upstream
        gave none, as Envoy's HCM does on every response it encodes."""
        config = self.hcm.config
        mode = config.server_header_transformation
        if mode == "OVERWRITE" or (mode == "APPEND_IF_ABSENT" and "server" not in headers):
            headers.set("server", config.server_name or "pyproxy")
        if config.via:
            headers.set("via", config.via)
        if "date" not in headers:
            headers.add("date", _http_date())

    def encode_switching_protocols(self, headers: Headers) -> None:
        """Write the upstream's `101 Switching Protocols`, keeping `connection: upgrade` / `upgrade` (an
        upgrade's response is the one place they pass); the tunnel (pyproxy.http.tunnel) takes over after."""
        self.response_started = True
        info = self.info
        info.response_code = 101
        info.response_headers = headers
        upgrade = headers.get_first("upgrade") or self.upgrade or ""
        codec.strip_hop_by_hop(headers)
        headers.add("connection", "upgrade")
        headers.add("upgrade", upgrade)
        if self.filters is not None:
            for f in self.filters:
                f.encode_headers(self, headers)
        self._add_server_and_date(headers)
        self.conn.write(codec.encode_head(codec.status_line(101), headers))

    def tunnel_closed(self) -> None:
        """The upgraded connection ended: this stream is complete (logged and counted now)."""
        if not self.response_complete:
            self.response_complete = True
            self.keep_alive = False
            self._log_and_count()

    def encode_data(self, data: bytes) -> None:
        if self.response_complete or not data:
            return
        self.info.bytes_sent += len(data)
        if self.response_chunked:
            self.conn.write(codec.encode_chunk(data))
        else:
            self.conn.write(data)

    def encode_end(self) -> None:
        if self.response_complete:
            return
        if self.response_chunked:
            self.conn.write(codec.LAST_CHUNK)
        self._finish()

    def send_local_reply(self, reply: LocalReply, *, extra_headers: Headers | None = None,
                         status: int | None = None) -> None:
        """Answer from the proxy itself (Envoy's sendLocalReply), or reset if the response already began."""
        self.info.response_flags |= reply.flag
        self.info.response_code_details = reply.details
        if self.response_started:
            self.reset()
            return
        status = reply.status if status is None else status
        text = reply.body.encode()
        h = extra_headers if extra_headers is not None else Headers()
        if text:
            h.set("content-length", str(len(text)))
            h.set("content-type", "text/plain")
        elif status not in codec.NO_BODY_STATUSES:
            h.set("content-length", "0")
        self.encode_headers(status, h, not text, framed_length=True)
        if text and not self.head_request:
            self.encode_data(text)
        self.encode_end()

    def reset(self) -> None:
        """The response cannot be completed: abort the downstream connection (Envoy resets the stream)."""
        if self.response_complete:
            return
        self.response_complete = True
        self.keep_alive = False
        self._log_and_count()
        self.conn.abort()

    def _finish(self) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        self._log_and_count()
        self.conn.stream_finished(self)

    def _log_and_count(self) -> None:
        info = self.info
        # Envoy's request complete is the whole exchange's end (%DURATION%), not the request half's
        info.last_downstream_tx = info.request_complete = time.monotonic()
        if info.last_downstream_rx is None and not self.request_complete and _bodyless(self.headers):
            # answered from its head, before llhttp reported the message end: a request without a body ends
            # with its head (Envoy: end_stream on the headers), so %REQUEST_DURATION% is 0, not "-"
            info.last_downstream_rx = info.start_monotonic
        hcm = self.hcm
        hcm.stats_rq_active.dec()
        code = info.response_code
        if code:
            hcm.count_response(code)
        router = self.router
        if router is not None:
            router.on_stream_done()
            self.router = None  # break the stream <-> router cycle: freed by refcount, not by the GC
        if self.filters is not None:
            for f in self.filters:
                f.on_destroy()
            self.filters = None
        span = self.span
        if span is not None:
            self.span = None
            span.finish(self)
        for logger in hcm.access_loggers:
            logger.log(info)
        tap = hcm.tap
        if tap.subscribers:  # nobody tapping: this check is all it costs (pyproxy.observe.tap)
            tap.publish(info, hcm.traffic_direction)


_date_cache: list[Any] = [0, ""]
# IMF-fixdate's names (RFC 9110 5.6.7), written out rather than taken from strftime (locale-dependent) or
# email.utils.formatdate (the email package costs a sidecar ~1 MiB of RSS for this one line)
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: int) -> str:
    """IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) of a Unix time."""
    t = time.gmtime(seconds)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


def _bodyless(headers: Headers) -> bool:
    """A request with neither a body length nor a transfer coding has no body (RFC 9112 §6.3)."""
    return "transfer-encoding" not in headers and headers.get_first("content-length") in (None, "0")


def _http_date() -> str:
    """IMF-fixdate for the `date` header, formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = http_date(now)
    return _date_cache[1]


class DownstreamConnection(BatchedWriter, asyncio.Protocol):
    """asyncio protocol for one accepted connection; parser callbacks are methods of this class."""

    def __init__(self, listener: Any):
        self.listener = listener  # a ListenerRuntime (or a listener.accept.ChainView): the current HcmRuntime
        self.transport: asyncio.Transport | None = None
        self.tls: Any = None  # a pyproxy.tls.session.TlsSession once a TLS handshake completed: peer identity...
        self.requested_server_name: str | None = None  # SNI seen by tls_inspector
        self.parser = httptools.HttpRequestParser(self)
        self.streams: deque[ActiveStream] = deque()
        self.remote_address = "-"
        self.remote_ip = "-"
        self.local_address = "-"
        self.closed = False
        self.draining = False
        self.paused_for_pipeline = False
        self.upstream_paused = False  # reading paused because the upstream cannot take more
        self.write_paused = False
        self._hcm: HcmRuntime | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._in_headers = False
        self._cur: ActiveStream | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._route_timer: asyncio.TimerHandle | None = None  # the active router's route timeout (see arm_route_timeout)
        self._route_timer_at = 0.0
        self._timed: Any = None  # the router it serves
        self._wbuf: list[bytes] = []
        self._loop = asyncio.get_event_loop()
        self._idle_since: float | None = None
        self._errored = False
        self._early: ActiveStream | None = None
        self.tunnel: Tunnel | None = None  # set once an upgrade request was parsed: bytes bypass the parser
        self._h2c_ignored = False  # the request just parsed asked for h2c, which is ignored
        self._in_request_line = False  # the request line has not ended yet (HTTP/0.9 detection)
        self._after_url = b""  # bytes after the URL seen so far on that line
        self._in_feed = False  # inside parser.feed_data (callbacks may finish a stream synchronously)
        self.filter_state: dict[Any, Any] = {}  # Envoy's connection-lifespan filter state (per-connection buckets)

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if peer:
            self.remote_ip = str(peer[0])
            self.remote_address = f"{peer[0]}:{peer[1]}" if ":" not in str(peer[0]) else f"[{peer[0]}]:{peer[1]}"
        if local:
            self.local_address = f"{local[0]}:{local[1]}" if ":" not in str(local[0]) else f"[{local[0]}]:{local[1]}"
        self.listener.on_connection_open(self)
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timers()
        if self.tunnel is not None:
            if not self.tunnel.closed:  # the client ended an open tunnel: Envoy logs DC (tests/oracle websocket-enabled)
                self.tunnel.stream.info.response_flags |= ResponseFlag.DC
                self.tunnel.stream.info.response_code_details = "downstream_remote_disconnect"
            self.tunnel.close()
        for stream in list(self.streams):
            if stream.started and not stream.response_complete:
                stream.info.response_flags |= ResponseFlag.DC  # downstream connection termination
                stream.response_complete = True
                stream._log_and_count()
        self.streams.clear()
        self.listener.on_connection_close(self)

    def pause_writing(self) -> None:
        """The client reads slower than the upstream sends: stop reading the upstream."""
        self.write_paused = True
        if self.tunnel is not None and self.tunnel.upstream is not None:
            self.tunnel.upstream.pause_reading()
        elif self.streams and self.streams[0].router is not None:
            self.streams[0].router.pause_upstream_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None and self.tunnel.upstream is not None:
            self.tunnel.upstream.resume_reading()
        elif self.streams and self.streams[0].router is not None:
            self.streams[0].router.resume_upstream_reading()

    def data_received(self, data: bytes) -> None:
        self._idle_since = None
        if self.tunnel is not None:
            self.tunnel.from_downstream(data)
            return
        batch_begin()  # what this callback writes leaves in one send per connection, at batch_end
        try:
            while data and not self._errored:  # never parse past a codec error
                data = self._feed(data)
            if self._early is not None:  # answered early and the request body is still coming: give up on it
                self._early = None
                self.close()
        finally:
            batch_end()

    def _feed(self, data: bytes) -> bytes:
        """Feed llhttp; returns bytes still to parse (after an ignored h2c upgrade llhttp stops and a new
        parser takes over: a loop, not recursion, so pipelined h2c requests cannot exhaust the stack)."""
        self._in_feed = True
        # (one name per except clause: the compiled build, scripts/build_compiled.py, types a name once)
        try:
            self.parser.feed_data(data)
        except _Reject as rejected:
            self._protocol_error(rejected.reply)
        except httptools.HttpParserCallbackError as callback_error:
            cause = callback_error.__context__
            if isinstance(cause, _Reject):
                self._protocol_error(cause.reply)
            else:
                raise
        except httptools.HttpParserUpgrade as upgrade:
            if self._h2c_ignored:  # not an upgrade after all: parse what follows as HTTP/1.1 again
                self._h2c_ignored = False
                self.parser = httptools.HttpRequestParser(self)
                return data[upgrade.args[0]:]
            self._upgraded(data[upgrade.args[0]:])
        except httptools.HttpParserError as parse_error:
            # llhttp refuses `chunked, gzip` itself; Envoy answers any transfer coding but chunked with 501
            self._protocol_error(_parser_error_reply(str(parse_error)))
        finally:
            self._in_feed = False
        if self._in_request_line and self._url and not self._errored and self._http09(data):
            self._protocol_error(local_reply.HTTP10_DISABLED)  # Envoy: 426 at once, connection closed
        return b""

    def _http09(self, data: bytes) -> bool:
        """An HTTP/0.9 request line (`GET /x` + CRLF, no version): llhttp accepts it and waits for headers
        that never come, so look at what followed the URL in this read (and the reads before): once the line
        has ended, it must have carried `HTTP/`. Runs only between the URL and the first header line."""
        tail = self._url[-16:]
        i = data.rfind(tail)
        after = data[i + len(tail):] if i >= 0 else self._after_url + data
        nl = after.find(b"\n")
        if nl < 0:
            self._after_url = after[-64:]
            return False
        self._in_request_line = False  # the line is complete: decided once per request
        return b"HTTP/" not in after[:nl]

    def _upgraded(self, rest: bytes) -> None:
        """llhttp stopped after an upgrade request's head: what follows is not HTTP. If that request is still
        in flight it gets a tunnel (bytes held until the upstream's 101); if it was already refused, the
        connection is closing and the bytes are dropped. Either way the parser is never fed again."""
        self._errored = True
        stream = self.streams[-1] if self.streams else None
        if stream is not None and stream.upgrade is not None and not stream.response_complete:
            self.tunnel = Tunnel(stream)
            if rest:
                self.tunnel.from_downstream(rest)

    def eof_received(self) -> bool | None:
        # Envoy's HCM does not support half-close downstream: EOF is a remote close, streams in flight are
        # reset (flag DC, see connection_lost) and the upstream requests abandoned.
        return None

    # ------------------------------------------------------------ llhttp callbacks
    def on_message_begin(self) -> None:
        self._in_request_line = True
        self._after_url = b""
        self._hcm = self.listener.current
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._in_headers = True
        self._cur = None
        if self._header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._hcm.header_limit:  # type: ignore[union-attr]
            raise _Reject(local_reply.HEADERS_TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._in_request_line = False
        hcm = self._hcm
        self._header_bytes += len(name) + len(value)
        if self._in_headers:
            self._headers.append((lower_name(name), value.decode("latin-1").strip(" \t")))
            if self._header_bytes > hcm.header_limit:  # type: ignore[union-attr]
                raise _Reject(local_reply.HEADERS_TOO_LARGE)
            if len(self._headers) > hcm.max_headers:  # type: ignore[union-attr]
                raise _Reject(local_reply.TOO_MANY_HEADERS)
        else:  # trailers (chunked request); HTTP/1 trailers are not forwarded (Envoy: enable_trailers false)
            cur = self._cur
            if cur is not None:
                cur.trailer_count += 1
                if cur.trailer_count > hcm.max_headers:  # type: ignore[union-attr]
                    raise _Reject(local_reply.HEADERS_TOO_LARGE)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._in_request_line = False
        self._cancel_header_timer()
        hcm = self._hcm
        assert hcm is not None
        parser = self.parser
        method = parser.get_method().decode("latin-1")
        headers = Headers.from_lowered(self._headers)
        keep_alive = parser.should_keep_alive()
        # llhttp parses HTTP/0.9, 1.0, 1.1 and 2.0 only, and keeps a connection alive without a `connection` header
        # only for 1.1: the version string (formatted by httptools per call, 0.2 µs) is asked for only otherwise
        version = "1.1" if keep_alive and "connection" not in headers else parser.get_http_version()
        if version != "1.1":
            if version == "1.0" and hcm.accept_http_10:
                if "host" not in headers and hcm.default_host_for_http_10:
                    headers.add("host", hcm.default_host_for_http_10)
            else:
                raise _Reject(local_reply.HTTP10_DISABLED)
        host_values = headers.get_all("host")
        if len(host_values) != 1 or not host_values[0]:
            raise _Reject(local_reply.MISSING_HOST)
        if hcm.underscore_action != "ALLOW" and any("_" in k for k, _ in headers):
            if hcm.underscore_action == "REJECT_REQUEST":
                raise _Reject(local_reply.UNEXPECTED_UNDERSCORE)
            headers = Headers.from_lowered([(k, v) for k, v in headers if "_" not in k])
        if "transfer-encoding" in headers and not codec.transfer_encoding_supported(headers):
            raise _Reject(local_reply.INVALID_TRANSFER_ENCODING)  # Envoy: 501, whatever the other coding
        path = self._url.decode("latin-1")
        connect = method == "CONNECT"
        if path == "*" and method != "OPTIONS":
            raise _Reject(local_reply.BAD_REQUEST)  # asterisk-form is OPTIONS-only (RFC 9112 §3.2.4; Envoy: 400)
        if not path.startswith("/") and path != "*" and hcm.allow_absolute_url and not connect:
            # absolute-form (http://host/path): route by the URI's authority (Envoy: allow_absolute_url)
            scheme_end = path.find("://")
            if scheme_end <= 0:
                raise _Reject(local_reply.BAD_REQUEST)
            rest = path[scheme_end + 3:]
            slash = rest.find("/")
            authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
            # userinfo (`user:pw@`) is not part of the host: Envoy takes the URL's host component only
            authority = authority[authority.rfind("@") + 1:]
            if not authority:
                raise _Reject(local_reply.BAD_REQUEST)
            headers.set("host", authority)
        redirect = None
        if not path.startswith("/") and path != "*" and not connect and not hcm.allow_absolute_url:
            redirect = local_reply.ABSOLUTE_PATH_REJECTED  # Envoy: 404, details absolute_path_rejected
        elif connect:
            # CONNECT (authority-form `host:port`) is matched only by routes with a connect_matcher, which pyproxy
            # does not implement: no route, as Envoy answers without one (404)
            redirect = local_reply.NO_ROUTE
        elif "#" in path:
            # a fragment is never sent on the wire (RFC 9110 §4.2.4); Envoy refuses the request (400
            # path_normalization_failed, then closes)
            redirect = local_reply.PATH_NORMALIZATION_FAILED
        elif hcm.path_policy is not None and path != "*":
            verdict, normalized = normalize_path(path, hcm.path_policy)
            if verdict is PathVerdict.REJECT:
                redirect = local_reply.PATH_NORMALIZATION_FAILED
            elif verdict is PathVerdict.REDIRECT:
                redirect = local_reply.PATH_REDIRECT
            path = normalized
        upgrade = None
        if not parser.should_upgrade():
            pass  # the common case: asked once
        elif (headers.get_first("upgrade") or "").strip().lower() == "h2c" and method != "CONNECT":
            # Envoy does not do the HTTP/2 cleartext upgrade: it drops the upgrade headers and serves the request
            # as HTTP/1.1 (curl --http2 http://... works). llhttp still stops after it: see data_received.
            headers.remove_names(frozenset({"upgrade", "http2-settings"}))
            self._h2c_ignored = True
        else:
            # an upgrade request ends this connection's HTTP/1: it becomes a tunnel, or closes after the answer
            upgrade = "CONNECT" if method == "CONNECT" else (headers.get_first("upgrade") or "")
            keep_alive = False
        stream = ActiveStream(self, hcm, method, path, version, headers, keep_alive)
        stream.upgrade = upgrade
        if redirect is not None:  # answered by the connection manager without routing (see above)
            stream.pending_error = redirect
            if redirect is local_reply.PATH_REDIRECT:
                hcm.stats_redirected_with_normalized_path.inc()
                stream.pending_headers = Headers([("location", path)])
            elif redirect is local_reply.PATH_NORMALIZATION_FAILED:
                hcm.stats_failed_path_normalization.inc()
                stream.keep_alive = False  # Envoy closes the connection after this 400 too
        stream.info.authority = headers.get_first("host") or ""
        if version == "1.1" and (headers.get_first("expect") or "").lower() == "100-continue":
            stream.expect_continue = True
        self._cur = stream
        self.streams.append(stream)
        if len(self.streams) == 1:
            stream.start()
        elif not self.paused_for_pipeline and self.transport is not None:
            self.paused_for_pipeline = True
            self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        cur = self._cur
        if cur is not None:
            cur.on_body(body)

    def on_message_complete(self) -> None:
        cur = self._cur
        self._cur = None
        if cur is not None:
            cur.on_complete()
            if cur is self._early:
                self._early = None
                self._next_stream()

    # ------------------------------------------------------------ writing and stream lifecycle
    def stream_finished(self, stream: ActiveStream) -> None:
        if self.streams and self.streams[0] is stream:
            self.streams.popleft()
        if not stream.keep_alive:
            self.close()
            return
        if not stream.request_complete:
            # Answered before the request ended (a local reply to a GET is sent from on_headers_complete,
            # just before llhttp reports the message end). Decide once this read is parsed: if the request is
            # still incomplete then, close (Envoy cannot resync an HTTP/1 codec mid-body either). An answer
            # that came from the upstream, outside a read, closes at once.
            if self._in_feed:
                self._early = stream
            else:
                self.close()
            return
        self._next_stream()

    def _next_stream(self) -> None:
        if self.streams:
            nxt = self.streams[0]
            nxt.start()
            return
        if self.paused_for_pipeline and self.transport is not None:
            self.paused_for_pipeline = False
            self.transport.resume_reading()
        self._arm_idle_timer()

    def pause_reading_for_upstream(self) -> None:
        if not self.upstream_paused and self.transport is not None and not self.closed:
            self.upstream_paused = True
            self.transport.pause_reading()

    def resume_reading_for_upstream(self) -> None:
        if self.upstream_paused and self.transport is not None and not self.closed:
            self.upstream_paused = False
            if not self.paused_for_pipeline:
                self.transport.resume_reading()

    def _protocol_error(self, reply: LocalReply) -> None:
        """A codec-level error. The request it belongs to gets `reply` (400/431/426 ...) in its turn: the
        requests pipelined ahead of it are answered first. Nothing after the error is parsed, and the
        connection closes after that reply (Envoy cannot resync an HTTP/1 stream after a codec error)."""
        hcm = self._hcm or self.listener.current
        self._errored = True
        if self.transport is not None:
            self.transport.pause_reading()
        stream = self._cur
        self._cur = None
        if stream is None:  # the error came before a stream existed (request line or headers)
            stream = ActiveStream(self, hcm, "-", "-", "1.1", Headers(), False)
            stream.info.method = None
            stream.info.path = None
            self.streams.append(stream)
        stream.keep_alive = False
        stream.request_complete = True
        if stream.started:
            stream.send_local_reply(reply)  # resets instead when the response already began
        else:
            stream.pending_error = reply
            if self.streams and self.streams[0] is stream:
                stream.start()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush()
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    # ------------------------------------------------------------ timers
    def _arm_header_timer(self) -> None:
        hcm = self.listener.current
        timeout = hcm.request_headers_timeout
        if timeout and self.transport is not None:
            loop = asyncio.get_running_loop()
            self._header_timer = loop.call_later(timeout, self._on_header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self._in_headers or not self.streams:
            # Envoy closes the connection (no response) when request_headers_timeout fires
            self.listener.current.stats_header_timeout.inc()
            self.abort()

    def _arm_idle_timer(self) -> None:
        """HCM `idle_timeout` (default 1 h): close a connection with no stream for that long. One timer per
        connection that re-arms itself lazily, rather than a new timer per request."""
        timeout = self.listener.current.idle_timeout
        self._idle_since = self._loop.time()
        if timeout and not self.closed and self._idle_timer is None:
            self._idle_timer = self._loop.call_later(timeout, self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        self._idle_timer = None
        if self.closed:
            return
        timeout = self.listener.current.idle_timeout
        if self.streams or self._idle_since is None:
            return  # busy: re-armed when the connection goes idle again
        remaining = self._idle_since + timeout - self._loop.time()
        if remaining > 0:
            self._idle_timer = self._loop.call_later(remaining, self._on_idle_timer)
        else:
            self.close()

    def arm_route_timeout(self, router: Any, timeout: float) -> None:
        """Start `router`'s route timeout (Envoy: from the request's end). Saves ~1 us/request over a timer per
        request: one timer per connection, re-armed lazily when it fires before the deadline of the router it
        now serves (requests on a connection run one at a time, so there is one router to watch)."""
        loop = self._loop
        deadline = router.deadline = loop.time() + timeout
        self._timed = router
        if self._route_timer is not None and self._route_timer_at > deadline:
            self._route_timer.cancel()  # armed for later than this deadline (a longer timeout before)
            self._route_timer = None
        if self._route_timer is None:
            self._route_timer_at = deadline
            self._route_timer = loop.call_later(timeout, self._on_route_timer)

    def disarm_route_timeout(self, router: Any) -> None:
        """`router` is done: its deadline no longer counts (the timer, if pending, fires and finds nothing)."""
        if self._timed is router:
            self._timed = None

    def _on_route_timer(self) -> None:
        self._route_timer = None
        router = self._timed
        if router is None:  # (a router let go of its deadline first: disarm_route_timeout)
            return
        remaining = router.deadline - self._loop.time()
        if remaining > 0:
            self._route_timer_at = router.deadline
            self._route_timer = self._loop.call_later(remaining, self._on_route_timer)
        else:
            self._timed = None
            router.on_route_timeout()

    def _cancel_timers(self) -> None:
        self._cancel_header_timer()
        self._timed = None
        if self._route_timer is not None:
            self._route_timer.cancel()
            self._route_timer = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
