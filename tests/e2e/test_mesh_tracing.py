"""A trace across the live mesh: real `pyproxy-control` and `pyproxy sidecar` processes configured by a Telemetry
resource and meshConfig `extensionProviders` (OpenTelemetry over OTLP/HTTP), the demo apps forwarding the trace
headers as Istio asks apps to, spans collected by an in-test OTLP/HTTP receiver on 127.0.0.1 that decodes them
with opentelemetry-proto.

The request: the test (as productpage's app) -> productpage sidecar (outbound, CLIENT span) -> reviews sidecar
(inbound, SERVER) -> reviews app -> reviews sidecar (outbound, CLIENT) -> ratings sidecar (inbound, SERVER) ->
ratings app -> ratings sidecar (outbound, CLIENT) -> details sidecar (inbound, SERVER) -> details app.
Three hops, six spans, one trace, each span the child of the one before.
"""
from __future__ import annotations

import pytest

from tests.support.mesh import (NAMESPACE, Mesh, bookinfo_config, client_session, labels, outbound_cluster, service)
from tests.support.otlp import Collector

pytestmark = pytest.mark.timeout(120)
COLLECTOR_HOST = "otel-collector.istio-system.svc.cluster.local"


def telemetry_config(collector_port: int, percent: float) -> list[dict]:
    return [
        {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
         "metadata": {"name": "cp", "namespace": "istio-system"},
         "spec": {"meshConfig": {"extensionProviders": [
             {"name": "otel", "opentelemetry": {"service": COLLECTOR_HOST, "port": 4318,
                                                "http": {"path": "/v1/traces", "timeout": "2s"}}}]}}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "otel-collector", "namespace": "istio-system"},
         "spec": {"hosts": [COLLECTOR_HOST], "location": "MESH_INTERNAL", "resolution": "STATIC",
                  "ports": [{"number": 4318, "name": "http", "protocol": "HTTP"}],
                  "endpoints": [{"address": "127.0.0.1", "ports": {"http": collector_port}}]}},
        {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
         "metadata": {"name": "mesh-default", "namespace": "istio-system"},
         "spec": {"tracing": [{"providers": [{"name": "otel"}], "randomSamplingPercentage": percent,
                               "customTags": {"team": {"literal": {"value": "bookinfo"}}}}]}},
    ]


@pytest.fixture
async def collector():
    c = await Collector().start()
    try:
        yield c
    finally:
        await c.close()


async def test_three_hops_make_one_trace_with_server_and_client_spans(mesh: Mesh, collector: Collector):
    bookinfo_config(mesh, {"v1": 100})
    mesh.write("more-services.yaml", [service("ratings"), service("details")])
    mesh.write("telemetry.yaml", telemetry_config(collector.port, 100))
    await mesh.control_plane()
    pp, reviews, ratings, details = await mesh.workloads(
        ("productpage-v1", labels("productpage")), ("reviews-v1", labels("reviews")),
        ("ratings-v1", labels("ratings")), ("details-v1", labels("details")))
    for client, server, cluster in ((pp, reviews, outbound_cluster("reviews", subset="v1")),
                                    (reviews, ratings, outbound_cluster("ratings")),
                                    (ratings, details, outbound_cluster("details"))):
        await mesh.wait_hosts(client.sidecar, cluster, lambda h, s=server: s.sidecar.endpoint in h, "has its peer")
    async with client_session() as session:
        resp = await session.get(f"http://127.0.0.1:{pp.sidecar.outbound_port}/call/ratings:9080/call/details:9080/"
                                 "anything/leaf", headers={"Host": "reviews:9080"})
        body = await resp.json()
    assert resp.status == 200 and body["served_by"] == "details-v1", (resp.status, body, mesh.logs())
    spans = await collector.wait_for(6)
    assert len({s.trace_id for s in spans}) == 1, spans
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1, spans
    chain = [roots[0]]
    while len(chain) < 6:
        children = [s for s in spans if s.parent_span_id == chain[-1].span_id]
        assert len(children) == 1, (chain, spans)
        chain.append(children[0])
    assert [s.kind for s in chain] == ["CLIENT", "SERVER"] * 3
    assert [s.service_name for s in chain] == [f"{app}.{NAMESPACE}" for app in
                                               ("productpage", "reviews", "reviews", "ratings", "ratings", "details")]
    # span names: the route decorators istiod writes (`<host>:<port>/*`: a VirtualService route to one subset,
    # then default routes), and the server side takes the caller's x-envoy-decorator-operation, as Envoy does
    assert [s.name for s in chain] == [f"{svc}.{NAMESPACE}.svc.cluster.local:9080/*" for svc in
                                       ("reviews", "reviews", "ratings", "ratings", "details", "details")]
    assert [s.attributes["istio.canonical_service"] for s in chain] == [
        "productpage", "reviews", "reviews", "ratings", "ratings", "details"]
    assert {s.attributes["team"] for s in chain} == {"bookinfo"}
    assert {s.attributes["istio.mesh_id"] for s in chain} == {"cluster.local"}
    assert {s.attributes["http.status_code"] for s in chain} == {"200"}
    assert {s.attributes["component"] for s in chain} == {"proxy"}
    assert chain[0].attributes["upstream_cluster"] == outbound_cluster("reviews", subset="v1")
    assert chain[0].attributes["http.url"].startswith("http://reviews:9080/call/ratings:9080/")
    assert chain[5].attributes["http.url"] == "http://details:9080/anything/leaf"
    assert chain[0].attributes["node_id"] != chain[1].attributes["node_id"]
    assert len({s.attributes["guid:x-request-id"] for s in chain}) == 1  # the apps forwarded x-request-id too
    assert all(by_id[s.parent_span_id] is p for p, s in zip(chain, chain[1:]))


async def test_b3_only_client_joins_and_unsampled_requests_export_nothing(mesh: Mesh, collector: Collector):
    """At 0 % nothing is exported unless the caller's x-request-id already says sampled (Envoy's trace reason);
    a B3-only caller's trace id is kept through both hops."""
    bookinfo_config(mesh, {"v1": 100})
    mesh.write("telemetry.yaml", telemetry_config(collector.port, 0))
    await mesh.control_plane()
    pp, reviews = await mesh.workloads(("productpage-v1", labels("productpage")), ("reviews-v1", labels("reviews")))
    await mesh.wait_hosts(pp.sidecar, outbound_cluster("reviews", subset="v1"),
                          lambda h: reviews.sidecar.endpoint in h, "has reviews")
    trace = "80f198ee56343ba864fe8b2a57d3eff7"
    url = f"http://127.0.0.1:{pp.sidecar.outbound_port}/anything"
    async with client_session() as session:
        for _ in range(20):  # unsampled: no span
            assert (await session.get(url, headers={"Host": "reviews:9080"})).status == 200
        sampled_id = "12345678-1234-9234-8234-123456789012"  # `9`: the trace reason "sampled"
        resp = await session.get(url, headers={"Host": "reviews:9080", "x-request-id": sampled_id,
                                               "x-b3-traceid": trace, "x-b3-spanid": "e457b5a2e4d86bd1",
                                               "x-b3-sampled": "1"})
        assert resp.status == 200
    spans = await collector.wait_for(2)
    assert sorted((s.kind, s.trace_id) for s in spans) == [("CLIENT", trace), ("SERVER", trace)]
    client = next(s for s in spans if s.kind == "CLIENT")
    assert client.parent_span_id == "e457b5a2e4d86bd1"
    assert {s.attributes["guid:x-request-id"] for s in spans} == {sampled_id}
