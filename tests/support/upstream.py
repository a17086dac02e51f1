"""A controllable HTTP/1.1 origin for black-box tests of the proxy: it records what reaches it.

`TestUpstream` is a raw asyncio server on 127.0.0.1:0 that parses requests with httptools (llhttp) and
answers according to the request path, so a test says what the origin should do by where it sends the
request. It records every request (`requests`: method, path, headers in order, body sha256 + length) and
counts accepted connections (`connections`). Keep-alive unless the request asks for close.

Paths (query strings are ignored unless stated):
  /status/<code>        answer <code> (a 5-byte body, none for 1xx/204/304)
  /delay/<seconds>      answer 200 after <seconds>
  /fail-first/<seconds> the first request to this path (on this upstream) gets 503 after <seconds>, later ones
                        200 at once (a retried request whose first try was slow)
  /reset-before-headers close the connection without answering
  /close-mid-body       send headers with content-length 1000, then 100 bytes, then close
  /close-mid-chunked    send headers with transfer-encoding chunked, then one 100-byte chunk, then close
  /garbage              send `bad protocol data!` instead of a response
  /three-responses      send three responses to one request
  /no-cl-close          a body delimited by closing the connection (no content-length, no chunking)
  /204-with-body        `204` with content-length 512 and 512 bytes of body
  /304-with-cl          `304` with content-length 2 and no body
  /no-length            200 with neither content-length nor transfer-encoding (for HEAD: just headers)
  /upgrade-header       unsolicited `connection: upgrade` + `upgrade: h2`, body "Hello World"
  /hop-by-hop           response with keep-alive, proxy-connection, connection-named fields
  /set-cookies          two `set-cookie` fields
  /conn-close           200 with `connection: close`, then close
  /download/<n>         n bytes of `pattern()`; `?framing=chunked` (default) | `length` | `close`
  /echo                 stream the request body back, chunked, as it arrives
  /early-answer         200 "early" as soon as the request head arrives, before any body (keep-alive)
  /stall-read           stop reading the request body until `reading_allowed` is set, then answer 200
  /headers              the request's header lines as the body (`name: value\\n`)
  /interim-100          `100 Continue` first, then 200 "after interim"
  /trailers             a chunked body "trailed" followed by trailers `x-t1`, `x-t2`
  /cl-and-te            a response with both content-length and transfer-encoding (response smuggling)
  /dated                200 with `date: Sun, 06 Nov 1994 08:49:37 GMT`
  /reflect              request fields named `x-reflect-*` copied into the response, values unchanged
  anything else         200 "ok"
Every response carries `x-upstream: <name>`. HEAD requests get the headers a GET would, and no body.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import httptools

BLOCK = bytes(range(256)) * 256  # 64 KiB of the deterministic pattern


def pattern_chunks(total: int, chunk: int = len(BLOCK)):
    """The pattern's first `total` bytes as `chunk`-sized pieces (chunk a multiple of 256)."""
    assert chunk % 256 == 0
    piece = (BLOCK * (chunk // len(BLOCK) + 1))[:chunk]
    full, rest = divmod(total, chunk)
    for _ in range(full):
        yield piece
    if rest:
        yield piece[:rest]


def pattern(n: int) -> bytes:
    """The pattern's first `n` bytes: 00 01 .. ff 00 01 .."""
    return b"".join(pattern_chunks(n))


def pattern_sha256(total: int) -> str:
    h = hashlib.sha256()
    for c in pattern_chunks(total, 1024 * 1024):
        h.update(c)
    return h.hexdigest()


@dataclass
class RecordedRequest:
    method: str
    path: str
    version: str
    headers: list[tuple[str, str]]  # as received, in order (names lower-cased)
    connection_id: int
    body_length: int = 0
    body_sha256: str = ""
    complete: bool = False

    def header(self, name: str) -> str | None:
        """All values of `name` joined with ',' (None when absent)."""
        vals = self.header_values(name)
        return ",".join(vals) if vals else None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


def _response(status: int, headers: list[tuple[str, str]], body: bytes = b"", reason: str = "X") -> bytes:
    head = [f"HTTP/1.1 {status} {reason}\r\n"]
    head += [f"{k}: {v}\r\n" for k, v in headers]
    return "".join(head).encode("latin-1") + b"\r\n" + body


class _Conn(asyncio.Protocol):
    def __init__(self, upstream: "TestUpstream", cid: int):
        self.up = upstream
        self.cid = cid
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.cur: RecordedRequest | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._hash = hashlib.sha256()
        self._echo = False
        self._early = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._tasks: set[asyncio.Task] = set()
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport
        self.up._conns.add(self)
        if self.up.ssl is not None:
            sslobj = transport.get_extra_info("ssl_object")
            self.up.peer_certs.append(sslobj.getpeercert(binary_form=True) if sslobj is not None else None)
            self.up.sessions_reused.append(bool(sslobj.session_reused) if sslobj is not None else None)

    def connection_lost(self, exc):
        self.closed = True
        self._can_write.set()
        self.up._conns.discard(self)
        for t in self._tasks:
            t.cancel()

    def pause_writing(self):
        self._can_write.clear()
        if self._echo:
            self.transport.pause_reading()

    def resume_writing(self):
        self._can_write.set()
        if self._echo and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.up.parse_errors += 1
            self.write(_response(400, [("content-length", "0"), ("connection", "close")]))
            self.transport.close()

    # llhttp callbacks
    def on_message_begin(self):
        self._url = b""
        self._headers = []
        self._hash = hashlib.sha256()

    def on_url(self, url):
        self._url += url

    def on_header(self, name, value):
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self):
        req = RecordedRequest(self.parser.get_method().decode(), self._url.decode("latin-1"),
                              self.parser.get_http_version(), self._headers, self.cid)
        self.cur = req
        self.up.requests.append(req)
        self.up._arrived.set()
        self._echo = urlsplit(req.path).path == "/echo"
        if urlsplit(req.path).path == "/stall-read" and not self.up.reading_allowed.is_set():
            self.transport.pause_reading()
            t = asyncio.get_running_loop().create_task(self._resume_when_allowed())
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        if self._echo:
            self.write(_response(200, [("transfer-encoding", "chunked"), ("x-upstream", self.up.name)]))
        self._early = urlsplit(req.path).path == "/early-answer"
        if self._early:
            self.write(_response(200, [("content-length", "5"), ("x-upstream", self.up.name)], b"early"))

    async def _resume_when_allowed(self) -> None:
        await self.up.reading_allowed.wait()
        if not self.closed:
            self.transport.resume_reading()

    def on_body(self, body):
        self.cur.body_length += len(body)
        self._hash.update(body)
        if self._echo:
            self.write(b"%x\r\n%s\r\n" % (len(body), body))

    def on_message_complete(self):
        req = self.cur
        req.body_sha256 = self._hash.hexdigest()
        req.complete = True
        keep_alive = self.parser.should_keep_alive()
        if self._early:
            self._early = False
            return
        if self._echo:
            self.write(b"0\r\n\r\n")
            self._echo = False
            if not keep_alive:
                self.transport.close()
            return
        t = asyncio.get_running_loop().create_task(self._answer(req, keep_alive))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # writing
    def write(self, data: bytes) -> None:
        if not self.closed:
            self.up.bytes_sent += len(data)
            self.transport.write(data)

    async def _answer(self, req: RecordedRequest, keep_alive: bool) -> None:
        handler = self.up.handler or default_handler
        close = await handler(self, req)
        if (close or not keep_alive) and not self.closed:
            self.transport.close()

    async def drain(self) -> None:
        await self._can_write.wait()


async def default_handler(conn: _Conn, req: RecordedRequest) -> bool:
    """Answer `req` on `conn` by its path (see the module docstring). Returns True to close afterwards."""
    u = urlsplit(req.path)
    parts = u.path.strip("/").split("/")
    query = parse_qs(u.query)
    head = req.method == "HEAD"
    name = conn.up.name
    tag = ("x-upstream", name)

    def simple(status: int, body: bytes, extra: list[tuple[str, str]] = ()) -> None:
        hdrs = [tag, *extra]
        if status not in (204, 304) and status >= 200:
            hdrs.append(("content-length", str(len(body))))
        conn.write(_response(status, hdrs, b"" if head or status in (204, 304) else body))

    first = parts[0]
    if first == "status":
        code = int(parts[1])
        simple(code, b"x" * 5 if code not in (204, 304) else b"")
    elif first == "delay":
        await asyncio.sleep(float(parts[1]))  # the delay the test asked for (/delay/<s>)
        simple(200, b"delayed")
    elif first == "fail-first":
        conn.up.fail_first_seen[u.path] += 1
        if conn.up.fail_first_seen[u.path] == 1:
            await asyncio.sleep(float(parts[1]))
            simple(503, b"first")
        else:
            simple(200, b"again")
    elif first == "reset-before-headers":
        return True
    elif first == "close-mid-body":
        conn.write(_response(200, [tag, ("content-length", "1000")], b"a" * 100))
        return True
    elif first == "close-mid-chunked":
        conn.write(_response(200, [tag, ("transfer-encoding", "chunked")], b"64\r\n" + b"a" * 100 + b"\r\n"))
        return True
    elif first == "garbage":
        conn.write(b"bad protocol data!\r\n\r\n")
    elif first == "three-responses":
        one = _response(200, [tag, ("content-length", "5")], b"first")
        conn.write(one + _response(200, [("content-length", "6")], b"second")
                   + _response(200, [("content-length", "5")], b"third"))
    elif first == "no-cl-close":
        conn.write(_response(200, [tag], b"" if head else b"body until close"))
        return True
    elif first == "204-with-body":
        conn.write(_response(204, [tag, ("content-length", "512")], b"b" * 512))
    elif first == "304-with-cl":
        conn.write(_response(304, [tag, ("content-length", "2")]))
    elif first == "no-length":
        conn.write(_response(200, [tag]))
        if not head:
            conn.write(b"no length")
            return True
    elif first == "upgrade-header":
        simple(200, b"Hello World", [("connection", "upgrade"), ("upgrade", "h2")])
    elif first == "hop-by-hop":
        simple(200, b"hop", [("connection", "x-private, keep-alive"), ("keep-alive", "timeout=5"),
                             ("x-private", "secret"), ("proxy-connection", "keep-alive"), ("x-kept", "yes")])
    elif first == "set-cookies":
        simple(200, b"cookies", [("set-cookie", "foo=1"), ("set-cookie", "bar=2")])
    elif first == "conn-close":
        simple(200, b"closing", [("connection", "close")])
        return True
    elif first == "download":
        n = int(parts[1])
        framing = query.get("framing", ["chunked"])[0]
        hdrs = [tag]
        if framing == "length":
            hdrs.append(("content-length", str(n)))
        elif framing == "chunked":
            hdrs.append(("transfer-encoding", "chunked"))
        conn.write(_response(200, hdrs))
        if head:
            return framing == "close"
        for piece in pattern_chunks(n):
            await conn.drain()
            if conn.closed:
                return True
            conn.write(b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece)
        if framing == "chunked":
            conn.write(b"0\r\n\r\n")
        return framing == "close"
    elif first == "interim-100":
        conn.write(_response(100, [], reason="Continue"))
        simple(200, b"after interim")
    elif first == "trailers":
        conn.write(_response(200, [tag, ("transfer-encoding", "chunked"), ("trailer", "x-t1, x-t2")]))
        if not head:
            conn.write(b"7\r\ntrailed\r\n0\r\nx-t1: a\r\nx-t2: b\r\n\r\n")
    elif first == "cl-and-te":
        conn.write(_response(200, [tag, ("content-length", "5"), ("transfer-encoding", "chunked")],
                             b"5\r\nhello\r\n0\r\n\r\n"))
    elif first == "dated":
        simple(200, b"dated", [("date", "Sun, 06 Nov 1994 08:49:37 GMT")])
    elif first == "reflect":
        simple(200, b"reflected", [(k, v) for k, v in req.headers if k.startswith("x-reflect-")])
    elif first == "headers":
        simple(200, "".join(f"{k}: {v}\n" for k, v in req.headers).encode("latin-1"))
    else:
        simple(200, b"ok")
    return False


Handler = Callable[[_Conn, RecordedRequest], "asyncio.Future[bool]"]


@dataclass
class TestUpstream:
    """An origin server under the test's control. `await start()`, use `.port`, `await close()`."""

    __test__ = False  # not a pytest test class

    name: str = "upstream"
    handler: Handler | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    connections: int = 0
    parse_errors: int = 0
    bytes_sent: int = 0  # everything written to the proxy, all connections
    reading_allowed: asyncio.Event = field(default_factory=asyncio.Event)  # gates /stall-read
    port: int = 0
    ssl: Any = None  # an ssl.SSLContext: serve HTTPS (each connection's peer cert lands in `peer_certs`)
    peer_certs: list = field(default_factory=list)
    sessions_reused: list = field(default_factory=list)  # per TLS connection: did the client resume a session
    fail_first_seen: collections.Counter = field(default_factory=collections.Counter)  # /fail-first/ per path
    _server: asyncio.base_events.Server | None = None
    _conns: set = field(default_factory=set)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count = field(default_factory=itertools.count)

    async def start(self) -> "TestUpstream":
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _accept(self) -> _Conn:
        self.connections += 1
        return _Conn(self, next(self._ids))

    async def wait_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least `n` requests arrived (headers parsed); return them."""
        async def until() -> None:
            while len(self.requests) < n:
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(until(), timeout)
        return self.requests

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for c in list(self._conns):
                c.transport.abort()
            await self._server.wait_closed()
            self._server = None
