"""The live-mesh fixture for the end-to-end tests (tests/support/mesh.py)."""
from __future__ import annotations

import pathlib

import pytest


@pytest.fixture
def mesh(tmp_path: pathlib.Path):
    """A `Mesh` in the test's temp directory; every process it started is stopped afterwards, pass or fail."""
    from tests.support.mesh import Mesh

    m = Mesh(tmp_path)
    try:
        yield m
    finally:
        m.stop()
