"""The demo's state file (pyproxy/demo_state.py): meshctl follows a running demo, never a dead one's."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from control.cli.proxy import DEFAULT_CONTROL, _control
from pyproxy.demo_state import clear_state, read_state, state_path, write_state


class Args:
    control = None


def test_meshctl_reads_the_running_demos_control_address_and_flags_and_env_win(monkeypatch, tmp_path):
    monkeypatch.setenv("PYPROXY_MESH_STATE", str(tmp_path / "s" / "demo.json"))
    monkeypatch.delenv("MESHCTL_CONTROL", raising=False)
    assert _control(Args()) == DEFAULT_CONTROL  # no demo
    path = write_state({"control": "http://127.0.0.1:23456/"})
    assert path == tmp_path / "s" / "demo.json" and json.loads(path.read_text())["pid"] == os.getpid()
    assert _control(Args()) == "http://127.0.0.1:23456"
    monkeypatch.setenv("MESHCTL_CONTROL", "http://127.0.0.1:1")
    assert _control(Args()) == "http://127.0.0.1:1"
    args = Args()
    args.control = "http://127.0.0.1:2"
    assert _control(args) == "http://127.0.0.1:2"
    clear_state()
    assert not path.exists()


def test_a_dead_demos_file_is_ignored_and_another_demos_file_is_not_removed(monkeypatch, tmp_path):
    monkeypatch.setenv("PYPROXY_MESH_STATE", str(tmp_path / "demo.json"))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    state_path().write_text(json.dumps({"pid": dead_pid, "control": "http://127.0.0.1:9"}))
    assert read_state() is None
    state_path().write_text(json.dumps({"pid": os.getppid(), "control": "http://127.0.0.1:9"}))  # alive, not us
    assert read_state()["control"] == "http://127.0.0.1:9"
    clear_state()
    assert state_path().exists()
    state_path().write_text("not json")
    assert read_state() is None
