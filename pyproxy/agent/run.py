"""`pyproxy agent`: the pilot-agent analogue for a real Envoy sidecar (issue 18; this part: bootstrap + process).

    pyproxy agent --control-grpc 127.0.0.1:15011 --name productpage-v1 --labels app=productpage,version=v1 \\
                  --app-port 9080 --inbound-port 15206 --outbound-port 15201 --admin-port 15200 [--envoy PATH]
    pyproxy agent ... --print-bootstrap          # only print the bootstrap (JSON) and exit

It writes Envoy's bootstrap (pyproxy.agent.bootstrap: node and metadata as istio-agent fills them, ADS over gRPC
to the control plane) into its work directory, starts Envoy on it (`-c FILE --concurrency N`), forwards SIGTERM /
SIGINT to Envoy's PID, and exits with Envoy's exit code (istio-agent watches Envoy the same way: when Envoy
exits, the agent exits). Not yet: SDS over a unix socket (`default` / `ROOTCA`), the 15021 health port.

The Envoy executable: `--envoy`, else $ENVOY_BIN, else `envoy` on PATH; none is one line on stderr, exit 1.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

from .bootstrap import Workload, XdsTls, envoy_bootstrap

EXIT_BAD_INPUT = 1


def add_arguments(p: Any) -> None:
    p.add_argument("--control-grpc", default="127.0.0.1:15011", metavar="HOST:PORT",
                   help="the control plane's gRPC ADS address (pyproxy-control serve --grpc-port)")
    p.add_argument("--ca-root", default=None, metavar="FILE",
                   help="mesh root (root-cert.pem): ADS over TLS to the control plane's --secure-grpc-port")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="service-account token sent as authorization: Bearer (with --ca-root)")
    p.add_argument("--name", required=True, help="workload (pod) name, e.g. productpage-v1")
    p.add_argument("--namespace", default="default")
    p.add_argument("--service-account", default="default")
    p.add_argument("--labels", default="", help="k=v,k2=v2 (the workload's labels)")
    p.add_argument("--app-port", type=int, action="append", default=[], help="the local app's port (repeatable)")
    p.add_argument("--ip", default="127.0.0.1", help="the address other proxies reach this one at")
    p.add_argument("--bind", default="127.0.0.1", metavar="IP", help="where Envoy's listeners bind (BIND_ADDRESS)")
    p.add_argument("--inbound-port", type=int, default=15006)
    p.add_argument("--outbound-port", type=int, default=15001)
    p.add_argument("--admin-port", type=int, default=15000)
    p.add_argument("--envoy", default=None, metavar="PATH", help="Envoy executable (default $ENVOY_BIN, else PATH)")
    p.add_argument("--work-dir", default=None, metavar="DIR", help="where the bootstrap is written (default: temp)")
    p.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads (default 1)")
    p.add_argument("--delta", action="store_true", help="incremental xDS (DELTA_GRPC) instead of state of the world")
    p.add_argument("--print-bootstrap", action="store_true", help="print the bootstrap (JSON) and exit")
    p.add_argument("-l", "--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="Envoy's log level (default warning)")


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port` too) -> (host, port); ValueError naming the problem."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--control-grpc: want HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def bootstrap_from_args(args: Any) -> dict:
    from pyproxy.xds.node import parse_labels

    host, port = parse_address(args.control_grpc)
    labels = parse_labels(args.labels)
    w = Workload(args.name, args.namespace, args.ip, args.service_account, labels,
                 tuple(("http" if i == 0 else f"http-{i}", p) for i, p in enumerate(args.app_port)),
                 args.inbound_port, args.outbound_port, args.admin_port, args.bind)
    tls = None
    if args.ca_root or args.token_file:
        if not (args.ca_root and args.token_file):
            raise ValueError("--ca-root and --token-file go together (ADS over TLS with a token)")
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.read()
        except OSError as err:
            raise ValueError(f"--token-file {args.token_file}: {err.strerror}") from None
        tls = XdsTls(os.path.abspath(args.ca_root), token)
    return envoy_bootstrap(w, host, port, tls, delta=args.delta)


def envoy_executable(given: str | None) -> str | None:
    candidate = given or os.environ.get("ENVOY_BIN") or shutil.which("envoy")
    return candidate if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None


def run(args: Any) -> int:
    try:
        bootstrap = bootstrap_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.print_bootstrap:
        print(json.dumps(bootstrap, indent=2))
        return 0
    binary = envoy_executable(args.envoy)
    if binary is None:
        print(f"error: no Envoy executable ({args.envoy or '$ENVOY_BIN or envoy on PATH'}); "
              "install one (make envoy) or pass --envoy PATH", file=sys.stderr)
        return EXIT_BAD_INPUT
    work = args.work_dir or tempfile.mkdtemp(prefix=f"pyproxy-agent-{args.name}-")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "envoy-rev.json")  # istio-agent's file name
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(bootstrap, fh, indent=2)
    argv = [binary, "-c", path, "--concurrency", str(args.concurrency), "--disable-hot-restart",
            "--use-dynamic-base-id", "-l", args.log_level, "--drain-time-s", "5"]
    envoy = subprocess.Popen(argv)
    print(f"ENVOY_PID {envoy.pid}", flush=True)

    def forward(signum: int, _frame: Any) -> None:
        if envoy.poll() is None:
            envoy.send_signal(signum)  # by PID: Envoy drains and exits; the agent exits with it
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    try:
        return envoy.wait()
    finally:
        if envoy.poll() is None:
            envoy.kill()
            envoy.wait()
