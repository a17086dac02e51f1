"""Load balancing, the exact values: the earliest-deadline-first order of weighted round robin and least request
(Envoy's EdfScheduler: deadline = now + 1 / weight, ties to the earlier entry), and the hash a route's hash
policies produce (Envoy's HashPolicyImpl: each new hash XORed into the previous one rotated left by one bit)."""
from __future__ import annotations

import random

import pytest

from pyproxy.http.headers import Headers
from pyproxy.upstream.load_balancer import LeastRequestLoadBalancer, build_load_balancer, compute_hash, hash_key
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
