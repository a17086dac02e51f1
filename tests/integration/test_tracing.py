"""HCM `tracing` end to end in one pyproxy: real requests, spans exported over real OTLP/HTTP (or Zipkin JSON)
to an in-test collector on 127.0.0.1 that decodes them with opentelemetry-proto.

Each expectation below is what Envoy 1.40 did for the same bootstrap (tests/oracle/test_tracing_differential.py
runs the shared cases against Envoy itself): span names from the route decorator, Envoy's tag set, the decision
from the x-request-id, a sampled `traceparent` not beating `random_sampling: 0`, an unsampled one not beaten by
100 %, propagation headers written even when nothing is sampled.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.support.otlp import Collector
from tests.support.proxy import bootstrap, cluster, route, run_proxy
from tests.support.upstream import TestUpstream

OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
ZIPKIN = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
NODE_ID = "sidecar~10.0.0.1~a.default~default.svc.cluster.local"
TP_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP_UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
TRACE = "0af7651916cd43dd8448eb211c80319c"


def otel_tracing(port: int, random_pct: float, **extra) -> dict:
    return {"random_sampling": {"value": random_pct},
            "custom_tags": [{"tag": "lit", "literal": {"value": "v"}},
                            {"tag": "hdr", "request_header": {"name": "x-h", "default_value": "dflt"}},
                            {"tag": "env", "environment": {"name": "PYPROXY_TEST_TAG", "default_value": "none"}}],
            "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
                "@type": OTEL, "service_name": "svc-a",
                "http_service": {"http_uri": {"uri": f"http://127.0.0.1:{port}/v1/traces", "cluster": "otel",
                                              "timeout": "2s"}}}},
            **extra}


def config(upstream: int, tracing: dict, *, direction: str | None = None, extra_clusters=()) -> dict:
    routes = [dict(route("/", "up"), decorator={"operation": "myop"})]
    b = bootstrap([cluster("up", [upstream]), *extra_clusters], routes=routes, hcm={"tracing": tracing})
    b["node"] = {"id": NODE_ID, "cluster": "a"}
    if direction:
        b["static_resources"]["listeners"][0]["traffic_direction"] = direction
    return b


@pytest.fixture
async def rig(monkeypatch):
    monkeypatch.setenv("PYPROXY_TRACE_FLUSH_INTERVAL_MS", "20")
    monkeypatch.setenv("PYPROXY_TEST_TAG", "from-env")
    collector = await Collector().start()
    upstream = await TestUpstream().start()
    try:
        yield collector, upstream
    finally:
        await upstream.close()
        await collector.close()


async def _one(proxy, upstream, headers):
    n = len(upstream.requests)
    resp = await proxy.fetch("GET", "/path?q=1", headers=list(headers.items()))
    assert resp.status == 200
    return upstream.requests[n]


async def test_sampled_request_makes_one_server_span_with_envoys_tags(rig):
    collector, upstream = rig
    async with run_proxy(config(upstream.port, otel_tracing(collector.port, 100))) as proxy:
        up = await _one(proxy, upstream, {"x-h": "hv", "user-agent": "ua/1"})
        (span,) = await collector.wait_for(1)
    assert (span.name, span.kind, span.service_name, span.parent_span_id) == ("myop", "SERVER", "svc-a", "")
    assert up.header("traceparent") == f"00-{span.trace_id}-{span.span_id}-01"
    rid = up.header("x-request-id")
    assert rid[14] == "9"  # the decision is written into the request id (Envoy's UUID trace reason)
    a = span.attributes
    assert a["guid:x-request-id"] == rid
    assert a["http.url"] == "http://example.com/path?q=1"
    assert {k: a[k] for k in ("node_id", "zone", "http.method", "downstream_cluster", "user_agent", "http.protocol",
                              "peer.address", "request_size", "component", "upstream_cluster",
                              "upstream_cluster.name", "http.status_code", "response_flags", "lit", "hdr", "env")} == {
        "node_id": NODE_ID, "zone": "", "http.method": "GET", "downstream_cluster": "-", "user_agent": "ua/1",
        "http.protocol": "HTTP/1.1", "peer.address": "127.0.0.1", "request_size": "0", "component": "proxy",
        "upstream_cluster": "up", "upstream_cluster.name": "up", "http.status_code": "200", "response_flags": "-",
        "lit": "v", "hdr": "hv", "env": "from-env"}
    assert int(a["response_size"]) > 0 and "error" not in a


@pytest.mark.parametrize("pct,headers,why", [
    (0, {}, "random_sampling 0"),
    (0, {"traceparent": TP_SAMPLED}, "a sampled traceparent does not beat random_sampling 0"),
    (100, {"traceparent": TP_UNSAMPLED}, "an unsampled traceparent is not beaten by 100 %"),
    (0, {"x-envoy-force-trace": "1"}, "force-trace needs an internal request"),
])
async def test_unsampled_requests_only_propagate_headers(rig, pct, headers, why):
    collector, upstream = rig
    async with run_proxy(config(upstream.port, otel_tracing(collector.port, pct))) as proxy:
        up = await _one(proxy, upstream, headers)
        probe = await _one(proxy, upstream, {"x-client-trace-id": "probe"})  # always traced (client_sampling)
        spans = await collector.wait_for(1)
    assert [s.attributes["guid:x-client-trace-id"] for s in spans] == ["probe"], why
    tp = up.header("traceparent").split("-")
    assert tp[3] == "00" and len(tp[2]) == 16, why
    if "traceparent" in headers:
        assert tp[1] == TRACE and tp[2] != "b7ad6b7169203331", why  # same trace, this hop's span id
    # the HCM's decision is still written into the id (Envoy: `9` at 100 % even though nothing was exported)
    assert up.header("x-request-id")[14] == ("9" if pct == 100 else "4"), why
    assert probe.header("x-request-id")[14] == "b"


async def test_upstream_decision_in_request_id_is_honoured(rig):
    collector, upstream = rig
    async with run_proxy(config(upstream.port, otel_tracing(collector.port, 0))) as proxy:
        rid = "12345678-1234-9234-8234-123456789012"
        up = await _one(proxy, upstream, {"x-request-id": rid})
        (span,) = await collector.wait_for(1)
    assert span.attributes["guid:x-request-id"] == rid == up.header("x-request-id")


async def test_w3c_parent_is_joined_and_tracestate_passed(rig):
    collector, upstream = rig
    async with run_proxy(config(upstream.port, otel_tracing(collector.port, 100))) as proxy:
        up = await _one(proxy, upstream, {"traceparent": TP_SAMPLED, "tracestate": "k=v"})
        (span,) = await collector.wait_for(1)
    assert (span.trace_id, span.parent_span_id) == (TRACE, "b7ad6b7169203331")
    assert up.header("traceparent") == f"00-{TRACE}-{span.span_id}-01"
    assert up.header("tracestate") == "k=v"


@pytest.mark.parametrize("headers", [
    {"x-b3-traceid": TRACE, "x-b3-spanid": "b7ad6b7169203331", "x-b3-sampled": "1"},
    {"b3": f"{TRACE}-b7ad6b7169203331-1"},
], ids=["b3-multi", "b3-single"])
async def test_b3_only_client_is_joined(rig, headers):
    """A documented deviation: Envoy's OpenTelemetry tracer ignores B3; pyproxy joins the B3 trace."""
    collector, upstream = rig
    async with run_proxy(config(upstream.port, otel_tracing(collector.port, 100))) as proxy:
        up = await _one(proxy, upstream, headers)
        (span,) = await collector.wait_for(1)
    assert (span.trace_id, span.parent_span_id) == (TRACE, "b7ad6b7169203331")
    assert up.header("traceparent") == f"00-{TRACE}-{span.span_id}-01"


async def test_spawn_upstream_span_makes_a_client_child(rig):
    collector, upstream = rig
    tracing = otel_tracing(collector.port, 100, spawn_upstream_span=True)
    async with run_proxy(config(upstream.port, tracing)) as proxy:
        up = await _one(proxy, upstream, {})
        spans = await collector.wait_for(2)
    by_kind = {s.kind: s for s in spans}
    server, client = by_kind["SERVER"], by_kind["CLIENT"]
    assert client.name == "router up egress" and client.parent_span_id == server.span_id
    assert client.trace_id == server.trace_id
    assert up.header("traceparent") == f"00-{client.trace_id}-{client.span_id}-01"
    assert client.attributes["upstream_address"] == f"127.0.0.1:{upstream.port}"
    assert client.attributes["http.status_code"] == "200"


async def test_outbound_listener_makes_client_span_and_propagates_decorator(rig):
    collector, upstream = rig
    async with run_proxy(config(upstream.port, otel_tracing(collector.port, 100), direction="OUTBOUND")) as proxy:
        up = await _one(proxy, upstream, {})
        (span,) = await collector.wait_for(1)
    assert (span.kind, span.name) == ("CLIENT", "myop")
    assert up.header("x-envoy-decorator-operation") == "myop"


async def test_ingress_takes_operation_from_decorator_header(rig):
    collector, upstream = rig
    async with run_proxy(config(upstream.port, otel_tracing(collector.port, 100))) as proxy:
        up = await _one(proxy, upstream, {"x-envoy-decorator-operation": "from-client"})
        (span,) = await collector.wait_for(1)
    assert span.name == "from-client" and up.header("x-envoy-decorator-operation") is None


async def test_5xx_is_tagged_error(rig):
    collector, upstream = rig
    async with run_proxy(config(upstream.port, otel_tracing(collector.port, 100))) as proxy:
        resp = await proxy.fetch("GET", "/status/503")
        (span,) = await collector.wait_for(1)
    assert resp.status == 503
    assert (span.attributes["http.status_code"], span.attributes["error"]) == ("503", "true")


async def test_zipkin_provider_posts_json_v2_and_sends_b3(rig):
    collector, upstream = rig
    tracing = {"random_sampling": {"value": 100}, "provider": {"name": "envoy.tracers.zipkin", "typed_config": {
        "@type": ZIPKIN, "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans",
        "collector_endpoint_version": "HTTP_JSON", "trace_id_128bit": True}}}
    async with run_proxy(config(upstream.port, tracing, extra_clusters=[cluster("zipkin", [collector.port])])) as proxy:
        up = await _one(proxy, upstream, {"x-b3-traceid": TRACE, "x-b3-spanid": "b7ad6b7169203331",
                                          "x-b3-sampled": "1"})
        (span,) = await collector.wait_for(1)
    assert (span.format, span.name, span.kind, span.trace_id, span.parent_span_id) == (
        "zipkin", "myop", "SERVER", TRACE, "b7ad6b7169203331")
    assert (up.header("x-b3-traceid"), up.header("x-b3-spanid"), up.header("x-b3-parentspanid"),
            up.header("x-b3-sampled")) == (TRACE, span.span_id, "b7ad6b7169203331", "1")


async def test_grpc_service_is_refused_by_name(rig):
    collector, upstream = rig
    tracing = {"provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": OTEL, "grpc_service": {"envoy_grpc": {"cluster_name": "otel"}}}}}
    with pytest.raises(Exception) as e:
        async with run_proxy(config(upstream.port, tracing)):
            pass
    assert "grpc_service" in str(e.value)


async def test_sampling_rate_within_bounds(rig):
    """2,000 requests at random_sampling 10 %: the count of exported spans is within 5 sigma of 200 (binomial,
    sigma = sqrt(2000 x 0.1 x 0.9) = 13.4), i.e. 133..267; each request id decides once."""
    collector, upstream = rig
    async with run_proxy(config(upstream.port, otel_tracing(collector.port, 10))) as proxy:
        from tests.support.client import RawClient
        async with await RawClient.connect(proxy.port) as c:
            sampled_ids = []
            for _ in range(2000):
                resp = await c.request("GET", "/", [("x-h", "1")], host="example.com")
                assert resp.status == 200
            for req in upstream.requests:
                if req.header("x-request-id")[14] == "9":
                    sampled_ids.append(req.header("x-request-id"))
        await collector.wait_for(len(sampled_ids))
    assert 133 <= len(sampled_ids) <= 267
    # every span the collector got, including any flushed when the proxy stopped: the sampled requests, no other
    assert sorted(s.attributes["guid:x-request-id"] for s in collector.spans) == sorted(sampled_ids)


async def test_otlp_goes_to_a_host_of_the_http_uri_cluster(rig):
    """Envoy posts to `http_uri.cluster`; the uri's host need not resolve (Istio writes the service's FQDN)."""
    collector, upstream = rig
    tracing = otel_tracing(collector.port, 100)
    tracing["provider"]["typed_config"]["http_service"]["http_uri"]["uri"] = (
        "http://otel-collector.observability.svc.cluster.local:4318/v1/traces")
    async with run_proxy(config(upstream.port, tracing, extra_clusters=[cluster("otel", [collector.port])])) as proxy:
        await _one(proxy, upstream, {})
        (span,) = await collector.wait_for(1)
    assert span.name == "myop"


@pytest.mark.parametrize("hcm_pct, route_sampling, traced", [
    (0, {"numerator": 100, "denominator": "HUNDRED"}, True),     # the route samples what the HCM would not
    (100, {"numerator": 0, "denominator": "HUNDRED"}, False),    # ... and keeps out what it would
    (0, {"numerator": 10000, "denominator": "TEN_THOUSAND"}, True),
    (0, None, True),                                             # route tracing without random_sampling: 100 %
])
async def test_route_tracing_overrides_the_hcm_sampling_and_adds_its_tags(rig, hcm_pct, route_sampling, traced):
    """envoy.config.route.v3.Tracing: the matched route's sampling replaces the HCM's (each unset fraction is
    100 %), and its custom tags join the HCM's, a tag of the same name replacing the HCM's. Other routes keep
    the HCM's decision."""
    collector, upstream = rig
    route_tracing: dict = {"custom_tags": [{"tag": "lit", "literal": {"value": "from-route"}},
                                           {"tag": "rt", "request_header": {"name": "x-r", "default_value": "d"}}]}
    if route_sampling is not None:
        route_tracing["random_sampling"] = route_sampling
    cfg = config(upstream.port, otel_tracing(collector.port, hcm_pct))
    routes = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    routes.insert(0, dict(route("/path", "up"), decorator={"operation": "traced-route"}, tracing=route_tracing))
    routes.insert(0, dict(route("/other", "up"), decorator={"operation": "other-route"}))
    async with run_proxy(cfg) as proxy:
        await _one(proxy, upstream, {"x-r": "rv"})  # GET /path?q=1: the route with `tracing`
        n = len(upstream.requests)
        assert (await proxy.fetch("GET", "/other")).status == 200
        other = upstream.requests[n]
        await _one(proxy, upstream, {"x-client-trace-id": "probe"})  # a span that is always there, last
        spans = await collector.wait_for((2 if traced else 1) + (hcm_pct == 100))
    names = [s.name for s in spans]
    assert names.count("traced-route") == (2 if traced else 1)  # the probe hit /path too (client_sampling 100 %)
    assert ("other-route" in names) == (hcm_pct == 100)
    assert (other.header("x-request-id")[14] == "9") == (hcm_pct == 100)
    first = next(s for s in spans if s.name == "traced-route")
    assert (first.attributes["lit"], first.attributes["rt"], first.attributes["hdr"]) == (
        "from-route", "rv" if traced else "d", "dflt")
