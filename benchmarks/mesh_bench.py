"""What a sidecar pair adds: latency at a fixed rate through client sidecar → server sidecar, mTLS STRICT.

    .venv/bin/python benchmarks/mesh_bench.py [--rate 1000] [--duration 2] [--rounds 3] [--pairs ...]

The mesh is the demo's own (`python -m pyproxy.demo_mesh`, what `make demo` runs: control plane with its CA,
bookinfo, STRICT mTLS, Telemetry access logs, Istio metrics), started once per pair kind with `--envoy` naming
the workloads whose sidecars are real Envoy (through `pyproxy agent`: config over gRPC ADS, certificate over
SDS). The measured hop is productpage's sidecar (outbound listener, `Host: details:9080`) → details' sidecar
(inbound, mTLS) → the details app, `GET /details/0`; the baseline is the same request straight to the details
app. Both go through benchmarks/loadgen.py's open loop (a fixed send schedule, latency from each request's
scheduled time), rounds interleaved (direct, pair, direct, pair ...), percentiles over all kept rounds pooled;
"added" is pair minus direct at the same percentile. The generator sleeps on a timerfd until just before each
send (`--pacer timer`): polling, it would keep one of this machine's CPUs busy, and `perf sched` showed the
pair's processes waiting behind it for a scheduler tick, which doubled the pair's p99. Pair kinds:

* `pyproxy`: both sidecars pyproxy;
* `envoy`: both Envoy 1.40 (needs `make envoy` or $ENVOY_BIN);
* `envoy-to-pyproxy`: Envoy client sidecar, pyproxy server sidecar;
* `pyproxy-to-envoy`: pyproxy client sidecar, Envoy server sidecar.

Beside each pair, in the same interleaved rounds and the same running mesh, a **floor pair**: two
benchmarks/floor_proxy.py processes chained in front of the same app (plain HTTP, no TLS, no routing, no
stats, no log). It is what two extra Python processes on the request's path cost on this machine by themselves
(two more wake-ups each way, two more loopback hops), the least any pair of Python sidecars can add here; the
row prints it so a reader can tell the sidecars' own cost from the machine's (`--no-floor` leaves it out).
The row also gives each sidecar's CPU per request over the pair rounds (with its children: Envoy under
`pyproxy agent`), from /proc; the demo's state file names every process it started (`pids`).

Everything is on 127.0.0.1; every process is the demo's and is stopped with it (Ctrl-C path, then SIGKILL of the
process group by PID). Not pinned: the demo runs 15+ processes on this machine's CPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import procs, report  # noqa: E402

LOADGEN = REPO / "benchmarks" / "loadgen.py"
FLOOR = REPO / "benchmarks" / "floor_proxy.py"
CLIENT, SERVER = "productpage-v1", "details-v1"
PAIRS = {  # kind -> the workloads whose sidecar is Envoy
    "pyproxy": (),
    "envoy": (CLIENT, SERVER),
    "envoy-to-pyproxy": (CLIENT,),
    "pyproxy-to-envoy": (SERVER,),
}
PATH = "/details/0"


def log(message: str) -> None:
    print(f"[mesh-bench] {message}", flush=True)


class DemoMesh:
    """`python -m pyproxy.demo_mesh` running until `stop()`; its state file says where everything is."""

    def __init__(self, workdir: Path, envoy: tuple[str, ...]):
        self.state_path = workdir / "state.json"
        self.log_path = workdir / f"demo-{'-'.join(envoy) or 'pyproxy'}.log"
        argv = [sys.executable, "-m", "pyproxy.demo_mesh", "--no-prometheus"]
        for name in envoy:
            argv += ["--envoy", name]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=REPO, process_group=0,
                                         env={**os.environ, "PYPROXY_MESH_STATE": str(self.state_path)})

    def wait_running(self, timeout: float = 180.0) -> dict:
        deadline = time.monotonic() + timeout
        while "running; Ctrl-C to stop" not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"the demo mesh did not come up: {tail}")
            time.sleep(0.5)
        return json.loads(self.state_path.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the demo's Ctrl-C: it stops every process it started
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def open_loop(url: str, rate: float, duration: float, host: str | None = None, pacer: str = "timer") -> dict:
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        out = Path(tmp) / "loadgen.json"  # a file, not stdout: see benchmarks/run.py _run_loadgen
        argv = [sys.executable, str(LOADGEN), url, "--rate", str(rate), "--duration", str(duration),
                "--connections", "16", "--raw", "--json-file", str(out), "--pacer", pacer]
        if host:
            argv += ["--host", host]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        if done.returncode != 0:
            raise RuntimeError(f"loadgen: {done.stderr.strip()}")
        return json.loads(out.read_text())


def start_floor_pair(pm: procs.Processes, app_port: int) -> int:
    """Two floor proxies chained in front of the app (client → outer → inner → app); the outer one's port."""
    outer, inner = procs.free_ports(2)
    inner_proc = pm.start("floor-inner", [sys.executable, str(FLOOR), "--port", str(inner),
                                          "--backend-port", str(app_port)])
    procs.wait_listening(inner_proc, inner)
    outer_proc = pm.start("floor-outer", [sys.executable, str(FLOOR), "--port", str(outer),
                                          "--backend-port", str(inner)])
    procs.wait_listening(outer_proc, outer)
    return outer


class SidecarCpu:
    """CPU seconds the two sidecars (with their children: `pyproxy agent` runs Envoy) used over the kept pair
    rounds, per request: at a fixed low rate each request wakes each sidecar on its own, so this is far above
    the CPU per request under saturation (`make bench`)."""

    def __init__(self, state: dict):
        pids = state.get("pids") or {}
        self.pids = {side: pids.get(f"{name}-sidecar") for side, name in (("client", CLIENT), ("server", SERVER))}
        self.seconds = dict.fromkeys(self.pids, 0.0)
        self.requests = 0

    def snapshot(self) -> dict[str, float]:
        return {side: procs.cpu_seconds(pid) if pid else 0.0 for side, pid in self.pids.items()}

    def add(self, before: dict[str, float], after: dict[str, float], requests: int) -> None:
        for side in self.seconds:
            self.seconds[side] += after[side] - before[side]
        self.requests += requests

    def per_request_us(self, side: str) -> float | None:
        if not self.pids[side] or not self.requests:
            return None
        return self.seconds[side] / self.requests * 1e6


def measure(state: dict, rate: float, duration: float, rounds: int, pacer: str = "timer",
            floor_port: int | None = None, cpu: SidecarCpu | None = None) -> dict[str, report.FixedRate]:
    """{"direct", "pair"[, "floor"]: FixedRate} at `rate`, `rounds` kept rounds each, interleaved; disturbed
    rounds retaken (at most `rounds` times per path). `cpu` accumulates the sidecars' CPU over kept pair rounds."""
    proxies = state["proxies"]
    paths = {"direct": (f"http://127.0.0.1:{proxies[SERVER]['app']}{PATH}", None),
             "pair": (f"http://127.0.0.1:{proxies[CLIENT]['outbound']}{PATH}", "details:9080")}
    if floor_port is not None:
        paths["floor"] = (f"http://127.0.0.1:{floor_port}{PATH}", "details:9080")
    for url, host in paths.values():  # warm-up: connections, pools, TLS sessions
        open_loop(url, rate, 1.0, host, pacer)
    kept: dict[str, list[dict]] = {name: [] for name in paths}
    discarded = dict.fromkeys(paths, 0)
    while any(len(v) < rounds for v in kept.values()):
        for name, (url, host) in paths.items():
            if len(kept[name]) >= rounds:
                continue
            before = cpu.snapshot() if cpu is not None and name == "pair" else None
            result = open_loop(url, rate, duration, host, pacer)
            if result["errors"] and sum(result["errors"].values()):
                raise RuntimeError(f"{name}: errors {result['errors']}")
            if report.round_was_disturbed(result) and discarded[name] < rounds:
                discarded[name] += 1
                continue
            kept[name].append(result)
            if before is not None:
                cpu.add(before, cpu.snapshot(), result["completed"])
    return {name: report.fixed_rate_from_rounds(kept[name], discarded[name]) for name in paths}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second (default 1000)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per round (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="kept rounds per path (default 3)")
    p.add_argument("--pacer", choices=("timer", "spin"), default="timer",
                   help="how the generator waits for each send (benchmarks/loadgen.py --pacer; default timer)")
    p.add_argument("--no-floor", action="store_true", help="leave out the floor pair (benchmarks/floor_proxy.py × 2)")
    p.add_argument("--pairs", default=",".join(PAIRS), help=f"comma list of {', '.join(PAIRS)} (default all)")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.pairs.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in PAIRS]
    if unknown:
        p.error(f"--pairs: unknown {unknown[0]!r}; one of {', '.join(PAIRS)}")
    if args.rate <= 0 or args.duration <= 0 or args.rounds < 1:
        p.error("--rate and --duration must be > 0, --rounds ≥ 1")
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
          f"{platform.python_version()}; load average at start {os.getloadavg()[0]:.2f}; "
          f"{args.rate:g} req/s, {args.rounds} × {args.duration:g} s rounds per path, pacer {args.pacer}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        for kind in kinds:
            workdir = Path(tmp) / kind
            workdir.mkdir()
            log(f"{kind}: starting the demo mesh" + (f" with Envoy for {', '.join(PAIRS[kind])}" if PAIRS[kind] else ""))
            mesh = DemoMesh(workdir, PAIRS[kind])
            try:
                with procs.Processes(workdir) as pm:  # the floor pair's processes, stopped by PID on the way out
                    state = mesh.wait_running()
                    floor_port = None if args.no_floor else start_floor_pair(pm, state["proxies"][SERVER]["app"])
                    cpu = SidecarCpu(state)
                    got = measure(state, args.rate, args.duration, args.rounds, args.pacer, floor_port, cpu)
            except (RuntimeError, OSError, subprocess.TimeoutExpired, procs.NotReady) as exc:
                log(f"{kind}: failed: {exc}")
                rows.append(f"| {kind} | failed: {report.one_line(str(exc), 120)} | | | | | | |")
                continue
            finally:
                mesh.stop()
            direct, pair, floor = got["direct"], got["pair"], got.get("floor")
            floor_cell = (f"{floor.p50_us - direct.p50_us:+,.0f} / {floor.p99_us - direct.p99_us:+,.0f} µs"
                          if floor else "—")
            cpu_cell = " / ".join("—" if v is None else f"{v:,.0f}"
                                  for v in (cpu.per_request_us("client"), cpu.per_request_us("server"))) + " µs"
            rows.append(f"| {kind} | {pair.p50_us - direct.p50_us:+,.0f} µs | {pair.p99_us - direct.p99_us:+,.0f} µs "
                        f"| {floor_cell} | {cpu_cell} | {pair.p50_us:,.0f} / {pair.p99_us:,.0f} µs "
                        f"| {direct.p50_us:,.0f} / {direct.p99_us:,.0f} µs | {pair.rounds}+{pair.discarded} |")
            log(f"{kind}: added p50 {pair.p50_us - direct.p50_us:+,.0f} µs, p99 {pair.p99_us - direct.p99_us:+,.0f} µs"
                + (f"; floor pair {floor_cell}" if floor else ""))
    print(f"\nA sidecar pair at {args.rate:g} req/s (mTLS STRICT, {CLIENT} → {SERVER}, GET {PATH}):\n")
    print("| pair | added p50 | added p99 | floor pair added p50 / p99 | sidecar CPU/req client / server "
          "| pair p50 / p99 | direct p50 / p99 | rounds kept+retaken |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
