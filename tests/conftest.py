"""Shared fixtures: a controllable upstream, an in-process proxy, a `pyproxy run` process (tests/support/).

Imports happen inside the fixtures, so collecting unrelated tests never imports the proxy.
"""
from __future__ import annotations

import pytest


@pytest.fixture
async def upstream_factory():
    """`await upstream_factory(name)` -> a started `TestUpstream`; all are closed after the test."""
    from tests.support.upstream import TestUpstream

    started: list[TestUpstream] = []

    async def make(name: str = "upstream", handler=None) -> TestUpstream:
        up = await TestUpstream(name=name, handler=handler).start()
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
    """`await proxy_factory(bootstrap_dict)` -> a `RunningProxy`; all are stopped after the test."""
    from tests.support.proxy import run_proxy

    stack = []

    async def make(config: dict):
        cm = run_proxy(config)
        running = await cm.__aenter__()
        stack.append(cm)
        return running

    yield make
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


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
