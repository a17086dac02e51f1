"""Trace context in request headers: W3C Trace Context and B3, read and written. Pure: headers in, values out.

Where it sits: the HTTP connection manager's tracer (`pyproxy.tracing.tracer`) extracts the parent context
from the downstream request and injects the context of the span it made into the request going upstream.

- W3C (`traceparent: 00-<32 hex trace>-<16 hex span>-<2 hex flags>`, `tracestate` passed along): what Envoy's
  `envoy.tracers.opentelemetry` reads and writes (source/extensions/tracers/opentelemetry/span_context_extractor.cc).
- B3 multi (`x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags: 1` = debug) and
  single (`b3: <trace>-<span>[-<sampled>[-<parent>]]` or just `b3: 0|1|d`): what `envoy.tracers.zipkin` reads;
  a 64-bit B3 trace id is widened to 128 bits with zeros on the left, as OpenTelemetry's B3 propagator does.
Malformed headers are ignored (Envoy: "Unable to extract span context", a fresh root span), never an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A remote parent: ids as ints, `sampled` None when the headers carry ids but no decision."""

    trace_id: int
    span_id: int
    sampled: bool | None
    tracestate: str = ""
    source: str = "w3c"  # which header family it came from: "w3c", "b3" or "b3-single"


def _hex_id(text: str, lengths: tuple[int, ...]) -> int | None:
    text = text.strip().lower()
    if len(text) not in lengths or not set(text) <= _HEX:
        return None
    value = int(text, 16)
    return value or None  # all-zero ids are invalid in both formats


def parse_traceparent(value: str) -> TraceContext | None:
    """`00-<trace>-<span>-<flags>`; a later version may append fields (W3C: parse the first four)."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or (parts[0] == "00" and len(parts) != 4):
        return None
    trace_id = _hex_id(parts[1], (32,))
    span_id = _hex_id(parts[2], (16,))
    flags = parts[3].lower()
    if trace_id is None or span_id is None or len(flags) != 2 or not set(flags) <= _HEX:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def _b3_sampled(value: str | None, flags: str | None = None) -> bool | None:
    if flags is not None and flags.strip() == "1":
        return True  # debug implies sampled
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("1", "true", "d"):
        return True
    if v in ("0", "false"):
        return False
    return None


def extract_w3c(headers: Any) -> TraceContext | None:
    value = headers.get_first("traceparent")
    if value is None:
        return None
    ctx = parse_traceparent(value)
    if ctx is None:
        return None
    state = headers.get("tracestate") or ""
    return TraceContext(ctx.trace_id, ctx.span_id, ctx.sampled, state) if state else ctx


def extract_b3(headers: Any) -> TraceContext | None:
    """B3 multi-header first, then the single `b3` header (Envoy's Zipkin extractor order)."""
    tid, sid = headers.get_first("x-b3-traceid"), headers.get_first("x-b3-spanid")
    if tid is not None and sid is not None:
        trace_id, span_id = _hex_id(tid, (16, 32)), _hex_id(sid, (16,))
        if trace_id is None or span_id is None:
            return None
        sampled = _b3_sampled(headers.get_first("x-b3-sampled"), headers.get_first("x-b3-flags"))
        return TraceContext(trace_id, span_id, sampled, "", "b3")
    single = headers.get_first("b3")
    if single is None:
        return None
    parts = single.strip().split("-")
    if len(parts) < 2:
        return None  # `b3: 0|1|d` alone is a bare decision, see `b3_decision`
    trace_id, span_id = _hex_id(parts[0], (16, 32)), _hex_id(parts[1], (16,))
    if trace_id is None or span_id is None or len(parts) > 4:
        return None
    return TraceContext(trace_id, span_id, _b3_sampled(parts[2]) if len(parts) > 2 else None, "", "b3-single")


def b3_decision(headers: Any) -> bool | None:
    """A sampling decision sent without ids (`x-b3-sampled: 0` or `b3: 0`), which B3 allows."""
    single = headers.get_first("b3")
    if single is not None and "-" not in single:
        return _b3_sampled(single)
    return _b3_sampled(headers.get_first("x-b3-sampled"), headers.get_first("x-b3-flags"))


def extract(headers: Any) -> TraceContext | None:
    """The parent context for the OpenTelemetry tracer: W3C first, then B3. Deviation: Envoy's OpenTelemetry
    tracer reads only W3C; pyproxy also reads B3, so a B3-only client joins an OTLP trace. (The Zipkin tracer
    reads B3 only, as Envoy's.)"""
    return extract_w3c(headers) or extract_b3(headers)


def inject_w3c(headers: Any, trace_id: int, span_id: int, sampled: bool, tracestate: str = "") -> None:
    headers.set("traceparent", format_traceparent(trace_id, span_id, sampled))
    if tracestate:
        headers.set("tracestate", tracestate)


B3_HEADERS = ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3")


def inject_b3(headers: Any, trace_id: int, span_id: int, parent_span_id: int, sampled: bool,
              trace_id_128bit: bool = True) -> None:
    """Envoy's Zipkin tracer writes the multi-header form (zipkin_core_types / span_context.cc)."""
    for name in B3_HEADERS:
        headers.remove(name)
    headers.set("x-b3-traceid", f"{trace_id:032x}" if trace_id_128bit or trace_id >> 64 else f"{trace_id:016x}")
    headers.set("x-b3-spanid", f"{span_id:016x}")
    if parent_span_id:
        headers.set("x-b3-parentspanid", f"{parent_span_id:016x}")
    headers.set("x-b3-sampled", "1" if sampled else "0")
