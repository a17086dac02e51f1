"""The admin port's HTTP/1.1 server: asyncio and httptools (the parser the proxy's data path uses), no web
framework. Why not aiohttp: importing it adds 9.5 MiB to a sidecar's RSS (measured; docs/performance.md,
Memory), and the admin port needs little of it: GET/POST routed by exact path, a query string, whole responses and one
streamed (chunked) response, `/tap`.

    app = App()
    app.add_get("/ready", handler)           # async handler(Request) -> Response | StreamResponse
    runner, port = await serve(app, "127.0.0.1", 0, middleware=guard)
    await runner.cleanup()                    # on_shutdown callbacks, stop listening, close connections

What it does as aiohttp did for the admin: keep-alive and pipelined requests answered in order; `HEAD` for every
GET route (headers only); 404 `404: Not Found` for an unknown path, 405 `405: Method Not Allowed` (with
`Allow`) for a known path and another method; a handler's exception is a 500 and logged; a body over 1 MiB is
413; `text/plain; charset=utf-8` and `application/json; charset=utf-8` content types. A request the parser
refuses gets 400 and the connection is closed.
"""
from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, unquote

import httptools

log = logging.getLogger("pyproxy.admin")

MAX_BODY = 1 << 20  # aiohttp's client_max_size default: the admin port takes no uploads
MAX_HEAD = 64 * 1024  # request line and headers
SHUTDOWN_GRACE = 1.0  # seconds cleanup() lets handlers still running (a tap ending) finish before closing


class Headers(dict):
    """Request headers by lower-case name, looked up in any case (the first of repeated headers)."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)


class Request:
    """One parsed request. `query` holds each parameter's first value (a bare `?usedonly` is ""); `headers`
    are keyed by lower-case name; `transport` is None once the client has gone."""

    def __init__(self, method: str, target: str, headers: Headers, body: bytes, conn: "_Connection"):
        self.method = method
        self.path_qs = target
        raw_path, _, qs = target.partition("?")
        self.path = unquote(raw_path)
        self.query: dict[str, str] = {}
        for key, value in parse_qsl(qs, keep_blank_values=True):
            self.query.setdefault(key, value)
        self.headers = headers
        self.body = body
        self._conn = conn

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._conn.transport


class Response:
    """A whole response. `text` is sent as UTF-8 with `; charset=utf-8` on the content type."""

    def __init__(self, *, status: int = 200, text: str | None = None, body: bytes = b"",
                 content_type: str = "text/plain", headers: dict[str, str] | None = None):
        self.status = status
        self.body = text.encode("utf-8") if text is not None else body
        self.content_type = f"{content_type}; charset=utf-8" if text is not None else content_type
        self.headers = headers or {}


def json_response(data: Any, *, status: int = 200, dumps: Callable[[Any], str] = json.dumps) -> Response:
    return Response(status=status, text=dumps(data), content_type="application/json")


class StreamResponse:
    """A response written as it is made (chunked): `await resp.prepare(req)`, then `await resp.write(data)`
    (waits while the client reads slowly; ConnectionResetError once it has gone)."""

    def __init__(self, *, status: int = 200, headers: dict[str, str] | None = None):
        self.status = status
        self.headers = headers or {}
        self._conn: _Connection | None = None

    async def prepare(self, req: Request) -> None:
        self._conn = req._conn
        self._conn.streaming = True
        self._conn.write_head(self.status, {**self.headers, "Transfer-Encoding": "chunked"}, keep_alive=False)

    async def write(self, data: bytes) -> None:
        assert self._conn is not None, "prepare() first"
        if data:
            await self._conn.write_body(b"%x\r\n%s\r\n" % (len(data), data))

    async def finish(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.write(b"0\r\n\r\n")


Handler = Callable[[Request], Awaitable["Response | StreamResponse"]]
Middleware = Callable[[Request, Handler], Awaitable["Response | StreamResponse"]]


class App:
    """Routes (exact path and method), app-wide values (`app[key]`) and shutdown callbacks. `fallback`
    answers every path no route names (the multi-worker supervisor forwards those)."""

    def __init__(self, fallback: Handler | None = None):
        self.routes: dict[str, dict[str, Handler]] = {}
        self.fallback = fallback
        self.on_shutdown: list[Callable[["App"], Awaitable[None]]] = []
        self._values: dict[str, Any] = {}

    def add_get(self, path: str, handler: Handler) -> None:
        self.routes.setdefault(path, {}).update({"GET": handler, "HEAD": handler})

    def add_post(self, path: str, handler: Handler) -> None:
        self.routes.setdefault(path, {})["POST"] = handler

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._values[key] = value

    def handler_for(self, method: str, path: str) -> Handler:
        methods = self.routes.get(path)
        if methods is None:
            if self.fallback is not None:
                return self.fallback
            return _fixed(404, "404: Not Found")
        handler = methods.get(method)
        if handler is None:
            return _fixed(405, "405: Method Not Allowed", {"Allow": ",".join(sorted(methods))})
        return handler


def _fixed(status: int, text: str, headers: dict[str, str] | None = None) -> Handler:
    async def answer(_: Request) -> Response:
        return Response(status=status, text=text, headers=headers)
    return answer


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue, answer in order, keep alive while the client wants."""

    def __init__(self, server: "Runner"):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.requests: asyncio.Queue[Request | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self._url = b""
        self._headers = Headers()
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_len = 0
        self._refusal: tuple[int, str] | None = None
        self._writable: asyncio.Future | None = None
        self.streaming = False  # a StreamResponse is being written

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "400: Bad Request (upgrade not supported)")
        except httptools.HttpParserError as err:
            self._refuse(400, f"400: Bad Request ({err})")

    def eof_received(self) -> bool:
        """The client finished sending: answer what it asked, then close (the write side stays open). A client
        that stops reading a stream (`/tap`) has gone: the connection closes now."""
        self.requests.put_nowait(None)
        return not self.streaming

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.connections.discard(self)
        self.requests.put_nowait(None)
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("admin client closed the connection"))

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._header_bytes, self._body, self._body_len = b"", Headers(), 0, [], 0
        self._refusal = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        key = name.decode("latin-1").lower()
        self._headers.setdefault(key, value.decode("latin-1"))

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        if self._body_len > MAX_BODY:
            self._refusal = (413, f"413: Request Entity Too Large (over {MAX_BODY} bytes)")
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("ascii", "replace")
        req = Request(method, self._url.decode("latin-1"), self._headers, b"".join(self._body), self)
        req.keep_alive = self.parser.should_keep_alive() and self._refusal is None  # type: ignore[attr-defined]
        req.refusal = self._refusal  # type: ignore[attr-defined]
        self.requests.put_nowait(req)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEAD:
            raise httptools.HttpParserError(f"request head over {MAX_HEAD} bytes")

    def _refuse(self, status: int, text: str) -> None:
        if self.transport is not None:
            self.write_head(status, {"Content-Type": "text/plain; charset=utf-8"}, keep_alive=False,
                            length=len(text) + 1)
            self.transport.write(text.encode() + b"\n")
            self.transport.close()

    # -- answering
    def write_head(self, status: int, headers: dict[str, str], *, keep_alive: bool, length: int | None = None) -> None:
        if self.transport is None:
            raise ConnectionResetError("admin client closed the connection")
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def write_body(self, data: bytes) -> None:
        if self.transport is None:
            raise ConnectionResetError("admin client closed the connection")
        self.transport.write(data)
        if self._writable is not None and not self._writable.done():
            await self._writable

    async def _serve(self) -> None:
        while True:
            req = await self.requests.get()
            if req is None or self.transport is None:
                if self.transport is not None:
                    self.transport.close()
                return
            keep_alive = req.keep_alive  # type: ignore[attr-defined]
            try:
                if req.refusal is not None:  # type: ignore[attr-defined]
                    status, text = req.refusal  # type: ignore[attr-defined]
                    resp: Response | StreamResponse = Response(status=status, text=text)
                else:
                    resp = await self.server.dispatch(req)
            except asyncio.CancelledError:
                raise
            except ConnectionError:
                return
            except Exception:  # a handler's bug: a 500, as aiohttp answers, and the traceback in the log
                log.exception("admin %s %s failed", req.method, req.path)
                resp = Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
            if self.transport is None:
                return
            if isinstance(resp, StreamResponse):
                if resp._conn is None:  # a handler that never started its stream
                    await resp.prepare(req)
                await resp.finish()
                self.transport.close()
                return
            headers = {"Content-Type": resp.content_type, **resp.headers}
            self.write_head(resp.status, headers, keep_alive=keep_alive, length=len(resp.body))
            if req.method != "HEAD":
                self.transport.write(resp.body)
            if not keep_alive:
                self.transport.close()
                return


class Runner:
    """A serving admin app: `cleanup()` runs the app's on_shutdown callbacks, stops listening, lets running
    handlers end (up to SHUTDOWN_GRACE) and closes every connection."""

    def __init__(self, app: App, middleware: Middleware | None):
        self.app = app
        self.middleware = middleware
        self.connections: set[_Connection] = set()
        self.server: asyncio.AbstractServer | None = None

    async def dispatch(self, req: Request) -> Response | StreamResponse:
        handler = self.app.handler_for(req.method, req.path)
        if self.middleware is not None:
            return await self.middleware(req, handler)
        return await handler(req)

    async def cleanup(self) -> None:
        for callback in self.app.on_shutdown:
            await callback(self.app)
        if self.server is not None:
            self.server.close()
        tasks = [c.task for c in self.connections if c.task is not None and not c.task.done()]
        for c in list(self.connections):
            c.requests.put_nowait(None)  # idle keep-alive connections end now
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        if self.server is not None:
            await self.server.wait_closed()


async def serve(app: App, host: str, port: int, *, middleware: Middleware | None = None) -> tuple[Runner, int]:
    """Listen on host:port (0: any free port); (runner, the bound port). OSError when it cannot bind."""
    runner = Runner(app, middleware)
    loop = asyncio.get_running_loop()
    runner.server = await loop.create_server(lambda: _Connection(runner), host, port, reuse_address=True)
    return runner, runner.server.sockets[0].getsockname()[1]
