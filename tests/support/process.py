"""Run `pyproxy` as a real process for end-to-end tests, and always stop it.

`Process` is one subprocess with stdout/stderr in files (so a chatty process never blocks on a full pipe),
stopped by PID: SIGTERM, then SIGKILL after a grace period (the live mesh in mesh.py builds on it); `poll`
awaits a probe with a deadline. `ProxyProcess` writes a bootstrap to a file, starts
`pyproxy run -c FILE [args]`, finds the ports it listens on from /proc (a listener on port 0 is only known
to the kernel), measures its memory (VmRSS), and also stops any worker processes it started.
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable

import aiohttp
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DEADLINE = 20.0  # seconds any readiness wait may take before the test fails (a hang guard, not a threshold)


def pyproxy_command() -> list[str]:
    """The installed `pyproxy` console script next to this interpreter, else `python -m pyproxy`."""
    exe = pathlib.Path(sys.executable).parent / "pyproxy"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("pyproxy")
    return [found] if found else [sys.executable, "-m", "pyproxy"]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """`pyproxy ARGS` to completion; text stdout/stderr."""
    return subprocess.run([*pyproxy_command(), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = pathlib.Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on (IPv4 and IPv6), from /proc/net/tcp*."""
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # state LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def children(pid: int) -> list[int]:
    """Direct child PIDs of `pid` (scanning /proc/*/stat for their parent PID)."""
    out = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


async def poll(what: str, probe: Callable[[], Awaitable[Any]], timeout: float = DEADLINE,
               interval: float = 0.05, detail: Callable[[], str] = lambda: "") -> Any:
    """Await `probe()` until it returns something truthy; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await probe()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            last = err
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s (last: {last!r})\n{detail()}")
        await asyncio.sleep(interval)  # poll interval of a bounded wait


class Process:
    """One subprocess with stdout/stderr in files; stopped by PID."""

    def __init__(self, name: str, argv: list[str], workdir: pathlib.Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.env = env or {}
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def __repr__(self) -> str:
        state = "not started" if self.proc is None else (
            f"pid {self.proc.pid} " + ("running" if self.proc.poll() is None else f"exited {self.proc.returncode}"))
        return f"<{type(self).__name__} {self.name} {state}>"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Process":
        # append: a restarted process keeps its earlier output in the same files
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO,
                                         env={**os.environ, **self.env})
        self.started_at = time.monotonic()
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self, tail: int | None = 4000) -> str:
        """stdout then stderr; the last `tail` characters (None: all of it)."""
        text = ""
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL, no goodbye (a crash)."""
        if self.running():
            self.proc.kill()
            self.proc.wait(5)

    def terminate(self) -> None:
        """SIGTERM without waiting (a sidecar then drains for its drain time)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)

    async def exited(self, timeout: float = DEADLINE) -> int:
        """Wait for the process to exit on its own; its exit code."""
        async def gone() -> bool:
            return not self.running()
        await poll(f"{self.name} exits", gone, timeout, detail=self.output)
        return self.proc.returncode

    @property
    def stop_grace(self) -> float:
        """How long a SIGTERMed process may take before SIGKILL."""
        return 5.0

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after `stop_grace` seconds; the exit code."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            self.proc.wait(self.stop_grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if _alive(self.proc.pid):  # pragma: no cover - a zombie the kernel has not reaped
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


class ProxyProcess(Process):
    """`pyproxy run -c bootstrap.yaml ARGS`; `stop()` also stops the worker processes it started."""

    def __init__(self, config: dict, workdir: pathlib.Path, *args: str):
        self.config_path = workdir / "bootstrap.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        super().__init__("pyproxy", [*pyproxy_command(), "run", "-c", str(self.config_path), *args], workdir)
        self.known_children: set[int] = set()

    async def wait_listening(self, count: int, pid: int | None = None, timeout: float = 20.0) -> set[int]:
        """Poll /proc until `pid` (default: the proxy) listens on `count` ports; return them."""
        pid = pid or self.pid
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            self.known_children.update(children(self.pid))
            ports = listening_ports(pid)
            if len(ports) >= count:
                return ports
            if time.monotonic() > deadline:
                raise AssertionError(f"pyproxy pid {pid} listens on {ports} after {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.05)  # poll interval of a bounded wait

    async def wait_workers(self, count: int, port: int, timeout: float = 30.0) -> set[int]:
        """Poll until `count` child processes of the proxy each listen on `port`; return their PIDs."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            kids = children(self.pid)
            self.known_children.update(kids)
            ready = {pid for pid in kids if port in listening_ports(pid)}
            if len(ready) >= count:
                return ready
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(ready)} of {count} workers listen on {port}:\n{self.output()}")
            await asyncio.sleep(0.05)  # poll interval of a bounded wait

    def rss(self) -> int:
        return rss_bytes(self.pid)

    @property
    def stop_grace(self) -> float:
        return 10.0

    def stop(self) -> int | None:
        """SIGTERM the proxy (and, after it, any worker it started), SIGKILL what is left; returns its exit code."""
        if self.proc is None:
            return None
        self.known_children.update(children(self.pid) if self.proc.poll() is None else [])
        code = super().stop()
        deadline = time.monotonic() + self.stop_grace
        for pid in self.known_children:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # poll interval of a bounded wait for the exit
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        return code
