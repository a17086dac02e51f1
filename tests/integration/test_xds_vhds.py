"""VHDS over REST delta (`POST /v3/delta_discovery:virtual_hosts`, docs/xds.md): the real control plane
(control.serve + control.xds.server) on 127.0.0.1, a plain HTTP client of the wire contract, and pyproxy's own
XdsClient applying to a real ProxyServer that serves requests, all in process. A VirtualService edit sends a
proxy that asked for VHDS only the virtual hosts it changed; traffic follows it; a virtual host the proxy
refuses is NACKed and the last good routes keep serving."""
from __future__ import annotations

import asyncio
import json
import re

import aiohttp

from control.xds.node import VHDS_FEATURE
from pyproxy.admin.server import config_dump
from pyproxy.server import ProxyServer
from pyproxy.xds.client import XdsClient
from pyproxy.xds.state import RDS
from pyproxy.xds.vhds import VHDS
from tests.support.mesh import call, client_session, free_ports
from tests.integration.test_xds_server import PRODUCTPAGE, Proxy, mesh, node, syncz  # noqa: F401 - fixture

# the virtual hosts holding details' routes: ports 9080 and 80, in their port's route configuration and http_proxy's
DETAILS_HOSTS = {"9080/details.default.svc.cluster.local", "80/details.default.svc.cluster.local",
                 "http_proxy/details.default.svc.cluster.local:9080", "http_proxy/details.default.svc.cluster.local"}
RDS_NAME = re.compile(r'"route_config_name": "([^"]*)"')


class WireProxy:
    """A client of the delta wire contract that keeps each response's size in bytes."""

    def __init__(self, session: aiohttp.ClientSession, base: str, node: dict):
        self.session, self.base, self.node = session, base, node
        self.nonce: dict[str, str] = {}
        self.held: dict[str, dict[str, dict]] = {}
        self.size: dict[str, int] = {}

    async def post(self, path: str, wait: float = 5.0, **fields) -> tuple[int, dict | None]:
        body = {"node": self.node, **fields}
        if path in self.nonce:
            body.setdefault("response_nonce", self.nonce[path])
        async with self.session.post(f"{self.base}/v3/delta_discovery:{path}?wait={wait}", json=body) as resp:
            raw = await resp.read()
            status = resp.status
        data = json.loads(raw) if raw else None
        if status == 200:
            self.nonce[path], self.size[path] = data["nonce"], len(raw)
            held = self.held.setdefault(path, {})
            for name in data["removed_resources"]:
                held.pop(name, None)
            held.update({r["name"]: r for r in data["resources"]})
        return status, data

    async def sync(self) -> list[str]:
        """CDS, EDS, LDS, RDS subscribed as pyproxy does, each ACKed; the route configuration names."""
        for path, subscribe in (("clusters", ["*"]), ("endpoints", None), ("listeners", ["*"]), ("routes", None)):
            if path == "endpoints":
                subscribe = sorted(n for n, r in self.held["clusters"].items() if r["resource"]["type"] == "EDS")
            if path == "routes":
                subscribe = sorted(set(RDS_NAME.findall(json.dumps(self.held["listeners"]))))
            assert (await self.post(path, resource_names_subscribe=subscribe))[0] == 200, path
            assert (await self.post(path, wait=0))[0] == 304, path  # the ACK; nothing else due
        return sorted(self.held["routes"])

    async def settle(self, paths=("clusters", "endpoints", "listeners", "routes")) -> None:
        """ACK what else is due (another proxy registering moved our EDS), until every type answers 304."""
        for path in paths:
            for _ in range(5):
                if (await self.post(path, wait=0))[0] == 304:
                    break


def rewrite_details(config, status: int) -> None:
    """details' VirtualService: every request aborted with `status` (a fault: visible without a backend). JSON is
    YAML."""
    spec = {"hosts": ["details"], "http": [{"fault": {"abort": {"percentage": {"value": 100}, "httpStatus": status}},
                                            "route": [{"destination": {"host": "details"}}]}]}
    (config / "details.yaml").write_text(json.dumps({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                                     "metadata": {"name": "details", "namespace": "default"},
                                                     "spec": spec}))


async def test_vhds_sends_route_configs_without_virtual_hosts_then_only_the_virtual_hosts_an_edit_changed(mesh):
    cp, base, _m, config, _clock, session = mesh
    me = WireProxy(session, base, {**node("productpage-vhds", {"app": "productpage", "version": "v1"}, 15306, 9380),
                                   "client_features": [VHDS_FEATURE]})
    plain = WireProxy(session, base, PRODUCTPAGE)  # the same shape, without VHDS
    names = await me.sync()
    assert names == await plain.sync() and "9080" in names

    async def listed() -> None:  # plain's registration reached our snapshot too (its push may still install it)
        while b'"port_value":15206' not in cp.cache.snapshot(me.node["id"]).payloads["eds"].body:
            await asyncio.sleep(0.01)  # poll interval of a bounded wait
    await asyncio.wait_for(listed(), 10)
    await me.settle()  # our EDS lists plain now: ACK it, or VHDS waits behind it in ADS order
    for name in names:
        rc = me.held["routes"][name]["resource"]
        assert rc["virtual_hosts"] == [] and rc["vhds"]["config_source"]["ads"] == {}
        assert plain.held["routes"][name]["resource"]["virtual_hosts"] and "vhds" not in plain.held["routes"][name]
    status, vhds = await me.post("virtual_hosts", resource_names_subscribe=[f"{n}/*" for n in names])
    assert status == 200 and vhds["type_url"] == VHDS and vhds["removed_resources"] == []
    # every virtual host of every route configuration, named <route config>/<first domain>, the same as RDS's
    for name in names:
        whole = plain.held["routes"][name]["resource"]["virtual_hosts"]
        mine = {n: r["resource"] for n, r in me.held["virtual_hosts"].items() if n.rsplit("/", 1)[0] == name}
        assert sorted(mine) == sorted(f"{name}/{vh['domains'][0]}" for vh in whole)
        assert sorted(({k: v for k, v in vh.items() if k != "@type"} for vh in mine.values()),
                      key=lambda vh: vh["name"]) == sorted(whole, key=lambda vh: vh["name"])
    assert (await me.post("virtual_hosts", wait=0))[0] == 304  # the ACK
    await plain.settle()
    rows = await syncz(session, base)
    assert rows["productpage-vhds.default"]["types"]["vhds"]["status"] == "SYNCED"
    assert "vhds" not in rows["productpage-v1.default"]["types"]

    # an edit: the VHDS long-poll gets the four virtual hosts holding details' routes, and nothing else
    polls = asyncio.gather(me.post("virtual_hosts", wait=10), plain.post("routes", wait=10))
    rewrite_details(config, 418)
    (status, update), (plain_status, plain_update) = await polls
    assert status == 200 and plain_status == 200, (status, plain_status)
    assert {r["name"] for r in update["resources"]} == DETAILS_HOSTS and update["removed_resources"] == []
    vh = me.held["virtual_hosts"]["9080/details.default.svc.cluster.local"]["resource"]
    assert "envoy.filters.http.fault" in json.dumps(vh)
    # the whole route configurations (80, 9080, http_proxy: ~everything) against four virtual hosts
    assert {r["name"] for r in plain_update["resources"]} == {"80", "9080", "http_proxy"}
    assert me.size["virtual_hosts"] * 3 < plain.size["routes"], (me.size, plain.size)
    assert (await me.post("routes", wait=0))[0] == 304  # the route configurations themselves: nothing new
    status, _ = await me.post("virtual_hosts", wait=0.2, error_detail={"code": 3, "message": "vh x: bad"})
    assert status == 304  # a NACK: the rejected content is not sent again
    row = (await syncz(session, base))["productpage-vhds.default"]["types"]["vhds"]
    assert row["status"] == "STALE" and row["nacked"] and row["nack"]["error"] == "vh x: bad"

    # VHDS is only for a node that asked for it, and only in delta: state of the world ignores the feature
    status, err = await plain.post("virtual_hosts", resource_names_subscribe=["9080/*"])
    assert status == 400 and err["error"].startswith("node.client_features: 'pyproxy.vhds' is required")
    sotw = Proxy(session, base, {**node("productpage-sotw", {"app": "productpage", "version": "v1"}, 15406, 9480),
                                 "client_features": [VHDS_FEATURE]})
    await sotw.sync()
    assert all(rc["virtual_hosts"] and "vhds" not in rc for rc in sotw.held["routes"]["resources"])


async def test_pyproxy_assembles_its_routes_from_vhds_traffic_follows_an_edit_and_a_bad_virtual_host_is_nacked(mesh):
    cp, base, _m, config, _clock, session = mesh
    inbound, outbound, admin, app = free_ports(4)
    me = node("productpage-px", {"app": "productpage", "version": "v1"}, inbound, app)
    me["metadata"].update(OUTBOUND_PORT=outbound, ADMIN_PORT=admin)
    server = ProxyServer(drain_time=0.1)
    client = XdsClient(base, me, server, wait=5.0)  # delta with VHDS: the default
    await client.start()
    try:
        async def synced() -> dict:
            while True:
                entry = (await syncz(session, base)).get("productpage-px.default")
                if entry and set(entry["types"]) == {"cds", "eds", "lds", "rds", "vhds", "leds"} and \
                        all(t["status"] == "SYNCED" for t in entry["types"].values()) and \
                        all(st.version == entry["version"] for st in client.state.types.values()):
                    return entry
                await asyncio.sleep(0.02)  # poll interval of a bounded wait
        entry = await asyncio.wait_for(synced(), 10)
        assert client.state.types[VHDS].subscribed == {"80/*", "9080/*", "http_proxy/*"}

        # /config_dump shows the assembled route configuration
        dumped = {rc["route_config"]["name"]: rc["route_config"] for rc in next(
            c for c in config_dump(server)["configs"] if c["@type"].endswith("RoutesConfigDump"))[
            "dynamic_route_configs"]}
        assert "vhds" in dumped["9080"]
        assert "details.default.svc.cluster.local:9080" in {vh["name"] for vh in dumped["9080"]["virtual_hosts"]}

        async with client_session() as http:
            before = await call(http, outbound, "details:9080")
            assert before.status not in (0, 418, 419)
            rds_responses = client.state.types[RDS].responses
            for status in (418, 419):  # two edits in a row
                version = client.state.types[VHDS].version
                rewrite_details(config, status)

                async def moved() -> None:
                    while client.state.types[VHDS].version == version or \
                            client.state.types[VHDS].version != cp.cache.snapshot(me["id"]).version:
                        await asyncio.sleep(0.02)  # poll interval of a bounded wait
                await asyncio.wait_for(moved(), 10)
                assert (await call(http, outbound, "details:9080")).status == status
            assert client.state.types[RDS].responses == rds_responses  # the edits came over VHDS alone
            assert client.state.types[VHDS].rejects == 0

            # a virtual host the proxy cannot take (a domain another virtual host of 9080 has): NACKed, the last
            # good routes keep serving. Fed to the client after its loops stopped, as the next VHDS response.
            await client.stop()
            held, good = dict(client.state.types[VHDS].versions), client.state.types[VHDS].version
            bad = {"name": "9080/details.default.svc.cluster.local", "version": "bad", "resource": {
                "@type": VHDS, "name": "details:9080", "domains": ["details.default.svc.cluster.local", "reviews"],
                "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}}
            await client._handle(VHDS, {"system_version_info": "v-bad", "nonce": "n-bad", "resources": [bad],
                                        "removed_resources": [], "type_url": VHDS})
            st = client.state.types[VHDS]
            assert st.rejects == 1 and "duplicate domain 'reviews'" in (st.error or "")
            assert st.versions == held and st.version == good
            assert (await call(http, outbound, "details:9080")).status == 419
            assert client.state.next_delta_request(VHDS, client._names(VHDS))["error_detail"]["code"] == 3
    finally:
        await client.stop()
        await server.stop()
