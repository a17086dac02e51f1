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

from benchmarks import report  # noqa: E402

LOADGEN = REPO / "benchmarks" / "loadgen.py"
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


def measure(state: dict, rate: float, duration: float, rounds: int,
            pacer: str = "timer") -> tuple[report.FixedRate, report.FixedRate]:
    """(direct, through the pair) at `rate`, `rounds` kept rounds each, interleaved; disturbed rounds retaken
    (at most `rounds` times per path)."""
    proxies = state["proxies"]
    paths = {"direct": (f"http://127.0.0.1:{proxies[SERVER]['app']}{PATH}", None),
             "pair": (f"http://127.0.0.1:{proxies[CLIENT]['outbound']}{PATH}", "details:9080")}
    for url, host in paths.values():  # warm-up: connections, pools, TLS sessions
        open_loop(url, rate, 1.0, host, pacer)
    kept: dict[str, list[dict]] = {name: [] for name in paths}
    discarded = dict.fromkeys(paths, 0)
    while any(len(v) < rounds for v in kept.values()):
        for name, (url, host) in paths.items():
            if len(kept[name]) >= rounds:
                continue
            result = open_loop(url, rate, duration, host, pacer)
            if result["errors"] and sum(result["errors"].values()):
                raise RuntimeError(f"{name}: errors {result['errors']}")
            if report.round_was_disturbed(result) and discarded[name] < rounds:
                discarded[name] += 1
                continue
            kept[name].append(result)
    return (report.fixed_rate_from_rounds(kept["direct"], discarded["direct"]),
            report.fixed_rate_from_rounds(kept["pair"], discarded["pair"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second (default 1000)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per round (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="kept rounds per path (default 3)")
    p.add_argument("--pacer", choices=("timer", "spin"), default="timer",
                   help="how the generator waits for each send (benchmarks/loadgen.py --pacer; default timer)")
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
                state = mesh.wait_running()
                direct, pair = measure(state, args.rate, args.duration, args.rounds, args.pacer)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                log(f"{kind}: failed: {exc}")
                rows.append(f"| {kind} | failed: {report.one_line(str(exc), 120)} | | | | |")
                continue
            finally:
                mesh.stop()
            rows.append(f"| {kind} | {pair.p50_us - direct.p50_us:+,.0f} µs | {pair.p99_us - direct.p99_us:+,.0f} µs "
                        f"| {pair.p50_us:,.0f} / {pair.p99_us:,.0f} µs | {direct.p50_us:,.0f} / {direct.p99_us:,.0f} µs "
                        f"| {pair.rounds}+{pair.discarded} |")
            log(f"{kind}: added p50 {pair.p50_us - direct.p50_us:+,.0f} µs, p99 {pair.p99_us - direct.p99_us:+,.0f} µs")
    print(f"\nA sidecar pair at {args.rate:g} req/s (mTLS STRICT, {CLIENT} → {SERVER}, GET {PATH}):\n")
    print("| pair | added p50 | added p99 | pair p50 / p99 | direct p50 / p99 | rounds kept+retaken |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
