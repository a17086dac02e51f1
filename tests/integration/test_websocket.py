"""HTTP/1.1 Upgrade (WebSocket) through a pair of proxies, as between two sidecars (pyproxy.http.tunnel).

A real aiohttp WebSocket server behind proxy B, proxy A in front of B, a real aiohttp WebSocket client in front
of A: the handshake is routed like a request, then frames flow both ways until either end closes. An upgrade
that the HCM or the route does not enable is refused with Envoy's 403 (`upgrade_failed`) and never forwarded.
"""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.support.client import RawClient
from tests.support.proxy import bootstrap, route

WS = {"upgrade_configs": [{"upgrade_type": "websocket"}]}
MAX_MESSAGES = 300  # the echo loop is bounded in count ...
ECHO_SECONDS = 2.0  # ... and in time


async def wait_for(cond, timeout: float = 5.0) -> None:
    async def poll():
        while not cond():
            await asyncio.sleep(0.01)  # poll interval of a bounded wait
    await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def ws_server():
    """An aiohttp app: /ws echoes, /ws-bye closes after the first message, /plain answers 200 (no upgrade)."""
    seen: dict[str, list] = {"handshakes": [], "closed": []}

    async def echo(request):
        seen["handshakes"].append({k.lower(): v for k, v in request.headers.items()})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        seen["closed"].append(ws.close_code)
        return ws

    async def bye(request):
        seen["handshakes"].append({k.lower(): v for k, v in request.headers.items()})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.close(code=4000, message=b"server says bye")
        return ws

    async def plain(request):
        seen["handshakes"].append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(text="no upgrade here")

    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_get("/ws-bye", bye)
    app.router.add_get("/plain", plain)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, seen
    await runner.cleanup()


@pytest.fixture
async def pair(ws_server, proxy_factory):
    """Proxy A (client side) -> proxy B (server side) -> the WebSocket server; websocket enabled on both."""
    port, seen = ws_server
    b = await proxy_factory(bootstrap({"app": [port]}, hcm=WS))
    a = await proxy_factory(bootstrap({"b": [b.port]}, hcm=WS))
    return a, b, seen


async def test_websocket_echo_through_a_proxy_pair_then_client_close(pair):
    a, b, seen = pair
    sent = 0
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"http://127.0.0.1:{a.port}/ws") as ws:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + ECHO_SECONDS
            while sent < MAX_MESSAGES and loop.time() < deadline:
                if sent % 2:
                    await ws.send_bytes(bytes([sent % 256]) * (sent + 1))
                    assert (await ws.receive(timeout=5)).data == bytes([sent % 256]) * (sent + 1)
                else:
                    await ws.send_str(f"hello {sent}")
                    assert (await ws.receive(timeout=5)).data == f"hello {sent}"
                sent += 1
            for p in (a, b):
                assert p.stat("http.ingress_http.downstream_cx_upgrades_active") == 1
        # the client closed: the server saw a normal close, both tunnels are gone
    await wait_for(lambda: seen["closed"] == [1000])
    for p in (a, b):
        await wait_for(lambda p=p: p.stat("http.ingress_http.downstream_cx_upgrades_active") == 0)
        assert p.stat("http.ingress_http.downstream_cx_upgrades_total") == 1
    assert sent >= 10
    # the handshake reached the server as one: upgrade headers intact, routed like a request
    (hs,) = seen["handshakes"]
    assert hs["upgrade"].lower() == "websocket" and "upgrade" in hs["connection"].lower()
    assert "x-request-id" in hs and "sec-websocket-key" in hs


async def test_server_close_reaches_the_client(pair):
    a, b, _ = pair
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"http://127.0.0.1:{a.port}/ws-bye") as ws:
            await ws.send_str("hi")
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4000
    for p in (a, b):
        await wait_for(lambda p=p: p.stat("http.ingress_http.downstream_cx_upgrades_active") == 0)


@pytest.mark.parametrize("hcm, routes", [
    ({}, None),  # no upgrade_configs on the HCM: Envoy's default refuses upgrades
    (WS, [route("/", "app", upgrade_configs=[{"upgrade_type": "websocket", "enabled": False}])]),
    ({"upgrade_configs": [{"upgrade_type": "websocket", "enabled": False}]}, None),
])
async def test_upgrade_not_enabled_is_403_and_never_forwarded(ws_server, proxy_factory, tmp_path, hcm, routes):
    port, seen = ws_server
    p = await proxy_factory(bootstrap({"app": [port]}, hcm=hcm, routes=routes, access_log=tmp_path / "a.log"))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(f"http://127.0.0.1:{p.port}/ws")
    assert e.value.status == 403
    assert seen["handshakes"] == []
    assert p.stat("http.ingress_http.downstream_rq_ws_on_non_ws_route") == 1
    assert p.access_log()[0]["details"] == "upgrade_failed"


async def test_route_can_enable_an_upgrade_the_hcm_does_not(ws_server, proxy_factory):
    port, seen = ws_server
    p = await proxy_factory(bootstrap({"app": [port]},
                                      routes=[route("/", "app", upgrade_configs=[{"upgrade_type": "WebSocket"}])]))
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"http://127.0.0.1:{p.port}/ws") as ws:
            await ws.send_str("x")
            assert (await ws.receive(timeout=5)).data == "x"
    assert len(seen["handshakes"]) == 1


async def test_upstream_declining_the_upgrade_is_one_plain_response_then_close(ws_server, proxy_factory):
    """Exactly one response to an upgrade request, always: the upstream's 200 is forwarded and the
    connection closes (it cannot return to HTTP after an upgrade request)."""
    port, seen = ws_server
    p = await proxy_factory(bootstrap({"app": [port]}, hcm=WS))
    c = await p.connect()
    await c.send(b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    r = await c.read_response()
    assert r.status == 200 and r.body == b"no upgrade here"
    assert await c.read_until_close() == b""  # nothing after the one response
    assert len(seen["handshakes"]) == 1


async def raw_upgrade_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal upgrade server: read the head, answer 101, then echo raw bytes until EOF."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_bytes_sent_before_the_101_are_delivered_first(proxy_factory):
    server = await asyncio.start_server(raw_upgrade_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        p = await proxy_factory(bootstrap({"app": [port]}, hcm={"upgrade_configs": [{"upgrade_type": "echo"}]}))
        c = await RawClient.connect(p.port)
        await c.send(b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly bytes;")
        head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ") and b"upgrade: echo" in head.lower()
        assert await asyncio.wait_for(c.reader.readexactly(12), 5) == b"early bytes;"
        await c.send(b"late bytes")
        assert await asyncio.wait_for(c.reader.readexactly(10), 5) == b"late bytes"
        c.close()
        await wait_for(lambda: p.stat("http.ingress_http.downstream_cx_upgrades_active") == 0)
    finally:
        server.close()
        await server.wait_closed()


async def test_idle_tunnel_is_closed_by_the_stream_idle_timeout(proxy_factory):
    server = await asyncio.start_server(raw_upgrade_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        p = await proxy_factory(bootstrap({"app": [port]}, hcm={"upgrade_configs": [{"upgrade_type": "echo"}],
                                                                "stream_idle_timeout": "0.2s"}))
        c = await RawClient.connect(p.port)
        await c.send(b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
        await c.assert_closed()  # nothing moves: the proxy closes the tunnel
    finally:
        server.close()
        await server.wait_closed()


async def test_bytes_before_the_101_are_bounded_reading_pauses(proxy_factory):
    """A client that streams data before the upstream has said 101: the tunnel holds at most PENDING_LIMIT
    bytes, then stops reading the client (back-pressure), and resumes once the tunnel opens."""
    from pyproxy.http.tunnel import PENDING_LIMIT

    release = asyncio.Event()

    async def slow_upgrade(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        total = 0
        while data := await reader.read(65536):
            total += len(data)
            writer.write(b"%d;" % total)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow_upgrade, "127.0.0.1", 0)
    try:
        p = await proxy_factory(bootstrap({"app": [server.sockets[0].getsockname()[1]]},
                                          hcm={"upgrade_configs": [{"upgrade_type": "echo"}]}))
        c = await RawClient.connect(p.port)
        c.writer.write(b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
                       + b"x" * (PENDING_LIMIT * 3))
        conn = next(iter(next(iter(p.server.listeners.values())).connections))
        await wait_for(lambda: conn.upstream_paused)  # held bytes over the limit: reading the client paused
        assert conn.tunnel.pending_bytes > PENDING_LIMIT
        release.set()
        await wait_for(lambda: not conn.upstream_paused)  # the tunnel opened: reading resumes
        await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
        c.close()
    finally:
        server.close()
        await server.wait_closed()
