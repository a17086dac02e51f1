"""The HTTP connection manager's tracer: HCM `tracing` compiled once (`HttpTracer`), one `ActiveSpan` per
sampled request.

Where it sits: `ActiveStream.start` calls `HttpTracer.start` after the route is matched and before the HTTP
filters run (Envoy's `traceRequest` in conn_manager_impl.cc); the router calls `ActiveSpan.on_upstream` when it
has picked the cluster; the stream calls `ActiveSpan.finish` when it is logged.

Per request, in order (each step Envoy's, checked against Envoy 1.40 in tests/oracle/test_tracing_differential.py):
1. the decision (`pyproxy.tracing.sampling.decide`) from the x-request-id, written back into it;
2. the parent context from `traceparent` (or B3, a documented deviation: see `pyproxy.tracing.context.extract`);
   the request is sampled only if the decision says traced AND a W3C/B3 parent, if any, is not unsampled;
3. unsampled: no span object at all; only the propagation headers are written (a fresh span id with the
   unsampled flag, the parent's trace id kept), which is what Envoy sends upstream too;
4. sampled: an opentelemetry-sdk span (SERVER on an ingress HCM, CLIENT on an egress one, i.e. a listener with
   `traffic_direction: OUTBOUND`), named by the route's `decorator.operation` (else `ingress` / `egress <host>`),
   its context injected upstream; with `spawn_upstream_span` the router's upstream request gets its own CLIENT
   child span `router <cluster> egress` whose context is injected instead;
5. at stream end: Envoy's tags (`node_id`, `zone`, `guid:x-request-id`, `http.url`, `http.method`,
   `downstream_cluster`, `user_agent`, `http.protocol`, `peer.address`, `request_size`, `response_size`,
   `component: proxy`, `upstream_cluster`, `upstream_cluster.name`, `http.status_code`, `response_flags`,
   `error: true` for 5xx or no response) plus the HCM `custom_tags` (Istio sends `istio.canonical_service`,
   `istio.mesh_id`... as literal custom tags). The span ends; the exporter's batch processor queues it and a
   worker thread posts it (`pyproxy.tracing.export`), never the event loop.
Peer identity: on a TLS connection the peer's URI SAN is the tag `peer.identity` (an addition: Envoy has no
such tag; Istio users read it from the metrics' source_principal).
"""
from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as otel_trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from ..config import model
from ..observe.stream_info import response_flags_short
from . import TracingConfigError, context as tc
from .sampling import SamplingConfig, decide, fraction_to_ten_thousandths, percent_to_ten_thousandths

if TYPE_CHECKING:  # pragma: no cover
    from ..http.connection import ActiveStream

OPENTELEMETRY = "envoy.tracers.opentelemetry"
ZIPKIN = "envoy.tracers.zipkin"
DEFAULT_MAX_PATH_TAG_LENGTH = 256  # Envoy's Tracing::DefaultMaxPathTagLength
DECORATOR_HEADER = "x-envoy-decorator-operation"
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ids = random.Random(os.urandom(32))  # ids must be unique, not secret (as pyproxy.http.connection's request ids)


def _custom_tags(tags: tuple[model.CustomTag, ...]) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, str], ...]]:
    """(fixed tags, header tags). Literal and environment values are fixed when the config is built (Envoy reads
    the environment once too); header tags are (tag, header name, default)."""
    fixed: list[tuple[str, str]] = []
    headers: list[tuple[str, str, str]] = []
    for t in tags:
        if t.literal is not None:
            fixed.append((t.tag, t.literal.value))
        elif t.environment is not None:
            value = os.environ.get(t.environment.name, t.environment.default_value)
            if value:
                fixed.append((t.tag, value))
        elif t.request_header is not None:
            headers.append((t.tag, t.request_header.name.lower(), t.request_header.default_value))
    return tuple(fixed), tuple(headers)


class HttpTracer:
    """HCM `tracing` compiled: sampling in ten-thousandths, tags split fixed/per-request, the SDK tracer."""

    __slots__ = ("sampling", "fixed_tags", "header_tags", "spawn_upstream", "max_path", "egress", "b3",
                 "trace_id_128bit", "sdk_tracer", "node_id", "provider")

    def __init__(self, cfg: model.HcmTracing, sdk_tracer: Any, *, node_id: str, egress: bool):
        self.sampling = SamplingConfig(percent_to_ten_thousandths(cfg.client_sampling and cfg.client_sampling.value),
                                       percent_to_ten_thousandths(cfg.random_sampling and cfg.random_sampling.value),
                                       percent_to_ten_thousandths(cfg.overall_sampling and cfg.overall_sampling.value))
        self.fixed_tags, self.header_tags = _custom_tags(cfg.custom_tags)
        self.spawn_upstream = bool(cfg.spawn_upstream_span)
        self.max_path = cfg.max_path_tag_length or DEFAULT_MAX_PATH_TAG_LENGTH
        self.egress = egress
        self.provider = cfg.provider.name if cfg.provider is not None else ""
        self.b3 = self.provider == ZIPKIN
        zc = cfg.provider.typed_config if self.b3 and cfg.provider is not None else None
        self.trace_id_128bit = bool(getattr(zc, "trace_id_128bit", True))
        self.sdk_tracer = sdk_tracer
        self.node_id = node_id

    def __repr__(self) -> str:
        return (f"HttpTracer({self.provider}, random={self.sampling.random / 100:g}%, "
                f"{'egress' if self.egress else 'ingress'}, spawn_upstream={self.spawn_upstream})")

    # ------------------------------------------------------------ request start
    def start(self, stream: "ActiveStream") -> "ActiveSpan | None":
        h = stream.headers
        rid = h.get_first("x-request-id")
        m = stream.route_match
        route_tracing = m.route.tracing if m is not None and m.route is not None else None
        sampling = self.sampling if route_tracing is None else route_sampling(route_tracing)
        reason, new_rid = decide(rid, sampling, client_trace_id="x-client-trace-id" in h,
                                 force_trace="x-envoy-force-trace" in h and h.get_first("x-envoy-internal") == "true")
        if new_rid is not None:
            h.set("x-request-id", new_rid)
        parent = tc.extract_b3(h) if self.b3 else tc.extract(h)  # Zipkin: B3 only (Envoy's USE_B3 default)
        name = self._operation(stream)
        if not reason.traced or (parent is not None and parent.sampled is False):
            self._propagate_unsampled(h, parent)
            return None
        parent_ctx = None
        if parent is not None:
            state = TraceState.from_header([parent.tracestate]) if parent.tracestate else None
            parent_ctx = otel_trace.set_span_in_context(NonRecordingSpan(
                SpanContext(parent.trace_id, parent.span_id, True, _SAMPLED, state)))
        kind = SpanKind.CLIENT if self.egress else SpanKind.SERVER
        span = self.sdk_tracer.start_span(name, context=parent_ctx, kind=kind,
                                          start_time=int(stream.info.start_time * 1e9))
        active = ActiveSpan(self, span, parent.tracestate if parent is not None else "",
                            parent.span_id if parent is not None else 0,
                            route_tracing.custom_tags if route_tracing is not None else ())
        if not self.spawn_upstream:
            active.inject(h, span)
        return active

    def _operation(self, stream: "ActiveStream") -> str:
        """Span name: the route decorator; an ingress HCM takes (and removes) x-envoy-decorator-operation, an
        egress one sends its decorator there when `decorator.propagate` is not false (Envoy's traceRequest)."""
        h = stream.headers
        m = stream.route_match
        decorator = m.route.decorator if m is not None and m.route is not None else None
        name = decorator.operation if decorator is not None else ""
        if self.egress:
            if decorator is not None and decorator.propagate is not False and name:
                h.set(DECORATOR_HEADER, name)
            return name or f"egress {stream.info.authority or ''}"
        override = h.get_first(DECORATOR_HEADER)
        if override is not None:
            h.remove(DECORATOR_HEADER)
            if override:
                return override
        return name or "ingress"

    def _propagate_unsampled(self, h: Any, parent: tc.TraceContext | None) -> None:
        """What an unsampled request pays: a new span id (and a trace id when there is no parent) written to the
        headers with the not-sampled flag; no span object, nothing exported."""
        trace_id = parent.trace_id if parent is not None else (_ids.getrandbits(128) or 1)
        span_id = _ids.getrandbits(64) or 1
        if self.b3:
            tc.inject_b3(h, trace_id, span_id, parent.span_id if parent is not None else 0, False,
                         self.trace_id_128bit)
        else:
            h.set("traceparent", tc.format_traceparent(trace_id, span_id, False))
            h.set("tracestate", parent.tracestate if parent is not None else "")  # Envoy sends it, even empty


class ActiveSpan:
    """A sampled request's span(s). Lives from `HttpTracer.start` to `finish`."""

    __slots__ = ("tracer", "span", "upstream", "tracestate", "parent_span_id", "route_tags")

    def __init__(self, tracer: HttpTracer, span: Any, tracestate: str, parent_span_id: int,
                 route_tags: tuple = ()):
        self.tracer = tracer
        self.span = span
        self.upstream: Any = None
        self.tracestate = tracestate
        self.parent_span_id = parent_span_id
        self.route_tags = route_tags  # the matched route's `tracing.custom_tags` (model.CustomTag)

    def inject(self, h: Any, span: Any, parent_span_id: int | None = None) -> None:
        sc = span.get_span_context()
        if self.tracer.b3:
            parent = self.parent_span_id if parent_span_id is None else parent_span_id
            tc.inject_b3(h, sc.trace_id, sc.span_id, parent, True, self.tracer.trace_id_128bit)
        else:
            tc.inject_w3c(h, sc.trace_id, sc.span_id, True)
            h.set("tracestate", self.tracestate)

    def on_upstream(self, stream: "ActiveStream", cluster: str) -> None:
        """The router picked `cluster`: with spawn_upstream_span, start the upstream CLIENT span and send its
        context (Envoy's router upstream span, named `router <cluster> egress`)."""
        if not self.tracer.spawn_upstream or self.upstream is not None:
            return
        parent = otel_trace.set_span_in_context(self.span)
        self.upstream = self.tracer.sdk_tracer.start_span(f"router {cluster} egress", context=parent,
                                                          kind=SpanKind.CLIENT)
        self.inject(stream.headers, self.upstream, self.span.get_span_context().span_id)

    def finish(self, stream: "ActiveStream") -> None:
        """Tag and end the span(s) (Envoy's HttpTracerUtility::finalizeDownstreamSpan / finalizeUpstreamSpan)."""
        info = stream.info
        tags = downstream_tags(self.tracer, stream)
        if self.route_tags:  # after the HCM's: a route tag of the same name wins
            fixed, headers = _custom_tags(self.route_tags)
            h = info.request_headers
            _add_tags(fixed, headers, tags, h.get_first if h is not None else (lambda name: None))
        up = self.upstream
        if up is not None:
            up.set_attributes(upstream_tags(self.tracer, info))
            if _is_error(info.response_code):
                up.set_attribute("error", "true")
            up.end()
        self.span.set_attributes(tags)
        self.span.end()


def _is_error(code: int | None) -> bool:
    return not code or code >= 500


def downstream_tags(tracer: HttpTracer, stream: "ActiveStream") -> dict[str, str]:
    """The tags Envoy sets on the downstream span, in Envoy's order. Pure: stream facts in, dict out."""
    info = stream.info
    h = info.request_headers
    get = h.get_first if h is not None else (lambda name: None)
    url = f"{info.scheme or 'http'}://{info.authority or ''}{(info.path or '')[:tracer.max_path]}"  # Envoy's buildUrl
    remote = info.downstream_remote_address or "-"
    tags = {
        "node_id": tracer.node_id,
        "zone": "",
        "guid:x-request-id": get("x-request-id") or "",
        "http.url": url,
        "http.method": info.method or "",
        "downstream_cluster": get("x-envoy-downstream-service-cluster") or "-",
        "user_agent": get("user-agent") or "-",
        "http.protocol": info.protocol or "",
        "peer.address": remote.rsplit(":", 1)[0].strip("[]") if ":" in remote else remote,
    }
    client_trace_id = get("x-client-trace-id")
    if client_trace_id is not None:
        tags["guid:x-client-trace-id"] = client_trace_id
    tags["request_size"] = str(info.bytes_received)
    tags["response_size"] = str(info.bytes_sent)
    tags["component"] = "proxy"
    cluster = info.upstream_cluster
    if cluster:
        tags["upstream_cluster"] = cluster
        tags["upstream_cluster.name"] = cluster
    tags["http.status_code"] = str(info.response_code or 0)
    tags["response_flags"] = response_flags_short(info.response_flags)
    if _is_error(info.response_code):
        tags["error"] = "true"
    tls = info.downstream_tls
    peers = tls.peer_uri_sans if tls is not None else ()
    if peers:
        tags["peer.identity"] = peers[0]
    _add_custom(tracer, tags, get)
    return tags


def upstream_tags(tracer: HttpTracer, info: Any) -> dict[str, str]:
    h = info.request_headers
    get = h.get_first if h is not None else (lambda name: None)
    tags = {"http.protocol": info.protocol or ""}
    if info.upstream_host:
        tags["upstream_address"] = info.upstream_host
        tags["peer.address"] = info.upstream_host
    tags["component"] = "proxy"
    if info.upstream_cluster:
        tags["upstream_cluster"] = info.upstream_cluster
        tags["upstream_cluster.name"] = info.upstream_cluster
    tags["http.status_code"] = str(info.response_code or 0)
    tags["response_flags"] = response_flags_short(info.response_flags)
    _add_custom(tracer, tags, get)
    return tags


def _add_custom(tracer: HttpTracer, tags: dict[str, str], get: Any) -> None:
    _add_tags(tracer.fixed_tags, tracer.header_tags, tags, get)


def _add_tags(fixed: tuple, header_tags: tuple, tags: dict[str, str], get: Any) -> None:
    for name, header, default in header_tags:
        value = get(header)
        if value is None:
            value = default
        if value:
            tags[name] = value
    for name, value in fixed:
        tags[name] = value


def route_sampling(rt: Any) -> SamplingConfig:
    """A route's `tracing` sampling (envoy.config.route.v3.Tracing), which replaces the HCM's for its requests
    (Envoy's ConnectionManagerUtility::mutateTracingRequestHeader); each unset fraction is 100 %."""
    return SamplingConfig(fraction_to_ten_thousandths(rt.client_sampling),
                          fraction_to_ten_thousandths(rt.random_sampling),
                          fraction_to_ten_thousandths(rt.overall_sampling))
