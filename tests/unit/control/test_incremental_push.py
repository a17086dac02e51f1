"""Endpoint-only pushes (istiod's incremental EDS push): a proxy registering or leaving, or a WorkloadEntry
edit, re-renders no listener, route or cluster; only EDS changes, so only EDS is due again. A config change,
or a new service account behind a service (ISTIO_MUTUAL SANs come from it), renders again.

The control plane is the real one (control.serve.ControlPlane) over files in a temporary directory; pushes are
called directly (no sockets, no sleeping)."""
from __future__ import annotations

import json
import textwrap

import pytest

from control.istio.load import load_text
from control.mesh import build_mesh
from control.registry.files import FileRegistry
from control.registry.live import MeshRegistry
from control.serve import ControlPlane
from control.translate import render_sidecar
from control.xds.cache import ORDER, DiscoveryRequest, Payload, XdsCache
from control.xds.generate import SnapshotBuilder, apply_proxy_ports, endpoint_identities
from control.xds.node import NodeError, node_id, parse_node

SERVICES = textwrap.dedent("""
    apiVersion: v1
    kind: Service
    metadata: {name: reviews, namespace: default}
    spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: ratings, namespace: default}
    spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: reviews-v1, namespace: default}
    spec:
      template:
        metadata: {labels: {app: reviews, version: v1}}
        spec: {serviceAccountName: bookinfo-reviews, containers: [{name: app, ports: [{containerPort: 9080}]}]}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: ratings-v1, namespace: default}
    spec:
      template:
        metadata: {labels: {app: ratings, version: v1}}
        spec: {serviceAccountName: bookinfo-ratings, containers: [{name: app, ports: [{containerPort: 9080}]}]}
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: reviews, namespace: default}
    spec:
      host: reviews
      trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
      subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
    """)
VIRTUAL_SERVICE = textwrap.dedent("""
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: reviews, namespace: default}
    spec:
      hosts: [reviews]
      http: [{route: [{destination: {host: reviews, subset: v1}, weight: {w}}, {destination: {host: reviews, subset: v2}, weight: {rest}}]}]
    """)
WORKLOAD_ENTRY = textwrap.dedent("""
    apiVersion: networking.istio.io/v1
    kind: WorkloadEntry
    metadata: {name: reviews-vm, namespace: default}
    spec: {address: {address}, labels: {app: reviews, version: v2}, serviceAccount: bookinfo-reviews}
    """)


def sidecar(name: str, inbound: int, **meta):
    return parse_node({"id": node_id("sidecar", "127.0.0.1", name, "default"),
                       "metadata": {"INSTANCE_IPS": "127.0.0.1", "INBOUND_PORT": inbound, **meta}})


RATINGS = sidecar("ratings-v1-a", 20001)
REVIEWS_A = sidecar("reviews-v1-a", 20002)
REVIEWS_B = sidecar("reviews-v1-b", 20003)


@pytest.fixture
def control(tmp_path):
    (tmp_path / "services.yaml").write_text(SERVICES)
    (tmp_path / "vs.yaml").write_text(VIRTUAL_SERVICE.replace("{w}", "90").replace("{rest}", "10"))
    (tmp_path / "vm.yaml").write_text(WORKLOAD_ENTRY.replace("{address}", "10.0.0.7"))
    cp = ControlPlane(str(tmp_path), clock=lambda: 0.0, nonce_prefix="t-")
    assert cp.reload() and not cp.errors
    return cp, tmp_path


def rewrite(path, text: str) -> None:
    """Write a config file so that the control plane sees a new version (size or mtime changes)."""
    import os
    before = os.stat(path).st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def hashes(cp: ControlPlane, node) -> dict[str, str]:
    return dict(cp.cache.snapshot(node.id).hashes)


def eds_ports(cp: ControlPlane, node, cluster: str) -> list[int]:
    for cla in cp.cache.snapshot(node.id).resources("eds"):
        if cla["cluster_name"] == cluster:
            return sorted(lb["endpoint"]["address"]["socket_address"]["port_value"]
                          for g in cla["endpoints"] for lb in g["lb_endpoints"])
    raise KeyError(cluster)


def ack_everything(cache: XdsCache, proxy_id: str) -> None:
    """The proxy received and applied every type of its current snapshot."""
    for t in ORDER:
        sent = cache.respond(proxy_id, t)
        cache.receive(proxy_id, t, DiscoveryRequest(version_info=sent.version_info, response_nonce=sent.nonce))


REVIEWS_CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"


async def test_a_new_replica_registering_renders_nothing_and_only_eds_is_due_again(control):
    cp, _ = control
    cp.connect(RATINGS)
    cp.connect(REVIEWS_A)
    first = await cp.push(0.0)
    assert first.full and first.renders == 2  # two shapes: ratings, reviews
    before = hashes(cp, RATINGS)
    ack_everything(cp.cache, RATINGS.id)

    cp.connect(REVIEWS_B)  # another replica of reviews-v1: same labels and service account
    second = await cp.push(1.0)
    assert not second.full and second.renders == 0
    after = hashes(cp, RATINGS)
    assert {t: after[t] == before[t] for t in after} == {"cds": True, "eds": False, "lds": True, "rds": True}
    assert eds_ports(cp, RATINGS, REVIEWS_CLUSTER) == [9080, 20002, 20003]  # + the WorkloadEntry's port
    assert [t.short for t in ORDER if cp.cache.ready(RATINGS.id, t)] == ["eds"]


async def test_a_proxy_leaving_is_endpoint_only(control):
    cp, _ = control
    for node in (RATINGS, REVIEWS_A, REVIEWS_B):
        cp.connect(node)
    await cp.push(0.0)
    cp.live.remove(REVIEWS_B.id)
    result = await cp.push(1.0)
    assert (result.full, result.renders) == (False, 0)
    assert eds_ports(cp, RATINGS, REVIEWS_CLUSTER) == [9080, 20002]


async def test_a_workload_entry_edit_is_endpoint_only_and_a_virtual_service_edit_renders_again(control):
    cp, config = control
    cp.connect(RATINGS)
    await cp.push(0.0)
    before = hashes(cp, RATINGS)

    rewrite(config / "vm.yaml", WORKLOAD_ENTRY.replace("{address}", "10.0.0.8"))
    assert cp.reload()
    result = await cp.push(1.0)
    assert (result.full, result.renders) == (False, 0) and result.assignments > 0
    after = hashes(cp, RATINGS)
    assert [t for t in after if after[t] != before[t]] == ["eds"]
    clas = {c["cluster_name"]: c for c in cp.cache.snapshot(RATINGS.id).resources("eds")}
    assert "10.0.0.8" in str(clas["outbound|9080|v2|reviews.default.svc.cluster.local"])

    rewrite(config / "vs.yaml", VIRTUAL_SERVICE.replace("{w}", "50").replace("{rest}", "50"))
    assert cp.reload()
    result = await cp.push(2.0)
    assert result.full and result.renders == 1
    assert result.assignments == 0  # no endpoint moved: EDS comes from the last push's assignments
    again = hashes(cp, RATINGS)
    assert again["rds"] != after["rds"] and again["cds"] == after["cds"] and again["eds"] == after["eds"]


async def test_a_new_service_account_behind_a_service_renders_again_so_istio_mutual_sans_follow(control):
    cp, _ = control
    cp.connect(RATINGS)
    cp.connect(REVIEWS_A)
    await cp.push(0.0)
    newcomer = sidecar("reviews-v2-a", 20004, LABELS={"app": "reviews", "version": "v2"},
                       SERVICE_ACCOUNT="reviews-canary")
    cp.connect(newcomer)
    result = await cp.push(1.0)
    assert result.full
    clusters = {c["name"]: c for c in cp.cache.snapshot(RATINGS.id).resources("cds")}
    sans = clusters[REVIEWS_CLUSTER]["transport_socket"]["typed_config"]["common_tls_context"][
        "combined_validation_context"]["default_validation_context"]["match_subject_alt_names"]
    assert {"exact": "spiffe://cluster.local/ns/default/sa/reviews-canary"} in sans  # istiod StringToExactMatch


def test_eds_joined_from_shared_assignments_is_byte_identical_to_a_full_render():
    resources = load_text(SERVICES + "---\n" + WORKLOAD_ENTRY.replace("{address}", "10.0.0.7"), "m.yaml").resources
    registry = MeshRegistry(FileRegistry.from_resources(resources), (RATINGS, REVIEWS_A, REVIEWS_B))
    mesh = build_mesh(resources, registry=registry)
    builder = SnapshotBuilder(mesh, registry)
    for node in (RATINGS, REVIEWS_A):
        full = render_sidecar(mesh, registry.workload_of(node.id))
        generated = builder.generate(node).resources
        assert generated["eds"].body == Payload.of(full.endpoints).body
        assert generated["cds"].body == Payload.of(full.clusters).body
        assert generated["rds"].body == Payload.of(full.routes).body
    assert builder.renders == 2


def test_a_one_app_port_sidecar_gets_the_shared_clusters_with_its_inbound_ones_moved_to_its_app_port():
    resources = load_text(SERVICES, "m.yaml").resources
    node = sidecar("reviews-v1-c", 20005, POD_PORTS=[{"name": "http", "containerPort": 19080}])
    registry = MeshRegistry(FileRegistry.from_resources(resources), (node, RATINGS))
    mesh = build_mesh(resources, registry=registry)
    clusters = SnapshotBuilder(mesh, registry).generate(node).resources["cds"]
    full = render_sidecar(mesh, registry.workload_of(node.id))
    expected = apply_proxy_ports(full, node)[1]
    assert clusters.body == Payload.of(expected).body
    inbound = next(c for c in json.loads(clusters.body) if c["name"].startswith("inbound|"))
    assert inbound["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"]["port_value"] == 19080


def test_endpoint_identities_ignore_addresses_and_ports_but_not_service_accounts():
    resources = load_text(SERVICES, "m.yaml").resources
    files = FileRegistry.from_resources(resources)

    def digest(*nodes):
        return endpoint_identities(build_mesh(resources, registry=MeshRegistry(files, nodes)))
    assert digest(REVIEWS_A) == digest(REVIEWS_A, REVIEWS_B) == digest(REVIEWS_B)
    assert digest(REVIEWS_A) != digest(REVIEWS_A, sidecar("reviews-x", 20009, LABELS={"app": "reviews"}, SERVICE_ACCOUNT="other"))


def test_bind_address_moves_every_wildcard_listener_of_sidecars_and_gateways_and_keeps_their_names():
    """BIND_ADDRESS (pyproxy sidecar|gateway --bind): `make demo` binds 127.0.0.1, not istiod's 0.0.0.0."""
    gateway_yaml = textwrap.dedent("""
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: default}
        spec:
          selector: {istio: ingressgateway}
          servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
        """)
    resources = load_text(SERVICES + "---\n" + gateway_yaml, "m.yaml").resources
    node = sidecar("reviews-v1-c", 20005, BIND_ADDRESS="127.0.0.1")
    plain = sidecar("reviews-v1-d", 20006)
    gw = parse_node({"id": node_id("router", "127.0.0.1", "gw", "istio-system"),
                     "metadata": {"LABELS": {"istio": "ingressgateway"}, "BIND_ADDRESS": "127.0.0.1"}})
    registry = MeshRegistry(FileRegistry.from_resources(resources), (node, plain, gw, RATINGS))
    builder = SnapshotBuilder(build_mesh(resources, registry=registry), registry)

    def bound(n):
        lds = builder.generate(n).resources["lds"]
        lds = json.loads(lds.body) if isinstance(lds, Payload) else lds
        return {lis["name"]: lis["address"]["socket_address"]["address"] for lis in lds}

    mine, theirs, gateway = bound(node), bound(plain), bound(gw)
    assert mine.keys() == theirs.keys() and "0.0.0.0_15001" in mine
    assert set(mine.values()) == {"127.0.0.1"}
    assert set(theirs.values()) == {"0.0.0.0"}  # without it: what istiod binds
    assert gateway == {"0.0.0.0_8080": "127.0.0.1"}


def test_bind_address_must_be_an_ip():
    with pytest.raises(NodeError, match="BIND_ADDRESS"):
        sidecar("x", 20007, BIND_ADDRESS="localhost")
