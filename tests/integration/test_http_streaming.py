"""Bodies streamed through the proxy both ways: content-length, chunked, close-delimited, full duplex.

Every body is the deterministic `pattern()` and is checked by SHA-256 on the far side, so a dropped,
duplicated or reordered byte fails the test. The 20 MiB versions run in-process; the 1 GiB versions
(`slow`) run the proxy as a `pyproxy run` process and sample its resident memory (VmRSS) while the
gigabyte passes, asserting it grows by less than 200 MiB: the proxy streams, it does not buffer.
"""
from __future__ import annotations

import asyncio
import hashlib

import pytest

from tests.support.client import RawClient, request_bytes
from tests.support.proxy import bootstrap
from tests.support.upstream import pattern_chunks, pattern_sha256

MiB = 1024 * 1024
GiB = 1024 * MiB
RSS_GROWTH_LIMIT = 200 * MiB


@pytest.fixture
async def proxy(upstream, proxy_factory):
    return await proxy_factory(bootstrap({"backend": [upstream.port]}, route_timeout="60s"))


async def send_body(c: RawClient, total: int, *, chunked: bool) -> None:
    for piece in pattern_chunks(total, 256 * 1024):
        await c.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece, timeout=30)
    if chunked:
        await c.send(b"0\r\n\r\n")


async def upload(port: int, total: int, *, chunked: bool, path: str = "/upload", timeout: float = 60):
    """POST `total` pattern bytes; returns the response."""
    framing = ("transfer-encoding", "chunked") if chunked else ("content-length", str(total))
    async with await RawClient.connect(port) as c:
        await c.send(request_bytes("POST", path, [framing]))
        await send_body(c, total, chunked=chunked)
        return await c.read_response(timeout=timeout)


async def download(port: int, path: str, timeout: float = 60):
    """GET `path`; returns (response, sha256 hex of its body) without keeping the body."""
    h = hashlib.sha256()
    async with await RawClient.connect(port) as c:
        await c.send(request_bytes("GET", path))
        r = await c.read_response(timeout=timeout, body_sink=h.update)
    return r, h.hexdigest()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_20_mib_upload_arrives_intact(proxy, upstream, chunked):
    r = await upload(proxy.port, 20 * MiB, chunked=chunked)
    assert r.status == 200
    rq = upstream.requests[0]
    assert (rq.body_length, rq.body_sha256) == (20 * MiB, pattern_sha256(20 * MiB))
    if chunked:
        assert rq.header("transfer-encoding") == "chunked" and rq.header("content-length") is None
    else:
        assert rq.header("content-length") == str(20 * MiB) and rq.header("transfer-encoding") is None


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_20_mib_download_arrives_intact(proxy, framing):
    """Whatever the upstream's framing, the client gets every byte; a length is kept, a chunked or
    close-delimited body reaches an HTTP/1.1 client chunked."""
    r, digest = await download(proxy.port, f"/download/{20 * MiB}?framing={framing}")
    assert r.status == 200
    assert (r.body_length, digest) == (20 * MiB, pattern_sha256(20 * MiB))
    if framing == "length":
        assert r.header("content-length") == str(20 * MiB) and not r.chunked
    else:
        assert r.chunked and not r.has("content-length")


async def test_full_duplex_echo_streams_while_uploading(proxy, upstream):
    """A chunked 20 MiB upload to an origin that echoes each piece as it arrives: the response streams
    back while the request is still being sent (neither side buffers the whole body)."""
    total = 20 * MiB
    h = hashlib.sha256()
    c = await proxy.connect()
    await c.send(request_bytes("POST", "/echo", [("transfer-encoding", "chunked")]))
    sender = asyncio.create_task(send_body(c, total, chunked=True))
    try:
        r = await c.read_response(timeout=60, body_sink=h.update)
        await asyncio.wait_for(sender, 5)
    finally:
        sender.cancel()
        await c.aclose()
    assert r.status == 200 and r.chunked
    assert (r.body_length, h.hexdigest()) == (total, pattern_sha256(total))
    assert upstream.requests[0].body_sha256 == pattern_sha256(total)


async def test_expect_100_continue(proxy, upstream):
    """`Expect: 100-continue`: the proxy answers `HTTP/1.1 100 Continue` itself before the body is sent,
    and the upstream gets the request without the Expect header."""
    c = await proxy.connect()
    await c.send(request_bytes("POST", "/", [("Expect", "100-continue"), ("Content-Length", "5")]))
    interim = await c.read_response(interim=True)
    assert (interim.version, interim.status, interim.reason) == ("HTTP/1.1", 100, "Continue")
    await c.send(b"hello")
    r = await c.read_response()
    assert (r.status, r.body) == (200, b"ok")
    rq = upstream.requests[0]
    assert rq.header("expect") is None
    assert (rq.body_length, rq.body_sha256) == (5, hashlib.sha256(b"hello").hexdigest())


# ---------------------------------------------------------------- 1 GiB through a `pyproxy run` process

class RssWatch:
    """Samples a process's VmRSS every 0.1 s while active; `growth` is peak minus the value at entry."""

    def __init__(self, proc):
        self.proc = proc
        self.before = self.peak = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.rss())
            try:
                await asyncio.wait_for(self._stop.wait(), 0.1)
            except asyncio.TimeoutError:
                pass

    async def __aenter__(self) -> "RssWatch":
        self.before = self.peak = self.proc.rss()
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        await self._task

    @property
    def growth(self) -> int:
        return self.peak - self.before

    def assert_bounded(self) -> None:
        assert self.growth < RSS_GROWTH_LIMIT, f"proxy RSS grew {self.growth / MiB:.0f} MiB"


@pytest.fixture
async def proxy_process(upstream, pyproxy_process):
    proc = pyproxy_process(bootstrap({"backend": [upstream.port]}, route_timeout="600s"))
    (port,) = await proc.wait_listening(1)
    warm, _ = await download(port, "/download/1024")  # pools and code paths warm before measuring
    assert warm.status == 200
    return proc, port


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_1_gib_upload_in_bounded_memory(proxy_process, upstream):
    proc, port = proxy_process
    async with RssWatch(proc) as rss:
        r = await upload(port, GiB, chunked=False, timeout=500)
    assert r.status == 200
    rq = upstream.requests[-1]
    assert (rq.body_length, rq.body_sha256) == (GiB, pattern_sha256(GiB))
    rss.assert_bounded()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_1_gib_download_in_bounded_memory(proxy_process):
    proc, port = proxy_process
    async with RssWatch(proc) as rss:
        r, digest = await download(port, f"/download/{GiB}", timeout=500)
    assert r.status == 200
    assert (r.body_length, digest) == (GiB, pattern_sha256(GiB))
    rss.assert_bounded()


# ---------------------------------------------------------------- back-pressure: a slow side never fills the proxy

STALL = 3.0  # seconds one side stops reading; a proxy without back-pressure would buffer everything by then


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_slow_client_download_is_backpressured(proxy_process, upstream):
    """The client stops reading a 512 MiB download: the proxy stops reading the upstream (which stays
    blocked well short of the whole body) and its memory stays bounded; then everything arrives."""
    proc, port = proxy_process
    total = 512 * MiB
    c = await RawClient.connect(port)
    try:
        await c.send(request_bytes("GET", f"/download/{total}?framing=length"))
        sent_before = upstream.bytes_sent
        async with RssWatch(proc) as rss:
            await asyncio.sleep(STALL)  # the stall itself: the client reads nothing meanwhile
        stalled_at = upstream.bytes_sent - sent_before
        assert stalled_at < total // 2, f"upstream wrote {stalled_at / MiB:.0f} MiB to a stalled client"
        rss.assert_bounded()
        h = hashlib.sha256()
        r = await c.read_response(timeout=120, body_sink=h.update)
    finally:
        await c.aclose()
    assert (r.body_length, h.hexdigest()) == (total, pattern_sha256(total))


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_slow_upstream_upload_is_backpressured(proxy_process, upstream):
    """The upstream stops reading a 512 MiB upload: the proxy stops reading the client (whose sends
    block) and its memory stays bounded; once the upstream reads again the body arrives intact."""
    proc, port = proxy_process
    total = 512 * MiB
    c = await RawClient.connect(port)
    try:
        await c.send(request_bytes("POST", "/stall-read", [("content-length", str(total))]))
        sender = asyncio.create_task(send_body(c, total, chunked=False))
        async with RssWatch(proc) as rss:
            done, _ = await asyncio.wait([sender], timeout=STALL)  # the stall itself: the upstream reads nothing
        assert not done, "the client sent all 512 MiB into a proxy whose upstream was not reading"
        rss.assert_bounded()
        upstream.reading_allowed.set()
        await asyncio.wait_for(sender, 120)
        r = await c.read_response(timeout=60)
    finally:
        sender.cancel()
        await c.aclose()
    assert r.status == 200
    rq = upstream.requests[-1]
    assert (rq.body_length, rq.body_sha256) == (total, pattern_sha256(total))
