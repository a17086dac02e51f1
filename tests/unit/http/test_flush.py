"""Write coalescing (pyproxy.http.flush): a callback's writes are flushed once per connection at the batch's
end, and a write outside a batch is still flushed on the next loop iteration. The connections here are stand-ins
with the two things flush.py uses (`_loop`, `flush()`): the compiled build's BatchedWriter cannot be subclassed
by a test; the coalescing into one send is covered through real sockets (tests/integration)."""
from __future__ import annotations

from pyproxy.http import flush
from pyproxy.http.flush import batch_begin, batch_end, flush_later


class _Loop:
    """Records call_soon: the safety net's arming."""

    def __init__(self) -> None:
        self.soon: list = []

    def call_soon(self, callback) -> None:
        self.soon.append(callback)


class _Conn:
    def __init__(self, loop: _Loop) -> None:
        self._loop = loop
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def test_connections_written_inside_a_batch_are_flushed_once_at_its_end_without_the_safety_net() -> None:
    loop = _Loop()
    a, b = _Conn(loop), _Conn(loop)
    batch_begin()
    try:
        flush_later(a)  # what BatchedWriter.write does on a connection's first queued write
        flush_later(b)
        assert (a.flushes, b.flushes) == (0, 0)  # queued until the batch ends
    finally:
        batch_end()
    assert (a.flushes, b.flushes) == (1, 1)
    assert loop.soon == []  # the batch's end flushed: no loop pass was armed


def test_a_write_outside_a_batch_is_flushed_on_the_next_loop_iteration() -> None:
    loop = _Loop()
    conn = _Conn(loop)
    flush_later(conn)
    assert conn.flushes == 0 and len(loop.soon) == 1
    flush_later(_Conn(loop))
    assert len(loop.soon) == 1  # armed once per loop pass, not per connection
    loop.soon.pop()()  # the loop runs the callback
    assert conn.flushes == 1


def test_a_batch_that_raises_still_flushes_and_the_next_write_outside_arms_the_net() -> None:
    loop = _Loop()
    conn = _Conn(loop)
    try:
        batch_begin()
        try:
            flush_later(conn)
            raise RuntimeError("a bug in a callback")
        finally:
            batch_end()
    except RuntimeError:
        pass
    assert conn.flushes == 1 and flush._batches == [0]
    flush_later(conn)
    assert len(loop.soon) == 1
    loop.soon.pop()()
    assert conn.flushes == 2
