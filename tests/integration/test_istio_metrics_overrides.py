"""Telemetry metric overrides reach the data plane: the istio.stats config the control plane renders for
`tagOverrides` (UPSERT a CEL expression, REMOVE a tag) and a disabled metric, served by a real pyproxy, scraped
from its admin /stats/prometheus and parsed with prometheus_client's parser."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from control.translate.listeners import istio_stats_filter
from pyproxy.admin.server import make_app, start_admin
from pyproxy.observe.istio_metrics import LABELS
from tests.support.client import fetch
from tests.support.proxy import bootstrap, cluster, route
from tests.support.upstream import TestUpstream

ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
METRICS = [
    {"name": "requests_total", "dimensions": {"request_host": "request.host", "method": "request.method",
                                              "tenant": "request.headers['x-tenant']"},
     "tags_to_remove": ["response_flags"]},
    {"name": "response_bytes", "drop": True},
]


async def test_tag_overrides_and_drop_change_the_exported_series(proxy_factory):
    upstream = await TestUpstream().start()
    runner = None
    try:
        cfg = bootstrap([cluster("up", [upstream.port])], routes=[route("/", "up")],
                        hcm={"http_filters": [istio_stats_filter(METRICS), ROUTER]})
        cfg["static_resources"]["listeners"][0]["traffic_direction"] = "OUTBOUND"
        proxy = await proxy_factory(cfg)
        runner, admin = await start_admin(make_app(proxy.server), "127.0.0.1", 0)
        for headers in ([("x-tenant", "blue")], [("x-tenant", "blue")], []):
            assert (await proxy.fetch("GET", "/", headers=headers)).status == 200
        page = await fetch(admin, "GET", "/stats/prometheus", host=f"127.0.0.1:{admin}")
        families = {f.name: f for f in text_string_to_metric_families(page.body.decode())}
    finally:
        if runner is not None:
            await runner.cleanup()
        await upstream.close()
    totals = {(s.labels["request_host"], s.labels["method"], s.labels["tenant"]): s.value
              for s in families["istio_requests"].samples}
    assert totals == {("example.com", "GET", "blue"): 2.0, ("example.com", "GET", "unknown"): 1.0}
    (one,) = [s for s in families["istio_requests"].samples if s.labels["tenant"] == "blue"]
    assert "response_flags" not in one.labels
    assert set(one.labels) == (set(LABELS) - {"response_flags"}) | {"request_host", "method", "tenant"}
    assert "istio_response_bytes" not in families  # dropped
    counts = [s for s in families["istio_request_duration_milliseconds"].samples if s.name.endswith("_count")]
    assert [(set(s.labels) == set(LABELS), s.value) for s in counts] == [(True, 3.0)]  # untouched
