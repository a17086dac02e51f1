"""Does traffic keep flowing while a sidecar applies a huge RDS update? Inline (the old way) against off-loop.

    .venv/bin/python benchmarks/apply_bench.py                 # 26,795 virtual hosts; about a minute
    .venv/bin/python benchmarks/apply_bench.py --vhosts 5000   # quicker

One process, one event loop, as in a sidecar: a `ProxyServer` listening on 127.0.0.1 with a real upstream
(a tiny keep-alive HTTP server on 127.0.0.1), fed by a real `XdsClient` through its response path
(`XdsClient._receive`: parse → decode → `ProxyServer.apply`, the code `_loop` runs for every response; only
the HTTP long-poll is left out). Setup: CDS (one cluster), LDS (one listener with `rds: "80"`), a one-host RDS
so traffic flows. Then, per mode, twice: a RouteConfiguration "80" with N virtual hosts (the issue's generator:
Istio's per-service hosts, each with a retry policy) arrives while `--clients` keep-alive clients send GETs
through the proxy, each `--rate` requests per second. The second apply replaces a snapshot of the same size, so freeing the old one is measured.

Printed per mode and apply: apply wall time, requests answered during the apply (from the response's arrival
until the replaced snapshot is freed), their p50/p99/max latency, and the loop's longest stall (a probe that
sleeps 1 ms and records how late it wakes). Modes run inline first, then off-loop (the default), in one run.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyproxy.runtime.offload import Offload  # noqa: E402
from pyproxy.server import ProxyServer  # noqa: E402
from pyproxy.xds.client import XdsClient  # noqa: E402
from pyproxy.xds.state import CDS, LDS, RDS  # noqa: E402

HOST = "bench.local"
MAX_REQUESTS_PER_CLIENT = 200_000  # bounds the load even if an apply never finished
SETTLE_TIMEOUT_S = 60.0  # waiting for the replaced snapshot to be freed


def rds_body(n: int, version: str) -> bytes:
    """A DiscoveryResponse with one RouteConfiguration "80" of n virtual hosts (virtual host 0 answers HOST)."""
    vhs = []
    for i in range(n):
        name = f"svc{i}.default.svc.cluster.local"
        domains = [name, f"svc{i}", f"svc{i}.default"] + ([HOST] if i == 0 else [])
        vhs.append({"name": f"{name}:80", "domains": domains, "routes": [{
            "name": "default", "match": {"prefix": "/"},
            "route": {"cluster": "up", "timeout": "0s", "retry_policy": {
                "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                "num_retries": 2, "retry_host_predicate": [{
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
                                              "PreviousHostsPredicate"}}],
                "host_selection_retry_max_attempts": "5", "retriable_status_codes": [503]}}}]})
    rc = {"@type": RDS, "name": "80", "virtual_hosts": vhs}
    return json.dumps({"version_info": version, "resources": [rc], "nonce": version}).encode()


def setup_bodies(upstream_port: int) -> list[tuple[str, bytes]]:
    cluster = {"@type": CDS, "name": "up", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": "up", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": "127.0.0.1", "port_value": upstream_port}}}}]}]}}
    listener = {"@type": LDS, "name": "bench", "address": {"socket_address": {"address": "127.0.0.1",
                                                                              "port_value": 0}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "bench", "rds": {"route_config_name": "80", "config_source": {"ads": {}}},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}
    def wrap(r: dict) -> bytes:
        return json.dumps({"version_info": "0", "resources": [r], "nonce": "0"}).encode()
    return [(CDS, wrap(cluster)), (LDS, wrap(listener)), (RDS, rds_body(1, "0"))]


class Upstream(asyncio.Protocol):
    """Answers every request on a keep-alive connection with `200 ok` (requests have no body)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # type: ignore[attr-defined]


async def client(port: int, latencies: list[tuple[float, float]], stop: asyncio.Event, interval: float) -> None:
    """GETs on one keep-alive connection, one every `interval` seconds (paced, as a sidecar's traffic is, not
    closed-loop: a closed loop keeps the event loop saturated and measures that instead); records
    (sent_at, latency) per request. A late response delays the next request, it is not skipped."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    req = f"GET / HTTP/1.1\r\nhost: {HOST}\r\n\r\n".encode()
    try:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                return
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:60]
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append((t0, time.perf_counter() - t0))
            await asyncio.sleep(max(0.0, t0 + interval - time.perf_counter()))
    finally:
        writer.close()


async def probe(lags: list[tuple[float, float]], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.001)
        lags.append((t, loop.time() - t - 0.001))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


async def start_proxy(off_loop: bool) -> tuple[asyncio.AbstractServer, ProxyServer, XdsClient]:
    """The upstream, and a proxy set up through its xDS client (CDS, LDS, a one-host RDS) with traffic ready."""
    up = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", 0)
    server = ProxyServer(rng=random.Random(1))
    server.offload = Offload(off_loop=off_loop)
    xds = XdsClient("http://127.0.0.1:1", {"id": "bench"}, server, mode="sotw")  # fed DiscoveryResponses
    for type_url, body in setup_bodies(up.sockets[0].getsockname()[1]):
        await xds._receive(type_url, body)
    return up, server, xds


async def run_mode(off_loop: bool, clients: int, rate: float, bodies: list[bytes]) -> list[dict]:
    loop = asyncio.get_running_loop()
    up, server, xds = await start_proxy(off_loop)
    port = server.listener_port("bench")
    gc.collect()
    gc.freeze()  # what `pyproxy run|sidecar` does once it is up (pyproxy.cli)
    stop = asyncio.Event()
    latencies: list[tuple[float, float]] = []
    lags: list[tuple[float, float]] = []
    tasks = [loop.create_task(client(port, latencies, stop, 1.0 / rate)) for _ in range(clients)]
    tasks.append(loop.create_task(probe(lags, stop)))
    while len(latencies) < 100:  # warm: every client has a connection and traffic flows
        await asyncio.sleep(0.01)
    windows = []
    for i, body in enumerate(bodies):
        t0 = time.perf_counter()
        await xds._receive(RDS, body)
        applied = time.perf_counter()
        assert server.version == f"v{i + 1}", (server.version, xds.state.types[RDS].error)
        deadline = applied + SETTLE_TIMEOUT_S
        while (server._retired or server._release_tasks) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)  # benchmark only: wait for the gradual release to end
        windows.append((i + 1, t0, applied, time.perf_counter()))
        await asyncio.sleep(0.2)  # let requests that were held up by the apply finish and be recorded
    stop.set()
    await asyncio.gather(*tasks)
    await server.stop()
    up.close()
    rows = []
    for n_apply, t0, applied, t1 in windows:  # every request in flight at some point of [t0, t1]
        window = [lat for sent, lat in latencies if t0 <= sent + lat and sent <= t1]
        stall = max((lag for at, lag in lags if t0 <= at + lag and at <= t1), default=0.0)
        rows.append({"mode": "off-loop" if off_loop else "inline", "apply": n_apply, "apply_s": applied - t0,
                     "window_s": t1 - t0, "requests": len(window), "p50_ms": pct(window, 0.5) * 1e3,
                     "p99_ms": pct(window, 0.99) * 1e3, "max_ms": max(window, default=float("nan")) * 1e3,
                     "stall_ms": stall * 1e3})
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vhosts", type=int, default=26_795)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second per client")
    ap.add_argument("--modes", default="inline,off-loop")
    args = ap.parse_args()
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    bodies = [rds_body(args.vhosts, f"v{i}") for i in (1, 2)]
    print(f"RDS: {args.vhosts} virtual hosts, {len(bodies[0]) / 1e6:.1f} MB JSON; {args.clients} clients × {args.rate:g} req/s; "
          f"python {sys.version.split()[0]}")
    rows = []
    for mode in args.modes.split(","):
        rows += await run_mode(mode == "off-loop", args.clients, args.rate, bodies)
    print(f"{'mode':<9} {'apply':>5} {'apply s':>8} {'window s':>8} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'stall ms':>9}")
    for r in rows:
        print(f"{r['mode']:<9} {r['apply']:>5} {r['apply_s']:>8.2f} {r['window_s']:>8.2f} {r['requests']:>8} "
              f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.1f} {r['stall_ms']:>9.1f}")


if __name__ == "__main__":
    asyncio.run(main())
