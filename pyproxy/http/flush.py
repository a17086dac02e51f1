"""Write coalescing: bytes written during one event-loop callback leave in one send() per connection.

A response head and its first body chunk, or a request head and its body, are produced by several calls
inside one `data_received`. Each connection queues them (`write`) and registers itself here; the end of
every `data_received` (`batch_end`) flushes every registered connection once. One send per connection per
callback instead of one per write is the single largest CPU saving on the proxy's hot path: a send() on
loopback costs as much as all the Python work of a small request.

A write from anywhere else (a timer, a connect completing) is flushed on the next loop iteration instead
(`loop.call_soon`). Inside a batch that safety net is not armed: the batch's end flushes. Arming it anyway cost
a handle and a loop pass per data_received that wrote, twice a proxied request.
"""
from __future__ import annotations

import asyncio
from typing import Any

_pending: list[Any] = []
_scheduled: list[asyncio.AbstractEventLoop] = []
_batches = [0]  # how many batch_begin() calls have not ended yet (a list: a module global the compiled build types)


def batch_begin() -> None:
    """A callback that ends with batch_end() starts (a data_received): its writes wait for that end."""
    _batches[0] += 1


def batch_end() -> None:
    """Flush what the batch queued (call it in a `finally`, so an error cannot leave bytes behind)."""
    _batches[0] -= 1
    flush_pending()


def flush_later(conn: Any) -> None:
    """`conn` has queued bytes: flush it at the end of this batch, or outside one, on the next loop iteration."""
    _pending.append(conn)
    if not _scheduled and not _batches[0]:
        loop = conn._loop
        _scheduled.append(loop)
        loop.call_soon(_flush_scheduled)


def _flush_scheduled() -> None:
    _scheduled.clear()
    flush_pending()


def flush_pending() -> None:
    """Send what every connection queued. Called at the end of each data_received."""
    while _pending:
        conns = _pending[:]
        _pending.clear()
        for conn in conns:
            conn.flush()


class BatchedWriter:
    """Mixin for a connection protocol with `transport`, `closed`, `_loop` and `_wbuf`: queue, then flush once."""

    # what the host class provides (declared, not assigned: the host's __init__ sets them)
    closed: bool
    transport: asyncio.Transport | None
    _wbuf: list[bytes]

    def write(self, data: bytes) -> None:
        """Queue bytes; they go out in one send() at the end of the current callback (see `flush`)."""
        if self.closed:
            return
        buf = self._wbuf
        if not buf:
            flush_later(self)
        buf.append(data)

    def flush(self) -> None:
        """Coalesce the queued writes (e.g. a head + the first body chunk) into one syscall."""
        buf = self._wbuf
        if buf:
            self._wbuf = []
            if not self.closed and self.transport is not None:
                self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))
