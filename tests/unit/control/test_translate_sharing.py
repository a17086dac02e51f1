"""What renders of one mesh snapshot share (control.mesh `memo`, control.translate.clusters
`shared_outbound_cluster`, control.xds.cache `Payload.join`), and that sharing never changes an output."""
from __future__ import annotations

import json
import textwrap

from control.istio.load import load_text
from control.mesh import build_mesh, resolve_host
from control.translate import Extensions, Options, render_sidecar
from control.xds.cache import Payload, canonical_json

MESH = textwrap.dedent("""
    apiVersion: v1
    kind: Service
    metadata: {name: reviews, namespace: default}
    spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: reviews-v1, namespace: default}
    spec:
      template:
        metadata: {labels: {app: reviews, version: v1}}
        spec: {containers: [{name: app, ports: [{containerPort: 9080}]}]}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: ratings-v1, namespace: default}
    spec:
      template:
        metadata: {labels: {app: ratings, version: v1}}
        spec: {containers: [{name: app, ports: [{containerPort: 9080}]}]}
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: reviews, namespace: default}
    spec:
      host: reviews
      trafficPolicy: {tunnel: {protocol: CONNECT, targetHost: egress, targetPort: 8080}}
      subsets: [{name: v1, labels: {version: v1}}]
    """)
REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"


def mesh():
    result = load_text(MESH, "mesh.yaml")
    assert not [f for f in result.findings if f.level >= 2], result.findings
    return build_mesh(result.resources)


def clusters(rendered) -> dict[str, dict]:
    return {c["name"]: c for c in rendered.clusters}


def test_proxies_that_see_a_service_under_the_same_rule_share_its_cluster_and_each_gets_its_notes():
    m = mesh()
    ratings, reviews = render_sidecar(m, "ratings-v1"), render_sidecar(m, "reviews-v1")
    assert clusters(ratings)[REVIEWS] is clusters(reviews)[REVIEWS]
    for rendered in (ratings, reviews):
        assert any("spec.trafficPolicy.tunnel" in n and "not translated yet" in n for n in rendered.notes)


def test_proxies_that_see_a_service_under_the_same_rule_share_its_virtual_hosts():
    """The virtual host of a service without VirtualService (its default routes), and its copy in the merged
    `http_proxy` route configuration, are one dict for every proxy that sees the service under the same rule:
    built once per snapshot, and serialized once."""
    m = mesh()
    ratings, reviews = render_sidecar(m, "ratings-v1"), render_sidecar(m, "reviews-v1")

    def vhost(rendered, route_config: str) -> dict:
        rc = next(rc for rc in rendered.routes if rc["name"] == route_config)
        return next(vh for vh in rc["virtual_hosts"] if vh["name"].startswith("reviews.default.svc.cluster.local"))
    for route_config in ("9080", "http_proxy"):
        assert vhost(ratings, route_config) is vhost(reviews, route_config), route_config
        assert vhost(ratings, route_config)["routes"] is vhost(reviews, route_config)["routes"], route_config
    assert vhost(ratings, "9080") is not vhost(ratings, "http_proxy")  # (their domains differ)


def test_a_cluster_contributor_gets_a_cluster_of_its_own_proxy():
    def tag(proxy, cluster):
        cluster.setdefault("metadata", {}).setdefault("filter_metadata", {})["test"] = {"by": proxy.workload.name}
        return cluster
    options = Options(extensions=Extensions(cluster_contributors=(tag,)))
    m = mesh()
    ratings = clusters(render_sidecar(m, "ratings-v1", options=options))[REVIEWS]
    reviews = clusters(render_sidecar(m, "reviews-v1", options=options))[REVIEWS]
    assert ratings is not reviews
    assert ratings["metadata"]["filter_metadata"]["test"] == {"by": "ratings-v1-0"}
    assert reviews["metadata"]["filter_metadata"]["test"] == {"by": "reviews-v1-0"}


def test_a_later_snapshot_renders_the_same_bytes_as_a_fresh_one():
    first, second = mesh(), mesh()
    render_sidecar(first, "reviews-v1")  # fills first's memo
    assert Payload.of(render_sidecar(first, "ratings-v1").clusters) == \
        Payload.of(render_sidecar(second, "ratings-v1").clusters)


def test_a_payload_joined_from_serialized_resources_is_the_payload_of_the_list():
    items = [{"b": 1, "a": [1, {"z": None, "y": "é"}]}, {"name": "x"}]
    assert Payload.join([canonical_json(i) for i in items]) == Payload.of(items)
    assert Payload.join([]) == Payload.of([])


def test_short_names_resolve_and_addresses_are_kept():
    assert resolve_host("reviews", "default") == "reviews.default.svc.cluster.local"
    assert resolve_host("Reviews.default", "x") == "reviews.default"
    for kept in ("::1", "fe80::1", "10.0.0.1", "*", "*.foo.com"):
        assert resolve_host(kept, "default") == kept


ROUTING = textwrap.dedent("""
    apiVersion: v1
    kind: Service
    metadata: {name: reviews, namespace: default}
    spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: ratings-v1, namespace: default}
    spec:
      template:
        metadata: {labels: {app: ratings}}
        spec: {containers: [{name: app, ports: [{containerPort: 9080}]}]}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: details-v1, namespace: default}
    spec:
      template:
        metadata: {labels: {app: details}}
        spec: {containers: [{name: app, ports: [{containerPort: 9080}]}]}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: client, namespace: other}
    spec:
      template:
        metadata: {labels: {app: client}}
        spec: {containers: [{name: app, ports: [{containerPort: 8000}]}]}
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: reviews, namespace: default}
    spec:
      host: reviews
      trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: reviews-from-other, namespace: other}
    spec:
      host: reviews.default.svc.cluster.local
      trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-other}}}
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: reviews, namespace: default}
    spec:
      hosts: [reviews]
      http: [{route: [{destination: {host: reviews}}], timeout: 2s}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: ratings, namespace: default}
    spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: ratings, namespace: default}
    spec:
      hosts: [ratings]
      http:
      - match: [{sourceLabels: {app: details}, headers: {x-test: {exact: "1"}}}]
        route: [{destination: {host: ratings}}]
        timeout: 3s
      - route: [{destination: {host: ratings}}]
    """)


def routes_of(rendered, host: str) -> list[dict]:
    port = next(rc for rc in rendered.routes if rc["name"] == "9080")
    return next(vh for vh in port["virtual_hosts"] if vh["name"].startswith(host + "."))["routes"]


def test_virtual_service_routes_follow_each_proxys_own_destination_rule_and_source_labels():
    result = load_text(ROUTING, "routing.yaml")
    assert not [f for f in result.findings if f.level >= 2], result.findings
    m = build_mesh(result.resources)
    ratings, details, client = (render_sidecar(m, n) for n in ("ratings-v1", "details-v1", "client"))
    assert routes_of(ratings, "reviews") is routes_of(details, "reviews")  # same namespace, same rule: shared
    assert routes_of(ratings, "reviews")[0]["route"]["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    assert routes_of(client, "reviews")[0]["route"]["hash_policy"] == [{"header": {"header_name": "x-other"}}]
    assert [r["route"]["timeout"] for r in routes_of(details, "ratings")] == ["3s", "0s"]  # sourceLabels match
    assert [r["route"]["timeout"] for r in routes_of(ratings, "ratings")] == ["0s"]
    fresh = render_sidecar(build_mesh(result.resources), "client")
    assert fresh.routes == client.routes  # what a proxy gets does not depend on who was rendered before it


def test_route_configurations_spliced_from_serialized_virtual_hosts_are_byte_identical():
    from pathlib import Path

    from control.xds.cache import canonical_json_spliced
    golden = Path(__file__).resolve().parents[2] / "golden"
    configs = [rc for path in sorted(golden.rglob("*.json")) for rc in json.loads(path.read_text()).get("routes", ())]
    assert len(configs) > 20
    for rc in configs:
        parts = [canonical_json(vh) for vh in rc["virtual_hosts"]]
        assert canonical_json_spliced(rc, "virtual_hosts", parts) == canonical_json(rc)
    odd = {"zzz": 1, "virtual_hosts": [{"a": 1}]}  # a key after it: serialized whole, still the same bytes
    assert canonical_json_spliced(odd, "virtual_hosts", [b'{"a":1}']) == canonical_json(odd)
    only = {"virtual_hosts": []}
    assert canonical_json_spliced(only, "virtual_hosts", []) == canonical_json(only)
