"""Write coalescing (pyproxy.http.flush): a callback's writes leave in one send per connection, and a write
outside a batch is still flushed on the next loop iteration."""
from __future__ import annotations

import asyncio

from pyproxy.http import flush
from pyproxy.http.flush import BatchedWriter, batch_begin, batch_end


class _Loop:
    """Records call_soon: the safety net's arming."""

    def __init__(self) -> None:
        self.soon: list = []

    def call_soon(self, callback) -> None:
        self.soon.append(callback)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []

    def write(self, data) -> None:
        self.sends.append(bytes(data))


class _Conn(BatchedWriter):
    def __init__(self, loop: _Loop) -> None:
        self.closed = False
        self.transport = _Transport()
        self._loop = loop
        self._wbuf: list[bytes] = []


def test_writes_inside_a_batch_leave_in_one_send_per_connection_at_its_end_without_the_safety_net() -> None:
    loop = _Loop()
    a, b = _Conn(loop), _Conn(loop)
    batch_begin()
    try:
        a.write(b"HTTP/1.1 200 OK\r\n\r\n")
        b.write(b"GET / HTTP/1.1\r\n\r\n")
        a.write(b"body")
        assert a.transport.sends == [] and b.transport.sends == []  # queued until the batch ends
    finally:
        batch_end()
    assert a.transport.sends == [b"HTTP/1.1 200 OK\r\n\r\nbody"] and b.transport.sends == [b"GET / HTTP/1.1\r\n\r\n"]
    assert loop.soon == []  # the batch's end flushed: no loop pass was armed


def test_a_write_outside_a_batch_is_flushed_on_the_next_loop_iteration() -> None:
    loop = _Loop()
    conn = _Conn(loop)
    conn.write(b"a")
    conn.write(b"b")
    assert conn.transport.sends == [] and len(loop.soon) == 1  # armed once, not per write
    loop.soon.pop()()  # the loop runs the callback
    assert conn.transport.sends == [b"ab"]


def test_a_batch_that_raises_still_flushes_and_the_next_write_outside_arms_the_net() -> None:
    loop = _Loop()
    conn = _Conn(loop)
    try:
        batch_begin()
        try:
            conn.write(b"x")
            raise RuntimeError("a bug in a callback")
        finally:
            batch_end()
    except RuntimeError:
        pass
    assert conn.transport.sends == [b"x"] and flush._batches == [0]
    conn.write(b"y")
    assert len(loop.soon) == 1
    loop.soon.pop()()
    assert conn.transport.sends == [b"x", b"y"]
