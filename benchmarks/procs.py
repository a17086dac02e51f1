"""Process handling for the benchmark: start servers pinned to CPUs, wait until they answer, stop them by PID.

Everything `run.py` starts goes through `Processes`, a context manager that stops what it started when the
block ends, on success, error or Ctrl-C alike: SIGTERM to the process, SIGKILL after a grace period, then
SIGKILL to any descendant (nginx workers, pyproxy workers) recorded before the stop that is still alive with
the same command line. Nothing is stopped by name. Each process gets its own process group (in run.py's
session), so a Ctrl-C in the terminal reaches only run.py, which then stops the rest in order. It stays in
run.py's session, so with the kernel's autogroup scheduling all of the benchmark's processes are scheduled
as one group, as programs started from one terminal are.

CPU time is read from /proc/<pid>/stat (utime + stime) over a process and its descendants, so the cost
of a request in each server can be reported in CPU microseconds, which is steadier than requests/s on a
machine shared with other work.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free a moment ago: bind port 0 on each socket, read, close all."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _read_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may contain spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren, ...)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None:
                parent_of[int(entry)] = int(stat[1])  # field 4: ppid
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parent_of.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by `pid` and its live descendants."""
    total_ticks = 0
    for each in [pid, *descendants(pid)]:
        stat = _read_stat(each)
        if stat is not None:
            total_ticks += int(stat[11]) + int(stat[12])  # fields 14, 15: utime, stime
    return total_ticks / CLOCK_TICKS


def rss_bytes(pid: int) -> int | None:
    """Resident memory (VmRSS) of `pid` and its live descendants, in bytes; None if it is gone."""
    total, seen = 0, False
    for each in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                seen = True
    return total if seen else None


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path
    known_children: dict[int, bytes] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def remember_children(self) -> None:
        for child in descendants(self.pid):
            cmd = _cmdline(child)
            if cmd is not None:
                self.known_children[child] = cmd


class Processes:
    """Starts processes and guarantees they are stopped, by PID, when the `with` block ends."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[ManagedProcess] = []

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    def start(self, name: str, argv: list[str], *, cpus: frozenset[int] | None = None) -> ManagedProcess:
        log_path = self.logdir / f"{name}.log"
        log = open(log_path, "wb")
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
        finally:
            log.close()
        proc = ManagedProcess(name, argv, popen, log_path)
        self.started.append(proc)
        return proc

    def stop(self, proc: ManagedProcess, grace: float = 5.0) -> None:
        if proc.alive():
            proc.remember_children()
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        for child, cmd in proc.known_children.items():
            if _cmdline(child) == cmd:  # still the same process, not a reused PID
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            self.stop(proc)


class NotReady(Exception):
    """A server did not come up; the message says why (exit code and log tail, or what polling saw)."""


def exited_reason(proc: ManagedProcess) -> str:
    """`exited with code N: <its last line of output>`."""
    tail = proc.log_tail(1)
    return f"exited with code {proc.popen.returncode}" + (f": {tail}" if tail else " (no output)")


def _poll(proc: ManagedProcess, probe, timeout: float, what: str) -> None:
    """Call `probe()` (None when satisfied, else what it saw) until satisfied; NotReady if `proc` exits first."""
    deadline = time.monotonic() + timeout
    last = "nothing tried"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise NotReady(exited_reason(proc))
        seen = probe()
        if seen is None:
            return
        last = seen
        time.sleep(0.05)
    raise NotReady(f"{what} after {timeout:.0f}s ({last})")


def wait_listening(proc: ManagedProcess, port: int, timeout: float = 10.0) -> None:
    """Until 127.0.0.1:`port` accepts a connection; NotReady if `proc` exits or time runs out."""

    def accepts() -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return None
        except OSError as exc:
            return str(exc)

    _poll(proc, accepts, timeout, f"not listening on 127.0.0.1:{port}")


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_http_ok(proc: ManagedProcess, port: int, path: str, timeout: float = 15.0) -> None:
    """Until GET 127.0.0.1:`port``path` answers 200 (Envoy's admin /ready); NotReady otherwise."""

    def answers_200() -> str | None:
        try:
            status, _ = http_get(port, path, timeout=1.0)
        except (OSError, http.client.HTTPException) as exc:
            return f"GET {path}: {exc}"
        return None if status == 200 else f"GET {path} answered {status}"

    _poll(proc, answers_200, timeout, "not ready")
