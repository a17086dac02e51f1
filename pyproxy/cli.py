"""`pyproxy` command line: run a proxy from an Envoy v3 bootstrap, or validate one.

    pyproxy run -c examples/static/front-proxy.yaml [--concurrency N]
    pyproxy validate -c examples/static/front-proxy.yaml      # like `envoy --mode validate`
    pyproxy sidecar --name reviews-v1 --service-account bookinfo-reviews ... \
        [--control https://127.0.0.1:15012 --ca-root root-cert.pem --token-file istio-token]

With an `https://` control URL (the control plane's secure port) the sidecar/gateway first gets its
workload certificate from the control plane's CA (pyproxy.tls.agent, as istio-agent does: the identity is
the node's namespace and service account, the token file authenticates the CSR, the mesh root verifies the
server), installs it as the SDS secrets `default`/`ROOTCA`, keeps renewing it at about half its lifetime
(authenticating with the current certificate), and only then follows xDS over HTTPS with the token and the
certificate (pyproxy.xds.credentials). Until a certificate comes, one warning line per attempt, with back-off.

Thin on purpose: it parses arguments and calls `pyproxy.bootstrap`, `pyproxy.server`, `pyproxy.workers`.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from typing import Any

from .bootstrap import BootstrapError, load_bootstrap
from . import __version__


def _install_uvloop() -> str:
    """The event loop every proxy process runs (uvloop when installed), and glibc's malloc tuned for its TLS reads
    (pyproxy/runtime/malloc.py)."""
    from .runtime.malloc import keep_tls_reads_off_mmap

    keep_tls_reads_off_mmap()
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


async def run_dynamic(args: argparse.Namespace, kind: str) -> int:
    """`pyproxy sidecar|gateway`: no bootstrap file; everything comes from the control plane over xDS."""
    from .admin.server import make_app, make_prometheus_app, start_admin
    from .server import ProxyServer
    from .xds.client import XdsClient
    from .xds.node import build_node, parse_labels

    try:
        labels = parse_labels(args.labels)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if kind == "gateway" and not labels:
        labels = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
    if kind == "sidecar" and args.control.startswith("https://"):
        # this sidecar will hold a workload certificate: say so as sidecar injection labels a pod, so peers'
        # auto-mTLS (the cluster's `tlsMode-istio` transport socket match) talks mTLS to it
        labels.setdefault("security.istio.io/tlsMode", "istio")
    node = build_node(kind=kind, name=args.name, namespace=args.namespace, ip=args.ip,
                      service_account=args.service_account, labels=labels, app_ports=args.app_port,
                      inbound_port=args.inbound_port, outbound_port=args.outbound_port, admin_port=args.admin_port,
                      bind_address=args.bind)
    server = ProxyServer(drain_time=args.drain_time_s)
    server.node = node  # the workload's own metadata for istio.stats (peer metadata exchange)
    secure = None
    if args.control.startswith("https://"):
        try:
            secure = _secure_control(args, node, server)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    client = XdsClient(args.control, node, server, credentials=secure.credentials if secure else None,
                       mode=args.xds_mode, use_leds=args.xds_leds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def info() -> dict[str, Any]:
        out = {"node": node["id"], "xds": client.state.describe(), "control_plane_connected": client.connected,
               "control_plane_refused": client.refused}
        if secure is not None:
            out.update(secure.describe())
        return out
    app = make_app(server, on_quit=stop.set, extra_info=info)
    try:
        runner, port = await start_admin(app, "127.0.0.1", args.admin_port)
    except OSError as e:
        print(f"error: cannot bind admin port {args.admin_port}: {e.strerror}", file=sys.stderr)
        return 1
    runners = [runner]
    log = logging.getLogger("pyproxy")
    log.info("%s %s.%s: admin on 127.0.0.1:%d, following %s", kind, args.name, args.namespace, port, args.control)
    if args.prometheus_port is not None:
        try:
            prom_runner, prom_port = await start_admin(make_prometheus_app(app), args.bind or "0.0.0.0",
                                                       args.prometheus_port)
        except OSError as e:
            print(f"error: cannot bind --prometheus-port {args.prometheus_port}: {e.strerror}", file=sys.stderr)
            await runner.cleanup()
            return 1
        runners.append(prom_runner)
        log.info("%s: /stats/prometheus on %s:%d", kind, args.bind or "0.0.0.0", prom_port)
    if secure is not None and not await secure.first_certificate(stop):
        await secure.stop()
        await server.stop()
        for r in runners:
            await r.cleanup()
        return 0 if stop.is_set() else 1
    await client.start()
    await stop.wait()
    # Graceful shutdown as Istio's sidecar does it (terminationDrainDuration): stop following the control plane
    # (its registration grace period starts), keep serving for the drain time so in-flight and late requests
    # still land while the endpoint leaves everyone's EDS, asking clients to reconnect (connection: close).
    await client.stop()
    if secure is not None:
        await secure.stop()
    server.begin_drain()
    if args.drain_time_s > 0:
        logging.getLogger("pyproxy").info("draining for %.1fs", args.drain_time_s)
        try:
            async with asyncio.timeout(args.drain_time_s):
                await _second_signal(loop)
        except asyncio.TimeoutError:
            pass
    await server.stop()
    for r in runners:
        await r.cleanup()
    return 0


class SecureControl:
    """The certificate agent and the xDS credentials of a proxy that follows the control plane's secure port."""

    def __init__(self, agent: Any, credentials: Any, server: Any):
        self.agent, self.credentials, self.server = agent, credentials, server
        self.task: asyncio.Task | None = None
        agent.subscribe(self._installed)

    def _installed(self, secret: Any) -> None:
        """Every new certificate: SDS `default`/`ROOTCA` for the data plane, the client certificate for xDS."""
        self.server.secrets.install_workload_secret(secret)
        self.credentials.use_secret(secret)
        logging.getLogger("pyproxy").info("workload certificate for %s installed (valid until %s, renewal at %s)",
                                          secret.identity.uri, _utc(secret.not_after), _utc(secret.rotate_at))

    async def first_certificate(self, stop: asyncio.Event) -> bool:
        """Run the agent; True once it holds a certificate, False when stopped first or the agent died."""
        got = asyncio.Event()
        self.agent.subscribe(lambda _secret: got.set())
        self.task = asyncio.create_task(self.agent.run(), name="certificate-agent")
        waits = {asyncio.create_task(got.wait()), asyncio.create_task(stop.wait())}
        done, pending = await asyncio.wait({*waits, self.task}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending - {self.task}:
            t.cancel()
        if self.task in done:
            err = self.task.exception()
            print(f"error: certificate agent stopped: {type(err).__name__}: {err}", file=sys.stderr)
            return False
        return got.is_set()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def describe(self) -> dict[str, Any]:
        """For the admin /server_info: the SPIFFE identity and the certificate's times."""
        s = self.agent.secret
        return {"identity": s.identity.uri if s else None,
                "workload_certificate": None if s is None else {
                    "serial_number": s.serial_hex, "sha256": _pem_fingerprints(s.cert_chain_pem)[0],
                    "issuer": s.issuer,
                    "valid_until": _utc(s.not_after),
                    "renewal_at": _utc(s.rotate_at)},
                # SDS ROOTCA: the roots this sidecar verifies peers with (two during a root rotation)
                "trust_bundle": None if s is None else _pem_fingerprints(s.root_bundle_pem),
                "certificate_rotations": self.agent.rotations, "certificate_failures": self.agent.failures}


def _utc(seconds: float) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _secure_control(args: argparse.Namespace, node: dict[str, Any], server: Any) -> SecureControl:
    """The agent and credentials for an https:// control URL; ValueError (one line) on bad options."""
    from .tls.agent import ISOLATE_MIN_TTL, CertificateAgent
    from .tls.identity import IdentityError, PeerIdentity
    from .xds.credentials import ControlPlaneCredentials, CredentialsError

    missing = [flag for flag, value in (("--ca-root FILE", args.ca_root), ("--token-file FILE", args.token_file))
               if not value]
    if missing:
        raise ValueError(f"{' and '.join(missing)} needed with an https:// --control URL "
                         "(the mesh root that verifies the control plane, the service-account token)")
    meta = node["metadata"]
    try:
        identity = PeerIdentity(args.trust_domain, meta["NAMESPACE"], meta["SERVICE_ACCOUNT"])
        credentials = ControlPlaneCredentials(args.ca_root, args.token_file)
    except (IdentityError, CredentialsError) as e:
        raise ValueError(str(e)) from None
    agent = CertificateAgent(args.control, root_cert_path=args.ca_root, token_path=args.token_file,
                             identity=identity, ttl=args.secret_ttl, renew_with_certificate=True,
                             isolated=args.secret_ttl >= ISOLATE_MIN_TTL)
    return SecureControl(agent, credentials, server)


def _pem_fingerprints(pem: bytes) -> list[str]:
    """SHA-256 of each certificate's DER in a PEM blob, hex, in order (the leaf's is what a peer's XFCC `Hash=`
    shows). ssl's PEM decoding: no cryptography in the sidecar process."""
    import hashlib
    import re
    import ssl

    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL)
    return [hashlib.sha256(ssl.PEM_cert_to_DER_cert(b.decode("ascii"))).hexdigest() for b in blocks]


def _seconds(text: str) -> float:
    """`86400`, `90s`, `30m`, `24h` -> seconds (an argparse type)."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        value = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"want a duration like 24h, 30m, 90s; got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"want a duration above 0, got {text!r}")
    return value


async def _second_signal(loop: asyncio.AbstractEventLoop) -> None:
    """A second SIGTERM/SIGINT during the drain stops at once."""
    again = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, again.set)
    await again.wait()


def _add_dynamic(sub: Any, kind: str) -> None:
    p = sub.add_parser(kind, help=f"run a {kind} configured by the control plane over xDS (registers itself)")
    p.add_argument("--control", default="http://127.0.0.1:15010",
                   help="control plane xDS URL: http://...:15010 (plaintext), or https://...:15012 (the secure "
                        "port: certificate from its CA first, then authenticated xDS; needs --ca-root, --token-file)")
    p.add_argument("--ca-root", metavar="FILE",
                   help="the mesh root certificate (root-cert.pem, Istio's istio-ca-root-cert) that verifies the "
                        "control plane's secure port")
    p.add_argument("--token-file", metavar="FILE",
                   help="the service-account token (meshctl token create; Istio's ./var/run/secrets/tokens/"
                        "istio-token) that authenticates the certificate request and xDS")
    p.add_argument("--trust-domain", default="cluster.local",
                   help="SPIFFE trust domain of this workload's identity (default cluster.local, TRUST_DOMAIN)")
    p.add_argument("--secret-ttl", type=_seconds, default=86400.0, metavar="DURATION",
                   help="certificate lifetime to ask for (default 24h, Istio's SECRET_TTL); renewal at about half")
    p.add_argument("--xds-mode", choices=["delta", "sotw"], default="delta",
                   help="incremental xDS (/v3/delta_discovery:*, the default) or state of the world (/v3/discovery:*)")
    p.add_argument("--xds-leds", action=argparse.BooleanOptionalAction, default=True,
                   help="in delta mode, ask for endpoints as LbEndpoint resources of their own (LEDS, docs/xds.md; "
                        "the default): a registration then sends each proxy the new endpoint, not the "
                        "assignments that list it. --no-xds-leds: whole ClusterLoadAssignments")
    p.add_argument("--name", required=kind == "sidecar", default="istio-ingressgateway",
                   help="workload (pod) name, e.g. reviews-v1")
    p.add_argument("--namespace", default="default" if kind == "sidecar" else "istio-system")
    p.add_argument("--service-account", default="")
    p.add_argument("--labels", default="", help="k=v,k2=v2 (the workload's labels; selects services and policies)")
    p.add_argument("--app-port", type=int, action="append", default=[], help="the local app's port (repeatable)")
    p.add_argument("--ip", default="127.0.0.1", help="the address other proxies reach this one at")
    p.add_argument("--bind", default="", metavar="IP",
                   help="bind the listeners here instead of 0.0.0.0 (a pod's own network namespace makes 0.0.0.0 "
                        "private; processes sharing one host want 127.0.0.1)")
    p.add_argument("--inbound-port", type=int, default=15006)
    p.add_argument("--outbound-port", type=int, default=15001)
    p.add_argument("--admin-port", type=int, default=15000)
    p.add_argument("--prometheus-port", type=int, default=None, metavar="PORT",
                   help="also serve /stats/prometheus (only) on --bind (default 0.0.0.0) at PORT, as Istio's 15090 "
                        "does for a Prometheus elsewhere; the admin port stays on 127.0.0.1 (default: off)")
    p.add_argument("--drain-time-s", type=float, default=5.0,
                   help="on SIGTERM keep serving this long before stopping (Istio's terminationDrainDuration, 5 s)")
    p.add_argument("-l", "--log-level", default="info", choices=["debug", "info", "warning", "error"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyproxy", description="pyproxy: an Envoy-like proxy in Python")
    parser.add_argument("--version", action="version", version=f"pyproxy (pyproxy mesh) {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a proxy from an Envoy v3 bootstrap file")
    run.add_argument("-c", "--config-path", required=True, help="Envoy v3 bootstrap (YAML or JSON)")
    run.add_argument("--concurrency", type=int, default=1, help="worker processes sharing the listeners (default 1)")
    run.add_argument("--drain-time-s", type=float, default=5.0, help="how long removed listeners drain")
    run.add_argument("-l", "--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--worker-id", type=int, default=None, help=argparse.SUPPRESS)
    val = sub.add_parser("validate", help="check a bootstrap file and exit (like envoy --mode validate)")
    val.add_argument("-c", "--config-path", required=True)
    _add_dynamic(sub, "sidecar")
    _add_dynamic(sub, "gateway")
    from .agent.run import add_arguments as agent_arguments

    agent_arguments(sub.add_parser("agent", help="run a real Envoy as a sidecar: write its bootstrap (ADS over "
                                              "gRPC to the control plane), start and watch it (pilot-agent)"))
    args = parser.parse_args(argv)
    if args.cmd == "agent":
        from .agent.run import run as run_agent

        return run_agent(args)

    logging.basicConfig(level=getattr(logging, getattr(args, "log_level", "info").upper()),
                        format="[%(asctime)s][%(process)d][%(levelname)s][%(name)s] %(message)s")
    try:
        if args.cmd in ("sidecar", "gateway"):
            _install_uvloop()
            return asyncio.run(run_dynamic(args, args.cmd))
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
