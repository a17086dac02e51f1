"""Run a test module on both event loops: asyncio's and uvloop (what `pyproxy run` uses). Their transports differ
in the details TLS and half-close depend on, so the modules that exercise those run on each.

In a test module: `from tests.support.loops import both_event_loops` and `event_loop_policy = both_event_loops`
(pytest-asyncio reads the `event_loop_policy` fixture)."""
from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def both_event_loops(request):
    if request.param == "uvloop":
        import uvloop

        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()
