"""Benchmark: the control plane with many connected proxies. Not a test.

    .venv/bin/python benchmarks/xds_bench.py [--proxies 100] [--shapes 10] [--services 1000] [--rounds 3]
                                             [--mode delta|sotw] [--vhds on|off] [--leds on|off]

Starts `pyproxy-control serve` (its own process, so its RSS is its own) on a synthetic mesh
(benchmarks/translate_bench.synthetic_mesh: services in 10 namespaces, a DestinationRule + VirtualService on
every 4th), then `--proxies` simulated sidecars in this process, each speaking the wire contract of
docs/xds.md with four long-poll loops (CDS, EDS, LDS, RDS) that ACK every response. The proxies are
replicas of `--shapes` Deployments (`app<k>`), so a push renders `--shapes` configurations; `--shapes
--proxies` makes every proxy distinct (the worst case: one render per proxy).

Measured:
* initial sync: from the first request until every proxy has ACKed all four types;
* push latency, per round: a VirtualService in its own file (`canary.yaml`) changes weights; latency =
  from the file write until each proxy receives its new RDS response (includes the file watcher's batching
  and the push debounce, i.e. what a user sees). p50 / p99 / max over proxies, all rounds pooled;
* registration latency: a new proxy connects; from its first request until every other proxy's EDS
  response lists it. The worst case first: a replica of `app0`, a Deployment behind 100 services (every
  Deployment of this mesh is), so ~300 assignments list it. Then, labelled apart, the common case: a
  replica of a Deployment behind one service (`solo`, a Service and Deployment added in `solo.yaml` after
  the measurements above, so they run on the mesh as described; its first replica registers, then the
  second is measured);
* per phase, the control plane's own account of its last push (/debug/configz `last_push`: full or
  endpoint-only, shapes rendered, seconds), which separates computing snapshots from delivering them;
* control-plane RSS (VmRSS, VmHWM from /proc) after sync and at the end.

`--mode sotw` (the default): DiscoveryRequests on `/v3/discovery:<type>`, each response the whole set of the
type. `--mode delta`: DeltaDiscoveryRequests on `/v3/delta_discovery:<type>` as pyproxy sends them: CDS and LDS
wildcard, EDS subscribed to the EDS clusters of the CDS received, RDS to the route configs its listeners name, and
(`--vhds on`, the default, as pyproxy) the virtual hosts of each route configuration over VHDS (`<route config>/*`):
an edit counts as arrived when the proxy receives its VHDS response (the changed virtual hosts); `--vhds off` is
delta with whole route configurations. Responses carry only what changed. With `--leds on` (the default in delta,
as pyproxy's) they also ask for LEDS (node client_features `pyproxy.xds.leds`): EDS
assignments name endpoint collections, and one more loop subscribes to those collections on
`/v3/delta_discovery:lb_endpoints`; a registration counts as arrived at a proxy when a LEDS response carries the
new endpoint. `--leds off`: whole assignments. Bytes are the response bodies the simulated proxies received (per
edit round, and for the registration phase, all types).

The simulated proxies only read `version_info` and `nonce` (regex on the head and tail of the body; in delta
mode also, by regex, the names they subscribe to: EDS the `outbound|` clusters, RDS the route configs named by
listeners), so the client side stays cheap; the two processes still share the
machine's cores, printed first.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.procs import cpu_seconds  # noqa: E402
from benchmarks.stats import percentile  # noqa: E402
from benchmarks.translate_bench import cpu_model, synthetic_mesh  # noqa: E402
from control.xds.node import VHDS_FEATURE, node_id  # noqa: E402
from pyproxy.xds.vhds import VHDS, glob  # noqa: E402

PATHS = ("clusters", "endpoints", "listeners", "routes")
TYPE_URLS = {
    "clusters": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "endpoints": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "listeners": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "routes": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "virtual_hosts": VHDS,  # delta with VHDS (the default there, as pyproxy): after routes
    "lb_endpoints": "type.googleapis.com/envoy.config.endpoint.v3.LbEndpoint",  # LEDS (delta only)
}
LEDS_FEATURE = "pyproxy.xds.leds"  # node.client_features: EDS names LEDS collections (control/xds/leds.py)
COLLECTION_RE = re.compile(rb'"leds_collection_name":"([^"]*)"')
VERSION_RE = re.compile(rb'"version_info":\s*"([^"]*)"')
SYSTEM_VERSION_RE = re.compile(rb'"system_version_info":\s*"([^"]*)"')
RDS_NAME_RE = re.compile(rb'"route_config_name":"([^"]*)"')
RESOURCE_RE = re.compile(rb'\{"name":"([^"]*)","version":"[0-9a-f]{16}","resource":')  # a delta Resource's head
NAME_RE = re.compile(rb'"([^"]*)"')
NONCE_RE = re.compile(rb'"nonce":\s*"([^"]*)"')

SOLO = """apiVersion: apps/v1
kind: Deployment
metadata: {name: solo, namespace: ns0}
spec:
  selector: {matchLabels: {app: solo}}
  template: {metadata: {labels: {app: solo}},
             spec: {serviceAccountName: solo, containers: [{name: main, image: app, ports: [{containerPort: 8080}]}]}}
---
apiVersion: v1
kind: Service
metadata: {name: solo, namespace: ns0}
spec: {selector: {app: solo}, ports: [{name: http, port: 8080}]}
"""

CANARY = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: canary, namespace: ns1}}
spec:
  hosts: [svc1]
  http:
  - route:
    - {{destination: {{host: svc1}}, weight: {a}}}
    - {{destination: {{host: svc11}}, weight: {b}}}
"""


class SimProxy:
    """A simulated sidecar: four long-poll loops that ACK everything and record arrival times."""

    def __init__(self, session: aiohttp.ClientSession, base: str, index: int, shape: int, mode: str = "sotw",
                 name: str | None = None, vhds: bool = False, leds: bool = False):
        self.mode = mode
        self.leds = leds and mode == "delta"  # as pyproxy: subscribe to the collections EDS names
        self.paths = PATHS + (("virtual_hosts",) if vhds else ()) + (("lb_endpoints",) if self.leds else ())
        self.bytes = 0  # response bodies received
        self.names: dict[str, list[str]] = {}  # delta: what EDS / RDS subscribe to (from CDS / LDS)
        self.subscribed: dict[str, set[str]] = {}
        self.nonce: dict[str, str] = {}
        self.kicks = {p: asyncio.Event() for p in PATHS + ("virtual_hosts", "lb_endpoints")}
        ns = f"ns{shape % 10}"
        self.name = name or f"app{shape}-{index}"
        self.node = {"id": node_id("sidecar", "127.0.0.1", self.name, ns), "metadata": {
            "NAME": self.name, "NAMESPACE": ns, "INSTANCE_IPS": "127.0.0.1",
            "INBOUND_PORT": 20000 + index, "OUTBOUND_PORT": 30000 + index, "ADMIN_PORT": 40000 + index}}
        features = ([VHDS_FEATURE] if vhds else []) + ([LEDS_FEATURE] if self.leds else [])
        if features:  # VHDS: route configurations without virtual hosts, those per route config; LEDS: endpoints
            self.node["client_features"] = features
        self.session, self.base = session, base
        self.held: dict[str, tuple[str, str]] = {}
        self.acked: dict[str, str] = {}
        self.arrivals: dict[str, list[tuple[float, str, bytes]]] = {p: [] for p in self.paths}
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = self._delta_loop if self.mode == "delta" else self._loop
        self.tasks = [asyncio.create_task(loop(p)) for p in self.paths]

    def _delta_body(self, path: str) -> tuple[dict, set[str]]:
        """The next DeltaDiscoveryRequest (pyproxy.xds.state's rules) and the subscription it states."""
        want = {"*"} if path in ("clusters", "listeners") else set(self.names.get(path, ()))
        body: dict = {"node": self.node, "type_url": TYPE_URLS[path]}
        if path not in self.nonce:
            body["resource_names_subscribe"] = sorted(want)
        else:
            body["response_nonce"] = self.nonce[path]
            had = self.subscribed.get(path, set())
            if want - had:
                body["resource_names_subscribe"] = sorted(want - had)
            if had - want:
                body["resource_names_unsubscribe"] = sorted(had - want)
        return body, want

    def _follow(self, path: str, data: bytes) -> None:
        """CDS -> the EDS names to subscribe, LDS -> the RDS names; wake that loop when they change."""
        if path == "clusters":  # outbound clusters are the EDS ones (service_name = the cluster's name)
            names = set(self.names.get("endpoints", ()))
            at = data.rfind(b'"removed_resources":[')
            removed = data[at:data.index(b"]", at)] if at >= 0 else b""
            names -= {m.decode() for m in NAME_RE.findall(removed.partition(b"[")[2])}
            names |= {m.decode() for m in RESOURCE_RE.findall(data) if m.startswith(b"outbound|")}
            follower, names = "endpoints", sorted(names)
        elif path == "endpoints" and self.leds:  # the collections only grow here: nothing is removed
            follower = "lb_endpoints"
            names = sorted(set(self.names.get(follower, ())) | {m.decode() for m in COLLECTION_RE.findall(data)})
        elif path == "listeners":
            follower = "routes"
            names = sorted(set(self.names.get("routes", ())) | {m.decode() for m in RDS_NAME_RE.findall(data)})
        elif path == "routes" and "virtual_hosts" in self.paths:  # the glob of each route config received
            follower = "virtual_hosts"
            names = sorted(set(self.names.get(follower, ())) | {glob(m.decode()) for m in RESOURCE_RE.findall(data)})
        else:
            return
        if names != self.names.get(follower):
            self.names[follower] = names
            self.kicks[follower].set()

    async def _delta_loop(self, path: str) -> None:
        url = f"{self.base}/v3/delta_discovery:{path}?wait=30"
        kick = self.kicks[path]
        while True:
            if path in ("endpoints", "routes", "virtual_hosts", "lb_endpoints") and path not in self.names:
                await kick.wait()  # nothing to subscribe to before CDS / LDS / RDS / EDS arrived
            kick.clear()
            body, want = self._delta_body(path)
            if path in self.held:
                self.acked[path] = self.held[path][0]
            post = asyncio.create_task(self._post(url, body))
            kicked = asyncio.create_task(kick.wait())
            await asyncio.wait((post, kicked), return_when=asyncio.FIRST_COMPLETED)
            kicked.cancel()
            if not post.done():  # the subscription changed: say so now
                post.cancel()
                await asyncio.gather(post, return_exceptions=True)
                continue
            status, data = post.result()
            if status in (200, 304):
                self.subscribed[path] = want
            if status == 200:
                version = SYSTEM_VERSION_RE.search(data[:200]).group(1).decode()
                nonce = NONCE_RE.search(data[-300:]).group(1).decode()
                self.nonce[path] = nonce
                self.held[path] = (version, nonce)
                self.bytes += len(data)
                self.arrivals[path].append((time.monotonic(), version, data))
                self._follow(path, data)
                self.changed.set()
            elif status == 409:
                self.nonce.pop(path, None)
            elif status != 304:
                await asyncio.sleep(0.1)

    async def _post(self, url: str, body: dict) -> tuple[int, bytes]:
        try:
            async with self.session.post(url, json=body) as resp:
                return resp.status, (await resp.read() if resp.status == 200 else b"")
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
            return 0, b""

    async def _loop(self, path: str) -> None:
        url = f"{self.base}/v3/discovery:{path}?wait=30"
        while True:
            body: dict = {"node": self.node, "type_url": TYPE_URLS[path]}
            if path in self.held:
                body["version_info"], body["response_nonce"] = self.held[path]
                self.acked[path] = self.held[path][0]
            try:
                async with self.session.post(url, json=body) as resp:
                    data = await resp.read() if resp.status == 200 else b""
                    status = resp.status
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
                continue
            if status == 200:
                version = VERSION_RE.search(data[:200]).group(1).decode()
                nonce = NONCE_RE.search(data[-300:]).group(1).decode()
                self.held[path] = (version, nonce)
                self.bytes += len(data)
                self.arrivals[path].append((time.monotonic(), version, data))
                self.changed.set()
            elif status != 304:
                await asyncio.sleep(0.1)

    def synced(self) -> bool:
        return all(p in self.held for p in self.paths)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def proc_status(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class CpuMeter:
    """CPU seconds the control plane and this process (the simulated proxies) spent since `start()`."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start()

    def start(self) -> None:
        self.server, self.clients = cpu_seconds(self.pid), own_cpu_seconds()

    def __str__(self) -> str:
        return (f"CPU: control plane {cpu_seconds(self.pid) - self.server:.2f} s, "
                f"simulated proxies {own_cpu_seconds() - self.clients:.2f} s")


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (`q` in (0, 1]) of unsorted samples: benchmarks.stats.percentile."""
    return percentile(sorted(values), q * 100)


async def last_push(session: aiohttp.ClientSession, base: str) -> str:
    """The control plane's own account of its last push cycle (/debug/configz): compute vs delivery."""
    async with session.get(f"{base}/debug/configz") as resp:
        push = (await resp.json()).get("last_push") or {}
    kind = "full" if push.get("full") else "endpoint-only"
    return (f"server: {kind} push of {push.get('proxies')} proxies, {push.get('renders')} renders, "
            f"{push.get('assignments')} EDS assignments, {push.get('seconds', 0) * 1000:.0f} ms")


async def wait_until(cond, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not done after {timeout}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def run(args: argparse.Namespace) -> int:
    print(f"machine: nproc={os.cpu_count()} cpu={cpu_model()!r} python={platform.python_version()} "
          f"({platform.python_implementation()})")
    workdir = Path(tempfile.mkdtemp(prefix="xds-bench-"))
    (workdir / "mesh.yaml").write_text(synthetic_mesh(args.services, max(args.shapes, 10)))
    canary = workdir / "canary.yaml"
    canary.write_text(CANARY.format(a=90, b=10))
    print(f"mesh: {args.services} services, {args.proxies} proxies as replicas of {args.shapes} Deployments; "
          f"xDS mode {args.mode}{' with VHDS' if args.mode == 'delta' and args.vhds == 'on' else ''}"
          f"{', LEDS' if args.mode == 'delta' and args.leds == 'on' else ''}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/pyproxy-control"), "serve", "--config-dir", str(workdir), "--xds-port", "0",
         "--metrics-port", "0", "-l", "warning", "--grace", "60"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ports = {}
        while len(ports) < 2:
            line = server.stdout.readline()
            if not line:
                print("control plane exited", file=sys.stderr)
                return 1
            key, _, value = line.strip().partition(" ")
            ports[key] = int(value)
        base = f"http://127.0.0.1:{ports['XDS_PORT']}"
        print(f"control plane pid {server.pid}, RSS at start {proc_status(server.pid)['VmRSS']:.0f} MiB")
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            vhds = args.mode == "delta" and args.vhds == "on"
            leds = args.leds == "on"
            edited = "virtual_hosts" if vhds else "routes"  # where an edit's new routes arrive
            proxies = [SimProxy(session, base, i, i % args.shapes, args.mode, vhds=vhds, leds=leds)
                       for i in range(args.proxies)]
            started = time.monotonic()
            for p in proxies:
                p.start()
            sync = await wait_until(lambda: all(p.synced() for p in proxies), 600, "initial sync")
            print(f"initial sync of {args.proxies} proxies: {sync:.2f} s; control plane "
                  + ", ".join(f"{k} {v:.0f} MiB" for k, v in proc_status(server.pid).items()))
            await asyncio.sleep(1.0)  # let the last ACKs land

            latencies: list[float] = []
            cpu = CpuMeter(server.pid)
            for r in range(args.rounds):
                before = {id(p): len(p.arrivals[edited]) for p in proxies}
                sent = sum(p.bytes for p in proxies)
                weights = (50, 50) if r % 2 == 0 else (90, 10)
                t0 = time.monotonic()
                canary.write_text(CANARY.format(a=weights[0], b=weights[1]))
                await wait_until(lambda: all(len(p.arrivals[edited]) > before[id(p)] for p in proxies), 600,
                                 f"round {r + 1}")
                lat = [p.arrivals[edited][before[id(p)]][0] - t0 for p in proxies]
                latencies += lat
                sizes = {len(RESOURCE_RE.findall(p.arrivals[edited][before[id(p)]][2])) for p in proxies}
                print(f"round {r + 1}: {'VHDS' if vhds else 'RDS'} push to {len(lat)} proxies "
                      f"({'/'.join(map(str, sorted(sizes))) if args.mode == 'delta' else 'all'} resources each): "
                      f"first {min(lat) * 1000:.0f} ms, "
                      f"p50 {pct(lat, 0.5) * 1000:.0f} ms, last {max(lat) * 1000:.0f} ms; "
                      f"{(sum(p.bytes for p in proxies) - sent) / 1e6:.1f} MB received; "
                      f"{await last_push(session, base)}")
                await asyncio.sleep(0.5)
            print(f"  {cpu} for {args.rounds} rounds")
            print(f"push latency (file write -> {'VHDS' if vhds else 'RDS'} received), {len(latencies)} samples: "
                  f"p50 {pct(latencies, 0.5) * 1000:.0f} ms, p99 {pct(latencies, 0.99) * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms, mean {statistics.mean(latencies) * 1000:.0f} ms")

            # registration, the worst case: a new replica of shape 0, behind 100 services
            newcomer = SimProxy(session, base, args.proxies, 0, args.mode, vhds=vhds, leds=leds)
            await register(newcomer, proxies, cpu, "registration (a replica behind 100 services)", session, base)
            status = proc_status(server.pid)
            print("control plane at the end: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in status.items()))

            # the common case, apart: a Deployment behind one service; its first replica, then the second measured
            before = {id(p): len(p.arrivals["clusters"]) for p in proxies}
            (workdir / "solo.yaml").write_text(SOLO)
            await wait_until(lambda: all(len(p.arrivals["clusters"]) > before[id(p)] for p in proxies), 600,
                             "solo service")
            solo = [SimProxy(session, base, args.proxies + 1 + i, 0, args.mode, name=f"solo-{i}", vhds=vhds,
                             leds=leds)
                    for i in range(2)]
            await register(solo[0], proxies, cpu, "", session, base)
            await register(solo[1], proxies, cpu, "registration (a replica behind one service; solo.yaml added "
                                                  "after the above)", session, base)
            for p in proxies + [newcomer] + solo:
                await p.stop()
        print(f"total {time.monotonic() - started:.1f} s")
        return 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


async def register(newcomer: SimProxy, proxies: list[SimProxy], cpu: CpuMeter, label: str,
                   session: aiohttp.ClientSession, base: str) -> None:
    """Start `newcomer`; wait until every one of `proxies` got an EDS response listing its inbound port (with
    LEDS: a LEDS response carrying its LbEndpoint); print the latencies and the bytes the proxies received (in
    the 1 s after, too) under `label` (none: quiet)."""
    sent = sum(p.bytes for p in proxies)
    marker = f'"port_value":{newcomer.node["metadata"]["INBOUND_PORT"]}'.encode()  # payloads are compact JSON
    path = "lb_endpoints" if newcomer.leds else "endpoints"
    scanned = {id(p): len(p.arrivals[path]) for p in proxies}
    found: dict[int, float] = {}  # proxy -> arrival time of the first EDS listing the newcomer
    cpu.start()
    t0 = time.monotonic()
    newcomer.start()

    def listed(p: SimProxy) -> bool:  # each arrival is scanned once (a payload is megabytes)
        if id(p) not in found:
            arrivals = p.arrivals[path]
            for t, _v, data in arrivals[scanned[id(p)]:]:
                if marker in data:
                    found[id(p)] = t
                    break
            scanned[id(p)] = len(arrivals)
        return id(p) in found
    await wait_until(lambda: all([listed(p) for p in proxies]), 600, "registration")
    reg = [found[id(p)] - t0 for p in proxies]
    await asyncio.sleep(1.0)  # what else the registration sends (CDS, ...) lands
    if label:
        print(f"{label} -> in every proxy's EDS: p50 {pct(reg, 0.5) * 1000:.0f} ms, "
              f"p99 {pct(reg, 0.99) * 1000:.0f} ms, max {max(reg) * 1000:.0f} ms; "
              f"{(sum(p.bytes for p in proxies) - sent) / 1e6:.3f} MB received by the {len(proxies)} proxies; "
              f"{await last_push(session, base)}\n  {cpu}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=100)
    parser.add_argument("--shapes", type=int, default=10, help="distinct Deployments the proxies are replicas of")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=["sotw", "delta"], default="sotw",
                        help="state of the world (/v3/discovery) or incremental (/v3/delta_discovery) xDS")
    parser.add_argument("--vhds", choices=["on", "off"], default="on",
                        help="delta: route configurations' virtual hosts over VHDS, as pyproxy does (off: whole "
                             "route configurations over RDS)")
    parser.add_argument("--leds", choices=["on", "off"], default="on",
                        help="delta: ask for LEDS (endpoints as resources of their own, as pyproxy by default), or not")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
