"""control.xds.delta: what one delta xDS subscription holds and what a response must carry."""
from __future__ import annotations

from control.xds.cache import CLUSTER, CLUSTER_LOAD_ASSIGNMENT
from control.xds.delta import DeltaSubscription, DeltaUpdate, resource_versions


def test_versions_are_content_hashes_keyed_by_name_or_cluster_name():
    a = resource_versions([{"name": "a", "x": 1}, {"cluster_name": "b"}])
    assert set(a) == {"a", "b"} and len(a["a"]) == 16
    assert resource_versions([{"x": 1, "name": "a"}])["a"] == a["a"]  # key order does not matter
    assert resource_versions([{"name": "a", "x": 2}])["a"] != a["a"]


def test_clusters_start_wildcard_and_get_everything_then_only_what_changed_and_what_left():
    sub = DeltaSubscription(CLUSTER)
    sub.request([], [])
    assert sub.wildcard
    first = sub.update({"a": "1", "b": "1"})
    assert first == DeltaUpdate(("a", "b"), ())
    sub.sent("n1", first, {"a": "1", "b": "1"})
    assert not sub.update({"a": "1", "b": "1"})
    assert sub.update({"a": "2", "c": "1"}) == DeltaUpdate(("a", "c"), ("b",))


def test_endpoints_are_sent_only_for_the_names_subscribed_and_unsubscribing_forgets_them():
    sub = DeltaSubscription(CLUSTER_LOAD_ASSIGNMENT)
    sub.request(["a"], [])
    assert not sub.wildcard
    current = {"a": "1", "b": "1"}
    update = sub.update(current)
    assert update == DeltaUpdate(("a",), ())
    sub.sent("n1", update, current)
    sub.request(["b"], ["a"])
    assert sub.update(current) == DeltaUpdate(("b",), ())


def test_a_reconnecting_client_declares_what_it_holds_and_gets_only_the_difference():
    sub = DeltaSubscription(CLUSTER)
    sub.request([], [], {"a": "1", "b": "old"})
    assert sub.update({"a": "1", "b": "2"}) == DeltaUpdate(("b",), ())


def test_a_nack_puts_back_what_the_client_held_so_the_next_change_is_sent_whole():
    sub = DeltaSubscription(CLUSTER)
    sub.request(["*"], [])
    v1 = {"a": "1"}
    sub.sent("n1", sub.update(v1), v1)
    v2 = {"a": "2", "b": "1"}
    sub.sent("n2", sub.update(v2), v2)
    sub.reject("n1")  # a stale nonce changes nothing
    assert sub.held == v2
    sub.reject("n2")
    assert sub.held == v1
    assert sub.update({"a": "3", "b": "1"}) == DeltaUpdate(("a", "b"), ())
