"""The differential fixture: one Envoy + pyproxy pair per bootstrap fragment (tests/differential/bootstraps.py),
started on first use, shared by the module's rows, all stopped by PID when the module ends. Without an Envoy
binary every row skips with one reason line (`tests.support.envoy.require_envoy`)."""
from __future__ import annotations

import pytest_asyncio


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def differential(tmp_path_factory):
    from tests.oracle.proxies import Oracle
    from tests.support.envoy import require_envoy

    from .bootstraps import BUILDERS

    require_envoy()
    o = Oracle(tmp_path_factory.mktemp("differential"), BUILDERS)
    try:
        yield o
    finally:
        await o.close()
