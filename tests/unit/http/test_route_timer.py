"""The route timeout's one timer per downstream connection (DownstreamConnection.arm_route_timeout): whatever
deadlines the requests on a connection had before, each router times out at its own deadline, never earlier and
never later. Driven on a loop clock the test moves by hand: no waiting, no wall clock."""
from __future__ import annotations

import asyncio

from pyproxy.http.connection import DownstreamConnection


class Handle(asyncio.TimerHandle):
    """A timer handle of the right type (the compiled build, scripts/build_compiled.py, checks it) that only records."""

    def __init__(self, loop: "ManualLoop", when: float, callback) -> None:
        self.loop, self.when, self.callback, self.cancelled = loop, when, callback, False

    __eq__ = object.__eq__  # by identity (TimerHandle compares its own `_when`, not set here)
    __hash__ = object.__hash__

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop(asyncio.AbstractEventLoop):
    """The two loop methods the timer uses; `advance` runs what falls due, in time order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback) -> Handle:
        handle = Handle(self, self.now + delay, callback)
        self.handles.append(handle)
        return handle

    def pending(self) -> list[float]:
        return sorted(h.when for h in self.handles if not h.cancelled)

    def advance(self, to: float) -> None:
        while (due := [h for h in self.handles if not h.cancelled and h.when <= to]):
            handle = min(due, key=lambda h: h.when)
            self.handles.remove(handle)
            self.now = handle.when
            handle.callback()
        self.now = to


class Router:
    """What the connection reads of a router: its deadline, and the callback it makes when it passes."""

    def __init__(self, log: list[tuple[str, float]], name: str, loop: ManualLoop) -> None:
        self.log, self.name, self.loop = log, name, loop
        self.deadline: float | None = None

    def on_route_timeout(self) -> None:
        self.deadline = None
        self.log.append((self.name, self.loop.now))


def connection() -> tuple[DownstreamConnection, ManualLoop]:
    conn = DownstreamConnection(None)  # made in the test's loop; only its route timer is used, on the hand-moved clock
    loop = ManualLoop()
    conn._loop = loop  # type: ignore[assignment]
    conn._route_timer, conn._route_timer_at, conn._timed = None, 0.0, None
    return conn, loop


async def test_a_shorter_deadline_after_a_longer_one_replaces_the_pending_timer():
    conn, loop = connection()
    log: list[tuple[str, float]] = []
    first, second = Router(log, "first", loop), Router(log, "second", loop)
    conn.arm_route_timeout(first, 5.0)
    loop.advance(1.0)
    conn.disarm_route_timeout(first)  # answered in time
    conn.arm_route_timeout(second, 0.25)
    assert loop.pending() == [1.25]
    loop.advance(10.0)
    assert log == [("second", 1.25)]


async def test_a_longer_deadline_after_a_shorter_one_keeps_the_timer_and_re_arms_it_when_it_fires():
    conn, loop = connection()
    log: list[tuple[str, float]] = []
    first, second = Router(log, "first", loop), Router(log, "second", loop)
    conn.arm_route_timeout(first, 0.25)
    loop.advance(0.125)
    conn.disarm_route_timeout(first)
    conn.arm_route_timeout(second, 5.0)
    assert loop.pending() == [0.25]  # no second timer: the pending one is re-armed when it fires
    loop.advance(0.25)
    assert log == [] and loop.pending() == [5.125]
    loop.advance(10.0)
    assert log == [("second", 5.125)]


async def test_letting_go_of_an_earlier_router_does_not_stop_the_current_one():
    conn, loop = connection()
    log: list[tuple[str, float]] = []
    first, second = Router(log, "first", loop), Router(log, "second", loop)
    conn.arm_route_timeout(first, 1.0)
    conn.arm_route_timeout(second, 2.0)  # the connection serves one router at a time: the latest
    conn.disarm_route_timeout(first)
    loop.advance(10.0)
    assert log == [("second", 2.0)]


async def test_a_router_let_go_before_its_deadline_never_times_out():
    conn, loop = connection()
    log: list[tuple[str, float]] = []
    only = Router(log, "only", loop)
    conn.arm_route_timeout(only, 1.0)
    conn.disarm_route_timeout(only)
    loop.advance(10.0)
    assert log == [] and loop.pending() == []
