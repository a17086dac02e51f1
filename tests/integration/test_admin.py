"""The admin endpoints report what the proxy really holds, after real traffic.

The admin app (`pyproxy.admin.server.make_app`) is served on 127.0.0.1:0 next to a running proxy in
the test's event loop; the test sends known traffic through the proxy and checks that /stats,
/stats/prometheus, /clusters and /config_dump agree with what was sent and with what the upstream
itself counted. /config_dump must parse as Envoy's own `envoy.admin.v3.ConfigDump` message.
"""
from __future__ import annotations

import json
import pathlib

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pyproxy

from tests.envoy_protos import parse_envoy
from tests.support.proxy import bootstrap, decode_bootstrap

N_KEEPALIVE = 5
N_FRESH = 3


@pytest.fixture
async def admin(upstream, proxy_factory):
    """A proxy with admin, after N_KEEPALIVE requests on one connection + N_FRESH on new ones."""
    from pyproxy.admin.server import make_app, start_admin

    config = bootstrap({"backend": [upstream.port]})
    proxy = await proxy_factory(config)
    c = await proxy.connect()
    for _ in range(N_KEEPALIVE):
        assert (await c.request("GET", "/")).status == 200
    await c.aclose()
    for _ in range(N_FRESH):
        assert (await proxy.fetch("GET", "/")).status == 200
    runner, port = await start_admin(make_app(proxy.server, bootstrap=decode_bootstrap(config)), "127.0.0.1", 0)
    session = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}",
                                    timeout=aiohttp.ClientTimeout(total=10))

    async def get(path: str) -> tuple[int, str]:
        async with session.get(path) as r:
            return r.status, await r.text()

    get.proxy = proxy
    yield get
    await session.close()
    await runner.cleanup()


def parse_stats(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.lstrip("-").isdigit():
            out[name] = int(value)
    return out


async def test_ready_is_200_live(admin):
    assert await admin("/ready") == (200, "LIVE\n")


async def test_stats_match_the_traffic(admin, upstream):
    status, text = await admin("/stats")
    assert status == 200
    stats = parse_stats(text)
    total = N_KEEPALIVE + N_FRESH
    assert stats["http.ingress_http.downstream_rq_total"] == total
    assert stats["http.ingress_http.downstream_rq_2xx"] == total
    assert stats["cluster.backend.upstream_rq_total"] == total == len(upstream.requests)
    assert stats["cluster.backend.upstream_cx_total"] == upstream.connections
    assert stats["cluster.backend.upstream_cx_active"] == upstream.open_connections
    assert stats["listener.127.0.0.1_0.downstream_cx_total"] == 1 + N_FRESH


async def test_stats_json_and_filter(admin):
    status, text = await admin("/stats?format=json&filter=downstream_rq_total")
    assert status == 200
    entries = json.loads(text)["stats"]
    assert {e["name"]: e["value"] for e in entries} == {
        "http.ingress_http.downstream_rq_total": N_KEEPALIVE + N_FRESH}


async def test_prometheus_parses_and_matches(admin):
    status, text = await admin("/stats/prometheus")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    total = N_KEEPALIVE + N_FRESH
    assert samples[("envoy_http_downstream_rq_total", (("envoy_http_conn_manager_prefix", "ingress_http"),))] == total
    assert samples[("envoy_cluster_upstream_rq_total", (("envoy_cluster_name", "backend"),))] == total


async def test_clusters_lists_the_real_host_with_its_request_count(admin, upstream):
    status, text = await admin("/clusters")
    assert status == 200
    host = f"backend::127.0.0.1:{upstream.port}"
    lines = dict(line.rsplit("::", 1) for line in text.splitlines() if line.startswith(host + "::"))
    assert lines[f"{host}::rq_total"] == str(N_KEEPALIVE + N_FRESH)
    assert lines[f"{host}::rq_success"] == str(N_KEEPALIVE + N_FRESH)
    assert lines[f"{host}::cx_active"] == str(upstream.open_connections)
    assert lines[f"{host}::health_flags"] == "healthy"


async def test_clusters_host_cx_total_counts_connections(admin, upstream):
    """/clusters `cx_total` per host is the number of connections the proxy opened to it."""
    _, text = await admin("/clusters")
    line = f"backend::127.0.0.1:{upstream.port}::cx_total::{upstream.connections}"
    assert line in text.splitlines()


async def test_clusters_json(admin, upstream):
    status, text = await admin("/clusters?format=json")
    assert status == 200
    (backend,) = json.loads(text)["cluster_statuses"]
    assert backend["name"] == "backend"
    (host,) = backend["host_statuses"]
    assert host["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": upstream.port}
    stats = {s["name"]: s["value"] for s in host["stats"]}
    assert stats["rq_total"] == str(N_KEEPALIVE + N_FRESH)


async def test_config_dump_is_an_envoy_config_dump_of_the_running_config(admin, upstream):
    status, text = await admin("/config_dump")
    assert status == 200
    dump = parse_envoy("envoy.admin.v3.ConfigDump", json.loads(text))
    types = [c.type_url.rsplit("/", 1)[1] for c in dump.configs]
    assert "envoy.admin.v3.ListenersConfigDump" in types and "envoy.admin.v3.ClustersConfigDump" in types
    data = json.loads(text)
    listeners = next(c for c in data["configs"] if c["@type"].endswith("ListenersConfigDump"))
    clusters = next(c for c in data["configs"] if c["@type"].endswith("ClustersConfigDump"))
    (lis,) = listeners["static_listeners"]
    assert lis["listener"]["name"] == "listener_0"
    (cl,) = clusters["static_clusters"]
    assert cl["cluster"]["name"] == "backend"
    ep = cl["cluster"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert ep["socket_address"]["port_value"] == upstream.port


async def test_config_dump_follows_a_config_swap(admin, upstream_factory):
    """After `apply()` the dump shows the new clusters (dynamic, with the applied version)."""
    from tests.support.proxy import listeners_and_clusters

    other = await upstream_factory("other")
    await admin.proxy.server.apply(*listeners_and_clusters(bootstrap({"fresh": [other.port]})), version="v7")
    _, text = await admin("/config_dump")
    parse_envoy("envoy.admin.v3.ConfigDump", json.loads(text))
    clusters = next(c for c in json.loads(text)["configs"] if c["@type"].endswith("ClustersConfigDump"))
    names = [c["cluster"]["name"] for c in clusters.get("dynamic_active_clusters", [])]
    assert names == ["fresh"]
    assert clusters["version_info"] == "v7"


async def test_server_info(admin):
    status, text = await admin("/server_info")
    info = json.loads(text)
    assert status == 200 and info["state"] == "LIVE"
    # this suite runs twice in CI: in the source tree, then inside build/compiled/ (make test-compiled), where
    # the request path must really be the mypyc build; the proxy says which it runs
    tree = pathlib.Path(pyproxy.__file__).resolve().parents[1]
    in_build = tree.name == "compiled" and tree.parent.name == "build"
    assert info["request_path_compiled"] is in_build


async def test_prometheus_port_serves_the_same_metrics_and_nothing_else(admin):
    """`--prometheus-port` (Istio's 15090) is reachable by a Prometheus elsewhere, so it must not expose the
    admin's config, its mutations, or anything but the metrics the admin port itself serves."""
    from pyproxy.admin.server import make_app, make_prometheus_app, start_admin

    admin_app = make_app(admin.proxy.server)
    runner, port = await start_admin(make_prometheus_app(admin_app), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}",
                                         timeout=aiohttp.ClientTimeout(total=10)) as s:
            async with s.get("/stats/prometheus") as r:
                metrics = await r.text()
                assert r.status == 200
            names = {f.name for f in text_string_to_metric_families(metrics)}
            assert names and names == {f.name for f in text_string_to_metric_families(
                (await admin("/stats/prometheus"))[1])}
            for method, path in (("GET", "/config_dump"), ("GET", "/stats"), ("POST", "/quitquitquit"),
                                 ("GET", "/server_info")):
                async with s.request(method, path) as r:
                    assert r.status in (404, 405), (method, path, r.status)
    finally:
        await runner.cleanup()
