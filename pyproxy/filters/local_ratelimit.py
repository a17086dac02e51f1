"""`envoy.filters.http.local_ratelimit`: a token bucket in front of the router; over it, a local 429 (flag RL).

The decision is pure (`pyproxy.filters.local_ratelimit_logic`); this shell picks the config, keeps the buckets,
counts the stats and answers. As Envoy 1.40 does (local_ratelimit.cc, checked in
tests/differential/test_local_ratelimit_differential.py):
- the config is the most specific `typed_per_filter_config["envoy.filters.http.local_ratelimit"]` (route, then
  virtual host), else the filter's own; each config has its own bucket, made full when first built. That is how
  Istio users attach it: an EnvoyFilter inserts the filter with only a `stat_prefix` and MERGEs the bucket into
  the routes (docs/ratelimit.md);
- `local_rate_limit_per_downstream_connection: true` gives every downstream connection its own bucket;
- over the limit and enforced: `status` (429) with body `local_rate_limited`, details `local_rate_limited`,
  response flag RL, `response_headers_to_add` on that reply; not enforced: the request goes on with
  `request_headers_to_add_when_not_enforced`. Envoy 1.40 adds no `x-envoy-ratelimited` here (that header is
  the global rate limit filter's);
- `enable_x_ratelimit_headers: DRAFT_VERSION_03`: x-ratelimit-limit / -remaining / -reset on every response
  of a request that consulted a bucket, the 429 included;
- stats in the root scope, `<stat_prefix>.http_local_rate_limit.enabled|ok|rate_limited|enforced|shadow_mode`
  (Prometheus: `envoy_http_local_rate_limit_*{envoy_local_http_ratelimit_prefix="<stat_prefix>"}`);
- `descriptors` (each with its own bucket; an empty value: one bucket per distinct value) are matched against
  the request's descriptors, made by the filter's own `rate_limits`, else the route's and virtual host's
  (`vh_rate_limits`), actions generic_key, header_value_match, request_headers, remote_address,
  destination_cluster, source_cluster (`local_ratelimit_logic.request_descriptors`).
Not implemented (refused by name when configured): `local_cluster_rate_limit`, other rate limit actions.
Each pyproxy worker process has its own buckets (Envoy shares one across its worker threads).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

from ..config.model import LocalRateLimit
from ..http.headers import Headers
from ..http.local_reply import LocalReply
from ..observe.stream_info import ResponseFlag
from ..routing.table import RequestView, apply_header_mutations
from .base import FilterFactory, FilterStatus, HttpFilter
from .local_ratelimit_logic import (
    Buckets, Decision, LocalRateLimiter, RequestFacts, applicable_rate_limits, request_descriptors,
)
from .rbac import remote_ip

if TYPE_CHECKING:  # pragma: no cover
    from ..http.connection import ActiveStream

NAME = "envoy.filters.http.local_ratelimit"
BODY = "local_rate_limited"
STATS = ("enabled", "enforced", "ok", "rate_limited", "shadow_mode")


class Limiter:
    """A LocalRateLimit with its bucket and its counters (`<stat_prefix>.http_local_rate_limit.*`)."""

    __slots__ = ("logic", "counters")

    def __init__(self, cfg: LocalRateLimit, root_stats: Any, now: float):
        self.logic = LocalRateLimiter(cfg, now)
        scope = root_stats.scope(f"{cfg.stat_prefix}.http_local_rate_limit.")
        self.counters = {name: scope.counter(name) for name in STATS}


class LocalRateLimitConfig:
    """Parsed once per snapshot: the filter-level limiter, per-route limiters by config identity."""

    def __init__(self, cfg: LocalRateLimit | None, stats: Any, rng: Any, clock: Any = time.monotonic):
        self.root = stats.store if hasattr(stats, "store") else stats
        self.rng = rng
        self.clock = clock
        self.default = Limiter(cfg, self.root, clock()) if cfg is not None else None
        self._per_route: dict[int, tuple[LocalRateLimit, Limiter]] = {}

    def limiter_for(self, stream: "ActiveStream") -> Limiter | None:
        m = stream.route_match
        cfg = m.per_filter_config(NAME, stream.cluster_weight) if m is not None else None
        if not isinstance(cfg, LocalRateLimit):
            return self.default
        entry = self._per_route.get(id(cfg))
        if entry is None or entry[0] is not cfg:
            entry = self._per_route[id(cfg)] = (cfg, Limiter(cfg, self.root, self.clock()))
        return entry[1]


def connection_buckets(stream: "ActiveStream", limiter: Limiter, now: float) -> Buckets:
    """The connection's own buckets for this limiter (Envoy: filter state with the connection's lifespan)."""
    state = stream.conn.filter_state
    key = (NAME, id(limiter))
    buckets = state.get(key)
    if buckets is None:
        buckets = state[key] = limiter.logic.new_buckets(now)
    return buckets


def node_cluster(node: Any) -> str:
    """The node's `cluster` (bootstrap Node model or xDS node dict): the source_cluster action's value."""
    if isinstance(node, Mapping):
        return str(node.get("cluster") or "")
    return str(getattr(node, "cluster", "") or "")


def descriptors_of(stream: "ActiveStream", cfg: LocalRateLimit) -> tuple:
    """The request's descriptors for `cfg` (only computed when it has `descriptors`)."""
    m = stream.route_match
    action = m.action if m is not None else None
    limits = applicable_rate_limits(cfg, action.rate_limits if action else (),
                                    m.virtual_host.rate_limits if m is not None else (),
                                    action.include_vh_rate_limits if action else None)
    if not limits:
        return ()
    info = stream.info
    direct = stream.conn.remote_ip if stream.conn.remote_ip != "-" else ""
    view = RequestView(stream.headers, info.authority or "", stream.path, stream.method, info.scheme or "http")
    facts = RequestFacts(view, remote_ip(stream.headers, direct, stream.hcm.config.xff_num_trusted_hops),
                         stream.cluster_name or "", node_cluster(stream.hcm.node))
    return request_descriptors(limits, facts)


class LocalRateLimitFilter(HttpFilter):
    __slots__ = ("config", "limiter", "decision")

    def __init__(self, config: LocalRateLimitConfig):
        self.config = config
        self.limiter: Limiter | None = None
        self.decision: Decision | None = None

    def decode_headers(self, stream: "ActiveStream") -> FilterStatus:
        config = self.config
        limiter = config.limiter_for(stream)
        if limiter is None:
            return FilterStatus.CONTINUE
        logic, counters = limiter.logic, limiter.counters
        now = config.clock()
        buckets = connection_buckets(stream, limiter, now) if logic.cfg.local_rate_limit_per_downstream_connection \
            else None
        descriptors = descriptors_of(stream, logic.cfg) if logic.cfg.descriptors else ()
        d = logic.decide(now, config.rng, buckets, descriptors)
        if not d.enabled:
            return FilterStatus.CONTINUE
        self.limiter, self.decision = limiter, d
        counters["enabled"].inc()
        if d.allowed:
            counters["ok"].inc()
            return FilterStatus.CONTINUE
        counters["rate_limited"].inc()
        if not d.enforced:
            apply_header_mutations(stream.headers, logic.cfg.request_headers_to_add_when_not_enforced)
            return FilterStatus.CONTINUE
        counters["enforced"].inc()
        stream.info.response_flags |= ResponseFlag.RL
        extra = None
        if logic.cfg.response_headers_to_add:
            extra = Headers()
            apply_header_mutations(extra, logic.cfg.response_headers_to_add)
        stream.send_local_reply(LocalReply(logic.status, BODY, BODY), extra_headers=extra)
        return FilterStatus.STOP

    def encode_headers(self, stream: "ActiveStream", headers: Any) -> None:
        d, limiter = self.decision, self.limiter
        if d is None or d.bucket is None or limiter is None:
            return
        if limiter.logic.cfg.enable_x_ratelimit_headers != "DRAFT_VERSION_03":
            return
        now = self.config.clock()
        headers.add("x-ratelimit-limit", str(int(d.bucket.max_tokens)))
        headers.add("x-ratelimit-remaining", str(d.bucket.remaining(now)))
        headers.add("x-ratelimit-reset", str(d.bucket.reset_seconds(now)))


def build_factory(typed_config: Any, stats: Any, rng: Any) -> FilterFactory:
    if typed_config is not None and not isinstance(typed_config, LocalRateLimit):
        raise ValueError(f"{NAME}: typed_config must be a {LocalRateLimit.TYPE_URL}, got "
                         f"{type(typed_config).__name__}")
    config = LocalRateLimitConfig(typed_config, stats, rng)
    return lambda: LocalRateLimitFilter(config)
