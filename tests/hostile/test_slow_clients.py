"""Slow and idle clients must not starve the others (bounded: a few hundred connections, a few seconds).

Slowloris keeps many connections open by sending a request head a few bytes at a time; HCM
`request_headers_timeout` closes them (Envoy closes without a response and counts
`downstream_rq_header_timeout`). Slow bodies hold connections with a request in flight. In both cases a normal
client must still be served, and the connections are released afterwards."""
from __future__ import annotations

import asyncio

from tests.support.client import RawClient
from tests.support.proxy import bootstrap

SLOW_CONNECTIONS = 200


async def wait_for(cond, timeout: float = 10.0) -> None:
    async def poll():
        while not cond():
            await asyncio.sleep(0.02)  # poll interval of a bounded wait
    await asyncio.wait_for(poll(), timeout)


def active(proxy) -> int:
    return proxy.stat("listener.127.0.0.1_0.downstream_cx_active")


async def test_slowloris_connections_are_cut_by_request_headers_timeout(upstream, proxy_factory):
    proxy = await proxy_factory(bootstrap({"b": [upstream.port]}, hcm={"request_headers_timeout": "1s"}))
    slow = [await RawClient.connect(proxy.port) for _ in range(SLOW_CONNECTIONS)]
    for c in slow:
        await c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await wait_for(lambda: active(proxy) == SLOW_CONNECTIONS)
    r = await proxy.fetch("GET", "/normal")  # served while 200 heads are pending
    assert r.status == 200
    for c in slow[:10]:
        await c.send(b"a")  # trickling bytes does not reset the header timeout
    for c in slow:
        assert await c.read_until_close() == b""  # closed without a response, as Envoy does
    await wait_for(lambda: active(proxy) == 0)
    assert proxy.stat("http.ingress_http.downstream_rq_header_timeout") == SLOW_CONNECTIONS
    assert [q.path for q in upstream.requests] == ["/normal"]


async def test_slow_bodies_do_not_block_other_clients(upstream, proxy_factory):
    proxy = await proxy_factory(bootstrap({"b": [upstream.port]}))
    slow = [await RawClient.connect(proxy.port) for _ in range(100)]
    for c in slow:
        await c.send(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    await upstream.wait_requests(100)
    for i in range(20):
        r = await proxy.fetch("GET", f"/normal{i}")
        assert r.status == 200
    for c in slow:
        c.close()
    await wait_for(lambda: active(proxy) == 0)
    assert sum(1 for q in upstream.requests if q.path.startswith("/normal")) == 20
    assert all(not q.complete for q in upstream.requests if q.path == "/slow")  # the bodies never finished
