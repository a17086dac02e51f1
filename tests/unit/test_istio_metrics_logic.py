"""The pure parts of Istio's metrics: peer metadata from a node and through its header, the filter config's
checks and reporter rule, the bounded store and its exposition (parsed back with prometheus_client)."""
from __future__ import annotations

import base64

import pytest
from google.protobuf import json_format, struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from pyproxy.config.model import TypedStruct
from pyproxy.filters.istio_stats import PLUGIN_CONFIG, IstioStatsFilterConfig
from pyproxy.observe.istio_metrics import LABELS, IstioMetrics, PeerMetadata
from pyproxy.observe.stats import Stats, render_prometheus

NODE_MD = {"NAME": "reviews-v2", "NAMESPACE": "bookinfo", "SERVICE_ACCOUNT": "reviews", "CLUSTER_ID": "c1",
           "LABELS": {"app": "reviews", "version": "v2"}}


def test_peer_metadata_from_node_defaults_and_survives_its_header():
    p = PeerMetadata.from_node("sidecar~1", NODE_MD)
    assert (p.workload, p.namespace, p.app, p.version, p.canonical_service, p.canonical_revision, p.cluster) == (
        "reviews-v2", "bookinfo", "reviews", "v2", "reviews", "v2", "c1")
    back = PeerMetadata.decode(p.encode(), "sidecar~1")
    assert back == p
    bare = PeerMetadata.from_node("", {})
    assert (bare.workload, bare.app, bare.canonical_revision, bare.cluster) == ("unknown", "unknown", "latest",
                                                                                 "Kubernetes")
    assert PeerMetadata.decode("not base64!") is None and PeerMetadata.decode("") is None


def nested_struct(depth: int) -> str:
    """A hostile peer header: base64 of a google.protobuf.Struct nested `depth` deep ({"a": {"a": ...}}), written
    as protobuf wire bytes by hand so that no library refuses to build it first."""
    def field(number: int, payload: bytes) -> bytes:  # a length-delimited field: tag, varint length, bytes
        n, length = len(payload), b""
        while True:
            byte, n = n & 0x7F, n >> 7
            length += bytes([byte | (0x80 if n else 0)])
            if not n:
                break
        return bytes([number << 3 | 2]) + length + payload
    struct = b""
    for _ in range(depth):  # Struct.fields is a map: entry {1: key, 2: Value}; Value.struct_value is field 5
        struct = field(1, field(1, b"a") + field(2, field(5, struct)))
    return base64.b64encode(struct).decode()


def test_the_header_pyproxy_writes_is_base64_json_with_istios_keys_and_loads_no_protobuf():
    """The documented deviation (pyproxy.observe.istio_metrics): pyproxy writes Istio's keys as JSON, not as a
    protobuf Struct, because the Struct runtime costs 4.3 MiB in every sidecar. Writing and reading pyproxy's
    own header must not load it: checked in a fresh interpreter (this test module imports protobuf itself)."""
    import json
    import subprocess
    import sys

    value = PeerMetadata.from_node("sidecar~1", NODE_MD).encode()
    assert json.loads(base64.b64decode(value, validate=True)) == {
        "WORKLOAD_NAME": "reviews-v2", "NAMESPACE": "bookinfo", "CLUSTER_ID": "c1", "SERVICE_ACCOUNT": "reviews",
        "LABELS": {"app": "reviews", "version": "v2", "service.istio.io/canonical-name": "reviews",
                   "service.istio.io/canonical-revision": "v2"}}
    probe = ("import sys; import pyproxy.server, pyproxy.filters.istio_stats as f; "
             "from pyproxy.observe.istio_metrics import PeerMetadata as P; "
             "v = P.from_node('s', {'NAMESPACE': 'n'}).encode(); assert P.decode(v).namespace == 'n'; "
             "print(sorted(m for m in sys.modules if m.startswith('google.protobuf')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_an_istio_proxy_header_with_all_its_node_keys_is_read():
    """istio-proxy 1.14 sent the whole node metadata (APP_CONTAINERS, INSTANCE_IPS, MESH_ID, NAME, OWNER,
    PLATFORM_METADATA...); the labels the metrics need come from the keys Istio reads, padding or not."""
    struct = struct_pb2.Struct()
    struct.update({"APP_CONTAINERS": "reviews", "CLUSTER_ID": "Kubernetes", "INSTANCE_IPS": "172.16.0.133",
                   "ISTIO_VERSION": "1.14.5", "MESH_ID": "cluster.local", "NAME": "reviews-v3-58b6479b-62rv5",
                   "NAMESPACE": "default", "WORKLOAD_NAME": "reviews-v3", "PLATFORM_METADATA": {},
                   "OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v3",
                   "LABELS": {"app": "reviews", "version": "v3", "pod-template-hash": "58b6479b",
                              "security.istio.io/tlsMode": "istio",
                              "service.istio.io/canonical-name": "reviews",
                              "service.istio.io/canonical-revision": "v3"}})
    value = base64.b64encode(struct.SerializeToString(deterministic=True)).decode()
    for sent in (value, value.rstrip("=")):  # Istio decodes with or without padding
        peer = PeerMetadata.decode(sent, "sidecar~172.16.0.133~reviews-v3-58b6479b-62rv5.default~x")
        assert peer is not None
        assert (peer.workload, peer.namespace, peer.app, peer.version, peer.canonical_service,
                peer.canonical_revision, peer.cluster) == ("reviews-v3", "default", "reviews", "v3", "reviews", "v3",
                                                           "Kubernetes")


def test_a_peer_header_is_decoded_once_per_value_and_hostile_values_are_refused(monkeypatch):
    from pyproxy.observe import istio_metrics

    monkeypatch.setattr(istio_metrics, "_DECODED", {})
    value = PeerMetadata.from_node("sidecar~1", NODE_MD).encode()
    first = PeerMetadata.decode(value, "sidecar~1")
    assert first is not None and PeerMetadata.decode(value, "sidecar~1") is first  # kept, not decoded again
    assert PeerMetadata.decode(value, "sidecar~2") is not first  # the node id is part of what is kept
    deep = base64.b64encode(b"{" + b'"a":[' * 3000 + b"]" * 3000 + b"}").decode()  # JSON deeper than Python recurses
    assert PeerMetadata.decode(deep) is None
    assert PeerMetadata.decode(nested_struct(500)) is None  # deeper than protobuf parses (100)
    assert PeerMetadata.decode(nested_struct(3)) is not None  # the same shape, shallow: a (useless) peer
    assert PeerMetadata.decode(base64.b64encode(b"\xff\xfe not a message").decode()) is None
    odd_kinds = struct_pb2.Struct()  # Istio reads string_value(): a number or a list is no value at all
    odd_kinds.update({"NAMESPACE": 5, "WORKLOAD_NAME": ["w"], "LABELS": {"app": True, "version": "v1"}})
    odd = PeerMetadata.decode(base64.b64encode(odd_kinds.SerializeToString()).decode())
    assert odd is not None and (odd.namespace, odd.workload, odd.app, odd.version) == ("unknown", "unknown",
                                                                                      "unknown", "v1")
    labels_not_a_map = struct_pb2.Struct()
    labels_not_a_map.update({"LABELS": "app=x"})
    assert PeerMetadata.decode(base64.b64encode(labels_not_a_map.SerializeToString()).decode()) is None
    monkeypatch.setattr(istio_metrics, "_DECODED_MAX", 4)
    for i in range(10):  # a peer inventing values: the kept answers never pass the bound
        invented = struct_pb2.Struct()
        invented.update({"NAME": f"w{i}"})
        PeerMetadata.decode(base64.b64encode(invented.SerializeToString()).decode())
        assert len(istio_metrics._DECODED) <= 4


@pytest.mark.parametrize("direction,value,reporter", [
    ("INBOUND", {}, "destination"), ("OUTBOUND", {}, "source"), ("UNSPECIFIED", {}, "source"),
    ("INBOUND", {"reporter": "SERVER_GATEWAY"}, "waypoint")])
def test_reporter_follows_the_listener_direction(direction, value, reporter):
    cfg = IstioStatsFilterConfig(TypedStruct(type_url=PLUGIN_CONFIG, value=value), Stats())
    hcm = type("H", (), {"node": None, "traffic_direction": direction})()
    assert cfg.local_for(hcm).reporter == reporter


@pytest.mark.parametrize("typed,message", [
    (TypedStruct(type_url="type.googleapis.com/other.Config", value={}), "expected 'type.googleapis.com/stats"),
    (TypedStruct(type_url=PLUGIN_CONFIG, value={"definitions": []}), "fields ['definitions'] are not supported"),
    (TypedStruct(type_url=PLUGIN_CONFIG, value={"metrics": [{"name": "tcp_sent_bytes_total"}]}),
     "metrics[0].name: 'tcp_sent_bytes_total' is not an HTTP metric"),
    (TypedStruct(type_url=PLUGIN_CONFIG, value={"metrics": [{"dimensions": {"x": "request.nope"}}]}),
     "metrics[0].dimensions.x: 'request.nope': unknown attribute"),
    (TypedStruct(type_url=PLUGIN_CONFIG, value={"reporter": "CLIENT"}), "reporter 'CLIENT'")])
def test_config_refuses_what_it_does_not_implement(typed, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        IstioStatsFilterConfig(typed, Stats())


def test_store_is_bounded_and_renders_buckets_through_prometheus_client():
    stats = Stats()
    store = stats.extension("istio", lambda: IstioMetrics(max_series=1))
    key = tuple(f"v{i}" for i in range(len(LABELS)))
    store.record(key, 0.5, 10, 1000)
    store.record(key, 7.0, 2600, 1001)
    store.record(tuple("x" for _ in LABELS), 1.0, 1, 1)  # a second tuple: over the bound, dropped
    assert store.dropped == 1
    samples = {(s.name, s.labels.get("le")): s.value
               for f in text_string_to_metric_families(render_prometheus(stats)) if f.name.startswith("istio")
               for s in f.samples}
    assert samples[("istio_requests_total", None)] == 2
    assert samples[("istio_request_duration_milliseconds_bucket", "0.5")] == 1  # upper-inclusive, as Envoy
    assert samples[("istio_request_duration_milliseconds_bucket", "5")] == 1
    assert samples[("istio_request_duration_milliseconds_bucket", "10")] == 2
    assert samples[("istio_request_bytes_bucket", "2500")] == 1
    assert samples[("istio_request_bytes_bucket", "5000")] == 2
    assert samples[("istio_response_bytes_bucket", "1000")] == 1
    assert samples[("istio_response_bytes_sum", None)] == 2001
    assert "istio_requests_total" not in render_prometheus(stats, filter="envoy_")


def _mesh_store(series: int) -> Stats:
    stats = Stats()
    for i in range(30):
        stats.counter(f"cluster.outbound|9080||svc{i}.default.svc.cluster.local.upstream_rq_200").inc(i)
    store = stats.extension("istio", lambda: IstioMetrics())
    for s in range(series):
        store.record(tuple(f"value-{s}-{i}" for i in range(len(LABELS))), 3.0 * s, 100 + s, 2000 + s)
    return stats


def test_the_text_in_pieces_is_the_text_in_one_go_with_histograms_cut_into_chunks():
    from pyproxy.observe import stats as stats_mod

    stats = _mesh_store(series=3)  # 3 series x 22 samples per histogram family: more than PIECE_SAMPLES
    pieces = list(stats_mod.prometheus_pieces(stats))
    whole = "".join(pieces)
    assert whole == render_prometheus(stats)
    istio = stats_mod.families_text(stats.extensions["istio"].collector().collect())
    assert whole.endswith(istio)  # the extension's text in one call (prometheus_client's: test_families_text.py)
    assert sum(p.startswith("# HELP istio_request_duration_milliseconds") for p in pieces) == 1
    cut = [p for p in pieces if p.startswith("istio_request_duration_milliseconds_bucket")]
    assert cut and all(p.count("\n") <= stats_mod.PIECE_SAMPLES for p in pieces if p.startswith("istio_"))


async def _render_counting_loop_turns(stats: Stats, **render_kw) -> tuple[str, int]:
    """render_prometheus_async's text, and how many times another task ran on the loop while it rendered."""
    import asyncio

    from pyproxy.observe.stats import render_prometheus_async

    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    text = await render_prometheus_async(stats, **render_kw)
    done = True
    await task
    return text, ticks - before


async def test_a_scrape_lets_the_event_loop_run_between_pieces():
    """The admin server's render gives the loop back while it works (a request on the proxy waits one slice,
    not the whole scrape); with no time slice it yields after every piece."""
    from pyproxy.observe.stats import prometheus_pieces

    stats = _mesh_store(series=4)
    text, turns = await _render_counting_loop_turns(stats, slice_s=0.0)
    assert text == render_prometheus(stats)
    assert turns >= len(list(prometheus_pieces(stats))) - 1


@pytest.mark.parametrize("slice_s, yields", [(0.5, "every piece"), (1.0, "every other piece"), (1e9, "never")])
async def test_a_scrape_gives_the_loop_back_once_a_slice_of_rendering_has_passed(slice_s, yields):
    """On a clock that moves 0.5 s per reading (one reading per piece, after the first): a 0.5 s slice yields after
    every piece, a 1 s slice after every other one, a slice longer than the render never."""
    from pyproxy.observe.stats import prometheus_pieces

    stats = _mesh_store(series=2)
    readings = iter(range(10_000))
    text, turns = await _render_counting_loop_turns(stats, slice_s=slice_s, clock=lambda: next(readings) * 0.5)
    pieces = len(list(prometheus_pieces(stats)))
    assert text == render_prometheus(stats)
    expected = {"every piece": pieces, "every other piece": pieces // 2, "never": 0}[yields]
    assert turns == expected


class _CountingPeer:
    """A real `ssl.SSLObject` after a real handshake, counting the parsed `getpeercert()` reads (the costly ones)."""

    def __init__(self, obj):
        self.obj, self.parsed_reads = obj, 0

    def getpeercert(self, binary_form: bool = False):
        if not binary_form:
            self.parsed_reads += 1
        return self.obj.getpeercert(binary_form)


def _handshaken_client(server_uri: str) -> _CountingPeer:
    """Both ends of a TLS handshake over memory BIOs; the client's SSLObject, which verified the server."""
    import ssl

    from tests.support.pki import TestCA
    from tests.support.tls import client_ctx, server_ctx

    ca = TestCA("mesh")
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx(ca.issue(uris=[server_uri])).wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx(ca.cert_pem).wrap_bio(bios[2], bios[3])
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        bios[0].write(bios[3].read())
        bios[2].write(bios[1].read())
    return _CountingPeer(client)


def test_the_upstream_principal_is_parsed_once_per_certificate_not_per_request():
    """istio.stats (reporter source) names the server's SPIFFE identity on every request of a pooled mTLS
    connection; the parsed certificate (getpeercert(), ~4 µs of dict building) is read only the first time."""
    cfg = IstioStatsFilterConfig(None, Stats())
    peer = _handshaken_client("spiffe://cluster.local/ns/default/sa/reviews")
    assert [cfg.principal_of(peer) for _ in range(3)] == ["spiffe://cluster.local/ns/default/sa/reviews"] * 3
    assert peer.parsed_reads == 1
