"""LEDS on the control plane (control/xds/leds.py): the LEDS form of ClusterLoadAssignments, the LbEndpoint
collections shared by the clusters that list the same endpoints, and one client's subscription to them (ACK,
NACK, a lost response, a reconnect)."""
from __future__ import annotations

import json

import pytest

from control.translate.common import CLUSTER_LOAD_ASSIGNMENT
from control.xds.cache import Payload
from control.xds.delta import PayloadIndex
from control.xds.leds import (LB_ENDPOINT, PREFIX, LedsError, LedsResponse, LedsSubscription, LedsViews,
                              check_collections, collection_of, convert)

CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"
OTHER = "outbound|9080||reviews-alias.default.svc.cluster.local"  # another service selecting the same pods
WORKLOAD = "reviews-v1;default;reviews;v1;Kubernetes"


def lb(host: int, weight: int = 1, port: int = 9080, workload: str = WORKLOAD, mtls: bool = True) -> dict:
    """The LbEndpoint of replica `host` (10.0.0.<host> for the first 255) of a workload, as
    control/translate/endpoints.py writes it."""
    metadata: dict = {"istio": {"workload": workload}}
    if mtls:
        metadata["envoy.transport_socket_match"] = {"tlsMode": "istio"}
    return {"endpoint": {"address": {"socket_address": {"address": f"10.0.{host // 256}.{host % 256}",
                                                     "port_value": port}}},
            "metadata": {"filter_metadata": metadata}, "load_balancing_weight": weight}


def cla(name: str, *hosts: int, locality: dict | None = None, **kw) -> dict:
    group: dict = {"lb_endpoints": [lb(h, **kw) for h in hosts]}
    if locality:
        group["locality"] = locality
    return {"@type": CLUSTER_LOAD_ASSIGNMENT, "cluster_name": name, "endpoints": [group]}


def view(views: LedsViews, *assignments: dict):
    return views(Payload.of(assignments))


def named(v, cluster: str) -> list[str]:
    """The collections the cluster's assignment names in the view."""
    (a,) = [a for a in json.loads(v.eds.body) if a["cluster_name"] == cluster]
    assert all("lb_endpoints" not in g for g in a["endpoints"])
    return [g["leds_cluster_locality_config"]["leds_collection_name"] for g in a["endpoints"]]


GLOB = named(LedsViews(PayloadIndex())(Payload.of([cla(CLUSTER, 1)])), CLUSTER)[0]  # reviews-v1's pods, no locality


def body(update, nonce: str = "n-1") -> dict:
    return json.loads(LedsResponse("v1", nonce, update).body())


def test_an_assignment_in_the_leds_form_names_a_collection_per_locality_and_its_endpoints_are_resources():
    conv = convert(cla(CLUSTER, 1, 2) | {"policy": {"overprovisioning_factor": 140}})
    out = json.loads(conv.assignment)
    assert out["policy"] == {"overprovisioning_factor": 140} and out["cluster_name"] == CLUSTER
    (group,) = out["endpoints"]
    assert "lb_endpoints" not in group
    assert group["leds_cluster_locality_config"] == {
        "leds_config": {"ads": {}, "resource_api_version": "V3"}, "leds_collection_name": GLOB}
    assert GLOB.startswith(f"{PREFIX}shared/") and GLOB.endswith("/-/*") and len(GLOB.split("/")[-3]) == 16
    (collection,) = conv.collections
    assert collection.name == GLOB
    assert sorted(collection.members) == [f"{GLOB[:-1]}10.0.0.1:9080", f"{GLOB[:-1]}10.0.0.2:9080"]
    version, raw = collection.members[f"{GLOB[:-1]}10.0.0.1:9080"]
    assert json.loads(raw) == {"name": f"{GLOB[:-1]}10.0.0.1:9080", "version": version,
                               "resource": {"@type": LB_ENDPOINT, **lb(1)}} and len(version) == 16
    assert json.loads(b"[" + collection.whole + b"]") == [json.loads(r) for _v, r in collection.members.values()]
    assert collection_of(f"{GLOB[:-1]}10.0.0.1:9080") == GLOB


def test_localities_and_priorities_get_collections_of_their_own():
    a = cla(CLUSTER, 1, locality={"region": "us", "zone": "us-1"})
    a["endpoints"].append({"locality": {"region": "us", "zone": "us-1"}, "priority": 1, "lb_endpoints": [lb(2)]})
    a["endpoints"].append({"lb_endpoints": [lb(3)]})
    names = [c.name for c in convert(a).collections]
    assert [n.rsplit("/", 2)[1] for n in names] == ["us%2Fus-1", "us%2Fus-1~1", "-"]
    assert len(set(names)) == 3 and len({n.split("/")[-3] for n in names}) == 1  # one family: the same pods


def test_clusters_listing_the_same_endpoints_share_one_collection_and_a_replica_keeps_its_name():
    views = LedsViews(PayloadIndex())
    v1 = view(views, cla(CLUSTER, 1, 2), cla(OTHER, 1, 2))
    assert named(v1, CLUSTER) == named(v1, OTHER) == [GLOB]
    assert list(v1.collections) == [GLOB]
    # a replica joins both: the same collection, one more member; the assignments' LEDS form is unchanged
    v2 = view(views, cla(CLUSTER, 1, 2, 3), cla(OTHER, 1, 2, 3))
    assert named(v2, CLUSTER) == named(v2, OTHER) == [GLOB]
    assert len(v2.collections[GLOB].members) == 3
    # and is the same objects: the clients holding it keep sharing one versions map across pushes
    assert v2.eds is v1.eds and v2.index is v1.index and v2.key != v1.key
    views.retain([])
    assert view(views, cla(CLUSTER, 1, 2, 3, 4), cla(OTHER, 1, 2, 3, 4)).index is v1.index


def test_replicas_on_one_address_told_apart_by_port_keep_the_collection_when_one_joins():
    # sidecars on one host (as in the e2e tests): each registers its own inbound port
    def on_one_host(name: str, *ports: int) -> dict:
        a = cla(name)
        a["endpoints"][0]["lb_endpoints"] = [lb(1, port=p) for p in ports]
        return a

    views = LedsViews(PayloadIndex())
    v1 = view(views, on_one_host(CLUSTER, 15001), on_one_host(OTHER, 15001))
    v2 = view(views, on_one_host(CLUSTER, 15001, 15101), on_one_host(OTHER, 15001, 15101))
    assert named(v1, CLUSTER) == named(v2, CLUSTER) == named(v2, OTHER) == [GLOB]
    assert sorted(v2.collections[GLOB].members) == [f"{GLOB[:-1]}10.0.0.1:15001", f"{GLOB[:-1]}10.0.0.1:15101"]


def test_clusters_whose_endpoints_differ_in_metadata_or_port_do_not_share():
    views = LedsViews(PayloadIndex())
    plain = "outbound|9080||reviews-plain.default.svc.cluster.local"  # a DestinationRule with tls DISABLE
    grpc = "outbound|9090||reviews.default.svc.cluster.local"
    v = view(views, cla(CLUSTER, 1, 2), cla(plain, 1, 2, mtls=False), cla(grpc, 1, 2, port=9090))
    assert len({named(v, c)[0] for c in (CLUSTER, plain, grpc)}) == 3
    assert all(n.startswith(f"{PREFIX}shared/") for n in v.collections)  # each still shared by its family
    assert sorted(v.collections[named(v, grpc)[0]].members)[0].endswith("/10.0.0.1:9090")
    assert "tlsMode" not in v.collections[named(v, plain)[0]].whole.decode()
    assert v.collections[named(v, CLUSTER)[0]].whole.count(b'"tlsMode":"istio"') == 2


def test_clusters_of_one_family_listing_different_replicas_get_collections_of_their_own():
    # a subset by a label only replica 1 carries: same workload, port and metadata, but not the same pods
    views = LedsViews(PayloadIndex())
    subset = "outbound|9080|canary|reviews.default.svc.cluster.local"
    v = view(views, cla(CLUSTER, 1, 2), cla(subset, 1), cla(OTHER, 1, 2))
    assert named(v, CLUSTER) == [f"{PREFIX}cluster/{CLUSTER}/-/*"]
    assert named(v, subset) == [f"{PREFIX}cluster/{subset}/-/*"]
    assert named(v, OTHER) == [f"{PREFIX}cluster/{OTHER}/-/*"]
    assert sorted(v.collections[named(v, CLUSTER)[0]].members) == [
        f"{PREFIX}cluster/{CLUSTER}/-/10.0.0.1:9080", f"{PREFIX}cluster/{CLUSTER}/-/10.0.0.2:9080"]
    assert list(v.collections[named(v, subset)[0]].members) == [f"{PREFIX}cluster/{subset}/-/10.0.0.1:9080"]
    # the same clusters once the replicas agree again share again
    assert named(view(views, cla(CLUSTER, 1), cla(subset, 1)), subset) == [GLOB]


def test_a_changed_weight_keeps_the_collection_and_is_sent_as_a_new_version_of_the_same_name():
    views = LedsViews(PayloadIndex())
    v1 = view(views, cla(CLUSTER, 1), cla(OTHER, 1))
    sub, first = subscribed(v1, GLOB)
    heavier = [cla(c) for c in (CLUSTER, OTHER)]
    for a in heavier:
        a["endpoints"][0]["lb_endpoints"] = [lb(1, weight=5)]
    v2 = view(views, *heavier)
    assert named(v2, CLUSTER) == named(v2, OTHER) == [GLOB]
    update = sub.due(v2)
    (sent,) = body(update)["resources"]
    assert sent["name"] == first["resources"][0]["name"] and sent["version"] != first["resources"][0]["version"]
    assert sent["resource"]["load_balancing_weight"] == 5


def test_a_view_of_a_new_payload_reuses_the_collections_that_did_not_change():
    views = LedsViews(PayloadIndex())
    b = cla("b", 5, workload="ratings-v1;default;ratings;v1;Kubernetes")
    before = view(views, cla(CLUSTER, 1), b)
    (ratings,) = named(before, "b")
    after = view(views, cla(CLUSTER, 1, 2), b)
    assert after.collections[ratings] is before.collections[ratings]
    assert after.collections[GLOB] is not before.collections[GLOB]
    # a push drops the views no snapshot holds, but the next payload's view still finds their collections
    views.retain([])
    assert view(views, b).collections[ratings] is before.collections[ratings]
    views.retain([])
    views.retain([])  # no view used them since: gone
    assert view(views, b).collections[ratings] is not before.collections[ratings]


def subscribed(v, *globs: str) -> tuple[LedsSubscription, dict]:
    sub = LedsSubscription()
    sub.request(globs, ())
    update = sub.due(v)
    sub.sent("n-1", update, v)
    assert sub.receive("n-1", None) == "ack"
    return sub, body(update)


def test_a_registration_sends_only_the_new_endpoint_once_per_collection_and_a_departure_its_removal():
    views = LedsViews(PayloadIndex())
    ratings = "ratings-v1;default;ratings;v1;Kubernetes"
    v1 = view(views, cla(CLUSTER, 1), cla("b", 5, workload=ratings))
    (b_glob,) = named(v1, "b")
    sub, first = subscribed(v1, GLOB, b_glob)
    assert sorted(r["name"] for r in first["resources"]) == sorted([f"{GLOB[:-1]}10.0.0.1:9080",
                                                                    f"{b_glob[:-1]}10.0.0.5:9080"])
    assert first["type_url"] == LB_ENDPOINT and first["removed_resources"] == []
    assert sub.due(v1) is None  # nothing new
    v2 = view(views, cla(CLUSTER, 1, 2), cla("b", 5, workload=ratings))
    update = sub.due(v2)
    assert update.send == (f"{GLOB[:-1]}10.0.0.2:9080",) and update.removed == ()
    assert [r["name"] for r in body(update)["resources"]] == list(update.send)
    sub.sent("n-2", update, v2)
    sub.receive("n-2", None)
    v3 = view(views, cla(CLUSTER, 2), cla("b", 5, workload=ratings))
    update = sub.due(v3)
    assert update.send == () and update.removed == (f"{GLOB[:-1]}10.0.0.1:9080",)


def test_only_subscribed_collections_are_sent_and_a_new_subscription_is_answered_even_when_empty():
    views = LedsViews(PayloadIndex())
    v = view(views, cla(CLUSTER, 1), cla("b", 5, workload="ratings-v1;default;ratings;v1;Kubernetes"))
    sub, first = subscribed(v, GLOB)
    assert [r["name"] for r in first["resources"]] == [f"{GLOB[:-1]}10.0.0.1:9080"]
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
    assert [n.rsplit(":", 1)[0][-1] for n in sub.due(v3).send] == ["2", "3"]  # still owed: 2, and 3


def test_a_response_never_read_is_owed_again_when_the_client_answers_an_older_nonce():
    views = LedsViews(PayloadIndex())
    v1 = view(views, cla(CLUSTER, 1))
    sub, _ = subscribed(v1, GLOB)
    v2 = view(views, cla(CLUSTER, 1, 2))
    sub.sent("n-2", sub.due(v2), v2)
    assert sub.receive("n-1", None) == "lost"
    assert sub.due(v2).send == (f"{GLOB[:-1]}10.0.0.2:9080",)


def test_a_reconnect_declares_the_versions_held_and_gets_only_the_difference():
    views = LedsViews(PayloadIndex())
    v = view(views, cla(CLUSTER, 1, 2))
    held = {n: ver for n, (ver, _b) in v.collections[GLOB].members.items()}
    stale = f"{GLOB[:-1]}10.0.0.9:9080"
    sub = LedsSubscription()
    sub.request([GLOB], (), {**{n: ver for n, ver in held.items() if "10.0.0.1:" in n}, stale: "0" * 16})
    update = sub.due(v)
    assert update.send == (f"{GLOB[:-1]}10.0.0.2:9080",)
    assert update.removed == (stale,)


def test_a_name_that_is_not_a_collection_of_this_control_plane_is_refused():
    with pytest.raises(LedsError, match="resource_names_subscribe: 'reviews' is not a LEDS collection"):
        check_collections([GLOB, "reviews"])
    with pytest.raises(LedsError):
        check_collections([f"{GLOB[:-1]}10.0.0.1:9080"])  # one resource, not a glob
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
