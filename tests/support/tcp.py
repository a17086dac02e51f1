"""TCP test servers and tcp_proxy config pieces.

`EchoServer`: echoes every byte back; when the client half-closes (FIN) it answers `<name>:bye:<bytes received>`
and closes, so a client that half-closed and still reads that line proves the FIN went through the proxy while
the other direction kept flowing. Optional TLS (`ssl=server_ctx(...)`): each connection records the SNI it was
asked for and the client certificate it got. `hold()` stops reading (back-pressure), `release()` resumes.
"""
from __future__ import annotations

import asyncio
import socket
import ssl as ssl_mod
from typing import Any

from .proxy import FILE_LOG_TYPE, socket_address

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


class EchoConn(asyncio.Protocol):
    def __init__(self, server: "EchoServer"):
        self.server = server
        self.received = 0
        self.eof = False
        self.sni: str | None = None
        self.peer_cert: bytes | None = None
        self.transport: Any = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.server.conns.append(self)
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.peer_cert = sslobj.getpeercert(binary_form=True)
            self.sni = self.server.last_sni
        if self.server.held:
            transport.pause_reading()
            # uvloop starts reading an accepted transport after connection_made whatever it asked (CPython
            # gh-103607's bug, still in uvloop 0.23): hold again once it has
            asyncio.get_running_loop().call_soon(self._hold_again)
        self.server.accepted.set()

    def _hold_again(self) -> None:
        if self.server.held and not self.transport.is_closing() and self.transport.is_reading():
            self.transport.pause_reading()

    def data_received(self, data):
        self.received += len(data)
        if self.server.echo:
            self.transport.write(data)

    def eof_received(self):
        self.eof = True
        self.transport.write(f"{self.server.name}:bye:{self.received}".encode())
        self.transport.close()
        return True

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)


class EchoServer:
    def __init__(self, name: str = "echo", *, ssl: ssl_mod.SSLContext | None = None, echo: bool = True):
        self.name = name
        self.ssl = ssl
        self.echo = echo
        self.conns: list[EchoConn] = []
        self.held = False
        self.last_sni: str | None = None
        self.accepted = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> "EchoServer":
        if self.ssl is not None:
            def remember(sslobj, name, ctx):
                self.last_sni = name
            self.ssl.sni_callback = remember
        self.server = await asyncio.get_running_loop().create_server(
            lambda: EchoConn(self), "127.0.0.1", port, ssl=self.ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def hold(self) -> None:
        self.held = True
        for c in self.conns:
            c.transport.pause_reading()

    def release(self) -> None:
        self.held = False
        for c in self.conns:
            c.transport.resume_reading()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in self.conns:
            c.transport.abort()


def tcp_proxy(cluster: str | dict[str, int], *, stat_prefix: str = "tcp", access_log: Any = None,
              **extra: Any) -> dict:
    """The tcp_proxy network filter: one cluster, or {name: weight} for weighted_clusters."""
    cfg: dict[str, Any] = {"@type": TCP_PROXY, "stat_prefix": stat_prefix}
    if isinstance(cluster, str):
        cfg["cluster"] = cluster
    else:
        cfg["weighted_clusters"] = {"clusters": [{"name": n, "weight": w} for n, w in cluster.items()]}
    if access_log is not None:
        cfg["access_log"] = [{"name": "envoy.access_loggers.file",
                              "typed_config": {"@type": FILE_LOG_TYPE, "path": str(access_log),
                                               "log_format": {"json_format": TCP_LOG}}}]
    cfg.update(extra)
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": cfg}


TCP_LOG = {"flags": "%RESPONSE_FLAGS%", "rx": "%BYTES_RECEIVED%", "tx": "%BYTES_SENT%",
           "host": "%UPSTREAM_HOST%", "cluster": "%UPSTREAM_CLUSTER%", "sni": "%REQUESTED_SERVER_NAME%",
           "code": "%RESPONSE_CODE%"}


def tcp_bootstrap(clusters: list[dict], chains: list[dict], *, listener_filters: list[dict] | None = None) -> dict:
    """A bootstrap with one listener on 127.0.0.1:0 whose chains are given whole (filters included)."""
    lis: dict[str, Any] = {"name": "tcp_listener", "address": socket_address(0), "filter_chains": chains}
    if listener_filters:
        lis["listener_filters"] = listener_filters
    return {"static_resources": {"listeners": [lis], "clusters": clusters}}


async def exchange(port: int, payload: bytes, *, ssl: ssl_mod.SSLContext | None = None,
                   server_hostname: str | None = None, timeout: float = 10.0) -> tuple[bytes, Any]:
    """Connect, send `payload`, half-close (or close_notify-less EOF for TLS: just stop writing), read to EOF.
    Returns (everything read, the writer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl, server_hostname=server_hostname)
    writer.write(payload)
    if writer.can_write_eof():
        writer.write_eof()
    data = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return data, writer


def _tls_half_close_blocking(port: int, payload: bytes, ctx: ssl_mod.SSLContext, server_hostname: str,
                             timeout: float) -> bytes:
    """A TLS client written on SSLObject + MemoryBIO over a blocking socket (nothing of the proxy's TLS code):
    handshake, send `payload`, then close_notify and the TCP FIN (a TLS half-close), then read everything the
    server still sends until its close_notify or EOF."""
    sock = socket.create_connection(("127.0.0.1", port), timeout)
    incoming, outgoing = ssl_mod.MemoryBIO(), ssl_mod.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)

    def flush() -> None:
        data = outgoing.read()
        if data:
            sock.sendall(data)

    def pump() -> bool:
        data = sock.recv(65536)
        if not data:
            incoming.write_eof()
            return False
        incoming.write(data)
        return True
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl_mod.SSLWantReadError:
                flush()
                if not pump():
                    raise ConnectionError("EOF during the handshake")
        flush()
        tls.write(payload)
        try:
            tls.unwrap()  # close_notify; it then wants the server's, which comes after the answer
        except ssl_mod.SSLWantReadError:
            pass
        flush()
        sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        while True:
            try:
                chunk = tls.read(65536)
            except ssl_mod.SSLWantReadError:
                if not pump():
                    break
                continue
            except (ssl_mod.SSLZeroReturnError, ssl_mod.SSLEOFError):
                break
            if not chunk:
                break
            got += chunk
        return bytes(got)
    finally:
        sock.close()


async def tls_half_close_exchange(port: int, payload: bytes, ctx: ssl_mod.SSLContext, server_hostname: str,
                                  timeout: float = 10.0) -> bytes:
    """`exchange` over TLS: send, half-close with close_notify + FIN, read to the end (in a thread)."""
    return await asyncio.to_thread(_tls_half_close_blocking, port, payload, ctx, server_hostname, timeout)
