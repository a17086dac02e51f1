"""`--concurrency N`: N worker processes share each listener (SO_REUSEPORT), like Envoy's worker threads.

The supervisor (this module) starts `pyproxy run --worker-id i` N times. Every worker binds every
listener with SO_REUSEPORT, so the kernel spreads new connections across them, and holds its own copy
of the config, pools and counters. Each worker runs a private admin on an ephemeral 127.0.0.1 port and
announces it on stdout (`ADMIN_PORT n`). The supervisor owns the real admin address: `/stats` is the sum
of the workers' stats (per-worker counters such as `listener.<addr>.worker_<i>.downstream_cx_total` stay
separate); other pages are answered by worker 0. Workers are stopped by PID when the supervisor stops.
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Any

import aiohttp

from .bootstrap import load_bootstrap
from .observe.stats import Stats

log = logging.getLogger("pyproxy.workers")


class Worker:
    def __init__(self, index: int, proc: asyncio.subprocess.Process):
        self.index = index
        self.proc = proc
        self.admin_port = 0


async def _spawn(index: int, config_path: str, drain_time: float) -> Worker:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyproxy", "run", "-c", config_path, "--worker-id", str(index),
        "--drain-time-s", str(drain_time), stdout=asyncio.subprocess.PIPE,
    )
    w = Worker(index, proc)
    assert proc.stdout is not None
    while True:
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {index} exited before it was ready (exit code {await proc.wait()})")
        text = line.decode().strip()
        if text.startswith("ADMIN_PORT "):
            w.admin_port = int(text.split()[1])
            break
        print(text, flush=True)
    asyncio.get_running_loop().create_task(_pump(proc.stdout))
    return w


async def _pump(stream: asyncio.StreamReader) -> None:
    """Forward a worker's stdout (access logs) to ours."""
    while True:
        line = await stream.readline()
        if not line:
            return
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


async def _fetch(session: aiohttp.ClientSession, w: Worker, path: str) -> tuple[int, bytes, str]:
    async with session.get(f"http://127.0.0.1:{w.admin_port}{path}") as r:
        return r.status, await r.read(), r.headers.get("content-type", "text/plain")


async def run_supervisor(config_path: str, concurrency: int, drain_time: float) -> int:
    from .admin.httpd import App, Request, Response, StreamResponse, json_response
    from .admin.server import start_admin

    bootstrap = load_bootstrap(config_path)
    workers: list[Worker] = []
    try:
        for i in range(concurrency):
            workers.append(await _spawn(i, config_path, drain_time))
    except (RuntimeError, asyncio.TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        for w in workers:
            w.proc.terminate()
        return 1
    session = aiohttp.ClientSession()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def summed_stats() -> Stats:
        total = Stats()
        for w in workers:
            for kind in ("Counters", "Gauges"):
                _, body, _ = await _fetch(session, w, f"/stats?format=json&type={kind}")
                for entry in json.loads(body).get("stats", []):
                    if not isinstance(entry.get("value"), int):
                        continue
                    if kind == "Gauges":
                        total.gauge(entry["name"]).inc(entry["value"])
                    else:
                        total.counter(entry["name"]).inc(entry["value"])
        return total

    async def handler(req: Request) -> Response | StreamResponse:
        from .observe import stats as stats_mod

        if req.path in ("/stats", "/stats/prometheus"):
            from .admin.server import render_stats

            params = dict(req.query)
            if req.path == "/stats/prometheus":
                params["format"] = "prometheus"
            try:
                q = stats_mod.StatsQuery.from_params(params)
            except ValueError as e:
                return Response(status=400, text=f"{e}\n")
            return render_stats(await summed_stats(), q)
        if req.path == "/tap":  # a stream per worker: the buffered forwarding below cannot carry it
            return Response(status=501, text="tap: not available with --concurrency > 1; ask a worker's own "
                                                 "admin (its ADMIN_PORT line) or run one process\n")
        if req.path == "/quitquitquit":
            loop.call_soon(stop.set)
            return Response(text="OK\n")
        status, body, ctype = await _fetch(session, workers[0], req.path_qs)
        if req.path == "/server_info":
            info: dict[str, Any] = json.loads(body)
            info["workers"] = [{"worker_id": w.index, "pid": w.proc.pid} for w in workers]
            info["concurrency"] = concurrency
            return json_response(info)
        return Response(status=status, body=body, content_type=ctype.split(";")[0])

    app = App(fallback=handler)
    runner = None
    if bootstrap.admin is not None and bootstrap.admin.address is not None:
        sa = bootstrap.admin.address.socket_address
        runner, _ = await start_admin(app, sa.address, sa.port_value)
    log.info("supervisor: %d workers %s", concurrency, [w.proc.pid for w in workers])
    waits = [loop.create_task(w.proc.wait()) for w in workers]
    stopper = loop.create_task(stop.wait())
    await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
    for w in workers:
        if w.proc.returncode is None:
            w.proc.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            async with asyncio.timeout(drain_time + 5):
                await w.proc.wait()
        except asyncio.TimeoutError:
            w.proc.kill()
    await session.close()
    if runner is not None:
        await runner.cleanup()
    stopper.cancel()
    return 0
