"""`pyproxy` command line: run a proxy from an Envoy v3 bootstrap, or validate one.

    pyproxy run -c examples/static/front-proxy.yaml [--concurrency N]
    pyproxy validate -c examples/static/front-proxy.yaml      # like `envoy --mode validate`

Thin on purpose: it parses arguments and calls `pyproxy.bootstrap`, `pyproxy.server`, `pyproxy.workers`.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from .bootstrap import BootstrapError, load_bootstrap


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def run_single(bootstrap_path: str, *, worker_id: int | None = None, reuse_port: bool = False,
                     admin_port_override: int | None = None, drain_time: float = 5.0) -> int:
    """Run one proxy process: data plane + admin in one event loop, until SIGTERM/SIGINT/quitquitquit."""
    from .admin.server import make_app, start_admin
    from .server import ConfigRejected, ProxyServer

    bootstrap = load_bootstrap(bootstrap_path)
    server = ProxyServer(reuse_port=reuse_port, drain_time=drain_time, worker_id=worker_id)
    try:
        await server.apply_bootstrap(bootstrap)
    except ConfigRejected as e:
        print(f"error: {bootstrap_path}: {e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    admin = bootstrap.admin
    if admin is not None and admin.address is not None or admin_port_override is not None:
        host = admin.address.socket_address.address if admin and admin.address else "127.0.0.1"
        port = admin_port_override if admin_port_override is not None else admin.address.socket_address.port_value
        app = make_app(server, bootstrap=bootstrap, on_quit=stop.set)
        try:
            runner, bound = await start_admin(app, host, port)
        except OSError as e:
            print(f"error: cannot bind admin address {host}:{port}: {e.strerror}", file=sys.stderr)
            await server.stop()
            return 1
        if worker_id is not None:
            print(f"ADMIN_PORT {bound}", flush=True)  # the supervisor reads this line
    # Everything allocated so far (config, route tables, modules) lives as long as the process: move it out of
    # the collector's view so gen-2 collections do not rescan it (the "gc.freeze" idiom of long-running servers).
    gc.collect()
    gc.freeze()
    ports = ", ".join(f"{k}=127.0.0.1:{rt.port}" if rt.config.address.socket_address.address in ("127.0.0.1", "0.0.0.0")
                      else f"{k}={rt.config.address.socket_address.address}:{rt.port}"
                      for k, rt in server.listeners.items())
    logging.getLogger("pyproxy").info("pyproxy serving: %s", ports)
    await stop.wait()
    await server.stop()
    if runner is not None:
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyproxy", description="pyproxy: an Envoy-like proxy in Python")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a proxy from an Envoy v3 bootstrap file")
    run.add_argument("-c", "--config-path", required=True, help="Envoy v3 bootstrap (YAML or JSON)")
    run.add_argument("--concurrency", type=int, default=1, help="worker processes sharing the listeners (default 1)")
    run.add_argument("--drain-time-s", type=float, default=5.0, help="how long removed listeners drain")
    run.add_argument("-l", "--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--worker-id", type=int, default=None, help=argparse.SUPPRESS)
    val = sub.add_parser("validate", help="check a bootstrap file and exit (like envoy --mode validate)")
    val.add_argument("-c", "--config-path", required=True)
    args = parser.parse_args(argv)

    logging.basicConfig(level=getattr(logging, getattr(args, "log_level", "info").upper()),
                        format="[%(asctime)s][%(process)d][%(levelname)s][%(name)s] %(message)s")
    try:
        if args.cmd == "validate":
            b = load_bootstrap(args.config_path)
            from .server import ConfigRejected, validate_snapshot

            sr = b.static_resources
            try:
                validate_snapshot(sr.listeners if sr else (), sr.clusters if sr else ())
            except ConfigRejected as e:
                print(f"error: {args.config_path}: {e}", file=sys.stderr)
                return 1
            print(f"configuration '{args.config_path}' OK")
            return 0
        load_bootstrap(args.config_path)  # fail fast with a clear message, before forking workers
        _install_uvloop()
        if args.concurrency > 1 and args.worker_id is None:
            from .workers import run_supervisor

            return asyncio.run(run_supervisor(args.config_path, args.concurrency, args.drain_time_s))
        return asyncio.run(run_single(args.config_path, worker_id=args.worker_id,
                                      reuse_port=args.worker_id is not None,
                                      admin_port_override=0 if args.worker_id is not None else None,
                                      drain_time=args.drain_time_s))
    except BootstrapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
