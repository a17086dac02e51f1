"""A long-poll whose client goes away at the moment a push wakes it must end, not wait again.

The control plane learns that a proxy stopped polling when aiohttp cancels the handler of its long-poll (the
client's connection closed) and the handler's `finally` releases it (control.xds.server). On Python 3.11,
`asyncio.wait_for` swallows a cancellation that arrives just after the awaited future completed (CPython
gh-86296, fixed in 3.12): a push that woke the poll in the same loop pass as the disconnect left the handler
waiting again, its proxy counted in flight for up to the long-poll's 30 s, and the stopped sidecar in
everyone's endpoints (tests/e2e/test_mesh_registration.py saw it: a sidecar SIGTERMed 3 ms after applying its
config). The waits use `asyncio.timeout`, which counts cancellations and never swallows another's.
"""
from __future__ import annotations

import asyncio

import pytest

from control.serve import ControlPlane
from control.xds.cache import CDS

NODE = "sidecar~127.0.0.1~reviews-v1-b.default~default.svc.cluster.local"


def _poll(cp: ControlPlane, protocol: str):
    """The long-poll a proxy's request opens: state of the world, or delta (its own wait loop)."""
    if protocol == "sotw":
        return cp.next_response(NODE, CDS, 30.0)
    ticket = cp.delta.begin(NODE, CDS.short)
    return cp.next_delta(NODE, CDS, cp.delta.start(NODE, CDS), ticket, 30.0)


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
@pytest.mark.parametrize("passes", [0, 1, 2, 3])
async def test_a_poll_cancelled_as_a_push_wakes_it_ends_with_the_cancellation(tmp_path, passes, protocol):
    cp = ControlPlane(str(tmp_path))
    poll = asyncio.ensure_future(_poll(cp, protocol))  # nothing is due for this proxy: it waits
    for _ in range(3):
        await asyncio.sleep(0)
    cp._notify(NODE)  # a push wakes it ...
    for _ in range(passes):  # ... and the client leaves this many loop passes later
        await asyncio.sleep(0)
    poll.cancel()
    done, _ = await asyncio.wait({poll}, timeout=5)  # bounded only against the hang this test is about
    assert done, "the cancelled long-poll went back to waiting"
    assert poll.cancelled()
