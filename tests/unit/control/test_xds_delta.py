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


# --- the protocol steps both transports run against the XdsCache (control.xds.delta.receive / due) -------------
import json  # noqa: E402

from control.xds.cache import CDS, EDS, LDS, RDS, Payload, ProxySnapshot, XdsCache  # noqa: E402
from control.xds.delta import DeltaRequest, DeltaResponse, PayloadIndex, due, receive  # noqa: E402

PROXY = "sidecar~127.0.0.1~a.default~default.svc.cluster.local"


def cla(name: str, port: int) -> dict:
    return {"@type": CLUSTER_LOAD_ASSIGNMENT, "cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}


def cluster(name: str) -> dict:
    return {"@type": CLUSTER, "name": name, "type": "EDS"}


class Session:
    """One proxy's delta subscriptions over the real XdsCache, as the REST shell drives them."""

    def __init__(self) -> None:
        self.cache = XdsCache("n-")
        self.index = PayloadIndex()
        self.subs = {t.short: DeltaSubscription(t.type_url) for t in (CDS, EDS, LDS, RDS)}

    def snapshot(self, clusters: list[dict], assignments: list[dict]) -> None:
        self.cache.set_snapshot(PROXY, ProxySnapshot.build({"cds": clusters, "eds": assignments}))

    def request(self, t, **fields) -> None:
        receive(self.cache, lambda r: self.cache.receive(PROXY, t, r), PROXY, t, self.subs[t.short],
                DeltaRequest(**fields), one_at_a_time=True)

    def respond(self, t) -> dict | None:
        """The DeltaDiscoveryResponse due now (decoded), or None."""
        snap = self.cache.snapshot(PROXY)
        index = self.index(snap.payloads[t.short])
        current = index.versions
        update = due(self.cache, PROXY, t, self.subs[t.short], current, ordered_stream=False)
        if update is None:
            return None
        response = self.cache.respond(PROXY, t)
        self.subs[t.short].sent(response.nonce, update, current)
        return json.loads(DeltaResponse(response, update, index).body())


def names(response: dict) -> list[str]:
    return [r["name"] for r in response["resources"]]


def test_payload_index_versions_are_the_resource_versions_and_items_are_the_payloads_own():
    items = [cluster("a"), cla("b", 1), {"name": "c", "x": [1, 2]}]
    payload = Payload.of(items)
    index = PayloadIndex()(payload)
    assert index.versions == resource_versions(items)
    assert [json.loads(i) for i in index.items.values()] == items
    assert all(mine is theirs for mine, theirs in zip(index.items.values(), payload.items))  # not copies
    assert Payload.join([json.dumps(i, sort_keys=True, separators=(",", ":")).encode() for i in items]).names == \
        ("a", "b", "c")


def test_eds_by_name_then_a_registration_sends_only_the_changed_assignment():
    s = Session()
    s.snapshot([cluster("a"), cluster("b")], [cla("a", 1), cla("b", 1)])
    s.request(CDS, subscribe=("*",))
    first = s.respond(CDS)
    assert sorted(names(first)) == ["a", "b"] and first["removed_resources"] == []
    s.request(EDS, subscribe=("a", "b"))
    assert s.respond(EDS) is None  # EDS waits for the CDS ACK (ADS order over REST)
    s.request(CDS, response_nonce=first["nonce"])
    eds = s.respond(EDS)
    assert sorted(names(eds)) == ["a", "b"]
    assert eds["system_version_info"] == s.cache.snapshot(PROXY).version
    s.request(EDS, response_nonce=eds["nonce"])
    assert s.respond(EDS) is None and s.respond(CDS) is None
    s.snapshot([cluster("a"), cluster("b")], [cla("a", 1), cla("b", 2)])  # b gained an endpoint
    assert s.respond(CDS) is None  # CDS content unchanged: nothing due
    update = s.respond(EDS)
    assert names(update) == ["b"] and update["resources"][0]["resource"] == cla("b", 2)
    s.request(EDS, response_nonce=update["nonce"])
    status = s.cache.describe(PROXY)["types"]["eds"]
    assert status["status"] == "SYNCED" and status["acked"]["version"] == s.cache.snapshot(PROXY).version


def test_subscribing_a_new_name_sends_it_alone_and_unsubscribing_sends_nothing():
    s = Session()
    s.snapshot([cluster("a")], [cla("a", 1), cla("b", 1)])
    s.request(CDS, subscribe=("*",))
    s.request(CDS, response_nonce=s.respond(CDS)["nonce"])
    s.request(EDS, subscribe=("a",))
    eds = s.respond(EDS)
    assert names(eds) == ["a"]
    s.request(EDS, response_nonce=eds["nonce"], subscribe=("b",))
    more = s.respond(EDS)
    assert names(more) == ["b"]
    s.request(EDS, response_nonce=more["nonce"], unsubscribe=("a",))
    assert s.respond(EDS) is None
    assert s.subs["eds"].held == {"b": resource_versions([cla("b", 1)])["b"]}


def test_wildcard_gets_new_resources_and_a_removal_is_named_in_removed_resources():
    s = Session()
    s.snapshot([cluster("a"), cluster("b")], [])
    s.request(CDS, subscribe=())  # legacy wildcard: CDS with no names
    first = s.respond(CDS)
    s.request(CDS, response_nonce=first["nonce"])
    s.snapshot([cluster("a"), cluster("c")], [])
    update = s.respond(CDS)
    assert names(update) == ["c"] and update["removed_resources"] == ["b"]


def test_reconnect_with_initial_resource_versions_is_sent_only_what_differs():
    s = Session()
    s.snapshot([cluster("a"), cluster("b")], [])
    versions = resource_versions([cluster("a"), {"name": "b", "old": True}])
    s.request(CDS, subscribe=("*",), initial_versions=versions)
    update = s.respond(CDS)
    assert names(update) == ["b"] and update["removed_resources"] == []
    # holding everything current: an empty response still carries the snapshot version to ACK
    s2 = Session()
    s2.snapshot([cluster("a")], [])
    s2.request(CDS, subscribe=("*",), initial_versions=resource_versions([cluster("a")]))
    empty = s2.respond(CDS)
    assert empty["resources"] == [] and empty["removed_resources"] == []
    s2.request(CDS, response_nonce=empty["nonce"])
    assert s2.cache.describe(PROXY)["types"]["cds"]["status"] == "SYNCED"


def test_a_nack_of_one_resource_keeps_the_response_unapplied_and_not_resent_until_the_next_change():
    s = Session()
    s.snapshot([cluster("a"), cluster("b")], [])
    s.request(CDS, subscribe=("*",))
    s.request(CDS, response_nonce=s.respond(CDS)["nonce"])
    s.snapshot([cluster("a"), {**cluster("b"), "bad": 1}, cluster("c")], [])
    bad = s.respond(CDS)
    assert sorted(names(bad)) == ["b", "c"]
    s.request(CDS, response_nonce=bad["nonce"], error_detail="b: unknown field 'bad'")
    state = s.cache.describe(PROXY)["types"]["cds"]
    assert state["nacked"] and state["nack"]["error"] == "b: unknown field 'bad'"
    assert s.respond(CDS) is None  # the rejected content is not sent again
    s.snapshot([cluster("a"), {**cluster("b"), "bad": 1}, cluster("c"), cluster("d")], [])
    again = s.respond(CDS)  # the client kept its old set: b and c are owed with d
    assert sorted(names(again)) == ["b", "c", "d"]


def test_a_response_the_client_never_read_is_sent_again_when_it_polls_with_the_older_nonce():
    s = Session()
    s.snapshot([cluster("a")], [])
    s.request(CDS, subscribe=("*",))
    first = s.respond(CDS)
    s.request(CDS, response_nonce=first["nonce"])
    s.snapshot([cluster("a"), cluster("b")], [])
    assert names(s.respond(CDS)) == ["b"]  # lost: the long-poll was abandoned
    s.request(CDS, response_nonce=first["nonce"])  # the client still answers the first response
    assert names(s.respond(CDS)) == ["b"]


def test_unanswered_and_ack_of_the_subscription_itself():
    sub = DeltaSubscription(CLUSTER)
    sub.request(["*"], [])
    v1 = {"a": "1"}
    sub.sent("n1", sub.update(v1), v1)
    sub.ack("n1")
    v2 = {"a": "2"}
    sub.sent("n2", sub.update(v2), v2)
    sub.unanswered("n2")  # answering the last response: nothing lost
    assert sub.held == v2
    sub.unanswered("n1")
    assert sub.held == v1


def test_a_delta_response_streams_in_chunks():
    s = Session()
    s.snapshot([cluster(f"c{i}") for i in range(20)], [])
    s.request(CDS, subscribe=("*",))
    snap = s.cache.snapshot(PROXY)
    index = s.index(snap.payloads["cds"])
    update = due(s.cache, PROXY, CDS, s.subs["cds"], index.versions, ordered_stream=False)
    response = DeltaResponse(s.cache.respond(PROXY, CDS), update, index)
    chunks = list(response.chunks(chunk=64))
    assert len(chunks) > 5 and b"".join(chunks) == response.body()
    big = list(response.chunks(chunk=8))  # every resource is "large": sent as the payload's own bytes, uncopied
    own = {id(i) for i in snap.payloads["cds"].items}
    assert sum(id(c) in own for c in big) == 20 and b"".join(big) == response.body()
    doc = json.loads(response.body())
    assert [r["resource"] for r in doc["resources"]] == [cluster(f"c{i}") for i in sorted(range(20), key=str)]
    assert [r["version"] for r in doc["resources"]] == [index.versions[f"c{i}"] for i in sorted(range(20), key=str)]
    odd = Payload.of([cluster('a "quoted" \\ name')])
    assert json.loads(PayloadIndex()(odd).head('a "quoted" \\ name') + b'{}}')["name"] == 'a "quoted" \\ name'


def test_the_payload_index_forgets_payloads_no_snapshot_holds():
    index = PayloadIndex()
    old, new = Payload.of([cluster("a")]), Payload.of([cluster("b")])
    first = index(old)
    index(new)
    index.retain([new.hash])
    assert index(new) is index(new) and index(old) is not first


def test_rest_sessions_share_one_set_of_names_between_proxies_subscribing_to_the_same():
    from control.xds.cache import EDS as EDS_TYPE
    from control.xds.delta import DeltaSessions
    sessions = DeltaSessions()
    a, b = sessions.start("a", EDS_TYPE), sessions.start("b", EDS_TYPE)
    a.request(["x", "y"], [])
    b.request(["y"], [])
    b.request(["x"], [])
    assert a.names == b.names == {"x", "y"} and a.names is b.names
    b.request([], ["x"])
    assert a.names == {"x", "y"} and b.names == {"y"}


def test_clients_moving_between_the_same_two_payloads_share_one_computed_difference():
    """After a push, every client of one shape moves from the same old version map to the same new one:
    DiffCache computes that difference once. Only for clients holding the old map exactly (shared) and
    subscribed to every name of both: a narrower subscription gets its own, filtered answer."""
    from control.xds.delta import DiffCache
    old, new = {"a": "1", "b": "1", "c": "1"}, {"a": "2", "b": "1", "d": "1"}
    subs = []
    for names in (["a", "b", "c", "d"], ["a", "b", "c", "d"], ["a", "b", "c"]):
        sub = DeltaSubscription(CLUSTER_LOAD_ASSIGNMENT)
        sub.request(names, [])
        sub.sent("n1", sub.update(old), old)
        subs.append(sub)
    diffs = DiffCache()
    first, second, narrow = (sub.update(new, diffs) for sub in subs)
    assert first is second == DeltaUpdate(("a", "d"), ("c",)) == subs[0].update(new)  # once, the same answer
    assert narrow == DeltaUpdate(("a",), ("c",)) and narrow is not first  # d is not subscribed
    wildcard = DeltaSubscription(CLUSTER)
    wildcard.request([], [])
    wildcard.sent("n1", wildcard.update(old), old)
    assert wildcard.update(new, diffs) is first


def test_the_difference_cache_keeps_the_most_recent_pairs_and_never_answers_for_other_maps():
    from control.xds.delta import DiffCache
    diffs = DiffCache(size=2)
    maps = [{"a": str(i)} for i in range(4)]
    answers = [diffs(maps[i], maps[i + 1]) for i in range(3)]
    assert len(diffs._pairs) == 2 and all(a == DeltaUpdate(("a",), ()) for a in answers)
    assert diffs(maps[1], maps[2]) is answers[1]  # kept
    assert diffs(maps[0], maps[1]) is not answers[0]  # dropped: computed again
    equal_but_other = dict(maps[2])
    assert diffs(maps[2], equal_but_other) == DeltaUpdate((), ())  # an equal map is another map: no stale answer
