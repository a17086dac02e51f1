"""`free_ports` (pyproxy/demo_mesh.py): the ports a demo mesh, or a test's mesh, hands its processes to bind later.

Real sockets on 0.0.0.0 of this machine, in a range the test chooses itself ($PYPROXY_PORT_RANGE)."""
from __future__ import annotations

import socket

import pytest

from pyproxy import demo_mesh
from pyproxy.demo_mesh import PORT_RANGE_ENV, free_ports, port_range


@pytest.fixture
def own_range(monkeypatch):
    """A range of 16 ports that this test's process picks from, starting again from an unset cursor."""
    monkeypatch.setattr(demo_mesh, "_cursor", [])

    def use(low: int, high: int) -> None:
        monkeypatch.setenv(PORT_RANGE_ENV, f"{low}-{high}")
    return use


def test_the_range_comes_from_the_environment_and_defaults_below_the_ephemeral_range(monkeypatch):
    monkeypatch.delenv(PORT_RANGE_ENV, raising=False)
    low, high = port_range()
    assert low == 10000 and high == demo_mesh._ephemeral_low() - 1
    monkeypatch.setenv(PORT_RANGE_ENV, "20000-20999")
    assert port_range() == (20000, 20999)
    monkeypatch.setenv(PORT_RANGE_ENV, "20000-20000")
    assert port_range() == (20000, 20000)


@pytest.mark.parametrize("spec", ["20000", "a-b", "20000-19999", "80-90", "60000-70000", "1-2-3"])
def test_a_bad_range_is_refused_with_the_variable_named(monkeypatch, spec):
    monkeypatch.setenv(PORT_RANGE_ENV, spec)
    with pytest.raises(ValueError, match=PORT_RANGE_ENV):
        port_range()


def test_ports_are_handed_out_in_order_and_not_again_until_the_range_wraps(own_range):
    """Two calls in one process never return the same port while the range lasts: a mesh of an earlier test
    may still hold the first call's ports."""
    low = _free_block(16)
    own_range(low, low + 15)
    first = free_ports(5)
    second = free_ports(5)
    assert len(set(first + second)) == 10
    steps = [(b - a) % 16 for a, b in zip(first + second, (first + second)[1:])]
    assert steps == [1] * 9, first + second  # consecutive, wrapping from the top of the range to its bottom
    third = free_ports(6)
    assert sorted(first + second + third) == list(range(low, low + 16))  # the whole range, once


def test_a_port_in_use_is_skipped_and_a_full_range_is_an_error(own_range):
    low = _free_block(4)
    own_range(low, low + 3)
    held = socket.socket()
    held.bind(("0.0.0.0", low + 1))
    try:
        demo_mesh._cursor[:] = [low]
        assert free_ports(3) == [low, low + 2, low + 3]
        with pytest.raises(OSError, match=f"could not find 4 free ports between {low} and {low + 3}"):
            free_ports(4)
    finally:
        held.close()


def test_each_test_worker_picks_from_a_slice_of_its_own(monkeypatch):
    from tests.conftest import _own_port_range

    monkeypatch.setenv(PORT_RANGE_ENV, "10000-10299")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    slices = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv(PORT_RANGE_ENV, "10000-10299")
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        _own_port_range()
        slices.append(port_range())
    assert slices == [(10000, 10099), (10100, 10199), (10200, 10299)]


def _free_block(size: int) -> int:
    """The start of `size` consecutive ports below the ephemeral range that nothing holds right now."""
    for low in range(demo_mesh._ephemeral_low() - size - 1, 10000, -size * 7):
        socks = []
        try:
            for port in range(low, low + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("0.0.0.0", port))
            return low
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError(f"no {size} consecutive free ports")
