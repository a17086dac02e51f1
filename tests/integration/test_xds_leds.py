"""LEDS over REST-JSON (`POST /v3/delta_discovery:lb_endpoints`, docs/xds.md): the real control plane (control.serve +
control.xds.server) on 127.0.0.1, spoken to by a plain HTTP client of the wire contract and by pyproxy's own
XdsClient applying to a real ProxyServer that sends traffic to real HTTP backends, all in process.

The mesh: a Service `echo` (port 8080, plaintext: a DestinationRule disables TLS, so the backends need no
sidecar) and a client workload `sleep`. Its endpoints are "sidecars" registered by plain wire clients whose
INBOUND_PORT is a backend's port, so traffic to an endpoint reaches that backend."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from control.serve import ControlPlane
from control.xds.cache import CLUSTER_LOAD_ASSIGNMENT
from control.xds.node import node_id
from control.xds.server import make_app, start_site
from pyproxy.admin.server import config_dump
from pyproxy.server import ProxyServer
from pyproxy.xds.client import XdsClient
from pyproxy.xds.leds import FEATURE, LB_ENDPOINT
from pyproxy.xds.state import EDS, LEDS
from tests.integration.test_xds_delta import DeltaProxy
from tests.integration.test_xds_server import FakeClock, long_poll_in, syncz
from tests.support.mesh import free_ports

ECHO = "outbound|8080||echo.default.svc.cluster.local"
MESH = """apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec: {selector: {app: echo}, ports: [{name: http, port: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  template: {metadata: {labels: {app: echo}}, spec: {containers: [{name: echo, image: echo, ports: [{containerPort: 8080}]}]}}
---
{apiVersion: apps/v1, kind: Deployment, metadata: {name: sleep, namespace: default}, spec: {
  selector: {matchLabels: {app: sleep}}, template: {metadata: {labels: {app: sleep}},
                                                    spec: {containers: [{name: sleep, image: sleep}]}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec: {host: echo, trafficPolicy: {tls: {mode: DISABLE}}}
"""


def node(name: str, app: str, inbound: int, *features: str) -> dict:
    out = {"id": node_id("sidecar", "127.0.0.1", name, "default"), "cluster": f"{app}.default",
           "metadata": {"NAME": name, "NAMESPACE": "default", "LABELS": {"app": app}, "INSTANCE_IPS": "127.0.0.1",
                        "INBOUND_PORT": inbound, "OUTBOUND_PORT": inbound + 1, "ADMIN_PORT": inbound + 2}}
    if features:
        out["client_features"] = list(features)
    return out


# two more Services selecting echo's pods: `echo-alias` plaintext as `echo` (its endpoints are the same), `echo-mtls`
# without a DestinationRule (its endpoints carry tlsMode: istio, echo's do not)
ALIASES = """apiVersion: v1
kind: Service
metadata: {name: echo-alias, namespace: default}
spec: {selector: {app: echo}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo-mtls, namespace: default}
spec: {selector: {app: echo}, ports: [{name: http, port: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo-alias, namespace: default}
spec: {host: echo-alias, trafficPolicy: {tls: {mode: DISABLE}}}
"""


async def serve(tmp_path, text: str):
    """(control plane, base URL, session) on the mesh `text`; all stopped after the test."""
    (tmp_path / "mesh.yaml").write_text(text)
    cp = ControlPlane(str(tmp_path), clock=FakeClock(), grace=30.0, debounce=0.01, long_poll_timeout=10.0,
                      nonce_prefix="t-")
    await cp.start(watch=False)
    runner, port = await start_site(make_app(cp), "127.0.0.1", 0)
    session = aiohttp.ClientSession()
    try:
        yield cp, f"http://127.0.0.1:{port}", session
    finally:
        await session.close()
        await runner.cleanup()
        await cp.stop()


@pytest.fixture
async def plane(tmp_path):
    async for served in serve(tmp_path, MESH):
        yield served


@pytest.fixture
async def aliased_plane(tmp_path):
    """`plane` with ALIASES."""
    async for served in serve(tmp_path, MESH + "---\n" + ALIASES):
        yield served


class Wire(DeltaProxy):
    """A client of the delta wire contract (test_xds_delta's), which also syncs CDS and EDS in one call."""

    async def sync_eds(self) -> list[str]:
        """CDS (wildcard), its ACK, then EDS of its EDS clusters and its ACK: the EDS cluster names."""
        assert (await self.post("clusters", resource_names_subscribe=["*"]))[0] == 200
        assert (await self.post("clusters", wait=0))[0] == 304
        names = sorted(n for n, r in self.held["clusters"].items() if r["resource"]["type"] == "EDS")
        assert (await self.post("endpoints", resource_names_subscribe=names))[0] == 200
        assert (await self.post("endpoints", wait=0))[0] == 304
        return names


def size(response: dict) -> int:
    """About the bytes of a response body (the control plane writes compact JSON)."""
    return len(json.dumps(response, separators=(",", ":")))


def collections(held: dict[str, dict]) -> list[str]:
    return sorted(g["leds_cluster_locality_config"]["leds_collection_name"]
                  for r in held.values() for g in r["resource"]["endpoints"])


async def test_a_registration_sends_a_leds_client_only_the_new_endpoint_and_others_whole_assignments(plane):
    cp, base, session = plane
    backends = free_ports(3)
    await Wire(session, base, node("echo-1", "echo", backends[0])).post("clusters", resource_names_subscribe=["*"])
    leds = Wire(session, base, node("sleep-1", "sleep", backends[1], FEATURE))
    plain = Wire(session, base, node("sleep-2", "sleep", backends[2] + 10))
    await leds.sync_eds()
    await plain.sync_eds()

    # the LEDS client's assignments name a collection per locality and list no endpoint
    echo = leds.held["endpoints"][ECHO]["resource"]
    assert echo["@type"] == CLUSTER_LOAD_ASSIGNMENT and "lb_endpoints" not in echo["endpoints"][0]
    glob = echo["endpoints"][0]["leds_cluster_locality_config"]["leds_collection_name"]
    # shared by the clusters listing echo's endpoints (named after what they share), no locality
    assert glob.startswith("xdstp://pyproxy-control/envoy.config.endpoint.v3.LbEndpoint/shared/") and \
        glob.endswith("/-/*")
    status, first = await leds.post("lb_endpoints", resource_names_subscribe=collections(leds.held["endpoints"]))
    assert status == 200 and first["type_url"] == LB_ENDPOINT
    ((name, resource),) = [(r["name"], r["resource"]) for r in first["resources"] if r["name"].startswith(glob[:-1])]
    assert name == f"{glob[:-1]}127.0.0.1:{backends[0]}"
    assert resource["@type"] == LB_ENDPOINT
    assert resource["endpoint"]["address"]["socket_address"]["port_value"] == backends[0]
    assert (await leds.post("lb_endpoints", wait=0))[0] == 304  # the ACK; nothing more
    # the other client gets the whole assignment, as before
    assert plain.held["endpoints"][ECHO]["resource"]["endpoints"][0]["lb_endpoints"][0]["endpoint"] == \
        resource["endpoint"]

    # a second replica registers: the LEDS client's EDS carries no assignment, its LEDS the new endpoint alone
    pushes = cp.pushes
    leds_poll = asyncio.create_task(leds.post("lb_endpoints", wait=10))
    plain_poll = asyncio.create_task(plain.post("endpoints", wait=10))
    second = free_ports(1)[0]
    await Wire(session, base, node("echo-2", "echo", second)).post("clusters", resource_names_subscribe=["*"])
    await cp.wait_push(pushes)
    status, update = await leds_poll
    assert status == 200 and update["removed_resources"] == []
    assert [r["name"] for r in update["resources"]] == [f"{glob[:-1]}127.0.0.1:{second}"]
    leds_bytes = size(update)
    # its assignments did not change: no EDS response at all, and it holds the new snapshot's EDS
    assert (await leds.post("endpoints", wait=0))[0] == 304
    eds_status = (await syncz(session, base))["sleep-1.default"]["types"]["eds"]
    assert eds_status["status"] == "SYNCED" and eds_status["acked"]["version"] == update["system_version_info"]
    status, whole = await plain_poll
    assert status == 200 and ECHO in [r["name"] for r in whole["resources"]]
    assert len(plain.held["endpoints"][ECHO]["resource"]["endpoints"][0]["lb_endpoints"]) == 2
    assert leds_bytes < size(whole)
    # the state of the world path still serves whole assignments
    async with session.post(f"{base}/v3/discovery:endpoints?wait=0", json={"node": leds.node}) as resp:
        sotw = {r["cluster_name"]: r for r in (await resp.json())["resources"]}
    assert len(sotw[ECHO]["endpoints"][0]["lb_endpoints"]) == 2

    # the replica leaves: its endpoint is named in removed_resources, nothing else
    status, _ = await leds.post("lb_endpoints", wait=0)
    assert status == 304
    leds_poll = asyncio.create_task(leds.post("lb_endpoints", wait=10))
    await long_poll_in(cp, leds.node["id"])
    pushes = cp.pushes
    cp.clock.now += 100  # past the grace of every proxy not polling: echo-1 and echo-2
    cp.expire()
    await cp.wait_push(pushes)
    status, gone = await leds_poll
    assert status == 200 and gone["resources"] == []
    assert sorted(gone["removed_resources"]) == sorted([f"{glob[:-1]}127.0.0.1:{second}",
                                                        f"{glob[:-1]}127.0.0.1:{backends[0]}"])


async def test_clusters_of_the_same_pods_share_a_collection_unless_their_endpoints_differ(aliased_plane):
    _cp, base, session = aliased_plane
    backends = free_ports(3)
    for i, port in enumerate(backends[:2]):  # injected sidecars: mTLS where no DestinationRule disables it
        echo = node(f"echo-{i}", "echo", port)
        echo["metadata"]["LABELS"]["security.istio.io/tlsMode"] = "istio"
        await Wire(session, base, echo).post("clusters", resource_names_subscribe=["*"])
    leds = Wire(session, base, node("sleep-1", "sleep", backends[2], FEATURE))
    await leds.sync_eds()
    alias, mtls = (ECHO.replace("||echo.", f"||{s}.") for s in ("echo-alias", "echo-mtls"))
    named = {c: [g["leds_cluster_locality_config"]["leds_collection_name"]
                 for g in leds.held["endpoints"][c]["resource"]["endpoints"]] for c in (ECHO, alias, mtls)}
    assert named[ECHO] == named[alias] and len(named[ECHO]) == 1  # same pods, same endpoints: one collection
    assert named[mtls] != named[ECHO] and len(named[mtls]) == 1  # same pods, but tlsMode: istio on its endpoints
    status, got = await leds.post("lb_endpoints", resource_names_subscribe=sorted({*named[ECHO], *named[mtls]}))
    assert status == 200
    members: dict[str, dict[int, dict]] = {}
    for r in got["resources"]:
        port = r["resource"]["endpoint"]["address"]["socket_address"]["port_value"]
        members.setdefault(r["name"].rsplit("/", 1)[0] + "/*", {})[port] = r["resource"].get("metadata", {})
    assert {g: sorted(m) for g, m in members.items()} == {named[ECHO][0]: sorted(backends[:2]),
                                                          named[mtls][0]: sorted(backends[:2])}
    assert all("envoy.transport_socket_match" not in md["filter_metadata"] for md in members[named[ECHO][0]].values())
    assert all(md["filter_metadata"]["envoy.transport_socket_match"] == {"tlsMode": "istio"}
               for md in members[named[mtls][0]].values())


async def test_bad_leds_requests_are_refused_with_the_field_named(plane):
    _cp, base, session = plane
    me = Wire(session, base, node("sleep-1", "sleep", free_ports(1)[0], FEATURE))
    status, body = await me.post("lb_endpoints", resource_names_subscribe=["outbound|8080||echo"])
    assert status == 400 and body["error"].startswith("resource_names_subscribe: 'outbound|8080||echo' is not a")
    status, body = await me.post("lb_endpoints", response_nonce="t-leds-99")
    assert status == 409 and "start again without a nonce" in body["error"]
    status, body = await me.post("lb_endpoints", type_url=CLUSTER_LOAD_ASSIGNMENT)
    assert status == 400 and body["error"].startswith("type_url:")


class Backend:
    """An HTTP app on 127.0.0.1:`port` answering with its name."""

    def __init__(self, name: str, port: int):
        self.name, self.port = name, port
        self.runner: web.AppRunner | None = None

    async def start(self) -> "Backend":
        async def answer(_request: web.Request) -> web.Response:
            return web.Response(text=self.name)
        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def until(cond, what: str, timeout: float = 10.0):
    async def poll():
        while not (value := await cond()):
            await asyncio.sleep(0.02)  # the poll interval of a bounded wait
        return value
    try:
        return await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"not true after {timeout}s: {what}") from None


async def test_pyproxy_assembles_assignments_from_leds_and_traffic_reaches_a_new_endpoint(plane):
    cp, base, session = plane
    inbound, outbound, admin, first_port, second_port = free_ports(5)
    me = node("sleep-1", "sleep", inbound)
    me["metadata"].update(OUTBOUND_PORT=outbound, ADMIN_PORT=admin)
    first, second = await Backend("echo-1", first_port).start(), await Backend("echo-2", second_port).start()
    server = ProxyServer(drain_time=0.1)
    client = XdsClient(base, me, server, wait=5.0)  # delta with LEDS: the default
    await client.start()
    try:
        await Wire(session, base, node("echo-1", "echo", first_port)).post("clusters", resource_names_subscribe=["*"])

        async def hosts() -> set[int]:
            cla = server.endpoint_configs.get(ECHO)
            return {lb.endpoint.address.socket_address.port_value for g in (cla.endpoints if cla else ())
                    for lb in g.lb_endpoints}

        async def served(port: int) -> set[str]:
            seen = set()
            for _ in range(20):
                try:
                    async with session.get(f"http://127.0.0.1:{outbound}/", headers={"Host": "echo:8080"}) as resp:
                        if resp.status == 200:
                            seen.add(await resp.text())
                except aiohttp.ClientError:
                    pass
            return seen

        assert await until(lambda: _eq(hosts(), {first_port}), "echo-1 in the assembled assignment")
        assert await until(lambda: _has(served(outbound), "echo-1"), "traffic reaches echo-1")
        leds = client.state.types[LEDS]
        (glob,) = client.state.resources(EDS)[ECHO].collections
        assert glob.startswith("xdstp://pyproxy-control/envoy.config.endpoint.v3.LbEndpoint/shared/")
        assert glob in leds.subscribed and f"{glob[:-1]}127.0.0.1:{first_port}" in leds.resources
        eds_version = client.state.types[EDS].versions[ECHO]

        await Wire(session, base, node("echo-2", "echo", second_port)).post("clusters",
                                                                             resource_names_subscribe=["*"])
        assert await until(lambda: _eq(hosts(), {first_port, second_port}), "echo-2 in the assembled assignment")
        assert await until(lambda: _has(served(outbound), "echo-2"), "traffic reaches echo-2")
        assert client.state.types[EDS].versions[ECHO] == eds_version  # the assignment itself did not change
        assert leds.rejects == 0 and client.state.types[EDS].rejects == 0
        # /config_dump shows the assembled endpoints
        dump = config_dump(server)
        eds_dump = next(c for c in dump["configs"] if c["@type"].endswith("EndpointsConfigDump"))
        (echo,) = [e["endpoint_config"] for e in eds_dump["dynamic_endpoint_configs"]
                   if e["endpoint_config"]["cluster_name"] == ECHO]
        ports = {lb["endpoint"]["address"]["socket_address"]["port_value"]
                 for g in echo["endpoints"] for lb in g["lb_endpoints"]}
        assert ports == {first_port, second_port}
        entry = next(p for p in cp.syncz() if p["name"] == "sleep-1.default")
        assert all(t["status"] == "SYNCED" for t in entry["types"].values())
    finally:
        await client.stop()
        await server.stop()
        await first.stop()
        await second.stop()


async def _eq(value, expected) -> bool:
    return await value == expected


async def _has(value, item) -> bool:
    return item in await value
