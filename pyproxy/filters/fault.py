"""`envoy.filters.http.fault`: inject delays (flag DI) and aborts (flag FI) before the request is routed.

The decision is pure (`pyproxy.filters.fault_logic`); this filter is the I/O shell: it waits with the event
loop's timer, answers aborts with a local reply, keeps the `active_faults` gauge for `max_active_faults`,
and counts Envoy's stats `http.<prefix>.fault.delays_injected`, `aborts_injected`, `faults_overflow`.
A per-route `typed_per_filter_config["envoy.filters.http.fault"]` replaces the filter-level config
(Istio puts VirtualService `fault` there).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..http.local_reply import LocalReply
from ..observe.stream_info import ResponseFlag
from .base import FilterFactory, FilterStatus, HttpFilter
from .fault_logic import FaultConfig, effective_fault_config

if TYPE_CHECKING:  # pragma: no cover
    from ..http.connection import ActiveStream

NAME = "envoy.filters.http.fault"


class FaultFilterConfig:
    """Parsed once per snapshot: the filter-level fault, compiled configs by identity, counters."""

    def __init__(self, cfg: Any, stats: Any, rng: Any):
        self.cfg = cfg
        self.rng = rng
        self._compiled: dict[int, tuple[Any, FaultConfig]] = {}
        st = stats.scope("fault.")
        self.delays_injected = st.counter("delays_injected")
        self.aborts_injected = st.counter("aborts_injected")
        self.faults_overflow = st.counter("faults_overflow")
        self.active_faults = st.gauge("active_faults")

    def compiled(self, cfg: Any) -> FaultConfig:
        entry = self._compiled.get(id(cfg))
        if entry is None or entry[0] is not cfg:
            entry = self._compiled[id(cfg)] = (cfg, FaultConfig(cfg))
        return entry[1]


class FaultFilter(HttpFilter):
    __slots__ = ("config", "timer", "active", "stream")

    def __init__(self, config: FaultFilterConfig):
        self.config = config
        self.timer: asyncio.TimerHandle | None = None
        self.active = False
        self.stream: Any = None

    def decode_headers(self, stream: "ActiveStream") -> FilterStatus:
        config = self.config
        cfg = effective_fault_config(config.cfg, stream.route_match, stream.cluster_weight)
        if cfg is None:
            return FilterStatus.CONTINUE
        decision = config.compiled(cfg).decide(
            stream.headers, stream.cluster_name, config.rng, config.active_faults.value,
            method=stream.method, authority=stream.info.authority or "", path=stream.path,
            scheme=stream.info.scheme or "http")
        if decision.overflow:
            config.faults_overflow.inc()
            return FilterStatus.CONTINUE
        if not decision.faulted:
            return FilterStatus.CONTINUE
        self.active = True
        config.active_faults.inc()
        if decision.delay > 0:
            config.delays_injected.inc()
            stream.info.response_flags |= ResponseFlag.DI
            self.stream = stream
            self.timer = asyncio.get_running_loop().call_later(decision.delay, self._after_delay, decision)
            return FilterStatus.STOP
        return self._abort_or_continue(stream, decision)

    def _after_delay(self, decision: Any) -> None:
        self.timer = None
        stream = self.stream
        if stream is None or stream.response_complete:
            return
        if self._abort_or_continue(stream, decision) is FilterStatus.CONTINUE:
            stream.continue_decoding()

    def _abort_or_continue(self, stream: "ActiveStream", decision: Any) -> FilterStatus:
        if decision.abort_status is None and decision.grpc_status is None:
            return FilterStatus.CONTINUE
        self.config.aborts_injected.inc()
        stream.info.response_flags |= ResponseFlag.FI
        status = decision.abort_status if decision.abort_status is not None else 200
        stream.send_local_reply(LocalReply(status, "fault filter abort", "fault_filter_abort"))
        return FilterStatus.STOP

    def on_destroy(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.active:
            self.active = False
            self.config.active_faults.dec()
        self.stream = None


def build_factory(typed_config: Any, stats: Any, rng: Any) -> FilterFactory:
    config = FaultFilterConfig(typed_config, stats, rng)
    return lambda: FaultFilter(config)
