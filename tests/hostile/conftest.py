"""Fixtures of the hostile suite: a copy of examples/mesh to feed, and capped control-plane processes."""
from __future__ import annotations

import shutil

import pytest

from tests.hostile.test_control_serving import ControlPlane
from tests.integration.test_xds_server import EXAMPLES


@pytest.fixture
def config_dir(tmp_path):
    config = tmp_path / "mesh"
    shutil.copytree(EXAMPLES, config)
    return config


@pytest.fixture
def start(tmp_path):
    started: list[ControlPlane] = []

    async def run(config, *extra: str) -> ControlPlane:
        cp = ControlPlane(tmp_path, config, *extra).start()
        started.append(cp)
        return await cp.ready()
    yield run
    for cp in started:
        cp.stop()
