"""The control plane's push debounce (docs/mesh.md, docs/xds.md: "a change is debounced (100 ms)", istiod's
PILOT_DEBOUNCE_AFTER): edits that arrive while the push loop waits out the window are one push, taken from
the first edit's time. The wait is the loop's injected `sleep`, held on an event here, so the test decides
when the window ends: no wall-clock window, no sleeps."""
from __future__ import annotations

import asyncio

from control.cli.control import build_parser
from control.serve import DEFAULT_DEBOUNCE, ControlPlane

SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 80}}]}}
"""


class HeldWindow:
    """The push loop's sleep: records each window asked for and returns only when the test lets it."""

    def __init__(self) -> None:
        self.windows: list[float] = []
        self.release = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.windows.append(seconds)
        await self.release.wait()
        self.release.clear()

    async def entered(self, n: int) -> None:
        """Yield to the loop until the push loop waits in its n-th window (bounded: a few hundred turns)."""
        for _ in range(500):
            if len(self.windows) >= n:
                return
            await asyncio.sleep(0)  # one turn of the loop: the push loop is in-process, a bounded count of turns
        raise AssertionError(f"the push loop never entered window {n}: {self.windows}")


def test_the_default_debounce_is_100_ms():
    assert DEFAULT_DEBOUNCE == 0.1
    assert build_parser().parse_args(["serve", "--config-dir", "x"]).debounce == 0.1


async def test_edits_inside_the_window_are_one_push_from_the_first_edit(tmp_path):
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a"))
    now = [1000.0]
    window = HeldWindow()
    cp = ControlPlane(str(tmp_path), clock=lambda: now[0], sleep=window)
    pushed_at: list[float] = []
    push = cp.push

    async def recording_push(changed_at: float):
        pushed_at.append(changed_at)
        return await push(changed_at)

    cp.push = recording_push
    await cp.start(watch=False)
    try:
        await window.entered(1)  # the first push waits out its window too
        window.release.set()
        await cp.wait_push(0)
        assert cp.pushes == 1 and window.windows == [DEFAULT_DEBOUNCE]

        for i, name in enumerate(("b", "c", "d")):  # three edits, 30 ms apart on the control plane's clock
            now[0] = 2000.0 + 0.03 * i
            (tmp_path / f"{name}.yaml").write_text(SERVICE.format(name=name))
            assert await cp.refresh()
        await window.entered(2)
        assert cp.pushes == 1  # nothing pushed while the window is open
        window.release.set()
        await cp.wait_push(1)
        assert cp.pushes == 2 and window.windows == [DEFAULT_DEBOUNCE, DEFAULT_DEBOUNCE]
        assert pushed_at[-1] == 2000.0  # the push is timed from the first edit of the burst
        assert sorted(r.name for r in cp.resources if r.kind == "Service") == ["a", "b", "c", "d"]
        # no change since: no further window opened. No waiting needed: wait_push returns only after the push
        # loop, which does not yield between the end of a push and its wait for the next change (or, were a
        # change pending, the window's sleep, which records the window first), has got that far
        assert len(window.windows) == 2
    finally:
        window.release.set()
        await cp.stop()


def registering(name: str):
    from control.xds.node import node_id, parse_node
    return parse_node({"id": node_id("sidecar", "127.0.0.1", name, "default"),
                       "metadata": {"INSTANCE_IPS": "127.0.0.1", "INBOUND_PORT": 20001, "LABELS": {"app": "a"}}})


async def started(tmp_path, window: HeldWindow, **kwargs) -> ControlPlane:
    """A control plane past its first push (which, a config load, waits out a window)."""
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a"))
    cp = ControlPlane(str(tmp_path), clock=lambda: 0.0, sleep=window, **kwargs)
    await cp.start(watch=False)
    await window.entered(1)
    window.release.set()
    await cp.wait_push(0)
    return cp


async def test_a_registration_is_pushed_without_a_window_unless_eds_debounce(tmp_path):
    """PILOT_ENABLE_EDS_DEBOUNCE off: registrations come from proxies' requests, not from an editor's burst of
    writes; a registration is pushed at once (its push only computes the assignments of the services it moves)."""
    window = HeldWindow()
    cp = await started(tmp_path, window)
    try:
        cp.connect(registering("a-0"))
        await cp.wait_push(1)  # no window to release: the push ran at once
        assert window.windows == [DEFAULT_DEBOUNCE] and cp.last_push.proxies == 1
        assert not build_parser().parse_args(["serve", "--config-dir", "x"]).eds_debounce
    finally:
        window.release.set()
        await cp.stop()


async def test_with_eds_debounce_a_registration_waits_out_the_window(tmp_path):
    window = HeldWindow()
    cp = await started(tmp_path, window, eds_debounce=True)
    try:
        cp.connect(registering("a-0"))
        await window.entered(2)
        assert cp.pushes == 1
        window.release.set()
        await cp.wait_push(1)
        assert window.windows == [DEFAULT_DEBOUNCE, DEFAULT_DEBOUNCE]
        assert build_parser().parse_args(["serve", "--config-dir", "x", "--eds-debounce"]).eds_debounce
    finally:
        window.release.set()
        await cp.stop()


async def test_a_registration_with_a_config_change_pending_waits_with_it(tmp_path):
    window = HeldWindow()
    cp = await started(tmp_path, window)
    try:
        (tmp_path / "b.yaml").write_text(SERVICE.format(name="b"))
        assert await cp.refresh()
        cp.connect(registering("a-0"))
        await window.entered(2)  # the config change opened a window: the registration joins it
        assert cp.pushes == 1
        window.release.set()
        await cp.wait_push(1)
        assert cp.last_push.full and cp.last_push.proxies == 1
        cp.connect(registering("a-1"))  # the pending config change went with that push: no window now
        await cp.wait_push(2)
        assert len(window.windows) == 2
    finally:
        window.release.set()
        await cp.stop()
