"""Tracing differential: the same bootstrap (HCM `tracing` with the OpenTelemetry tracer over OTLP/HTTP) served by
real Envoy and by pyproxy, the same requests sent to both; what each exports to the in-test collector and what
each sends upstream must agree.

Compared per case: whether a span is exported, its name, kind and parent link, its tag names and the stable tag
values, the upstream `traceparent` (sampled flag, trace id kept from the parent or not, span id of this hop) and
the trace reason written into the x-request-id. Excluded by design: the B3-only cases (pyproxy joins B3, Envoy's
OpenTelemetry tracer ignores it: a documented deviation, tested in tests/integration/test_tracing.py).

"No span" is observed without waiting on a clock: each case is followed by a probe request carrying
`x-client-trace-id` (always traced); both proxies export in finish order, so once the probe's span arrived any
span of the case would have too.
"""
from __future__ import annotations

import pathlib

import pytest

from tests.support.client import fetch
from tests.support.envoy import EnvoyProcess, require_envoy
from tests.support.otlp import Collector
from tests.support.proxy import bootstrap, cluster, route, run_proxy
from tests.support.upstream import TestUpstream

OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
NODE = {"id": "sidecar~10.0.0.1~a.default~default.svc.cluster.local", "cluster": "a"}
TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
STABLE_TAGS = ("node_id", "zone", "http.url", "http.method", "downstream_cluster", "user_agent", "http.protocol",
               "peer.address", "request_size", "component", "upstream_cluster", "upstream_cluster.name",
               "http.status_code", "response_flags", "lit", "hdr", "error", "guid:x-client-trace-id")
CASES = [
    ("none", {}),
    ("sampled traceparent", {"traceparent": f"00-{TRACE}-{PARENT}-01"}),
    ("unsampled traceparent", {"traceparent": f"00-{TRACE}-{PARENT}-00"}),
    ("client trace id", {"x-client-trace-id": "abc"}),
    ("request id says sampled", {"x-request-id": "12345678-1234-9234-8234-123456789012"}),
    ("force trace from outside", {"x-envoy-force-trace": "1"}),
    ("header tag", {"x-h": "hv"}),
]


def config(collector: int, upstream: int, random_pct: float, spawn: bool, max_path: int | None = None,
           direction: str | None = None, decorator: bool = True, zipkin: bool = False,
           route_tracing: dict | None = None) -> dict:
    tracing = {"random_sampling": {"value": random_pct}, "spawn_upstream_span": spawn,
               "custom_tags": [{"tag": "lit", "literal": {"value": "v"}},
                               {"tag": "hdr", "request_header": {"name": "x-h", "default_value": "dflt"}}],
               "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
                   "@type": OTEL, "service_name": "svc-a",
                   "http_service": {"http_uri": {"uri": f"http://127.0.0.1:{collector}/v1/traces",
                                                 "cluster": "otel", "timeout": "2s"}}}}}
    if max_path is not None:
        tracing["max_path_tag_length"] = max_path
    if zipkin:  # Istio's ZipkinConfig shape, posted to the same in-test collector (/api/v2/spans)
        tracing["provider"] = {"name": "envoy.tracers.zipkin", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig", "collector_cluster": "otel",
            "collector_endpoint": "/api/v2/spans", "collector_endpoint_version": "HTTP_JSON",
            "trace_id_128bit": True, "shared_span_context": False}}
    routes = [dict(route("/", "up"), decorator={"operation": "myop"}) if decorator else route("/", "up")]
    if route_tracing is not None:  # envoy.config.route.v3.Tracing on the one route (the probe's too)
        routes[0]["tracing"] = route_tracing
    b = bootstrap([cluster("up", [upstream]), cluster("otel", [collector])], routes=routes,
                  hcm={"tracing": tracing})
    if direction:
        b["static_resources"]["listeners"][0]["traffic_direction"] = direction
    b["node"] = NODE
    b["layered_runtime"] = {"layers": [{"name": "static", "static_layer": {
        "tracing.opentelemetry.flush_interval_ms": 20, "tracing.opentelemetry.min_flush_spans": 1,
        "tracing.zipkin.flush_interval_ms": 20, "tracing.zipkin.min_flush_spans": 1}}]}
    return b


def observe(spans, before: int, up, incoming: dict) -> dict:
    """What one case showed, reduced to what both proxies must agree on."""
    # every probe's trace, earlier cases' included: a probe's CLIENT span (spawn_upstream_span) can reach the
    # collector in a later export batch than its SERVER span, inside the next case's window (seen once with Envoy)
    probes = {s.trace_id for s in spans if s.attributes.get("guid:x-client-trace-id") == "probe"}
    mine = [s for s in spans[before:] if s.trace_id not in probes]
    tp = up.header("traceparent")
    if tp is None:  # the Zipkin tracer sends B3
        tp = "00-{}-{}-{}".format(up.header("x-b3-traceid"), up.header("x-b3-spanid"),
                                  "01" if up.header("x-b3-sampled") == "1" else "00")
    version, trace_id, span_id, flags = tp.split("-")
    parent_in = incoming.get("traceparent", "").split("-")
    out = {
        "upstream flags": flags,
        "upstream trace kept": len(parent_in) == 4 and trace_id == parent_in[1],
        "upstream tracestate": up.header("tracestate"),
        "request id reason": up.header("x-request-id")[14],
        "decorator header": up.header("x-envoy-decorator-operation"),
        "b3 parent": up.header("x-b3-parentspanid") is not None,
        "spans": sorted((s.kind, s.name, s.service_name, bool(s.parent_span_id),
                         s.span_id == span_id, tuple(sorted(s.attributes)),
                         tuple((k, s.attributes.get(k)) for k in STABLE_TAGS)) for s in mine),
    }
    return out


async def run_cases(port: int, collector: Collector, upstream: TestUpstream) -> dict[str, dict]:
    seen = {}
    for name, headers in CASES:
        before = len(collector.spans)
        n = len(upstream.requests)
        hdrs = [("user-agent", "oracle/1"), *headers.items()]
        assert (await fetch(port, "GET", "/path?q=1", hdrs)).status == 200
        up = upstream.requests[n]
        assert (await fetch(port, "GET", "/probe", [("x-client-trace-id", "probe")])).status == 200
        await collector.wait_until(lambda spans: any(s.attributes.get("guid:x-client-trace-id") == "probe"
                                                     for s in spans[before:]))
        seen[name] = observe(collector.spans, before, up, headers)
    return seen


@pytest.mark.parametrize("random_pct,spawn,extra", [
    (0, False, {}), (100, False, {}), (100, True, {}), (100, False, {"max_path": 5}),
    (100, False, {"direction": "OUTBOUND"}), (100, False, {"decorator": False}),
    (100, False, {"direction": "OUTBOUND", "decorator": False}), (100, False, {"zipkin": True}),
    (0, False, {"zipkin": True}),
    (0, False, {"route_tracing": {"random_sampling": {"numerator": 100, "denominator": "HUNDRED"},
                                  "custom_tags": [{"tag": "lit", "literal": {"value": "from-route"}}]}}),
    (100, False, {"route_tracing": {"random_sampling": {"numerator": 0, "denominator": "TEN_THOUSAND"}}}),
], ids=["random-0", "random-100", "random-100-spawn-upstream", "max-path-tag-length-5", "outbound",
        "no-decorator", "outbound-no-decorator", "zipkin-100", "zipkin-0", "route-100-over-hcm-0",
        "route-0-over-hcm-100"])
async def test_tracing_matches_envoy(tmp_path: pathlib.Path, monkeypatch, random_pct, spawn, extra):
    require_envoy()
    monkeypatch.setenv("PYPROXY_TRACE_FLUSH_INTERVAL_MS", "20")
    collector = await Collector().start()
    upstream = await TestUpstream().start()
    envoy = EnvoyProcess(config(collector.port, upstream.port, random_pct, spawn, **extra), tmp_path)
    try:
        envoy.start()
        await envoy.wait_ready()
        expected = await run_cases(envoy.port, collector, upstream)
        async with run_proxy(config(collector.port, upstream.port, random_pct, spawn, **extra)) as proxy:
            actual = await run_cases(proxy.port, collector, upstream)
    finally:
        envoy.stop()
        await upstream.close()
        await collector.close()
    for name, _ in CASES:
        assert actual[name] == expected[name], f"case {name!r}: pyproxy differs from Envoy: {actual[name]} != {expected[name]}"
