"""The control plane's expiry sweep outlives a failure: a sweep that raises is logged, and the next one runs
(a background task that died would leave every stopped proxy in everyone's endpoints for good)."""
from __future__ import annotations

import asyncio
import logging

from control.serve import ControlPlane


async def test_a_sweep_that_raises_is_logged_and_the_next_one_still_runs(tmp_path, caplog):
    cp = ControlPlane(str(tmp_path), grace=0.2)  # a sweep every 0.05 s
    sweeps: list[str] = []

    def expire():
        sweeps.append("sweep")
        if len(sweeps) == 1:
            raise RuntimeError("a bug in a sweep")
        return ()

    cp.expire = expire
    caplog.set_level(logging.ERROR, logger="pyproxy.control")
    task = asyncio.create_task(cp._expire_loop())
    try:
        for _ in range(200):  # at most 10 s: a hang guard, not a timing check
            if len(sweeps) >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(sweeps) >= 3  # the sweeps after the one that raised
    assert any("expiring proxies failed" in r.getMessage() and r.exc_info for r in caplog.records), caplog.text
