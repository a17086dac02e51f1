"""A raw HTTP/1.1 client for black-box tests: exact bytes out, one carefully framed response in.

Tests of a proxy's edge need to send what a normal client never would (smuggling shapes, bad versions,
half requests), and to see exactly what came back: the status line, every header field in order, the
framing used (chunked or not), and whether the proxy closed the connection. `RawClient` does that over
an asyncio stream. Reading follows RFC 9112 §6.3 message framing: no body for HEAD, 1xx, 204 and 304;
chunked when the last transfer coding is chunked; else `content-length`; else until the peer closes.
Every read has a timeout, so a proxy that hangs makes the test fail instead of hang.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

DEFAULT_TIMEOUT = 5.0
READ_LIMIT = 4 * 1024 * 1024  # longest head line / chunk-size line we accept


class PeerClosed(Exception):
    """The proxy closed (or reset) the connection before a whole response arrived."""

    def __init__(self, partial: bytes = b""):
        super().__init__(f"connection closed by peer after {len(partial)} bytes: {partial[:200]!r}")
        self.partial = partial


@dataclass
class Response:
    version: str  # "HTTP/1.1"
    status: int
    reason: str
    headers: list[tuple[str, str]]  # names lower-cased, in order; values without surrounding whitespace
    body: bytes = b""
    chunked: bool = False  # the body came chunked on the wire
    body_length: int = 0  # counts bytes also when a body_sink took them
    trailers: list[tuple[str, str]] = field(default_factory=list)
    interim: list["Response"] = field(default_factory=list)  # 1xx responses received before this one

    def header(self, name: str) -> str | None:
        vals = self.header_values(name)
        return ",".join(vals) if vals else None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def has(self, name: str) -> bool:
        return any(k == name.lower() for k, _ in self.headers)


def request_bytes(method: str = "GET", path: str = "/", headers: Iterable[tuple[str, str]] | None = None,
                  body: bytes = b"", *, host: str | None = "example.com", version: str = "HTTP/1.1") -> bytes:
    """A well-formed request; `content-length` is added for a body unless the headers frame it."""
    hdrs = list(headers or [])
    names = {k.lower() for k, _ in hdrs}
    if host is not None and "host" not in names:
        hdrs.insert(0, ("Host", host))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    return head.encode("latin-1") + body


def chunked(pieces: Iterable[bytes], trailers: Iterable[tuple[str, str]] = ()) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers).encode("latin-1") + b"\r\n"


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT, *,
                      ssl: Any = None, server_hostname: str | None = None) -> "RawClient":
        """A TCP connection, or a TLS one with `ssl` (an ssl.SSLContext; SNI = `server_hostname`)."""
        extra = {"ssl": ssl, "server_hostname": server_hostname or (host if ssl is not None else None)}
        if ssl is None:
            extra = {}
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=READ_LIMIT, **extra),
                                                timeout)
        return cls(reader, writer)

    async def send(self, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), timeout)

    async def request(self, method: str = "GET", path: str = "/", headers=None, body: bytes = b"", *,
                      host: str | None = "example.com", timeout: float = DEFAULT_TIMEOUT) -> Response:
        await self.send(request_bytes(method, path, headers, body, host=host), timeout)
        return await self.read_response(method=method, timeout=timeout)

    async def read_response(self, *, method: str = "GET", timeout: float = DEFAULT_TIMEOUT,
                            body_sink: Callable[[bytes], None] | None = None,
                            interim: bool = False) -> Response:
        """Read one response. 1xx responses are collected in `.interim` unless `interim=True` returns them.
        With `body_sink` the body is handed over piece by piece instead of kept in `.body`."""
        return await asyncio.wait_for(self._read_response(method, body_sink, interim), timeout)

    async def _read_response(self, method, body_sink, interim) -> Response:
        early: list[Response] = []
        while True:
            resp = await self._read_head()
            if 100 <= resp.status < 200 and resp.status != 101:
                if interim:
                    return resp
                early.append(resp)
                continue
            break
        resp.interim = early
        await self._read_body(resp, method, body_sink)
        return resp

    async def _read_head(self) -> Response:
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            raise PeerClosed(e.partial) from None
        except ConnectionResetError:
            raise PeerClosed() from None
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise AssertionError(f"not an HTTP status line: {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise AssertionError(f"malformed response header line {line!r}")
            headers.append((name.lower(), value.strip(" \t")))
        return Response(version, int(code), reason, headers)

    async def _read_body(self, resp: Response, method: str, sink) -> None:
        parts: list[bytes] = []
        take = sink if sink is not None else parts.append

        def got(data: bytes) -> None:
            resp.body_length += len(data)
            take(data)

        if method == "HEAD" or resp.status in (204, 304) or resp.status < 200:
            return
        te = resp.header("transfer-encoding")
        try:
            if te is not None and te.rstrip().lower().endswith("chunked"):
                resp.chunked = True
                await self._read_chunked(resp, got)
            elif resp.has("content-length"):
                await self._read_exact(int(resp.header_values("content-length")[0]), got)
            else:
                while data := await self.reader.read(1 << 20):
                    got(data)
        except asyncio.IncompleteReadError as e:
            raise PeerClosed(b"".join(parts) + e.partial) from None
        except ConnectionResetError:
            raise PeerClosed(b"".join(parts)) from None
        resp.body = b"".join(parts)

    async def _read_exact(self, n: int, got) -> None:
        while n > 0:
            data = await self.reader.read(min(n, 1 << 20))
            if not data:
                raise asyncio.IncompleteReadError(b"", n)
            n -= len(data)
            got(data)

    async def _read_chunked(self, resp: Response, got) -> None:
        while True:
            line = await self.reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while (t := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    name, _, value = t[:-2].decode("latin-1").partition(":")
                    resp.trailers.append((name.lower(), value.strip()))
                return
            await self._read_exact(size, got)
            if await self.reader.readexactly(2) != b"\r\n":
                raise AssertionError("chunk not followed by CRLF")

    async def read_until_close(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Everything the peer sends until it closes (EOF or reset)."""
        async def drain() -> bytes:
            out = []
            try:
                while data := await self.reader.read(1 << 16):
                    out.append(data)
            except ConnectionResetError:
                pass
            return b"".join(out)
        return await asyncio.wait_for(drain(), timeout)

    async def assert_closed(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """The peer closes the connection within `timeout`, sending nothing more."""
        rest = await self.read_until_close(timeout)
        assert rest == b"", f"expected the connection to close, got more bytes: {rest[:200]!r}"

    async def assert_open(self, wait: float = 0.2) -> None:
        """Nothing arrives and the connection is not closed within `wait` seconds."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), wait)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"expected an idle open connection, got {data!r}")

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()

    async def aclose(self) -> None:
        self.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (OSError, asyncio.TimeoutError):
            pass

    async def __aenter__(self) -> "RawClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


async def fetch(port: int, method: str = "GET", path: str = "/", headers=None, body: bytes = b"", *,
                host: str | None = "example.com", timeout: float = DEFAULT_TIMEOUT) -> Response:
    """One request on a new connection."""
    async with await RawClient.connect(port) as c:
        return await c.request(method, path, headers, body, host=host, timeout=timeout)
