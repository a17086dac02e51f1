"""xDS bookkeeping (control.xds.cache): the ACK/NACK/nonce/version rules of Envoy's xDS protocol and the ADS
ordering gate, walked request by request without sockets."""
from __future__ import annotations

import pytest

from control.xds.cache import (CDS, EDS, LDS, ORDER, RDS, DiscoveryRequest, ProxySnapshot, RequestKind,
                               SyncStatus, XdsCache)
from control.xds.node import NodeError, parse_node

P = "sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local"


def cluster(name):
    return {"@type": CDS.type_url, "name": name, "type": "EDS"}


def snapshot(clusters=("a",), endpoints=("a",), listeners=("l",), routes=("80",), at=0.0):
    return ProxySnapshot.build({
        "cds": [cluster(c) for c in clusters],
        "eds": [{"@type": EDS.type_url, "cluster_name": e, "endpoints": []} for e in endpoints],
        "lds": [{"@type": LDS.type_url, "name": n} for n in listeners],
        "rds": [{"@type": RDS.type_url, "name": r} for r in routes],
    }, changed_at=at)


def ack(resp):
    return DiscoveryRequest(version_info=resp.version_info, response_nonce=resp.nonce)


def sync(cache, proxy=P):
    """Drive a proxy that applies everything: respond to and ACK each due type in order."""
    for t in ORDER:
        if cache.ready(proxy, t):
            cache.receive(proxy, t, ack(cache.respond(proxy, t)))


def test_snapshot_version_is_a_content_hash_shared_by_all_types():
    a, b = snapshot(), snapshot()
    assert a.version == b.version and len(a.version) == 16
    assert snapshot(clusters=("a", "b")).version != a.version
    assert set(a.hashes) == {"cds", "eds", "lds", "rds"}


def test_first_request_gets_resources_with_version_and_nonce():
    cache = XdsCache("n-")
    cache.set_snapshot(P, snapshot())
    assert cache.receive(P, CDS, DiscoveryRequest()).kind is RequestKind.INITIAL
    assert cache.ready(P, CDS)
    resp = cache.respond(P, CDS)
    assert resp.version_info == cache.snapshot(P).version
    assert resp.nonce == "n-1"
    assert resp.type_url == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert [r["name"] for r in resp.as_dict()["resources"]] == ["a"]
    assert cache.type_state(P, CDS).status is SyncStatus.STALE  # sent, not yet acknowledged


def test_ack_echoing_version_and_nonce_marks_synced_and_nothing_more_is_due():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    resp = cache.respond(P, CDS)
    assert cache.receive(P, CDS, ack(resp)).kind is RequestKind.ACK
    assert cache.type_state(P, CDS).status is SyncStatus.SYNCED
    assert not cache.ready(P, CDS)  # a long-poll would wait here


def test_nack_keeps_status_stale_with_the_error_and_the_same_content_is_not_resent():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    sync(cache)
    cache.set_snapshot(P, snapshot(routes=("80", "9080")))
    resp = cache.respond(P, RDS)
    out = cache.receive(P, RDS, DiscoveryRequest(version_info="old", response_nonce=resp.nonce,
                                                 error_detail="route 9080: unknown cluster"))
    assert out.kind is RequestKind.NACK
    st = cache.type_state(P, RDS)
    assert st.status is SyncStatus.STALE and st.nacked
    assert st.nack_error == "route 9080: unknown cluster" and st.nack_version == resp.version_info
    assert not cache.ready(P, RDS)  # rejected content is not pushed again
    cache.set_snapshot(P, snapshot(routes=("80", "8080")))  # fixed config: different content, due again
    assert cache.ready(P, RDS)
    cache.set_snapshot(P, snapshot(routes=("80",)))  # back to what the proxy holds: nothing to send
    assert not cache.ready(P, RDS) and cache.type_state(P, RDS).status is SyncStatus.STALE


def test_polling_again_after_a_nack_with_the_old_version_is_not_an_ack():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    sync(cache)
    held = cache.type_state(P, LDS).acked_version
    cache.set_snapshot(P, snapshot(listeners=("l", "bad")))
    resp = cache.respond(P, LDS)
    cache.receive(P, LDS, DiscoveryRequest(version_info=held, response_nonce=resp.nonce, error_detail="bad"))
    # the NACK went out; the proxy's next poll echoes the nonce and the version it still runs, no error
    out = cache.receive(P, LDS, DiscoveryRequest(version_info=held, response_nonce=resp.nonce))
    assert out.kind is RequestKind.HOLD
    st = cache.type_state(P, LDS)
    assert st.nacked and st.acked_version == held and not cache.ready(P, LDS)


def test_reverting_a_rejected_config_shows_synced_again():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    sync(cache)
    cache.set_snapshot(P, snapshot(listeners=("l", "bad")))
    resp = cache.respond(P, LDS)
    cache.receive(P, LDS, DiscoveryRequest(response_nonce=resp.nonce, error_detail="bad"))
    assert cache.describe(P)["types"]["lds"]["status"] == "STALE"
    assert cache.describe(P)["types"]["lds"]["nacked"]
    cache.set_snapshot(P, snapshot())  # the operator reverts: the proxy holds the current config again
    assert not cache.ready(P, LDS)
    lds = cache.describe(P)["types"]["lds"]
    assert lds["status"] == "SYNCED" and not lds["nacked"]
    assert lds["nack"]["error"] == "bad"  # history kept


def test_stale_nonce_changes_nothing():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    first = cache.respond(P, CDS)
    cache.respond(P, CDS)  # re-sent (e.g. the client retried): only the newest nonce counts
    assert cache.receive(P, CDS, ack(first)).kind is RequestKind.STALE
    assert cache.type_state(P, CDS).status is SyncStatus.STALE


@pytest.mark.parametrize("t", [EDS, LDS, RDS])
def test_a_type_is_not_due_before_every_earlier_type_is_acked(t):
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    assert not cache.ready(P, t)
    for earlier in ORDER[:ORDER.index(t)]:
        assert not cache.ready(P, t)
        cache.receive(P, earlier, ack(cache.respond(P, earlier)))
    assert cache.ready(P, t)


def test_a_rejected_cds_stops_the_chain_so_no_listener_names_an_unknown_cluster():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    sync(cache)
    cache.set_snapshot(P, snapshot(clusters=("a", "b"), endpoints=("a", "b"), routes=("80", "b")))
    resp = cache.respond(P, CDS)
    cache.receive(P, CDS, DiscoveryRequest(response_nonce=resp.nonce, error_detail="bad cluster b"))
    assert [cache.ready(P, t) for t in ORDER] == [False, False, False, False]


def test_on_one_ordered_stream_a_type_is_due_once_the_earlier_types_were_sent_not_yet_acked():
    """gRPC ADS: Envoy holds the CDS ACK back until new EDS clusters warm, so EDS must follow CDS unacked."""
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    sync(cache)
    cache.set_snapshot(P, snapshot(clusters=("a", "b"), endpoints=("a", "b")))
    assert cache.ready(P, CDS, ordered_stream=True) and not cache.ready(P, EDS, ordered_stream=True)
    cds = cache.respond(P, CDS)
    assert cache.ready(P, EDS, ordered_stream=True)
    assert not cache.ready(P, EDS)  # REST: separate requests, so still gated on the ACK
    cache.receive(P, CDS, DiscoveryRequest(response_nonce=cds.nonce, error_detail="bad cluster b"))
    assert not cache.ready(P, EDS, ordered_stream=True)  # a NACK still stops the chain


def test_on_one_ordered_stream_content_sent_and_not_yet_answered_is_not_due_again():
    """Envoy requests EDS before it ACKs CDS; resending that CDS would make its coming ACK stale (a busy Envoy
    then never reached SYNCED). Over REST a second poll means the response was lost, so it is sent again."""
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    cds = cache.respond(P, CDS)
    assert not cache.ready(P, CDS, ordered_stream=True)
    assert cache.ready(P, CDS)  # REST
    assert cache.ready(P, EDS, ordered_stream=True)
    cache.set_snapshot(P, snapshot(clusters=("a", "b")))
    assert cache.ready(P, CDS, ordered_stream=True)  # new content is due at once, answered or not
    cache.respond(P, CDS)
    assert cache.receive(P, CDS, DiscoveryRequest(version_info=cds.version_info,
                                                  response_nonce=cds.nonce)).kind is RequestKind.STALE
    assert not cache.ready(P, CDS, ordered_stream=True)  # a stale ACK is not an answer either
    assert cache.receive(P, CDS, DiscoveryRequest()).kind is RequestKind.INITIAL  # a new stream
    assert cache.ready(P, CDS, ordered_stream=True)


def test_only_changed_types_are_due_after_a_change():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    sync(cache)
    assert cache.set_snapshot(P, snapshot(endpoints=("a", "b")))
    assert [cache.ready(P, t) for t in ORDER] == [False, True, False, False]


def test_setting_the_same_content_is_not_a_change():
    cache = XdsCache()
    assert cache.set_snapshot(P, snapshot())
    assert not cache.set_snapshot(P, snapshot())


def test_after_a_control_plane_restart_a_proxy_holding_the_current_version_resumes_without_a_resend():
    old = XdsCache("a-")
    old.set_snapshot(P, snapshot())
    sync(old)
    held = old.type_state(P, CDS)
    new = XdsCache("b-")
    new.set_snapshot(P, snapshot())
    out = new.receive(P, CDS, DiscoveryRequest(version_info=held.acked_version, response_nonce=held.acked_nonce))
    assert out.kind is RequestKind.RESUME
    assert not new.ready(P, CDS)
    assert new.type_state(P, CDS).status is SyncStatus.SYNCED


def test_after_a_restart_with_changed_config_the_proxy_gets_the_new_version():
    new = XdsCache("b-")
    new.set_snapshot(P, snapshot(clusters=("a", "c")))
    out = new.receive(P, CDS, DiscoveryRequest(version_info="0123456789abcdef", response_nonce="a-7"))
    assert out.kind is RequestKind.STALE
    assert new.ready(P, CDS)


def test_a_restarted_proxy_starting_afresh_gets_everything_again():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    sync(cache)
    assert cache.receive(P, CDS, DiscoveryRequest()).kind is RequestKind.INITIAL  # no nonce, no version
    assert cache.ready(P, CDS)
    assert cache.type_state(P, CDS).status is SyncStatus.NOT_SENT
    assert not cache.ready(P, EDS)  # EDS waits for the new CDS ACK, as at first connect
    cache.receive(P, CDS, ack(cache.respond(P, CDS)))
    assert cache.ready(P, EDS) is False  # the proxy's EDS subscription still holds the content ...
    cache.receive(P, EDS, DiscoveryRequest())  # ... until it too starts afresh
    assert cache.ready(P, EDS)


def test_sync_status_walks_not_sent_stale_synced():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    assert cache.type_state(P, LDS).status is SyncStatus.NOT_SENT
    sync(cache)
    d = cache.describe(P)
    assert d["version"] == cache.snapshot(P).version
    assert {t: v["status"] for t, v in d["types"].items()} == {t.short: "SYNCED" for t in ORDER}


def test_convergence_is_reported_once_when_the_last_type_is_acked():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot(at=100.0))
    outcomes = []
    for t in ORDER:
        outcomes.append(cache.receive(P, t, ack(cache.respond(P, t)), now=100.25).converged_after)
    assert outcomes == [None, None, None, 0.25]
    cache.set_snapshot(P, snapshot(endpoints=("b",), at=200.0))
    out = cache.receive(P, EDS, ack(cache.respond(P, EDS)), now=200.5)
    assert out.converged_after == 0.5


def test_removed_proxy_has_no_due_responses():
    cache = XdsCache()
    cache.set_snapshot(P, snapshot())
    cache.remove(P)
    assert not cache.ready(P, CDS) and P not in cache.proxy_ids()


# --- node identity (control.xds.node) ---------------------------------------------------------------------

def test_node_from_istio_id_and_metadata():
    node = parse_node({"id": P, "cluster": "reviews.default", "metadata": {
        "NAME": "reviews-v1", "NAMESPACE": "default", "SERVICE_ACCOUNT": "bookinfo-reviews",
        "LABELS": {"app": "reviews", "version": "v1"}, "INSTANCE_IPS": "10.0.0.1,fe80::1",
        "POD_PORTS": '[{"name":"http","containerPort":9080,"protocol":"TCP"}]',
        "INBOUND_PORT": "15106", "OUTBOUND_PORT": 15101, "ADMIN_PORT": "15100"}})
    assert (node.type, node.ip, node.name, node.namespace) == ("sidecar", "10.0.0.1", "reviews-v1", "default")
    assert dict(node.labels) == {"app": "reviews", "version": "v1"}
    assert node.pod_ports[0].port == 9080 and node.pod_ports[0].name == "http"
    assert (node.inbound_port, node.outbound_port, node.admin_port) == (15106, 15101, 15100)
    assert node.short == "reviews-v1.default"


def test_node_defaults_come_from_the_id_and_istio_ports():
    node = parse_node({"id": "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"})
    assert node.is_gateway and node.name == "istio-ingressgateway" and node.namespace == "istio-system"
    assert (node.inbound_port, node.outbound_port, node.admin_port) == (15006, 15001, 15000)


@pytest.mark.parametrize("node, field", [
    (None, "node"),
    ({"id": "bogus"}, "node.id"),
    ({"id": "sidecar~not-an-ip~a.b~b.svc.cluster.local"}, "INSTANCE_IPS"),
    ({"id": P, "metadata": {"INBOUND_PORT": "x"}}, "node.metadata.INBOUND_PORT"),
    ({"id": P, "metadata": {"LABELS": ["app"]}}, "node.metadata.LABELS"),
    ({"id": P, "metadata": {"POD_PORTS": [{"name": "http"}]}}, "node.metadata.POD_PORTS[0]"),
])
def test_bad_node_names_the_field(node, field):
    with pytest.raises(NodeError, match=field.replace(".", r"\.").replace("[", r"\[")):
        parse_node(node)


def test_response_body_is_envoys_discovery_response_json():
    import json

    cache = XdsCache("n-")
    cache.set_snapshot(P, snapshot(clusters=("a", "b")))
    resp = cache.respond(P, CDS)
    body = json.loads(resp.body())
    assert body == {"version_info": cache.snapshot(P).version, "resources": [cluster("a"), cluster("b")],
                    "type_url": CDS.type_url, "nonce": "n-1", "control_plane": {"identifier": "pyproxy-control"}}
    assert cache.snapshot(P).resources("cds") == [cluster("a"), cluster("b")]


def test_node_dict_is_the_inverse_of_parse_node():
    from control.xds.node import node_dict

    node = parse_node({"id": P, "cluster": "reviews.default", "metadata": {
        "SERVICE_ACCOUNT": "sa", "LABELS": {"app": "reviews"}, "POD_PORTS": [{"name": "http", "containerPort": 9}],
        "INBOUND_PORT": 1, "ISTIO_VERSION": "x"}})
    assert parse_node(node_dict(node)) == node


def test_a_payload_keeps_the_pieces_it_is_joined_from_and_hashes_the_array_they_make():
    from control.xds.cache import Payload, canonical_json, content_hash

    parts = [canonical_json(cluster(n)) for n in ("a", "b", "c")]
    payload = Payload.join(parts, ["a", "b", "c"])
    assert all(mine is theirs for mine, theirs in zip(payload.items, parts))  # shared with the renderer, not copied
    assert payload.body == canonical_json([cluster("a"), cluster("b"), cluster("c")])
    assert payload.hash == content_hash(payload.body) and payload.size == len(payload.body) and payload.count == 3
    assert payload == Payload.of([cluster("a"), cluster("b"), cluster("c")]) != Payload.of([cluster("a")])
    assert Payload.join([]).body == b"[]" and Payload.join([]).size == 2


def test_a_response_is_written_in_pieces_from_the_payloads_items():
    import json

    cache = XdsCache("n-")
    cache.set_snapshot(P, snapshot(clusters=[f"c{i:02}" for i in range(30)]))
    resp = cache.respond(P, CDS)
    body = resp.body()
    assert json.loads(body)["resources"] == [cluster(f"c{i:02}") for i in range(30)] and resp.size() == len(body)
    small = list(resp.chunks(chunk=200))
    assert len(small) > 5 and b"".join(small) == body and all(len(c) < 400 for c in small)
    big = list(resp.chunks(chunk=8))  # every resource is "large": written as the payload's own bytes, uncopied
    own = {id(i) for i in cache.snapshot(P).payloads["cds"].items}
    assert sum(id(c) in own for c in big) == 30 and b"".join(big) == body
