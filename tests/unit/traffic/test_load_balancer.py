"""Load balancers and hosts: Envoy's policies, panic threshold, exclusion, hash policies; Host reuse on updates."""
from __future__ import annotations

import collections
import random

import pytest

from pyproxy.config.decode import ConfigError, decode
from pyproxy.config.model import Cluster, ClusterLoadAssignment, HashPolicy
from pyproxy.http.headers import Headers
from pyproxy.upstream.host import Host, HostSet
from pyproxy.upstream.load_balancer import LbContext, build_load_balancer, compute_hash


def cluster(policy="ROUND_ROBIN", **extra) -> Cluster:
    return decode(Cluster, {"name": "c", "lb_policy": policy, **extra})


def hosts(n, weights=None):
    return [Host(f"10.0.0.{i + 1}", 80, weight=(weights[i] if weights else 1)) for i in range(n)]


def counts(lb, n, ctx=LbContext()):
    return collections.Counter(lb.choose(ctx).address for _ in range(n))


# ---------------------------------------------------------------- round robin


def test_round_robin_cycles_through_equal_hosts():
    hs = hosts(3)
    lb = build_load_balancer(cluster(), hs, random.Random(1))
    picks = [lb.choose(LbContext()) for _ in range(6)]
    assert picks[:3] == picks[3:] and set(picks) == set(hs)


def test_weighted_round_robin_is_proportional_and_interleaved_edf():
    hs = hosts(3, [1, 2, 5])
    lb = build_load_balancer(cluster(), hs, random.Random(1))
    picks = [lb.choose(LbContext()) for _ in range(80)]
    c = collections.Counter(h.weight for h in picks)
    assert c == {1: 10, 2: 20, 5: 50}
    # EDF interleaves: the heavy host never runs more than ~3 times in a row
    longest = run = 1
    for a, b in zip(picks, picks[1:]):
        run = run + 1 if a is b else 1
        longest = max(longest, run)
    assert longest <= 3


# ---------------------------------------------------------------- least request


def test_least_request_picks_the_less_loaded_of_two():
    a, b = hosts(2)
    a.active_requests, b.active_requests = 5, 1
    lb = build_load_balancer(cluster("LEAST_REQUEST"), [a, b], random.Random(3))
    picks = counts(lb, 1000)
    # b wins whenever it is one of the two draws: 3 of 4 cases
    assert 700 <= picks["10.0.0.2"] <= 800


def test_least_request_choice_count_widens_the_sample():
    hs = hosts(4)
    for i, h in enumerate(hs):
        h.active_requests = 10 - i  # host 4 is the least loaded
    lb = build_load_balancer(cluster("LEAST_REQUEST", least_request_lb_config={"choice_count": 10}), hs,
                             random.Random(5))
    assert counts(lb, 200)["10.0.0.4"] >= 180


def test_weighted_least_request_divides_weight_by_active_requests():
    a, b = hosts(2, [2, 1])
    a.active_requests = 3  # effective weight 2/4 = 0.5 vs 1/1
    lb = build_load_balancer(cluster("LEAST_REQUEST"), [a, b], random.Random(1))
    c = counts(lb, 300)
    assert c["10.0.0.2"] > c["10.0.0.1"]


# ---------------------------------------------------------------- random


def test_random_spreads_over_healthy_hosts():
    lb = build_load_balancer(cluster("RANDOM"), hosts(4), random.Random(9))
    c = counts(lb, 4000)
    assert all(850 <= v <= 1150 for v in c.values()) and len(c) == 4


# ---------------------------------------------------------------- health and panic


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"])
def test_ejected_and_unhealthy_hosts_are_skipped(policy):
    hs = hosts(4)
    hs[0].ejected_until = 100.0
    hs[1].health_status = "UNHEALTHY"
    extra = {"maglev_lb_config": {"table_size": 251}} if policy == "MAGLEV" else {}
    lb = build_load_balancer(cluster(policy, **extra), hs, random.Random(2))
    assert set(counts(lb, 200)) == {"10.0.0.3", "10.0.0.4"}


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH"])
def test_panic_threshold_uses_all_hosts(policy):
    hs = hosts(4)
    for h in hs[:3]:
        h.ejected_until = 100.0  # 25 % healthy < 50 %
    lb = build_load_balancer(cluster(policy), hs, random.Random(2))
    assert len(counts(lb, 400)) == 4
    assert lb.panic


def test_panic_threshold_zero_never_panics_and_no_healthy_host_means_none():
    hs = hosts(2)
    for h in hs:
        h.ejected_until = 1.0
    lb = build_load_balancer(cluster(common_lb_config={"healthy_panic_threshold": {"value": 0}}), hs, random.Random())
    assert lb.choose(LbContext()) is None


def test_no_hosts_means_none():
    assert build_load_balancer(cluster(), [], random.Random()).choose(LbContext()) is None


def test_health_change_is_noticed_without_rebuilding_the_balancer():
    hs = hosts(3)
    lb = build_load_balancer(cluster(), hs, random.Random(1))
    assert len(counts(lb, 30)) == 3
    hs[0].ejected_until = 50.0
    assert "10.0.0.1" not in counts(lb, 30)
    hs[0].ejected_until = None
    assert "10.0.0.1" in counts(lb, 30)


def test_excluded_hosts_are_re_picked_for_retries():
    hs = hosts(3)
    lb = build_load_balancer(cluster(), hs, random.Random(1))
    first = lb.choose(LbContext())
    assert all(lb.choose(LbContext(excluded=(first,))) is not first for _ in range(20))


def test_exclusion_gives_up_after_host_selection_retries():
    only = hosts(1)
    lb = build_load_balancer(cluster(), only, random.Random(1))
    assert lb.choose(LbContext(excluded=(only[0],))) is only[0]  # better a previous host than none


# ---------------------------------------------------------------- consistent hashing


def test_ring_hash_same_key_same_host():
    lb = build_load_balancer(cluster("RING_HASH"), hosts(5), random.Random(1))
    assert len({lb.choose(LbContext(hash_key=12345)).address for _ in range(20)}) == 1


def test_ring_hash_minimum_ring_size_and_weights():
    lb = build_load_balancer(cluster("RING_HASH"), hosts(3, [1, 1, 2]), random.Random(1))
    assert lb.ring_size >= 1024
    lb_small = build_load_balancer(cluster("RING_HASH", ring_hash_lb_config={"minimum_ring_size": 64}),
                                   hosts(2), random.Random(1))
    assert lb_small.ring_size == 64


def key_spread(lb, keys):
    return {k: lb.choose(LbContext(hash_key=k)).address for k in keys}


@pytest.mark.parametrize("policy, extra", [("RING_HASH", {}), ("MAGLEV", {"maglev_lb_config": {"table_size": 1009}})])
def test_consistent_hash_keeps_a_key_on_the_same_host_when_another_host_is_removed(policy, extra):
    rng = random.Random(11)
    keys = [rng.getrandbits(64) for _ in range(2000)]
    hs = hosts(5)
    before = key_spread(build_load_balancer(cluster(policy, **extra), hs, random.Random(1)), keys)
    removed = hs[2]
    survivors = [h for h in hs if h is not removed]
    after = key_spread(build_load_balancer(cluster(policy, **extra), survivors, random.Random(1)), keys)
    lost = [k for k in keys if before[k] == removed.address]
    kept = [k for k in keys if before[k] != removed.address]
    assert 250 <= len(lost) <= 550  # ~1/5 of the keys lived on the removed host ...
    assert all(after[k] != removed.address for k in lost)  # ... and go elsewhere
    stayed = sum(1 for k in kept if after[k] == before[k])
    # ~1/N of the keys move: the ring rescales (more points per survivor), Maglev refills the table
    assert stayed / len(kept) >= 0.85


def test_maglev_spreads_keys_by_weight():
    lb = build_load_balancer(cluster("MAGLEV", maglev_lb_config={"table_size": 1009}), hosts(2, [1, 3]),
                             random.Random(1))
    rng = random.Random(4)
    c = collections.Counter(lb.choose(LbContext(hash_key=rng.getrandbits(64))).address for _ in range(4000))
    assert 850 <= c["10.0.0.1"] <= 1150


def test_maglev_default_table_size_is_65537():
    lb = build_load_balancer(cluster("MAGLEV"), hosts(3), random.Random(1))
    assert lb.table_size == 65537
    assert lb.choose(LbContext(hash_key=1)) is lb.choose(LbContext(hash_key=1))


def test_maglev_table_size_must_be_prime():
    with pytest.raises(ConfigError) as e:
        build_load_balancer(cluster("MAGLEV", maglev_lb_config={"table_size": 1000}), hosts(2), random.Random())
    assert e.value.path == "maglev_lb_config.table_size"


def policies(*items) -> list[HashPolicy]:
    return [decode(HashPolicy, p) for p in items]


HASH_CASES = [
    # (policies, headers, source ip, path, has a hash?)
    ([{"header": {"header_name": "x-user"}}], [("x-user", "a")], None, "/", True),
    ([{"header": {"header_name": "x-user"}}], [], None, "/", False),
    ([{"cookie": {"name": "sid"}}], [("cookie", "a=1; sid=xyz")], None, "/", True),
    ([{"cookie": {"name": "sid"}}], [("cookie", "a=1")], None, "/", False),
    ([{"connection_properties": {"source_ip": True}}], [], "10.1.1.1", "/", True),
    ([{"query_parameter": {"name": "u"}}], [], None, "/p?u=7", True),
    ([{"query_parameter": {"name": "u"}}], [], None, "/p", False),
    ([{"connection_properties": {"source_ip": True}}], [], None, "/", False),  # no downstream address
    ([{"connection_properties": {"source_ip": False}}], [], "10.1.1.1", "/", False),
]


@pytest.mark.parametrize("items, headers, ip, path, expected", HASH_CASES)
def test_compute_hash_sources(items, headers, ip, path, expected):
    assert (compute_hash(policies(*items), Headers(headers), ip, path=path) is not None) is expected


def test_hash_is_stable_and_distinguishes_values():
    p = policies({"header": {"header_name": "x-user"}})
    h1 = compute_hash(p, Headers([("x-user", "alice")]), None)
    assert h1 == compute_hash(p, Headers([("x-user", "alice")]), None)
    assert h1 != compute_hash(p, Headers([("x-user", "bob")]), None)


def test_terminal_policy_stops_the_walk_once_it_hashed():
    terminal = policies({"header": {"header_name": "x-a"}, "terminal": True}, {"header": {"header_name": "x-b"}})
    both = policies({"header": {"header_name": "x-a"}}, {"header": {"header_name": "x-b"}})
    h = Headers([("x-a", "1"), ("x-b", "2")])
    only_a = compute_hash(policies({"header": {"header_name": "x-a"}}), h, None)
    assert compute_hash(terminal, h, None) == only_a
    assert compute_hash(both, h, None) != only_a


# ---------------------------------------------------------------- hosts


def cla(*endpoints) -> ClusterLoadAssignment:
    return decode(ClusterLoadAssignment, {"cluster_name": "c", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": a, "port_value": p}}}, **extra}
        for a, p, extra in endpoints]}]})


def test_host_set_update_keeps_live_state_for_unchanged_endpoints():
    first = HostSet.from_load_assignment(cla(("10.0.0.1", 80, {}), ("10.0.0.2", 80, {})))
    kept = first[0]
    kept.active_requests = 4
    kept.ejected_until = 99.0
    second = first.update(cla(("10.0.0.1", 80, {"load_balancing_weight": 3}), ("10.0.0.3", 80, {})))
    assert second[0] is kept and kept.weight == 3 and kept.active_requests == 4 and kept.ejected
    assert second[1].address == "10.0.0.3" and second[1].rq_total == 0
    assert [h.address for h in second.removed_from(first)] == ["10.0.0.2"]


def test_host_health_and_repr():
    h = Host("10.0.0.1", 80, health_status="DRAINING")
    assert not h.healthy and h.health_flags() == "/pending_dynamic_removal"
    h = Host("::1", 8080)
    assert h.address_string == "[::1]:8080" and "healthy" in repr(h)
    assert h.describe()["weight"] == 1


def test_least_request_active_request_bias():
    a, b = hosts(2, [1, 1])
    a.active_requests = 9
    flat = build_load_balancer(cluster("LEAST_REQUEST", least_request_lb_config={"active_request_bias": {
        "default_value": 0.0, "runtime_key": "k"}}), [a, b], random.Random(1))
    assert flat.active_request_bias == 0.0 and flat._edf_weight(a) == 1.0  # load ignored: plain weights
    odd = build_load_balancer(cluster("LEAST_REQUEST", least_request_lb_config={"active_request_bias": {
        "default_value": "x"}}), [a, b], random.Random(1))
    assert odd.active_request_bias == 1.0 and odd._edf_weight(a) == 0.1  # 1 / (9 + 1)


@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_hashing_balancers_without_hosts_choose_none_and_re_pick_an_excluded_host(policy):
    assert build_load_balancer(cluster(policy), [], random.Random(1)).choose(LbContext(hash_key=1)) is None
    hs = hosts(2)
    lb = build_load_balancer(cluster(policy), hs, random.Random(1))
    first = lb.choose(LbContext(hash_key=42))
    other = lb.choose(LbContext(hash_key=42, excluded=(first,), host_selection_retries=5))
    assert other is not first and other in hs


@pytest.mark.parametrize("extra, where, says", [
    ({"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 100, "maximum_ring_size": 10}},
     "ring_hash_lb_config.minimum_ring_size", "minimum_ring_size 100 exceeds maximum_ring_size 10"),
    ({"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 1}}, "maglev_lb_config.table_size",
     "table_size 1 must be a prime number below 5000011"),
    ({"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 4}}, "maglev_lb_config.table_size",
     "table_size 4 must be a prime"),
])
def test_balancer_config_errors(extra, where, says):
    with pytest.raises(ConfigError) as e:
        build_load_balancer(decode(Cluster, {"name": "c", **extra}), hosts(2), random.Random(1))
    assert e.value.path == where and says in e.value.message


def test_an_unknown_policy_and_a_repr():
    from types import SimpleNamespace
    with pytest.raises(ConfigError, match="unsupported lb_policy 'LOAD_BALANCING_POLICY_CONFIG'"):
        build_load_balancer(SimpleNamespace(lb_policy="LOAD_BALANCING_POLICY_CONFIG"), hosts(1), random.Random(1))
    hs = hosts(2)
    hs[1].ejected_until = 10.0
    assert repr(build_load_balancer(cluster(), hs, random.Random(1))) == \
        "<RoundRobinLoadBalancer hosts=2 healthy=1 panic=False>"


def test_a_pick_context_prints_its_facts():
    assert repr(LbContext(hash_key=7, host_selection_retries=3)) == (
        "LbContext(hash_key=7, excluded=(), host_selection_retries=3)")


def test_an_eds_update_that_keeps_a_hosts_health_leaves_the_epoch_alone():
    from pyproxy.upstream.host import health_epoch

    h = Host("10.0.0.1", 80)
    before = health_epoch()
    h.update_config(2, None, h.health_status)  # every EDS push re-applies each host's config
    assert health_epoch() == before and h.weight == 2
    h.update_config(2, None, "UNHEALTHY")
    assert health_epoch() > before and not h.healthy


def test_a_health_change_moves_the_epoch_the_balancers_recompute_on():
    from pyproxy.upstream.host import health_epoch

    h = Host("10.0.0.1", 80)
    before = health_epoch()
    h.ejected_until = 5.0
    assert health_epoch() > before and h.ejected and not h.healthy
    before = health_epoch()
    h.ejected_until = None
    h.health_status = "DRAINING"
    assert health_epoch() >= before + 2 and not h.healthy
