"""`pyproxy agent`: the pilot-agent analogue for a real Envoy sidecar.

    pyproxy agent --control-grpc 127.0.0.1:15011 --name productpage-v1 --labels app=productpage,version=v1 \\
                  --app-port 9080 --inbound-port 15206 --outbound-port 15201 --admin-port 15200 [--envoy PATH]
    pyproxy agent ... --ca-address https://127.0.0.1:15012 --ca-root root-cert.pem --token-file TOKEN   # + SDS
    pyproxy agent ... --print-bootstrap          # only print the bootstrap (JSON) and exit

It writes Envoy's bootstrap (pyproxy.agent.bootstrap: node and metadata as istio-agent fills them, ADS over gRPC
to the control plane) into its work directory, starts Envoy on it (`-c FILE --concurrency N`), forwards SIGTERM /
SIGINT to Envoy's PID, and exits with Envoy's exit code (istio-agent watches Envoy the same way: when Envoy
exits, the agent exits).

With `--ca-address` it is also Envoy's SDS server (pyproxy.agent.sds): it makes the workload key, gets the
certificate from the control plane's CA with the token (pyproxy.tls.agent.CertificateAgent, renewals with the
current certificate at `--secret-grace-ratio` of the lifetime before expiry), and serves `default` / `ROOTCA` on a
unix socket in the work directory; each renewal is pushed to Envoy. Its status server (`--status-port`, Istio's
15020; 0 = any free port) answers `/healthz/ready` (pyproxy.agent.health); Envoy's bootstrap listeners on
`--health-port` (15021) and `--stats-port` (15090) route there and to Envoy's own /stats/prometheus.

It prints `ENVOY_PID n`, `STATUS_PORT n` and, with SDS, `SDS_SOCKET path`.
The Envoy executable: `--envoy`, else $ENVOY_BIN, else `envoy` on PATH; none is one line on stderr, exit 1.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from .bootstrap import Ports, Workload, XdsTls, envoy_bootstrap

log = logging.getLogger("pyproxy.agent")

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
    p.add_argument("--ca-address", default=None, metavar="URL",
                   help="the control plane's CA (https://HOST:PORT, its --secure-port; Istio's CA_ADDR): serve Envoy "
                        "SDS `default`/`ROOTCA` from a certificate got with --token-file, verified with --ca-root")
    p.add_argument("--trust-domain", default="cluster.local", help="SPIFFE trust domain of the workload identity")
    p.add_argument("--secret-ttl", type=_seconds, default=86400.0, metavar="DURATION",
                   help="certificate lifetime to ask for (default 24h, Istio's SECRET_TTL)")
    p.add_argument("--secret-grace-ratio", type=float, default=0.5, metavar="RATIO",
                   help="renew when this fraction of the lifetime is left (default 0.5, SECRET_GRACE_PERIOD_RATIO)")
    p.add_argument("--status-port", type=int, default=15020,
                   help="the agent's status server: /healthz/ready (Istio's 15020; 0 = any free port)")
    p.add_argument("--health-port", type=int, default=15021,
                   help="Envoy listener routing /healthz/ready to the status port (Istio's 15021; 0 = none)")
    p.add_argument("--stats-port", type=int, default=15090,
                   help="Envoy listener serving /stats/prometheus from its admin (Istio's 15090; 0 = none)")
    p.add_argument("--print-bootstrap", action="store_true", help="print the bootstrap (JSON) and exit")
    p.add_argument("-l", "--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="Envoy's log level (default warning)")


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port` too) -> (host, port); ValueError naming the problem."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--control-grpc: want HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _seconds(text: str) -> float:
    from pyproxy.cli import _seconds as seconds  # the sidecar's --secret-ttl parser
    return seconds(text)


def bootstrap_from_args(args: Any, sds_socket: str | None = None, status_port: int | None = None) -> dict:
    """The bootstrap the arguments describe; `sds_socket` / `status_port`: where the agent actually serves them
    (None: the socket's place in the work dir when SDS is on, and --status-port)."""
    from pyproxy.xds.node import parse_labels

    host, port = parse_address(args.control_grpc)
    labels = parse_labels(args.labels)
    if args.ca_address:
        # Envoy will hold a workload certificate (SDS): say so as sidecar injection labels a pod, so peers'
        # auto-mTLS (the cluster's `tlsMode-istio` transport socket match) talks mTLS to it (as pyproxy sidecar)
        labels.setdefault("security.istio.io/tlsMode", "istio")
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
    if args.ca_address and tls is None:
        raise ValueError("--ca-address needs --ca-root and --token-file (the mesh root and the token the CSR is sent "
                         "with)")
    if args.ca_address and not args.ca_address.startswith("https://"):
        raise ValueError(f"--ca-address: want https://HOST:PORT (the control plane's secure port), got "
                         f"{args.ca_address!r}")
    if not 0.0 < args.secret_grace_ratio < 1.0:
        raise ValueError(f"--secret-grace-ratio {args.secret_grace_ratio}: want a fraction between 0 and 1")
    if sds_socket is None and args.ca_address:
        from .sds import SOCKET_PATH
        sds_socket = os.path.join(args.work_dir or ".", SOCKET_PATH)
    ports = Ports(args.status_port if status_port is None else status_port, args.health_port, args.stats_port)
    return envoy_bootstrap(w, host, port, tls, delta=args.delta, sds_socket=sds_socket, ports=ports)


def envoy_executable(given: str | None) -> str | None:
    candidate = given or os.environ.get("ENVOY_BIN") or shutil.which("envoy")
    return candidate if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None


@dataclass
class Sds:
    """The running SDS side: certificate agent, secret store, gRPC server on the unix socket."""

    agent: Any
    store: Any
    server: Any
    servicer: Any
    socket: str
    task: asyncio.Task | None = None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.server.stop(grace=None)


async def start_sds(args: Any, work: str) -> Sds:
    """Certificate agent + SDS server; the first certificate is fetched in the background (Envoy's SDS streams
    wait for it, as istio-agent's SDS server waits for its CSR)."""
    from pyproxy.tls.agent import CertificateAgent
    from pyproxy.tls.identity import PeerIdentity

    from .sds import SecretStore, socket_path, start_sds as serve

    identity = PeerIdentity(args.trust_domain, args.namespace, args.service_account)
    agent = CertificateAgent(args.ca_address, root_cert_path=args.ca_root, token_path=args.token_file,
                             identity=identity, ttl=args.secret_ttl, renew_with_certificate=True,
                             grace_ratio=args.secret_grace_ratio)
    store = SecretStore()

    def installed(secret: Any) -> None:
        store.install(secret)
        log.info("workload certificate for %s installed (serial %x, valid %.0fs, renewal in %.0fs); SDS versions %s",
                 secret.identity.uri, _leaf_serial(secret), secret.not_after - secret.issued_at,
                 secret.rotate_at - secret.issued_at, store.versions)
    agent.subscribe(installed)
    path = socket_path(work) or os.path.join(tempfile.mkdtemp(prefix="pyproxy-sds-"), "socket")
    server, servicer = await serve(store, path)
    sds = Sds(agent, store, server, servicer, path)
    sds.task = asyncio.create_task(agent.run(), name="certificate-agent")
    return sds


def _parent_death_signal() -> Callable[[], None] | None:
    """For Envoy's child process before exec: SIGTERM it if the agent dies without forwarding a signal (kill -9),
    so no Envoy outlives its agent (in a pod the container ends both). Linux prctl PR_SET_PDEATHSIG; elsewhere
    None. libc is looked up here, in the parent: the forked child of a threaded process must not import."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    term = int(signal.SIGTERM)
    return lambda: prctl(1, term)  # 1 = PR_SET_PDEATHSIG


def _leaf_serial(secret: Any) -> int:
    from pyproxy.tls.pki import load_certificates
    return load_certificates(secret.cert_chain_pem, "workload certificate")[0].serial_number


async def start_status(admin_port: int, port: int) -> tuple[Any, int]:
    from aiohttp import web

    from .health import status_app

    runner = web.AppRunner(status_app(admin_port), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def run(args: Any) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(process)d][%(levelname)s][%(name)s] %(message)s")
    try:
        bootstrap_from_args(args)  # every argument checked before anything starts
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.print_bootstrap:
        print(json.dumps(bootstrap_from_args(args), indent=2))
        return 0
    binary = envoy_executable(args.envoy)
    if binary is None:
        print(f"error: no Envoy executable ({args.envoy or '$ENVOY_BIN or envoy on PATH'}); "
              "install one (make envoy) or pass --envoy PATH", file=sys.stderr)
        return EXIT_BAD_INPUT
    return asyncio.run(_run(args, binary))


async def _run(args: Any, binary: str) -> int:
    work = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix=f"pyproxy-agent-{args.name}-"))
    os.makedirs(work, exist_ok=True)
    sds = None
    status = None
    try:
        try:
            if args.ca_address:
                sds = await start_sds(args, work)
                print(f"SDS_SOCKET {sds.socket}", flush=True)
            status, status_port = await start_status(args.admin_port, args.status_port)
        except OSError as err:
            print(f"error: cannot serve ({err})", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"STATUS_PORT {status_port}", flush=True)
        path = os.path.join(work, "envoy-rev.json")  # istio-agent's file name
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(bootstrap_from_args(args, sds.socket if sds else None, status_port), fh, indent=2)
        # `--component-log-level misc:error`: pilot-agent's default (proxyComponentLogLevel): Envoy's "Deprecated
        # field" warnings (one per route per RDS update, e.g. RouteAction.max_grpc_timeout that istiod emits) are
        # logged under `misc`; at warning level they flood the log and slow Envoy down on a mesh-sized config
        argv = [binary, "-c", path, "--concurrency", str(args.concurrency), "--disable-hot-restart",
                "--use-dynamic-base-id", "-l", args.log_level, "--component-log-level", "misc:error",
                "--drain-time-s", "5"]
        envoy = await asyncio.create_subprocess_exec(*argv, cwd=work, preexec_fn=_parent_death_signal())
        print(f"ENVOY_PID {envoy.pid}", flush=True)

        def forward(signum: int) -> None:
            if envoy.returncode is None:
                envoy.send_signal(signum)  # by PID: Envoy drains and exits; the agent exits with it
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, forward, sig)
        try:
            return await envoy.wait()
        finally:
            if envoy.returncode is None:
                envoy.kill()
                await envoy.wait()
    finally:
        if sds is not None:
            await sds.stop()
        if status is not None:
            await status.cleanup()
