"""Load, validate and translate run off the event loop: while a reload is held in its worker thread, xDS
requests (a new proxy's full sync, /debug/configz) are answered from the last good config; once the reload is
let go, its result is swapped in whole. Sequencing, not timing: the test holds the reload with an event that
its file loader waits on (the real loader, called once released)."""
from __future__ import annotations

import asyncio
import shutil
import threading

import pytest

from control.istio.load import LoadLimits
from control.serve import ControlPlane, load_one
from control.xds.server import make_app, start_site
from tests.hostile.files import valid_vs, write
from tests.hostile.test_control_serving import details_timeout
from tests.integration.test_xds_server import EXAMPLES
from tests.support.process import poll


class HeldLoader:
    """The real loader, except that while `holding`, loading details.yaml waits for `release`."""

    def __init__(self) -> None:
        self.holding = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, path: str):
        if self.holding and path.endswith("details.yaml"):
            self.entered.set()
            self.release.wait(30)
        return load_one(path, strict=False, limits=LoadLimits())


@pytest.fixture
async def served(tmp_path):
    config = tmp_path / "mesh"
    shutil.copytree(EXAMPLES, config)
    write(config / "details.yaml", valid_vs(1))
    loader = HeldLoader()
    cp = ControlPlane(str(config), debounce=0.01, nonce_prefix="t-", load_file=loader)
    await cp.start(watch=True)
    runner, port = await start_site(make_app(cp), "127.0.0.1", 0)
    try:
        yield cp, f"http://127.0.0.1:{port}", config, loader
    finally:
        loader.release.set()
        await runner.cleanup()
        await cp.stop()


async def test_xds_is_answered_while_a_reload_is_held_in_its_worker_thread(served):
    cp, url, config, loader = served
    assert await details_timeout(url, "before") == "1s"
    loader.holding = True
    write(config / "details.yaml", valid_vs(2))
    assert await asyncio.to_thread(loader.entered.wait, 20), "the watcher did not start a reload"
    # the reload is now inside the loader, in a worker thread; the loop answers a whole new proxy meanwhile
    assert await details_timeout(url, "during") == "1s"
    assert cp._reload_lock.locked() and not loader.release.is_set()  # answered before the reload finished
    loader.release.set()

    async def swapped() -> bool:
        return not cp._reload_lock.locked() and await details_timeout(url, "after") == "2s"
    await poll("the held reload is applied once released", swapped, detail=lambda: repr(cp))
