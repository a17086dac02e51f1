"""Request mirroring (route `request_mirror_policies`; Istio's VirtualService `mirror`): fire and forget.

Envoy's router sends a copy of the request to the mirror cluster with the Host/authority suffixed with
`-shadow`, streams the body to it as it arrives, and ignores the answer: a slow or failing mirror never
affects the real response. `runtime_fraction` (Istio's `mirrorPercentage`) decides per request whether to
mirror. A `ShadowRequest` speaks the same pool/connection callbacks as the router's attempt.
"""
from __future__ import annotations

import asyncio
from typing import Any

from ..http import codec
from ..http.headers import Headers
from ..upstream.load_balancer import LbContext

_DENOMINATOR = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


def should_mirror(policy: Any, rng: Any) -> bool:
    """runtime_fraction.default_value; absent means always (Envoy)."""
    rf = policy.runtime_fraction
    if rf is None or rf.default_value is None:
        return True
    dv = rf.default_value
    return rng.random() * _DENOMINATOR[dv.denominator] < dv.numerator


def shadow_headers(headers: Headers) -> Headers:
    h = headers.copy()
    host = h.get_first("host") or ""
    name, sep, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    h.set("host", f"{name}-shadow{sep}{port}" if sep else f"{host}-shadow")
    return h


class ShadowRequest:
    """One mirrored copy of a request. Holds its body until a connection is ready, then streams."""

    __slots__ = ("cluster", "host", "conn", "head", "chunked", "body", "ended", "done", "timer", "pool", "counted")

    def __init__(self, cluster: Any, head: bytes, chunked: bool, timeout: float):
        self.cluster = cluster
        self.conn: Any = None
        self.head = head
        self.chunked = chunked
        self.body: list[bytes] = []
        self.ended = False
        self.done = False
        self.pool: Any = None
        self.counted = False
        self.timer = asyncio.get_running_loop().call_later(timeout, self.abandon) if timeout else None
        self.host = cluster.choose_host(LbContext())
        if self.host is None or not cluster.limits.can_create_request():
            self.finish()
            return
        cluster.limits.inc_requests()
        self.counted = True
        cluster.stats_rq_total.inc()
        self.pool = cluster.pool_for(self.host)
        self.pool.acquire(self)

    # request side, fed by the router
    def on_data(self, chunk: bytes) -> None:
        if self.done:
            return
        if self.conn is not None:
            self.conn.write(codec.encode_chunk(chunk) if self.chunked else chunk)
        else:
            self.body.append(chunk)

    def on_end(self) -> None:
        self.ended = True
        if self.conn is not None and not self.done:
            self._write_end(self.conn)

    def _write_end(self, conn: Any) -> None:
        if self.chunked:
            conn.write(codec.LAST_CHUNK)
        conn.end_request()

    # pool callbacks
    def on_pool_ready(self, conn: Any) -> None:
        self.pool = None
        if self.done:
            conn.pool.release(conn)
            return
        self.conn = conn
        conn.send(self, self.head, False)
        for chunk in self.body:
            conn.write(codec.encode_chunk(chunk) if self.chunked else chunk)
        self.body = []
        if self.ended:
            self._write_end(conn)
        conn.flush()

    def on_pool_failure(self, failure: Any) -> None:
        self.pool = None
        self.finish()

    # upstream connection callbacks: the answer is ignored
    def on_response_headers(self, status: int, headers: Headers) -> None:
        self.cluster.count_response(status)

    def on_response_data(self, data: bytes) -> None:
        pass

    def on_response_end(self) -> None:
        self.conn = None
        self.finish()

    def on_upstream_reset(self, reason: str) -> None:
        self.conn = None
        self.finish()

    def on_upstream_write_paused(self) -> None:
        pass  # a mirror never slows the real request: its writes just buffer

    def on_upstream_write_resumed(self) -> None:
        pass

    def abandon(self) -> None:
        self.timer = None
        if self.conn is not None:
            self.conn.detach()
            self.conn = None
        self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.pool is not None:
            self.pool.cancel(self)
            self.pool = None
        if self.counted:
            self.counted = False
            self.cluster.limits.dec_requests()
