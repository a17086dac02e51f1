"""Distributed tracing for the HTTP connection manager (HCM `tracing`, Envoy's tracers).

- `context`: W3C `traceparent`/`tracestate` and B3 headers, read and written (pure);
- `sampling`: the once-per-request decision from the x-request-id, Envoy's rules (pure);
- `tracer`: HCM `tracing` compiled (`HttpTracer`) and a sampled request's spans (`ActiveSpan`);
- `export`: the opentelemetry-sdk pipelines that post spans from a worker thread (OTLP/HTTP, Zipkin JSON).
"""
from __future__ import annotations

from typing import Any

from ..config import model
from .export import SpanExporters
from .tracer import HttpTracer, TracingConfigError

__all__ = ["SpanExporters", "HttpTracer", "TracingConfigError", "build_http_tracer"]


def _node_field(node: Any, name: str) -> str:
    if node is None:
        return ""
    if isinstance(node, dict):
        return str(node.get(name) or "")
    return str(getattr(node, name, "") or "")


def build_http_tracer(cfg: model.HcmTracing | None, exporters: SpanExporters | None, clusters: Any, node: Any,
                      *, egress: bool) -> HttpTracer | None:
    """The HCM's tracer, or None when `tracing` is absent or names no provider (Envoy then only keeps the
    request-id handling; no span is made)."""
    if cfg is None or cfg.provider is None:
        return None
    exporters = exporters if exporters is not None else SpanExporters()
    sdk_tracer = exporters.tracer_for(cfg.provider, clusters, "tracing", _node_field(node, "cluster"))
    return HttpTracer(cfg, sdk_tracer, node_id=_node_field(node, "id"), egress=egress)
