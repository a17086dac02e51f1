"""Load balancing, the exact values: the earliest-deadline-first order of weighted round robin and least request
(Envoy's EdfScheduler: deadline = now + 1 / weight, ties to the earlier entry), and the hash a route's hash
policies produce (Envoy's HashPolicyImpl: each new hash XORed into the previous one rotated left by one bit)."""
from __future__ import annotations

import hashlib
import random
from types import SimpleNamespace

import pytest

from pyproxy.config.decode import ConfigError
from pyproxy.http.headers import Headers
from pyproxy.upstream.host import Host
from pyproxy.upstream.load_balancer import (
    LbContext, LeastRequestLoadBalancer, _is_prime, build_load_balancer, compute_hash, hash_key,
)
from tests.support.draws import ScriptedDraws
from tests.unit.traffic.test_load_balancer import cluster, hosts, policies

MASK = (1 << 64) - 1


def rotl(h: int) -> int:
    return ((h << 1) | (h >> 63)) & MASK


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "LEAST_REQUEST"])
@pytest.mark.parametrize("weights, picks", [
    # weight 3 is picked at 1/3, 2/3, 1; at 1 it ties with the weight-1 hosts, which were scheduled first
    ([1, 1, 3], [2, 2, 0, 1, 2, 2, 2, 2, 0, 1]),
    ([1, 2, 3], [2, 1, 2, 0, 1, 2, 2, 1, 2, 2]),
])
def test_weighted_picks_follow_the_earliest_deadline_first(policy, weights, picks):
    hs = hosts(len(weights), weights)
    lb = build_load_balancer(cluster(policy), hs, random.Random(0))
    assert [hs.index(lb.choose()) for _ in range(len(picks))] == picks


def test_the_hash_of_several_policies_rotates_and_xors_like_envoy():
    a = next(v for v in (f"user-{i}" for i in range(64)) if hash_key(v) >> 63)  # top bit set: the rotation wraps
    two = policies({"header": {"header_name": "x-a"}}, {"header": {"header_name": "x-b"}})
    assert compute_hash(two, Headers([("x-a", a), ("x-b", "b")]), None, path="/") == rotl(hash_key(a)) ^ hash_key("b")
    same_twice = policies({"header": {"header_name": "x-a"}}, {"header": {"header_name": "x-a"}})
    assert compute_hash(same_twice, Headers([("x-a", a)]), None, path="/") == rotl(hash_key(a)) ^ hash_key(a) != 0
    one = policies({"header": {"header_name": "x-a"}})
    assert compute_hash(one, Headers([("x-a", a)]), None, path="/") == hash_key(a)  # the first: no rotation


@pytest.mark.parametrize("items, headers, key", [
    ([{"header": {"header_name": "x-v"}}], [("x-v", "b"), ("x-v", "a")], "a\x00b"),  # all values, sorted
    ([{"cookie": {"name": "sid"}}], [("cookie", "x=1;sid=abc")], "abc"),  # split at ";", spaces optional
    ([{"cookie": {"name": "sid"}}], [("cookie", "sid=a=b")], "a=b"),  # the value may hold "="
    ([{"cookie": {"name": "sid"}}], [("cookie", "x=1"), ("cookie", "sid=z")], "z"),  # every cookie header
])
def test_the_value_each_policy_hashes(items, headers, key):
    assert compute_hash(policies(*items), Headers(headers), None, path="/") == hash_key(key)


@pytest.mark.parametrize("lr_config, bias", [
    (None, 1.0),  # Envoy's default active_request_bias
    ({"active_request_bias": {"runtime_key": "k"}}, 1.0),  # no default_value: 1.0 as well
    ({"active_request_bias": {"default_value": 0.5, "runtime_key": "k"}}, 0.5),
])
def test_least_request_active_request_bias_defaults_to_one(lr_config, bias):
    extra = {"least_request_lb_config": lr_config} if lr_config is not None else {}
    lb = build_load_balancer(cluster("LEAST_REQUEST", **extra), hosts(2), random.Random(0))
    assert lb.active_request_bias == bias


def test_least_request_honours_the_panic_threshold_and_needs_no_cluster():
    hs = hosts(4)
    for h in hs[:3]:
        h.ejected_until = 100.0  # 25 % healthy
    strict = build_load_balancer(cluster("LEAST_REQUEST", common_lb_config={"healthy_panic_threshold": {"value": 0}}),
                                 hs, random.Random(0))
    assert {strict.choose() for _ in range(20)} == {hs[3]} and not strict.panic
    bare = LeastRequestLoadBalancer(None, hs, random.Random(0))  # Envoy's defaults: 50 % threshold, so panic
    assert {bare.choose() for _ in range(100)} == set(hs) and bare.panic
    assert (bare.choice_count, bare.active_request_bias) == (2, 1.0)


@pytest.mark.parametrize("draws, active, picked", [
    ([0, 1], [0, 0, 0], 0),  # a tie keeps the first draw (Envoy replaces it only with a strictly less loaded host)
    ([0, 1], [1, 0, 0], 1),
    ([1, 0], [1, 0, 0], 1),
    ([2, 2], [0, 0, 5], 2),  # drawn with replacement
])
def test_least_request_takes_the_less_loaded_of_its_draws(draws, active, picked):
    hs = hosts(3)
    for h, n in zip(hs, active):
        h.active_requests = n
    lb = build_load_balancer(cluster("LEAST_REQUEST"), hs, ScriptedDraws(draws))
    assert lb.choose() is hs[picked]


def expected_ring(hs, points_each):
    """Envoy's ring for equal weights: host `ip:port` hashed as `ip:port_0`, `ip:port_1`, ...; ties to the earlier
    host; a key goes to the first point at or after it, wrapping to the first point."""
    ring = sorted((hash_key(f"{h.address_string}_{i}"), order, h) for order, h in enumerate(hs)
                  for i in range(points_each))
    return [p for p, _, _ in ring], [h for _, _, h in ring]


def test_ring_hash_points_and_lookup():
    hs = hosts(3)
    lb = build_load_balancer(cluster("RING_HASH", ring_hash_lb_config={"minimum_ring_size": 6}), hs,
                             random.Random(0))
    points, owners = expected_ring(hs, 2)
    keys = points + [p + 1 for p in points] + [p - 1 for p in points] + [0, MASK]
    want = [owners[next((i for i, p in enumerate(points) if p >= k), 0)] for k in keys]
    assert [lb.choose(LbContext(hash_key=k)) for k in keys] == want
    assert lb.ring_size == 6


def test_hosts_sharing_a_hostname_keep_their_own_points():
    """Envoy hashes the address unless use_hostname_for_hashing: EDS endpoints of one DNS name share a hostname."""
    hs = [Host(f"10.0.0.{i}", 80, hostname="db.example") for i in (1, 2, 3)]
    for policy, extra in (("RING_HASH", {}), ("MAGLEV", {"maglev_lb_config": {"table_size": 1009}})):
        lb = build_load_balancer(cluster(policy, **extra), hs, random.Random(0))
        assert {lb.choose(LbContext(hash_key=hash_key(str(k)))) for k in range(200)} == set(hs)


def test_ring_sizes_may_be_equal_and_an_empty_ring_has_no_points():
    lb = build_load_balancer(cluster("RING_HASH", ring_hash_lb_config={"minimum_ring_size": 64,
                                                                       "maximum_ring_size": 64}), [], random.Random(0))
    assert lb.ring_size == 0 and lb.choose(LbContext(hash_key=1)) is None


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"])
def test_every_policy_reads_the_panic_threshold(policy):
    hs = hosts(4)
    for h in hs[:3]:
        h.ejected_until = 100.0  # 25 % healthy: below Envoy's default 50 %, but the threshold here is 0
    extra = {"maglev_lb_config": {"table_size": 1009}} if policy == "MAGLEV" else {}
    lb = build_load_balancer(cluster(policy, common_lb_config={"healthy_panic_threshold": {"value": 0}}, **extra), hs,
                             random.Random(0))
    assert {lb.choose(LbContext(hash_key=k)) for k in range(20)} == {hs[3]} and not lb.panic


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "RING_HASH"])
def test_with_no_panic_every_host_ejected_leaves_nothing_to_pick_until_one_returns(policy):
    hs = hosts(2)
    lb = build_load_balancer(cluster(policy, common_lb_config={"healthy_panic_threshold": {"value": 0}}), hs,
                             random.Random(0))
    assert lb.choose(LbContext(hash_key=1)) in hs
    for h in hs:
        h.ejected_until = 100.0
    assert lb.choose(LbContext(hash_key=1)) is None and not lb.panic  # 503 UH, not a pick of an ejected host
    hs[1].ejected_until = None
    assert {lb.choose(LbContext(hash_key=k)) for k in range(10)} == {hs[1]}


def test_an_endpoint_listed_twice_shares_its_points_with_itself():
    """Two lb_endpoints with one address are two hosts with the same points; the ring orders a tie by host order."""
    twins = [Host("10.0.0.1", 80), Host("10.0.0.1", 80)]
    lb = build_load_balancer(cluster("RING_HASH", ring_hash_lb_config={"minimum_ring_size": 8}), twins,
                             random.Random(0))
    assert {lb.choose(LbContext(hash_key=hash_key(str(k)))) for k in range(50)} == {twins[0]}


@pytest.mark.parametrize("n, prime", [(0, False), (1, False), (2, True), (3, True), (4, False), (9, False),
                                      (15, False), (17, True), (25, False), (49, False), (1009, True), (65537, True)])
def test_maglev_table_sizes_must_be_prime(n, prime):
    assert _is_prime(n) is prime


def test_maglev_table_size_limit_is_below_5000011():
    with pytest.raises(ConfigError, match="must be a prime number below 5000011"):
        build_load_balancer(cluster("MAGLEV", maglev_lb_config={"table_size": 5_000_011}), hosts(1), random.Random(0))


def maglev_table(hs, m):
    """Maglev (Eisenbud et al.) with Envoy's weighting, from the module docstring: each host's preference list is
    offset + j x skip (mod m) over `ip:port` hashes; in each round a host takes its next free preferred slot only
    while its claimed count lags weight / max weight x round."""
    max_w = max(h.weight for h in hs)
    prefs = [[hash_key(h.address_string) % m, hash_key(h.address_string + "#skip") % (m - 1) + 1, 0, 0] for h in hs]
    table: list = [None] * m
    filled, rnd = 0, 1
    while filled < m:
        for h, p in zip(hs, prefs):
            if h.weight / max_w * rnd < p[3] or filled == m:
                continue
            p[3] += 1
            while table[(p[0] + p[2] * p[1]) % m] is not None:
                p[2] += 1
            table[(p[0] + p[2] * p[1]) % m] = h
            p[2] += 1
            filled += 1
        rnd += 1
    return table


@pytest.mark.parametrize("weights", [[1, 1, 1], [1, 2, 3]])
def test_maglev_fills_its_table_from_each_hosts_preference_list(weights):
    hs = hosts(len(weights), weights)
    lb = build_load_balancer(cluster("MAGLEV", maglev_lb_config={"table_size": 31}), hs, random.Random(0))
    assert [lb.choose(LbContext(hash_key=k)) for k in range(31)] == maglev_table(hs, 31)


@pytest.mark.parametrize("target", [None, SimpleNamespace(lb_policy=None), SimpleNamespace(lb_policy="")])
def test_no_lb_policy_means_round_robin(target):
    assert build_load_balancer(target, hosts(2), random.Random(0)).policy == "ROUND_ROBIN"


def test_an_unknown_lb_policy_is_refused_by_field():
    with pytest.raises(ConfigError) as e:
        build_load_balancer(SimpleNamespace(lb_policy="WRR"), hosts(1), random.Random(0))
    assert e.value.path == "lb_policy"


@pytest.mark.parametrize("threshold, healthy, panic", [(150, 4, False), (50.4, 2, True), (50.4, 3, False),
                                                        (50, 2, False)])
def test_panic_is_a_healthy_share_strictly_below_the_threshold(threshold, healthy, panic):
    hs = hosts(4)
    for h in hs[healthy:]:
        h.ejected_until = 100.0
    lb = build_load_balancer(cluster(common_lb_config={"healthy_panic_threshold": {"value": threshold}}), hs,
                             random.Random(0))
    lb.choose()
    assert lb.panic is panic


@pytest.mark.parametrize("draws, excluded, retries, picked", [
    ([0, 1], [], 1, 0),
    ([0, 1], [1], 1, 0),  # not excluded: kept
    ([0, 0, 1], [0], 1, 0),  # one re-pick, excluded again: taken anyway
    ([0, 0, 1], [0], 2, 1),
    ([0, 1, 1], [0], 3, 1),
])
def test_a_retry_re_picks_an_excluded_host_up_to_host_selection_retries_times(draws, excluded, retries, picked):
    hs = hosts(3)
    lb = build_load_balancer(cluster("RANDOM"), hs, ScriptedDraws(draws))
    ctx = LbContext(excluded=[hs[i] for i in excluded], host_selection_retries=retries)
    assert lb.choose(ctx) is hs[picked]


@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_a_hashing_balancer_moves_only_off_an_excluded_host(policy):
    hs = hosts(3)
    lb = build_load_balancer(cluster(policy, **({"maglev_lb_config": {"table_size": 31}} if policy == "MAGLEV"
                                                else {})), hs, random.Random(0))
    for key in range(0, 1 << 64, 1 << 58):
        first = lb.choose(LbContext(hash_key=key))
        others = [h for h in hs if h is not first]
        assert lb.choose(LbContext(hash_key=key, excluded=others, host_selection_retries=3)) is first


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_robin_starts_at_a_random_index_and_moves_forward(seed):
    hs = hosts(5)
    lb = build_load_balancer(cluster(), hs, random.Random(seed))
    start = random.Random(seed).randrange(1 << 30)
    assert [hs.index(lb.choose()) for _ in range(6)] == [(start + i) % 5 for i in range(1, 7)]


def test_a_hashing_balancer_without_a_key_draws_a_64_bit_one():
    hs = hosts(3)
    lb = build_load_balancer(cluster("RING_HASH"), hs, random.Random(9))
    twin = build_load_balancer(cluster("RING_HASH"), hs, random.Random(0))
    keys = random.Random(9)
    assert [lb.choose() for _ in range(40)] == [twin.choose(LbContext(hash_key=keys.getrandbits(64)))
                                                for _ in range(40)]


def test_hash_key_takes_undecodable_bytes_as_header_values_carry_them():
    assert hash_key("\udcff") == int.from_bytes(hashlib.blake2b(b"\xff", digest_size=8).digest(), "big")


@pytest.mark.parametrize("retries", [1, 3])
@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_a_hashing_balancer_re_picks_at_the_key_plus_multiples_of_the_golden_ratio(policy, retries):
    """A fixed key cannot be drawn again: re-pick number a looks up key + a x 0x9E3779B97F4A7C15 (mod 2^64), up to
    host_selection_retries times, and takes the last one if every re-pick is excluded too."""
    golden = 0x9E3779B97F4A7C15
    hs = hosts(4)
    lb = build_load_balancer(cluster(policy, **({"maglev_lb_config": {"table_size": 31}} if policy == "MAGLEV"
                                                else {})), hs, random.Random(0))
    for key in [MASK - 5] + list(range(0, 1 << 64, 1 << 59)):
        first = lb.choose(LbContext(hash_key=key))
        repicks = [lb.choose(LbContext(hash_key=(key + a * golden) & MASK)) for a in range(1, retries + 1)]
        want = next((h for h in repicks if h is not first), repicks[-1])
        assert lb.choose(LbContext(hash_key=key, excluded=[first], host_selection_retries=retries)) is want
