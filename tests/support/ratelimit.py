"""The local rate limit proof, for any proxy on a port: 100 requests against a 10-token bucket, then the refill.

Used on pyproxy alone (tests/integration/test_local_ratelimit.py) and on Envoy and pyproxy side by side
(tests/differential/test_local_ratelimit_differential.py). The bucket refills one token per `fill_interval`
seconds (tokens_per_fill 1). Nothing here is a timing threshold: the burst's successes are checked against the
bucket's own bound (10 + the refills that can land while the burst ran, measured: at most one when it took
less than one fill interval, as it does), and the refill is waited for by polling, bounded in time.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from .client import RawClient, Response


@dataclass
class Burst:
    statuses: list[int]
    responses: list[Response]
    elapsed: float  # seconds from the first request sent to the last response read
    refill: Response  # the first 200 after the burst
    polls: int  # requests sent (429s) before it


async def hundred_then_refill(port: int, headers: list[tuple[str, str]], fill_interval: float,
                              host: str = "x", bound: float = 15.0) -> Burst:
    async with await RawClient.connect(port) as c:
        responses = []
        start = time.monotonic()
        for _ in range(100):
            responses.append(await c.request("GET", "/", headers, host=host))
        elapsed = time.monotonic() - start
        deadline = time.monotonic() + max(bound, 3 * fill_interval)
        polls = 0
        while True:
            r = await c.request("GET", "/", headers, host=host)
            if r.status == 200:
                break
            assert r.status == 429, r
            polls += 1
            assert time.monotonic() < deadline, f"no token refilled after {bound}s ({polls} polls)"
            await asyncio.sleep(fill_interval / 10)  # poll interval of a bounded wait for a refill
    return Burst([r.status for r in responses], responses, elapsed, r, polls)


def check_burst(b: Burst, max_tokens: int, fill_interval: float) -> None:
    """max_tokens successes first, then 429 `local_rate_limited`; more only if tokens refilled meanwhile."""
    # a window of `elapsed` s holds at most floor(elapsed / fill) + 1 refills of a bucket refilled on a timer
    # (Envoy's: a tick can land anywhere in the burst); pyproxy's continuous bucket stays within it too
    refilled = math.floor(b.elapsed / fill_interval) + 1
    ok = b.statuses.count(200)
    assert b.statuses[:max_tokens] == [200] * max_tokens, b.statuses
    assert max_tokens <= ok <= max_tokens + refilled, (ok, b.elapsed)
    assert b.statuses.count(429) == 100 - ok
    limited = [r for r in b.responses if r.status == 429]
    assert {r.body for r in limited} == {b"local_rate_limited"}
    assert {r.header("x-ratelimit-remaining") for r in limited} == {"0"}
    assert b.refill.header("x-ratelimit-limit") == str(max_tokens)
