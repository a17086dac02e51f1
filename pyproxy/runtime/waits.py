"""Bounded waits on an `asyncio.Event`, the one way the project waits with a deadline.

`asyncio.wait_for` is not used for this: on Python 3.11 it returns normally, dropping the cancellation, when the
task is cancelled in the loop pass where the awaited thing completes (CPython gh-86296, fixed in 3.12). A
long-poll whose proxy left as a push woke it then waited again for up to 30 s, and a stopped xDS client went on
polling (tests/integration/test_long_poll_cancel.py, test_xds_connect_cancel.py). `asyncio.timeout` counts
cancellations and never swallows one that is not its own.
"""
from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until `event` is set or `seconds` have passed (None: no limit); True when it was set. A cancellation
    of the waiting task always propagates."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
