"""The first benchmark: client → backend directly, through pyproxy, and through nginx, in one run.

    .venv/bin/python benchmarks/run.py            # or: make bench [BENCH_ARGS="--duration 5"]

For each path (`direct`, `floor`, `pyproxy`, `pyproxy-compiled`, `envoy`, `nginx`) against the same backend
(`floor` is benchmarks/floor_proxy.py, the least a Python proxy on uvloop + httptools does per request):
1. a sanity GET (must answer 200 "hello world\\n"), then a 1 s closed-loop warm-up;
2. fixed-rate latency: the bundled open-loop generator (benchmarks/loadgen.py) at `--rate` (1,000 req/s) for
   `--latency-duration` s, latency counted from each request's scheduled send time;
3. throughput: wrk (`-t1 -c32 -d8s`, closed loop, keep-alive), or the bundled generator in closed-loop mode
   when wrk is missing; CPU time used by the proxy and the backend during it, per request.
The sidecar rows (`pyproxy-sidecar`, `pyproxy-compiled-sidecar`, `envoy-sidecar`) run a client sidecar's
features (configs.sidecar_bootstrap: Istio's default retry policy, istio.stats, an access log file, mTLS to the
origin's TLS port) and are measured for throughput only (steps 1 and 3).
Then a markdown table with pyproxy/nginx requests/s and the latency each proxy adds over direct, printed
and written to benchmarks/results/latest.md. See benchmarks/README.md for how to read it.

nginx and wrk come from Debian (`apt-get install -y nginx-light wrk`, as root) when missing; without them
the nginx row is skipped with a note and the bundled generator replaces wrk. Every process started here
(backend, nginx master and workers, pyproxy) is stopped by PID at the end, on error and Ctrl-C too.
Only 127.0.0.1 is used; ports are picked free at run time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from benchmarks import chart, configs, procs, report  # noqa: E402

BENCH_DIR = REPO / "benchmarks"
WRK_SCRIPT = BENCH_DIR / "wrk_report.lua"
LOADGEN = BENCH_DIR / "loadgen.py"
BACKEND = BENCH_DIR / "backend.py"
DEFAULT_OUTPUT = BENCH_DIR / "results" / "latest.md"
WARMUP_S = 1
TARGETS = ("direct", "floor", "pyproxy", "pyproxy-compiled", "envoy", "nginx",
           "pyproxy-sidecar", "pyproxy-compiled-sidecar", "envoy-sidecar")
# The rows that run a client sidecar's features (configs.sidecar_bootstrap): measured for throughput only; what a
# sidecar adds to latency is the sidecar-pair benchmark's (benchmarks/mesh_bench.py)
SIDECAR_TARGETS = ("pyproxy-sidecar", "pyproxy-compiled-sidecar", "envoy-sidecar")
# `make compiled` (scripts/build_compiled.py): the same pyproxy with its request path compiled by mypyc
COMPILED_TREE = REPO / "build" / "compiled"
FLOOR = BENCH_DIR / "floor_proxy.py"


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


class RowFailed(Exception):
    """This path could not be measured; the message is shown in its row."""


# ---------------------------------------------------------------------------------------------- tools


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def apt_install(alternatives: list[list[str]]) -> tuple[bool, str]:
    """`apt-get install -y` the first installable package set; `apt-get update` once if none was."""
    if os.geteuid() != 0:
        return False, "not root, so apt-get cannot install it"
    if shutil.which("apt-get") is None:
        return False, "no apt-get on this machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    last = ""
    for updated in (False, True):
        if updated:
            log("running: apt-get update")
            done = subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                return False, f"apt-get update failed: {done.stderr.strip().splitlines()[-1:]}"
        for packages in alternatives:
            command = ["apt-get", "install", "-y", "-q", *packages]
            log(f"running: {shlex.join(command)}")
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode == 0:
                return True, f"installed {' '.join(packages)} from Debian"
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
    return False, f"apt-get install failed: {last}"


def ensure_tools(install: bool) -> tuple[str | None, str | None, list[str]]:
    """(wrk path, nginx path, notes). Installs what is missing when `install` and possible."""
    notes: list[str] = []
    wrk, nginx = shutil.which("wrk"), find_nginx()
    if install:
        if wrk is None:
            log("wrk is missing; installing it")
            ok, why = apt_install([["wrk"]])
            notes.append(f"wrk: {why}")
            wrk = shutil.which("wrk")
        if nginx is None:
            log("nginx is missing; installing it")
            ok, why = apt_install([["nginx-light"], ["nginx"]])
            notes.append(f"nginx: {why}")
            nginx = find_nginx()
    if wrk is None:
        notes.append("wrk unavailable: throughput measured with the bundled loadgen (closed loop)")
    if nginx is None:
        notes.append("nginx unavailable: nginx row skipped, backend is benchmarks/backend.py")
    return wrk, nginx, notes


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0].split("Copyright")[0].strip() if text else "unknown"


def machine_facts(wrk: str | None, nginx: str | None) -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import httptools
        import uvloop

        libs = f"uvloop {uvloop.__version__}, httptools {httptools.__version__}"
    except ImportError:
        libs = "uvloop/httptools missing"
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "pyproxy"], capture_output=True, text=True)
    load1, load5, _ = os.getloadavg()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cpus": f"{os.cpu_count()} online, {len(os.sched_getaffinity(0))} usable",
        "kernel": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {platform.python_version()} ({libs})",
        "wrk": _first_line([wrk, "-v"]) if wrk else "not installed",
        "nginx": _first_line([nginx, "-v"]) if nginx else "not installed",
        "pyproxy": f"commit {commit}" + (" + uncommitted changes in pyproxy/" if dirty.stdout.strip() else ""),
        "load average at start": f"{load1:.2f} (1 min), {load5:.2f} (5 min)",
    }


# ------------------------------------------------------------------------------------------- servers


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def start_nginx(pm: procs.Processes, nginx: str, workdir: Path, role: str, directives, port: int, cpus):
    conf = _write(workdir / f"{role}.conf", configs.render_nginx(directives) + "\n")
    argv = [nginx, "-p", str(workdir), "-e", str(workdir / f"{role}.error.log"), "-c", str(conf)]
    proc = pm.start(f"nginx-{role}", argv, cpus=cpus)
    procs.wait_listening(proc, port)
    return proc


@dataclass(frozen=True)
class Origin:
    """The backend: its plain HTTP port and, when it is nginx, a port that requires mutual TLS (the sidecar rows
    originate ISTIO_MUTUAL-like mTLS to it) with the files a proxy presents there."""

    port: int
    mtls_port: int | None = None
    client_tls: configs.TlsFiles | None = None
    peer_uri: str | None = None  # the URI SAN the origin's certificate carries, checked by the proxies


def start_backend(pm, kind: str, nginx: str | None, workdir: Path, cpus, mtls: bool = False
                  ) -> tuple[Origin, procs.ManagedProcess, str]:
    if kind == "nginx":
        assert nginx is not None
        port, mtls_port = procs.free_ports(2)
        pki = None
        if mtls:
            from benchmarks.tls_bench import make_pki

            pki = make_pki(workdir / "pki")
        conf = configs.nginx_origin_config(workdir=str(workdir), port=port, mtls_port=mtls_port if pki else None,
                                           mtls=pki.origin if pki else None)
        proc = start_nginx(pm, nginx, workdir, "origin", conf, port, cpus)
        if pki is None:
            return Origin(port), proc, 'nginx, 1 worker, `return 200 "hello world\\n"`, keep-alive'
        procs.wait_listening(proc, mtls_port)
        from benchmarks.tls_bench import ORIGIN_ID

        return (Origin(port, mtls_port, pki.proxy_client, ORIGIN_ID), proc,
                f'nginx, 1 worker, `return 200 "hello world\\n"`, keep-alive; on :{mtls_port} the same behind TLS '
                "requiring a client certificate of the bench CA (the sidecar rows)")
    (port,) = procs.free_ports(1)
    proc = pm.start("backend", [sys.executable, str(BACKEND), "--port", str(port)], cpus=cpus)
    procs.wait_listening(proc, port)
    return Origin(port), proc, "benchmarks/backend.py (uvloop + httptools, 1 process), 200 hello world"


def pyproxy_command(override: str | None) -> list[str]:
    if override:
        return shlex.split(override)
    console_script = Path(sys.executable).parent / "pyproxy"
    if console_script.exists():
        return [str(console_script)]
    return [sys.executable, "-m", "pyproxy"]


def bootstrap_for(args, listen_port: int, admin_port: int, origin: Origin, workdir: Path, sidecar: str = "") -> dict:
    """The bootstrap both proxies run: the bench's own, or the user's (`--bootstrap FILE`) on our ports.
    `sidecar` ("pyproxy" or "envoy"): a client sidecar's features instead (configs.sidecar_bootstrap), with mTLS
    to the origin when it has an mTLS port."""
    if sidecar:  # an origin without an mTLS port has no client_tls or peer_uri either: plaintext
        return configs.sidecar_bootstrap(
            listen_port=listen_port, admin_port=admin_port, backend_port=origin.mtls_port or origin.port,
            access_log_path=str(workdir / f"access-{listen_port}.log"),
            upstream_tls=origin.client_tls, upstream_peer_uri=origin.peer_uri, istio_stats=sidecar == "pyproxy")
    backend_port = origin.port
    if args.bootstrap is not None:
        return configs.user_bootstrap(yaml.safe_load(args.bootstrap.read_text()), listen_port=listen_port,
                                      admin_port=admin_port)
    return configs.pyproxy_bootstrap(listen_port=listen_port, admin_port=admin_port, backend_port=backend_port)


def start_envoy(pm, args, workdir: Path, origin: Origin, cpus, name: str = "envoy") -> tuple[int, procs.ManagedProcess]:
    """Real Envoy on the same bootstrap as pyproxy: one worker (`--concurrency 1`), pinned like the others."""
    from control.envoy_check import NO_ENVOY, find_envoy

    binary = find_envoy(REPO)
    if binary is None:
        raise RowFailed(f"skipped: {NO_ENVOY}")
    return _start_proxy(pm, name, args, workdir, origin, cpus, lambda path: [
        str(binary), "-c", str(path), "--concurrency", "1", "--disable-hot-restart", "--use-dynamic-base-id",
        "-l", "warning"])


def start_pyproxy(pm, args, workdir: Path, origin: Origin, cpus, name: str = "pyproxy"
                  ) -> tuple[int, procs.ManagedProcess]:
    return _start_proxy(pm, name, args, workdir, origin, cpus, lambda path: [
        *pyproxy_command(args.pyproxy_cmd), "run", "-c", str(path), "--concurrency", str(args.concurrency)])


def start_pyproxy_compiled(pm, args, workdir: Path, origin: Origin, cpus, name: str = "pyproxy-compiled"
                           ) -> tuple[int, procs.ManagedProcess]:
    """The compiled build: the same console script with the compiled copy first on PYTHONPATH (`env` execs, so
    the PID stopped at the end is the proxy's)."""
    if not any(COMPILED_TREE.glob("pyproxy/http/connection.*.so")):
        raise RowFailed("skipped: no compiled build (`make compiled` makes build/compiled/)")
    return _start_proxy(pm, name, args, workdir, origin, cpus, lambda path: [
        "env", f"PYTHONPATH={COMPILED_TREE}", *pyproxy_command(args.pyproxy_cmd), "run", "-c", str(path),
        "--concurrency", str(args.concurrency)])


def _start_proxy(pm, name: str, args, workdir: Path, origin: Origin, cpus, command
                 ) -> tuple[int, procs.ManagedProcess]:
    """Write the bootstrap with fresh ports, start `command(bootstrap_path)` pinned, wait for admin /ready and
    the listener; (listener port, process). A name in SIDECAR_TARGETS runs the sidecar bootstrap."""
    listen_port, admin_port = procs.free_ports(2)
    sidecar = ("envoy" if name.startswith("envoy") else "pyproxy") if name in SIDECAR_TARGETS else ""
    bootstrap = bootstrap_for(args, listen_port, admin_port, origin, workdir, sidecar)
    path = _write(workdir / f"{name}.yaml", yaml.safe_dump(bootstrap, sort_keys=False))
    argv = command(path)
    log(f"starting: {shlex.join(argv)}")
    proc = pm.start(name, argv, cpus=cpus)
    try:
        procs.wait_http_ok(proc, admin_port, "/ready", timeout=args.start_timeout)
        procs.wait_listening(proc, listen_port, timeout=args.start_timeout)
    except procs.NotReady as exc:
        pm.stop(proc)
        log(f"{name}'s last output:\n" + proc.log_tail(15))
        raise RowFailed(f"{name} failed to start: {exc}") from None
    return listen_port, proc


# ------------------------------------------------------------------------------------------ load tools


def _affinity(cpus):
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def _run_tool(argv: list[str], cpus, timeout: float) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, preexec_fn=_affinity(cpus), process_group=0
        )
    except subprocess.TimeoutExpired:
        raise RowFailed(f"{Path(argv[0]).name} did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        raise RowFailed(f"{Path(argv[0]).name} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return done.stdout


def closed_loop(url: str, args, wrk: str | None, duration: int, cpus) -> report.Throughput:
    if wrk:
        argv = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--timeout", "2s",
                "-s", str(WRK_SCRIPT), url]  # fmt: skip
        return report.parse_wrk(_run_tool(argv, cpus, duration + 30))
    argv = [sys.executable, str(LOADGEN), url, "--closed", "--connections", str(args.connections),
            "--duration", str(duration)]  # fmt: skip
    return report.throughput_from_loadgen(_run_loadgen(argv, cpus, duration + 30))


def fixed_rate_round(url: str, args, cpus, rate: float) -> dict:
    """One open-loop run at `rate` (a `LoadResult.as_dict(raw=True)`)."""
    argv = [sys.executable, str(LOADGEN), url, "--rate", str(rate), "--duration", str(args.latency_duration),
            "--connections", str(args.latency_connections), "--raw",
            # pinned, the generator has a CPU of its own and may poll it for the most precise sends
            "--pacer", "spin" if cpus else "timer"]  # fmt: skip
    return _run_loadgen(argv, cpus, args.latency_duration + 30)


def _run_loadgen(argv: list[str], cpus, timeout: float) -> dict:
    """Run the loadgen with its JSON written to a file (`--json-file`). Read from its stdout pipe, the JSON was
    now and then cut at exactly 64, 128 or 160 KiB with exit status 0 (3 runs of `make bench` in 4; cause not
    found, a blocking stdout did not stop it)."""
    fd, path = tempfile.mkstemp(prefix="loadgen-", suffix=".json")
    os.close(fd)
    try:
        _run_tool([*argv, "--json-file", path], cpus, timeout)
        return _loadgen_json(Path(path).read_text())
    finally:
        os.unlink(path)


def _loadgen_json(out: str) -> dict:
    """The loadgen's one JSON object; output that is not one is a failed row (with where it broke), not a crash."""
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        around = out[max(0, exc.pos - 40):exc.pos + 40]
        raise RowFailed(f"loadgen printed no valid JSON ({exc.msg} at char {exc.pos} of {len(out)}: {around!r})") \
            from None


def _per_request(before: float | None, after: float | None, requests: int) -> float | None:
    if before is None or after is None or requests <= 0:
        return None
    return (after - before) / requests * 1e6


@dataclass
class Subject:
    """One way to the backend (direct, pyproxy, nginx) being measured: its port, its proxy (None for direct)."""

    name: str
    setup: str
    port: int = 0
    proxy: procs.ManagedProcess | None = None
    error: str | None = None
    rounds: dict[float, list[dict]] = field(default_factory=dict)  # fixed-rate rounds kept, per rate
    discarded: dict[float, list[dict]] = field(default_factory=dict)  # rounds the load generator was held up in
    throughput: report.Throughput | None = None
    rss_bytes: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def fixed(self, rate: float) -> report.FixedRate | None:
        kept = self.rounds.get(rate)
        return report.fixed_rate_from_rounds(kept, discarded=len(self.discarded.get(rate, []))) if kept else None

    def row(self, rates: list[float]) -> report.Row:
        more = tuple(f for f in (self.fixed(r) for r in rates[1:]) if f is not None)
        return report.Row(self.name, self.setup, self.throughput, self.fixed(rates[0]), self.error, more,
                          self.rss_bytes)


def _check_alive(path: Subject, backend: procs.ManagedProcess, stage: str) -> None:
    for proc in (path.proxy, backend):
        if proc is not None and not proc.alive():
            raise RowFailed(f"{proc.name} died during {stage}: {procs.exited_reason(proc)}")


def _guarded(path: Subject, backend: procs.ManagedProcess, stage: str, step) -> None:
    """Run one measurement step of `path`; a failure marks the path failed and it is skipped from then on."""
    if path.error is not None:
        return
    try:
        step()
        _check_alive(path, backend, stage)
    except RowFailed as exc:
        path.error = str(exc)
        log(f"{path.name}: {exc}")


def _take_round(path: Subject, args, rate: float) -> None:
    result = fixed_rate_round(path.url, args, args.load_cpus, rate)
    discarded = path.discarded.setdefault(rate, [])
    if report.round_was_disturbed(result) and len(discarded) < args.rounds:
        discarded.append(result)
        log(f"{path.name}: round discarded, the load generator itself was held up "
            f"(send lag p99 {result['send_lag']['p99_us']:,.0f} µs)")  # fmt: skip
    else:
        path.rounds.setdefault(rate, []).append(result)


def fixed_rate_rounds(paths: list[Subject], backend: procs.ManagedProcess, args) -> None:
    """`--rounds` kept rounds per path and rate, interleaved across paths. A round during which the load
    generator could not send on time (its send lag p99 over report.SEND_LAG_LIMIT_US: the machine was busy with
    other work) is discarded and taken again, at most `--rounds` times per path and rate; the report says how
    many. Bounded: at most 2 x --rounds rounds of --latency-duration s per path and rate."""
    for rate in args.rates:
        attempt = 0
        while attempt < 2 * args.rounds:
            attempt += 1
            due = [p for p in paths if p.error is None and p.name not in SIDECAR_TARGETS
                   and len(p.rounds.get(rate, [])) < args.rounds]
            if not due:
                break
            for path in due:
                log(f"{path.name}: {rate:,.0f} req/s open loop for {args.latency_duration:g} s "
                    f"(round {len(path.rounds.get(rate, [])) + 1}/{args.rounds})")  # fmt: skip
                _guarded(path, backend, "the fixed-rate run", lambda: _take_round(path, args, rate))


def warm_up(path: Subject, args, wrk) -> None:
    status, body = procs.http_get(path.port)
    if args.bootstrap is not None:  # a user's bootstrap: any answer but a proxy error will do
        if status >= 500 or status == 0:
            raise RowFailed(f"GET / through {path.name} answered {status} {body[:80]!r}")
    elif status != 200 or body != configs.BODY.encode():
        raise RowFailed(f"GET / through {path.name} answered {status} {body[:80]!r}, expected 200 {configs.BODY!r}")
    closed_loop(path.url, args, wrk, WARMUP_S, args.load_cpus)


def throughput(path: Subject, backend: procs.ManagedProcess, args, wrk) -> None:
    proxy_before = procs.cpu_seconds(path.proxy.pid) if path.proxy else None
    backend_before = procs.cpu_seconds(backend.pid)
    result = closed_loop(path.url, args, wrk, args.duration, args.load_cpus)
    proxy_after = procs.cpu_seconds(path.proxy.pid) if path.proxy else None
    backend_after = procs.cpu_seconds(backend.pid)
    path.throughput = replace(
        result,
        proxy_cpu_us=_per_request(proxy_before, proxy_after, result.requests),
        # with --bootstrap the user's clusters go to their own origin, not to our backend
        backend_cpu_us=None if args.bootstrap else _per_request(backend_before, backend_after, result.requests),
    )
    path.rss_bytes = procs.rss_bytes(path.proxy.pid) if path.proxy else None
    log(f"{path.name}: {result.rps:,.0f} req/s, p50 {result.p50_us:,.0f} µs, p99 {result.p99_us:,.0f} µs")


def start_path(pm, name: str, args, nginx: str | None, workdir: Path, origin: Origin) -> Subject:
    backend_port = origin.port
    if name == "direct":
        return Subject(name, "client → backend, no proxy", port=backend_port)
    what = (f"the user's bootstrap {args.bootstrap}" if args.bootstrap is not None else
            "Envoy v3 bootstrap: listener → HCM (no access log) → router → STATIC cluster with 1 endpoint")
    if name in SIDECAR_TARGETS:
        what = ("a client sidecar's outbound features (benchmarks/configs.py sidecar_bootstrap): Istio's default "
                "retry policy on the route, "
                + ("" if name.startswith("envoy") else "istio.stats (Istio's metrics), ")
                + "Istio's text access log to a file, "
                + ("mTLS to the origin (client certificate, URI SAN checked)" if origin.mtls_port else
                   "plaintext to the origin (no nginx origin, so no mTLS)")
                + ("; no istio.stats: upstream Envoy does not have it" if name.startswith("envoy") else "")
                + "; throughput only")
    if name.startswith("envoy"):
        path = Subject(name, f"Envoy (real), --concurrency 1, {'' if name in SIDECAR_TARGETS else 'the same '}{what}")
        try:
            path.port, path.proxy = start_envoy(pm, args, workdir, origin, args.proxy_cpus, name)
        except RowFailed as exc:
            path.error = str(exc)
        return path
    if name.startswith("pyproxy"):
        how = "" if "compiled" not in name else " with the request path compiled by mypyc (make compiled)"
        path = Subject(name, f"pyproxy run --concurrency {args.concurrency}{how}, {what}")  # fmt: skip
        start = start_pyproxy_compiled if "compiled" in name else start_pyproxy
        try:
            path.port, path.proxy = start(pm, args, workdir, origin, args.proxy_cpus, name)
        except RowFailed as exc:
            path.error = str(exc)
        return path
    if name == "floor":
        path = Subject(name, "benchmarks/floor_proxy.py: uvloop + httptools, one upstream connection per client, "
                             "no features (the floor of a Python proxy)")  # fmt: skip
        (path.port,) = procs.free_ports(1)
        proc = pm.start("floor", [sys.executable, str(FLOOR), "--port", str(path.port),
                                  "--backend-port", str(backend_port)], cpus=args.proxy_cpus)
        try:
            procs.wait_listening(proc, path.port, timeout=args.start_timeout)
            path.proxy = proc
        except procs.NotReady as exc:
            path.error = f"floor proxy failed to start: {exc}"
        return path
    path = Subject(name, f"nginx, 1 worker, access_log off, upstream keepalive {configs.UPSTREAM_KEEPALIVE}, "
                       'proxy_http_version 1.1, proxy_set_header Connection ""')  # fmt: skip
    if nginx is None:
        path.error = "skipped: nginx is not installed (see notes)"
        return path
    (path.port,) = procs.free_ports(1)
    conf = configs.nginx_proxy_config(workdir=str(workdir), port=path.port, backend_port=backend_port)
    try:
        path.proxy = start_nginx(pm, nginx, workdir, "proxy", conf, path.port, args.proxy_cpus)
    except procs.NotReady as exc:
        path.error = f"nginx failed to start: {exc}"
    return path


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="direct vs pyproxy vs nginx: requests/s and latency on this machine")
    p.add_argument("--duration", type=int, default=8, help="seconds of closed-loop throughput per path (default 8)")
    p.add_argument("--connections", type=int, default=32, help="closed-loop connections (default 32)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--rates", default="1000,5000",
                   help="comma list of fixed rates for the latency runs, req/s (default 1000,5000)")
    p.add_argument("--latency-duration", type=float, default=2.0, help="seconds of one fixed-rate round (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="fixed-rate rounds, interleaved across paths (default 5)")
    p.add_argument("--latency-connections", type=int, default=16, help="fixed-rate connections (default 16)")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help=f"comma list of {','.join(TARGETS)} (default all)")
    p.add_argument("--bootstrap", type=Path, default=None, metavar="FILE",
                   help="run this Envoy v3 bootstrap on pyproxy and on Envoy side by side (its first listener and "
                        "admin are moved to free 127.0.0.1 ports; its clusters must point at 127.0.0.1)")
    p.add_argument("--backend", choices=("auto", "nginx", "python"), default="auto",
                   help="origin server: nginx (when installed; default) or benchmarks/backend.py")  # fmt: skip
    p.add_argument("--load-tool", choices=("auto", "wrk", "loadgen"), default="auto",
                   help="closed-loop tool: wrk (when installed; default) or the bundled loadgen")  # fmt: skip
    p.add_argument("--concurrency", type=int, default=1, help="pyproxy --concurrency (default 1 worker)")
    p.add_argument("--pyproxy-cmd", default=None, help="command before `run -c FILE` (default .venv/bin/pyproxy)")
    p.add_argument("--start-timeout", type=float, default=20.0, help="seconds to wait for pyproxy /ready")
    p.add_argument("--no-install", action="store_true", help="never apt-get install nginx/wrk")
    p.add_argument("--no-pin", action="store_true", help="do not pin servers and load tool to CPUs")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown report (default results/latest.md)")
    p.add_argument("--json", type=Path, default=None, help="also write the raw rows as JSON here")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.bootstrap is not None:
        if not args.bootstrap.is_file():
            p.error(f"--bootstrap: {args.bootstrap}: no such file")
        args.targets = [t for t in args.targets if t in ("pyproxy", "pyproxy-compiled", "envoy")]  # the user's config: the proxies
    try:
        args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        p.error("--rates: a comma list of numbers, e.g. 1000,5000")
    args.rate = args.rates[0] if args.rates else 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        p.error(f"--targets: unknown {', '.join(unknown)} (choose from {', '.join(TARGETS)})")
    if args.duration < 1 or args.rounds < 1 or args.latency_duration <= 0 or not args.rates or min(args.rates) <= 0:
        p.error("--duration and --rounds must be ≥ 1, --latency-duration and --rates positive")
    return args


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def choose_tools(args: argparse.Namespace) -> tuple[str | None, str | None, list[str], str] | None:
    """(wrk or None for loadgen, nginx, install notes, backend kind) after `--load-tool` and `--backend`;
    None, after saying why, when the one asked for is not available."""
    wrk, nginx, notes = ensure_tools(install=not args.no_install)
    if args.load_tool == "loadgen":
        wrk = None
    elif args.load_tool == "wrk" and wrk is None:
        log("--load-tool wrk asked for, but wrk is not available")
        return None
    backend_kind = args.backend if args.backend != "auto" else ("nginx" if nginx else "python")
    if backend_kind == "nginx" and nginx is None:
        log("--backend nginx asked for, but nginx is not available")
        return None
    return wrk, nginx, notes, backend_kind


def run(args: argparse.Namespace) -> int:
    tools = choose_tools(args)
    if tools is None:
        return 2
    wrk, nginx, notes, backend_kind = tools
    for note in notes:
        log(note)
    proxy_cpus, backend_cpus, load_cpus = (
        (None, None, None) if args.no_pin else report.cpu_plan(os.sched_getaffinity(0))
    )
    machine = machine_facts(wrk, nginx)
    args.proxy_cpus, args.load_cpus = proxy_cpus, load_cpus
    with tempfile.TemporaryDirectory(prefix="pyproxy-bench-") as tmp, procs.Processes(Path(tmp)) as pm:
        workdir = Path(tmp)
        origin, backend, backend_setup = start_backend(pm, backend_kind, nginx, workdir, backend_cpus,
                                                       mtls=any(t in SIDECAR_TARGETS for t in args.targets))
        log(f"backend: {backend_setup} on 127.0.0.1:{origin.port}")
        paths = [start_path(pm, name, args, nginx, workdir, origin) for name in args.targets]
        for path in paths:
            if path.error:
                log(f"{path.name}: {path.error}")
            else:
                log(f"{path.name}: sanity GET and {WARMUP_S} s warm-up")
            _guarded(path, backend, "the warm-up", lambda: warm_up(path, args, wrk))
        fixed_rate_rounds(paths, backend, args)
        for path in paths:
            if path.error is None:
                log(f"{path.name}: closed loop for {args.duration} s ({'wrk' if wrk else 'loadgen'}, "
                    f"{args.connections} connections)")  # fmt: skip
            _guarded(path, backend, "the throughput run", lambda: throughput(path, backend, args, wrk))
        rows = [path.row(args.rates) for path in paths]
    tool = f"wrk -t{args.threads}" if wrk else "benchmarks/loadgen.py --closed"
    settings = {
        "backend": backend_setup,
        "throughput": f"{tool}, {args.connections} keep-alive connections, {args.duration} s after a {WARMUP_S} s "
        f"warm-up, GET / → 200, 12-byte body; req/s, p50, p99 and CPU/req come from this closed-loop run",
        "fixed rate": f"benchmarks/loadgen.py open loop (a bounded Python client: a fixed send schedule, count "
        f"and time bounded; wrk2 is not available), {', '.join(f'{r:,.0f}' for r in args.rates)} req/s, "
        f"{args.rounds} rounds of "
        f"{args.latency_duration:g} s per path interleaved (direct, pyproxy, nginx, direct, ...) over "
        f"{args.latency_connections} keep-alive connections; latency from each request's scheduled send time, "
        "percentiles over all kept rounds pooled; a round is discarded and taken again (at most --rounds times) "
        f"when the generator's own send lag p99 exceeds {report.SEND_LAG_LIMIT_US:g} µs (the machine was busy)",
        "CPU pinning": report.describe_pinning(proxy_cpus, backend_cpus, load_cpus),
        **({"notes": "; ".join(notes)} if notes else {}),
    }
    table = report.render_markdown(rows, rate=args.rate, machine=machine, settings=settings)
    print()
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("# Benchmark: direct vs pyproxy vs Envoy vs nginx\n\nProduced by `make bench` "
                           f"(benchmarks/run.py).\n\n{table}")  # fmt: skip
    log(f"wrote {args.output}")
    svg = args.output.with_suffix(".svg")
    svg.write_text(chart.render_svg(rows, args.rates, title=f"{machine['date']}, load average at start "
                                                           f"{machine['load average at start']}"))
    log(f"wrote {svg}")
    print(report.summary_line(rows))
    if args.json:
        rounds = {path.name: [{"rate": rate, "kept": kept,
                               **{k: r[k] for k in ("completed", "errors", "latency", "send_lag")}}
                              for kept, groups in ((True, path.rounds), (False, path.discarded))
                              for rate, group in groups.items() for r in group]
                  for path in paths}  # fmt: skip
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "fixed_rate_rounds": rounds,
                                         "machine": machine, "settings": settings}, indent=2) + "\n")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    try:
        return run(args)
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped")
        return 130
    except procs.NotReady as exc:
        log(f"the backend did not start: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
