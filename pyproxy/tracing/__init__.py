"""Distributed tracing for the HTTP connection manager (HCM `tracing`, Envoy's tracers).

- `context`: W3C `traceparent`/`tracestate` and B3 headers, read and written (pure);
- `sampling`: the once-per-request decision from the x-request-id, Envoy's rules (pure);
- `tracer`: HCM `tracing` compiled (`HttpTracer`) and a sampled request's spans (`ActiveSpan`);
- `export`: the opentelemetry-sdk pipelines that post spans from a worker thread (OTLP/HTTP, Zipkin JSON).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..config import model

if TYPE_CHECKING:  # pragma: no cover
    from .export import SpanExporters
    from .tracer import HttpTracer

__all__ = ["SpanExporters", "HttpTracer", "TracingConfigError", "build_http_tracer"]


class TracingConfigError(ValueError):
    """An HCM `tracing` block pyproxy cannot serve (the listener is rejected with this message)."""


def __getattr__(name: str) -> Any:
    """`tracer` and `export` load opentelemetry-sdk (1 MiB and more): imported when asked for, so a proxy whose
    config traces nothing does not load it (benchmarks/memory_bench.py)."""
    if name == "SpanExporters":
        from .export import SpanExporters
        return SpanExporters
    if name == "HttpTracer":
        from .tracer import HttpTracer
        return HttpTracer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _node_field(node: Any, name: str) -> str:
    if node is None:
        return ""
    if isinstance(node, dict):
        return str(node.get(name) or "")
    return str(getattr(node, name, "") or "")


def build_http_tracer(cfg: model.HcmTracing | None, exporters: "SpanExporters | Callable[[], SpanExporters] | None",
                      clusters: Any, node: Any, *, egress: bool) -> "HttpTracer | None":
    """The HCM's tracer, or None when `tracing` is absent or names no provider (Envoy then only keeps the
    request-id handling; no span is made). `exporters` may be a function that makes the proxy's shared
    pipelines on first use, so opentelemetry is imported only by a config that traces."""
    if cfg is None or cfg.provider is None:
        return None
    from .export import SpanExporters
    from .tracer import HttpTracer

    if callable(exporters) and not isinstance(exporters, SpanExporters):
        exporters = exporters()
    exporters = exporters if exporters is not None else SpanExporters()
    sdk_tracer = exporters.tracer_for(cfg.provider, clusters, "tracing", _node_field(node, "cluster"))
    return HttpTracer(cfg, sdk_tracer, node_id=_node_field(node, "id"), egress=egress)
