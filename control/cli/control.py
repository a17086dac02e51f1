"""`pyproxy-control`: the control plane process (≈ istiod's `pilot-discovery discovery`).

    pyproxy-control serve --config-dir examples/mesh/ [--xds-port 15010] [--metrics-port 15014] [--grpc-port P]
                          [--secure-grpc-port P]
                          [--host 127.0.0.1] [--grace 10] [--debounce 0.1] [--eds-debounce] [--long-poll-timeout 30]
                          [--no-watch] [--state-file PATH] [--plaintext-xds on|read-only|off]
                          [--secure-port 15012] [--ca-dir DIR | --cacerts DIR] [--trust-domain TD]
                          [--max-cert-ttl 2160h]
                          [--max-file-size BYTES] [--max-documents N] [--max-depth N] [--max-alias-nodes N]
                          [-l info]

Serves xDS (REST-JSON + long-poll, docs/xds.md) and /debug/syncz, /debug/configz on the xDS port, Prometheus
metrics on the metrics port, and with `--grpc-port` / `--secure-grpc-port` ADS over gRPC (control.xds.grpc_ads,
for real Envoy); watches the config directory and pushes changes. Prints one line per bound port
(`XDS_PORT 15010`, `GRPC_PORT n`, `SECURE_GRPC_PORT n`, `METRICS_PORT 15014`) so scripts using port 0 learn
the ports. Stops on SIGTERM or SIGINT. `--plaintext-xds` is the xDS port's registration policy
(control.xds.admission): `on` (default, the demo: any caller registers as an endpoint), `read-only` (config is served, nobody registers), `off`
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

from control.ca.cli import duration_seconds
from control.istio.load import LoadLimits
from control.xds.admission import PlaintextXds
from pyproxy import __version__

EXIT_BAD_INPUT = 1
CA_DIR_ENV = "PYPROXY_CA_DIR"  # as `meshctl token create --ca-dir`
ROOT_CERT_FILE = "root-cert.pem"  # the published mesh root (Istio's istio-ca-root-cert ConfigMap key)


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
    p.add_argument("--grpc-port", type=int, default=None, metavar="PORT",
                   help="also serve ADS over gRPC in plaintext on this port (what istiod serves on 15010, where "
                        "this control plane serves REST-JSON; 0 = any; prints GRPC_PORT n); under the "
                        "--plaintext-xds policy; not served when absent (docs/xds.md, gRPC ADS)")
    p.add_argument("--secure-grpc-port", type=int, default=None, metavar="PORT",
                   help="also serve ADS over gRPC with TLS on this port, authenticated as the secure port is "
                        "(authorization: Bearer token metadata or a mesh client certificate; istiod's 15012 "
                        "gRPC); needs --secure-port; 0 = any; prints SECURE_GRPC_PORT n")
    p.add_argument("--metrics-port", type=int, default=15014, help="Prometheus /metrics (default 15014; 0 = any)")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="remove a proxy this long after its last request (default 10, istiod's "
                        "PILOT_WORKLOAD_ENTRY_GRACE_PERIOD)")
    p.add_argument("--debounce", type=float, default=0.1, metavar="SECONDS",
                   help="wait this long after a change before pushing (default 0.1, PILOT_DEBOUNCE_AFTER)")
    p.add_argument("--eds-debounce", action="store_true",
                   help="debounce registrations too (istiod's PILOT_ENABLE_EDS_DEBOUNCE); by default a proxy "
                        "registering or leaving is pushed at once, coalescing only while a push runs")
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
    p.add_argument("--secure-port", type=int, default=None, metavar="PORT",
                   help="serve the CA and authenticated xDS over TLS on this port (istiod's 15012; 0 = any); "
                        "not served when absent")
    p.add_argument("--ca-dir", default=os.environ.get(CA_DIR_ENV), metavar="DIR",
                   help=f"CA state directory: self-signed root (made at first start), token key, published "
                        f"{ROOT_CERT_FILE} (default ${CA_DIR_ENV}, else <tmp>/pyproxy-control-<hash>/)")
    p.add_argument("--cacerts-check-interval", type=float, default=5.0, metavar="SECONDS",
                   help="how often a --cacerts directory is checked for changed files, which are then loaded "
                        "without a restart (default 5)")
    p.add_argument("--cacerts", default=None, metavar="DIR",
                   help="a plugged-in CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, "
                        "cert-chain.pem) instead of the self-signed root")
    p.add_argument("--trust-domain", default=None, metavar="TD",
                   help="SPIFFE trust domain (default: meshConfig trustDomain, else cluster.local)")
    p.add_argument("--max-cert-ttl", type=duration_seconds, default=None, metavar="DURATION",
                   help="longest workload certificate the CA signs (default 2160h = 90 days, MAX_WORKLOAD_CERT_TTL)")
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


def default_state_dir(config_dir: str) -> str:
    """One state directory per config directory, outside it (the directory is watched and is the user's)."""
    digest = hashlib.sha256(os.path.abspath(config_dir).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"pyproxy-control-{digest}")


def default_state_file(config_dir: str) -> str:
    return os.path.join(default_state_dir(config_dir), "registrations.json")


class SecurePort:
    """What the secure port serves with: the CA service, the xDS auth counters, the TLS context."""

    def __init__(self, args: argparse.Namespace, cp) -> None:
        """The CA at start (control.ca.store: files only here); CAStoreError / OSError / ValueError on bad input."""
        from control.ca.authority import DEFAULT_WORKLOAD_CERT_TTL, MAX_WORKLOAD_CERT_TTL, CAPolicy
        from control.ca.server import CAMetrics, CertificateService, ServingContext
        from control.ca.store import cacerts_fingerprint, open_authority, read_cacerts_files, token_verifier
        from control.mesh import MeshConfig
        from control.xds.secure import XdsAuthMetrics
        from pyproxy.tls.files import write_file_atomic

        self.state_dir = args.ca_dir or default_state_dir(args.config_dir)
        trust_domain = args.trust_domain or MeshConfig.from_resources(cp.resources).trust_domain
        max_ttl = args.max_cert_ttl or MAX_WORKLOAD_CERT_TTL
        policy = CAPolicy(trust_domain=trust_domain, default_ttl=min(DEFAULT_WORKLOAD_CERT_TTL, max_ttl),
                          max_ttl=max_ttl)
        tokens = token_verifier(self.state_dir)  # makes the state directory (0700) and the token key (0600)
        self.cacerts = args.cacerts
        self.check_interval = args.cacerts_check_interval
        self._fingerprint = cacerts_fingerprint(read_cacerts_files(args.cacerts)) if args.cacerts else ""
        self.authority = open_authority(self.state_dir, cacerts_dir=args.cacerts, policy=policy)
        self.root_cert = os.path.join(self.state_dir, ROOT_CERT_FILE)
        write_file_atomic(self.root_cert, self.authority.trust_bundle_pem, 0o644)
        self.service = CertificateService(self.authority, tokens, CAMetrics(cp.metrics.registry))
        self.auth_metrics = XdsAuthMetrics(cp.metrics.registry)
        self.serving = ServingContext(self.authority)
        self.ssl_context = self.serving.outer
        self.source = f"plugged-in CA {args.cacerts}" if args.cacerts else \
            f"self-signed root in {os.path.join(self.state_dir, 'ca')}"

    def reload_if_changed(self) -> bool:
        """A plugged-in `cacerts` directory whose files changed is loaded again and, when it loads (key matches
        the certificate, the chain reaches a root of the bundle), swapped in whole: new CSRs are signed by it,
        new connections to 15012 get a serving certificate from it and are verified against its bundle, and the
        published mesh root file (the sidecars' --ca-root) is rewritten. A set that does not load (files
        half-copied) is logged and the CA in use stays; the next change is tried again. True when swapped."""
        from control.ca.store import CAStoreError, cacerts_fingerprint, open_authority, read_cacerts_files
        from pyproxy.tls.files import write_file_atomic

        if not self.cacerts:
            return False
        fingerprint = cacerts_fingerprint(read_cacerts_files(self.cacerts))
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            authority = open_authority(self.state_dir, cacerts_dir=self.cacerts, policy=self.authority.policy)
        except (CAStoreError, ValueError, OSError) as err:
            log.warning("cacerts %s changed but does not load (%s): still signing with the previous CA",
                        self.cacerts, err)
            return False
        self.authority = authority
        self.service.replace_authority(authority)
        self.serving.replace(authority)
        write_file_atomic(self.root_cert, authority.trust_bundle_pem, 0o644)
        log.info("cacerts %s reloaded: signing with %s, trust bundle of %d root(s) published at %s", self.cacerts,
                 authority.signing_cert.subject.rfc4514_string(), len(authority.roots), self.root_cert)
        return True

    async def watch(self) -> None:
        """Poll the cacerts directory (istiod watches its mounted cacerts the same way, by file events)."""
        while True:
            await asyncio.sleep(self.check_interval)
            self.reload_if_changed()


async def serve(args: argparse.Namespace) -> int:
    from control.serve import ControlPlane
    from control.xds.server import make_app, make_metrics_app, make_secure_app, start_site

    state_file = default_state_file(args.config_dir) if args.state_file is None else args.state_file
    limits = LoadLimits(args.max_file_bytes, args.max_documents, args.max_depth, args.max_alias_nodes)
    plaintext = PlaintextXds(args.plaintext_xds)
    cp = ControlPlane(args.config_dir, grace=args.grace, debounce=args.debounce, eds_debounce=args.eds_debounce,
                      long_poll_timeout=args.long_poll_timeout, state_file=state_file or None, limits=limits)
    try:
        await cp.start(watch=not args.no_watch)
    except FileNotFoundError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    runners = []
    grpc_servers: list = []
    secure = None
    if args.secure_port is not None:
        from control.ca.store import CAStoreError

        try:
            secure = SecurePort(args, cp)
        except (CAStoreError, ValueError) as err:
            print(f"Error: CA: {err}", file=sys.stderr)
            await cp.stop()
            return EXIT_BAD_INPUT
        except OSError as err:
            print(f"Error: CA: {err.filename or args.ca_dir}: {err.strerror}", file=sys.stderr)
            await cp.stop()
            return EXIT_BAD_INPUT
    try:
        sites = [("METRICS_PORT", make_metrics_app(cp), args.metrics_port, None)]
        if secure is not None:
            sites.insert(0, ("SECURE_PORT", make_secure_app(cp, secure.service, secure.auth_metrics),
                             args.secure_port, secure.ssl_context))
        if plaintext is PlaintextXds.OFF:
            log.warning("plaintext xDS is off: no xDS port is bound (/debug and /ready are on the metrics port)")
        else:
            sites.insert(0, ("XDS_PORT", make_app(cp, plaintext), args.xds_port, None))
            if plaintext is PlaintextXds.ON:
                log.warning("plaintext xDS is on: any local process can register as an endpoint of any service "
                            "(the demo's setting; use --plaintext-xds read-only outside a demo)")
        if args.grpc_port is not None and plaintext is not PlaintextXds.OFF:
            try:
                from control.xds.grpc_ads import plaintext_grpc_gate, start_grpc
                from control.xds.protos import ConversionError
            except ImportError as err:  # ConversionError is a ValueError: a missing xds-protos module
                print(f"Error: gRPC ADS needs grpcio and xds-protos: {err}", file=sys.stderr)
                return EXIT_BAD_INPUT
            except ValueError as err:
                print(f"Error: gRPC ADS: {err}", file=sys.stderr)
                return EXIT_BAD_INPUT
            try:
                grpc_server, bound = await start_grpc(cp, plaintext_grpc_gate(cp, plaintext), args.host,
                                                      args.grpc_port)
            except OSError as err:
                print(f"Error: cannot bind {args.host}:{args.grpc_port} (gRPC ADS): {err}", file=sys.stderr)
                return EXIT_BAD_INPUT
            except ConversionError as err:
                print(f"Error: gRPC ADS: {err}", file=sys.stderr)
                return EXIT_BAD_INPUT
            grpc_servers.append(grpc_server)
            print(f"GRPC_PORT {bound}", flush=True)
        if args.secure_grpc_port is not None:
            if secure is None:
                print("Error: --secure-grpc-port needs --secure-port (the CA that issues its certificate)",
                      file=sys.stderr)
                return EXIT_BAD_INPUT
            from control.ca.server import serving_pems
            from control.xds.grpc_ads import secure_grpc_gate, start_grpc, tls_credentials

            chain_pem, key_pem = serving_pems(secure.authority)
            gate = secure_grpc_gate(secure.service.tokens, secure.authority.policy.trust_domain, secure.auth_metrics)
            try:
                grpc_server, bound = await start_grpc(cp, gate, args.host, args.secure_grpc_port,
                                                      tls_credentials(chain_pem, key_pem,
                                                                      secure.authority.trust_bundle_pem))
            except OSError as err:
                print(f"Error: cannot bind {args.host}:{args.secure_grpc_port} (gRPC ADS over TLS): {err}",
                      file=sys.stderr)
                return EXIT_BAD_INPUT
            grpc_servers.append(grpc_server)
            print(f"SECURE_GRPC_PORT {bound}", flush=True)
        for name, app, port, ssl_context in sites:
            try:
                runner, bound = await start_site(app, args.host, port, ssl_context=ssl_context)
            except OSError as err:
                print(f"Error: cannot bind {args.host}:{port}: {err.strerror}", file=sys.stderr)
                return EXIT_BAD_INPUT
            runners.append(runner)
            print(f"{name} {bound}", flush=True)
        log.info("serving xDS for %s (plaintext xDS %s)", args.config_dir, plaintext.value)
        if secure is not None:
            td = secure.authority.policy.trust_domain
            log.info("secure port: CA (%s, trust domain %s) and authenticated xDS over TLS; mesh root "
                     "published at %s; tokens: meshctl token create -n NS --service-account SA --ca-dir %s",
                     secure.source, td, secure.root_cert, secure.state_dir)
        watcher = asyncio.get_running_loop().create_task(secure.watch()) \
            if secure is not None and secure.cacerts else None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        if watcher is not None:
            watcher.cancel()
        return 0
    finally:
        for grpc_server in grpc_servers:
            await grpc_server.stop(grace=0.5)  # ends the ADS streams (Envoy reconnects to the next one)
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
