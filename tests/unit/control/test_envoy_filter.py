"""EnvoyFilter patches as istiod applies them (control/translate/envoy_filter.py): the HTTP filter operations on a
connection manager's chain, protobuf's merge on Envoy JSON, route and virtual host MERGE with their matches,
which EnvoyFilters a proxy gets and in which order, and what is not applied, named (PYM0011 in analyze)."""
from __future__ import annotations

import pytest

from control.analyze import analyze
from control.istio.load import load_text
from control.mesh import build_mesh
from control.translate import render_sidecar
from control.translate import envoy_filter as ef

ROUTER = {"name": "envoy.filters.http.router"}
CHAIN = [{"name": "a"}, {"name": "b"}, ROUTER]

BASE = """\
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec: {selector: {app: productpage}, ports: [{name: http, port: 9080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: productpage-v1, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  template: {metadata: {labels: {app: productpage, version: v1}}, spec: {containers: [{name: p}]}}
"""


def patch(operation: str, sub: str = "", value: dict | None = None, apply_to: str = "HTTP_FILTER",
          match: dict | None = None) -> ef.Patch:
    if match is None:
        filt = {"name": ef.HCM, **({"subFilter": {"name": sub}} if sub else {})}
        match = {"listener": {"filterChain": {"filter": filt}}}
    return ef.Patch(None, 0, apply_to, "ANY", match, operation, value if value is not None else {"name": "new"})


def names(filters: list[dict]) -> list[str]:
    return [f["name"] for f in filters]


@pytest.mark.parametrize("operation, sub, expected", [
    ("ADD", "", ["a", "b", "envoy.filters.http.router", "new"]),
    ("INSERT_FIRST", "b", ["new", "a", "b", "envoy.filters.http.router"]),
    ("INSERT_BEFORE", "envoy.filters.http.router", ["a", "b", "new", "envoy.filters.http.router"]),
    ("INSERT_BEFORE", "", ["new", "a", "b", "envoy.filters.http.router"]),  # istiod: no filter match = first
    ("INSERT_AFTER", "a", ["a", "new", "b", "envoy.filters.http.router"]),
    ("INSERT_AFTER", "", ["a", "b", "envoy.filters.http.router", "new"]),  # istiod: no filter match = last
    ("INSERT_BEFORE", "missing", ["a", "b", "envoy.filters.http.router"]),
    ("REPLACE", "b", ["a", "new", "envoy.filters.http.router"]),
    ("REPLACE", "", ["a", "b", "envoy.filters.http.router"]),
    ("REMOVE", "a", ["b", "envoy.filters.http.router"]),
])
def test_http_filter_operations(operation, sub, expected):
    assert names(ef.patch_http_filters(list(CHAIN), [patch(operation, sub)])) == expected


def test_http_filter_merge_merges_typed_config_of_the_same_type():
    t = "type.googleapis.com/x.Y"
    chain = [{"name": "a", "typed_config": {"@type": t, "stat_prefix": "p", "list": [1]}}, ROUTER]
    merged = ef.patch_http_filters(chain, [patch("MERGE", "a", {"typed_config": {"@type": t, "list": [2],
                                                                                 "extra": True}})])
    assert merged[0]["typed_config"] == {"@type": t, "stat_prefix": "p", "list": [1, 2], "extra": True}
    other = ef.patch_http_filters(chain, [patch("MERGE", "a", {"typed_config": {"@type": "other", "x": 1}})])
    assert other[0]["typed_config"] == chain[0]["typed_config"]


def test_proto_merge_messages_lists_any_and_typed_per_filter_config():
    dst = {"a": {"b": 1, "c": 2}, "l": [1], "any": {"@type": "t", "x": 1},
           "typed_per_filter_config": {"f": {"@type": "t", "k": 1}, "g": {"@type": "t"}}}
    src = {"a": {"c": 3}, "l": [2], "any": {"@type": "t", "y": 2},
           "typed_per_filter_config": {"f": {"@type": "t", "j": 2}}}
    assert ef.proto_merge(dst, src) == {
        "a": {"b": 1, "c": 3}, "l": [1, 2], "any": {"@type": "t", "y": 2},
        "typed_per_filter_config": {"f": {"@type": "t", "j": 2}, "g": {"@type": "t"}}}
    assert dst["l"] == [1]  # the input is not changed


def test_route_merge_respects_vhost_route_name_and_action():
    rc = {"name": "9080", "virtual_hosts": [
        {"name": "v1", "routes": [{"name": "r1", "route": {}}, {"name": "r2", "redirect": {}}]},
        {"name": "v2", "routes": [{"name": "r1", "route": {}}]}]}
    value = {"metadata": {"m": 1}}

    def merged(route_match: dict, vhost: str = "v1", port: int = 9080) -> list[tuple[str, str]]:
        p = patch("MERGE", apply_to="HTTP_ROUTE", value=value, match={"routeConfiguration": {
            "portNumber": port, "vhost": {"name": vhost, "route": route_match}}})
        out = ef.patch_route_configuration(rc, [p], "SIDECAR_OUTBOUND")
        return [(v["name"], r["name"]) for v in out["virtual_hosts"] for r in v["routes"] if "metadata" in r]

    assert merged({"action": "ANY"}) == [("v1", "r1"), ("v1", "r2")]
    assert merged({"action": "ROUTE"}) == [("v1", "r1")]
    assert merged({"name": "r2"}) == [("v1", "r2")]
    assert merged({}, vhost="v2") == [("v2", "r1")]
    assert merged({}, port=80) == []
    assert "metadata" not in rc["virtual_hosts"][0]["routes"][0]  # the input is not changed


def test_context_must_match():
    p = ef.Patch(None, 0, "VIRTUAL_HOST", "GATEWAY", {}, "MERGE", {"x": 1})
    rc = {"name": "9080", "virtual_hosts": [{"name": "v"}]}
    assert ef.patch_route_configuration(rc, [p], "SIDECAR_OUTBOUND") is rc


def envoy_filter(name: str, namespace: str, patches: str, extra: str = "") -> str:
    return (f"---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: {name}, "
            f"namespace: {namespace}}}\nspec:\n{extra}  configPatches:\n{patches}")


def inbound_first(stat_prefix: str) -> str:
    return ("  - applyTo: HTTP_FILTER\n    match: {context: SIDECAR_INBOUND}\n    patch:\n"
            "      operation: INSERT_FIRST\n      value: {name: " + stat_prefix + "}\n")


def inbound_filters(text: str) -> list[str]:
    result = load_text(BASE + text, "ef.yaml")
    rendered = render_sidecar(build_mesh(result.resources), "productpage-v1")
    (inbound,) = [lis for lis in rendered.listeners if lis["name"] == "virtualInbound"]
    hcm = inbound["filter_chains"][0]["filters"][0]["typed_config"]
    return [f["name"] for f in hcm["http_filters"] if f["name"].startswith("f_")]


def test_selection_root_namespace_then_own_and_priority_order():
    text = (envoy_filter("z-root", "istio-system", inbound_first("f_root"))
            + envoy_filter("a-own", "default", inbound_first("f_own"))
            + envoy_filter("early", "default", inbound_first("f_early"), "  priority: -5\n")
            + envoy_filter("other-ns", "elsewhere", inbound_first("f_other"))
            + envoy_filter("not-me", "default", inbound_first("f_notme"),
                           "  workloadSelector: {labels: {app: details}}\n")
            + envoy_filter("me", "istio-system", inbound_first("f_me"),
                           "  workloadSelector: {labels: {app: productpage}}\n"))
    # INSERT_FIRST in application order: the last applied is first. Order: early (-5), then root namespace
    # (me, z-root by name), then own namespace (a-own).
    assert inbound_filters(text) == ["f_own", "f_root", "f_me", "f_early"]


@pytest.mark.parametrize("patches, field", [
    ("  - applyTo: CLUSTER\n    patch: {operation: MERGE, value: {}}\n", "applyTo"),
    ("  - applyTo: HTTP_ROUTE\n    patch: {operation: ADD, value: {}}\n", "patch.operation"),
    ("  - applyTo: HTTP_FILTER\n    match: {proxy: {proxyVersion: x}}\n    patch: {operation: ADD, value: {}}\n",
     "match.proxy"),
    ("  - applyTo: HTTP_FILTER\n    match: {listener: {listenerFilter: x}}\n    patch: {operation: ADD, value: {}}\n",
     "match.listener.listenerFilter"),
])
def test_unsupported_patches_are_named_by_analyze_and_skipped(patches, field):
    text = BASE + envoy_filter("ef", "default", patches)
    findings = [f for f in analyze(load_text(text, "ef.yaml", keep_invalid=True).resources) if f.code == "PYM0011"]
    assert [f.path for f in findings] == [f"spec.configPatches[0].{field}"]
    assert "EnvoyFilter default/ef" in str(findings[0]) and "not applied" in findings[0].message
    rendered = render_sidecar(build_mesh(load_text(text, "ef.yaml").resources), "productpage-v1")
    assert any(f"spec.configPatches[0].{field}" in n for n in rendered.notes)


def test_the_analyzer_is_quiet_on_istios_docs_example():
    from pathlib import Path
    text = BASE + "---\n" + (Path(__file__).resolve().parents[3] / "examples/ratelimit/ratelimit.yaml").read_text()
    assert [f for f in analyze(load_text(text, "ef.yaml", keep_invalid=True).resources)
            if f.code == "PYM0011"] == []


GATEWAY = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pages, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/public]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: productpage}}]
  - route: [{destination: {host: productpage}}]
"""

GATEWAY_FILTER = """\
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager,
                                         subFilter: {name: envoy.filters.http.router}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit,
                       stat_prefix: gw}
  - applyTo: HTTP_ROUTE
    match:
      context: GATEWAY
      routeConfiguration: {portNumber: 8080, vhost: {route: {name: api}}}
    patch:
      operation: MERGE
      value: {route: {rate_limits: [{actions: [{request_headers: {header_name: x-user, descriptor_key: user}}]}]}}
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_OUTBOUND}
    patch: {operation: MERGE, value: {response_headers_to_add: [{header: {key: x-not-on-gateways, value: "1"}}]}}
"""


def test_gateway_context_patches_the_gateway_chain_and_its_routes():
    from control.translate import render_gateway
    text = BASE + GATEWAY + envoy_filter("gw", "istio-system", GATEWAY_FILTER,
                                         "  workloadSelector: {labels: {istio: ingressgateway}}\n")
    rendered = render_gateway(build_mesh(load_text(text, "ef.yaml").resources), "istio-ingressgateway")
    (listener,) = rendered.listeners
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert names(hcm["http_filters"])[-2:] == ["envoy.filters.http.local_ratelimit", "envoy.filters.http.router"]
    (rc,) = rendered.routes
    routes = [r for vh in rc["virtual_hosts"] for r in vh["routes"]]
    assert [r["name"] for r in routes if "rate_limits" in r.get("route", {})] == ["api"]
    assert not any("response_headers_to_add" in vh for vh in rc["virtual_hosts"])  # SIDECAR_OUTBOUND only
