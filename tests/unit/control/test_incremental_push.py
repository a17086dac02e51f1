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


# --- what an endpoint-only push recomputes ---------------------------------------------------------------

def from_nothing(cp: ControlPlane, node) -> dict[str, bytes]:
    """The node's payloads rendered afresh (new mesh, no table or shape kept from earlier pushes)."""
    registry = MeshRegistry(cp._files, cp.live.nodes(), cp.live.members())
    builder = SnapshotBuilder(build_mesh(cp.resources, registry=registry), registry)
    snapshot, _notes = builder.snapshot(node)
    return {t: p.body for t, p in snapshot.payloads.items()}


async def registered(cp: ControlPlane, *nodes) -> None:
    """`nodes` registered and pushed."""
    for node in nodes:
        cp.connect(node)
    await cp.push(0.0)


def payload_bodies(cp: ControlPlane, node) -> dict[str, bytes]:
    return {t: p.body for t, p in cp.cache.snapshot(node.id).payloads.items()}


REVIEWS_CLUSTERS = {f"outbound|9080|{s}|reviews.default.svc.cluster.local" for s in ("", "v1", "v2")}


async def test_a_replica_registering_recomputes_only_the_assignments_of_the_services_it_joins(control):
    cp, _ = control
    await registered(cp, RATINGS, REVIEWS_A)
    kept = {c["cluster_name"]: c for c in cp.cache.snapshot(RATINGS.id).resources("eds")}

    cp.connect(REVIEWS_B)
    result = await cp.push(1.0)
    assert not result.full
    assert cp._endpoints.moved == {("reviews.default.svc.cluster.local", "default")}
    assert result.assignments == len(REVIEWS_CLUSTERS)  # reviews and its two subsets; ratings' are kept
    now = {c["cluster_name"]: c for c in cp.cache.snapshot(RATINGS.id).resources("eds")}
    assert {n for n in now if now[n] != kept[n]} == {"outbound|9080||reviews.default.svc.cluster.local",
                                                      "outbound|9080|v1|reviews.default.svc.cluster.local"}
    for node in (RATINGS, REVIEWS_A, REVIEWS_B):  # the same bytes as computed from nothing
        assert payload_bodies(cp, node) == from_nothing(cp, node)


async def test_a_replica_relabelled_moves_the_services_of_its_old_and_new_labels(control):
    cp, _ = control
    await registered(cp, RATINGS, REVIEWS_A, REVIEWS_B)
    relabelled = sidecar("reviews-v1-b", 20003, LABELS={"app": "ratings", "version": "v1"})
    cp.connect(relabelled)  # same id, other labels: it leaves reviews and joins ratings
    result = await cp.push(1.0)
    assert result.full  # the identities behind both services changed (their labels are in SANs' digest)
    assert cp._endpoints.moved == {("reviews.default.svc.cluster.local", "default"),
                                   ("ratings.default.svc.cluster.local", "default")}
    assert eds_ports(cp, RATINGS, "outbound|9080||ratings.default.svc.cluster.local") == [20001, 20003]
    for node in (RATINGS, REVIEWS_A, relabelled):
        assert payload_bodies(cp, node) == from_nothing(cp, node)


async def test_a_proxy_leaving_recomputes_its_services_only_and_a_file_change_recomputes_all(control):
    cp, config = control
    await registered(cp, RATINGS, REVIEWS_A, REVIEWS_B)
    cp.live.remove(RATINGS.id)
    result = await cp.push(1.0)
    assert cp._endpoints.moved == {("ratings.default.svc.cluster.local", "default")}
    assert result.assignments == 1  # ratings has no subsets
    assert payload_bodies(cp, REVIEWS_A) == from_nothing(cp, REVIEWS_A)

    rewrite(config / "vm.yaml", WORKLOAD_ENTRY.replace("{address}", "10.0.0.9"))  # a files generation
    assert cp.reload()
    result = await cp.push(2.0)
    assert cp._endpoints.moved is None and result.assignments == 4  # every assignment of the new table
    assert payload_bodies(cp, REVIEWS_A) == from_nothing(cp, REVIEWS_A)


def test_moved_services_are_those_selecting_a_proxy_that_came_left_or_changed_in_their_namespace():
    from control.xds.generate import moved_services
    resources = load_text(SERVICES + textwrap.dedent("""
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: reviews, namespace: other}
        spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
        """), "m.yaml").resources
    files = FileRegistry.from_resources(resources)

    def sources(*nodes):
        return MeshRegistry(files, nodes).endpoint_sources()
    services = files.services()
    reviews = ("reviews.default.svc.cluster.local", "default")
    assert moved_services(services, sources(RATINGS, REVIEWS_A), sources(RATINGS, REVIEWS_A)) == frozenset()
    assert moved_services(services, sources(RATINGS), sources(RATINGS, REVIEWS_A)) == {reviews}
    assert moved_services(services, sources(RATINGS, REVIEWS_A), sources(RATINGS)) == {reviews}
    moved_port = sidecar("reviews-v1-a", 20099)  # same proxy, another inbound port: its address moved
    assert moved_services(services, sources(REVIEWS_A), sources(moved_port)) == {reviews}
    assert sources(REVIEWS_A) != sources(moved_port)


def test_clusters_under_destination_rules_of_different_tls_modes_do_not_share_an_assignment():
    """A proxy sees the DestinationRule of its own namespace first: one setting tls DISABLE makes its
    ClusterLoadAssignment for the host carry no tlsMode, while other namespaces' proxies (ISTIO_MUTUAL rule)
    get tlsMode istio. Shared assignments are keyed by the tls mode, so each gets its own."""
    other_rule = textwrap.dedent("""
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews-plain, namespace: other}
        spec: {host: reviews.default.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}
        """)
    resources = load_text(SERVICES + other_rule, "m.yaml").resources
    mtls = sidecar("reviews-v1-m", 20010, LABELS={"app": "reviews", "version": "v1",
                                                  "security.istio.io/tlsMode": "istio"})
    outsider = parse_node({"id": node_id("sidecar", "127.0.0.1", "client-0", "other"),
                           "metadata": {"INSTANCE_IPS": "127.0.0.1", "INBOUND_PORT": 20011, "NAMESPACE": "other"}})
    registry = MeshRegistry(FileRegistry.from_resources(resources), (RATINGS, mtls, outsider))
    mesh = build_mesh(resources, registry=registry)
    builder = SnapshotBuilder(mesh, registry)
    bodies = {}
    for node in (RATINGS, outsider):
        full = render_sidecar(mesh, registry.workload_of(node.id), endpoints=True)
        bodies[node.id] = builder.generate(node).resources["eds"].body
        assert bodies[node.id] == Payload.of(full.endpoints).body
    assert bodies[RATINGS.id] != bodies[outsider.id]


async def test_an_endpoint_only_push_keeps_each_proxys_listeners_and_a_new_port_moves_them(control):
    cp, _ = control
    await registered(cp, RATINGS, REVIEWS_A)
    lds = cp.cache.snapshot(RATINGS.id).payloads["lds"]
    cp.connect(REVIEWS_B)
    await cp.push(1.0)
    assert cp.cache.snapshot(RATINGS.id).payloads["lds"] is lds  # not re-applied nor serialized again

    moved = sidecar("ratings-v1-a", 20001, OUTBOUND_PORT=31001)
    cp.connect(moved)  # the same proxy with another outbound port
    await cp.push(2.0)
    names = [lis["name"] for lis in cp.cache.snapshot(RATINGS.id).resources("lds")]
    assert "0.0.0.0_31001" in names
    assert payload_bodies(cp, moved) == from_nothing(cp, moved)


async def test_versions_carried_with_shared_pieces_are_the_hashes_delta_xds_would_compute(control):
    """CDS and EDS payloads bring each resource's delta version, hashed once per shared piece; they must be
    what control.xds.delta.PayloadIndex computes from the bytes (a wrong one would make delta skip a change)."""
    from control.xds.delta import PayloadIndex, resource_versions
    cp, _ = control
    await registered(cp, RATINGS, REVIEWS_A)
    cp.connect(REVIEWS_B)
    await cp.push(1.0)
    for short in ("cds", "eds"):
        carried = cp.cache.snapshot(RATINGS.id).payloads[short]
        assert carried.versions  # they came with the pieces
        assert PayloadIndex()(carried).versions == resource_versions(json.loads(carried.body))  # from the dicts


async def test_each_proxy_gets_its_snapshot_as_soon_as_it_is_computed_not_after_the_whole_push(control):
    """The render runs in a worker thread; each proxy's snapshot is handed to the loop when computed, so the
    first proxies' responses go out while later shapes render. Held after the first proxy: it is installed and
    woken, the push is not over, the next proxy has nothing yet."""
    import asyncio
    import threading
    cp, _ = control
    for node in (RATINGS, REVIEWS_A):
        cp.connect(node)
    render, gate, held = cp._render, threading.Event(), threading.Event()

    def holding(inputs, deliver):
        def hook(item):
            deliver(item)
            if not held.is_set():
                held.set()
                gate.wait(10)
        return render(inputs, hook)
    cp._render = holding
    push = asyncio.create_task(cp.push(0.0))
    try:
        first, second = sorted((RATINGS, REVIEWS_A), key=lambda n: n.id)
        for _ in range(1000):  # bounded: 10 s at most
            if cp.cache.snapshot(first.id) is not None:
                break
            await asyncio.sleep(0.01)
        assert cp.cache.snapshot(first.id) is not None and cp.cache.ready(first.id, ORDER[0])
        assert not push.done() and cp.cache.snapshot(second.id) is None
    finally:
        gate.set()
    result = await push
    assert result.changed == 2 and cp.cache.snapshot(second.id) is not None


def test_a_snapshot_handed_over_after_the_loop_closed_is_dropped_not_raised_in_the_worker_thread():
    import asyncio
    from control.serve import hand_over
    got = []
    loop = asyncio.new_event_loop()
    hand_over(loop, got.append)("a")
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    hand_over(loop, got.append)("b")  # closed: call_soon_threadsafe raises RuntimeError, swallowed
    assert got == ["a"]
