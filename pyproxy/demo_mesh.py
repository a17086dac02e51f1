"""`make demo`: the demo mesh as local processes (no Docker): a control plane, bookinfo and its sidecars.

What runs (every listener on 127.0.0.1, ports picked free at start, written to a state file that meshctl reads):
  pyproxy-control serve --config-dir <copy of examples/mesh>  ≈ istiod: watches the YAML, serves xDS; its CA and
      --secure-port P --ca-dir <tmp>/ca                   authenticated xDS on the secure port (≈ 15012);
      --plaintext-xds read-only                           plaintext xDS only serves config (nobody registers)
  meshctl token create -n NS --service-account SA       one token per service account (≈ projected tokens)
  pyproxy gateway --control https://... --bind 127.0.0.1  the ingress gateway (Gateway bookinfo-gateway)
  for each workload (productpage-v1, details-v1, reviews-v1/v2/v3, ratings-v1):
      python -m bookinfo.app --service S --version V      Istio's bookinfo app (bookinfo/app.py): productpage
                                                          calls details and reviews, reviews v2/v3 call ratings,
                                                          each through its own sidecar, by service name
      pyproxy sidecar --name <workload> --labels ...      its sidecar: gets its certificate (SPIFFE identity)
          --control https://127.0.0.1:P                   from the control plane's CA with its token, then
          --ca-root <tmp>/ca/root-cert.pem --token-file   registers itself and follows xDS over the secure port
`--envoy reviews-v2` (repeatable, or `--envoy all`) runs those workloads' sidecars as real Envoy instead, through
`pyproxy agent` (its bootstrap, ADS over gRPC on the control plane's --secure-grpc-port, its certificate over SDS
from the agent; Envoy from $ENVOY_BIN, else .venv-envoy/bin/envoy from `make envoy`, else PATH).
Every sidecar talks mutual TLS to the others (examples/mesh/security.yaml says STRICT). The demo then sends
requests from outside through the ingress gateway and shows what the mesh did: the VirtualService's 80/20
split of reviews between v1 and v3, `end-user: jason` always on v2, the fault injected for `tester`, the
caller's identity as the server side's app sees it, plaintext refused. It keeps running until Ctrl-C, which
stops every process and removes its temporary directory (`--keep` keeps it); the config it serves is a copy,
so editing it never touches the repository's files.
"""
from __future__ import annotations

import argparse
import collections
import faulthandler
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from . import demo_prometheus
from .demo_scenarios import SCENARIOS
from .demo_scenarios import run as run_scenario
from .demo_state import clear_state, write_state

ROOT = pathlib.Path(__file__).resolve().parent.parent
MESH = ROOT / "examples" / "mesh"

GATEWAY_NAMESPACE, GATEWAY_SA = "istio-system", "istio-ingressgateway-service-account"
WORKLOADS = [  # name, service account, labels
    ("productpage-v1", "bookinfo-productpage", {"app": "productpage", "version": "v1"}),
    ("details-v1", "bookinfo-details", {"app": "details", "version": "v1"}),
    ("reviews-v1", "bookinfo-reviews", {"app": "reviews", "version": "v1"}),
    ("reviews-v2", "bookinfo-reviews", {"app": "reviews", "version": "v2"}),
    ("reviews-v3", "bookinfo-reviews", {"app": "reviews", "version": "v3"}),
    ("ratings-v1", "bookinfo-ratings", {"app": "ratings", "version": "v1"}),
]


def free_port() -> int:
    return free_ports(1)[0]


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux ip_local_port_range, default 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


PORT_RANGE_ENV = "PYPROXY_PORT_RANGE"


def port_range() -> tuple[int, int]:
    """The ports `free_ports` picks from, both ends included: $PYPROXY_PORT_RANGE ("20000-20999"), else 10000 up
    to the ephemeral range. Two meshes on one machine (or two test processes) given ranges of their own never
    pick each other's ports."""
    spec = os.environ.get(PORT_RANGE_ENV, "")
    if spec:
        try:
            low, high = (int(part) for part in spec.split("-"))
        except ValueError:
            raise ValueError(f"{PORT_RANGE_ENV}={spec!r}: expected LOW-HIGH, for example 20000-20999") from None
        if not 1024 <= low <= high <= 65535:
            raise ValueError(f"{PORT_RANGE_ENV}={spec!r}: expected 1024 <= LOW <= HIGH <= 65535")
        return low, high
    return 10000, _ephemeral_low() - 1


_port_rng = random.Random()
_cursor: list[int] = []  # the next port this process tries; starts at a random point of the range


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports for processes that bind them LATER (sidecars, the control plane).

    A port the kernel picks for `bind(port 0)` comes from the ephemeral range, which is also where every outgoing
    connection gets its source port: between our check and the process's bind, some connection may take it
    ("address already in use", seen in CI). So pick from `port_range()`, below the ephemeral range. Walk it in
    order from a random start rather than drawing at random: a process then never hands out a port again (one
    its earlier meshes may still hold) until it has gone round the whole range. Each port is checked by binding
    it on 0.0.0.0 (what the sidecars bind), all at once, then released."""
    low, high = port_range()
    if not _cursor or not low <= _cursor[0] <= high:
        _cursor[:] = [_port_rng.randint(low, high)]
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(high - low + 1):
            if len(ports) == count:
                break
            port = _cursor[0]
            _cursor[0] = low if port >= high else port + 1
            s = socket.socket()
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
        if len(ports) < count:
            raise OSError(f"could not find {count} free ports between {low} and {high}")
        return ports
    finally:
        for s in socks:
            s.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # show a 301 as it is, never follow it
        return None


def http(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0,
         context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    status, _, body = http_full(url, headers, timeout, context)
    return status, body


def http_full(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0,
              context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body); an HTTP error status is an answer, not an exception."""
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_until(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Mesh:
    """The processes of the demo mesh; `stop()` ends every one by PID."""

    def __init__(self, workdir: pathlib.Path, envoy: dict[str, str] | None = None):
        self.workdir = workdir
        self.config_dir = workdir / "mesh"
        shutil.copytree(MESH, self.config_dir)
        self.envoy = dict(envoy or {})  # workload -> Envoy executable: these run Envoy through `pyproxy agent`
        # every port the demo needs, in one batch: gateway (2), control plane (4), gateway proxy (3), Prometheus (1),
        # 4 per workload, 3 more per Envoy workload (the agent's status port, Envoy's 15021 and 15090 listeners)
        self._ports = iter(free_ports(11 + 4 * len(WORKLOADS) + 3 * len(self.envoy)))
        self.gateway_http_port = self.free_port()
        self.gateway_port = self.free_port()  # HTTPS
        ca, chain, key = ingress_pki(workdir)
        _configure_gateway(self.config_dir, self.gateway_http_port, self.gateway_port, chain, key)
        self.external_port = self.free_port()  # the ServiceEntry's server (examples/mesh/egress.yaml)
        _set_external_port(self.config_dir / "egress.yaml", self.external_port)
        self.ssl = ssl.create_default_context(cadata=ca.decode())  # trusts the demo's ingress CA only
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.xds_port = self.free_port()
        self.secure_port = self.free_port()
        self.metrics_port = self.free_port()
        self.grpc_port = self.free_port()  # secure gRPC ADS, for the Envoy sidecars
        self.ca_dir = workdir / "ca"  # the control plane's CA state: root, token key, published root-cert.pem
        self.sidecars: dict[str, dict[str, int]] = {}
        self.prometheus_url: str | None = None

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        import os

        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append((name, p))
        return p

    def free_port(self) -> int:
        return next(self._ports)

    @property
    def gateway_url(self) -> str:
        return f"https://127.0.0.1:{self.gateway_port}"

    @property
    def secure_url(self) -> str:
        return f"https://127.0.0.1:{self.secure_port}"

    def token(self, namespace: str, sa: str) -> pathlib.Path:
        """`meshctl token create` for one service account (the demo's stand-in for a projected token)."""
        path = self.workdir / "tokens" / f"{namespace}.{sa}"
        path.parent.mkdir(exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "control.cli.meshctl", "token", "create", "-n", namespace,
                               "--service-account", sa, "--ca-dir", str(self.ca_dir), "-o", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"meshctl token create: {done.stderr.strip()}")
        return path

    def secure_args(self, namespace: str, sa: str) -> list[str]:
        return ["--control", self.secure_url, "--ca-root", str(self.ca_dir / "root-cert.pem"),
                "--token-file", str(self.token(namespace, sa)), "--service-account", sa]

    def start(self) -> None:
        py = sys.executable
        self.spawn("control-plane", [py, "-m", "control.cli.control", "serve", "--config-dir", str(self.config_dir),
                                     "--xds-port", str(self.xds_port), "--metrics-port", str(self.metrics_port),
                                     "--secure-port", str(self.secure_port), "--ca-dir", str(self.ca_dir),
                                     "--plaintext-xds", "read-only", "--secure-grpc-port", str(self.grpc_port),
                                     "--grace", "3", "--state-file", str(self.workdir / "registrations.json")])
        # the metrics port is bound last: once it answers, the secure port is up and root-cert.pem written
        wait_until(lambda: http(f"http://127.0.0.1:{self.metrics_port}/ready")[0] == 200, "the control plane")
        self.spawn("external-api", [py, "-m", "pyproxy.demo_app", "--port", str(self.external_port)],
                   env={"DEMO_APP_NAME": "external-api"})
        for name, sa, labels in WORKLOADS:
            ports = {"app": self.free_port(), "inbound": self.free_port(), "outbound": self.free_port(),
                     "admin": self.free_port()}
            self.sidecars[name] = ports
            self.spawn(f"{name}-app", [py, "-m", "bookinfo.app", "--service", labels["app"],
                                        "--version", labels["version"], "--port", str(ports["app"]),
                                        "--outbound", f"http://127.0.0.1:{ports['outbound']}"],
                       env={"POD_NAME": name})
            if name in self.envoy:
                self._spawn_agent(name, sa, labels, ports)
                continue
            self.spawn(f"{name}-sidecar", [
                py, "-m", "pyproxy", "sidecar", *self.secure_args("default", sa), "--bind", "127.0.0.1",
                "--name", name, "--namespace", "default",
                "--labels", ",".join(f"{k}={v}" for k, v in labels.items()), "--app-port", str(ports["app"]),
                "--inbound-port", str(ports["inbound"]), "--outbound-port", str(ports["outbound"]),
                "--admin-port", str(ports["admin"])])
        self.gateway_admin = self.free_port()
        self.spawn("ingressgateway", [
            py, "-m", "pyproxy", "gateway", *self.secure_args(GATEWAY_NAMESPACE, GATEWAY_SA), "--bind", "127.0.0.1",
            "--admin-port", str(self.gateway_admin), "--inbound-port", str(self.free_port()),
            "--outbound-port", str(self.free_port())])
        for name, ports in self.sidecars.items():
            wait_until(lambda p=ports: http(f"http://127.0.0.1:{p['admin']}/ready")[0] == 200
                       and _synced(self.xds_port, name), f"{name}'s sidecar to sync")
        wait_until(lambda: http(f"{self.gateway_url}/productpage", context=self.ssl)[0] == 200,
                   "the ingress gateway to route /productpage")
        # every subset the demo uses has its endpoint in productpage's sidecar (EDS arrives just after SYNC)
        pp_admin = self.sidecars["productpage-v1"]["admin"]
        wanted = [f"outbound|9080|{subset}|{svc}.default.svc.cluster.local"
                  for svc, subset in (("reviews", "v1"), ("reviews", "v2"), ("reviews", "v3"), ("details", "v1"))]
        wanted.append("outbound|80||api.external.example")  # the ServiceEntry
        wait_until(lambda: _all_have_hosts(pp_admin, wanted), "reviews/details/api.external.example endpoints in productpage's sidecar")
        for name in ("reviews-v2", "reviews-v3"):
            wait_until(lambda n=name: _all_have_hosts(self.sidecars[n]["admin"],
                                                      ["outbound|9080|v1|ratings.default.svc.cluster.local"]),
                       f"ratings endpoints in {name}'s sidecar")

    def _spawn_agent(self, name: str, sa: str, labels: dict[str, str], ports: dict[str, int]) -> None:
        """`pyproxy agent`: Envoy as this workload's sidecar, config over secure gRPC ADS, certificate over SDS."""
        for side in ("status", "health", "stats"):
            ports[side] = self.free_port()
        args = self.secure_args("default", sa)
        args[args.index("--control")] = "--ca-address"  # the CA is the secure port; ADS is gRPC
        self.spawn(f"{name}-sidecar", [
            sys.executable, "-m", "pyproxy", "agent", *args, "--control-grpc", f"127.0.0.1:{self.grpc_port}",
            "--envoy", self.envoy[name], "--work-dir", str(self.workdir / f"{name}-agent"), "--bind", "127.0.0.1",
            "--name", name, "--namespace", "default", "--labels", ",".join(f"{k}={v}" for k, v in labels.items()),
            "--app-port", str(ports["app"]), "--inbound-port", str(ports["inbound"]),
            "--outbound-port", str(ports["outbound"]), "--admin-port", str(ports["admin"]),
            "--status-port", str(ports["status"]), "--health-port", str(ports["health"]),
            "--stats-port", str(ports["stats"])])

    def start_prometheus(self) -> str:
        """A real Prometheus scraping every proxy and the control plane (pyproxy/demo_prometheus.py), if one is
        installed; what the demo says about it."""
        binary = demo_prometheus.find_prometheus()
        if binary is None:
            return ("no Prometheus binary found (`make prometheus` unpacks Debian's into .prometheus/, or set "
                    "PROMETHEUS_BIN); the metrics are on every admin port's /stats/prometheus")
        port = self.free_port()
        proxies = {name: ports["admin"] for name, ports in self.sidecars.items()}
        proxies["istio-ingressgateway"] = self.gateway_admin
        demo_prometheus.write_config(self.workdir / "prometheus", proxies, self.metrics_port)
        self.spawn("prometheus", demo_prometheus.command(binary, self.workdir / "prometheus", port))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http(f"{url}/-/ready")[0] == 200, "Prometheus")
        self.prometheus_url = url
        return (f"Prometheus ({binary}) scrapes every proxy's /stats/prometheus and the control plane's /metrics "
                f"every {demo_prometheus.SCRAPE_INTERVAL}: {url}/graph?g0.expr=istio_requests_total")

    def state(self) -> dict:
        """What meshctl and a learner need to find every process (pyproxy/demo_state.py)."""
        return {"control": f"http://127.0.0.1:{self.xds_port}", "secure": self.secure_url,
                "metrics": f"http://127.0.0.1:{self.metrics_port}", "gateway": self.gateway_url,
                "gateway_http": f"http://127.0.0.1:{self.gateway_http_port}",
                "ingress_ca": str(self.workdir / "ingress-ca.pem"),
                "gateway_admin": self.gateway_admin, "workdir": str(self.workdir), "config_dir": str(self.config_dir),
                "proxies": self.sidecars, "prometheus": self.prometheus_url,
                "pids": {name: p.pid for name, p in self.procs if p.poll() is None}}

    def stop(self, say=None) -> None:
        running = [name for name, p in self.procs if p.poll() is None]
        if say and running:
            say(f"[demo] stopping {len(running)} processes: {', '.join(running)}")
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


INGRESS_SECRET = "bookinfo-credential"
INGRESS_HOST = "bookinfo.example.com"


def ingress_pki(workdir: pathlib.Path) -> tuple[bytes, bytes, bytes]:
    """(CA PEM, certificate chain PEM, key PEM) for the gateway's HTTPS server: a CA of the demo's own (not the
    mesh CA: ingress certificates come from whoever owns the public name), its certificate valid for
    bookinfo.example.com, localhost and 127.0.0.1. The CA is written to <workdir>/ingress-ca.pem for curl."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from .tls.pki import certificate_pem, generate_key, private_key_pem

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = generate_key(), generate_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyproxy mesh demo ingress CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    san = x509.SubjectAlternativeName([x509.DNSName(INGRESS_HOST), x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, INGRESS_HOST)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(san, critical=False).sign(ca_key, hashes.SHA256()))
    ca_pem = certificate_pem(ca).encode()
    (workdir / "ingress-ca.pem").write_bytes(ca_pem)
    return ca_pem, (certificate_pem(leaf) + certificate_pem(ca)).encode(), private_key_pem(key)


def _configure_gateway(config_dir: pathlib.Path, http_port: int, https_port: int, chain: bytes, key: bytes) -> None:
    """The demo copy's Gateway on free ports (several meshes, or anything else on 8080, can run side by side):
    HTTPS with `credentialName` (a kubernetes.io/tls Secret written beside it, never into the repository) and
    plain HTTP answering `httpsRedirect`'s 301. Done on the parsed YAML, not on text."""
    import base64

    import yaml

    path = config_dir / "ingress.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for d in docs:
        if d.get("kind") == "Gateway":
            plain = d["spec"]["servers"][0]
            plain["port"]["number"] = http_port
            plain["tls"] = {"httpsRedirect": True}
            d["spec"]["servers"].append({"port": {"number": https_port, "name": "https", "protocol": "HTTPS"},
                                         "hosts": plain["hosts"],
                                         "tls": {"mode": "SIMPLE", "credentialName": INGRESS_SECRET}})
        elif d.get("kind") == "Service" and d["metadata"]["name"] == "istio-ingressgateway":
            d["spec"]["ports"] = [{"name": "http2", "port": 80, "targetPort": http_port},
                                  {"name": "https", "port": 443, "targetPort": https_port}]
        elif d.get("kind") == "Deployment" and d["metadata"]["name"] == "istio-ingressgateway":
            for c in d["spec"]["template"]["spec"]["containers"]:
                c["ports"] = [{"containerPort": http_port}, {"containerPort": https_port}]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": INGRESS_SECRET, "namespace": "istio-system"},
              "data": {"tls.crt": base64.b64encode(chain).decode(), "tls.key": base64.b64encode(key).decode()}}
    (config_dir / "ingress-credential.yaml").write_text(yaml.safe_dump(secret, sort_keys=False))


def _set_external_port(path: pathlib.Path, port: int) -> None:
    """The demo copy's ServiceEntry endpoint on the port its stand-in external server really listens on."""
    import yaml

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for d in docs:
        if d.get("kind") == "ServiceEntry":
            for ep in d["spec"].get("endpoints", []):
                ep["ports"] = {name: port for name in ep.get("ports", {"http": port})}
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def _all_have_hosts(admin_port: int, clusters: list[str]) -> bool:
    status, body = http(f"http://127.0.0.1:{admin_port}/clusters?format=json")
    if status != 200:
        return False
    hosts = {c["name"]: len(c.get("host_statuses", [])) for c in json.loads(body)["cluster_statuses"]}
    return all(hosts.get(name, 0) > 0 for name in clusters)


def _synced(xds_port: int, name: str) -> bool:
    status, body = http(f"http://127.0.0.1:{xds_port}/debug/syncz")
    if status != 200:
        return False
    for proxy in json.loads(body):
        if proxy.get("name") == f"{name}.default":
            return all(t.get("status") == "SYNCED" for t in proxy.get("types", {}).values())
    return False


def identities(mesh: Mesh) -> list[tuple[str, str]]:
    """(workload, SPIFFE identity) as each sidecar's (and the gateway's) admin /server_info reports it."""
    admins = [(name, ports["admin"]) for name, ports in mesh.sidecars.items()]
    out = []
    for name, admin in [*admins, ("istio-ingressgateway", mesh.gateway_admin)]:
        if name in mesh.envoy:
            out.append((name, envoy_identity(admin) + "   (Envoy, from pyproxy agent's SDS)"))
            continue
        status, body = http(f"http://127.0.0.1:{admin}/server_info")
        out.append((name, (json.loads(body).get("identity") or "-") if status == 200 else f"HTTP {status}"))
    return out


def envoy_identity(admin: int) -> str:
    """The URI SAN of the workload certificate Envoy holds (its admin /certs)."""
    status, body = http(f"http://127.0.0.1:{admin}/certs")
    if status != 200:
        return f"HTTP {status}"
    for entry in json.loads(body).get("certificates", []):
        for cert in entry.get("cert_chain", []):
            for san in cert.get("subject_alt_names", []):
                if san.get("uri", "").startswith("spiffe://"):
                    return san["uri"]
    return "-"


def envoy_workloads(values: list[str]) -> list[str]:
    """`--envoy` values (repeated, comma- or space-separated, or `all`) -> the workloads, in the demo's order;
    ValueError naming an unknown one."""
    known = [w[0] for w in WORKLOADS]
    names = [n for v in values for n in v.replace(",", " ").split()]
    unknown = [n for n in names if n not in known and n != "all"]
    if unknown:
        raise ValueError(f"--envoy {unknown[0]!r}: one of {', '.join(known)}, all")
    return known if "all" in names else [w for w in known if w in names]


def envoy_for(names: list[str]) -> dict[str, str]:
    """`--envoy` values -> {workload: Envoy executable}; ValueError naming an unknown workload or a missing Envoy."""
    import os

    chosen = envoy_workloads(names)
    if not chosen:
        return {}
    from .agent.run import envoy_executable

    binary = envoy_executable(None) or envoy_executable(str(ROOT / ".venv-envoy" / "bin" / "envoy"))
    if binary is None:
        raise ValueError("--envoy needs an Envoy executable: run `make envoy`, or set ENVOY_BIN, or put envoy on PATH")
    return {n: os.path.abspath(binary) for n in chosen}


ENVOY_LACKS = ("what upstream Envoy lacks here: istio_requests_total and the other istio_* metrics (Istio's stats "
               "filter exists only in\n       Istio's own Envoy build, istio-proxy; the control plane drops it for "
               "Envoy sidecars: their /stats/prometheus has envoy_* only),\n       and Istio's peer metadata "
               "exchange: pyproxy sidecars report an Envoy peer as workload/app \"unknown\" (its principal they "
               "know from mTLS)")


def plaintext_refused(port: int) -> str:
    """What a client without a certificate gets from a STRICT inbound listener: the connection is closed
    (no filter chain matches plaintext), never an answer from the app."""
    try:
        status, _ = http(f"http://127.0.0.1:{port}/anything", {"Host": "reviews:9080"})
    except OSError as e:  # urllib wraps resets and closes
        return f"refused ({type(e).__name__}), as STRICT requires"
    return f"answered {status} (NOT refused)"


def product(mesh: "Mesh", user: str = "") -> dict:
    """productpage's JSON API through the ingress gateway over HTTPS (what the HTML page shows, as data)."""
    status, body = http(f"{mesh.gateway_url}/api/v1/products/0" + (f"?u={user}" if user else ""), context=mesh.ssl)
    if status != 200:
        return {"error": f"HTTP {status}"}
    return json.loads(body)


def reviews_seen(p: dict) -> str:
    """`v3 (red stars)`, `v1 (no stars)`, `v3 (Ratings service is currently unavailable)`, or the page's error."""
    r = p.get("reviews") or {}
    if "error" in p or "error" in r:
        return p.get("error") or f"{r['error']} ({r.get('status')})"
    rating = (r.get("reviews") or [{}])[0].get("rating")
    if rating is None:
        return f"{r['version']} (no stars)"
    if "error" in rating:
        return f"{r['version']} ({rating['error']})"
    return f"{r['version']} ({rating['color']} stars)"


def tally(mesh: "Mesh", n: int, user: str = "") -> dict[str, int]:
    return dict(collections.Counter(reviews_seen(product(mesh, user)) for _ in range(n)).most_common())


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyproxy.demo_mesh", description=__doc__.splitlines()[0])
    ap.add_argument("--once", action="store_true", help="show the requests going through, then stop")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, config copy, CA) on exit")
    ap.add_argument("--scenario", action="append", default=[], metavar="NAME",
                    help="after the tour, run a lesson: one of " + ", ".join(SCENARIOS) + ", or all (repeatable)")
    ap.add_argument("--envoy", action="append", default=[], metavar="WORKLOAD",
                    help="run this workload's sidecar as real Envoy through `pyproxy agent` (repeatable, or several "
                         "names with commas; all = every workload; the ingress gateway stays pyproxy)")
    ap.add_argument("--no-prometheus", dest="prometheus", action="store_false",
                    help="do not start Prometheus even when one is installed (pyproxy/demo_prometheus.py)")
    args = ap.parse_args(argv)
    try:
        envoy = envoy_for(args.envoy)
    except ValueError as e:
        ap.error(str(e))
    names = list(SCENARIOS) if "all" in args.scenario else args.scenario
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {unknown[0]!r}: one of {', '.join(SCENARIOS)}, all")
    started = time.monotonic()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="pyproxy-mesh-demo-"))
    mesh = Mesh(workdir, envoy)
    # SIGTERM (kill, a closing terminal) stops the demo the way Ctrl-C does: every process, the temp dir
    signal.signal(signal.SIGTERM, _interrupt)
    # and Ctrl-C always does: a shell starts a background job (`cmd &`, no job control) with SIGINT ignored, and
    # Python installs its KeyboardInterrupt handler only when SIGINT is not ignored at startup, so a demo started
    # from a script would otherwise shrug off SIGINT and keep all its processes running
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # `kill -USR1 <pid>` prints where the demo is (every thread's stack), without stopping it
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        print(f"[demo] starting the control plane, the ingress gateway and {len(WORKLOADS)} bookinfo workloads with "
              f"sidecars, all on 127.0.0.1 (logs in {workdir})")
        if envoy:
            print(f"[demo] real Envoy ({next(iter(envoy.values()))}) as the sidecar of {', '.join(envoy)}, "
                  f"run by `pyproxy agent`: its bootstrap, ADS over gRPC, its certificate over SDS")
        mesh.start()
        gw = mesh.gateway_url
        first = product(mesh)
        print(f"[demo] first request through the gateway answered {time.monotonic() - started:.1f} s after start "
              f"({'OK' if 'error' not in first else first['error']})")
        prometheus_note = mesh.start_prometheus() if args.prometheus else "Prometheus not started (--no-prometheus)"
        state_file = write_state(mesh.state())
        pp = mesh.sidecars["productpage-v1"]
        print("[demo] every sidecar registered itself and is SYNCED with the control plane\n")
        if envoy:
            e_name = next(iter(envoy))
            e = mesh.sidecars[e_name]
            ready, _ = http(f"http://127.0.0.1:{e['health']}/healthz/ready")
            print(f"[demo] {e_name}'s Envoy: /healthz/ready on :{e['health']} (Istio's 15021) -> {ready}, "
                  f"/stats/prometheus on :{e['stats']} (15090), admin :{e['admin']}")
            print(f"       {ENVOY_LACKS}\n")
        print(f"[demo] identities: each proxy got its certificate from the control plane's CA on the secure port "
              f"({mesh.secure_url}) with its service-account token, then followed xDS there:")
        for name, identity in identities(mesh):
            print(f"       {name:22} {identity}")
        print()
        print("[demo] PeerAuthentication istio-system/default says STRICT (examples/mesh/security.yaml): the sidecars "
              "talk mutual TLS to each other\n       (auto-mTLS, certificates from the mesh CA); the server side "
              "hands its app the caller's identity in x-forwarded-client-cert:")
        status, body = http(f"http://127.0.0.1:{pp['outbound']}/headers", {"Host": "details:9080"})
        seen = {k.lower(): v for k, v in json.loads(body)["headers"].items()} if status == 200 else {}
        xfcc = seen.get("x-forwarded-client-cert", "-") if status == 200 else f"HTTP {status}"
        print(f"       details saw: x-forwarded-client-cert: {xfcc}")
        print(f"       plaintext straight to reviews-v1's sidecar (port {mesh.sidecars['reviews-v1']['inbound']}): "
              f"{plaintext_refused(mesh.sidecars['reviews-v1']['inbound'])}\n")
        plain = f"http://127.0.0.1:{mesh.gateway_http_port}/productpage"
        status, headers, _ = http_full(plain)
        print(f"[demo] the ingress gateway serves HTTPS with a certificate from the demo's own CA (Gateway credentialName "
              f"{INGRESS_SECRET}, a Secret beside the config);\n       plain http is redirected (httpsRedirect): GET "
              f"{plain} -> {status} location: {headers.get('location', '-')}")
        allowed, _ = http(f"http://127.0.0.1:{mesh.sidecars['reviews-v1']['outbound']}/ratings/0",
                          {"Host": "ratings:9080"})
        denied, why = http(f"http://127.0.0.1:{mesh.sidecars['details-v1']['outbound']}/ratings/0",
                           {"Host": "ratings:9080"})
        print(f"[demo] AuthorizationPolicy ratings-viewer lets only reviews call ratings (examples/mesh/security.yaml): "
              f"reviews-v1 -> ratings: {allowed}; details-v1 -> ratings: {denied} {why.decode(errors='replace')!r}\n")
        status, body = http(f"http://127.0.0.1:{pp['outbound']}/anything", {"Host": "api.external.example"})
        served = json.loads(body).get("served_by") if status == 200 else f"HTTP {status}"
        print(f"[demo] ServiceEntry external-api (examples/mesh/egress.yaml) makes a service outside the mesh known: "
              f"productpage's sidecar -> api.external.example -> {status} (served by {served}, plaintext: it has no "
              f"sidecar)\n")
        print(f"[demo] from outside, through the ingress gateway: 20 x GET {gw}/api/v1/products/0 (productpage asks "
              f"details and reviews; reviews v2/v3 ask ratings)")
        print("       VirtualService reviews: 80% v1 / 20% v3 ->", tally(mesh, 20))
        print("[demo] signed in as jason (?u=jason: productpage forwards end-user: jason; matched to v2) ->",
              tally(mesh, 5, "jason"))
        print("[demo] signed in as tester (reviews v3; VirtualService ratings aborts tester's calls with 503, "
              "flag FI) ->", tally(mesh, 3, "tester"))
        _, stats = http(f"http://127.0.0.1:{mesh.sidecars['reviews-v1']['admin']}/stats?filter=inbound")
        print("[demo] reviews-v1's sidecar saw them arrive (inbound counters):")
        for line in stats.decode().splitlines():
            if line.endswith(": 0") or "rq_total" not in line:
                continue
            print("       " + line)
        if "productpage-v1" in envoy:  # Envoy's admin has /certs, and no Istio metrics of its own
            identity_hint = f"curl -s http://127.0.0.1:{pp['admin']}/certs     # its certificate (SDS `default`)"
            metrics_hint = (f"curl -s http://127.0.0.1:{pp['stats']}/stats/prometheus | head   # Envoy's stats on "
                            "its 15090 listener (envoy_* only)")
        else:
            identity_hint = f"curl -s http://127.0.0.1:{pp['admin']}/server_info | grep -A4 identity    # its SPIFFE id"
            metrics_hint = (f"curl -s http://127.0.0.1:{pp['admin']}/stats/prometheus | grep istio_requests_total   "
                            "# Istio's metrics")
        print(f"""
[demo] try it yourself (meshctl finds this mesh through {state_file}):
  curl --cacert {mesh.workdir}/ingress-ca.pem {gw}/productpage?u=jason     # bookinfo, through the gateway
  (or open it in a browser and accept the demo CA's certificate)
  .venv/bin/meshctl proxy-status
  .venv/bin/meshctl proxy-config route productpage-v1               # what its sidecar routes, istioctl's columns
  .venv/bin/meshctl proxy-config endpoint reviews-v3 --cluster 'outbound|9080|v1|ratings.default.svc.cluster.local'
  .venv/bin/meshctl stat deploy -n default                          # success rate, RPS, latency, mTLS per workload
  .venv/bin/meshctl tap productpage-v1 --path /productpage          # then reload the page: each request, live
  curl -s http://127.0.0.1:{pp['admin']}/config_dump | head -60            # productpage's sidecar config
  {identity_hint}
  curl -s http://127.0.0.1:{pp['admin']}/stats | grep reviews
  {metrics_hint}
  tail {mesh.workdir}/productpage-v1-sidecar.log     # its access log (Telemetry mesh-default, with flags)
  {prometheus_note}
  edit {mesh.config_dir}/traffic.yaml (e.g. reviews weights 0/100) and reload the page: the
  control plane pushes the change to every sidecar within a second.""")
        failed = [c for name in names for c in run_scenario(name, mesh) if not c.ok]
        if failed:
            print(f"[demo] {len(failed)} claim(s) did not hold: " + "; ".join(c.claim for c in failed),
                  file=sys.stderr)
            return 1
        if not names:
            print(f"[demo] lessons: make demo SCENARIO=<{'|'.join(SCENARIOS)}> changes one thing and shows what "
                  f"the sidecars did")
        if args.once:
            return 0
        print("\n[demo] running; Ctrl-C to stop")
        while all(p.poll() is None for _, p in mesh.procs):
            time.sleep(0.5)
        dead = [n for n, p in mesh.procs if p.poll() is not None]
        print(f"[demo] {', '.join(dead)} exited; stopping (logs kept in {workdir})", file=sys.stderr)
        args.keep = True
        return 1
    except KeyboardInterrupt:
        print()
        return 0
    except (RuntimeError, OSError, ValueError) as e:
        print(f"[demo] error: {e} (logs kept in {workdir})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the cleanup
        mesh.stop(say=print)
        clear_state()
        if args.keep:
            print(f"[demo] kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)  # a clean run leaves nothing behind
            print(f"[demo] stopped; removed {workdir}")


if __name__ == "__main__":
    sys.exit(main())
