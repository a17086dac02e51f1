"""A live mesh on 127.0.0.1 for end-to-end tests: the control plane, sidecars and demo apps as real processes.

    Mesh(workdir)                      a temp config directory the test writes, and every process it starts
      .write(name, docs)               a YAML file in the config directory (atomic: temp file + rename)
      .control_plane(grace=...)        `pyproxy-control serve --config-dir DIR --xds-port P --metrics-port 0`
      .control_plane(secure=True)      ... plus `--secure-port 0 --ca-dir DIR` (the CA and authenticated xDS over
                                       TLS, istiod's 15012) and `--plaintext-xds read-only`; workloads then join
                                       over https:// with a token per service account (`cp.token(ns, sa)`)
      .gateway()                       `pyproxy gateway` (istio-ingressgateway), ready and SYNCED
      .workloads((name, labels), ...)  per workload `python -m pyproxy.demo_app` (DEMO_APP_NAME=name) and
                                       `pyproxy sidecar`, waited until ready and SYNCED (`start_workload`: no wait)
      .stop()                          every process, by PID: SIGTERM, then SIGKILL after a grace period
                                       (sidecars get `--drain-time-s 2`: on SIGTERM they keep serving 2 s)

The control plane prints `XDS_PORT n` / `SECURE_PORT n` / `METRICS_PORT n`; they are read from its stdout
file. A restart keeps its xDS and secure ports (the sidecars were told those URLs). Sidecars get their ports explicitly (the node metadata carries
INBOUND_PORT/OUTBOUND_PORT/ADMIN_PORT, which is how the control plane learns their endpoints), taken from a
batch of ports the kernel handed out free just before. Readiness is polled with a deadline: the control
plane's /ready, the app's /healthz, the sidecar's admin /ready and its row in /debug/syncz. stdout and stderr
go to files under the workdir (a chatty process never blocks on a pipe); `Mesh.logs()` gathers their tails
for assertion messages.

`Relay` puts a cuttable TCP link between one sidecar and the control plane (a proxy that reconnects late).
`load()` drives keep-alive clients against a sidecar's outbound port and records every `Answer`.

Observation helpers read what an operator would: `/debug/syncz` (sync status per proxy and type), a
sidecar's admin `/clusters?format=json` (hosts per cluster) and `/stats` (counters).
"""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import aiohttp
import yaml

from pyproxy.demo_mesh import free_ports  # noqa: F401 - re-exported: tests take their ports from here

from .process import DEADLINE, Process, poll, pyproxy_command

NAMESPACE = "default"
DOMAIN = "svc.cluster.local"
XDS_TYPES = ("cds", "eds", "lds", "rds")


def console_script(name: str, module: str) -> list[str]:
    exe = pathlib.Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def fqdn(service: str, namespace: str = NAMESPACE) -> str:
    return f"{service}.{namespace}.{DOMAIN}"


def outbound_cluster(service: str, port: int = 9080, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{fqdn(service)}"


async def get(url: str, **kwargs: Any) -> tuple[int, str]:
    """One GET with a short timeout, on a fresh connection (no keep-alive state shared with the test)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        async with s.get(url, **kwargs) as r:
            return r.status, await r.text()


async def get_json(url: str) -> Any:
    status, text = await get(url)
    if status != 200:
        raise AssertionError(f"GET {url}: {status} {text[:300]}")
    return json.loads(text) if text else None


class ControlPlane(Process):
    def __init__(self, workdir: pathlib.Path, config_dir: pathlib.Path, *, grace: float, debounce: float,
                 long_poll_timeout: float, xds_port: int = 0, secure: bool = False, plaintext: str = "on",
                 extra_args: Iterable[str] = ()):
        self.config_dir = config_dir
        self.extra_args = list(extra_args)  # e.g. --max-cert-ttl 6s, --cacerts DIR; change it before a restart
        self.grace, self.debounce, self.long_poll_timeout = grace, debounce, long_poll_timeout
        self.xds_port = xds_port
        self.metrics_port = 0
        self.grpc_port = 0
        self.secure_grpc_port = 0
        self.secure = secure
        self.secure_port = 0
        self.plaintext = plaintext
        self.ca_dir = workdir / "ca-state"  # the control plane's CA state directory (--ca-dir)
        self.starts = 0
        super().__init__("control-plane", [], workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.xds_port}"

    @property
    def secure_url(self) -> str:
        return f"https://127.0.0.1:{self.secure_port}"

    @property
    def debug_url(self) -> str:
        """Where /debug/* and /ready are: the plaintext xDS port, or the metrics port when that is off."""
        return self.url if self.plaintext != "off" else f"http://127.0.0.1:{self.metrics_port}"

    @property
    def root_cert(self) -> pathlib.Path:
        """The mesh root the control plane publishes (Istio's istio-ca-root-cert `root-cert.pem`)."""
        return self.ca_dir / "root-cert.pem"

    def token(self, namespace: str, service_account: str, ttl: float = 3600) -> pathlib.Path:
        """A service-account token file signed with the control plane's token key (`meshctl token create`)."""
        from control.ca.store import token_signer
        from pyproxy.tls.files import write_file_atomic

        path = self.ca_dir.parent / "tokens" / f"{namespace}.{service_account}"
        path.parent.mkdir(exist_ok=True)
        token = token_signer(self.ca_dir).create(namespace, service_account, ttl)
        write_file_atomic(path, token.encode("ascii") + b"\n", 0o600)
        return path

    async def metric(self, name: str, labels: str = "") -> float:
        """One sample of /metrics (`labels` as written there: `reason="PermissionDenied"`); 0 when absent."""
        _, text = await get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == wanted:
                return float(value)
        return 0.0

    @property
    def stop_grace(self) -> float:
        """It exits at once on SIGTERM (ends its long-polls); mesh-failures.md #5 was the case where it did not."""
        return 2.0

    def start(self) -> "ControlPlane":
        self.argv = [*console_script("pyproxy-control", "control.cli.control"), "serve",
                     "--config-dir", str(self.config_dir), "--xds-port", str(self.xds_port), "--metrics-port", "0",
                     "--grace", str(self.grace), "--debounce", str(self.debounce),
                     "--long-poll-timeout", str(self.long_poll_timeout),
                     "--state-file", str(self.stdout_path.parent / "registrations.json"),
                     "--plaintext-xds", self.plaintext]
        if self.secure:
            self.argv += ["--secure-port", str(self.secure_port), "--ca-dir", str(self.ca_dir)]
        self.argv += self.extra_args
        self.starts += 1
        super().start()
        return self

    def _ports(self) -> dict[str, int]:
        ports = {}
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(" ")
            if key in ("XDS_PORT", "SECURE_PORT", "METRICS_PORT", "GRPC_PORT", "SECURE_GRPC_PORT") \
                    and value.strip().isdigit():
                ports[key] = int(value)
        return ports

    async def ready(self) -> "ControlPlane":
        """Wait for this start's port lines and /ready."""
        async def ports() -> bool:
            self.check_running()
            lines = self.stdout_path.read_text(errors="replace").count("METRICS_PORT ")
            return lines >= self.starts
        await poll("control plane prints its ports", ports, detail=self.output)
        found = self._ports()
        for key, attr in (("XDS_PORT", "xds_port"), ("SECURE_PORT", "secure_port")):
            if getattr(self, attr) and key in found:
                assert found[key] == getattr(self, attr), (found, self.output())
            setattr(self, attr, found.get(key, getattr(self, attr)))
        self.metrics_port = found["METRICS_PORT"]
        self.grpc_port = found.get("GRPC_PORT", 0)  # with extra_args ["--grpc-port", "0"]: ADS over gRPC
        self.secure_grpc_port = found.get("SECURE_GRPC_PORT", 0)  # ["--secure-grpc-port", "0"]: over TLS

        async def live() -> bool:
            self.check_running()
            return (await get(f"{self.debug_url}/ready"))[0] == 200
        await poll("control plane /ready", live, detail=self.output)
        return self

    def log_time(self, needle: str) -> float:
        """Wall-clock time (epoch seconds) of the last log line containing `needle` (its logging timestamp,
        `2026-01-01 12:00:00,123`, local time)."""
        lines = [line for line in self.output(tail=10**7).splitlines() if needle in line]
        assert lines, f"no control-plane log line with {needle!r}:\n{self.output()}"
        stamp = lines[-1][:23]
        return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:23]) / 1000

    async def syncz(self) -> list[dict]:
        return await get_json(f"{self.debug_url}/debug/syncz")

    async def configz(self) -> dict:
        return await get_json(f"{self.debug_url}/debug/configz")

    async def proxy_rows(self) -> dict[str, dict]:
        """syncz rows by proxy name (`reviews-v1`, without the namespace)."""
        return {row["name"].rsplit(".", 1)[0]: row for row in await self.syncz()}


def synced(row: dict) -> bool:
    """Every xDS type of this syncz row is SYNCED (the four, and VHDS when the proxy uses it)."""
    types = row.get("types", {})
    return all(types.get(t, {}).get("status") == "SYNCED" for t in XDS_TYPES) and \
        all(state.get("status") == "SYNCED" for state in types.values())


class DemoApp(Process):
    def __init__(self, workdir: pathlib.Path, name: str, port: int, outbound_port: int = 0):
        self.port = port
        env = {"DEMO_APP_NAME": name}
        if outbound_port:  # its sidecar's outbound listener: /call/<host:port>/... goes through it
            env["DEMO_APP_OUTBOUND"] = f"127.0.0.1:{outbound_port}"
        super().__init__(f"app-{name}", [sys.executable, "-m", "pyproxy.demo_app", "--port", str(port)], workdir, env)

    async def ready(self) -> "DemoApp":
        async def healthy() -> bool:
            self.check_running()
            return (await get(f"http://127.0.0.1:{self.port}/healthz"))[0] == 200
        await poll(f"{self.name} /healthz", healthy, detail=self.output)
        return self


class TcpEchoApp(Process):
    """A TCP echo app (tests/support/tcp_echo_app.py): the workload behind a `tcp-` service port."""

    def __init__(self, workdir: pathlib.Path, name: str, port: int, extra_args: Iterable[str] = ()):
        self.port = port
        super().__init__(f"app-{name}", [sys.executable, "-m", "tests.support.tcp_echo_app", "--port", str(port),
                                         "--name", name, *extra_args], workdir)

    async def ready(self) -> "TcpEchoApp":
        async def listening() -> bool:
            self.check_running()
            return f"TCP_ECHO_PORT {self.port}" in self.output()
        await poll(f"{self.name} listening", listening, detail=self.output)
        return self


class Sidecar(Process):
    def __init__(self, workdir: pathlib.Path, name: str, labels: dict[str, str], control: ControlPlane,
                 app_port: int, ports: Iterable[int], service_account: str = "", control_url: str = "",
                 drain_time: float = 2.0, extra_args: Iterable[str] = ()):
        self.workload = name
        self.drain_time = drain_time
        self.labels = dict(labels)
        self.control = control
        self.app_port = app_port
        self.inbound_port, self.outbound_port, self.admin_port = ports
        super().__init__(f"sidecar-{name}", [
            *pyproxy_command(), "sidecar", "--control", control_url or control.url, "--name", name,
            "--namespace", NAMESPACE,
            "--service-account", service_account or f"bookinfo-{labels.get('app', name)}",
            "--labels", ",".join(f"{k}={v}" for k, v in labels.items()),
            "--app-port", str(app_port), "--inbound-port", str(self.inbound_port),
            "--outbound-port", str(self.outbound_port), "--admin-port", str(self.admin_port),
            "--drain-time-s", str(drain_time), *extra_args], workdir,
            {"PYPROXY_TRACE_FLUSH_INTERVAL_MS": "50"})  # spans reach a test's collector quickly

    @property
    def stop_grace(self) -> float:
        return self.drain_time + 5.0

    @property
    def endpoint(self) -> str:
        """How other proxies' EDS names this sidecar: its inbound listener."""
        return f"127.0.0.1:{self.inbound_port}"

    def admin(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    async def ready(self) -> "Sidecar":
        """Admin /ready is LIVE and the control plane shows all four types SYNCED for it."""
        async def live() -> bool:
            self.check_running()
            return (await get(self.admin("/ready")))[0] == 200
        await poll(f"{self.name} admin /ready", live, detail=self.output)

        async def in_syncz() -> bool:
            self.check_running()
            row = (await self.control.proxy_rows()).get(self.workload)
            return row is not None and synced(row)
        await poll(f"{self.name} SYNCED in /debug/syncz", in_syncz, detail=self.output)
        return self

    async def clusters(self) -> dict[str, set[str]]:
        """Cluster name -> its hosts (`ip:port`), from admin /clusters?format=json."""
        data = await get_json(self.admin("/clusters?format=json"))
        out = {}
        for c in data.get("cluster_statuses", []):
            out[c["name"]] = {f"{h['address']['socket_address']['address']}:"
                              f"{h['address']['socket_address']['port_value']}" for h in c.get("host_statuses", [])}
        return out

    async def stats(self) -> dict[str, int]:
        """Counters and gauges from admin /stats (`name: value` lines)."""
        _, text = await get(self.admin("/stats"))
        out = {}
        for line in text.splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    async def server_info(self) -> dict:
        return await get_json(self.admin("/server_info"))


class Gateway(Sidecar):
    """`pyproxy gateway` (the ingress gateway deployment `istio-ingressgateway` in istio-system): its listeners
    bind the Gateway servers' port numbers; ready like a sidecar (admin /ready, SYNCED in /debug/syncz)."""

    def __init__(self, workdir: pathlib.Path, control: ControlPlane, ports: Iterable[int], extra_args: Iterable[str]):
        super().__init__(workdir, "istio-ingressgateway", {}, control, 0, ports, drain_time=2.0)
        self.name = "gateway"
        self.stdout_path = workdir / "gateway.stdout"
        self.stderr_path = workdir / "gateway.stderr"
        self.argv = [*pyproxy_command(), "gateway", "--control", control.secure_url if control.secure else control.url,
                     "--inbound-port", str(self.inbound_port), "--outbound-port", str(self.outbound_port),
                     "--admin-port", str(self.admin_port), "--drain-time-s", "2", *extra_args]


@dataclass
class Workload:
    app: DemoApp | TcpEchoApp
    sidecar: Sidecar

    @property
    def name(self) -> str:
        return self.sidecar.workload


class Mesh:
    """The config directory and every process of one test; `stop()` ends them all (run it in a finalizer)."""

    def __init__(self, workdir: pathlib.Path):
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[Process] = []
        self.cp: ControlPlane | None = None

    def __repr__(self) -> str:
        return f"Mesh({self.config_dir}, {self.processes!r})"

    # --- config ------------------------------------------------------------------------------------------
    def write(self, name: str, docs: Iterable[dict] | dict | str) -> float:
        """Write (or replace) config file `name` atomically (YAML documents, or text as is); returns
        time.monotonic() just after the rename."""
        if not isinstance(docs, str):
            docs = yaml.safe_dump_all([docs] if isinstance(docs, dict) else list(docs), sort_keys=False)
        tmp = self.workdir / f".{name}.tmp"  # outside the watched directory
        tmp.write_text(docs)
        os.replace(tmp, self.config_dir / name)
        return time.monotonic()

    def remove(self, name: str) -> float:
        (self.config_dir / name).unlink()
        return time.monotonic()

    # --- processes ---------------------------------------------------------------------------------------
    def _track(self, proc: Process) -> Process:
        self.processes.append(proc)
        return proc

    async def control_plane(self, *, grace: float = 1.0, debounce: float = 0.1,
                            long_poll_timeout: float = 30.0, secure: bool = False,
                            plaintext: str | None = None, extra_args: Iterable[str] = ()) -> ControlPlane:
        """`secure`: also the secure port (CA + authenticated xDS), plaintext xDS `read-only` unless given;
        `extra_args` go to `pyproxy-control serve` as they are (`--max-cert-ttl 6s`, `--cacerts DIR`)."""
        cp = ControlPlane(self.workdir, self.config_dir, grace=grace, debounce=debounce,
                          long_poll_timeout=long_poll_timeout, secure=secure,
                          plaintext=plaintext or ("read-only" if secure else "on"), extra_args=extra_args)
        self.cp = self._track(cp)
        cp.start()
        return await cp.ready()

    async def restart_control_plane(self) -> ControlPlane:
        """Start the control plane again on the same xDS port (after `kill()` or `stop()`)."""
        assert self.cp is not None and not self.cp.running()
        self.cp.start()
        return await self.cp.ready()

    def start_workload(self, name: str, labels: dict[str, str], control_url: str = "", *,
                       token: pathlib.Path | None = None, extra_args: Iterable[str] = (),
                       ports: tuple[int, int, int] | None = None, app: str = "http",
                       app_args: Iterable[str] = ()) -> Workload:
        """Start a demo app and its sidecar (no waiting: `await w.app.ready()`, `w.sidecar.ready()` after).
        `control_url` points the sidecar elsewhere than the control plane (a `Relay` in front of it). With a
        secure control plane the sidecar joins over https:// with `token` (default: a token for its own
        service account, `bookinfo-<app>`). `ports`: the sidecar's (inbound, outbound, admin), else free ones.
        `app="tcp-echo"`: the app is a TCP echo server instead (`app_args` go to it: `--cert F --key F` makes
        it terminate TLS itself)."""
        assert self.cp is not None, "start the control plane first"
        app_port, *picked = free_ports(4)
        ports = ports or tuple(picked)
        sa = f"bookinfo-{labels.get('app', name)}"
        args = list(extra_args)
        if self.cp.secure:
            control_url = control_url or self.cp.secure_url
            args += ["--ca-root", str(self.cp.root_cert),
                     "--token-file", str(token or self.cp.token(NAMESPACE, sa))]
        app_proc = TcpEchoApp(self.workdir, name, app_port, app_args) if app == "tcp-echo" else \
            DemoApp(self.workdir, name, app_port, outbound_port=ports[1])
        self._track(app_proc)
        sidecar = self._track(Sidecar(self.workdir, name, labels, self.cp, app_port, ports, service_account=sa,
                                      control_url=control_url, extra_args=args))
        app_proc.start()
        sidecar.start()
        return Workload(app_proc, sidecar)

    async def gateway(self) -> Gateway:
        """Start the ingress gateway (service account istio-system/istio-ingressgateway-service-account) and wait
        until it is ready and SYNCED."""
        assert self.cp is not None, "start the control plane first"
        args: list[str] = []
        if self.cp.secure:
            token = self.cp.token("istio-system", "istio-ingressgateway-service-account")
            args += ["--ca-root", str(self.cp.root_cert), "--token-file", str(token),
                     "--service-account", "istio-ingressgateway-service-account"]
        gw = self._track(Gateway(self.workdir, self.cp, free_ports(3), args))
        gw.start()
        return await gw.ready()

    async def workloads(self, *specs: tuple[str, dict[str, str]], control_urls: dict[str, str] | None = None,
                        extra_args: Iterable[str] = ()) -> list[Workload]:
        """Start several workloads at once and wait until each is ready and SYNCED (`extra_args`: to every
        sidecar)."""
        urls = control_urls or {}
        started = [self.start_workload(name, labels, urls.get(name, ""), extra_args=extra_args)
                   for name, labels in specs]
        await asyncio.gather(*(w.app.ready() for w in started))
        await asyncio.gather(*(w.sidecar.ready() for w in started))
        return started

    async def productpage_and_reviews(self) -> tuple["Sidecar", "Sidecar"]:
        """productpage-v1 and reviews-v1 with their sidecars, once productpage's sidecar holds reviews-v1's
        inbound endpoint (the client and server sidecars of a one-hop test)."""
        productpage, reviews = await self.workloads(("productpage-v1", labels("productpage")),
                                                    ("reviews-v1", labels("reviews", "v1")))
        client, server = productpage.sidecar, reviews.sidecar
        await self.wait_hosts(client, outbound_cluster("reviews", subset="v1"), lambda h: server.endpoint in h,
                              "has the reviews sidecar's inbound port")
        return client, server

    def stop(self) -> None:
        """Every process, by PID: SIGTERM to all (newest first: sidecars before the control plane), a second
        SIGTERM to sidecars still draining (pyproxy stops at once on a second signal), SIGKILL what is left."""
        for proc in reversed(self.processes):
            proc.terminate()
        grace = time.monotonic() + 0.3  # the first SIGTERM's drain: over as soon as every process has exited
        while time.monotonic() < grace and any(proc.running() for proc in self.processes):
            time.sleep(0.01)  # poll interval of a bounded wait for the exits
        for proc in reversed(self.processes):
            if isinstance(proc, Sidecar):
                proc.terminate()
        for proc in reversed(self.processes):
            proc.stop()

    def logs(self, tail: int = 1500) -> str:
        return "\n".join(f"--- {p!r}\n{p.output(tail)}" for p in self.processes)

    # --- waiting on the mesh -----------------------------------------------------------------------------
    async def wait_hosts(self, sidecar: Sidecar, cluster: str, want: Callable[[set[str]], bool], what: str,
                         timeout: float = DEADLINE, interval: float = 0.02) -> set[str]:
        """Poll `sidecar`'s /clusters until `want(hosts of cluster)`; returns those hosts."""
        async def probe() -> set[str] | None:
            sidecar.check_running()
            hosts = (await sidecar.clusters()).get(cluster, set())
            return hosts if want(hosts) else None
        found = await poll(f"{sidecar.name}: {cluster} {what}", probe, timeout, interval, self.logs)
        return found if isinstance(found, set) else set()

    async def wait_all_synced(self, names: Iterable[str], timeout: float = DEADLINE) -> dict[str, dict]:
        """Every named proxy is in /debug/syncz with all four types SYNCED (and no other proxy is missing)."""
        assert self.cp is not None
        names = set(names)

        async def probe() -> dict[str, dict] | None:
            self.cp.check_running()
            rows = await self.cp.proxy_rows()
            return rows if names <= set(rows) and all(synced(rows[n]) for n in names) else None
        return await poll(f"{sorted(names)} all SYNCED", probe, timeout, detail=self.logs)


async def probe_secret(mesh: Mesh, ttl: float = 3600, service_account: str = "probe"):
    """A workload certificate from the mesh CA for a test client (`spiffe://cluster.local/ns/default/sa/probe`),
    asked for as a sidecar's agent does (CSR + token over the secure port)."""
    from pyproxy.tls.agent import CertificateAgent
    from pyproxy.tls.identity import PeerIdentity

    cp = mesh.cp
    assert cp is not None and cp.secure
    agent = CertificateAgent(cp.secure_url, root_cert_path=cp.root_cert,
                             token_path=cp.token(NAMESPACE, service_account),
                             identity=PeerIdentity("cluster.local", NAMESPACE, service_account), ttl=ttl)
    return await agent.fetch()


# --- the test mesh's config: a cut-down bookinfo (services, subsets, one VirtualService) ----------------------

def service(name: str, ports: Iterable[tuple[str, int]] = (("http", 9080),)) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"selector": {"app": name}, "ports": [{"name": n, "port": p} for n, p in ports]}}


def destination_rule(host: str, versions: Iterable[str]) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": host, "namespace": NAMESPACE},
            "spec": {"host": host, "subsets": [{"name": v, "labels": {"version": v}} for v in versions]}}


def virtual_service(host: str, weights: dict[str, int]) -> dict:
    """All of `host`'s HTTP traffic split across subsets by weight (`{"v1": 100}`)."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": host, "namespace": NAMESPACE},
            "spec": {"hosts": [host], "http": [{"route": [
                {"destination": {"host": host, "subset": subset}, "weight": weight}
                for subset, weight in weights.items()]}]}}


def bookinfo_config(mesh: Mesh, reviews: dict[str, int] | None = None) -> None:
    """services.yaml (productpage, reviews, DestinationRule reviews v1/v2) and reviews-vs.yaml."""
    mesh.write("services.yaml", [service("productpage"), service("reviews"),
                                 destination_rule("reviews", ("v1", "v2"))])
    mesh.write("reviews-vs.yaml", virtual_service("reviews", reviews or {"v1": 100}))


def labels(app: str, version: str = "v1") -> dict[str, str]:
    return {"app": app, "version": version}


# --- a cuttable link between one sidecar and the control plane -----------------------------------------------

class Relay:
    """A TCP relay on 127.0.0.1 in front of the control plane's xDS port, inside the test process. While
    `cut` is set, it accepts and at once closes every new connection (the sidecar sees the control plane as
    unreachable and backs off) and has closed the ones it carried; the sidecar's data plane is untouched."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.cut = False
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()

    def __repr__(self) -> str:
        return f"Relay(:{self.port} -> :{self.target_port}, cut={self.cut}, open={len(self._open)})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "Relay":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            for writer in list(self._open):
                writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._open.difference_update((writer, up_writer))

    async def close(self) -> None:
        """Stop accepting, cut every relayed connection, and let their handlers finish (none is left to be
        cancelled with the event loop)."""
        if self._server is not None:
            self._server.close()
        self.set_cut(True)
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()


# --- traffic ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the request was sent
    done: float  # ... and when its answer (or error) came back
    status: int  # 0 = no HTTP answer (see error)
    served_by: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


async def call(session: aiohttp.ClientSession, port: int, host: str, path: str = "/anything",
               headers: dict[str, str] | None = None) -> Answer:
    """One request to a sidecar's outbound port for service `host` (the Host header names it)."""
    sent = time.monotonic()
    try:
        async with session.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host, **(headers or {})}) as r:
            body = await r.read()
            served_by = ""
            if r.status == 200 and r.content_type == "application/json":
                served_by = json.loads(body).get("served_by", "")
            return Answer(sent, time.monotonic(), r.status, served_by, "" if r.status == 200 else body[:200].decode(
                errors="replace"))
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
        return Answer(sent, time.monotonic(), 0, error=f"{type(err).__name__}: {err}")


def client_session(timeout: float = 5.0) -> aiohttp.ClientSession:
    """A keep-alive client, as an app calling its sidecar would have."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))


async def load(port: int, host: str, *, until: Callable[[list[Answer]], bool], max_seconds: float,
               workers: int = 2, pause: float = 0.01, answers: list[Answer] | None = None,
               path: str = "/anything") -> list[Answer]:
    """Requests from `workers` concurrent keep-alive clients, back to back (a short pause between), until
    `until(answers so far)` or `max_seconds`; every answer, ordered by send time. Pass `answers` to watch
    them arrive while the load runs."""
    answers = [] if answers is None else answers
    deadline = time.monotonic() + max_seconds

    async def worker() -> None:
        async with client_session() as session:
            while time.monotonic() < deadline and not until(answers):
                answers.append(await call(session, port, host, path))
                await asyncio.sleep(pause)  # pacing of the load loop, not synchronisation
    await asyncio.gather(*(worker() for _ in range(workers)))
    return sorted(answers, key=lambda a: a.sent)


def failures(answers: Iterable[Answer]) -> list[Answer]:
    return [a for a in answers if not a.ok]
