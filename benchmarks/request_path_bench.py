"""The Python cost of one proxied request, without sockets: what a change to the request path saves, to ±0.5 µs.

    .venv/bin/python benchmarks/request_path_bench.py            # about 10 s
    .venv/bin/python benchmarks/request_path_bench.py --show     # also print the response the client got

wrk through a real pyproxy measures CPU per request to ±3 µs on this 2-vCPU VM (other load, cache effects);
too coarse for a change worth 1 µs. This drives the real request path in-process instead: the benchmark
bootstrap (`benchmarks.configs.pyproxy_bootstrap`: one listener, HCM with the router only, one route `/` -> one
STATIC cluster) built by `ProxyServer.apply`, a `DownstreamConnection` and a pooled `UpstreamConnection` on
transports that keep what is written, and per request: the client's bytes into the downstream
`data_received`, the origin's answer into the upstream `data_received` (llhttp parsing included, the
event loop and the four syscalls not). It prints the process CPU time per request (best and median of 5 runs).

Compare two trees by running it with each on PYTHONPATH, alternating (see docs/performance.md). The figure is
lower than the CPU per request under wrk (the loop, the syscalls, and cold caches across 32 connections are
missing), so it measures changes, not the proxy.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # last: a tree to compare, put first on PYTHONPATH, supplies `pyproxy`

from benchmarks import configs  # noqa: E402
from pyproxy.config.decode import decode  # noqa: E402
from pyproxy.config.model import Bootstrap  # noqa: E402
from pyproxy.http.connection import DownstreamConnection  # noqa: E402
from pyproxy.server import ProxyServer, free_port  # noqa: E402
from pyproxy.upstream.connection import UpstreamConnection  # noqa: E402

# What wrk sends, and what the benchmark's nginx origin answers
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 22:43:21 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n")


class _Transport(asyncio.Transport):
    """Keeps what is written, and whether the proxy closed it (a keep-alive connection must stay open)."""

    def __init__(self, peer: tuple[str, int], local: tuple[str, int]):
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False
        self._extra = {"peername": peer, "sockname": local}

    def get_extra_info(self, name, default=None):
        return self._extra.get(name, default)

    def write(self, data) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def measure(requests: int, runs: int = 5, *, warmup: int = 2000, freeze: bool = True,
                  access_log: str = "") -> tuple[list[float], bytes, bytes]:
    """CPU µs per request of each run, and the bytes sent upstream and to the client for the last request.
    `freeze`: gc.freeze() after the warm-up, as `pyproxy run` does after start-up (not inside a test run).
    `access_log` (a file): the sidecar bootstrap instead (`configs.sidecar_bootstrap`: Istio's retry policy,
    istio.stats, the access log to that file; no TLS, the transports here are not sockets)."""
    ports = {"listen_port": free_port(), "admin_port": 0, "backend_port": free_port()}
    config = (configs.sidecar_bootstrap(**ports, access_log_path=access_log) if access_log else
              configs.pyproxy_bootstrap(**ports))
    bootstrap = decode(Bootstrap, config)
    server = ProxyServer()
    await server.apply(bootstrap.static_resources.listeners, bootstrap.static_resources.clusters)
    try:
        listener = next(iter(server.listeners.values()))
        cluster = server.clusters.get("backend")  # type: ignore[union-attr]
        pool = cluster.pool_for(cluster.lb.hosts[0])
        upstream = UpstreamConnection(pool)
        up = _Transport(("127.0.0.1", 8080), ("127.0.0.1", 40000))
        upstream.connection_made(up)
        cluster.on_connection_start()  # as the pool's own connect does
        cluster.on_connection_established(upstream)
        pool.idle.append(upstream)
        downstream = DownstreamConnection(listener)
        down = _Transport(("127.0.0.1", 50000), ("127.0.0.1", 8000))
        downstream.connection_made(down)

        def one() -> None:
            downstream.data_received(REQUEST)
            upstream.data_received(RESPONSE)

        for _ in range(warmup):  # specialised bytecode, warm caches
            one()
        if freeze:
            gc.collect()
            gc.freeze()
        per_request = []
        for _ in range(runs):
            up.written.clear()
            down.written.clear()
            t0 = time.process_time()
            for _ in range(requests):
                one()
            per_request.append((time.process_time() - t0) / requests * 1e6)
        if up.closed or down.closed:
            raise RuntimeError("the proxy closed a keep-alive connection: the run did not measure the request path")
        return per_request, up.written[-1], down.written[-1]
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="request_path_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000, help="requests per run (5 runs)")
    ap.add_argument("--show", action="store_true", help="print the last request sent upstream and its response")
    ap.add_argument("--sidecar", action="store_true",
                    help="a client sidecar's features on: Istio's retry policy, istio.stats, an access log file")
    args = ap.parse_args(argv)
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass
    with tempfile.TemporaryDirectory(prefix="request-path-bench-") as tmp:
        log = str(Path(tmp) / "access.log") if args.sidecar else ""
        per_request, sent, answered = asyncio.run(measure(args.requests, access_log=log))
    print(f"python CPU per request: best {min(per_request):.2f} us, median {statistics.median(per_request):.2f} us "
          f"({len(per_request)} runs of {args.requests})")
    if args.show:
        sys.stdout.write(sent.decode("latin-1") + answered.decode("latin-1"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
