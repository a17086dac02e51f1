"""The local rate limit's finer points (Envoy 1.40 local_ratelimit_impl.cc): which configured descriptor a request
descriptor matches, the dynamic-descriptor LRU and its default size, the order matched buckets are consumed in,
the bucket's defaults, and the x-ratelimit reset while a whole token is left."""
from __future__ import annotations

import random

import pytest

from pyproxy.config.decode import ConfigError, decode
from pyproxy.config.model import RateLimit, RuntimeFractionalPercent
from pyproxy.filters import local_ratelimit_logic
from pyproxy.filters.local_ratelimit_logic import (
    Decision, LocalRateLimiter, TokenBucket, compiled, fraction_enabled, rate_limited_status, request_descriptors,
)
from tests.support.draws import FixedDraws
from tests.unit.traffic.test_local_ratelimit_logic import ALL, bucket, desc, facts, limit, rate_limit


def limiter(*descriptors, **cfg) -> LocalRateLimiter:
    return LocalRateLimiter(limit(filter_enabled=ALL, filter_enforced=ALL, descriptors=list(descriptors), **cfg), 0.0)


def allowed(lim: LocalRateLimiter, *descriptors, now: float = 0.0) -> bool:
    return lim.decide(now, random.Random(0), descriptors=tuple(descriptors)).allowed


@pytest.mark.parametrize("configured, request_descriptor, limited", [
    ([("user", "")], (("user", "ann"),), True),
    ([("user", "")], (("group", "ann"),), False),  # another key
    ([("user", "")], (("user", "ann"), ("plan", "gold")), False),  # more entries than configured
    ([("user", ""), ("plan", "gold")], (("user", "ann"), ("plan", "gold")), True),  # a fixed value must be equal
    ([("user", ""), ("plan", "gold")], (("user", "ann"), ("plan", "free")), False),
])
def test_which_request_descriptors_a_configured_descriptor_with_an_empty_value_matches(configured, request_descriptor,
                                                                                        limited):
    """An empty configured value matches any value of that key; keys, their order and the number of entries must be
    the same (Envoy's dynamic descriptors). Matched: the descriptor's bucket of 1 stops the second request."""
    lim = limiter(desc(configured, 1))
    assert [allowed(lim, request_descriptor) for _ in range(2)] == [True, not limited]


def test_an_exact_descriptor_listed_first_does_not_hide_a_dynamic_one():
    lim = limiter(desc([("user", "ann")], 5), desc([("user", "")], 1))
    assert [allowed(lim, (("user", "bob"),)) for _ in range(2)] == [True, False]


def test_dynamic_descriptors_keep_the_most_recent_values_up_to_the_maximum():
    lim = limiter(desc([("user", "")], 1), max_dynamic_descriptors=2)
    assert [allowed(lim, (("user", u),)) for u in "aba"] == [True, True, False]  # two values: both remembered
    lim = limiter(desc([("user", "")], 1))  # Envoy's default maximum: 20
    users = [f"u{i}" for i in range(20)]
    assert all(allowed(lim, (("user", u),)) for u in users)
    assert not allowed(lim, (("user", "u0"),))  # 20 values: u0 still remembered (and now the most recent)
    assert allowed(lim, (("user", "new"),))  # the 21st drops the least recent, u1
    assert allowed(lim, (("user", "u1"),)) and not allowed(lim, (("user", "u3"),))  # u1 came back new


def test_the_slowest_refilling_matched_bucket_is_asked_first():
    """Envoy sorts the matched buckets by fill rate: a request the slow bucket refuses takes no token from the fast
    one, and the x-ratelimit headers then report the slow one."""
    fast = {"entries": [{"key": "k", "value": "fast"}],
            "token_bucket": {"max_tokens": 2, "tokens_per_fill": 2, "fill_interval": "1s"}}
    slow = desc([("k", "slow")], 1)
    lim = limiter(fast, slow)
    both = ((("k", "fast"),), (("k", "slow"),))  # the fast one first in the request
    assert lim.decide(0.0, random.Random(0), descriptors=both) == Decision(True, True, False,
                                                                          lim.buckets.exact[(("k", "slow"),)])
    slow_bucket = lim.buckets.exact[(("k", "slow"),)]
    assert lim.decide(0.0, random.Random(0), descriptors=both) == Decision(True, False, True, slow_bucket)
    assert [allowed(lim, (("k", "fast"),)) for _ in range(2)] == [True, False]  # one token was left


def test_a_bucket_without_tokens_per_fill_adds_one_token_per_fill_interval():
    lim = LocalRateLimiter(limit(filter_enabled=ALL, filter_enforced=ALL,
                                 token_bucket={"max_tokens": 1, "fill_interval": "10s"}), 0.0)
    assert [allowed(lim, now=t) for t in (0.0, 5.0, 10.0)] == [True, False, True]


def test_the_reset_is_zero_while_a_whole_token_is_left_however_slow_the_refill():
    b = TokenBucket(3, 1, 4.0, now=0.0)  # a quarter token a second
    assert b.consume(0.0) and b.consume(0.0)
    assert (b.tokens(2.0), b.reset_seconds(2.0)) == (1.5, 0)
    assert b.consume(2.0) and b.reset_seconds(2.0) == 2  # half a token: 2 s to the next whole one


def test_a_partial_filter_enabled_draws_from_the_rng_and_the_status_is_kept():
    lim = LocalRateLimiter(limit(filter_enabled={"default_value": {"numerator": 50}}, status={"code": 503},
                                 token_bucket=bucket(1)), 0.0)
    rng = random.Random(3)
    assert 40 <= sum(lim.decide(0.0, rng).enabled for _ in range(100)) <= 60
    assert lim.status == 503


def test_each_decision_names_the_bucket_it_consulted():
    lim = LocalRateLimiter(limit(filter_enabled=ALL, filter_enforced=ALL, token_bucket=bucket(1)), 0.0)
    rng = random.Random(0)
    default = lim.buckets.default
    assert [lim.decide(0.0, rng) for _ in range(2)] == [Decision(True, True, False, default),
                                                        Decision(True, False, True, default)]


@pytest.mark.parametrize("numerator, draw, enabled", [
    (30, 29, True), (30, 30, False), (0, 0, False), (100, 10**6, True), (1, 0, True),
])
def test_a_runtime_fraction_is_on_when_the_draw_is_below_it(numerator, draw, enabled):
    p = limit(filter_enabled={"default_value": {"numerator": numerator}}).filter_enabled
    assert fraction_enabled(p, FixedDraws(draw)) is enabled


def test_a_runtime_fraction_without_a_default_value_is_off():
    assert fraction_enabled(RuntimeFractionalPercent(runtime_key="k"), FixedDraws(0)) is False


def test_filter_enforced_is_drawn_for_every_limited_request():
    half = {"default_value": {"numerator": 50}}
    lim = LocalRateLimiter(limit(filter_enabled=ALL, filter_enforced=half, token_bucket=bucket(1),
                                 descriptors=[desc([("k", "v")], 1)]), 0.0)
    assert lim.decide(0.0, FixedDraws(0), descriptors=((("k", "v"),),)).allowed
    assert lim.decide(0.0, FixedDraws(49), descriptors=((("k", "v"),),)).enforced  # the descriptor's bucket
    assert not lim.decide(0.0, FixedDraws(50), descriptors=((("k", "v"),),)).enforced
    assert lim.decide(0.0, FixedDraws(49)).enforced and not lim.decide(0.0, FixedDraws(50)).enforced  # the default


def test_a_status_code_may_be_a_number_in_a_string():
    assert rate_limited_status(limit(status={"code": "503"})) == 503


@pytest.mark.parametrize("header, value", [(":authority", "host.example"), (":method", "GET"), (":scheme", "http"),
                                           (":path", "/p")])
def test_request_headers_actions_read_the_pseudo_headers(header, value):
    rl = rate_limit({"request_headers": {"header_name": header, "descriptor_key": "k"}})
    assert request_descriptors([rl], facts()) == ((("k", value),),)


@pytest.mark.parametrize("actions, expected", [
    ([{"request_headers": {"header_name": "x-absent", "descriptor_key": "a", "skip_if_absent": True}},
      {"generic_key": {"descriptor_value": "v"}}], ((("generic_key", "v"),),)),  # skipped, the walk goes on
    ([{"request_headers": {"header_name": "x-absent", "descriptor_key": "a", "skip_if_absent": True}}], ()),  # empty
    ([{"header_value_match": {"descriptor_value": "api", "headers": [{"name": ":path", "string_match":
                                                                        {"prefix": "/other"}}]}}], ()),  # no match
])
def test_which_descriptors_a_request_yields(actions, expected):
    assert request_descriptors([rate_limit(*actions)], facts()) == expected


def test_a_bad_header_matcher_is_refused_with_its_place():
    with pytest.raises(ConfigError) as e:
        compiled(decode(RateLimit, {"actions": [{"generic_key": {"descriptor_value": "v"}}, {
            "header_value_match": {"descriptor_value": "x", "headers": [{"name": "", "present_match": True}]}}]}))
    assert e.value.path == "actions[1].header_value_match.headers[0].name"


def test_compiled_rate_limits_are_cached_per_object_and_the_cache_is_bounded(monkeypatch):
    cache: dict = {}
    monkeypatch.setattr(local_ratelimit_logic, "_COMPILED", cache)
    rl, other = rate_limit({"generic_key": {"descriptor_value": "a"}}), rate_limit({"remote_address": {}})
    assert compiled(rl) is compiled(rl) and compiled(rl).rl is rl
    cache[id(other)] = (rl, compiled(rl))  # a dead object's id reused: the entry is for another RateLimit
    assert compiled(other).rl is other
    cache.clear()
    cache.update({-i: (None, None) for i in range(1, 4097)})  # 4096 entries: one more fits
    compiled(rl)
    assert len(cache) == 4097
    compiled(other)  # over 4096: start again
    assert list(cache) == [id(other)]
