"""The oracle fixture: one Envoy + pyproxy pair per bootstrap group (tests/oracle/proxies.py), started on
first use and shared by every case of the module (two proxies per case would make the suite minutes
long), all stopped by PID when the module ends. Without an Envoy binary every case skips with one reason
line (`tests.support.envoy.require_envoy`)."""
from __future__ import annotations

import pytest_asyncio


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def oracle(tmp_path_factory):
    from tests.support.envoy import require_envoy

    from .proxies import Oracle

    require_envoy()
    o = Oracle(tmp_path_factory.mktemp("oracle"))
    try:
        yield o
    finally:
        await o.close()
