"""control.xds.vhds: VHDS for the proxies that ask for it. Their route configurations come with `vhds` and no
virtual hosts; the virtual hosts are VirtualHost resources `<route configuration>/<first domain>` over delta
xDS, subscribed by glob `<route configuration>/*`, and a VirtualService edit changes the version of only the
virtual hosts it touches. Everyone else's snapshots are what they were.

The control plane is the real one over a copy of examples/mesh; pushes are called directly (no sockets)."""
from __future__ import annotations

import json

import pytest

from control.xds.cache import ALL, ORDER, RDS, VHDS, DiscoveryRequest, Payload, ProxySnapshot, XdsCache, \
    canonical_json, resource_version
from control.xds.delta import DeltaRequest, DeltaSessions, DeltaSubscription, DeltaUpdate, PayloadIndex, due, \
    receive
from control.xds.node import VHDS_FEATURE, NodeError, node_dict, node_id, parse_node, without_vhds
from control.xds.vhds import (VhdsSubscription, as_resource, glob, names_of, resource_name, route_config_of,
                              split)
from pyproxy.xds.vhds import FEATURE as PROXY_FEATURE
from pyproxy.xds.vhds import VHDS as PROXY_VHDS
from tests.unit.control.test_incremental_render import CANARY, NODES, control, rewrite, sidecar  # noqa: F401


def vhds_node(node, ip: str = "127.0.0.2"):
    """The same proxy, asking for VHDS (another id: both are registered side by side)."""
    raw = node_dict(node)
    raw["id"] = raw["id"].replace("~127.0.0.1~", f"~{ip}~")
    raw["metadata"]["INSTANCE_IPS"] = ip
    raw["client_features"] = ["envoy.lb.does_not_support_overprovisioning", VHDS_FEATURE]
    return parse_node(raw)


def test_names_are_route_config_slash_first_domain_read_right_to_left():
    vh = {"name": "reviews.default.svc.cluster.local:9080", "domains": ["reviews.default.svc.cluster.local",
                                                                         "reviews", "reviews:9080"]}
    assert resource_name("9080", vh) == "9080/reviews.default.svc.cluster.local"
    assert resource_name("a/b", {"name": "x", "domains": ["*"]}) == "a/b/*"
    assert route_config_of("a/b/host") == "a/b" and route_config_of("9080/reviews") == "9080"
    assert glob("a/b") == "a/b/*"
    assert names_of({"name": "80", "virtual_hosts": [vh, {"name": "allow_any", "domains": ["*"]}]}) == \
        ("80/reviews.default.svc.cluster.local", "80/*")


def test_a_virtual_host_resource_is_the_canonical_json_of_the_virtual_host_with_its_type():
    vh = {"name": "a:80", "domains": ["a"], "routes": [{"match": {"prefix": "/"}}]}
    assert as_resource(canonical_json(vh)) == canonical_json({"@type": VHDS.type_url, **vh})
    assert as_resource(b"{}") == canonical_json({"@type": VHDS.type_url})
    assert VHDS.type_url == PROXY_VHDS  # what pyproxy asks for


def test_split_gives_route_configs_with_vhds_and_every_virtual_host_as_a_resource():
    vhs = [{"name": "a:80", "domains": ["a", "a:80"]}, {"name": "allow_any", "domains": ["*"]}]
    rest = {"@type": RDS.type_url, "name": "80", "validate_clusters": False}
    rds, vhds = split([(rest, tuple(canonical_json(v) for v in vhs), names_of({"name": "80", "virtual_hosts": vhs}))])
    [rc] = json.loads(rds.body)
    assert rc == {**rest, "virtual_hosts": [], "vhds": {"config_source": {
        "ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}}
    assert vhds.names == ("80/a", "80/*")
    assert json.loads(vhds.body) == [{"@type": VHDS.type_url, **v} for v in vhs]
    index = PayloadIndex()(vhds)
    assert index.versions == {"80/a": resource_version(canonical_json({"@type": VHDS.type_url, **vhs[0]})),
                              "80/*": resource_version(canonical_json({"@type": VHDS.type_url, **vhs[1]}))}


def test_the_node_asks_for_vhds_in_client_features_and_grpc_does_not_honour_it():
    node = vhds_node(NODES[0])
    assert node.vhds and not NODES[0].vhds and PROXY_FEATURE == VHDS_FEATURE
    assert parse_node(node_dict(node)) == node  # persisted across control plane restarts
    assert not without_vhds(node).vhds
    assert without_vhds(node).client_features == ("envoy.lb.does_not_support_overprovisioning",)
    with pytest.raises(NodeError, match="node.client_features: want a list of strings"):
        parse_node({**node_dict(node), "client_features": "pyproxy.vhds"})


def assembled(snapshot: ProxySnapshot) -> list[dict]:
    """A VHDS proxy's route configurations with their virtual hosts put back, as pyproxy assembles them."""
    out = []
    vhs = dict(zip(snapshot.payloads["vhds"].names, snapshot.resources("vhds")))
    for rc in snapshot.resources("rds"):
        assert rc["virtual_hosts"] == [] and "vhds" in rc
        rc = {k: v for k, v in rc.items() if k != "vhds"}
        rc["virtual_hosts"] = [{k: v for k, v in vh.items() if k != "@type"}
                               for name, vh in vhs.items() if route_config_of(name) == rc["name"]]
        out.append(rc)
    return out


async def test_a_vhds_proxy_gets_the_same_virtual_hosts_split_and_the_others_what_they_got(control):
    cp, _config = control
    plain = {n.id: cp.cache.snapshot(n.id) for n in NODES}
    for n in NODES:
        cp.connect(vhds_node(n))
    cp.connect(vhds_node(NODES[0], "127.0.0.3"))  # a second replica of productpage
    await cp.push(1.0)
    for n in NODES:
        mine, theirs = cp.cache.snapshot(vhds_node(n).id), cp.cache.snapshot(n.id)
        # (their EDS moved: the VHDS proxies registered as endpoints too)
        assert theirs.payloads["rds"] is plain[n.id].payloads["rds"]
        assert set(theirs.payloads) == {"cds", "eds", "lds", "rds"}
        assert set(mine.payloads) == {t.short for t in ALL}
        assert all(mine.payloads[t].body == theirs.payloads[t].body for t in ("cds", "eds"))
        assert assembled(mine) == theirs.resources("rds")
        assert len(mine.payloads["vhds"].names) == sum(len(rc["virtual_hosts"]) for rc in theirs.resources("rds"))
    # proxies of one shape share its split (one serialization, one version map for delta)
    a, b = (cp.cache.snapshot(vhds_node(NODES[0], ip).id).payloads for ip in ("127.0.0.2", "127.0.0.3"))
    assert a["vhds"] is b["vhds"] and a["rds"] is b["rds"]


async def test_a_virtual_service_edit_changes_only_the_versions_of_the_virtual_hosts_it_touches(control):
    cp, config = control
    nodes = [vhds_node(n) for n in NODES]
    for n in nodes:
        cp.connect(n)
    await cp.push(1.0)
    index = PayloadIndex()
    before = {n.id: cp.cache.snapshot(n.id) for n in nodes}
    rewrite(config / "canary.yaml", CANARY.format(a=50, b=50))
    assert cp.reload()
    await cp.push(2.0)
    for n in nodes[:3]:  # sidecars: their route configurations are the same, details' virtual hosts changed
        after = cp.cache.snapshot(n.id)
        assert after.payloads["rds"].hash == before[n.id].payloads["rds"].hash
        old, new = index(before[n.id].payloads["vhds"]).versions, index(after.payloads["vhds"]).versions
        assert old.keys() == new.keys()
        # details' virtual hosts for ports 9080 and 80, in their port's route configuration and in http_proxy's
        assert {name for name in new if new[name] != old[name]} == {
            "9080/details.default.svc.cluster.local", "80/details.default.svc.cluster.local",
            "http_proxy/details.default.svc.cluster.local:9080", "http_proxy/details.default.svc.cluster.local"}
        vh = dict(zip(after.payloads["vhds"].names, after.resources("vhds")))["9080/details.default.svc.cluster.local"]
        assert [c["weight"] for c in vh["routes"][0]["route"]["weighted_clusters"]["clusters"]] == [50, 50]
    assert cp.cache.snapshot(nodes[3].id).version == before[nodes[3].id].version  # the gateway: nothing changed


# --- the subscription and the protocol steps over the real XdsCache -------------------------------------------

PROXY = "sidecar~127.0.0.1~a.default~default.svc.cluster.local"


def test_a_glob_subscribes_to_every_virtual_host_of_its_route_configuration_and_unsubscribing_forgets_them():
    sub = VhdsSubscription(VHDS.type_url)
    sub.request(["80/*"], [])
    assert not sub.wildcard
    current = {"80/a": "1", "80/*": "1", "9080/a": "1", "x/y/a": "1"}
    assert sub.wanted("80/a") and sub.wanted("80/*") and not sub.wanted("9080/a")
    first = sub.update(current)
    assert first == DeltaUpdate(("80/*", "80/a"), ())
    sub.sent("n1", first, current)
    sub.request(["x/y/*", "9080/a"], [])  # a name on its own (on demand) too
    assert sub.update(current) == DeltaUpdate(("9080/a", "x/y/a"), ())
    sub.request([], ["80/*"])
    assert "80/a" not in sub.held  # the client dropped them: a new glob subscription sends them again
    sub.request(["80/*"], [])
    assert sub.update(current).send == ("80/*", "80/a", "9080/a", "x/y/a")


def test_covers_reads_globs_so_clients_of_one_payload_share_its_version_map():
    vhds = Payload.join([b'{"domains":["a"],"name":"a"}', b'{"domains":["b"],"name":"b"}'], ["80/a", "9080/b"])
    versions = PayloadIndex()(vhds).versions
    sub = VhdsSubscription(VHDS.type_url)
    sub.request(["80/*"], [])
    assert not sub.covers(versions)
    sub.request(["9080/*"], [])
    assert sub.covers(versions)
    update = sub.update(versions)
    sub.sent("n1", update, versions)
    assert sub.held is versions  # it holds exactly the payload's: the shared map, no copy
    assert not DeltaSubscription(VHDS.type_url, names=frozenset({"80/*", "9080/*"})).covers(versions)


def session() -> tuple[XdsCache, DeltaSessions, PayloadIndex]:
    return XdsCache("n-"), DeltaSessions(kinds={"vhds": VhdsSubscription}), PayloadIndex()


def vhds_snapshot(weight: int, *, with_vhds: bool = True) -> ProxySnapshot:
    vhs = [{"name": "a:80", "domains": ["a"], "routes": [{"w": weight}]}, {"name": "b:80", "domains": ["b"]}]
    rest = {"@type": RDS.type_url, "name": "80"}
    rds, vhds = split([(rest, tuple(canonical_json(v) for v in vhs), names_of({"name": "80", "virtual_hosts": vhs}))])
    resources = {"cds": [], "eds": [], "lds": [], "rds": rds}
    if with_vhds:
        resources["vhds"] = vhds
    return ProxySnapshot.build(resources)


def step(cache, sessions, index, t, **fields):
    """A delta request of type `t`, then the update due for it (with its nonce), or None."""
    sub = sessions.get(PROXY, t.short)
    if sub is None or not fields.get("response_nonce"):
        sub = sessions.start(PROXY, t)
    receive(cache, lambda r: cache.receive(PROXY, t, r), PROXY, t, sub, DeltaRequest(**fields), one_at_a_time=True)
    current = index(cache.snapshot(PROXY).payloads[t.short]).versions
    update = due(cache, PROXY, t, sub, current, ordered_stream=False)
    if update is None:
        return None
    response = cache.respond(PROXY, t)
    sub.sent(response.nonce, update, current)
    return update, response.nonce


def test_vhds_comes_after_rds_in_ads_order_and_an_edit_sends_only_the_changed_virtual_host():
    cache, sessions, index = session()
    cache.set_snapshot(PROXY, vhds_snapshot(1))
    nonces = {}
    for t in ORDER[:3]:
        _update, nonces[t.short] = step(cache, sessions, index, t, subscribe=("*",))
        step(cache, sessions, index, t, response_nonce=nonces[t.short])  # ACK
    assert isinstance(sessions.get(PROXY, "lds"), DeltaSubscription)
    assert isinstance(sessions.get(PROXY, "vhds") or sessions.start(PROXY, VHDS), VhdsSubscription)
    assert step(cache, sessions, index, VHDS, subscribe=("80/*",)) is None  # RDS not held yet
    update, rds_nonce = step(cache, sessions, index, RDS, subscribe=("80",))
    assert update.send == ("80",)
    step(cache, sessions, index, RDS, response_nonce=rds_nonce)
    update, nonce = step(cache, sessions, index, VHDS, subscribe=("80/*",))
    assert update == DeltaUpdate(("80/a", "80/b"), ())
    assert step(cache, sessions, index, VHDS, response_nonce=nonce) is None  # ACK: synced
    assert cache.describe(PROXY)["types"]["vhds"]["status"] == "SYNCED"

    cache.set_snapshot(PROXY, vhds_snapshot(2))  # an edit of a's routes
    assert not cache.ready(PROXY, RDS)  # the route configuration itself did not change
    sub = sessions.get(PROXY, "vhds")
    current = index(cache.snapshot(PROXY).payloads["vhds"]).versions
    assert due(cache, PROXY, VHDS, sub, current, ordered_stream=False) == DeltaUpdate(("80/a",), ())


def test_a_glob_subscription_is_answered_even_with_nothing_to_send():
    cache, sessions, index = session()
    cache.set_snapshot(PROXY, vhds_snapshot(1))
    for t in ORDER:
        update, nonce = step(cache, sessions, index, t, subscribe=("*",) if t is not RDS else ("80",))
        step(cache, sessions, index, t, response_nonce=nonce)
    _update, nonce = step(cache, sessions, index, VHDS, subscribe=("80/*",))
    step(cache, sessions, index, VHDS, response_nonce=nonce)
    # a route configuration without virtual hosts (or held already): the client still learns VHDS answered
    update, nonce2 = step(cache, sessions, index, VHDS, response_nonce=nonce, subscribe=("90/*",))
    assert not update and nonce2 != nonce
    # an ordinary delta subscription is not answered when nothing is owed
    sub = sessions.get(PROXY, "rds")
    sub.request(["81"], [])
    assert due(cache, PROXY, RDS, sub, index(cache.snapshot(PROXY).payloads["rds"]).versions,
               ordered_stream=False) is None


def test_proxies_without_vhds_converge_and_show_four_types():
    cache = XdsCache("n-")
    cache.set_snapshot(PROXY, vhds_snapshot(1, with_vhds=False))
    assert not cache.ready(PROXY, VHDS)
    for t in ORDER:
        cache.respond(PROXY, t)
        nonce = cache.type_state(PROXY, t).sent_nonce
        outcome = cache.receive(PROXY, t, DiscoveryRequest(cache.snapshot(PROXY).version, nonce))
    assert outcome.converged_after is not None  # the last ACK completed its snapshot
    assert set(cache.describe(PROXY)["types"]) == {"cds", "eds", "lds", "rds"}


async def test_a_push_that_leaves_the_routes_alone_keeps_the_vhds_payloads_without_splitting_again(control):
    cp, config = control
    node = vhds_node(NODES[0])
    cp.connect(node)
    await cp.push(1.0)
    before = cp.cache.snapshot(node.id).payloads
    security = config / "security.yaml"
    rewrite(security, security.read_text().replace("mode: STRICT", "mode: PERMISSIVE", 1))
    assert cp.reload()
    result = await cp.push(2.0)
    after = cp.cache.snapshot(node.id).payloads
    assert result.full and after["lds"] is not before["lds"]  # a full push: the listeners changed
    assert after["vhds"] is before["vhds"] and after["rds"] is before["rds"]


async def test_a_proxy_without_route_configurations_has_no_vhds_to_wait_for(control):
    """An auto-passthrough gateway (TCP listeners only) never subscribes to VHDS: its snapshot has no VHDS type,
    so it is SYNCED (and converges) with four."""
    cp, config = control
    ingress = config / "ingress.yaml"
    rewrite(ingress, "")
    assert cp.reload()
    gateway, sidecar = vhds_node(NODES[3]), vhds_node(NODES[0])
    cp.connect(gateway)
    cp.connect(sidecar)
    await cp.push(1.0)
    snapshot = cp.cache.snapshot(gateway.id)
    assert snapshot.resources("rds") == [] and "vhds" not in snapshot.payloads
    assert set(cp.cache.describe(gateway.id)["types"]) == {"cds", "eds", "lds", "rds"}
    assert "vhds" in cp.cache.snapshot(sidecar.id).payloads  # (a sidecar has route configurations)


async def test_a_shape_whose_proxies_all_use_vhds_never_joins_its_whole_route_configurations(control):
    """Memory: the whole RDS payload (~2 MB per shape at 1,000 services) is joined only for a proxy that takes it."""
    cp, _config = control
    details = vhds_node(sidecar("details-v1", {"app": "details", "version": "v1"}, 21030))
    cp.connect(details)
    await cp.push(1.0)
    built = [set(shape.rds) for shape in cp._shapes.shapes.values()]
    assert sorted(map(sorted, built)) == [["split"]] + [["whole"]] * 4  # details (VHDS), the four of NODES
    assert "vhds" in cp.cache.snapshot(details.id).payloads


async def test_shapes_share_the_bytes_of_the_clusters_and_virtual_hosts_they_have_in_common(control):
    """Payloads keep their items, not a joined copy (control.xds.cache.Payload), and a virtual host's VHDS resource
    is made once per push (vhds.ResourceMemo): two shapes' payloads hold one copy of what they list alike."""
    cp, _config = control
    for n in NODES[:2]:  # productpage and reviews: two shapes, the same outbound clusters and virtual hosts
        cp.connect(vhds_node(n))
    await cp.push(1.0)
    a, b = (cp.cache.snapshot(vhds_node(n).id).payloads for n in NODES[:2])
    for t in ("cds", "vhds"):
        assert a[t] is not b[t]
        theirs = dict(zip(b[t].names, b[t].items))
        # (each render builds its own passthrough and black hole clusters and `allow_any` virtual hosts, `<rc>/*`)
        alike = [(item, theirs[name]) for name, item in zip(a[t].names, a[t].items)
                 if theirs.get(name) == item and name.startswith("outbound|" if t == "cds" else "") and
                 not name.endswith("/*")]
        assert len(alike) > 10
        assert all(mine is other for mine, other in alike), t
