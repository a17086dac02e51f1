"""Istio's TCP metrics from a real pyproxy: the `istio.stats` network filter the control plane puts before a
tcp_proxy (control/translate/listeners.py `tcp_stats`), real connections through it to an echo server, the admin
/stats/prometheus parsed with prometheus_client's parser. Client side names the peer from the endpoint's
`istio.workload` metadata (as istiod writes it on EDS endpoints) and the service from the cluster's
`istio.services`; server side reports `destination`."""
from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from control.translate.listeners import istio_stats_filter
from pyproxy.admin.server import make_app, start_admin
from tests.support.client import fetch
from tests.support.proxy import cluster
from tests.support.tcp import EchoServer, exchange, tcp_bootstrap, tcp_proxy

SERVICE = "db.bookinfo.svc.cluster.local"
ISTIO_META = {"filter_metadata": {"istio": {"services": [{"host": SERVICE, "name": "db", "namespace": "bookinfo"}]}}}
NODE = {"id": "sidecar~127.0.0.1~app-v1.bookinfo~bookinfo.svc.cluster.local", "cluster": "app.bookinfo",
        "metadata": {"NAME": "app-v1", "NAMESPACE": "bookinfo", "CLUSTER_ID": "Kubernetes",
                     "LABELS": {"app": "app", "version": "v1"}}}


def db_cluster(name: str, port: int) -> dict:
    c = cluster(name, [port], metadata=ISTIO_META)
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"] = {
        "filter_metadata": {"istio": {"workload": "db-v2;bookinfo;db;v2;Kubernetes"}}}
    return c


async def scrape(port: int) -> dict[str, list]:
    page = await fetch(port, "GET", "/stats/prometheus", host=f"127.0.0.1:{port}")
    return {s.name: s for f in text_string_to_metric_families(page.body.decode()) for s in f.samples
            if s.name.startswith("istio_tcp_")} if page.status == 200 else {}


async def run(proxy_factory, direction: str, clusters: list[dict], payloads: list[bytes]):
    cfg = tcp_bootstrap(clusters, [{"filters": [istio_stats_filter(), tcp_proxy("db")]}])
    cfg["static_resources"]["listeners"][0]["traffic_direction"] = direction
    cfg["node"] = NODE
    proxy = await proxy_factory(cfg)
    runner, admin = await start_admin(make_app(proxy.server), "127.0.0.1", 0)
    try:
        for payload in payloads:
            try:
                await exchange(proxy.port, payload)
            except ConnectionResetError:  # the proxy could not reach the upstream and closed
                pass
        for _ in range(500):  # the session ends on its own after the client's EOF: poll, bounded
            seen = await scrape(admin)
            s = seen.get("istio_tcp_connections_closed_total")
            if s is not None and s.value == len(payloads):
                return seen
            await asyncio.sleep(0.01)  # poll interval of a bounded wait
        raise AssertionError(f"closed connections never reached {len(payloads)}: {seen}")
    finally:
        await runner.cleanup()


async def test_client_side_counts_bytes_and_connections_with_peer_from_endpoint_metadata(proxy_factory):
    echo = await EchoServer("db").start()
    try:
        seen = await run(proxy_factory, "OUTBOUND", [db_cluster("db", echo.port)], [b"x" * 100, b"y" * 50])
    finally:
        await echo.close()
    opened = seen["istio_tcp_connections_opened_total"]
    assert opened.value == 2
    labels = opened.labels
    assert (labels["reporter"], labels["source_workload"], labels["destination_workload"],
            labels["destination_canonical_service"], labels["destination_version"], labels["destination_service"],
            labels["request_protocol"], labels["response_flags"], labels["connection_security_policy"]) == (
        "source", "app-v1", "db-v2", "db", "v2", SERVICE, "tcp", "-", "unknown")
    assert "response_code" not in labels and "grpc_response_status" not in labels
    assert seen["istio_tcp_received_bytes_total"].value == 150  # from the downstream client
    assert seen["istio_tcp_sent_bytes_total"].value == 150 + len(b"db:bye:100") + len(b"db:bye:50")


async def test_server_side_reports_destination_and_failures_count_once(proxy_factory):
    seen = await run(proxy_factory, "INBOUND", [cluster("db", [1], metadata=ISTIO_META)], [b"z" * 10])
    closed = seen["istio_tcp_connections_closed_total"]
    assert (closed.labels["reporter"], closed.labels["destination_workload"], closed.labels["source_workload"],
            closed.labels["response_flags"], closed.labels["connection_security_policy"]) == (
        "destination", "app-v1", "unknown", "UF,URX", "none")
    assert seen["istio_tcp_connections_opened_total"].value == 1  # a connection that never reached upstream
    assert seen["istio_tcp_sent_bytes_total"].value == 0
