"""The trace decision: made once per request, from the x-request-id, as Envoy's HCM makes it. Pure.

Envoy (source/common/http/conn_manager_utility.cc `mutateTracingRequestHeader`, the UUID request-id extension):
- the x-request-id is a UUID whose 15th character (the version nibble) carries the *trace reason*:
  `4` not traceable, `9` sampled, `a` forced, `b` client (`x-client-trace-id` was present);
- `x-client-trace-id` makes the reason `client`; `x-envoy-force-trace` on an internal request
  (`x-envoy-internal: true`) makes it `forced`;
- the first 8 hex digits of the id, as an integer, modulo 10,000 is the request's sampling value `v`:
  a `client` reason survives if `v < client_sampling`, a not-traceable one becomes `sampled` if
  `v < random_sampling`, and anything but not-traceable survives only if `v < overall_sampling`
  (all three HCM `tracing` fields are Percent, kept in ten-thousandths; default 100 %);
- the reason is written back into the x-request-id, so the next hop sees the same decision (and, since `v`
  comes from the same id, a hop with the same percentage draws the same answer).
A request whose id is not a UUID is never traced (Envoy returns early).

Observed with Envoy 1.40 (tests/oracle/test_tracing_differential.py): the span is exported only when this
decision says traced AND the W3C parent (if any) is sampled: a sampled `traceparent` does not beat
`random_sampling: 0`, and an unsampled one is not overridden by 100 %.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class TraceReason(Enum):
    NOT_TRACEABLE = "4"
    SAMPLED = "9"
    FORCED = "a"
    CLIENT = "b"

    @property
    def traced(self) -> bool:
        return self is not TraceReason.NOT_TRACEABLE


_BY_CHAR = {r.value: r for r in TraceReason}
TEN_THOUSAND = 10000


def percent_to_ten_thousandths(value: float | None, default: int = TEN_THOUSAND) -> int:
    """Envoy's PROTOBUF_PERCENT_TO_ROUNDED_INTEGER_OR_DEFAULT(..., 10000, default)."""
    if value is None:
        return default
    return int(round(value * TEN_THOUSAND / 100.0))


def fraction_to_ten_thousandths(fp: Any, default: int = TEN_THOUSAND) -> int:
    """A route's FractionalPercent on the HCM's ten-thousandths scale (unset: `default`, Envoy's route default
    100 %). Deviation: Envoy draws a MILLION denominator on its own scale; here it rounds to 1/10,000."""
    if fp is None:
        return default
    scale = {"HUNDRED": 100, "TEN_THOUSAND": 1, "MILLION": 0.01}[fp.denominator]
    return min(TEN_THOUSAND, int(round(fp.numerator * scale)))


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """HCM `tracing.{client,random,overall}_sampling`, in ten-thousandths."""

    client: int = TEN_THOUSAND
    random: int = TEN_THOUSAND
    overall: int = TEN_THOUSAND


def _is_uuid(rid: str) -> bool:
    return len(rid) == 36 and rid[8] == rid[13] == rid[18] == rid[23] == "-"


def trace_reason(request_id: str | None) -> TraceReason:
    if request_id is None or not _is_uuid(request_id):
        return TraceReason.NOT_TRACEABLE
    return _BY_CHAR.get(request_id[14], TraceReason.NOT_TRACEABLE)


def with_trace_reason(request_id: str, reason: TraceReason) -> str:
    return request_id[:14] + reason.value + request_id[15:]


def sampling_value(request_id: str | None) -> int | None:
    """Envoy's UUIDRequestIDExtension::getInteger (first 8 hex digits) modulo 10,000; None: not a UUID."""
    if request_id is None or not _is_uuid(request_id):
        return None
    try:
        return int(request_id[:8], 16) % TEN_THOUSAND
    except ValueError:
        return None


def decide(request_id: str | None, cfg: SamplingConfig, *, client_trace_id: bool = False,
           force_trace: bool = False) -> tuple[TraceReason, str | None]:
    """(final reason, the x-request-id to send on: None when unchanged)."""
    value = sampling_value(request_id)
    if value is None or request_id is None:
        return TraceReason.NOT_TRACEABLE, None
    initial = trace_reason(request_id)
    reason = initial
    if client_trace_id:
        reason = TraceReason.CLIENT
    elif force_trace:
        reason = TraceReason.FORCED
    if reason is TraceReason.CLIENT and not value < cfg.client:
        reason = TraceReason.NOT_TRACEABLE
    elif reason is TraceReason.NOT_TRACEABLE and value < cfg.random:
        reason = TraceReason.SAMPLED
    if reason is not TraceReason.NOT_TRACEABLE and not value < cfg.overall:
        reason = TraceReason.NOT_TRACEABLE
    return reason, (with_trace_reason(request_id, reason) if reason is not initial else None)
