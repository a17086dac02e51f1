"""`pyproxy-control`: the control plane process (≈ istiod's `pilot-discovery discovery`).

    pyproxy-control serve --config-dir examples/mesh/ [--xds-port 15010] [--metrics-port 15014]
                          [--host 127.0.0.1] [--grace 10] [--debounce 0.1] [--long-poll-timeout 30]
                          [--no-watch] [--state-file PATH] [--plaintext-xds on|read-only|off]
                          [--max-file-size BYTES] [--max-documents N] [--max-depth N] [--max-alias-nodes N]
                          [-l info]

Serves xDS (REST-JSON + long-poll, docs/xds.md) and /debug/syncz, /debug/configz on the xDS port, Prometheus
metrics on the metrics port; watches the config directory and pushes changes. Prints one line per bound
port (`XDS_PORT 15010`, `METRICS_PORT 15014`) so scripts using port 0 learn the ports. Stops on SIGTERM or
SIGINT. `--plaintext-xds` is the xDS port's registration policy (control.xds.admission): `on` (default,
the demo: any caller registers as an endpoint), `read-only` (config is served, nobody registers), `off`
(no xDS port; /debug and /ready stay on the metrics port). The `--max-*` options are the config loader's
limits (control.istio.load.LoadLimits); a file over one is reported like invalid YAML and skipped.
Registered proxies are remembered in a state file (outside the config directory) so a restart keeps
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

from control.istio.load import LoadLimits
from control.xds.admission import PlaintextXds
from pyproxy import __version__

EXIT_BAD_INPUT = 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"want a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"want a number above 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyproxy-control", description="pyproxy mesh control plane (≈ istiod)")
    parser.add_argument("--version", action="version", version=f"pyproxy-control (pyproxy mesh) {__version__}")
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
    p.add_argument("--plaintext-xds", choices=[m.value for m in PlaintextXds], default=PlaintextXds.ON.value,
                   help="the plaintext xDS port: 'on' = any caller registers as an endpoint (the demo's default), "
                        "'read-only' = config is served but nobody registers, 'off' = not bound "
                        "(see docs/hardening.md)")
    limits = LoadLimits()
    for flag, field, text in (("--max-file-size", "max_file_bytes", "bytes per config file"),
                              ("--max-documents", "max_documents", "YAML documents per file"),
                              ("--max-depth", "max_depth", "nesting levels (after alias expansion)"),
                              ("--max-alias-nodes", "max_alias_nodes", "nodes YAML aliases may add per document")):
        p.add_argument(flag, dest=field, type=_positive, default=getattr(limits, field), metavar="N",
                       help=f"most {text} (default {getattr(limits, field)}); a file over it is skipped and reported")
    p.add_argument("-l", "--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


log = logging.getLogger("pyproxy.control")


def default_state_file(config_dir: str) -> str:
    """One state file per config directory, outside it (the directory is watched and is the user's)."""
    digest = hashlib.sha256(os.path.abspath(config_dir).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"pyproxy-control-{digest}", "registrations.json")


async def serve(args: argparse.Namespace) -> int:
    from control.serve import ControlPlane
    from control.xds.server import make_app, make_metrics_app, start_site

    state_file = default_state_file(args.config_dir) if args.state_file is None else args.state_file
    limits = LoadLimits(args.max_file_bytes, args.max_documents, args.max_depth, args.max_alias_nodes)
    plaintext = PlaintextXds(args.plaintext_xds)
    cp = ControlPlane(args.config_dir, grace=args.grace, debounce=args.debounce,
                      long_poll_timeout=args.long_poll_timeout, state_file=state_file or None, limits=limits)
    try:
        await cp.start(watch=not args.no_watch)
    except FileNotFoundError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    runners = []
    try:
        sites = [("METRICS_PORT", make_metrics_app(cp), args.metrics_port)]
        if plaintext is PlaintextXds.OFF:
            log.warning("plaintext xDS is off: no xDS port is bound (/debug and /ready are on the metrics port)")
        else:
            sites.insert(0, ("XDS_PORT", make_app(cp, plaintext), args.xds_port))
            if plaintext is PlaintextXds.ON:
                log.warning("plaintext xDS is on: any local process can register as an endpoint of any service "
                            "(the demo's setting; use --plaintext-xds read-only outside a demo)")
        for name, app, port in sites:
            try:
                runner, bound = await start_site(app, args.host, port)
            except OSError as err:
                print(f"Error: cannot bind {args.host}:{port}: {err.strerror}", file=sys.stderr)
                return EXIT_BAD_INPUT
            runners.append(runner)
            print(f"{name} {bound}", flush=True)
        log.info("serving xDS for %s (plaintext xDS %s)", args.config_dir, plaintext.value)
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
