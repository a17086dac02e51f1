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

`filter_enabled` / `filter_enforced` are RuntimeFractionalPercents whose absence means *off* (Envoy's
FilterConfig::enabled()/enforced()); pyproxy has no runtime layer, so their `default_value` decides, drawn as
Envoy's `featureEnabled`: `random % denominator < numerator`. The clock (`now`, seconds, monotonic) and the
random source are passed in, so tests drive them.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from pyproxy.config.model import LocalRateLimit, RuntimeFractionalPercent

__all__ = ["TokenBucket", "Decision", "LocalRateLimiter", "fraction_enabled", "rate_limited_status"]

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
    """A RuntimeFractionalPercent gate; absent means off (the local rate limit's rule)."""
    if p is None:
        return False
    dv = p.default_value
    if dv is None or dv.numerator <= 0:
        return False
    denominator = _DENOMINATOR[dv.denominator]
    return dv.numerator >= denominator or rng.randrange(denominator) < dv.numerator


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


class LocalRateLimiter:
    """One LocalRateLimit config and its bucket (made full when the config is built, as Envoy does).

    A config without `token_bucket` limits nothing (Envoy: legal in the chain, where routes carry the buckets).
    `bucket_for_connection()` makes the separate bucket of `local_rate_limit_per_downstream_connection`."""

    __slots__ = ("cfg", "bucket", "status")

    def __init__(self, cfg: LocalRateLimit, now: float):
        self.cfg = cfg
        self.bucket = self.new_bucket(now)
        self.status = rate_limited_status(cfg)

    def new_bucket(self, now: float) -> TokenBucket | None:
        tb = self.cfg.token_bucket
        if tb is None or not tb.fill_interval:
            return None
        return TokenBucket(tb.max_tokens, tb.tokens_per_fill or 1, tb.fill_interval, now)

    def decide(self, now: float, rng: random.Random, bucket: TokenBucket | None = None) -> Decision:
        """The decision for one request; `bucket`: the connection's own bucket when per-connection."""
        if not fraction_enabled(self.cfg.filter_enabled, rng):
            return DISABLED
        bucket = bucket if bucket is not None else self.bucket
        if bucket is None or bucket.consume(now):
            return Decision(True, True, False, bucket)
        return Decision(True, False, fraction_enabled(self.cfg.filter_enforced, rng), bucket)
