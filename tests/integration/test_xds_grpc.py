"""ADS over gRPC (control.xds.grpc_ads) on 127.0.0.1, port 0: a grpc.aio client speaks Envoy's
StreamAggregatedResources to the real control plane over a copy of examples/mesh. The same cache rules as the
REST path (tests/integration/test_xds_server.py): ADS order, ACK, NACK kept in /debug/syncz, pushes."""
from __future__ import annotations

import asyncio
import shutil

import grpc
import pytest
from google.protobuf import struct_pb2

from control.serve import ControlPlane
from control.xds.admission import PlaintextXds
from control.xds.cache import CDS, EDS, LDS, RDS
from control.xds.grpc_ads import plaintext_grpc_gate, start_grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from tests.integration.test_xds_server import EXAMPLES, REVIEWS

pytestmark = pytest.mark.timeout(60)


def node_message(node: dict) -> base_pb2.Node:
    meta = struct_pb2.Struct()
    meta.update(node["metadata"])
    return base_pb2.Node(id=node["id"], cluster=node["cluster"], metadata=meta)


@pytest.fixture
async def ads(tmp_path):
    config = tmp_path / "mesh"
    shutil.copytree(EXAMPLES, config)
    cp = ControlPlane(str(config), grace=30.0, debounce=0.01, long_poll_timeout=10.0, nonce_prefix="g-")
    await cp.start(watch=True)
    server, port = await start_grpc(cp, plaintext_grpc_gate(cp, PlaintextXds.ON), "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield cp, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel), config
    finally:
        await channel.close()
        await server.stop(grace=0)
        await cp.stop()


class Stream:
    """One StreamAggregatedResources call, driven the way Envoy drives it."""

    def __init__(self, stub, node: dict):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.node = node_message(node)
        self.call = stub.StreamAggregatedResources(self._requests())
        self.held: dict[str, discovery_pb2.DiscoveryResponse] = {}

    async def _requests(self):
        first = True
        while True:
            request = await self.queue.get()
            if first:
                request.node.CopyFrom(self.node)  # set_node_on_first_message_only
                first = False
            yield request

    def subscribe(self, type_url: str, names: tuple[str, ...] = ()) -> None:
        self.queue.put_nowait(discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names))

    def ack(self, type_url: str, error: str | None = None) -> None:
        last = self.held[type_url]
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, response_nonce=last.nonce,
                                             version_info="" if error else last.version_info)
        if error:
            req.error_detail.code, req.error_detail.message = 3, error
        self.queue.put_nowait(req)

    async def receive(self) -> discovery_pb2.DiscoveryResponse:
        response = await asyncio.wait_for(self.call.read(), 10)
        assert response is not grpc.aio.EOF
        self.held[response.type_url] = response
        return response

    async def ack_everything(self) -> None:
        """Read and ACK whatever comes (a push after the proxy registered can resend every type)."""
        while True:
            response = await self.call.read()
            if response is grpc.aio.EOF:
                return
            self.held[response.type_url] = response
            self.ack(response.type_url)

    async def next_of(self, type_url: str):
        """The next response of `type_url`; others that come first (a push after the proxy registered) are
        ACKed, as Envoy would."""
        while True:
            response = await self.receive()
            if response.type_url == type_url:
                return response
            self.ack(response.type_url)


async def test_clusters_then_endpoints_after_the_ack_then_listeners_and_routes_all_synced(ads):
    cp, stub, _config = ads
    s = Stream(stub, REVIEWS)
    s.subscribe(CDS.type_url)
    cds = await s.receive()
    assert cds.type_url == CDS.type_url and cds.nonce.startswith("g-") and cds.version_info
    names = set()
    for any_ in cds.resources:
        cluster = cluster_pb2.Cluster()
        assert any_.Unpack(cluster)
        names.add(cluster.name)
    assert "outbound|9080|v2|reviews.default.svc.cluster.local" in names
    s.subscribe(EDS.type_url)
    s.ack(CDS.type_url)
    await s.next_of(EDS.type_url)
    s.ack(EDS.type_url)
    s.subscribe(LDS.type_url)
    await s.next_of(LDS.type_url)
    s.ack(LDS.type_url)
    s.subscribe(RDS.type_url)
    await s.next_of(RDS.type_url)
    s.ack(RDS.type_url)
    pump = asyncio.get_running_loop().create_task(s.ack_everything())  # a push after registering, as Envoy would
    try:
        row = await _row(cp, "reviews-v1.default",
                         lambda r: all(t["status"] == "SYNCED" for t in r["types"].values()))
    finally:
        pump.cancel()
    assert {t: v["status"] for t, v in row["types"].items()} == dict.fromkeys(("cds", "eds", "lds", "rds"), "SYNCED")
    assert row["connected"] and {r.version_info for r in s.held.values()} == {row["version"]}
    s.call.cancel()


async def test_a_request_for_another_type_does_not_resend_what_was_sent_and_not_yet_answered(ads):
    """Envoy subscribes to EDS (and LDS) before it ACKs CDS: it holds that ACK while the clusters warm. The
    stream must not answer those requests with the same CDS again (a new nonce makes the coming ACK stale:
    under load a real Envoy applied thousands of identical CDS responses and never reached SYNCED)."""
    cp, stub, _config = ads
    s = Stream(stub, REVIEWS)
    s.subscribe(CDS.type_url)
    first = await s.receive()
    assert first.type_url == CDS.type_url
    s.subscribe(EDS.type_url)
    s.subscribe(LDS.type_url)
    seen = []
    while not seen or seen[-1].type_url != LDS.type_url:
        seen.append(await s.receive())
    versions = [first.version_info] + [r.version_info for r in seen if r.type_url == CDS.type_url]
    assert len(versions) == len(set(versions)), [(r.type_url.rsplit(".", 1)[-1], r.version_info) for r in seen]
    assert [r.type_url for r in seen if r.version_info == first.version_info] == [EDS.type_url, LDS.type_url]
    s.ack(CDS.type_url)
    row = await _row(cp, "reviews-v1.default", lambda r: r["types"]["cds"]["status"] == "SYNCED")
    assert row["types"]["cds"]["acked"]["nonce"] == s.held[CDS.type_url].nonce
    s.call.cancel()


async def test_a_nack_is_kept_and_shown_and_a_config_edit_is_pushed_on_the_stream(ads):
    cp, stub, config = ads
    s = Stream(stub, REVIEWS)
    s.subscribe(CDS.type_url)
    await s.receive()
    s.ack(CDS.type_url, error="cluster outbound|9080||x: refused")
    row = await _row(cp, "reviews-v1.default", lambda r: r["types"]["cds"]["nacked"])
    assert row["types"]["cds"]["status"] == "STALE"
    assert row["types"]["cds"]["nack"]["error"] == "cluster outbound|9080||x: refused"
    before = s.held[CDS.type_url].version_info
    vs = next(config.glob("*.yaml"))
    text = vs.read_text()
    vs.write_text(text + "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: default}\n"
                  "spec: {selector: {app: extra}, ports: [{name: http, port: 9080}]}\n")
    pushed = await s.next_of(CDS.type_url)  # new content: sent again on the same stream
    assert pushed.version_info != before
    s.call.cancel()


async def test_a_bad_node_ends_the_stream_with_invalid_argument_naming_the_field(ads):
    _cp, stub, _config = ads
    s = Stream(stub, {**REVIEWS, "id": "not-a-node-id"})
    s.subscribe(CDS.type_url)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.receive()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "node.id" in err.value.details()


async def _row(cp, name: str, want) -> dict:
    for _ in range(500):
        rows = {r["name"]: r for r in cp.syncz()}
        if name in rows and rows[name]["types"] and want(rows[name]):
            return rows[name]
        await asyncio.sleep(0.01)  # poll interval of a bounded wait
    raise AssertionError(f"{name}: not as wanted in syncz: {cp.syncz()}")


class DeltaStream(Stream):
    """A DeltaAggregatedResources call."""

    def __init__(self, stub, node: dict):
        self.queue = asyncio.Queue()
        self.node = node_message(node)
        self.call = stub.DeltaAggregatedResources(self._requests())
        self.held = {}

    def subscribe(self, type_url: str, names: tuple[str, ...] = ()) -> None:
        self.queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=names))

    def ack(self, type_url: str, error: str | None = None) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=self.held[type_url].nonce)
        if error:
            req.error_detail.code, req.error_detail.message = 3, error
        self.queue.put_nowait(req)


async def test_delta_sends_every_cluster_then_only_what_changed_and_acks_show_synced(ads):
    cp, stub, config = ads
    s = DeltaStream(stub, REVIEWS)
    s.subscribe(CDS.type_url)  # wildcard
    first = await s.receive()
    names = {r.name for r in first.resources}
    assert "outbound|9080|v2|reviews.default.svc.cluster.local" in names and all(r.version for r in first.resources)
    assert first.system_version_info and not first.removed_resources
    s.ack(CDS.type_url)
    row = await _row(cp, "reviews-v1.default", lambda r: r["types"]["cds"]["status"] == "SYNCED")
    assert row["types"]["cds"]["acked"]["version"] == first.system_version_info
    eds_name = "outbound|9080|v1|reviews.default.svc.cluster.local"
    s.subscribe(EDS.type_url, (eds_name,))
    eds = await s.next_of(EDS.type_url)
    assert [r.name for r in eds.resources] == [eds_name]

    vs = next(config.glob("*.yaml"))
    vs.write_text(vs.read_text() + "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: default}\n"
                  "spec: {selector: {app: extra}, ports: [{name: http, port: 9080}]}\n")
    pushed = await s.next_of(CDS.type_url)
    assert [r.name for r in pushed.resources] == ["outbound|9080||extra.default.svc.cluster.local"]
    s.ack(CDS.type_url, error="no extra")
    row = await _row(cp, "reviews-v1.default", lambda r: r["types"]["cds"]["nacked"])
    assert row["types"]["cds"]["nack"]["error"] == "no extra"
    s.call.cancel()
