"""LEDS on the control plane (control/xds/leds.py): the LEDS form of ClusterLoadAssignments, the LbEndpoint
collections, and one client's subscription to them (ACK, NACK, a lost response, a reconnect)."""
from __future__ import annotations

import json

import pytest

from control.translate.common import CLUSTER_LOAD_ASSIGNMENT
from control.xds.cache import Payload
from control.xds.delta import PayloadIndex
from control.xds.leds import (LB_ENDPOINT, PREFIX, LedsError, LedsResponse, LedsSubscription, LedsViews,
                              check_collections, collection_of, convert)

CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"
GLOB = f"{PREFIX}{CLUSTER}/-/*"


def lb(port: int, weight: int = 1) -> dict:
    return {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": port}}},
            "load_balancing_weight": weight}


def cla(name: str, *ports: int, locality: dict | None = None) -> dict:
    group: dict = {"lb_endpoints": [lb(p) for p in ports]}
    if locality:
        group["locality"] = locality
    return {"@type": CLUSTER_LOAD_ASSIGNMENT, "cluster_name": name, "endpoints": [group]}


def view(views: LedsViews, *assignments: dict):
    return views(Payload.of(assignments))


def body(update, nonce: str = "n-1") -> dict:
    return json.loads(LedsResponse("v1", nonce, update).body())


def test_an_assignment_in_the_leds_form_names_a_collection_per_locality_and_its_endpoints_are_resources():
    conv = convert(cla(CLUSTER, 15106, 15107) | {"policy": {"overprovisioning_factor": 140}})
    out = json.loads(conv.assignment)
    assert out["policy"] == {"overprovisioning_factor": 140} and out["cluster_name"] == CLUSTER
    (group,) = out["endpoints"]
    assert "lb_endpoints" not in group
    assert group["leds_cluster_locality_config"] == {
        "leds_config": {"ads": {}, "resource_api_version": "V3"}, "leds_collection_name": GLOB}
    (collection,) = conv.collections
    assert collection.name == GLOB
    assert sorted(collection.members) == [f"{PREFIX}{CLUSTER}/-/10.0.0.1:15106", f"{PREFIX}{CLUSTER}/-/10.0.0.1:15107"]
    version, raw = collection.members[f"{PREFIX}{CLUSTER}/-/10.0.0.1:15106"]
    assert json.loads(raw) == {"name": f"{PREFIX}{CLUSTER}/-/10.0.0.1:15106", "version": version,
                               "resource": {"@type": LB_ENDPOINT, **lb(15106)}} and len(version) == 16
    assert json.loads(b"[" + collection.whole + b"]") == [json.loads(r) for _v, r in collection.members.values()]
    assert collection_of(f"{PREFIX}{CLUSTER}/-/10.0.0.1:15106") == GLOB


def test_localities_and_priorities_get_collections_of_their_own():
    a = cla(CLUSTER, 1, locality={"region": "us", "zone": "us-1"})
    a["endpoints"].append({"locality": {"region": "us", "zone": "us-1"}, "priority": 1, "lb_endpoints": [lb(2)]})
    a["endpoints"].append({"lb_endpoints": [lb(3)]})
    names = [c.name for c in convert(a).collections]
    assert names == [f"{PREFIX}{CLUSTER}/us%2Fus-1/*", f"{PREFIX}{CLUSTER}/us%2Fus-1~1/*", GLOB]
    assert len(set(names)) == 3


def test_a_view_of_a_new_payload_reuses_the_collections_of_the_assignments_that_did_not_change():
    views = LedsViews(PayloadIndex())
    before = view(views, cla(CLUSTER, 1), cla("b", 5))
    after = view(views, cla(CLUSTER, 1, 2), cla("b", 5))
    assert after.collections[f"{PREFIX}b/-/*"] is before.collections[f"{PREFIX}b/-/*"]
    assert after.collections[GLOB] is not before.collections[GLOB]
    # the assignments themselves did not change: their LEDS form is the same bytes
    idx = PayloadIndex()
    assert idx(after.eds).versions == idx(before.eds).versions
    # a push drops the views no snapshot holds, but the next payload's view still finds their conversions
    views.retain([])
    assert view(views, cla("b", 5)).collections[f"{PREFIX}b/-/*"] is before.collections[f"{PREFIX}b/-/*"]
    views.retain([])
    views.retain([])  # no view used them since: gone
    assert view(views, cla("b", 5)).collections[f"{PREFIX}b/-/*"] is not before.collections[f"{PREFIX}b/-/*"]


def subscribed(v, *globs: str) -> tuple[LedsSubscription, dict]:
    sub = LedsSubscription()
    sub.request(globs, ())
    update = sub.due(v)
    sub.sent("n-1", update, v)
    assert sub.receive("n-1", None) == "ack"
    return sub, body(update)


def test_a_registration_sends_only_the_new_endpoint_once_per_collection_and_a_departure_its_removal():
    views = LedsViews(PayloadIndex())
    v1 = view(views, cla(CLUSTER, 1), cla("b", 5))
    sub, first = subscribed(v1, GLOB, f"{PREFIX}b/-/*")
    assert sorted(r["name"] for r in first["resources"]) == sorted([
        f"{PREFIX}{CLUSTER}/-/10.0.0.1:1", f"{PREFIX}b/-/10.0.0.1:5"])
    assert first["type_url"] == LB_ENDPOINT and first["removed_resources"] == []
    assert sub.due(v1) is None  # nothing new
    v2 = view(views, cla(CLUSTER, 1, 2), cla("b", 5))
    update = sub.due(v2)
    assert update.send == (f"{PREFIX}{CLUSTER}/-/10.0.0.1:2",) and update.removed == ()
    assert [r["name"] for r in body(update)["resources"]] == list(update.send)
    sub.sent("n-2", update, v2)
    sub.receive("n-2", None)
    v3 = view(views, cla(CLUSTER, 2), cla("b", 5))
    update = sub.due(v3)
    assert update.send == () and update.removed == (f"{PREFIX}{CLUSTER}/-/10.0.0.1:1",)


def test_a_changed_weight_is_sent_as_a_new_version_of_the_same_name():
    views = LedsViews(PayloadIndex())
    v1 = view(views, cla(CLUSTER, 1))
    sub, first = subscribed(v1, GLOB)
    heavier = cla(CLUSTER)
    heavier["endpoints"][0]["lb_endpoints"] = [lb(1, weight=5)]
    update = sub.due(view(views, heavier))
    (sent,) = body(update)["resources"]
    assert sent["name"] == first["resources"][0]["name"] and sent["version"] != first["resources"][0]["version"]
    assert sent["resource"]["load_balancing_weight"] == 5


def test_only_subscribed_collections_are_sent_and_a_new_subscription_is_answered_even_when_empty():
    views = LedsViews(PayloadIndex())
    v = view(views, cla(CLUSTER, 1), cla("b", 5))
    sub, first = subscribed(v, GLOB)
    assert [r["name"] for r in first["resources"]] == [f"{PREFIX}{CLUSTER}/-/10.0.0.1:1"]
    sub.request([f"{PREFIX}gone/-/*"], ())
    update = sub.due(v)
    assert update is not None and not update  # answered, nothing in it: the client knows it is complete
    sub.sent("n-2", update, v)
    sub.receive("n-2", None)
    sub.request([], [GLOB])  # unsubscribing forgets it: no removal is sent
    update = sub.due(v)
    assert update is not None and not update


def test_a_nack_puts_back_what_the_client_held_and_that_content_is_not_sent_again_until_it_changes():
    views = LedsViews(PayloadIndex())
    v1 = view(views, cla(CLUSTER, 1))
    sub, _ = subscribed(v1, GLOB)
    v2 = view(views, cla(CLUSTER, 1, 2))
    update = sub.due(v2)
    sub.sent("n-2", update, v2)
    assert sub.receive("n-2", "bad endpoint") == "nack"
    assert sub.due(v2) is None  # rejected content: not resent
    assert sub.describe()["nack"]["error"] == "bad endpoint"
    v3 = view(views, cla(CLUSTER, 1, 2, 3))
    assert [n.rsplit(":", 1)[1] for n in sub.due(v3).send] == ["2", "3"]  # still owed: 2, and 3


def test_a_response_never_read_is_owed_again_when_the_client_answers_an_older_nonce():
    views = LedsViews(PayloadIndex())
    v1 = view(views, cla(CLUSTER, 1))
    sub, _ = subscribed(v1, GLOB)
    v2 = view(views, cla(CLUSTER, 1, 2))
    sub.sent("n-2", sub.due(v2), v2)
    assert sub.receive("n-1", None) == "lost"
    assert sub.due(v2).send == (f"{PREFIX}{CLUSTER}/-/10.0.0.1:2",)


def test_a_reconnect_declares_the_versions_held_and_gets_only_the_difference():
    views = LedsViews(PayloadIndex())
    v = view(views, cla(CLUSTER, 1, 2))
    held = {n: ver for n, (ver, _b) in v.collections[GLOB].members.items()}
    stale = f"{PREFIX}{CLUSTER}/-/10.0.0.1:9"
    sub = LedsSubscription()
    sub.request([GLOB], (), {**{n: ver for n, ver in held.items() if n.endswith(":1")}, stale: "0" * 16})
    update = sub.due(v)
    assert update.send == (f"{PREFIX}{CLUSTER}/-/10.0.0.1:2",)
    assert update.removed == (stale,)


def test_a_name_that_is_not_a_collection_of_this_control_plane_is_refused():
    with pytest.raises(LedsError, match="resource_names_subscribe: 'reviews' is not a LEDS collection"):
        check_collections([GLOB, "reviews"])
    with pytest.raises(LedsError):
        check_collections([f"{PREFIX}{CLUSTER}/-/10.0.0.1:1"])  # one resource, not a glob
    check_collections([GLOB])


def test_a_response_body_streams_whole_collections_as_they_are_and_is_one_json_document():
    views = LedsViews(PayloadIndex())
    v = view(views, cla(CLUSTER, *range(1, 400)))
    sub = LedsSubscription()
    sub.request([GLOB], ())
    update = sub.due(v)
    chunks = list(LedsResponse("v1", "n-1", update).chunks(chunk=4096))
    assert any(c is v.collections[GLOB].whole for c in chunks)  # a whole collection goes out uncopied
    doc = json.loads(b"".join(chunks))
    assert len(doc["resources"]) == 399 and doc["nonce"] == "n-1" and doc["system_version_info"] == "v1"
    assert all(r["resource"]["@type"] == LB_ENDPOINT for r in doc["resources"])


def test_the_node_says_whether_it_wants_leds_in_client_features_and_a_restart_remembers_it():
    from control.xds.leds import FEATURE, wants_leds
    from control.xds.node import NodeError, node_dict, parse_node

    raw = {"id": "sidecar~10.0.0.1~a.default~default.svc.cluster.local", "client_features": [FEATURE]}
    node = parse_node(raw)
    assert wants_leds(node.client_features) and parse_node(node_dict(node)) == node
    assert not wants_leds(parse_node({"id": raw["id"]}).client_features)
    with pytest.raises(NodeError, match="node.client_features: want a list of strings"):
        parse_node({**raw, "client_features": FEATURE})


def test_a_type_whose_new_content_changes_nothing_the_client_holds_is_held_without_a_response():
    from control.xds.cache import EDS, DiscoveryRequest, ProxySnapshot, XdsCache

    cache, proxy = XdsCache("n-"), "sidecar~10.0.0.1~a.default~default.svc.cluster.local"
    cache.set_snapshot(proxy, ProxySnapshot.build({"eds": [cla(CLUSTER, 1)]}))
    assert cache.unchanged(proxy, EDS) is None  # nothing sent yet
    sent = cache.respond(proxy, EDS)
    assert cache.unchanged(proxy, EDS) is None  # a response is in flight
    cache.receive(proxy, EDS, DiscoveryRequest(version_info=sent.version_info, response_nonce=sent.nonce))
    cache.set_snapshot(proxy, ProxySnapshot.build({"eds": [cla(CLUSTER, 1, 2)]}))
    assert cache.describe(proxy)["types"]["eds"]["acked"]["version"] == sent.version_info
    assert cache.unchanged(proxy, EDS) is not None
    status = cache.describe(proxy)["types"]["eds"]
    assert status["status"] == "SYNCED" and status["acked"]["version"] == cache.snapshot(proxy).version
