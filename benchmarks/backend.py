"""A tiny HTTP/1.1 origin for the benchmark: every request gets `200 hello world\\n`, keep-alive honoured.

uvloop + httptools (llhttp), one process, no framework. `run.py` uses it as the backend when nginx is not
available (nginx as origin is faster here: see benchmarks/README.md), and the unit tests use it as the
server the load generator talks to. It answers 200 to any method and path and keeps the connection open
unless the request says `Connection: close` (or is HTTP/1.0 without keep-alive).

    python benchmarks/backend.py --port 8080        # serves until SIGINT/SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import httptools

BODY = b"hello world\n"
_HEAD = b"HTTP/1.1 200 OK\r\nServer: pyproxy-bench-backend\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
RESPONSE_KEEPALIVE = _HEAD % len(BODY) + b"\r\n" + BODY
RESPONSE_CLOSE = _HEAD % len(BODY) + b"Connection: close\r\n\r\n" + BODY
RESPONSE_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class OriginProtocol(asyncio.Protocol):
    """One client connection: parse with llhttp, answer each complete request in order."""

    __slots__ = ("_transport", "_parser")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.write(RESPONSE_BAD_REQUEST)
            self._transport.close()

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._parser.should_keep_alive():
            transport.write(RESPONSE_KEEPALIVE)
        else:
            transport.write(RESPONSE_CLOSE)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def start(host: str = "127.0.0.1", port: int = 0) -> asyncio.base_events.Server:
    """Listen on host:port (0 = any free port; read it from `server.sockets[0].getsockname()`)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(OriginProtocol, host, port, backlog=1024, reuse_address=True)


async def _serve(host: str, port: int) -> None:
    server = await start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"backend listening on {host}:{server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        uvloop.run(_serve(args.host, args.port))
    else:
        asyncio.run(_serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
