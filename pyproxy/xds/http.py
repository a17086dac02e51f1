"""The HTTP/1.1 client the xDS REST subscription posts with: asyncio and httptools (the parser the proxy's data
path uses). Why not aiohttp: importing it adds 9.5 MiB to a sidecar's RSS (measured; docs/performance.md, Memory),
and this needs one thing: POST a JSON body, read the whole answer (Content-Length or chunked), over plain TCP
or TLS with the caller's context, keeping idle connections for the next request.

* Connecting (TCP, and the TLS handshake) is bounded by `connect_timeout` (5 s); reading the answer is not: a
  long poll is held by the control plane up to its `?wait=` (30 s).
* Every failure is an `HttpError` (an OSError) whose message names the URL (or host:port): refused or timed
  out connections, a failed handshake, a connection closed mid-answer, a response the parser refuses.
* A request that is cancelled (the xDS loop kicked it) closes its connection; only a connection whose answer
  was read to the end and that the server keeps alive goes back to the idle pool. Idle connections made with
  another TLS context (a new workload certificate) are closed rather than reused.
"""
from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httptools

MAX_IDLE = 8  # idle connections kept (the xDS client has four long polls at a time)


class HttpError(OSError):
    """The server could not be reached or did not answer HTTP: one line naming it."""


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case; `application/octet-stream` when absent (RFC 9110)."""
        value = self.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        return value or "application/octet-stream"

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.body)


class _Connection(asyncio.Protocol):
    def __init__(self, where: str):
        self.where = where
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reply: Reply | None = None
        self.answer: asyncio.Future[Reply] | None = None
        self.keep_alive = False
        self._body: list[bytes] = []

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and self.answer is None

    def start(self) -> asyncio.Future[Reply]:
        self.reply, self._body = Reply(0, ""), []
        self.answer = asyncio.get_running_loop().create_future()
        return self.answer

    def _fail(self, message: str) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(HttpError(f"{self.where}: {message}"))
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # nothing asked: a server talking out of turn
            self._fail("data from the server with no request outstanding")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(f"not an HTTP/1.1 response ({err})")

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        r = self.reply
        if exc is None and r is not None and r.status and self.answer is not None and not self.answer.done() \
                and "content-length" not in r.headers and "transfer-encoding" not in r.headers:
            r.body = b"".join(self._body)  # a body delimited by the end of the connection (RFC 9112 6.3)
            self.answer.set_result(r)
            return
        reason = f"connection closed before the response ended ({exc})" if exc else \
            "connection closed before the response ended"
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(HttpError(f"{self.where}: {reason}"))

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        assert self.reply is not None
        self.reply.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.reply is not None
        self.reply.headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        assert self.reply is not None
        self.reply.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self.reply is not None and self.answer is not None
        self.reply.body = b"".join(self._body)
        self.keep_alive = self.parser.should_keep_alive()
        if not self.answer.done():
            self.answer.set_result(self.reply)


class HttpClient:
    """POST JSON and read the answer; `await close()` when done."""

    def __init__(self, *, connect_timeout: float = 5.0):
        self.connect_timeout = connect_timeout
        self._idle: list[tuple[tuple, _Connection]] = []

    async def post_json(self, url: str, body: Any, *, params: dict[str, str] | None = None,
                        headers: dict[str, str] | None = None, ssl_context: ssl.SSLContext | None = None) -> Reply:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"{url}: not an http:// or https:// URL")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        payload = json.dumps(body).encode("utf-8")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        head = [f"POST {target} HTTP/1.1", f"Host: {host_header}", "Accept: */*",
                "Content-Type: application/json", f"Content-Length: {len(payload)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload
        if tls and ssl_context is None:
            ssl_context = ssl.create_default_context()
        key = (parts.hostname, port, id(ssl_context) if tls else None)
        conn = self._take_idle(key) or await self._connect(parts.hostname, port, ssl_context if tls else None, url)
        answer = conn.start()
        complete = False
        try:
            if conn.transport is None:  # closed by the server between connecting and this write
                raise HttpError(f"{conn.where}: connection closed before the request was sent")
            conn.transport.write(request)
            reply = await answer
            complete = True
        finally:
            conn.answer = None
            if complete and conn.keep_alive and conn.usable and len(self._idle) < MAX_IDLE:
                self._idle.append((key, conn))
            elif conn.transport is not None:
                conn.transport.close()  # cancelled or failed mid-request: this connection's state is unknown
        return reply

    def _take_idle(self, key: tuple) -> _Connection | None:
        found = None
        keep = []
        for k, conn in self._idle:
            if found is None and k == key and conn.usable:
                found = conn
            elif k[:2] == key[:2] and k != key and conn.transport is not None:
                conn.transport.close()  # made with a context no longer in use
            elif conn.usable:
                keep.append((k, conn))
        self._idle = keep
        return found

    async def _connect(self, host: str, port: int, context: ssl.SSLContext | None, url: str) -> _Connection:
        loop = asyncio.get_running_loop()
        where = url.split("?", 1)[0]
        try:
            async with asyncio.timeout(self.connect_timeout):  # not wait_for: pyproxy/runtime/waits.py
                _t, conn = await loop.create_connection(lambda: _Connection(where), host, port, ssl=context,
                                                        server_hostname=host if context is not None else None)
        except asyncio.TimeoutError:
            raise HttpError(f"{where}: cannot connect to {host}:{port} in {self.connect_timeout:g}s") from None
        except OSError as err:  # refused, unreachable, TLS handshake (ssl.SSLError is an OSError)
            raise HttpError(f"{where}: cannot connect to {host}:{port}: {err}") from None
        return conn

    async def close(self) -> None:
        for _key, conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle = []
