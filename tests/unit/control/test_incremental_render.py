"""A VirtualService edit re-renders only what it changes (control.mesh.MeshSnapshot.with_virtual_services,
control.translate.kept_across_virtual_service_edit): the last push's mesh is carried over with every cached
value that reads no VirtualService, so the routes of the VirtualServices not edited, the virtual hosts holding
them, the clusters, and their serialized bytes come from the last push. What every proxy receives must be the
very bytes a render from nothing gives: checked after edits, an addition, a deletion, a gateway binding.

The control plane is the real one over a copy of examples/mesh (bookinfo: sidecars, an ingress gateway, an
egress ServiceEntry); pushes are called directly (no sockets, no sleeping)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from control.mesh import build_mesh
from control.registry.live import MeshRegistry
from control.serve import ControlPlane
from control.translate import clusters, routes
from control.xds.generate import SnapshotBuilder
from control.xds.node import node_id, parse_node

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "mesh"


def sidecar(name: str, labels: dict, port: int):
    return parse_node({"id": node_id("sidecar", "127.0.0.1", f"{name}-0", "default"),
                       "metadata": {"INSTANCE_IPS": "127.0.0.1", "INBOUND_PORT": port, "OUTBOUND_PORT": port + 1,
                                    "LABELS": labels, "NAME": f"{name}-0"}})


NODES = (
    sidecar("productpage-v1", {"app": "productpage", "version": "v1"}, 21000),
    sidecar("reviews-v1", {"app": "reviews", "version": "v1"}, 21010),
    sidecar("ratings-v1", {"app": "ratings", "version": "v1"}, 21020),
    parse_node({"id": node_id("router", "127.0.0.1", "istio-ingressgateway", "istio-system"),
                "metadata": {"INSTANCE_IPS": "127.0.0.1", "NAMESPACE": "istio-system",
                             "LABELS": {"istio": "ingressgateway", "app": "istio-ingressgateway"}}}),
)
CANARY = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: details, namespace: default}}
spec:
  hosts: [details]
  http:
  - route:
    - {{destination: {{host: details}}, weight: {a}}}
    - {{destination: {{host: ratings}}, weight: {b}}}
"""


def rewrite(path: Path, text: str) -> None:
    """Write a config file so that the control plane sees a new version (its mtime moves on)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


@pytest.fixture
async def control(tmp_path):
    for f in EXAMPLES.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "canary.yaml").write_text(CANARY.format(a=90, b=10))
    cp = ControlPlane(str(tmp_path), clock=lambda: 0.0, nonce_prefix="t-")
    assert cp.reload() and not cp.errors
    for node in NODES:
        cp.connect(node)
    await cp.push(0.0)
    return cp, tmp_path


def from_nothing(cp: ControlPlane) -> dict[str, dict[str, bytes]]:
    """Every node's payloads rendered afresh: a new mesh, no shape, table or serialized piece kept."""
    registry = MeshRegistry(cp._files, cp.live.nodes(), cp.live.members())
    builder = SnapshotBuilder(build_mesh(cp.resources, registry=registry), registry)
    return {n.id: {t: p.body for t, p in builder.snapshot(n)[0].payloads.items()} for n in NODES}


def served(cp: ControlPlane) -> dict[str, dict[str, bytes]]:
    return {n.id: {t: p.body for t, p in cp.cache.snapshot(n.id).payloads.items()} for n in NODES}


def recording(monkeypatch, module, name: str, what) -> list:
    """Replace module.name by a wrapper that records what(*args) of each call."""
    calls: list = []
    real = getattr(module, name)

    def wrapper(*args):
        calls.append(what(*args))
        return real(*args)
    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.fixture
def built_routes(monkeypatch) -> list[str]:
    """Names of the VirtualServices whose routes are built (control.translate.routes.http_routes calls)."""
    return recording(monkeypatch, routes, "http_routes", lambda _ctx, vs: vs.name)


@pytest.fixture
def built(monkeypatch) -> dict[str, list[str]]:
    """Names of the virtual hosts and outbound clusters built (routes._vhost, clusters.build_outbound_cluster)."""
    return {"vhosts": recording(monkeypatch, routes, "_vhost", lambda name, _d, _r: name),
            "clusters": recording(monkeypatch, clusters, "build_outbound_cluster", lambda _p, spec: spec.name)}


async def test_an_edit_rebuilds_only_the_edited_virtual_services_routes_and_serves_a_full_renders_bytes(
        control, built_routes, built):
    cp, config = control
    before = {n.id: dict(cp.cache.snapshot(n.id).payloads) for n in NODES}
    shapes = dict(cp._shapes.shapes)
    rewrite(config / "canary.yaml", CANARY.format(a=50, b=50))
    assert cp.reload()
    result = await cp.push(1.0)
    assert result.full and result.renders == 4
    for n in NODES[:3]:  # the sidecars' clusters, endpoints, listeners came out the same: the last push's payloads
        after = cp.cache.snapshot(n.id).payloads
        assert [t for t in ("cds", "eds", "lds", "rds") if after[t] is before[n.id][t]] == ["cds", "eds", "lds"]
    assert cp.cache.snapshot(NODES[3].id).payloads == before[NODES[3].id]  # the gateway's config did not change
    for key, shape in cp._shapes.shapes.items():  # each shape took the last one's CDS and EDS keys: no join, no hash
        assert shape is not shapes[key]
        assert shape.payloads["cds"] is shapes[key].payloads["cds"] and shape.eds_keys is shapes[key].eds_keys
    assert set(built_routes) == {"details"}  # reviews', ratings' and the gateway's routes are the last push's
    assert built["clusters"] == []  # every outbound cluster is the last push's
    # the virtual hosts holding details' routes; besides, only those no cache holds (each render's catch-all,
    # the gateway's, whose routes are shared): not one of reviews, ratings or productpage
    assert {n for n in built["vhosts"] if n.startswith("details.")} == {
        "details.default.svc.cluster.local:9080", "details.default.svc.cluster.local:80"}
    assert {n for n in built["vhosts"] if not n.startswith("details.")} == {"allow_any", "*:8080"}
    assert 0 < result.serialized < 30
    assert served(cp) == from_nothing(cp)
    rds = cp.cache.snapshot(NODES[0].id).resources("rds")
    weights = [c["weight"] for rc in rds if rc["name"] == "9080" for vh in rc["virtual_hosts"]
               if vh["name"] == "details.default.svc.cluster.local:9080"
               for c in vh["routes"][0]["route"]["weighted_clusters"]["clusters"]]
    assert weights == [50, 50]


async def test_a_full_render_without_the_carried_mesh_builds_every_virtual_services_routes(
        control, built_routes, built):
    """The counters above can fail: a change that is not only VirtualServices builds the mesh afresh."""
    cp, config = control
    (config / "extra.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: default}\n"
                                       "spec: {selector: {app: extra}, ports: [{name: http, port: 9080}]}\n")
    assert cp.reload()
    result = await cp.push(1.0)
    assert {"details", "reviews", "ratings", "bookinfo"} <= set(built_routes)
    assert "outbound|9080||reviews.default.svc.cluster.local" in built["clusters"]
    assert "reviews.default.svc.cluster.local:9080" in built["vhosts"]
    assert result.serialized > 30
    assert served(cp) == from_nothing(cp)


async def test_adding_and_deleting_virtual_services_serve_a_full_renders_bytes(control, built_routes):
    cp, config = control
    (config / "canary.yaml").unlink()  # details goes back to its default route
    assert cp.reload()
    await cp.push(1.0)
    assert built_routes == []  # nothing to build: the other VirtualServices' routes are the last push's
    assert served(cp) == from_nothing(cp)

    (config / "canary.yaml").write_text(CANARY.format(a=70, b=30))
    assert cp.reload()
    built_routes.clear()
    await cp.push(2.0)
    assert set(built_routes) == {"details"}
    assert served(cp) == from_nothing(cp)


async def test_an_edit_of_a_gateway_bound_virtual_service_serves_a_full_renders_bytes(control, built_routes):
    cp, config = control
    ingress = config / "ingress.yaml"
    text = ingress.read_text()
    assert "/productpage" in text
    rewrite(ingress, text.replace("/productpage", "/productpage2", 1))
    assert cp.reload()
    await cp.push(1.0)
    assert set(built_routes) == {"bookinfo"}
    assert served(cp) == from_nothing(cp)


async def test_two_edits_in_a_row_carry_the_mesh_each_time(control, built_routes):
    cp, config = control
    for i, (a, b) in enumerate(((60, 40), (30, 70))):
        rewrite(config / "canary.yaml", CANARY.format(a=a, b=b))
        assert cp.reload()
        built_routes.clear()
        await cp.push(1.0 + i)
        assert set(built_routes) == {"details"}
        assert served(cp) == from_nothing(cp)


async def test_a_registration_since_the_last_push_builds_the_mesh_afresh(control, built_routes):
    """The carried mesh holds the registry it was built with: when proxies came or went since, it is not
    carried (the edit and the registration are one push here)."""
    cp, config = control
    cp.connect(sidecar("details-v1", {"app": "details", "version": "v1"}, 21030))
    rewrite(config / "canary.yaml", CANARY.format(a=20, b=80))
    assert cp.reload()
    await cp.push(1.0)
    assert {"reviews", "ratings", "details"} <= set(built_routes)
    assert served(cp) == from_nothing(cp)

    rewrite(config / "canary.yaml", CANARY.format(a=10, b=90))  # next: that push's mesh is the current one
    assert cp.reload()
    built_routes.clear()
    await cp.push(2.0)
    assert set(built_routes) == {"details"}
    assert served(cp) == from_nothing(cp)


async def test_every_memo_kind_is_classified_for_virtual_service_edits(control):
    """A new MeshSnapshot.memo kind is dropped by a VirtualService edit until someone decides it reads no
    VirtualService (control.translate.VIRTUAL_SERVICE_FREE_MEMOS): this lists the kinds a render makes."""
    from control.translate import VIRTUAL_SERVICE_FREE_MEMOS
    cp, _ = control
    kinds = {key[0] for key in cp._mesh[1]._memo}
    assert kinds - VIRTUAL_SERVICE_FREE_MEMOS == {"mesh_virtual_services", "http_routes"}
    assert VIRTUAL_SERVICE_FREE_MEMOS - kinds <= {"service_accounts"}  # (only when a DestinationRule is ISTIO_MUTUAL)
