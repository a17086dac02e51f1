"""Fault injection decisions (Envoy `envoy.filters.http.fault`, `FaultFilterConfig` + `FaultFilter::decodeHeaders`).

Where it sits: the fault filter runs before the router. Once per request it asks `FaultConfig.decide()` whether to
delay (flag DI) and/or abort (flag FI) this request; the filter then waits `delay` seconds (the router's timeout
has not started yet) and/or answers `abort_status` itself. This module only decides; no timers.

Envoy semantics (extensions/filters/http/fault/v3/fault.proto, common/fault/v3/fault.proto, fault_filter.cc):

* The config is the filter's HTTPFault, unless the route (or its virtual host / weighted cluster) has a
  `typed_per_filter_config["envoy.filters.http.fault"]`, which replaces it whole (`effective_fault_config`).
* Gates, in order: `max_active_faults` (at or over it ⇒ no fault, `faults_overflow`); `upstream_cluster` must equal
  the routed cluster when set; `downstream_nodes` must contain `x-envoy-downstream-service-node` when set; every
  `headers` matcher must match.
* Delay: `fixed_delay`, or `header_delay` (milliseconds from `x-envoy-fault-delay-request`; absent or invalid ⇒ no
  delay). Abort: `http_status`, `grpc_status` (HTTP 200 with that grpc-status), or `header_abort`
  (`x-envoy-fault-abort-request`, 200..599; `x-envoy-fault-abort-grpc-request`). Each is applied to the request
  with its `percentage` (unset ⇒ 0 %), drawn independently: `random % denominator < numerator`. For header-driven
  faults `x-envoy-fault-delay-request-percentage` / `x-envoy-fault-abort-request-percentage` can lower (never
  raise) the numerator; the denominator stays the configured one. The delay comes first, then the abort.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from pyproxy.config.model import FractionalPercent, HTTPFault
from pyproxy.http.headers import Headers
from pyproxy.routing.table import RequestView, compile_header_matcher

__all__ = ["FAULT_FILTER_NAME", "FaultConfig", "FaultDecision", "effective_fault_config"]

FAULT_FILTER_NAME = "envoy.filters.http.fault"
DELAY_HEADER = "x-envoy-fault-delay-request"
DELAY_PERCENT_HEADER = "x-envoy-fault-delay-request-percentage"
ABORT_HEADER = "x-envoy-fault-abort-request"
ABORT_GRPC_HEADER = "x-envoy-fault-abort-grpc-request"
ABORT_PERCENT_HEADER = "x-envoy-fault-abort-request-percentage"
DOWNSTREAM_NODE_HEADER = "x-envoy-downstream-service-node"

_DENOMINATOR = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """`delay` seconds to wait (0 = none, flag DI); `abort_status` HTTP status to answer with (None = none,
    flag FI); with `grpc_status` the answer is HTTP 200 carrying that grpc-status. `overflow`: max_active_faults
    stopped any fault (count `faults_overflow`)."""

    delay: float = 0.0
    abort_status: int | None = None
    grpc_status: int | None = None
    overflow: bool = False

    @property
    def faulted(self) -> bool:
        return self.delay > 0 or self.abort_status is not None or self.grpc_status is not None

    @property
    def response_flags(self) -> tuple[str, ...]:
        flags = []
        if self.delay > 0:
            flags.append("DI")
        if self.abort_status is not None or self.grpc_status is not None:
            flags.append("FI")
        return tuple(flags)


NO_FAULT = FaultDecision()


def _uint(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _first(headers: Headers, name: str) -> str | None:
    """Fault headers are untrusted: only the first value counts (Envoy)."""
    return headers.get_first(name)


class FaultConfig:
    """An HTTPFault compiled once (header matchers, percentages)."""

    __slots__ = ("cfg", "matchers", "delay_pct", "abort_pct", "nodes")

    def __init__(self, cfg: HTTPFault):
        self.cfg = cfg
        self.matchers: tuple[Callable[[RequestView], bool], ...] = tuple(
            compile_header_matcher(h, f"headers[{i}]") for i, h in enumerate(cfg.headers)
        )
        self.delay_pct = self._fraction(cfg.delay.percentage if cfg.delay else None)
        self.abort_pct = self._fraction(cfg.abort.percentage if cfg.abort else None)
        self.nodes = frozenset(cfg.downstream_nodes)

    @staticmethod
    def _fraction(p: FractionalPercent | None) -> tuple[int, int]:
        if p is None:
            return (0, 100)
        return (p.numerator, _DENOMINATOR[p.denominator])

    @staticmethod
    def _enabled(fraction: tuple[int, int], rng: random.Random) -> bool:
        """Envoy's featureEnabled: a draw every time, even at 0 % (which no draw is below)."""
        numerator, denominator = fraction
        return rng.randrange(denominator) < numerator

    @staticmethod
    def _header_fraction(fraction: tuple[int, int], headers: Headers, name: str) -> tuple[int, int]:
        value = _uint(_first(headers, name))
        return fraction if value is None else (min(value, fraction[0]), fraction[1])

    def decide(self, headers: Headers, cluster_name: str | None, rng: random.Random, active_faults: int, *,
               method: str, authority: str, path: str, scheme: str) -> FaultDecision:
        """The fault for one request. `active_faults`: faults in progress now (the filter keeps that gauge); the
        request line (method, authority, path, scheme) is what `headers` matchers on pseudo-headers read."""
        cfg = self.cfg
        if cfg.max_active_faults is not None and active_faults >= cfg.max_active_faults:
            return FaultDecision(overflow=True)
        if cfg.upstream_cluster and cfg.upstream_cluster != cluster_name:
            return NO_FAULT
        if self.nodes and _first(headers, DOWNSTREAM_NODE_HEADER) not in self.nodes:
            return NO_FAULT
        if self.matchers:
            req = RequestView(headers, authority, path, method, scheme)
            if not all(m(req) for m in self.matchers):
                return NO_FAULT
        delay = 0.0
        d = cfg.delay
        if d is not None:
            if d.header_delay is not None:
                ms = _uint(_first(headers, DELAY_HEADER))
                fraction = self._header_fraction(self.delay_pct, headers, DELAY_PERCENT_HEADER)
                if ms and self._enabled(fraction, rng):
                    delay = ms / 1000.0
            elif d.fixed_delay and self._enabled(self.delay_pct, rng):
                delay = d.fixed_delay
        abort_status = grpc_status = None
        a = cfg.abort
        if a is not None:
            if a.header_abort is not None:
                fraction = self._header_fraction(self.abort_pct, headers, ABORT_PERCENT_HEADER)
                status = _uint(_first(headers, ABORT_HEADER))
                grpc = _uint(_first(headers, ABORT_GRPC_HEADER))
                if status is not None and not 200 <= status < 600:
                    status = None
                if (status is not None or grpc is not None) and self._enabled(fraction, rng):
                    abort_status, grpc_status = (status, None) if status is not None else (None, grpc)
            elif self._enabled(self.abort_pct, rng):
                if a.http_status is not None:
                    abort_status = a.http_status
                else:
                    grpc_status = a.grpc_status
        if not delay and abort_status is None and grpc_status is None:
            return NO_FAULT  # the common answer: the shared instance, no allocation per request
        return FaultDecision(delay=delay, abort_status=abort_status, grpc_status=grpc_status)

    def __repr__(self) -> str:
        return f"FaultConfig(delay={self.delay_pct}, abort={self.abort_pct}, cluster={self.cfg.upstream_cluster!r})"


def effective_fault_config(filter_config: HTTPFault | None, route_match: Any = None,
                           cluster_weight: Any = None) -> HTTPFault | None:
    """The per-route HTTPFault (weighted cluster, route, virtual host: most specific) if any, else the filter's."""
    if route_match is not None:
        override = route_match.per_filter_config(FAULT_FILTER_NAME, cluster_weight)
        if isinstance(override, HTTPFault):
            return override
    return filter_config
