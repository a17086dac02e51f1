"""Where a running `make demo` says what it started, so `meshctl` needs no flags while it runs.

The demo picks its ports at random (several meshes, or anything already on 15010, can run side by side), so
`meshctl proxy-status` with istioctl's default control address would find nothing. Instead the demo writes one
JSON file, the state file, and `meshctl` reads its `control` address when neither `--control` nor
$MESHCTL_CONTROL says otherwise:

    {"pid": 4242, "control": "http://127.0.0.1:P", "secure": "https://127.0.0.1:S", "gateway": "http://...",
     "workdir": "/tmp/pyproxy-mesh-demo-x", "proxies": {"reviews-v1": {"admin": A, "inbound": I, ...}, ...},
     "pids": {"control-plane": 4243, "reviews-v1-sidecar": 4250, ...}}

Path: $PYPROXY_MESH_STATE, else $XDG_STATE_HOME/pyproxy-mesh/demo.json (~/.local/state/...). A file whose
`pid` is no longer alive (a demo killed with SIGKILL) is ignored, so a stale file never points meshctl at ports
some other program may now own. The demo removes the file when it stops.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

ENV = "PYPROXY_MESH_STATE"


def state_path() -> pathlib.Path:
    explicit = os.environ.get(ENV)
    if explicit:
        return pathlib.Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return pathlib.Path(base) / "pyproxy-mesh" / "demo.json"


def write_state(state: dict[str, Any]) -> pathlib.Path:
    """Atomically (temp file + rename): a meshctl reading at the same moment sees the old file or the new one."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **state}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def read_state() -> dict[str, Any] | None:
    """The running demo's state, or None (no file, unreadable, or its demo is gone)."""
    try:
        state = json.loads(state_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not _alive(state.get("pid")):
        return None
    return state


def clear_state() -> None:
    """Remove the file if this process wrote it (another demo's file is left alone)."""
    path = state_path()
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass
