"""Resident memory of a proxy: against the number of clusters it holds, and as a sidecar of the demo mesh.

    .venv/bin/python benchmarks/memory_bench.py [--clusters 10,100,1000] [--no-demo] [--no-envoy]

Two measurements, each of real processes on 127.0.0.1, every one stopped by PID when the run ends:

* **RSS against clusters**: `pyproxy run` (and real Envoy, `--concurrency 1`, when one is found) on the same
  bootstrap with N STATIC clusters, one virtual host per cluster (`svc-<i>.bench.local`) and one endpoint each
  (the origin, benchmarks/backend.py). After admin `/ready`, one request per virtual host (up to 100, so the
  per-cluster state a first request creates exists: pools, host stats), then VmRSS. This is what a sidecar's
  memory grows with: the clusters, routes and endpoints of the services it can reach.
* **The demo's sidecars**: `python -m pyproxy.demo_mesh` (what `make demo` runs), and once it says it is running,
  the VmRSS of every `pyproxy sidecar` / `pyproxy gateway` process it started, by workload; then again after one
  GET /stats/prometheus on each (what the demo's Prometheus, when installed, does every few seconds: it loads
  prometheus_client in the process), with the optional libraries each process holds (`/server_info`).

RSS is VmRSS from /proc (what `ps` shows as RSS), read after the requests; Python's is mostly the interpreter,
the imported modules (aiohttp, cryptography, opentelemetry...) and the config objects.
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
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import procs  # noqa: E402
from benchmarks.configs import HCM_TYPE, ROUTER_TYPE, _socket_address  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BACKEND = REPO / "benchmarks" / "backend.py"
MIB = 1024 * 1024
WARM_HOSTS = 100  # requests sent before reading RSS, one per virtual host (the first N)


def clusters_bootstrap(n: int, *, listen_port: int, admin_port: int, backend_port: int) -> dict:
    """A bootstrap with `n` STATIC clusters `svc-<i>`, each routed from virtual host `svc-<i>.bench.local`."""
    clusters, hosts = [], []
    for i in range(n):
        name = f"svc-{i}"
        clusters.append({
            "name": name, "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
            "load_assignment": {"cluster_name": name, "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address(backend_port)}}]}]},
        })
        hosts.append({"name": name, "domains": [f"{name}.bench.local"],
                      "routes": [{"match": {"prefix": "/"}, "route": {"cluster": name}}]})
    hcm = {"@type": HCM_TYPE, "stat_prefix": "ingress_http", "codec_type": "AUTO",
           "route_config": {"name": "local_route", "virtual_hosts": hosts},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}]}
    return {
        "admin": {"address": _socket_address(admin_port)},
        "static_resources": {
            "listeners": [{"name": "listener_0", "address": _socket_address(listen_port), "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            "clusters": clusters,
        },
    }


def _request(port: int, host: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def measure_clusters(pm: procs.Processes, workdir: Path, n: int, backend_port: int, command) -> int:
    """RSS (bytes) of the proxy `command(bootstrap_path)` holding `n` clusters, after warm-up requests."""
    listen_port, admin_port = procs.free_ports(2)
    path = workdir / f"bootstrap-{n}.json"
    path.write_text(json.dumps(clusters_bootstrap(n, listen_port=listen_port, admin_port=admin_port,
                                                  backend_port=backend_port)))
    argv = command(path)
    proc = pm.start(f"{Path(argv[0]).name}-{n}", argv)
    try:
        procs.wait_http_ok(proc, admin_port, "/ready", timeout=60)
        for i in range(min(n, WARM_HOSTS)):
            status = _request(listen_port, f"svc-{i}.bench.local")
            if status != 200:
                raise RuntimeError(f"svc-{i}: HTTP {status}")
        rss = procs.rss_bytes(proc.pid)
        if rss is None:
            raise RuntimeError(f"{argv[0]} exited: {proc.log_tail()}")
        return rss
    finally:
        pm.stop(proc)


def _admin_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def _scrape(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/prometheus", timeout=10) as r:
        r.read()


def demo_sidecars(pm: procs.Processes, workdir: Path, timeout: float = 180) -> dict[str, tuple[int, int, str]]:
    """{workload: (RSS bytes, RSS bytes after one scrape of its /stats/prometheus, optional libraries loaded)}
    of every sidecar and gateway process of a running `make demo` mesh."""
    env = {**os.environ, "PYPROXY_MESH_STATE": str(workdir / "demo-state.json")}
    log_path = workdir / "demo.log"
    with open(log_path, "wb") as log:
        demo = subprocess.Popen([sys.executable, "-m", "pyproxy.demo_mesh"], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=REPO, process_group=0)
    try:
        deadline = time.monotonic() + timeout
        while "running; Ctrl-C to stop" not in log_path.read_text(errors="replace"):
            if demo.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the demo mesh did not start: {log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        found: dict[str, tuple[int, int]] = {}
        admins: dict[str, int] = {}
        for pid in procs.descendants(demo.pid):
            argv = (procs._cmdline(pid) or b"").split(b"\0")
            if b"sidecar" in argv and b"--name" in argv:
                name = argv[argv.index(b"--name") + 1].decode()
            elif b"gateway" in argv:
                name = "istio-ingressgateway (gateway)"
            else:
                continue
            rss = procs.rss_bytes(pid)
            if rss is not None and b"--admin-port" in argv:
                found[name] = (pid, rss)
                admins[name] = int(argv[argv.index(b"--admin-port") + 1])
        out = {}
        for name, (pid, rss) in found.items():
            _scrape(admins[name])
            libraries = ", ".join(_admin_json(admins[name], "/server_info").get("optional_libraries_loaded", []))
            out[name] = (rss, procs.rss_bytes(pid) or 0, libraries or "none")
        return out
    finally:
        demo.send_signal(signal.SIGINT)  # the demo's own Ctrl-C path stops everything it started
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--clusters", default="10,100,1000", help="comma list of cluster counts (default 10,100,1000)")
    p.add_argument("--no-demo", action="store_true", help="skip the demo mesh's sidecars")
    p.add_argument("--no-envoy", action="store_true", help="skip the Envoy column")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.clusters.split(",") if x.strip()]

    from control.envoy_check import find_envoy

    envoy = None if args.no_envoy else find_envoy(REPO)
    commands = {"pyproxy": lambda path: [sys.executable, "-m", "pyproxy", "run", "-c", str(path)]}
    if envoy is not None:
        commands["envoy"] = lambda path: [str(envoy), "-c", str(path), "--concurrency", "1",
                                          "--disable-hot-restart", "--use-dynamic-base-id", "-l", "warning"]
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp, procs.Processes(Path(tmp)) as pm:
        workdir = Path(tmp)
        (backend_port,) = procs.free_ports(1)
        backend = pm.start("backend", [sys.executable, str(BACKEND), "--port", str(backend_port)])
        procs.wait_listening(backend, backend_port)
        print("\n| clusters | " + " | ".join(f"{name} RSS (MiB)" for name in commands) + " |")
        print("|---:|" + "---:|" * len(commands))
        for n in counts:
            cells = []
            for name, command in commands.items():
                try:
                    cells.append(f"{measure_clusters(pm, workdir, n, backend_port, command) / MIB:.1f}")
                except (RuntimeError, procs.NotReady, OSError) as exc:
                    cells.append(f"failed: {exc}"[:60])
            print(f"| {n:,} | " + " | ".join(cells) + " |", flush=True)
        if not args.no_demo:
            found = demo_sidecars(pm, workdir)
            if not found:
                print("\nthe demo mesh: no sidecar processes found")
                return 1
            print("\n| demo mesh process | RSS (MiB) | after a /stats/prometheus scrape (MiB) "
                  "| optional libraries then |\n|---|---:|---:|---|")
            for name, (rss, scraped, libraries) in sorted(found.items()):
                print(f"| {name} | {rss / MIB:.1f} | {scraped / MIB:.1f} | {libraries} |")
            for label, i in (("", 0), ("after a scrape", 1)):
                values = sorted(v[i] for v in found.values())
                print(f"\ndemo sidecars{' ' + label if label else ''}: median {values[len(values) // 2] / MIB:.1f} "
                      f"MiB, max {values[-1] / MIB:.1f} MiB over {len(values)} processes", end="")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
