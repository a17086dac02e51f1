"""Benchmark: how long a big config reload stalls the control plane's event loop. Not a test.

    .venv/bin/python benchmarks/control_reload_bench.py [--virtual-services 22000] [--proxies 3]

Runs the control plane in this process (control.serve.ControlPlane watching a temporary copy of
examples/mesh, the xDS app on 127.0.0.1:0), registers `--proxies` sidecars, then writes one big file of
generated VirtualServices (22,000 ≈ 10 MB, like the security tester's 26,795-resource file) into the watched
directory and measures until the reload is applied and pushed:

* loop lag: a probe task sleeps 5 ms at a time; lag = how late it wakes up. The longest lag is the longest
  time nothing else on the loop (xDS long-polls, registrations, /debug) could run;
* request latency: a client GETs /debug/configz back to back over real HTTP; its slowest answer;
* reload: from the file write until /debug/configz counts the new resources; push: until the next push is done.

The script uses only what both the old (inline) and the new (worker thread) control plane offer, so the same
script measures either: `PYTHONPATH=<checkout of an older commit> python benchmarks/control_reload_bench.py`.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # appended: PYTHONPATH may name another checkout of `control` to measure

from control.serve import ControlPlane  # noqa: E402
from control.xds.node import node_id  # noqa: E402
from control.xds.server import make_app, start_site  # noqa: E402

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs{i}, namespace: default}}
spec:
  hosts: [svc{i}.example.com]
  http:
  - match: [{{headers: {{x-canary: {{exact: "1"}}}}}}]
    route: [{{destination: {{host: svc{i}.example.com, subset: v2}}}}]
  - route:
    - {{destination: {{host: svc{i}.example.com, subset: v1}}, weight: 90}}
    - {{destination: {{host: svc{i}.example.com, subset: v2}}, weight: 10}}
"""


def big_config(count: int) -> str:
    return "---\n".join(VS.format(i=i) for i in range(count))


class LagProbe:
    """Sleeps `period` at a time and records how late it woke up."""

    def __init__(self, period: float = 0.005):
        self.period = period
        self.worst = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, loop.time() - before - self.period)


async def requests(url: str, stop: asyncio.Event) -> tuple[int, float]:
    """GET `url` back to back until `stop`; (count, slowest seconds)."""
    count, worst = 0, 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
            worst = max(worst, time.perf_counter() - started)
            count += 1
    return count, worst


async def register(url: str, name: str) -> None:
    body = {"node": {"id": node_id("sidecar", "127.0.0.1", name, "default"),
                     "metadata": {"LABELS": {"app": name.split("-")[0], "version": "v1"}, "INBOUND_PORT": 15006}}}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v3/discovery:clusters?wait=5", json=body) as resp:
            assert resp.status == 200, await resp.text()


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="reload-bench-"))
    config = work / "mesh"
    shutil.copytree(ROOT / "examples" / "mesh", config)
    cp = ControlPlane(str(config), debounce=0.1, state_file=None)
    await cp.start(watch=True)
    runner, port = await start_site(make_app(cp), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    try:
        for i, app in zip(range(args.proxies), ("productpage", "reviews", "ratings", "details") * 100):
            await register(url, f"{app}-v1-{i}")
        await cp.wait_push(cp.pushes, 30)
        text = big_config(args.virtual_services)
        before = len(cp.resources)
        stop = asyncio.Event()
        probe = LagProbe()
        probing = asyncio.create_task(probe.run(stop))
        client = asyncio.create_task(requests(f"{url}/debug/configz", stop))
        pushes = cp.pushes
        started = time.perf_counter()
        (config / "big.yaml").write_text(text)
        deadline = started + args.timeout
        while len(cp.resources) <= before and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        reloaded = time.perf_counter() - started
        await cp.wait_push(pushes, max(1.0, deadline - time.perf_counter()))
        pushed = time.perf_counter() - started
        stop.set()
        await probing
        count, slowest = await client
        print(f"control plane from {Path(sys.modules['control'].__file__).parent.parent}")
        print(f"config: {args.virtual_services} VirtualServices, {len(text) / 1e6:.1f} MB; {args.proxies} proxies; "
              f"{os.cpu_count()} CPUs")
        print(f"reload applied after {reloaded:.2f}s ({len(cp.resources) - before} resources), "
              f"push done after {pushed:.2f}s")
        print(f"event loop: longest stall {probe.worst * 1000:.0f} ms")
        print(f"/debug/configz during it: {count} answers, slowest {slowest * 1000:.0f} ms")
    finally:
        await runner.cleanup()
        await cp.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--virtual-services", type=int, default=22000)
    parser.add_argument("--proxies", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
