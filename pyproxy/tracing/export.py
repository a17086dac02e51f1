"""Span export: one opentelemetry-sdk TracerProvider per (tracer, collector, service name), shared by every HCM
of the proxy that names the same target, its spans batched and posted by a worker thread.

This is the I/O edge of tracing. The event loop only ends a span: the SDK's `BatchSpanProcessor.on_end` puts it
in a bounded queue (a full queue drops the span, as Envoy's tracers drop when their buffer is full) and its
thread posts batches:
- `envoy.tracers.opentelemetry` with `http_service`: OTLP/HTTP protobuf (`opentelemetry-exporter-otlp-proto-http`)
  POSTed, as Envoy does, to a host of `http_uri.cluster` (looked up at export time in the proxy's current
  clusters, so an EDS change is followed) with the path of `http_uri.uri` and its authority as Host; when the
  proxy has no such cluster, to `http_uri.uri` itself (a deviation: Envoy rejects the config). Headers from
  `request_headers_to_add`; the resource's `service.name` is `service_name`.
- `envoy.tracers.zipkin` (`HTTP_JSON`): Zipkin JSON v2 POSTed to the first host of `collector_cluster` +
  `collector_endpoint` (`collector_hostname` as Host), the node's `cluster` as `localEndpoint.serviceName` (as
  Envoy). Each span carries its own span id (pyproxy does not implement `shared_span_context`, a documented
  deviation; Istio sets it false anyway).
Flush interval: Envoy's runtime `tracing.opentelemetry.flush_interval_ms` (default 5000 ms) is read from the
environment variable `PYPROXY_TRACE_FLUSH_INTERVAL_MS` (pyproxy has no runtime layer). `close()` flushes.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request
from typing import Any, Callable, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind

from ..config import model
from .tracer import OPENTELEMETRY, ZIPKIN, TracingConfigError

log = logging.getLogger("pyproxy.tracing")
DEFAULT_FLUSH_INTERVAL_MS = 5000  # Envoy: tracing.opentelemetry.flush_interval_ms
MAX_QUEUE = 2048  # spans held for export; beyond it new spans are dropped (counted by the SDK's logger)


def flush_interval_ms() -> int:
    try:
        return max(1, int(os.environ.get("PYPROXY_TRACE_FLUSH_INTERVAL_MS", DEFAULT_FLUSH_INTERVAL_MS)))
    except ValueError:
        return DEFAULT_FLUSH_INTERVAL_MS


def zipkin_json(spans: Sequence[ReadableSpan], trace_id_128bit: bool) -> list[dict[str, Any]]:
    """Zipkin API v2 JSON for finished SDK spans. Pure."""
    out = []
    kinds = {SpanKind.SERVER: "SERVER", SpanKind.CLIENT: "CLIENT"}
    for s in spans:
        ctx = s.context
        tid = f"{ctx.trace_id:032x}" if trace_id_128bit or ctx.trace_id >> 64 else f"{ctx.trace_id:016x}"
        item: dict[str, Any] = {
            "traceId": tid, "id": f"{ctx.span_id:016x}", "name": s.name,
            "timestamp": (s.start_time or 0) // 1000, "duration": max(1, ((s.end_time or 0) - (s.start_time or 0)) // 1000),
            "localEndpoint": {"serviceName": str(s.resource.attributes.get("service.name", ""))},
            "tags": {k: str(v) for k, v in (s.attributes or {}).items() if str(v)},  # Envoy's Zipkin drops empty ones
        }
        if s.kind in kinds:
            item["kind"] = kinds[s.kind]
        if s.parent is not None:
            item["parentId"] = f"{s.parent.span_id:016x}"
        out.append(item)
    return out


class ZipkinJsonExporter(SpanExporter):
    """POSTs Zipkin JSON v2 (runs on the batch processor's thread, never the event loop)."""

    def __init__(self, url: str, host_header: str, timeout: float, trace_id_128bit: bool):
        self.url = url
        self.host_header = host_header
        self.timeout = timeout
        self.trace_id_128bit = trace_id_128bit

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = json.dumps(zipkin_json(spans, self.trace_id_128bit)).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"content-type": "application/json"})
        if self.host_header:
            req.add_header("host", self.host_header)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
            return SpanExportResult.SUCCESS
        except OSError as e:
            log.warning("zipkin export to %s failed: %s", self.url, e)
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        return None


def cluster_url(clusters: Any, cluster: str, uri: str) -> str:
    """`uri` with its authority replaced by the first host of `cluster` (Envoy posts to the cluster); `uri`
    unchanged when the cluster is unknown or empty."""
    found = clusters.get(cluster) if clusters is not None and cluster else None
    hosts = getattr(found, "hosts", None) or []
    if not hosts:
        return uri
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(("http", f"{hosts[0].address}:{hosts[0].port}", parts.path or "/",
                                    parts.query, ""))


class ClusterTargetExporter(SpanExporter):
    """Resolves the target on every export (on the processor's thread) and re-creates the inner exporter when it
    moved."""

    def __init__(self, make: Callable[[str], SpanExporter], url_now: Callable[[], str]):
        self.make = make
        self.url_now = url_now
        self.url = ""
        self.inner: SpanExporter | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        url = self.url_now()
        if self.inner is None or url != self.url:
            self.inner, self.url = self.make(url), url
        return self.inner.export(spans)

    def shutdown(self) -> None:
        if self.inner is not None:
            self.inner.shutdown()


class SpanExporters:
    """The proxy's span pipelines, by target; an HCM swap reuses the pipeline of an unchanged target.
    `clusters` is the proxy's current ClusterManager (set on every config apply), read at export time."""

    def __init__(self) -> None:
        self._providers: dict[tuple, TracerProvider] = {}
        self.clusters: Any = None

    def __repr__(self) -> str:
        return f"SpanExporters({[k[:2] for k in self._providers]})"

    def tracer_for(self, provider: model.TracingProvider, clusters: Any, where: str, local_cluster: str = "") -> Any:
        """The SDK tracer for an HCM `tracing.provider`; TracingConfigError names what is unsupported.
        `local_cluster`: the node's `cluster`, which Envoy's Zipkin tracer reports as the local service name."""
        cfg = provider.typed_config
        if provider.name == OPENTELEMETRY or isinstance(cfg, model.OpenTelemetryConfig):
            if not isinstance(cfg, model.OpenTelemetryConfig) or cfg.http_service is None:
                raise TracingConfigError(f"{where}.provider: envoy.tracers.opentelemetry needs an OpenTelemetryConfig "
                                         "with http_service (grpc_service is not implemented by pyproxy)")
            uri = cfg.http_service.http_uri
            headers = tuple((o.header.key, o.header.value) for o in cfg.http_service.request_headers_to_add
                            if o.header is not None)
            key: tuple = (OPENTELEMETRY, uri.uri, uri.cluster, cfg.service_name, headers, uri.timeout)
            if key not in self._providers:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                authority = urllib.parse.urlsplit(uri.uri).netloc
                all_headers = dict(headers)

                def make(url: str, timeout: float = uri.timeout or 5.0) -> SpanExporter:
                    sent = {**all_headers, "host": authority} if url != uri.uri else all_headers
                    return OTLPSpanExporter(endpoint=url, headers=sent, timeout=timeout)
                exporter = ClusterTargetExporter(make, lambda: cluster_url(self.clusters, uri.cluster, uri.uri))
                self._providers[key] = self._provider(exporter, cfg.service_name)
            return self._providers[key].get_tracer("pyproxy")
        if provider.name == ZIPKIN or isinstance(cfg, model.ZipkinConfig):
            if not isinstance(cfg, model.ZipkinConfig):
                raise TracingConfigError(f"{where}.provider: envoy.tracers.zipkin needs a ZipkinConfig")
            if cfg.collector_endpoint_version not in ("HTTP_JSON",):
                raise TracingConfigError(f"{where}.provider.typed_config.collector_endpoint_version: "
                                         f"{cfg.collector_endpoint_version} is not implemented (HTTP_JSON is)")
            if clusters is not None and clusters.get(cfg.collector_cluster) is None:
                raise TracingConfigError(f"{where}.provider.typed_config.collector_cluster: "
                                         f"unknown cluster {cfg.collector_cluster!r}")
            fallback = f"http://{cfg.collector_hostname or cfg.collector_cluster}{cfg.collector_endpoint}"
            key = (ZIPKIN, cfg.collector_endpoint, cfg.collector_cluster, cfg.collector_hostname, cfg.trace_id_128bit,
                   local_cluster)
            if key not in self._providers:
                zc = cfg
                exporter = ClusterTargetExporter(
                    lambda url: ZipkinJsonExporter(url, zc.collector_hostname, 5.0, zc.trace_id_128bit),
                    lambda: cluster_url(self.clusters, zc.collector_cluster, fallback))
                self._providers[key] = self._provider(exporter, local_cluster)
            return self._providers[key].get_tracer("pyproxy")
        raise TracingConfigError(f"{where}.provider.name: tracer {provider.name!r} is not implemented by pyproxy "
                                 f"(supported: {OPENTELEMETRY}, {ZIPKIN})")

    @staticmethod
    def _provider(exporter: SpanExporter, service_name: str) -> TracerProvider:
        tp = TracerProvider(resource=Resource.create({"service.name": service_name or "unknown_service"}),
                            sampler=ALWAYS_ON)  # the decision is the HCM's (pyproxy.tracing.sampling)
        tp.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=MAX_QUEUE,
                                                 schedule_delay_millis=flush_interval_ms()))
        return tp

    def close(self) -> None:
        """Flush and stop every pipeline (the proxy is stopping)."""
        for tp in self._providers.values():
            tp.shutdown()
        self._providers.clear()
