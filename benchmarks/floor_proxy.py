"""The floor: the least a Python HTTP/1.1 proxy on uvloop + httptools can do per request. Not part of pyproxy.

    python benchmarks/floor_proxy.py --port 8000 --backend-port 8080

One upstream, one upstream connection per client connection (opened at accept, kept alive), requests
forwarded as parsed (method, URL, headers) with a Content-Length body buffered whole, responses forwarded the
same way: no routing, no filters, no timeouts, no retries, no stats, no pooling across clients, no streaming,
no chunked request bodies. `make bench` runs it beside pyproxy and nginx so every run shows pyproxy / floor:
how much of pyproxy's cost per request is its features, and how much is the event loop, the parser and the
syscalls that any Python proxy pays.
"""
from __future__ import annotations

import argparse
import asyncio

import httptools

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


class _Upstream(asyncio.Protocol):
    """The upstream side of one client connection: parses responses, hands each one back whole."""

    def __init__(self, client: "_Client"):
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.head: list[bytes] = []
        self.body: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.parser.feed_data(data)

    def connection_lost(self, exc):
        self.client.transport.close()

    def on_message_begin(self):
        self.head = []
        self.body = []

    def on_header(self, name, value):
        self.head.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        status = self.parser.get_status_code()
        body = b"".join(self.body)
        headers = b"".join(h for h in self.head if not h.lower().startswith((b"transfer-encoding", b"content-length")))
        self.client.transport.write(b"HTTP/1.1 %d OK\r\n%scontent-length: %d\r\n\r\n%s"
                                    % (status, headers, len(body), body))


class _Client(asyncio.Protocol):
    def __init__(self, backend: tuple[str, int]):
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.head: list[bytes] = []
        self.body: list[bytes] = []
        self.pending: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport
        loop = asyncio.get_running_loop()
        loop.create_task(self._connect(loop))

    async def _connect(self, loop):
        _, self.upstream = await loop.create_connection(lambda: _Upstream(self), *self.backend)
        for request in self.pending:
            self.upstream.transport.write(request)
        self.pending = []

    def data_received(self, data):
        self.parser.feed_data(data)

    def connection_lost(self, exc):
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def on_message_begin(self):
        self.url = b""
        self.head = []
        self.body = []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        if not name.lower().startswith((b"connection", b"content-length")):
            self.head.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        body = b"".join(self.body)
        request = b"%s %s HTTP/1.1\r\n%scontent-length: %d\r\n\r\n%s" % (
            self.parser.get_method(), self.url, b"".join(self.head), len(body), body)
        if self.upstream is None or self.upstream.transport is None:
            self.pending.append(request)
        else:
            self.upstream.transport.write(request)


async def serve(port: int, backend_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(("127.0.0.1", backend_port)), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="floor_proxy", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend-port", type=int, required=True)
    args = ap.parse_args(argv)
    if uvloop is not None:
        uvloop.install()
    try:
        asyncio.run(serve(args.port, args.backend_port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
