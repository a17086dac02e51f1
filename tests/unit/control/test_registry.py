"""The file registry: services and workloads from manifests, deterministic addresses, endpoint selection."""
from __future__ import annotations

import pytest

from control.istio.load import load_text
from control.registry import FileRegistry, Protocol, Resolution, RegistryError, select_endpoints
from control.registry.model import Workload

MANIFESTS = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports:
  - {name: http-web, port: 9080, targetPort: web}
  - {name: grpc, port: 9090}
  - {port: 7000}
  - {name: metrics, port: 15020, appProtocol: http}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers: [{name: r, image: r, ports: [{name: web, containerPort: 8080}, {containerPort: 9090}]}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: shop}
spec: {address: 10.9.9.9, labels: {app: reviews, version: vm}, ports: {http-web: 9999}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com, "*.cdn.example.com"]
  resolution: NONE
  ports: [{number: 443, name: https, protocol: HTTPS}]
"""


def registry(text: str = MANIFESTS) -> FileRegistry:
    result = load_text(text, "mesh.yaml")
    return FileRegistry.from_resources(result.resources)


def test_kubernetes_service_is_fqdn_with_protocol_from_port_name_or_app_protocol() -> None:
    svc = {s.hostname: s for s in registry().services()}["reviews.shop.svc.cluster.local"]
    assert [(p.port, p.protocol) for p in svc.ports] == [
        (9080, Protocol.HTTP), (9090, Protocol.GRPC), (7000, Protocol.UNSUPPORTED), (15020, Protocol.HTTP)]
    assert svc.selector == {"app": "reviews"} and svc.kind == "Service"


def test_each_deployment_replica_is_a_workload_with_template_labels_and_service_account() -> None:
    reps = [w for w in registry().workloads() if w.owner == "reviews-v1"]
    assert [w.name for w in reps] == ["reviews-v1-0", "reviews-v1-1", "reviews-v1-2"]
    assert all(w.labels == {"app": "reviews", "version": "v1"} for w in reps)
    assert all(w.service_account == "bookinfo-reviews" for w in reps)


def test_replica_addresses_are_deterministic_and_share_a_block() -> None:
    first = [w.address for w in registry().workloads() if w.owner == "reviews-v1"]
    again = [w.address for w in registry().workloads() if w.owner == "reviews-v1"]
    assert first == again
    prefixes = {a.rsplit(".", 1)[0] for a in first}
    assert len(prefixes) == 1 and [a.rsplit(".", 1)[1] for a in first] == ["1", "2", "3"]
    assert first[0].startswith("10.")


def test_address_blocks_of_different_deployments_never_collide() -> None:
    docs = "\n---\n".join(
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{i}}}\n"
        f"spec: {{template: {{metadata: {{labels: {{app: d{i}}}}}}}}}" for i in range(300))
    addresses = [w.address for w in registry(docs).workloads()]
    assert len(addresses) == 300 == len(set(addresses))


def test_named_target_port_resolves_to_the_container_port_and_workload_entry_remaps_by_name() -> None:
    reg = registry()
    svc = {s.hostname: s for s in reg.services()}["reviews.shop.svc.cluster.local"]
    eps = reg.endpoints(svc, svc.ports[0])
    assert sorted((e.workload.name, e.port) for e in eps) == [
        ("reviews-v1-0", 8080), ("reviews-v1-1", 8080), ("reviews-v1-2", 8080), ("vm-1", 9999)]
    grpc = reg.endpoints(svc, svc.ports[1])
    assert {e.port for e in grpc} == {9090}


def test_service_entry_makes_one_service_per_host_keeping_wildcards() -> None:
    hosts = {s.hostname: s for s in registry().services() if s.kind == "ServiceEntry"}
    assert set(hosts) == {"api.example.com", "*.cdn.example.com"}
    assert hosts["api.example.com"].resolution == Resolution.NONE and hosts["api.example.com"].mesh_external


def test_service_without_selector_has_no_endpoints() -> None:
    reg = registry(MANIFESTS.replace("  selector: {app: reviews}\n", "", 1))
    svc = {s.hostname: s for s in reg.services()}["reviews.shop.svc.cluster.local"]
    assert reg.endpoints(svc, svc.ports[0]) == ()


def test_workload_in_another_namespace_is_not_an_endpoint() -> None:
    svc = {s.hostname: s for s in registry().services()}["reviews.shop.svc.cluster.local"]
    stranger = Workload(name="x", namespace="other", labels={"app": "reviews"}, address="10.0.0.1")
    assert select_endpoints(svc, svc.ports[1], [stranger]) == ()


def test_bad_replica_count_names_file_resource_and_field() -> None:
    bad = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: big}\nspec:\n  replicas: 300\n"
           "  template: {metadata: {labels: {app: big}}}\n")
    with pytest.raises(RegistryError, match=r"mesh.yaml:5: Deployment default/big: spec.replicas"):
        registry(bad)
