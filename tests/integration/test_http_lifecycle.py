"""Request and connection lifecycles the client controls: pipelining, disconnects, idle pool churn.

A proxy must answer pipelined requests in order, let go of everything when a client disappears
mid-request (its upstream exchange is abandoned, its gauges return to zero), and not hand a request
to a pooled upstream connection the origin has already closed.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.client import request_bytes
from tests.support.proxy import bootstrap


@pytest.fixture
async def proxy(upstream, proxy_factory, tmp_path):
    return await proxy_factory(bootstrap({"backend": [upstream.port]}, access_log=tmp_path / "a.log"))


async def eventually(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    """Wait until `predicate()` holds (state inside the proxy that no event exposes)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # poll interval of a bounded wait


def gauges_idle(proxy) -> bool:
    return (proxy.stat("http.ingress_http.downstream_rq_active") == 0
            and proxy.stat("cluster.backend.upstream_rq_active") == 0)


async def test_pipelined_requests_are_answered_in_order(proxy, upstream):
    """Three requests in one write, the first slow: three responses, in request order."""
    c = await proxy.connect()
    await c.send(request_bytes("GET", "/delay/0.3") + request_bytes("GET", "/status/201")
                 + request_bytes("POST", "/p", body=b"abc"))
    got = [await c.read_response() for _ in range(3)]
    assert [(r.status, r.body) for r in got] == [(200, b"delayed"), (201, b"xxxxx"), (200, b"ok")]
    assert [rq.path for rq in upstream.requests] == ["/delay/0.3", "/status/201", "/p"]
    assert upstream.requests[2].body_length == 3


async def test_requests_after_connection_close_are_ignored(proxy, upstream):
    """A pipelined request behind one marked `Connection: close` is never served."""
    c = await proxy.connect()
    await c.send(request_bytes("GET", "/first", [("Connection", "close")]) + request_bytes("GET", "/second"))
    r = await c.read_response()
    assert r.header("connection") == "close"
    await c.assert_closed()
    assert [rq.path for rq in upstream.requests] == ["/first"]


async def test_client_gone_while_upstream_is_slow(proxy, upstream):
    """The client closes while the upstream is still working: nothing stays active and the proxy
    keeps serving."""
    c = await proxy.connect()
    await c.send(request_bytes("GET", "/delay/0.5"))
    await upstream.wait_requests(1)
    await c.aclose()
    await eventually(lambda: gauges_idle(proxy), what="active gauges back to 0")
    assert (await proxy.fetch("GET", "/")).status == 200


async def test_client_close_resets_the_stream_with_dc(proxy, upstream):
    """Envoy's HCM does not enable half-close: a FIN from the client closes the connection and resets
    its streams at once (flag DC, upstream request abandoned), it does not wait for the response."""
    c = await proxy.connect()
    await c.send(request_bytes("GET", "/delay/0.5"))
    await upstream.wait_requests(1)
    await c.aclose()
    await eventually(lambda: upstream.open_connections == 0, timeout=2, what="the upstream request abandoned")
    entry = proxy.access_log()[0]
    assert "DC" in entry["flags"].split(",")


async def test_client_gone_mid_upload(proxy, upstream):
    """The client sends half of a declared body and leaves: nothing stays active, the next request
    works (on a fresh upstream connection: the half-sent one cannot be reused)."""
    c = await proxy.connect()
    await c.send(request_bytes("POST", "/upload", [("Content-Length", "100000")]) + b"x" * 50000)
    await upstream.wait_requests(1)
    await c.aclose()
    await eventually(lambda: gauges_idle(proxy), what="active gauges back to 0")
    r = await proxy.fetch("GET", "/")
    assert (r.status, r.body) == (200, b"ok")
    assert upstream.requests[0].complete is False
    assert upstream.requests[1].connection_id != upstream.requests[0].connection_id


async def test_client_gone_mid_download(proxy, upstream):
    """The client stops reading a large download and closes: the upstream connection is dropped (it
    is mid-response) and the proxy's gauges return to zero."""
    c = await proxy.connect()
    await c.send(request_bytes("GET", f"/download/{64 * 1024 * 1024}"))
    head = await c.reader.readexactly(64 * 1024)
    assert head.startswith(b"HTTP/1.1 200 ")
    await c.aclose()
    await eventually(lambda: gauges_idle(proxy) and upstream.open_connections == 0,
                     what="upstream connection closed")
    assert (await proxy.fetch("GET", "/")).status == 200


async def test_upstream_closing_an_idle_pooled_connection_is_not_a_failure(proxy, upstream):
    """The origin closes a keep-alive connection while it sits idle in the pool: the next request
    opens a new one instead of failing."""
    assert (await proxy.fetch("GET", "/")).status == 200
    for conn in list(upstream._conns):
        conn.transport.close()
    await eventually(lambda: proxy.stat("cluster.backend.upstream_cx_active") == 0,
                     what="the proxy to see the upstream close")
    r = await proxy.fetch("GET", "/")
    assert (r.status, r.body) == (200, b"ok")
    assert upstream.connections == 2


async def test_gauges_return_to_zero_after_errors(proxy, upstream):
    """After resets, garbage and timeouts nothing is left counted as active."""
    for path in ("/reset-before-headers", "/garbage", "/close-mid-body", "/three-responses"):
        c = await proxy.connect()
        await c.send(request_bytes("GET", path))
        try:
            await c.read_response(timeout=2)
        except Exception:  # the point here is the aftermath, not the answer
            pass
        await c.aclose()
    await eventually(lambda: gauges_idle(proxy), what="active gauges back to 0")
    await eventually(lambda: proxy.stat("listener.127.0.0.1_0.downstream_cx_active") == 0,
                     what="downstream connections closed")
