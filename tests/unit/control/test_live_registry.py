"""Automatic service registration (control.registry.live): proxies register from their node metadata, leave
after a grace period (time passed in, no sleeping), and merge with the file registry into EDS."""
from __future__ import annotations

import textwrap

from control.istio.load import load_text
from control.registry.files import FileRegistry
from control.registry.live import LiveRegistry, MeshRegistry
from control.xds.node import node_id, parse_node

CONFIG = textwrap.dedent("""
    apiVersion: v1
    kind: Service
    metadata: {name: reviews, namespace: default}
    spec:
      selector: {app: reviews}
      ports: [{name: http, port: 9080, targetPort: http-web}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: ingress, namespace: istio-system}
    spec:
      selector: {istio: ingressgateway}
      ports: [{name: http, port: 80, targetPort: 8080}]
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: reviews-v1, namespace: default}
    spec:
      template:
        metadata: {labels: {app: reviews, version: v1}}
        spec:
          serviceAccountName: bookinfo-reviews
          containers: [{name: app, ports: [{name: http-web, containerPort: 9080}]}]
    ---
    apiVersion: networking.istio.io/v1
    kind: WorkloadEntry
    metadata: {name: reviews-vm, namespace: default}
    spec: {address: 10.9.9.9, labels: {app: reviews, version: vm}, ports: {http: 9999}}
    """)


def files() -> FileRegistry:
    result = load_text(CONFIG, "mesh.yaml")
    assert not [f for f in result.findings if f.level >= 2], result.findings
    return FileRegistry.from_resources(result.resources)


def sidecar(name="reviews-v1-7d9f", ip="127.0.0.1", **meta):
    return parse_node({"id": node_id("sidecar", ip, name, "default"), "metadata": meta})


def test_connect_registers_once_and_metadata_changes_count_as_changes():
    live = LiveRegistry(grace=10)
    node = sidecar(LABELS={"app": "reviews"})
    assert live.connect(node, now=0) is True
    assert live.connect(node, now=1) is False  # same proxy, same metadata
    assert live.connect(sidecar(LABELS={"app": "reviews", "version": "v2"}), now=2) is True
    assert live.generation == 2 and len(live.workloads()) == 1
    assert live.workloads()[0].labels == {"app": "reviews", "version": "v2"}


def test_a_proxy_leaves_grace_seconds_after_its_last_request_ended():
    live = LiveRegistry(grace=10)
    node = sidecar()
    live.connect(node, now=0)
    live.connect(node, now=1)  # two requests in flight (two types long-polling)
    live.release(node.id, now=2)
    assert live.expire(now=100) == ()  # one request still in flight: connected
    live.release(node.id, now=3)
    assert not live.connected(node.id)
    assert live.expire(now=12.9) == ()
    assert live.expire(now=13) == (node,)
    assert live.nodes() == () and live.generation == 2


def test_missing_metadata_comes_from_the_file_deployment_the_pod_belongs_to():
    reg = MeshRegistry(files(), [sidecar()])
    w = reg.workload_of(sidecar().id)
    assert w.kind == "Proxy" and w.owner == "reviews-v1" and w.address == "127.0.0.1"
    assert dict(w.labels) == {"app": "reviews", "version": "v1"}
    assert w.service_account == "bookinfo-reviews"


def test_eds_lists_live_sidecars_at_their_inbound_port_and_workload_entries_not_file_deployments():
    reg = MeshRegistry(files(), [sidecar(INBOUND_PORT=15106)])
    svc = next(s for s in reg.services() if s.name == "reviews")
    eps = {(e.address, e.port, e.workload.kind) for e in reg.endpoints(svc, svc.ports[0])}
    assert eps == {("127.0.0.1", 15106, "Proxy"), ("10.9.9.9", 9999, "WorkloadEntry")}


def test_a_one_port_sidecar_serves_a_named_target_port_on_its_app_port():
    node = sidecar(POD_PORTS=[{"containerPort": 9181}], LABELS={"app": "reviews"})
    reg = MeshRegistry(files(), [node])
    w = reg.workload_of(node.id)
    assert w.container_port("http-web") == 9181  # targetPort http-web -> the one app port
    svc = next(s for s in reg.services() if s.name == "reviews")
    assert [(e.address, e.port) for e in reg.endpoints(svc, svc.ports[0]) if e.workload.kind == "Proxy"] == [
        ("127.0.0.1", 15006)]


def test_a_several_port_sidecar_is_an_endpoint_only_where_the_target_port_resolves():
    node = sidecar(POD_PORTS=[{"name": "a", "containerPort": 1}, {"name": "b", "containerPort": 2}],
                   LABELS={"app": "reviews"})
    reg = MeshRegistry(files(), [node])
    svc = next(s for s in reg.services() if s.name == "reviews")
    assert [e for e in reg.endpoints(svc, svc.ports[0]) if e.workload.kind == "Proxy"] == []


def test_a_gateway_is_an_endpoint_on_its_own_port():
    gw = parse_node({"id": node_id("router", "127.0.0.2", "istio-ingressgateway", "istio-system"),
                     "metadata": {"LABELS": {"istio": "ingressgateway"}}})
    reg = MeshRegistry(files(), [gw])
    svc = next(s for s in reg.services() if s.name == "ingress")
    assert [(e.address, e.port) for e in reg.endpoints(svc, svc.ports[0])] == [("127.0.0.2", 8080)]


def test_restored_proxies_count_from_the_restart_and_leave_if_they_do_not_come_back():
    live = LiveRegistry(grace=10)
    back, lost = sidecar("a"), sidecar("b")
    assert live.restore([back, lost], now=100) == 2
    assert not live.connected(back.id)
    live.connect(back, now=105)
    assert live.expire(now=110) == (lost,)
    assert [n.name for n in live.nodes()] == ["a"]
