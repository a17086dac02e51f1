"""The admin's live tap (GET /tap, pyproxy.observe.tap) over real sockets: a proxy in the test's loop, its admin on
127.0.0.1:0, requests sent through the proxy while an aiohttp client reads the newline-delimited JSON stream.

What must hold: the tap shows the request the test sent (with its trace id and request id, status, flags,
upstream), filters by path prefix and method, a tap client that stops reading never holds up a request (its
bounded queue drops and says how many), with no tap attached nothing is built or queued, and the admin guard
refuses a page rebound onto the admin's address.
"""
from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest

from pyproxy.admin.server import make_app, start_admin
from tests.support.proxy import bootstrap

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
async def tapped(upstream, proxy_factory):
    """(proxy, admin port) for a proxy in front of the upstream."""
    proxy = await proxy_factory(bootstrap({"backend": [upstream.port]}))
    runner, port = await start_admin(make_app(proxy.server), "127.0.0.1", 0)
    yield proxy, port
    await runner.cleanup()


class TapReader:
    """An open /tap stream: `await next_entry()` returns the next request entry (bounded wait)."""

    def __init__(self, session: aiohttp.ClientSession, resp: aiohttp.ClientResponse):
        self.session, self.resp = session, resp
        self.dropped = 0

    @classmethod
    async def open(cls, port: int, query: str = "") -> "TapReader":
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=10))
        resp = await session.get(f"http://127.0.0.1:{port}/tap{query}")
        reader = cls(session, resp)
        assert resp.status == 200, await resp.text()
        hello = json.loads(await resp.content.readline())
        assert "tap" in hello  # the subscriber is registered before this line is written
        return reader

    async def next_line(self) -> dict:
        line = await asyncio.wait_for(self.resp.content.readline(), 10)
        assert line, "the tap stream ended"
        return json.loads(line)

    async def next_entry(self) -> dict:
        for _ in range(100_000):
            obj = await self.next_line()
            if "dropped" in obj:
                self.dropped = obj["dropped"]
                continue
            return obj
        raise AssertionError("no entry")

    async def close(self) -> None:
        self.resp.close()
        await self.session.close()


async def wait_for(predicate, what: str) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.02)  # poll interval of a bounded wait
    raise AssertionError(f"timed out waiting for {what}")


async def test_tap_shows_the_request_the_test_sent_with_its_trace_id(tapped):
    proxy, admin = tapped
    tap = await TapReader.open(admin)
    try:
        r = await proxy.fetch("GET", "/orders/42?x=1", headers=[("traceparent", TRACEPARENT),
                                                               ("x-request-id", "rid-tap-1")],
                              host="shop.example")
        assert r.status == 200
        entry = await tap.next_entry()
    finally:
        await tap.close()
    assert entry["trace_id"] == TRACE_ID and entry["request_id"] == "rid-tap-1"
    assert (entry["method"], entry["authority"], entry["path"], entry["status"]) == \
        ("GET", "shop.example", "/orders/42?x=1", 200)
    assert entry["response_flags"] == "-" and entry["upstream_cluster"] == "backend"
    assert entry["upstream_host"].startswith("127.0.0.1:") and entry["duration_ms"] >= 0
    assert entry["peer"] is None and entry["mtls"] is False  # plaintext client
    assert entry["direction"] == "-"  # a static listener without traffic_direction


async def test_tap_shows_a_local_reply_with_its_flag_and_b3_trace_id(upstream, proxy_factory):
    config = bootstrap({"backend": []})  # no hosts: 503 UH
    proxy = await proxy_factory(config)
    runner, admin = await start_admin(make_app(proxy.server), "127.0.0.1", 0)
    tap = await TapReader.open(admin)
    try:
        r = await proxy.fetch("POST", "/x", headers=[("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                                                     ("x-b3-spanid", "e457b5a2e4d86bd1")], body=b"hi")
        assert r.status == 503
        entry = await tap.next_entry()
    finally:
        await tap.close()
        await runner.cleanup()
    assert (entry["method"], entry["status"], entry["response_flags"]) == ("POST", 503, "UH")
    assert entry["trace_id"] == "80f198ee56343ba864fe8b2a57d3eff7"


async def test_filters_select_by_path_prefix_and_method(tapped):
    proxy, admin = tapped
    tap = await TapReader.open(admin, "?path=/api&method=post")
    try:
        for method, path in (("GET", "/api/a"), ("POST", "/other"), ("POST", "/api/b"), ("GET", "/x")):
            assert (await proxy.fetch(method, path, body=b"" if method == "GET" else b"1")).status == 200
        entry = await tap.next_entry()
        assert (entry["method"], entry["path"]) == ("POST", "/api/b")
        assert proxy.server.tap.published == 1  # the three others were not even built
    finally:
        await tap.close()


async def test_a_bad_filter_is_a_400_naming_the_parameter(tapped):
    _, admin = tapped
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{admin}/tap?path=nope") as r:
            assert r.status == 400 and "path='nope'" in await r.text()
        async with s.get(f"http://127.0.0.1:{admin}/tap?buffer=0") as r:
            assert r.status == 400 and "buffer=0" in await r.text()


async def test_no_tap_attached_means_nothing_is_built_or_queued(tapped):
    proxy, admin = tapped
    for _ in range(5):
        assert (await proxy.fetch("GET", "/")).status == 200
    hub = proxy.server.tap
    assert hub.subscribers == () and hub.published == 0
    assert proxy.stat_or_absent("tap.entries_queued") is None  # never tapped: not even its stats exist
    # a tap that comes and goes leaves nothing subscribed behind
    tap = await TapReader.open(admin)
    assert len(hub.subscribers) == 1
    await tap.close()
    await wait_for(lambda: hub.subscribers == (), "the closed tap to unsubscribe")
    before = hub.published
    assert (await proxy.fetch("GET", "/")).status == 200
    assert hub.published == before


async def test_a_tap_that_stops_reading_never_holds_up_a_request(tapped):
    """The reader stops reading (a small receive buffer, never read): requests keep being answered while its
    queue (buffer=5) fills, the excess is dropped and counted, and the reader is told how many when it reads."""
    proxy, admin = tapped
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", admin))
    sock.sendall(f"GET /tap?buffer=5 HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n\r\n".encode())
    hub = proxy.server.tap
    await wait_for(lambda: len(hub.subscribers) == 1, "the tap to subscribe")
    client = await proxy.connect()
    long_path = "/" + "p" * 30000  # big entries fill the socket buffers between the stalled reader and the queue
    sent = 0
    try:
        for _ in range(200):  # rounds of 50 requests until the stalled reader has lost some
            for _ in range(50):
                assert (await client.request("GET", long_path)).status == 200
                sent += 1
            if proxy.stat("tap.entries_dropped"):
                break
        dropped = proxy.stat("tap.entries_dropped")
        assert dropped > 0, f"{sent} requests and the stalled tap lost none"
        print(f"{sent} requests sent, {dropped} entries dropped")
        assert proxy.stat("tap.entries_queued") + dropped == sent
        # the reader catches up: it learns how many it lost
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        seen = b""
        for _ in range(100_000):
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
            assert chunk, "stream ended before the dropped count"
            seen += chunk
            if b'"dropped":' in seen:
                break
        assert b'"dropped":' in seen
    finally:
        await client.aclose()
        sock.close()
    await wait_for(lambda: hub.subscribers == (), "the closed tap to unsubscribe")


@pytest.mark.parametrize("headers", [{"Host": "evil.example"}, {"Origin": "http://evil.example"}])
async def test_the_admin_guard_refuses_a_rebound_page(tapped, headers):
    _, admin = tapped
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{admin}/tap", headers=headers) as r:
            assert r.status == 403 and "refusing GET /tap" in await r.text()


async def test_stopping_the_proxy_ends_the_stream(upstream, proxy_factory):
    proxy = await proxy_factory(bootstrap({"backend": [upstream.port]}))
    runner, admin = await start_admin(make_app(proxy.server), "127.0.0.1", 0)
    tap = await TapReader.open(admin)
    try:
        await runner.cleanup()  # the admin's on_shutdown closes every tap, so this does not wait for the reader
        assert await asyncio.wait_for(tap.resp.content.readline(), 10) == b""
    finally:
        await tap.close()
