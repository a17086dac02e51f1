"""LEDS on the proxy side (pyproxy/xds/leds.py): ClusterLoadAssignments naming collections, LbEndpoint resources,
and the assignments assembled from them; plus the subscription bookkeeping of pyproxy/xds/state.py for
collections."""
from __future__ import annotations

import pytest

from pyproxy.config.decode import ConfigError
from pyproxy.xds.leds import (CLA, FEATURE, LB_ENDPOINT, assemble, collections, decode_assignments,
                              decode_lb_endpoints, split_assignment)
from pyproxy.xds.state import LEDS, XdsState

PREFIX = "xdstp://pyproxy-control/envoy.config.endpoint.v3.LbEndpoint/"
CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"
GLOB = f"{PREFIX}{CLUSTER}/-/*"
ZONE = f"{PREFIX}{CLUSTER}/us%2Fus-1/*"


def leds_cla(name: str = CLUSTER, *globs: str) -> dict:
    return {"@type": CLA, "cluster_name": name, "endpoints": [
        {"leds_cluster_locality_config": {"leds_config": {"ads": {}}, "leds_collection_name": g}} for g in globs]}


def lb(port: int, **extra) -> dict:
    return {"@type": LB_ENDPOINT,
            "endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": port}}}, **extra}


def resource(name: str, body: dict, version: str = "v1") -> dict:
    return {"name": name, "version": version, "resource": body}


def member(port: int, glob: str = GLOB) -> str:
    return f"{glob[:-1]}10.0.0.1:{port}"


def endpoints(*entries: tuple[str, dict]) -> dict:
    decoded, _ = decode_lb_endpoints([resource(n, b) for n, b in entries])
    return decoded


def ports(cla) -> list[list[int]]:
    return [[lb.endpoint.address.socket_address.port_value for lb in g.lb_endpoints] for g in cla.endpoints]


def assignments(*raw: dict) -> dict:
    decoded, _ = decode_assignments([resource(r["cluster_name"], r) for r in raw])
    return decoded


def test_an_assignment_naming_collections_is_split_into_its_localities_and_their_collections():
    raw = leds_cla(CLUSTER, GLOB, ZONE)
    raw["endpoints"][1]["locality"] = {"region": "us", "zone": "us-1"}
    raw["endpoints"].append({"lb_endpoints": [lb(7) | {"@type": None}]})
    del raw["endpoints"][2]["lb_endpoints"][0]["@type"]
    a = split_assignment(raw, "x")
    assert a.collections == (GLOB, ZONE, None)
    assert a.assignment.endpoints[1].locality.zone == "us-1" and a.assignment.endpoints[0].lb_endpoints == ()
    assert collections([a]) == {GLOB, ZONE}


def test_assembled_assignments_hold_their_collections_endpoints_ordered_by_name():
    held = assignments(leds_cla(CLUSTER, GLOB, ZONE))
    eps = endpoints((member(2), lb(2)), (member(1), lb(1)), (member(3, ZONE), lb(3)), (member(9, f"{PREFIX}other/-/*"), lb(9)))
    (cla,) = assemble(held, eps, {GLOB, ZONE}, {}).values()
    assert ports(cla) == [[1, 2], [3]]


def test_an_endpoint_added_removed_or_changed_changes_only_that_endpoint():
    held = assignments(leds_cla(CLUSTER, GLOB))
    eps = endpoints((member(1), lb(1)), (member(2), lb(2)))
    before = assemble(held, eps, {GLOB}, {})
    eps[member(3)] = endpoints((member(3), lb(3)))[member(3)]  # added
    del eps[member(1)]  # removed
    eps.update(endpoints((member(2), lb(2, load_balancing_weight=7, health_status="DRAINING",
                                         metadata={"filter_metadata": {"istio": {"workload": "w"}}}))))
    after = assemble(held, eps, {GLOB}, before)[CLUSTER]
    assert ports(after) == [[2, 3]]
    two = after.endpoints[0].lb_endpoints[0]
    assert two.load_balancing_weight == 7 and two.health_status == "DRAINING"
    assert two.metadata["filter_metadata"]["istio"]["workload"] == "w"
    assert ports(before[CLUSTER]) == [[1, 2]]  # the previous assembly is untouched (immutable)


def test_endpoints_arriving_before_their_assignment_wait_for_it_and_an_assignment_before_its_endpoints_keeps_the_last():
    eps = endpoints((member(1), lb(1)))
    assert assemble({}, eps, {GLOB}, {}) == {}  # nothing names the collection yet
    first = assemble(assignments(leds_cla(CLUSTER, GLOB)), eps, {GLOB}, {})
    assert ports(first[CLUSTER]) == [[1]]
    # the assignment moves to a new collection (a new locality) whose endpoints have not arrived: the last
    # assembled form keeps serving until the control plane answers the subscription
    moved = assignments(leds_cla(CLUSTER, ZONE))
    assert assemble(moved, eps, {GLOB}, first)[CLUSTER] is first[CLUSTER]
    eps.update(endpoints((member(4, ZONE), lb(4))))
    assert ports(assemble(moved, eps, {GLOB, ZONE}, first)[CLUSTER]) == [[4]]
    # a new assignment with no previous form starts with what has arrived (nothing yet)
    assert ports(assemble(assignments(leds_cla("b", f"{PREFIX}b/-/*")), eps, set(), {})["b"]) == [[]]


def test_assignments_naming_one_shared_collection_each_get_its_endpoints_and_it_stays_while_one_names_it():
    shared = f"{PREFIX}shared/9205bacb01390d8b/-/*"  # the control plane names it after what its endpoints share
    other = "outbound|9080||reviews-alias.default.svc.cluster.local"
    held = assignments(leds_cla(CLUSTER, shared), leds_cla(other, shared))
    eps = endpoints((member(1, shared), lb(1)), (member(2, shared), lb(2)))
    out = assemble(held, eps, {shared}, {})
    assert ports(out[CLUSTER]) == ports(out[other]) == [[1, 2]]
    assert collections(held.values()) == {shared}
    assert collections([held[other]]) == {shared}  # the one left still needs it: not unsubscribed


def test_a_collection_becoming_empty_leaves_its_locality_without_endpoints():
    held = assignments(leds_cla(CLUSTER, GLOB))
    assert ports(assemble(held, {}, {GLOB}, {})[CLUSTER]) == [[]]


def test_whole_assignments_pass_through_unchanged():
    raw = {"@type": CLA, "cluster_name": "plain", "endpoints": [{"lb_endpoints": [
        {k: v for k, v in lb(5).items() if k != "@type"}]}]}
    held = assignments(raw)
    assert held["plain"].collections == (None,)
    out = assemble(held, {}, set(), {})
    assert ports(out["plain"]) == [[5]] and out["plain"] is held["plain"].assignment


@pytest.mark.parametrize("bad, field", [
    (resource(member(1), lb(1, load_balancing_weight="heavy")), "load_balancing_weight"),
    (resource(member(1), lb(1, colour="red")), "colour"),
    (resource(member(1), {**lb(1), "@type": CLA}), "resources[0].resource.@type"),
    (resource("reviews", lb(1)), "resources[0].name"),
    (resource(member(1), {"@type": LB_ENDPOINT}), "endpoint"),
])
def test_a_bad_endpoint_is_a_config_error_naming_it(bad, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        decode_lb_endpoints([resource(member(2), lb(2)), bad] if field.startswith("resources[0]") is False
                            else [bad])


def test_a_bad_collection_config_is_a_config_error():
    with pytest.raises(ConfigError, match="leds_collection_name"):
        split_assignment(leds_cla(CLUSTER, "reviews"), "resources[0]")
    both = leds_cla(CLUSTER, GLOB)
    both["endpoints"][0]["lb_endpoints"] = [lb(1)]
    with pytest.raises(ConfigError, match="one of"):
        split_assignment(both, "resources[0]")
    with pytest.raises(ConfigError, match="is not the name of its resource"):
        decode_assignments([resource("other", leds_cla(CLUSTER, GLOB))])


def test_the_node_asks_for_leds_once():
    from pyproxy.xds.node import with_client_feature

    node = with_client_feature({"id": "x", "client_features": ["envoy.lb.does_not_support_overprovisioning"]},
                               FEATURE)
    assert node["client_features"] == ["envoy.lb.does_not_support_overprovisioning", FEATURE]
    assert with_client_feature(node, FEATURE)["client_features"] == node["client_features"]


def test_leds_subscription_keeps_the_members_of_its_collections_and_declares_them_at_a_reconnect():
    state = XdsState({"id": "x"}, leds=True)
    first = state.next_delta_request(LEDS, [GLOB])
    assert first["resource_names_subscribe"] == [GLOB]
    state.request_sent(LEDS)
    state.received(LEDS, "n-1")
    decoded, versions = decode_lb_endpoints([resource(member(1), lb(1), "a1")])
    state.accepted(LEDS, "v", *state.after_delta(LEDS, decoded, versions, []))
    state.next_delta_request(LEDS, [GLOB, ZONE])
    state.request_sent(LEDS)  # a change of subscription keeps the members of collections still subscribed
    assert state.types[LEDS].versions == {member(1): "a1"}
    state.reset(LEDS)
    again = state.next_delta_request(LEDS, [GLOB, ZONE])
    assert again["initial_resource_versions"] == {member(1): "a1"}
    state.request_sent(LEDS)
    state.next_delta_request(LEDS, [ZONE])
    state.request_sent(LEDS)  # unsubscribing a collection forgets its members
    assert state.types[LEDS].versions == {} and state.types[LEDS].resources == {}
