"""The xDS server over real HTTP on 127.0.0.1 (port 0): DiscoveryRequest in, DiscoveryResponse out, as
docs/xds.md specifies. A proxy here is a plain HTTP client speaking the wire contract; the control plane is
the real one (control.serve + control.xds.server) over a copy of examples/mesh."""
from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from control.serve import ControlPlane
from control.xds.node import node_id
from control.xds.server import make_app, make_metrics_app, start_site

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mesh"
PATHS = ("clusters", "endpoints", "listeners", "routes")  # ADS order
GRACE = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def node(name: str, labels: dict, inbound: int, app_port: int | None = None) -> dict:
    meta = {"NAME": name, "NAMESPACE": "default", "LABELS": labels, "INSTANCE_IPS": "127.0.0.1",
            "INBOUND_PORT": inbound, "OUTBOUND_PORT": inbound - 5, "ADMIN_PORT": inbound - 6}
    if app_port:
        meta["POD_PORTS"] = [{"name": "http", "containerPort": app_port}]
    return {"id": node_id("sidecar", "127.0.0.1", name, "default"), "cluster": f"{labels['app']}.default",
            "metadata": meta}


PRODUCTPAGE = node("productpage-v1", {"app": "productpage", "version": "v1"}, 15206, 9180)
REVIEWS = node("reviews-v1", {"app": "reviews", "version": "v1"}, 15106, 9181)


class Proxy:
    """A client of the wire contract: per type, the last response it holds (version + nonce)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, node: dict):
        self.session, self.base, self.node = session, base, node
        self.held: dict[str, dict] = {}

    async def post(self, path: str, wait: float = 5.0, ack: bool = True, error: str | None = None,
                   **extra) -> tuple[int, dict | None]:
        body: dict = {"node": self.node, **extra}
        last = self.held.get(path)
        if last is not None and ack:
            body.update(version_info=last["version_info"], response_nonce=last["nonce"])
        if error is not None and last is not None:
            body.update(response_nonce=last["nonce"], error_detail={"code": 3, "message": error})
        async with self.session.post(f"{self.base}/v3/discovery:{path}?wait={wait}", json=body) as resp:
            data = await resp.json() if resp.status == 200 else None
            if resp.status == 400:
                data = await resp.json()
        if resp.status == 200:
            self.held[path] = data
        return resp.status, data

    async def sync(self) -> None:
        """Fetch every type in ADS order, then ACK each (an ACK with nothing new answers 304 at wait=0)."""
        for path in PATHS:
            if path not in self.held:
                status, _ = await self.post(path)
                assert status == 200, path
            assert (await self.post(path, wait=0))[0] == 304

    def names(self, path: str) -> list[str]:
        key = "cluster_name" if path == "endpoints" else "name"
        return [r[key] for r in self.held[path]["resources"]]

    def endpoints(self, cluster: str) -> list[tuple[str, int]]:
        for cla in self.held["endpoints"]["resources"]:
            if cla["cluster_name"] == cluster:
                return [(lb["endpoint"]["address"]["socket_address"]["address"],
                         lb["endpoint"]["address"]["socket_address"]["port_value"])
                        for group in cla["endpoints"] for lb in group["lb_endpoints"]]
        raise KeyError(cluster)


@pytest.fixture
async def mesh(tmp_path):
    """(control plane, base URL, metrics URL, config dir, fake clock, session); all stopped after the test."""
    config = tmp_path / "mesh"
    shutil.copytree(EXAMPLES, config)
    clock = FakeClock()
    cp = ControlPlane(str(config), clock=clock, grace=GRACE, debounce=0.01, long_poll_timeout=10.0,
                      nonce_prefix="t-")
    await cp.start(watch=True)
    runner, port = await start_site(make_app(cp), "127.0.0.1", 0)
    mrunner, mport = await start_site(make_metrics_app(cp), "127.0.0.1", 0)
    session = aiohttp.ClientSession()
    try:
        yield cp, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mport}", config, clock, session
    finally:
        await session.close()
        await runner.cleanup()
        await mrunner.cleanup()
        await cp.stop()


async def syncz(session, base) -> dict:
    async with session.get(f"{base}/debug/syncz") as resp:
        return {p["name"]: p for p in await resp.json()}


async def long_poll_in(cp, node_id: str, timeout: float = 5.0, held: bool = True) -> None:
    """Wait (bounded) until the control plane holds a long-poll of `node_id` (it counts as connected); with
    `held=False`, until it holds none."""
    async def poll() -> None:
        while cp.live.connected(node_id) != held:
            await asyncio.sleep(0.01)  # the poll interval of a bounded wait
    await asyncio.wait_for(poll(), timeout)


async def wait_for_metric(session, murl: str, name: str, value: float, timeout: float = 5.0) -> None:
    """Poll the control plane's metric until it reads `value` (bounded): sequencing without a fixed sleep."""
    async def poll() -> None:
        while await metric(session, murl, name) != value:
            await asyncio.sleep(0.01)  # the poll interval of a bounded wait
    await asyncio.wait_for(poll(), timeout)


async def metric(session, url: str, name: str, labels: dict | None = None) -> float:
    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
    return 0.0


async def test_first_request_gets_resources_with_version_and_nonce_then_ack_is_synced(mesh):
    cp, base, _m, _c, _clock, session = mesh
    proxy = Proxy(session, base, REVIEWS)
    status, cds = await proxy.post("clusters")
    assert status == 200
    assert cds["type_url"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert cds["version_info"] and cds["nonce"].startswith("t-")
    assert "outbound|9080|v2|reviews.default.svc.cluster.local" in proxy.names("clusters")
    assert all(r["@type"] == cds["type_url"] for r in cds["resources"])
    assert (await syncz(session, base))["reviews-v1.default"]["types"]["cds"]["status"] == "STALE"
    await proxy.sync()
    entry = (await syncz(session, base))["reviews-v1.default"]
    assert {t: s["status"] for t, s in entry["types"].items()} == dict.fromkeys(("cds", "eds", "lds", "rds"),
                                                                                "SYNCED")
    assert {proxy.held[p]["version_info"] for p in PATHS} == {entry["version"]}  # one version across types
    assert entry["admin"] == "127.0.0.1:15100"
    lds = {lis["name"]: lis for lis in proxy.held["listeners"]["resources"]}
    assert lds["0.0.0.0_15101"]["address"]["socket_address"]["port_value"] == 15101  # OUTBOUND_PORT
    assert lds["virtualInbound"]["address"]["socket_address"]["port_value"] == 15106  # INBOUND_PORT


async def test_endpoints_wait_for_the_clusters_ack(mesh):
    cp, base, _m, _c, _clock, session = mesh
    proxy = Proxy(session, base, REVIEWS)
    assert (await proxy.post("endpoints", wait=0.2))[0] == 304  # no CDS acknowledged yet
    await proxy.post("clusters")
    pending = asyncio.create_task(proxy.post("endpoints", wait=5))
    await long_poll_in(cp, REVIEWS["id"])  # the EDS request is in and waiting (its only request in flight) ...
    waiting_on = cp.change_event(REVIEWS["id"])  # ... on this event
    assert (await proxy.post("clusters", wait=0))[0] == 304  # the ACK of CDS ...
    assert waiting_on.is_set()  # ... wakes it (not its 5 s expiry) ...
    status, eds = await pending  # ... and releases EDS
    assert status == 200 and eds["version_info"] == proxy.held["clusters"]["version_info"]


async def test_nack_shows_stale_with_the_error_and_counts_a_reject(mesh):
    _cp, base, murl, _c, _clock, session = mesh
    proxy = Proxy(session, base, REVIEWS)
    for path in PATHS:
        await proxy.post(path)
        if path != "routes":
            await proxy.post(path, wait=0)
    status, _ = await proxy.post("routes", wait=0.2, error="route 9080: cluster outbound|9080|v3|x unknown")
    assert status == 304  # the rejected content is not sent again
    rds = (await syncz(session, base))["reviews-v1.default"]["types"]["rds"]
    assert rds["status"] == "STALE" and rds["nacked"]
    assert rds["nack"]["error"] == "route 9080: cluster outbound|9080|v3|x unknown"
    assert rds["nack"]["nonce"] == proxy.held["routes"]["nonce"]
    assert await metric(session, murl, "pilot_total_xds_rejects", {"type": "rds"}) == 1.0


async def test_editing_a_virtual_service_wakes_the_waiting_long_poll(mesh):
    """A config edit reaches a proxy that is waiting on a long-poll (how fast is for benchmarks/xds_bench.py)."""
    _cp, base, murl, config, _clock, session = mesh
    proxy = Proxy(session, base, PRODUCTPAGE)
    await proxy.sync()
    before = proxy.held["routes"]["version_info"]
    poll = asyncio.create_task(proxy.post("routes", wait=10))
    await wait_for_metric(session, murl, "pilot_xds", 1)  # the long-poll is waiting (nothing new: the ACK waits)
    assert not poll.done()
    traffic = config / "traffic.yaml"
    traffic.write_text(traffic.read_text().replace("weight: 80", "weight: 50").replace("weight: 20", "weight: 50"))
    status, rds = await poll
    assert status == 200 and rds["version_info"] != before
    weights = [c["weight"] for rc in rds["resources"] for vh in rc["virtual_hosts"] for r in vh["routes"]
               for c in r.get("route", {}).get("weighted_clusters", {}).get("clusters", [])]
    assert 50 in weights and 80 not in weights
    assert await metric(session, murl, "pilot_xds_pushes", {"type": "rds"}) >= 2
    assert await metric(session, murl, "pilot_k8s_cfg_events", {"type": "VirtualService", "event": "update"}) == 1


async def test_a_registered_proxy_appears_in_another_proxys_eds_and_leaves_after_the_grace_period(mesh):
    cp, base, murl, _c, clock, session = mesh
    productpage = Proxy(session, base, PRODUCTPAGE)
    await productpage.sync()
    cluster = "outbound|9080|v1|reviews.default.svc.cluster.local"
    assert productpage.endpoints(cluster) == []  # file Deployments are templates, not endpoints
    # the first workload behind reviews brings its service account into the clusters' SAN lists (auto-mTLS,
    # as istiod), so CDS changes too: the waiting CDS long-poll wakes, then EDS follows in ADS order
    poll = asyncio.create_task(productpage.post("clusters", wait=10))
    reviews = Proxy(session, base, REVIEWS)
    await reviews.post("clusters")  # connecting registers it
    status, _ = await poll
    assert status == 200
    assert (await productpage.post("clusters", wait=0))[0] == 304  # the ACK that opens EDS (ADS order)
    assert (await productpage.post("endpoints"))[0] == 200
    assert productpage.endpoints(cluster) == [("127.0.0.1", 15106)]  # its sidecar's inbound port
    assert productpage.endpoints("outbound|9080|v2|reviews.default.svc.cluster.local") == []
    inbound = [c for c in reviews.held["clusters"]["resources"] if c["name"].startswith("inbound|9080|")]
    lb = inbound[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert lb["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9181}  # app

    # reviews stops polling; before the grace period it stays, after it is gone (its service account leaves the
    # SAN lists: CDS wakes first again)
    poll = asyncio.create_task(productpage.post("clusters", wait=10))
    await wait_for_metric(session, murl, "pilot_xds", 1)  # the long-poll is in
    clock.now += GRACE - 1
    assert cp.expire() == ()
    clock.now += 1
    assert [n.name for n in cp.expire()] == ["reviews-v1"]
    status, _ = await poll
    assert status == 200 and (await productpage.post("clusters", wait=0))[0] == 304
    assert (await productpage.post("endpoints"))[0] == 200
    assert productpage.endpoints(cluster) == []
    assert "reviews-v1.default" not in await syncz(session, base)


async def test_a_long_poll_in_flight_keeps_a_proxy_registered(mesh):
    cp, base, murl, _c, clock, session = mesh
    reviews = Proxy(session, base, REVIEWS)
    await reviews.post("clusters")
    poll = asyncio.create_task(reviews.post("clusters", wait=10))
    await wait_for_metric(session, murl, "pilot_xds", 1)  # the long-poll is in
    assert await metric(session, murl, "pilot_xds") == 1  # the waiting long-poll is a connected proxy
    clock.now += GRACE * 2
    assert cp.expire() == ()  # waiting on a long-poll = connected
    poll.cancel()  # the client goes away: the server's handler is cancelled and releases the proxy
    with pytest.raises(asyncio.CancelledError):
        await poll
    await long_poll_in(cp, REVIEWS["id"], held=False)
    clock.now += GRACE
    assert [n.name for n in cp.expire()] == ["reviews-v1"]


async def test_a_broken_file_keeps_the_last_good_config_and_is_reported(mesh):
    cp, base, murl, config, _clock, session = mesh
    proxy = Proxy(session, base, PRODUCTPAGE)
    await proxy.sync()
    version = proxy.held["routes"]["version_info"]
    (config / "traffic.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                                         "metadata: {name: reviews\nspec: [\n")
    assert cp.reload() is False  # nothing changed in what is served
    async with session.get(f"{base}/debug/configz") as resp:
        configz = await resp.json()
    assert any("traffic.yaml" in e for e in configz["errors"])
    assert any("keeping its last good version" in e for e in configz["errors"])
    assert await metric(session, murl, "galley_validation_failed") >= 1
    assert await metric(session, murl, "pilot_config_errors") >= 1
    assert len([r for r in cp.resources if r.kind == "VirtualService"]) == 3
    assert (await proxy.post("routes", wait=0.2))[0] == 304  # still holding the current config
    assert (await syncz(session, base))["productpage-v1.default"]["version"] == version


async def test_bad_requests_name_the_field(mesh):
    _cp, base, _m, _c, _clock, session = mesh
    cases = [
        ({"node": {"id": "nope"}}, "node.id"),
        ({}, "node"),
        ({"node": REVIEWS, "type_url": "type.googleapis.com/envoy.config.listener.v3.Listener"}, "type_url"),
        ({"node": REVIEWS, "resource_names": "x"}, "resource_names"),
        ({"node": REVIEWS, "error_detail": "boom"}, "error_detail"),
    ]
    for body, field in cases:
        async with session.post(f"{base}/v3/discovery:clusters", json=body) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"].startswith(field)
    async with session.post(f"{base}/v3/discovery:clusters", data=b"{") as resp:
        assert resp.status == 400 and "not JSON" in (await resp.json())["error"]


async def meshctl(*argv: str) -> tuple[int, str, str]:
    """Run `meshctl` (synchronous urllib inside) in a thread so the server in this loop can answer."""
    import io

    from control.cli.meshctl import main

    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


async def test_meshctl_proxy_status_shows_synced_stale_and_nack(mesh):
    _cp, base, _m, _c, _clock, session = mesh
    reviews, productpage = Proxy(session, base, REVIEWS), Proxy(session, base, PRODUCTPAGE)
    await productpage.sync()
    await reviews.post("clusters")
    for path in ("clusters", "endpoints", "listeners"):
        if path != "clusters":
            await reviews.post(path)
        await reviews.post(path, wait=0)
    await reviews.post("routes")
    await reviews.post("routes", wait=0, error="bad route")
    code, out, err = await meshctl("proxy-status", "--control", base)
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["NAME", "CDS", "LDS", "EDS", "RDS", "VERSION"]
    rows = {line[0]: line for line in lines[1:3]}  # the table; NACK details follow it
    assert rows["productpage-v1.default"][1:5] == ["SYNCED"] * 4
    assert rows["reviews-v1.default"][1:6] == ["SYNCED", "SYNCED", "SYNCED", "STALE", "(NACK)"]
    assert "reviews-v1.default rejected RDS version" in out and "bad route" in out


async def test_meshctl_proxy_config_reads_a_running_proxys_admin(mesh, upstream, proxy_factory):
    from pyproxy.admin.server import make_app as admin_app, start_admin
    from tests.support.proxy import bootstrap, decode_bootstrap

    config = bootstrap({"backend": [upstream.port]})
    running = await proxy_factory(config)
    runner, port = await start_admin(admin_app(running.server, bootstrap=decode_bootstrap(config)), "127.0.0.1", 0)
    try:
        code, out, err = await meshctl("proxy-config", "cluster", "--admin", f"127.0.0.1:{port}")
        assert code == 0, err
        assert out.split("\n")[0].split() == ["SERVICE", "FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE",
                                             "DESTINATION", "RULE"]
        assert "backend" in out
        code, out, _ = await meshctl("proxy-config", "endpoint", "--admin", f"127.0.0.1:{port}")
        assert f"127.0.0.1:{upstream.port}" in out and "HEALTHY" in out
        code, out, _ = await meshctl("proxy-config", "all", "--admin", f"127.0.0.1:{port}", "-o", "json")
        assert code == 0 and '"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"' in out
    finally:
        await runner.cleanup()
    code, _, err = await meshctl("proxy-config", "route", "nobody", "--control", mesh[1])
    assert code == 1 and "no proxy named 'nobody'" in err


async def test_a_gateway_gets_the_listeners_of_the_gateways_selecting_its_labels(mesh):
    _cp, base, _m, _c, _clock, session = mesh
    gateway = Proxy(session, base, {
        "id": node_id("router", "127.0.0.1", "istio-ingressgateway", "istio-system"),
        "metadata": {"LABELS": {"istio": "ingressgateway", "app": "istio-ingressgateway"}, "ADMIN_PORT": 15300}})
    await gateway.sync()
    listeners = {lis["name"]: lis for lis in gateway.held["listeners"]["resources"]}
    assert list(listeners) == ["0.0.0.0_8080"]  # bookinfo-gateway's server port, as written
    assert gateway.names("routes") == ["http.8080"]
    assert (await syncz(session, base))["istio-ingressgateway.istio-system"]["type"] == "router"


async def test_after_a_restart_remembered_proxies_keep_their_endpoints_until_the_grace_period(tmp_path):
    config = tmp_path / "mesh"
    shutil.copytree(EXAMPLES, config)
    state = str(tmp_path / "state" / "registrations.json")
    clock = FakeClock()
    cluster = "outbound|9080|v1|reviews.default.svc.cluster.local"
    async with aiohttp.ClientSession() as session:
        for incarnation in ("first", "second"):
            cp = ControlPlane(str(config), clock=clock, grace=GRACE, debounce=0.01, nonce_prefix=incarnation,
                              state_file=state)
            await cp.start(watch=False)
            runner, port = await start_site(make_app(cp), "127.0.0.1", 0)
            base = f"http://127.0.0.1:{port}"
            try:
                if incarnation == "first":
                    await Proxy(session, base, REVIEWS).post("clusters")  # registers, then "goes quiet"
                    continue
                productpage = Proxy(session, base, PRODUCTPAGE)  # reconnects first, after the restart
                await productpage.sync()
                assert productpage.endpoints(cluster) == [("127.0.0.1", 15106)]
                poll = asyncio.create_task(productpage.post("clusters", wait=10))  # SAN lists change first
                await long_poll_in(cp, PRODUCTPAGE["id"])  # connected: it must survive the clock jump below
                clock.now += GRACE
                assert [n.name for n in cp.expire()] == ["reviews-v1"]  # it never came back
                assert (await poll)[0] == 200 and (await productpage.post("clusters", wait=0))[0] == 304
                assert (await productpage.post("endpoints"))[0] == 200
                assert productpage.endpoints(cluster) == []
            finally:
                await runner.cleanup()
                await cp.stop()
