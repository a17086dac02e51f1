"""The local rate limit's token bucket and decision, driven by an explicit clock: Envoy 1.40's continuous refill
(`tokens_per_fill / fill_interval` per second, capped, starting full), the x-ratelimit-* numbers, the
enabled / enforced gates (absent = off), the status rule, and the config's decoding (TypedStruct included)."""
from __future__ import annotations

import random

import pytest

from pyproxy.config.decode import ConfigError, decode, decode_any
from pyproxy.config.model import LocalRateLimit
from pyproxy.config.model import RateLimit
from pyproxy.filters.local_ratelimit_logic import (
    LocalRateLimiter, RequestFacts, TokenBucket, applicable_rate_limits, fraction_enabled, rate_limited_status,
    request_descriptors,
)
from pyproxy.http.headers import Headers
from pyproxy.routing.table import RequestView

LRL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
ALL = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def limit(**cfg) -> LocalRateLimit:
    return decode(LocalRateLimit, {"stat_prefix": "p", **cfg})


def test_bucket_starts_full_and_lets_max_tokens_through_at_once():
    b = TokenBucket(10, 10, 60.0, now=100.0)
    assert [b.consume(100.0) for _ in range(12)] == [True] * 10 + [False] * 2
    assert b.remaining(100.0) == 0


def test_bucket_refills_continuously_at_tokens_per_fill_over_fill_interval():
    b = TokenBucket(10, 10, 60.0, now=0.0)  # 1 token every 6 s
    for _ in range(10):
        assert b.consume(0.0)
    assert not b.consume(5.9)
    assert b.consume(6.0)
    assert not b.consume(6.0)
    assert b.consume(12.0)


def test_bucket_never_holds_more_than_max_tokens():
    b = TokenBucket(3, 1, 1.0, now=0.0)
    assert sum(b.consume(1000.0) for _ in range(10)) == 3


def test_x_ratelimit_numbers_as_envoy_reports_them():
    """Envoy 1.40, max 3, 1 token per 2 s: remaining 2, 1, 0 with reset 0, 0, 2; 1.34 s later reset 1."""
    b = TokenBucket(3, 1, 2.0, now=0.0)
    seen = []
    for t in (0.0, 0.04, 0.09):
        assert b.consume(t)
        seen.append((b.remaining(t), b.reset_seconds(t)))
    assert seen == [(2, 0), (1, 0), (0, 2)]
    assert (b.remaining(1.43), b.reset_seconds(1.43)) == (0, 1)


def test_absent_filter_enabled_means_disabled():
    rng = random.Random(0)
    assert not LocalRateLimiter(limit(token_bucket={"max_tokens": 1, "fill_interval": "1s"}), 0.0).decide(0.0, rng).enabled
    assert not fraction_enabled(None, rng)


def test_enabled_but_not_enforced_counts_and_lets_through():
    lim = LocalRateLimiter(limit(token_bucket={"max_tokens": 1, "fill_interval": "60s"}, filter_enabled=ALL), 0.0)
    rng = random.Random(0)
    first, second = lim.decide(0.0, rng), lim.decide(0.0, rng)
    assert (first.enabled, first.allowed) == (True, True)
    assert (second.enabled, second.allowed, second.enforced) == (True, False, False)


def test_enforced_denies_once_the_bucket_is_empty():
    lim = LocalRateLimiter(limit(token_bucket={"max_tokens": 2, "fill_interval": "60s"},
                                 filter_enabled=ALL, filter_enforced=ALL), 0.0)
    rng = random.Random(0)
    out = [lim.decide(0.0, rng) for _ in range(4)]
    assert [(d.allowed, d.enforced) for d in out] == [(True, False), (True, False), (False, True), (False, True)]


def test_no_token_bucket_limits_nothing():
    """Envoy: the chain's config may have no bucket (routes carry them); enabled, every request is `ok`."""
    lim = LocalRateLimiter(limit(filter_enabled=ALL, filter_enforced=ALL), 0.0)
    assert all(lim.decide(0.0, random.Random(0)).allowed for _ in range(5))


def test_per_connection_bucket_is_separate():
    lim = LocalRateLimiter(limit(token_bucket={"max_tokens": 1, "fill_interval": "60s"},
                                 filter_enabled=ALL, filter_enforced=ALL), 0.0)
    rng = random.Random(0)
    a, b = lim.new_buckets(0.0), lim.new_buckets(0.0)
    assert [lim.decide(0.0, rng, a).allowed, lim.decide(0.0, rng, a).allowed] == [True, False]
    assert lim.decide(0.0, rng, b).allowed
    assert lim.decide(0.0, rng).allowed  # the shared bucket is untouched


@pytest.mark.parametrize("numerator, expected", [(0, 0), (30, 0.3), (100, 1)])
def test_fractional_enabled_draws_like_envoy(numerator, expected):
    rng = random.Random(7)
    p = limit(filter_enabled={"default_value": {"numerator": numerator}}).filter_enabled
    hits = sum(fraction_enabled(p, rng) for _ in range(2000)) / 2000
    assert abs(hits - expected) < 0.05


@pytest.mark.parametrize("status, code", [(None, 429), ({"code": 503}, 503), ({"code": "ServiceUnavailable"}, 503),
                                          ({"code": 200}, 429), ({"code": "BadRequest"}, 400)])
def test_status_defaults_to_429_and_below_400_is_429(status, code):
    assert rate_limited_status(limit(**({"status": status} if status else {}))) == code


def test_typed_struct_decodes_as_the_message_it_names():
    """Istio's docs write the filter as a udpa TypedStruct; Envoy reads it as the LocalRateLimit it names."""
    cfg = decode_any({"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": LRL,
                      "value": {"stat_prefix": "http_local_rate_limiter",
                                "token_bucket": {"max_tokens": 4, "tokens_per_fill": 4, "fill_interval": "60s"}}},
                     "typed_config")
    assert isinstance(cfg, LocalRateLimit)
    assert (cfg.stat_prefix, cfg.token_bucket.max_tokens, cfg.token_bucket.fill_interval) == \
        ("http_local_rate_limiter", 4, 60.0)


@pytest.mark.parametrize("cfg, where", [
    ({"token_bucket": {"max_tokens": 1, "fill_interval": "0.01s"}}, "50ms"),
    ({"token_bucket": {"max_tokens": 0, "fill_interval": "1s"}}, "max_tokens"),
    ({"local_cluster_rate_limit": {}}, "local_cluster_rate_limit"),
    ({"descriptors": [{"entries": [{"key": "a", "value": "b"}]}]}, "descriptors\\[0\\].token_bucket"),
    ({"rate_limits": [{"actions": [{"query_parameters": {}}]}]}, "query_parameters"),
])
def test_bad_or_unsupported_config_is_refused_by_name(cfg, where):
    with pytest.raises(ConfigError, match=where):
        limit(**cfg)


def bucket(max_tokens: int) -> dict:
    return {"max_tokens": max_tokens, "tokens_per_fill": 1, "fill_interval": "3600s"}


def desc(entries, max_tokens: int) -> dict:
    return {"entries": [{"key": k, "value": v} for k, v in entries], "token_bucket": bucket(max_tokens)}


def facts(headers=(), path="/p", remote="10.0.0.1") -> RequestFacts:
    view = RequestView(Headers(list(headers)), "host.example", path, "GET", "http")
    return RequestFacts(view, remote, "outbound|80||svc", "node-cluster")


def rate_limit(*actions) -> RateLimit:
    return decode(RateLimit, {"actions": list(actions)})


@pytest.mark.parametrize("actions, headers, expected", [
    ([{"generic_key": {"descriptor_value": "v"}}], [], (("generic_key", "v"),)),
    ([{"generic_key": {"descriptor_value": "v", "descriptor_key": "k"}}], [], (("k", "v"),)),
    ([{"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}], [("x-user", "ann")],
     (("user", "ann"),)),
    ([{"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}], [], None),
    ([{"generic_key": {"descriptor_value": "v"}},
      {"request_headers": {"header_name": "x-user", "descriptor_key": "user", "skip_if_absent": True}}], [],
     (("generic_key", "v"),)),
    ([{"request_headers": {"header_name": ":path", "descriptor_key": "PATH"}}], [], (("PATH", "/p"),)),
    ([{"header_value_match": {"descriptor_value": "api", "headers": [{"name": ":path", "string_match":
                                                                       {"prefix": "/p"}}]}}], [],
     (("header_match", "api"),)),
    ([{"header_value_match": {"descriptor_value": "api", "expect_match": False, "headers": [
        {"name": ":path", "string_match": {"prefix": "/p"}}]}}], [], None),
    ([{"remote_address": {}}, {"destination_cluster": {}}, {"source_cluster": {}}], [],
     (("remote_address", "10.0.0.1"), ("destination_cluster", "outbound|80||svc"),
      ("source_cluster", "node-cluster"))),
])
def test_rate_limit_actions_make_envoys_descriptors(actions, headers, expected):
    got = request_descriptors([rate_limit(*actions)], facts(headers))
    assert got == ((expected,) if expected else ())


def test_descriptor_bucket_limits_only_its_requests_and_default_still_counts():
    lim = LocalRateLimiter(limit(token_bucket=bucket(3), filter_enabled=ALL, filter_enforced=ALL,
                                 descriptors=[desc([("user", "ann")], 1)]), 0.0)
    rng = random.Random(0)
    ann, bob = ((("user", "ann"),),), ((("user", "bob"),),)
    assert [lim.decide(0.0, rng, descriptors=d).allowed for d in (ann, ann, bob, bob, bob)] == \
        [True, False, True, True, False]  # ann's bucket of 1; the default bucket of 3 counts ann's first too


def test_always_consume_default_false_spares_the_default_bucket():
    lim = LocalRateLimiter(limit(token_bucket=bucket(1), filter_enabled=ALL, filter_enforced=ALL,
                                 always_consume_default_token_bucket=False,
                                 descriptors=[desc([("user", "ann")], 5)]), 0.0)
    rng = random.Random(0)
    ann = ((("user", "ann"),),)
    assert all(lim.decide(0.0, rng, descriptors=ann).allowed for _ in range(5))
    assert lim.decide(0.0, rng).allowed and not lim.decide(0.0, rng).allowed


def test_dynamic_descriptor_has_a_bucket_per_value_and_forgets_the_least_recent():
    lim = LocalRateLimiter(limit(filter_enabled=ALL, filter_enforced=ALL, max_dynamic_descriptors=2,
                                 descriptors=[desc([("user", "")], 1)]), 0.0)
    rng = random.Random(0)

    def user(name):
        return lim.decide(0.0, rng, descriptors=((("user", name),),)).allowed
    assert [user("a"), user("a"), user("b"), user("b")] == [True, False, True, False]
    assert user("c")  # a third value: "a" (least recently used) is dropped
    assert user("a")  # so "a" starts full again


def test_which_rate_limits_make_descriptors():
    route, vhost = [rate_limit({"generic_key": {"descriptor_value": "r"}})], \
        [rate_limit({"generic_key": {"descriptor_value": "v"}})]
    staged = decode(RateLimit, {"stage": 1, "actions": [{"generic_key": {"descriptor_value": "s"}}]})
    with_desc = {"descriptors": [desc([("generic_key", "r")], 1)]}
    assert applicable_rate_limits(limit(), route, vhost, None) == []  # no descriptors: none computed
    assert applicable_rate_limits(limit(**with_desc), route, vhost, None) == route  # OVERRIDE
    assert applicable_rate_limits(limit(**with_desc), [], vhost, None) == vhost
    assert applicable_rate_limits(limit(**with_desc, vh_rate_limits="INCLUDE"), route, vhost, None) == route + vhost
    assert applicable_rate_limits(limit(**with_desc), route, vhost, True) == route + vhost
    assert applicable_rate_limits(limit(**with_desc, vh_rate_limits="IGNORE"), [], vhost, None) == []
    assert applicable_rate_limits(limit(**with_desc, stage=1), route + [staged], vhost, None) == [staged]
    own = {"rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "own"}}]}]}
    assert [r.actions[0].generic_key.descriptor_value for r in
            applicable_rate_limits(limit(**with_desc, **own), route, vhost, None)] == ["own"]


@pytest.mark.parametrize("where", ["route", "virtual_host"])
def test_per_route_config_without_a_bucket_is_refused_as_envoy_does(where):
    from pyproxy.config.model import RouteConfiguration
    per = {"typed_per_filter_config": {"envoy.filters.http.local_ratelimit": {"@type": LRL, "stat_prefix": "p"}}}
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200}, **(per if where == "route" else {})}
    vhost = {"name": "v", "domains": ["*"], "routes": [route], **(per if where == "virtual_host" else {})}
    with pytest.raises(ConfigError, match="token bucket must be set for per filter configs"):
        decode(RouteConfiguration, {"virtual_hosts": [vhost]})
