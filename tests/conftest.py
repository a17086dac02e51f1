"""Shared fixtures: a controllable upstream, an in-process proxy (seeded for the traffic tests), a `pyproxy run`
process (tests/support/).

Imports happen inside the fixtures, so collecting unrelated tests never imports the proxy.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import AsyncExitStack

import pytest


def pytest_configure(config):
    """A `make demo` running on this machine writes a state file that meshctl reads (pyproxy/demo_state.py):
    point the suite, and every process it starts, at a file of its own so the two never meet."""
    os.environ["PYPROXY_MESH_STATE"] = os.path.join(tempfile.mkdtemp(prefix="pyproxy-test-state-"), "demo.json")
    _own_port_range()


def _own_port_range() -> None:
    """Each pytest-xdist worker (and every process it starts) picks the ports of its meshes from a slice of the
    range of its own ($PYPROXY_PORT_RANGE, pyproxy/demo_mesh.py): two workers drawing from one range at random
    once handed out the same port, and a sidecar failed to bind it ("address already in use")."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not worker.startswith("gw") or not count.isdigit():
        return
    from pyproxy.demo_mesh import port_range

    low, high = port_range()
    index, slices = int(worker[2:]), int(count)
    width = (high - low + 1) // slices
    os.environ["PYPROXY_PORT_RANGE"] = f"{low + index * width}-{low + (index + 1) * width - 1}"


def pytest_unconfigure(config):
    import shutil

    shutil.rmtree(os.path.dirname(os.environ.get("PYPROXY_MESH_STATE", "/nonexistent/x")), ignore_errors=True)


@pytest.fixture
async def upstream_factory():
    """`await upstream_factory(name, ssl=ctx)` -> a started `TestUpstream` (HTTPS with an ssl.SSLContext); all are
    closed after the test."""
    from tests.support.upstream import TestUpstream

    started: list[TestUpstream] = []

    async def make(name: str = "upstream", handler=None, ssl=None) -> TestUpstream:
        up = await TestUpstream(name=name, handler=handler, ssl=ssl).start()
        started.append(up)
        return up

    yield make
    for up in started:
        await up.close()


@pytest.fixture
async def upstream(upstream_factory):
    return await upstream_factory()


@pytest.fixture
async def proxy_factory():
    """`await proxy_factory(bootstrap_dict, seed=None)` -> a `RunningProxy`; all are stopped after the test."""
    from tests.support.proxy import run_proxy

    async with AsyncExitStack() as stack:
        async def make(config: dict, seed: int | None = None):
            return await stack.enter_async_context(run_proxy(config, seed))

        yield make


@pytest.fixture
def traffic_proxy(proxy_factory):
    """`await traffic_proxy(bootstrap_dict, seed=1)`: `proxy_factory` with a seeded rng (weighted clusters, load
    balancers, fault and mirror percentages draw from it), so a statistical test is the same run every time."""
    def make(config: dict, seed: int = 1):
        return proxy_factory(config, seed)

    return make


@pytest.fixture
def pyproxy_process(tmp_path):
    """`pyproxy_process(bootstrap_dict, *args)` -> a started `ProxyProcess`; stopped by PID after the test."""
    from tests.support.process import ProxyProcess

    started: list[ProxyProcess] = []

    def make(config: dict, *args: str) -> ProxyProcess:
        workdir = tmp_path / f"pyproxy{len(started)}"
        workdir.mkdir()
        proc = ProxyProcess(config, workdir, *args).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


def pytest_sessionfinish(session):
    """Under pytest-xdist (`make test` runs the slow part with -n), a worker hands its differential tally to
    the controller through xdist's `workeroutput`; the controller gathers them in `pytest_testnodedown`."""
    import sys

    output = getattr(session.config, "workeroutput", None)
    harness = sys.modules.get("tests.oracle.harness")
    if output is not None and harness is not None:
        output["differential_tally"] = dict(harness.TALLY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    from tests.oracle import harness

    harness.TALLY.update(getattr(node, "workeroutput", {}).get("differential_tally", {}))


def pytest_terminal_summary(terminalreporter):
    """The differential suites' count (tests/oracle, tests/differential): "N cases, M identical"."""
    import sys

    harness = sys.modules.get("tests.oracle.harness")
    line = harness.tally_line() if harness is not None else None
    if line:
        terminalreporter.write_line(line)
