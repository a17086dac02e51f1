"""`meshctl stat` and `meshctl tap` (control/cli/stat.py, tap.py) against a real proxy in the test's loop, reached
by `--admin` over real sockets: meshctl runs in a thread, as a user's process would run beside the proxy.

The proxy is an inbound sidecar (istio.stats as the control plane renders it, traffic_direction INBOUND, so its
series are reporter="destination"); the e2e test (tests/e2e/test_demo.py) runs the same commands against the
whole demo mesh.
"""
from __future__ import annotations

import asyncio
import io
import json

import pytest

from control.cli.meshctl import main as meshctl
from control.translate.listeners import istio_stats_filter
from pyproxy.admin.server import make_app, start_admin
from tests.support.proxy import bootstrap, cluster, route

ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


@pytest.fixture
async def sidecar(upstream, proxy_factory):
    """(proxy, admin HOST:PORT) of a reviews-v1 inbound sidecar: `/fail` answers 503 itself, the rest goes on."""
    cfg = bootstrap([cluster("inbound|9080||reviews.default.svc.cluster.local", [upstream.port])],
                    routes=[{"match": {"prefix": "/fail"}, "direct_response": {"status": 503}},
                            route("/", "inbound|9080||reviews.default.svc.cluster.local")],
                    hcm={"http_filters": [istio_stats_filter(), ROUTER]})
    cfg["static_resources"]["listeners"][0]["traffic_direction"] = "INBOUND"
    cfg["node"] = {"id": "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local",
                   "metadata": {"NAME": "reviews-v1", "NAMESPACE": "default", "LABELS": {"app": "reviews"}}}
    proxy = await proxy_factory(cfg)
    runner, port = await start_admin(make_app(proxy.server), "127.0.0.1", 0)
    yield proxy, f"127.0.0.1:{port}"
    await runner.cleanup()


async def run_meshctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()  # not a TTY: plain output
    code = await asyncio.to_thread(meshctl, list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


async def test_stat_counts_what_the_proxy_served(sidecar):
    proxy, admin = sidecar
    for path in ["/ok"] * 8 + ["/fail"] * 2:
        await proxy.fetch("GET", path)
    code, out, err = await run_meshctl("stat", "deploy", "--admin", admin, "-o", "json")
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["namespace"], row["name"], row["requests"], row["success_rate"]) == ("default", "reviews-v1", 10, 0.8)
    assert row["mtls_share"] == 0.0  # plaintext: connection_security_policy="none"
    assert 0 < row["latency_ms_p50"] <= row["latency_ms_p99"]
    code, out, err = await run_meshctl("stat", "pod", "--admin", admin)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("NAMESPACE   NAME") and "\x1b" not in out
    assert lines[1].split()[:4] == ["-", admin, "10", "80.00%"]  # --admin: the namespace is not known
    code, out, err = await run_meshctl("stat", "svc", "--admin", admin)  # svc counts the client side: none here
    assert code == 0 and out.splitlines()[1:] == [] and "No traffic found." in err


async def test_stat_when_no_proxy_answers_is_one_line_and_exit_1():
    code, out, err = await run_meshctl("stat", "deploy", "--admin", "127.0.0.1:1")
    assert code == 1 and out == ""
    assert err.splitlines()[-1] == "Error: no proxy answered" and "Traceback" not in err


async def test_tap_prints_the_requests_then_stops_at_max(sidecar):
    proxy, admin = sidecar
    task = asyncio.ensure_future(run_meshctl("tap", "--admin", admin, "--max", "2", "--duration", "20"))
    for _ in range(500):
        if proxy.server.tap.subscribers or task.done():
            break
        await asyncio.sleep(0.01)  # poll interval of a bounded wait
    assert proxy.server.tap.subscribers, "meshctl tap did not attach"
    await proxy.fetch("GET", "/ok/1", headers=[("traceparent", "00-11111111111111111111111111111111-2222222222222222-01")])
    await proxy.fetch("GET", "/fail")
    code, out, err = await asyncio.wait_for(task, 20)
    assert code == 0, err
    assert err.startswith(f"tapping {admin} (http://{admin}); Ctrl-C to stop")
    first, second = out.splitlines()
    assert first.startswith("inbound GET example.com/ok/1 200 ") and "trace=11111111111111111111111111111111" in first
    assert second.startswith("inbound GET example.com/fail 503 ") and "upstream=- " in second


async def test_tap_duration_bounds_a_quiet_tap(sidecar):
    _, admin = sidecar
    code, out, err = await run_meshctl("tap", "--admin", admin, "--duration", "0.3", "-o", "json")
    assert (code, out) == (0, "") and err.startswith("tapping")


async def test_tap_of_an_unreachable_admin_is_one_line_and_exit_1():
    code, out, err = await run_meshctl("tap", "--admin", "127.0.0.1:1", "--max", "1")
    assert code == 1 and err.startswith("Error: http://127.0.0.1:1/tap: cannot connect")
