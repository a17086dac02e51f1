"""pyproxy.runtime.waits.wait_event: the bounded wait every long-poll, drain and heartbeat uses."""
from __future__ import annotations

import asyncio

import pytest

from pyproxy.runtime.waits import wait_event


async def test_it_says_whether_the_event_was_set_or_the_time_ran_out():
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, 5) is True
    assert await wait_event(event, None) is True  # already set, no limit


@pytest.mark.parametrize("passes", [0, 1, 2, 3])
async def test_a_cancellation_landing_as_the_event_fires_is_never_dropped(passes):
    """asyncio.wait_for on Python 3.11 returns normally here (CPython gh-86296); the task must end cancelled."""
    event = asyncio.Event()
    waiter = asyncio.ensure_future(wait_event(event, 30))
    for _ in range(2):
        await asyncio.sleep(0)
    event.set()
    for _ in range(passes):
        await asyncio.sleep(0)
    requested = waiter.cancel()
    done, _ = await asyncio.wait({waiter}, timeout=5)  # bounded only against a hang
    assert done
    assert waiter.cancelled() if requested else waiter.result() is True
