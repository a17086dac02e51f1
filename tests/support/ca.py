"""Test support for the CA: its HTTPS endpoint on 127.0.0.1:0 and a real mTLS exchange between two workloads.

`CAServer` serves `control.ca.server.ca_app` with `server_ssl_context` (the control plane's 15012 shape) on an
ephemeral loopback port. `mtls_exchange` runs one TLS 1.2+/1.3 connection between two `WorkloadSecret`s with
the contexts the sidecar would build (server requires a client certificate; client verifies the server chain
and then its URI SAN) and returns what each side saw of the other.
"""
from __future__ import annotations

import asyncio
import ssl
from typing import Sequence

from aiohttp import web

from pyproxy.tls.agent import WorkloadSecret
from pyproxy.tls.contexts import client_context, server_context
from pyproxy.tls.identity import check_peer_uri_san, identity_from_peercert

BOUND = 30  # seconds: an upper bound for awaits, never a pass/fail threshold


class CAServer:
    def __init__(self, app: web.Application, ssl_ctx: ssl.SSLContext):
        self.app, self.ssl_ctx = app, ssl_ctx
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> "CAServer":
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_ctx)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def mtls_exchange(server: WorkloadSecret, client: WorkloadSecret,
                        client_expects: Sequence[str] = ()) -> tuple[str, str]:
    """One mutual-TLS connection on 127.0.0.1: returns (server URI the client saw, client URI the server saw).
    Raises ssl.SSLError / IdentityError when a side refuses, ConnectionError when the server dropped us."""
    seen_by_server: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = identity_from_peercert(writer.get_extra_info("peercert"))
        if not seen_by_server.done():
            seen_by_server.set_result(peer.uri if peer else "")
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()

    srv_ctx = server_context(server.cert_chain_pem, server.private_key_pem, server.root_bundle_pem)
    cli_ctx = client_context(client.root_bundle_pem, client.cert_chain_pem, client.private_key_pem)
    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=srv_ctx)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=cli_ctx, server_hostname="outbound_.80_._.svc"), BOUND)
        try:
            server_uri = check_peer_uri_san(writer.get_extra_info("peercert"), client_expects)
            line = await asyncio.wait_for(reader.readline(), BOUND)
            if line != b"hello\n":
                raise ConnectionError("server closed the connection (client certificate refused)")
            return server_uri, await asyncio.wait_for(seen_by_server, BOUND)
        finally:
            writer.close()
    finally:
        listener.close()
        await listener.wait_closed()
