"""The local rate limit's token bucket and decision (Envoy `envoy.filters.http.local_ratelimit`), with no I/O.

Envoy 1.40's bucket (`RateLimitTokenBucket` over `AtomicTokenBucketImpl`, common/common/token_bucket_impl.cc)
refills continuously: `tokens_per_fill / fill_interval` tokens per second, capped at `max_tokens`, starting
full. It stores one number, the time at which the bucket was (virtually) empty: the tokens now are
`min(max_tokens, (now - empty_since) * rate)`; taking a token moves that time forward by `1 / rate`. So with
`max_tokens: 10, tokens_per_fill: 10, fill_interval: 60s` a burst of 10 passes at once, then one request per 6 s
(not 10 more at the minute mark, as the old timer-based bucket did). Checked against Envoy 1.40 in
tests/differential/test_local_ratelimit_differential.py.

The draft-03 `x-ratelimit-*` headers (`enable_x_ratelimit_headers: DRAFT_VERSION_03`) report the bucket the
request consumed from: `limit` = max_tokens, `remaining` = whole tokens left now, `reset` = whole seconds (rounded
up) until the next token, 0 while one is left.

Descriptors: a request's descriptors come from RateLimit actions (the filter's own `rate_limits`, else the
route's and virtual host's, `applicable_rate_limits`; `CompiledRateLimit.descriptor` computes one); each
configured `descriptors` entry that matches has its own bucket, and the default bucket counts too unless
`always_consume_default_token_bucket: false` (`LocalRateLimiter.decide`).

`filter_enabled` / `filter_enforced` are RuntimeFractionalPercents whose absence means *off* (Envoy's
FilterConfig::enabled()/enforced()); pyproxy has no runtime layer, so their `default_value` decides, drawn as
Envoy's `featureEnabled`: `random % denominator < numerator`. The clock (`now`, seconds, monotonic) and the
random source are passed in, so tests drive them.
"""
from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from pyproxy.config.model import LocalRateLimit, RateLimit, RuntimeFractionalPercent
from pyproxy.routing.table import RequestView, compile_header_matcher

__all__ = ["Buckets", "TokenBucket", "Decision", "LocalRateLimiter", "RequestFacts", "applicable_rate_limits",
           "fraction_enabled", "rate_limited_status", "request_descriptors"]

_DENOMINATOR = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


class TokenBucket:
    """One bucket: `max_tokens`, refilled at `tokens_per_fill / fill_interval` per second, full at `now`."""

    __slots__ = ("max_tokens", "rate", "empty_since")

    def __init__(self, max_tokens: int, tokens_per_fill: int, fill_interval: float, now: float):
        self.max_tokens = float(max_tokens)
        self.rate = tokens_per_fill / fill_interval
        self.empty_since = now - self.max_tokens / self.rate

    def tokens(self, now: float) -> float:
        """Tokens in the bucket at `now` (a fraction while one refills)."""
        return max(0.0, min(self.max_tokens, (now - self.empty_since) * self.rate))

    def consume(self, now: float) -> bool:
        """Take one token if there is a whole one."""
        total = self.tokens(now)
        if total < 1.0:
            return False
        self.empty_since = now - (total - 1.0) / self.rate
        return True

    def remaining(self, now: float) -> int:
        return int(self.tokens(now))

    def reset_seconds(self, now: float) -> int:
        """Whole seconds, rounded up, until the next whole token (0 while one is there)."""
        total = self.tokens(now)
        if total >= 1.0:
            return 0
        return math.ceil((1.0 - total) / self.rate)


def fraction_enabled(p: RuntimeFractionalPercent | None, rng: random.Random) -> bool:
    """A RuntimeFractionalPercent gate; absent means off (the local rate limit's rule). Envoy's featureEnabled:
    a draw every time, `random % denominator < numerator` (so 0 % never, 100 % always)."""
    dv = p.default_value if p is not None else None
    if dv is None:
        return False
    return rng.randrange(_DENOMINATOR[dv.denominator]) < dv.numerator


def rate_limited_status(cfg: LocalRateLimit) -> int:
    """`status.code`, 429 when unset or below 400 (Envoy's toErrorCode)."""
    code: Any = cfg.status.code if cfg.status is not None else None
    if isinstance(code, str):
        code = int(code) if code.isdigit() else _STATUS_NAMES.get(code)
    return code if isinstance(code, int) and code >= 400 else 429


_STATUS_NAMES = {"TooManyRequests": 429, "ServiceUnavailable": 503, "Forbidden": 403, "BadRequest": 400,
                 "InternalServerError": 500, "Unauthorized": 401, "NotFound": 404, "GatewayTimeout": 504}


@dataclass(frozen=True, slots=True)
class Decision:
    """`enabled`: the filter looked at the request (stat `enabled`); `allowed`: a token was there (`ok`), else
    `rate_limited`; `enforced`: a limited request is answered with the status (`enforced`, flag RL), else it
    goes on with `request_headers_to_add_when_not_enforced`. `bucket`: the bucket consulted (x-ratelimit-*)."""

    enabled: bool
    allowed: bool = True
    enforced: bool = False
    bucket: TokenBucket | None = None


DISABLED = Decision(False)
Entries = tuple[tuple[str, str], ...]  # a request descriptor: (key, value) entries in order


def _bucket(tb: Any, now: float) -> TokenBucket | None:
    if tb is None or not tb.fill_interval:
        return None
    return TokenBucket(tb.max_tokens, tb.tokens_per_fill or 1, tb.fill_interval, now)


class Buckets:
    """One set of buckets of a config: the default one and one per configured descriptor (per distinct value
    for a descriptor with an empty value, at most `max_dynamic` of those, least recently used dropped)."""

    __slots__ = ("cfg", "default", "exact", "dynamic", "max_dynamic")

    def __init__(self, cfg: LocalRateLimit, now: float):
        self.cfg = cfg
        self.default = _bucket(cfg.token_bucket, now)
        self.exact: dict[Entries, TokenBucket | None] = {}
        self.dynamic: OrderedDict[Entries, TokenBucket | None] = OrderedDict()
        self.max_dynamic = cfg.max_dynamic_descriptors if cfg.max_dynamic_descriptors is not None else 20
        for d in cfg.descriptors:
            if all(e.value for e in d.entries):
                self.exact[tuple((e.key, e.value) for e in d.entries)] = _bucket(d.token_bucket, now)

    def match(self, request: Entries, now: float) -> TokenBucket | None:
        """The bucket of the configured descriptor `request` matches (same keys in order, same values where the
        configured value is not empty), or None."""
        found = self.exact.get(request)
        if found is not None:
            return found
        for d in self.cfg.descriptors:
            if len(d.entries) != len(request) or all(e.value for e in d.entries):
                continue
            if all(e.key == k and (not e.value or e.value == v) for e, (k, v) in zip(d.entries, request)):
                bucket = self.dynamic.get(request)
                if bucket is None:
                    bucket = self.dynamic[request] = _bucket(d.token_bucket, now)
                    while len(self.dynamic) > self.max_dynamic:
                        self.dynamic.popitem(last=False)
                self.dynamic.move_to_end(request)
                return bucket
        return None


class LocalRateLimiter:
    """One LocalRateLimit config and its buckets (made full when the config is built, as Envoy does).

    Envoy's LocalRateLimiterImpl::requestAllowed: the buckets of the matched descriptors, slowest refill first,
    must each give a token (the first that cannot limits the request); then the default bucket, when no
    descriptor matched or `always_consume_default_token_bucket` (default true). A config without
    `token_bucket` has no default bucket: only descriptors limit. `new_buckets()` makes the separate set of
    `local_rate_limit_per_downstream_connection`."""

    __slots__ = ("cfg", "buckets", "status", "always_default")

    def __init__(self, cfg: LocalRateLimit, now: float):
        self.cfg = cfg
        self.buckets = Buckets(cfg, now)
        self.status = rate_limited_status(cfg)
        self.always_default = cfg.always_consume_default_token_bucket is not False

    def new_buckets(self, now: float) -> Buckets:
        return Buckets(self.cfg, now)

    def decide(self, now: float, rng: random.Random, buckets: Buckets | None = None,
               descriptors: tuple[Entries, ...] = ()) -> Decision:
        """The decision for one request; `buckets`: the connection's own set when per-connection;
        `descriptors`: the request's descriptors (`request_descriptors`)."""
        if not fraction_enabled(self.cfg.filter_enabled, rng):
            return DISABLED
        buckets = buckets if buckets is not None else self.buckets
        matched = [b for b in (buckets.match(d, now) for d in descriptors) if b is not None]
        matched.sort(key=lambda b: b.rate)
        for b in matched:
            if not b.consume(now):
                return Decision(True, False, fraction_enabled(self.cfg.filter_enforced, rng), b)
        if not matched or self.always_default:
            default = buckets.default
            if default is not None and not default.consume(now):
                return Decision(True, False, fraction_enabled(self.cfg.filter_enforced, rng), default)
        return Decision(True, True, False, matched[0] if matched else buckets.default)


# ---------------------------------------------------------------- request descriptors (route rate_limits actions)

@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the rate limit actions read about one request (built by the filter)."""

    view: RequestView  # headers, authority, path, method for header matchers and request_headers
    remote_ip: str = ""  # the downstream remote address (remote_address)
    destination_cluster: str = ""  # the routed cluster (destination_cluster)
    source_cluster: str = ""  # the node's cluster, `--service-cluster` (source_cluster)


def _pseudo_or_header(view: RequestView, name: str) -> str | None:
    pseudo = {":path": view.full_path, ":authority": view.authority, ":method": view.method,
              ":scheme": view.scheme}
    if name in pseudo:
        return pseudo[name] or None
    return view.headers.get_first(name)


class CompiledRateLimit:
    """One envoy.config.route.v3.RateLimit with its header matchers compiled (Envoy router_ratelimit.cc)."""

    __slots__ = ("rl", "matchers")

    def __init__(self, rl: RateLimit):
        self.rl = rl
        self.matchers = tuple(
            tuple(compile_header_matcher(h, f"actions[{i}].header_value_match.headers[{j}]")
                  for j, h in enumerate(a.header_value_match.headers)) if a.header_value_match else ()
            for i, a in enumerate(rl.actions))

    def descriptor(self, facts: RequestFacts) -> Entries | None:
        """The descriptor of this request, or None when an action drops it (a header absent, no match)."""
        out: list[tuple[str, str]] = []
        for action, matchers in zip(self.rl.actions, self.matchers):
            if action.generic_key is not None:
                out.append((action.generic_key.descriptor_key or "generic_key", action.generic_key.descriptor_value))
            elif action.header_value_match is not None:
                hvm = action.header_value_match
                if all(m(facts.view) for m in matchers) != (hvm.expect_match is not False):
                    return None
                out.append((hvm.descriptor_key or "header_match", hvm.descriptor_value))
            elif action.request_headers is not None:
                rh = action.request_headers
                value = _pseudo_or_header(facts.view, rh.header_name.lower())
                if value is None:
                    if rh.skip_if_absent:
                        continue
                    return None
                out.append((rh.descriptor_key, value))
            elif action.remote_address is not None:
                if not facts.remote_ip:
                    return None
                out.append(("remote_address", facts.remote_ip))
            elif action.destination_cluster is not None:
                out.append(("destination_cluster", facts.destination_cluster))
            elif action.source_cluster is not None:
                out.append(("source_cluster", facts.source_cluster))
        return tuple(out) if out else None


_COMPILED: dict[int, tuple[RateLimit, CompiledRateLimit]] = {}


def compiled(rl: RateLimit) -> CompiledRateLimit:
    entry = _COMPILED.get(id(rl))
    if entry is None or entry[0] is not rl:
        if len(_COMPILED) > 4096:
            _COMPILED.clear()
        entry = _COMPILED[id(rl)] = (rl, CompiledRateLimit(rl))
    return entry[1]


def applicable_rate_limits(cfg: LocalRateLimit, route_limits: Sequence[RateLimit], vhost_limits: Sequence[RateLimit],
                           include_vh: bool | None) -> list[RateLimit]:
    """The RateLimits that make this request's descriptors: the filter's own `rate_limits` when it has any,
    else the route's, with the virtual host's per `vh_rate_limits` (OVERRIDE: only when the route has none;
    INCLUDE, or the route's `include_vh_rate_limits`: both; IGNORE: never); only those of the filter's `stage`,
    without a `disable_key`. None at all when the config has no `descriptors` (Envoy's hasDescriptors)."""
    if not cfg.descriptors:
        return []
    if cfg.rate_limits:
        chosen = list(cfg.rate_limits)
    else:
        chosen = list(route_limits)
        mode = "INCLUDE" if include_vh else cfg.vh_rate_limits
        if mode == "INCLUDE" or (mode == "OVERRIDE" and not route_limits):
            chosen += list(vhost_limits)
    return [rl for rl in chosen if (rl.stage or 0) == cfg.stage and not rl.disable_key]


def request_descriptors(limits: Iterable[RateLimit], facts: RequestFacts) -> tuple[Entries, ...]:
    out = []
    for rl in limits:
        d = compiled(rl).descriptor(facts)
        if d is not None:
            out.append(d)
    return tuple(out)
