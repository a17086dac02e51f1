"""The mesh snapshot: Istio host resolution, DestinationRule merging and lookup, Sidecar and policy selection."""
from __future__ import annotations

import pytest

from control.istio.load import load_text
from control.mesh import MeshConfig, build_mesh, export_visible, host_matches, resolve_host, vs_gateways
from control.registry.model import Workload


@pytest.mark.parametrize("host, namespace, expected", [
    ("reviews", "default", "reviews.default.svc.cluster.local"),  # short name: the rule's namespace
    ("reviews", "shop", "reviews.shop.svc.cluster.local"),
    ("reviews.default", "shop", "reviews.default"),  # a dotted name is kept, as in Istio
    ("reviews.default.svc.cluster.local", "shop", "reviews.default.svc.cluster.local"),
    ("*.foo.com", "shop", "*.foo.com"),
    ("*", "shop", "*"),
    ("10.0.0.1", "shop", "10.0.0.1"),
    ("Reviews", "default", "reviews.default.svc.cluster.local"),
])
def test_short_names_resolve_in_the_namespace_of_the_rule(host: str, namespace: str, expected: str) -> None:
    assert resolve_host(host, namespace) == expected


@pytest.mark.parametrize("pattern, host, matches", [
    ("*.foo.com", "a.foo.com", True),
    ("*.foo.com", "a.b.foo.com", True),
    ("*.foo.com", "foo.com", False),
    ("*", "anything.example", True),
    ("a.foo.com", "a.foo.com", True),
    ("a.foo.com", "b.foo.com", False),
    ("a.foo.com", "*.foo.com", False),
])
def test_wildcard_hosts_match_as_in_istio(pattern: str, host: str, matches: bool) -> None:
    assert host_matches(pattern, host) is matches


@pytest.mark.parametrize("export_to, owner, viewer, visible", [
    ((), "a", "b", True), (("*",), "a", "b", True), ((".",), "a", "a", True), ((".",), "a", "b", False),
    (("b",), "a", "b", True), (("c",), "a", "b", False),
])
def test_export_to(export_to, owner, viewer, visible) -> None:
    assert export_visible(export_to, owner, viewer) is visible


CONFIG = """
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: first}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: second}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: other}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: local, namespace: client-ns}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wild, namespace: istio-system}
spec:
  host: "*.example.com"
  trafficPolicy: {tls: {mode: SIMPLE}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [reviews]
  gateways: [mesh, ingress]
  http:
  - match: [{gateways: [istio-system/public]}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: special, namespace: default}
spec:
  workloadSelector: {labels: {app: special}}
  egress: [{hosts: ["*/*"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-only}
spec: {selector: {matchLabels: {app: reviews}}}
---
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: cp, namespace: istio-system}
spec:
  meshConfig:
    outboundTrafficPolicy: {mode: REGISTRY_ONLY}
    defaultHttpRetryPolicy: {attempts: 5}
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    enableTracing: false
    defaultProviders: {tracing: [otel]}
"""


@pytest.fixture(scope="module")
def mesh():
    result = load_text(CONFIG, "mesh.yaml")
    return build_mesh(result.resources)


def test_rules_for_one_host_in_one_namespace_merge_first_policy_wins_subsets_concatenate(mesh) -> None:
    rule = mesh.destination_rule("reviews.default.svc.cluster.local", "default")
    assert rule.names == ("first.default", "second.default")
    assert rule.traffic_policy["loadBalancer"]["simple"] == "ROUND_ROBIN"
    assert [(s["name"], s["labels"]["version"]) for s in rule.subsets] == [("v1", "v1"), ("v2", "v2")]


def test_a_rule_in_the_client_namespace_wins_over_the_service_namespace(mesh) -> None:
    assert mesh.destination_rule("reviews.default.svc.cluster.local", "client-ns").names == ("local.client-ns",)


def test_wildcard_rule_applies_to_hosts_it_covers(mesh) -> None:
    assert mesh.destination_rule("api.example.com", "default").names == ("wild.istio-system",)
    assert mesh.destination_rule("example.com", "default") is None


def test_virtual_services_are_indexed_by_every_gateway_they_bind(mesh) -> None:
    vs = mesh.virtual_services[0]
    assert vs_gateways(vs) == ("mesh", "default/ingress", "istio-system/public")
    assert mesh.virtual_services_for("default/ingress") == (vs,)


def test_sidecar_with_matching_selector_wins_over_namespace_default(mesh) -> None:
    special = Workload(name="s", namespace="default", labels={"app": "special"}, address="1.1.1.1")
    plain = Workload(name="p", namespace="default", labels={"app": "other"}, address="1.1.1.2")
    elsewhere = Workload(name="e", namespace="prod", labels={}, address="1.1.1.3")
    assert mesh.sidecar_for(special).name == "special"
    assert mesh.sidecar_for(plain).name == "default"
    assert mesh.sidecar_for(elsewhere) is None


def test_policies_for_a_workload_include_root_namespace_and_matching_selectors(mesh) -> None:
    reviews = Workload(name="r", namespace="default", labels={"app": "reviews"}, address="1.1.1.1")
    other = Workload(name="o", namespace="default", labels={"app": "other"}, address="1.1.1.2")
    assert [p.name for p in mesh.policies_for("AuthorizationPolicy", reviews)] == ["mesh-wide", "reviews-only"]
    assert [p.name for p in mesh.policies_for("AuthorizationPolicy", other)] == ["mesh-wide"]


def test_mesh_config_from_istio_operator(mesh) -> None:
    assert mesh.config.outbound_traffic_policy == "REGISTRY_ONLY"
    assert mesh.config.default_http_retry_policy == {"attempts": 5}
    assert (mesh.config.access_log_file, mesh.config.access_log_encoding) == ("/dev/stdout", "JSON")
    assert mesh.config.enable_tracing is False and mesh.config.default_providers == {"tracing": ("otel",)}
    assert MeshConfig().outbound_traffic_policy == "ALLOW_ANY" and MeshConfig().connect_timeout == "10s"


def test_snapshot_is_frozen(mesh) -> None:
    with pytest.raises(AttributeError):
        mesh.services = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        mesh.services_by_host["x"] = ()  # type: ignore[index]
