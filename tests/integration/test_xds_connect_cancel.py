"""A stopped xDS client must stop while it is still connecting, not once the connection is up.

`XdsClient.stop()` cancels the poll task; if that task is opening its connection (pyproxy.xds.http), the
cancellation can land in the loop pass where the connect completes. `asyncio.wait_for` on Python 3.11 then
returns the connection and drops the cancellation (CPython gh-86296), and the "stopped" client goes on to send
its long-poll and wait up to 30 s. The connect is bounded with `asyncio.timeout`, which never swallows it.
"""
from __future__ import annotations

import asyncio

import pytest

from pyproxy.xds.http import HttpClient


@pytest.mark.parametrize("passes", range(8))
async def test_a_connect_cancelled_in_any_loop_pass_ends_cancelled(passes):
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient(connect_timeout=5.0)
    try:
        task = asyncio.ensure_future(client._connect("127.0.0.1", port, None, f"http://127.0.0.1:{port}/v3"))
        for _ in range(passes):  # the connect completes in one of these passes; the stop lands just after
            await asyncio.sleep(0)
        requested = task.cancel()  # False only if the task had already finished
        done, _ = await asyncio.wait({task}, timeout=5)  # bounded only against a hang
        assert done
        if requested:
            assert task.cancelled(), "the cancellation was swallowed: the connect returned a connection"
        else:
            task.result().transport.close()
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
        await client.close()
