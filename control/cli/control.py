"""`pyproxy-control`: the control plane process (≈ istiod's `pilot-discovery discovery`).

    pyproxy-control serve --config-dir examples/mesh/ [--xds-port 15010] [--metrics-port 15014]
                          [--host 127.0.0.1] [--grace 10] [--debounce 0.1] [--long-poll-timeout 30]
                          [--no-watch] [--state-file PATH] [-l info]

Serves xDS (REST-JSON + long-poll, docs/xds.md) and /debug/syncz, /debug/configz on the xDS port, Prometheus
metrics on the metrics port; watches the config directory and pushes changes. Prints one line per bound
port (`XDS_PORT 15010`, `METRICS_PORT 15014`) so scripts using port 0 learn the ports. Stops on SIGTERM or
SIGINT. Registered proxies are remembered in a state file (outside the config directory) so a restart keeps
their endpoints for the grace period while they reconnect. Bad input (missing directory, busy port) is one
line on stderr and exit code 1.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import signal
import sys
import tempfile
from typing import Sequence

EXIT_BAD_INPUT = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyproxy-control", description="pyproxy mesh control plane (≈ istiod)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="serve xDS for a config directory, watch it, push changes")
    p.add_argument("--config-dir", required=True, metavar="DIR", help="Istio + Kubernetes YAML (watched)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--xds-port", type=int, default=15010, help="REST xDS + /debug (default 15010; 0 = any)")
    p.add_argument("--metrics-port", type=int, default=15014, help="Prometheus /metrics (default 15014; 0 = any)")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="remove a proxy this long after its last request (default 10, istiod's "
                        "PILOT_WORKLOAD_ENTRY_GRACE_PERIOD)")
    p.add_argument("--debounce", type=float, default=0.1, metavar="SECONDS",
                   help="wait this long after a change before pushing (default 0.1, PILOT_DEBOUNCE_AFTER)")
    p.add_argument("--long-poll-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="longest a discovery request waits for a change before 304 (default 30)")
    p.add_argument("--no-watch", action="store_true", help="do not watch the config directory")
    p.add_argument("--state-file", default=None, metavar="PATH",
                   help="where registered proxies are remembered across restarts (default: "
                        "<tmp>/pyproxy-control-<hash of the config dir>/registrations.json; '' = nowhere)")
    p.add_argument("-l", "--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def default_state_file(config_dir: str) -> str:
    """One state file per config directory, outside it (the directory is watched and is the user's)."""
    digest = hashlib.sha256(os.path.abspath(config_dir).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"pyproxy-control-{digest}", "registrations.json")


async def serve(args: argparse.Namespace) -> int:
    from control.serve import ControlPlane
    from control.xds.server import make_app, make_metrics_app, start_site

    state_file = default_state_file(args.config_dir) if args.state_file is None else args.state_file
    cp = ControlPlane(args.config_dir, grace=args.grace, debounce=args.debounce,
                      long_poll_timeout=args.long_poll_timeout, state_file=state_file or None)
    try:
        await cp.start(watch=not args.no_watch)
    except FileNotFoundError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    runners = []
    try:
        for name, app, port in (("XDS_PORT", make_app(cp), args.xds_port),
                                ("METRICS_PORT", make_metrics_app(cp), args.metrics_port)):
            try:
                runner, bound = await start_site(app, args.host, port)
            except OSError as err:
                print(f"Error: cannot bind {args.host}:{port}: {err.strerror}", file=sys.stderr)
                return EXIT_BAD_INPUT
            runners.append(runner)
            print(f"{name} {bound}", flush=True)
        logging.getLogger("pyproxy.control").info("serving xDS for %s", args.config_dir)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        await cp.stop()
        for runner in runners:
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
