"""Run `pyproxy` as a real process for end-to-end tests, and always stop it.

`ProxyProcess` writes a bootstrap to a file, starts `pyproxy run -c FILE [args]` with stdout/stderr to
files (so a chatty proxy never blocks on a full pipe), finds the ports it listens on from /proc (a
listener on port 0 is only known to the kernel), measures its memory (VmRSS), and stops it and any
worker processes it started by PID: SIGTERM, then SIGKILL after a grace period.
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

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]


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


class ProxyProcess:
    def __init__(self, config: dict, workdir: pathlib.Path, *args: str):
        self.config_path = workdir / "bootstrap.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.stdout_path = workdir / "pyproxy.stdout"
        self.stderr_path = workdir / "pyproxy.stderr"
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.known_children: set[int] = set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "ProxyProcess":
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([*pyproxy_command(), "run", "-c", str(self.config_path), *self.args],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO)
        return self

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    async def wait_listening(self, count: int, pid: int | None = None, timeout: float = 20.0) -> set[int]:
        """Poll /proc until `pid` (default: the proxy) listens on `count` ports; return them."""
        pid = pid or self.pid
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"pyproxy exited with {self.proc.returncode}:\n{self.output()}")
            self.known_children.update(children(self.pid))
            ports = listening_ports(pid)
            if len(ports) >= count:
                return ports
            if time.monotonic() > deadline:
                raise AssertionError(f"pyproxy pid {pid} listens on {ports} after {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.05)

    async def wait_workers(self, count: int, port: int, timeout: float = 30.0) -> set[int]:
        """Poll until `count` child processes of the proxy each listen on `port`; return their PIDs."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"pyproxy exited with {self.proc.returncode}:\n{self.output()}")
            kids = children(self.pid)
            self.known_children.update(kids)
            ready = {pid for pid in kids if port in listening_ports(pid)}
            if len(ready) >= count:
                return ready
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(ready)} of {count} workers listen on {port}:\n{self.output()}")
            await asyncio.sleep(0.05)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the proxy (and, after it, any worker it started), SIGKILL what is left; returns its exit code."""
        if self.proc is None:
            return None
        self.known_children.update(children(self.pid) if self.proc.poll() is None else [])
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        deadline = time.monotonic() + grace
        for pid in self.known_children:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        return self.proc.returncode
