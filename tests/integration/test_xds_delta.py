"""Delta (incremental) xDS over REST-JSON (`POST /v3/delta_discovery:<type>`, docs/xds.md): the real control
plane (control.serve + control.xds.server) on 127.0.0.1, spoken to by a plain HTTP client of the wire contract
and by pyproxy's own XdsClient applying to a real ProxyServer, both in process."""
from __future__ import annotations

import asyncio

import aiohttp

from control.xds.cache import CLUSTER, CLUSTER_LOAD_ASSIGNMENT
from pyproxy.server import ProxyServer
from pyproxy.xds.client import XdsClient
from pyproxy.xds.state import EDS, RDS
from pyproxy.xds.vhds import VHDS
from tests.support.mesh import free_ports
from tests.integration.test_xds_server import PRODUCTPAGE, REVIEWS, mesh, node, syncz  # noqa: F401 - fixture

TYPES = {"clusters": CLUSTER, "endpoints": CLUSTER_LOAD_ASSIGNMENT}
REVIEWS_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"


class DeltaProxy:
    """A client of the delta wire contract: per path, the last response's nonce and the versions held."""

    def __init__(self, session: aiohttp.ClientSession, base: str, node: dict):
        self.session, self.base, self.node = session, base, node
        self.nonce: dict[str, str] = {}
        self.held: dict[str, dict[str, dict]] = {}

    async def post(self, path: str, wait: float = 5.0, **fields) -> tuple[int, dict | None]:
        body = {"node": self.node, **fields}
        if path in self.nonce:
            body.setdefault("response_nonce", self.nonce[path])
        async with self.session.post(f"{self.base}/v3/delta_discovery:{path}?wait={wait}", json=body) as resp:
            data = await resp.json() if resp.status in (200, 400, 409) else None
            status = resp.status
        if status == 200:
            self.nonce[path] = data["nonce"]
            held = self.held.setdefault(path, {})
            for name in data["removed_resources"]:
                held.pop(name, None)
            held.update({r["name"]: r for r in data["resources"]})
        return status, data


async def test_eds_by_name_a_registration_sends_only_the_changed_assignments_and_proxy_status_reads_synced(mesh):
    _cp, base, _m, _c, _clock, session = mesh
    pp = DeltaProxy(session, base, PRODUCTPAGE)
    status, cds = await pp.post("clusters", resource_names_subscribe=["*"])
    assert status == 200 and cds["type_url"] == CLUSTER and cds["removed_resources"] == []
    assert REVIEWS_V1 in pp.held["clusters"]
    assert all(len(r["version"]) == 16 and r["resource"]["@type"] == CLUSTER for r in cds["resources"])
    assert (await pp.post("clusters", wait=0))[0] == 304  # the ACK
    eds_names = sorted(n for n, r in pp.held["clusters"].items() if r["resource"]["type"] == "EDS")
    status, eds = await pp.post("endpoints", resource_names_subscribe=eds_names)
    assert status == 200 and sorted(pp.held["endpoints"]) == eds_names
    assert eds["system_version_info"] == cds["system_version_info"]
    assert (await pp.post("endpoints", wait=0))[0] == 304
    entry = (await syncz(session, base))["productpage-v1.default"]
    assert entry["types"]["cds"]["status"] == entry["types"]["eds"]["status"] == "SYNCED"

    # reviews-v1 registers: productpage's waiting EDS long-poll gets the assignments that list it, and only them
    # (its service account also changes CDS: that comes first, in ADS order, and only the changed clusters)
    poll = asyncio.create_task(pp.post("clusters", wait=10))
    await DeltaProxy(session, base, REVIEWS).post("clusters", resource_names_subscribe=["*"])
    status, cds2 = await poll
    assert status == 200 and 0 < len(cds2["resources"]) < len(pp.held["clusters"])
    assert (await pp.post("clusters", wait=0))[0] == 304
    status, eds2 = await pp.post("endpoints")
    assert status == 200
    changed = {r["name"] for r in eds2["resources"]}
    assert REVIEWS_V1 in changed and len(changed) < len(eds_names)
    lb = pp.held["endpoints"][REVIEWS_V1]["resource"]["endpoints"][0]["lb_endpoints"][0]
    assert lb["endpoint"]["address"]["socket_address"]["port_value"] == 15106
    assert (await pp.post("endpoints", wait=0))[0] == 304
    assert (await syncz(session, base))["productpage-v1.default"]["types"]["eds"]["status"] == "SYNCED"


async def test_reconnect_declares_versions_and_an_unknown_nonce_is_409(mesh):
    cp, base, _m, _c, _clock, session = mesh
    pp = DeltaProxy(session, base, PRODUCTPAGE)
    await pp.post("clusters", resource_names_subscribe=["*"])
    held = {n: r["version"] for n, r in pp.held["clusters"].items()}
    # a new session declaring what it holds is sent nothing it has
    status, again = await pp.post("clusters", response_nonce="", resource_names_subscribe=["*"],
                                  initial_resource_versions=held)
    assert status == 200 and again["resources"] == [] and again["removed_resources"] == []
    # the control plane lost the subscription (it restarted): a nonce of it is 409, naming what to do
    cp.delta.remove(cp.cache.proxy_ids()[0])
    status, err = await pp.post("clusters", wait=0)
    assert status == 409 and "initial_resource_versions" in err["error"]
    status, err = await pp.post("endpoints", wait=0, resource_names_subscribe="x")
    assert status == 400 and err["error"].startswith("resource_names_subscribe:")


async def test_nack_keeps_the_type_stale_and_the_content_is_not_resent(mesh):
    _cp, base, _m, _c, _clock, session = mesh
    pp = DeltaProxy(session, base, PRODUCTPAGE)
    await pp.post("clusters", resource_names_subscribe=["*"])
    status, _ = await pp.post("clusters", wait=0.2, error_detail={"code": 3, "message": "cluster x: bad"})
    assert status == 304
    cds = (await syncz(session, base))["productpage-v1.default"]["types"]["cds"]
    assert cds["status"] == "STALE" and cds["nacked"] and cds["nack"]["error"] == "cluster x: bad"


async def test_pyproxy_follows_the_control_plane_with_delta_by_default_and_sotw_on_request(mesh):
    cp, base, _m, config, _clock, session = mesh
    for mode in ("delta", "sotw"):
        inbound, outbound, admin, app = free_ports(4)
        me = node(f"productpage-{mode}", {"app": "productpage", "version": "v1"}, inbound, app)
        me["metadata"].update(OUTBOUND_PORT=outbound, ADMIN_PORT=admin)
        server = ProxyServer(drain_time=0.1)
        client = XdsClient(base, me, server, wait=5.0, mode=mode)
        await client.start()
        try:
            async def synced() -> dict:
                while True:
                    entry = (await syncz(session, base)).get(f"productpage-{mode}.default")
                    if entry and all(t["status"] == "SYNCED" for t in entry["types"].values()) and \
                            all(st.version == entry["version"] for st in client.state.types.values()):
                        return entry
                    await asyncio.sleep(0.02)  # poll interval of a bounded wait
            entry = await asyncio.wait_for(synced(), 10)
            assert set(server.listeners) >= {f"0.0.0.0_{outbound}", "virtualInbound"}
            eds = client.state.types[EDS]
            clusters = {c for c in client._names(EDS)}
            assert set(eds.resources) == clusters and REVIEWS_V1 in clusters
            if mode == "delta":
                assert eds.subscribed == clusters and set(eds.versions) == clusters
                assert client.state.types[RDS].subscribed == set(client._names(RDS))
            # an edit of routes reaches the proxy: in delta as virtual hosts (VHDS, pyproxy's default there), the
            # route configurations themselves unchanged; in state of the world as RDS
            carrier = VHDS if mode == "delta" else RDS
            traffic = config / "traffic.yaml"
            weights = ("weight: 80", "weight: 20") if mode == "delta" else ("weight: 50", "weight: 50")
            new = ("weight: 50", "weight: 50") if mode == "delta" else ("weight: 80", "weight: 20")
            traffic.write_text(traffic.read_text().replace(weights[0], new[0]).replace(weights[1], new[1]))

            async def moved() -> None:
                while client.state.types[carrier].version == entry["version"] or \
                        client.state.types[carrier].version != cp.cache.snapshot(me["id"]).version:
                    await asyncio.sleep(0.02)  # poll interval of a bounded wait
            await asyncio.wait_for(moved(), 10)
            assert client.state.types[carrier].rejects == 0
            if mode == "delta":
                assert client.state.types[RDS].version == entry["version"]
        finally:
            await client.stop()
            await server.stop()
