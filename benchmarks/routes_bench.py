"""Route-table cost: pyproxy with a realistic RouteConfiguration against pyproxy with one route (issue 3).

    .venv/bin/python benchmarks/routes_bench.py            # about 70 s; --duration / --rounds to change

Same backend, same load tool and request, pyproxy configs run one at a time:
* `plain`: the engine benchmark's bootstrap (benchmarks/configs.py): one virtual host `*`, one route
  `prefix: /`, no retry policy;
* `table`: 50 virtual hosts × 20 routes, as istiod emits them for 50 services with VirtualServices: each host
  has its own cluster and domains (`svc-N.bench.svc.cluster.local`, with and without `:80`), its routes mix
  prefix + header matches, `safe_regex` and `path_separated_prefix`, and every route carries a retry policy
  (`5xx,reset,connect-failure,retriable-status-codes`, 2 retries, as Istio's default) with
  `include_request_attempt_count`. The request targets virtual host 25 (the middle of the table) and its
  route 10 (`safe_regex` + a `:method` header match), so 10 routes are tried and rejected first;
* `table-no-retry`: the same table without the retry policies, to tell matching cost from retry cost.
The load is the request `GET /api/v2/orders/42` (Host `127.0.0.1:PORT`, which virtual host 25 also lists,
so wrk and the bundled loadgen send identical bytes). Rounds alternate plain, table, plain, table...; the
table shows each config's median round and its ratio to plain's median.

Processes, CPU pinning, wrk/loadgen and cleanup come from benchmarks/run.py and benchmarks/procs.py: every
process started here is stopped by PID, also on error and Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import http.client
import os
import shlex
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from benchmarks import configs, procs, report, run  # noqa: E402

PATH = "/api/v2/orders/42"
VHOSTS = 50
ROUTES = 20
TARGET_VHOST = VHOSTS // 2
TARGET_ROUTE = ROUTES // 2
RETRY_POLICY = {"retry_on": "5xx,reset,connect-failure,retriable-status-codes", "num_retries": 2,
                "retriable_status_codes": [503],
                "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
                "host_selection_retry_max_attempts": 5}


@dataclasses.dataclass(frozen=True)
class Suite:
    """What a config-comparison benchmark varies: its configs (name -> (description, bootstrap builder)), the
    request path, the sanity check of one answer, and its name in logs and temp dirs. `plain` is the baseline."""

    name: str
    configs: dict
    path: str
    sanity: Callable[[str, int], None]
    description: str


def log(message: str, suite: str = "routes-bench") -> None:
    print(f"[{suite}] {message}", flush=True)


# ------------------------------------------------------------------------------------------- configs


def _route(vh: int, j: int, retries: bool) -> dict:
    """Route j of virtual host vh: three shapes in turn, the target shape at TARGET_ROUTE."""
    cluster = f"outbound|80||svc-{vh}.bench.svc.cluster.local"
    if j == TARGET_ROUTE:
        match = {"safe_regex": {"regex": "/api/v[0-9]+/orders/[0-9]+"},
                 "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]}
    elif j % 3 == 0:  # Istio `uri: {prefix: /api/}` + `headers: {x-tenant: {exact: tN}}`: the prefix matches
        match = {"prefix": "/api/", "headers": [{"name": "x-tenant", "string_match": {"exact": f"t{j}"}}]}
    elif j % 3 == 1:  # `uri: {regex: ...}`
        match = {"safe_regex": {"regex": f"/api/v[0-9]+/items{j}/[0-9]+"}}
    else:  # Gateway-API style segment prefix
        match = {"path_separated_prefix": f"/svc{j}"}
    name = f"svc-{vh}.route-{j}"
    action: dict = {"cluster": cluster}  # no `timeout`: Envoy's default 15 s, as in plain (Istio would write 0s)
    if retries:
        action["retry_policy"] = RETRY_POLICY
    return {"name": name, "match": match, "route": action,
            "response_headers_to_add": [{"header": {"key": "x-route", "value": name}}]}


def table_bootstrap(*, listen_port: int, admin_port: int, backend_port: int, retries: bool = True) -> dict:
    """configs.pyproxy_bootstrap with the 50 × 20 route table and 50 clusters (all on the one backend)."""
    b = configs.pyproxy_bootstrap(listen_port=listen_port, admin_port=admin_port, backend_port=backend_port)
    template = b["static_resources"]["clusters"][0]
    vhosts, clusters = [], []
    for vh in range(VHOSTS):
        fqdn = f"svc-{vh}.bench.svc.cluster.local"
        domains = [fqdn, f"{fqdn}:80", f"svc-{vh}", f"svc-{vh}:80", f"svc-{vh}.bench", f"svc-{vh}.bench:80"]
        if vh == TARGET_VHOST:
            domains.append(f"127.0.0.1:{listen_port}")
        vhosts.append({"name": f"{fqdn}:80", "domains": domains, "include_request_attempt_count": True,
                       "routes": [_route(vh, j, retries) for j in range(ROUTES)]})
        name = f"outbound|80||{fqdn}"
        clusters.append({**template, "name": name, "load_assignment": {**template["load_assignment"],
                                                                        "cluster_name": name}})
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"] = {"name": "80", "virtual_hosts": vhosts}
    b["static_resources"]["clusters"] = clusters
    return b


CONFIGS = {
    "plain": ("1 virtual host, 1 route `prefix: /`, no retry policy (the engine benchmark's config)",
              configs.pyproxy_bootstrap),
    "table": (f"{VHOSTS} virtual hosts × {ROUTES} routes (prefix+header, safe_regex, path_separated_prefix), "
              f"retry policy on every route, {VHOSTS} clusters; target: vhost {TARGET_VHOST}, route {TARGET_ROUTE}",
              table_bootstrap),
    "table-no-retry": ("the same table without retry policies (separates matching cost from retry-state cost)",
                       functools.partial(table_bootstrap, retries=False)),
}


# ------------------------------------------------------------------------------------------- running


def start_proxy(pm: procs.Processes, args, workdir: Path, name: str, backend_port: int, suite: Suite):
    listen_port, admin_port = procs.free_ports(2)
    bootstrap = suite.configs[name][1](listen_port=listen_port, admin_port=admin_port, backend_port=backend_port)
    path = workdir / f"pyproxy-{name}.yaml"
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    argv = [*run.pyproxy_command(args.pyproxy_cmd), "run", "-c", str(path), "--concurrency", "1"]
    log(f"{name}: starting {shlex.join(argv)}", suite.name)
    proc = pm.start(f"pyproxy-{name}", argv, cpus=args.proxy_cpus)
    try:
        procs.wait_http_ok(proc, admin_port, "/ready", timeout=args.start_timeout)
        procs.wait_listening(proc, listen_port, timeout=args.start_timeout)
    except procs.NotReady as exc:
        log(f"{name}: pyproxy's last output:\n" + proc.log_tail(15), suite.name)
        raise SystemExit(f"pyproxy ({name}) failed to start: {exc}") from None
    return listen_port, proc


def expect_answer(name: str, port: int, path: str, want: int) -> None:
    """GET `path` answers `want` (and the origin's body when 200), else the benchmark stops naming the config."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != want or (want == 200 and body != configs.BODY.encode()):
        raise SystemExit(f"{name}: GET {path[:40]} answered {resp.status} {body[:60]!r}, expected {want}")


def sanity_check(name: str, port: int) -> None:
    """The request is answered by the backend, through the intended route of the table."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", PATH)
        resp = conn.getresponse()
        body, route = resp.read(), resp.getheader("x-route")
    finally:
        conn.close()
    want_route = f"svc-{TARGET_VHOST}.route-{TARGET_ROUTE}" if name.startswith("table") else None
    if resp.status != 200 or body != configs.BODY.encode() or route != want_route:
        raise SystemExit(f"{name}: GET {PATH} answered {resp.status} {body[:60]!r} x-route={route!r}, "
                         f"expected 200 {configs.BODY!r} x-route={want_route!r}")


SUITE = Suite("routes-bench", CONFIGS, PATH, sanity_check,
              "pyproxy throughput: one route vs a 50 × 20 route table with retries")


def measure(pm, args, workdir: Path, name: str, backend_port: int, wrk: str | None, suite: Suite) \
        -> report.Throughput:
    """One round: start this config's pyproxy, check, warm up, run the closed loop, stop it."""
    port, proc = start_proxy(pm, args, workdir, name, backend_port, suite)
    try:
        suite.sanity(name, port)
        url = f"http://127.0.0.1:{port}{suite.path}"
        run.closed_loop(url, args, wrk, run.WARMUP_S, args.load_cpus)
        before = procs.cpu_seconds(proc.pid)
        result = run.closed_loop(url, args, wrk, args.duration, args.load_cpus)
        cpu_us = (procs.cpu_seconds(proc.pid) - before) / max(result.requests, 1) * 1e6
    except run.RowFailed as exc:
        raise SystemExit(f"{name}: {exc}") from None
    finally:
        pm.stop(proc)
    log(f"{name}: {result.rps:,.0f} req/s, p50 {result.p50_us:,.0f} µs, p99 {result.p99_us:,.0f} µs, "
        f"{cpu_us:,.0f} µs CPU/req, {result.errors} errors", suite.name)
    return report.Throughput(result.tool, result.rps, result.requests, result.p50_us, result.p99_us, result.errors,
                             proxy_cpu_us=cpu_us)


def render(results: dict[str, list[report.Throughput]], machine: dict[str, str], settings: dict[str, str],
           suite: Suite | None = None) -> str:
    configs = (suite or SUITE).configs
    median = {name: statistics.median(r.rps for r in rounds) for name, rounds in results.items()}
    lines = ["| config | routes | req/s (median) | req/s per round | p50 | p99 | proxy CPU/req | errors | vs plain |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, rounds in results.items():
        mid = min(rounds, key=lambda r: abs(r.rps - median[name]))
        cpu = statistics.median(r.proxy_cpu_us for r in rounds if r.proxy_cpu_us is not None)
        lines.append(f"| {name} | {report.one_line(configs[name][0])} | {median[name]:,.0f} | "
                     f"{', '.join(f'{r.rps:,.0f}' for r in rounds)} | {mid.p50_us:,.0f} µs | {mid.p99_us:,.0f} µs | "
                     f"{cpu:,.0f} µs | {sum(r.errors for r in rounds)} | {median[name] / median['plain']:.2f} |")
    lines.append("")
    lines += [f"- {k}: {v}" for k, v in {**machine, **settings}.items()]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None, suite: Suite | None = None) -> argparse.Namespace:
    suite = suite or SUITE
    configs = suite.configs
    p = argparse.ArgumentParser(description=suite.description)
    p.add_argument("--configs", default=",".join(configs), help=f"comma list of {', '.join(configs)} (default all)")
    p.add_argument("--duration", type=int, default=5, help="seconds of closed loop per round (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per config, alternating (default 3)")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--backend", choices=("auto", "nginx", "python"), default="auto",
                   help="origin: nginx when installed (default) or benchmarks/backend.py")
    p.add_argument("--load-tool", choices=("auto", "wrk", "loadgen"), default="auto")
    p.add_argument("--pyproxy-cmd", default=None, help="command before `run -c FILE` (default .venv/bin/pyproxy)")
    p.add_argument("--start-timeout", type=float, default=20.0)
    p.add_argument("--no-install", action="store_true", help="never apt-get install nginx/wrk")
    p.add_argument("--no-pin", action="store_true", help="do not pin servers and load tool to CPUs")
    args = p.parse_args(argv)
    if args.duration < 1 or args.rounds < 1:
        p.error("--duration and --rounds must be ≥ 1")
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if "plain" not in args.configs or any(c not in configs for c in args.configs):
        p.error(f"--configs: choose from {', '.join(configs)}, plain included (the baseline)")
    return args


def main(argv: list[str] | None = None, suite: Suite | None = None) -> int:
    suite = suite or SUITE
    args = parse_args(argv, suite)
    signal.signal(signal.SIGTERM, run._raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tools = run.choose_tools(args)
    if tools is None:
        return 2
    wrk, nginx, notes, backend_kind = tools
    args.proxy_cpus, backend_cpus, args.load_cpus = (
        (None, None, None) if args.no_pin else report.cpu_plan(os.sched_getaffinity(0)))
    machine = run.machine_facts(wrk, nginx)
    results: dict[str, list[report.Throughput]] = {name: [] for name in args.configs}
    try:
        with tempfile.TemporaryDirectory(prefix=f"pyproxy-{suite.name}-") as tmp, procs.Processes(Path(tmp)) as pm:
            workdir = Path(tmp)
            origin, _, backend_setup = run.start_backend(pm, backend_kind, nginx, workdir, backend_cpus)
            backend_port = origin.port
            log(f"backend: {backend_setup} on 127.0.0.1:{backend_port}", suite.name)
            for i in range(args.rounds):
                for name in args.configs:
                    log(f"{name}: round {i + 1}/{args.rounds}", suite.name)
                    results[name].append(measure(pm, args, workdir, name, backend_port, wrk, suite))
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped", suite.name)
        return 130
    tool = f"wrk -t{args.threads}" if wrk else "benchmarks/loadgen.py --closed"
    settings = {"backend": backend_setup,
                "load": f"{tool}, {args.connections} keep-alive connections, GET {suite.path}, "
                        f"{args.duration} s per round "
                        f"after a {run.WARMUP_S} s warm-up, {args.rounds} rounds per config alternating",
                "proxy": "pyproxy run --concurrency 1, no access log",
                "CPU pinning": report.describe_pinning(args.proxy_cpus, backend_cpus, args.load_cpus),
                **({"notes": "; ".join(notes)} if notes else {})}
    print()
    print(render(results, machine, settings, suite))
    return 0


if __name__ == "__main__":
    sys.exit(main())
