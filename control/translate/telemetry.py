"""The Telemetry API (`telemetry.istio.io/v1`, v1alpha1) and meshConfig's telemetry settings, translated into the
HCM fields istiod sets: `tracing`, `access_log`, and whether the `istio.stats` filter is there.

Istio: pilot/pkg/model/telemetry.go (which Telemetries apply, how they merge), pilot/pkg/networking/core/tracing.go
(`tracing`), telemetry_logging.go (`access_log`), telemetry_metrics.go. Pure: a Proxy and a direction in, dicts
out; what is not translated is said in the proxy's notes, never dropped silently.

Which Telemetries apply: the root namespace's selector-less one, then the workload namespace's selector-less one,
then the one selecting the workload (`MeshSnapshot.policies_for`), merged in that order; within one, its list
entries in order, skipping those whose `match.mode` is not this side (SERVER on the inbound listener, CLIENT on
outbound listeners and gateways).
- tracing: a level that names `providers` replaces the list; `randomSamplingPercentage`,
  `disableSpanReporting`, `enableIstioTags`, `customTags` (whole, not merged by name) are taken from the last
  level that sets them. No provider named anywhere: `meshConfig.defaultProviders.tracing`; none there: no
  `tracing` (deviation: istiod's legacy `meshConfig.enableTracing` + `defaultConfig.tracing.zipkin` default is
  not emitted). Only the first provider is used (Istio's rule). Sampling: Telemetry >
  `defaultConfig.tracing.sampling` > 1 % (PILOT_TRACE_SAMPLING's default).
- access logging (istiod's mergeLogs): the most specific Telemetry whose entries for this side name providers
  sets which are in scope (else `defaultProviders.accessLogging`); each entry, in order, turns the providers it
  names (or the previous entry's) on or `disabled`; a provider's filter is the one of the last entry naming it.
  `filter.expression` becomes Envoy's CEL extension filter (`envoy.access_loggers.extension_filters.cel`), which
  pyproxy evaluates for the CEL subset in pyproxy/observe/cel.py. When no defined provider is chosen,
  `meshConfig.accessLogFile` adds a file log.
- metrics (istiod's mergeMetrics): `disabled` for ALL_METRICS drops `istio.stats` on that side (as istiod drops
  the stats filter) until a later override on that side; `disabled` and `tagOverrides` become the filter's
  stats.PluginConfig `metrics` (`drop`, `dimensions`, `tags_to_remove`), for the HTTP metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from control.istio.resources import Resource, thaw
from control.mesh import selector_labels
from control.translate import accesslog
from control.translate.common import T, Proxy, cluster_name

OTEL_CONFIG = T + "envoy.config.trace.v3.OpenTelemetryConfig"
ZIPKIN_CONFIG = T + "envoy.config.trace.v3.ZipkinConfig"
FILE_ACCESS_LOG = accesslog.FILE_ACCESS_LOG
CEL_FILTER = T + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
DEFAULT_SAMPLING = 1.0  # PILOT_TRACE_SAMPLING (pilot/pkg/features/telemetry.go)
DEFAULT_MAX_PATH_TAG_LENGTH = 256
CLUSTER_ID = "Kubernetes"
# built-in providers (pkg/config/mesh/mesh.go): `envoy` = file access log to stdout, `prometheus` = the stats filter
BUILTIN_PROVIDERS: dict[str, dict] = {"envoy": {"name": "envoy", "envoyFileAccessLog": {"path": "/dev/stdout"}},
                                      "prometheus": {"name": "prometheus", "prometheus": {}}}

def mode_of(direction: str) -> str:
    """Istio's workload mode of a listener class: inbound SERVER; outbound and gateways CLIENT."""
    return "SERVER" if direction == "inbound" else "CLIENT"


def applies(entry: Mapping[str, Any], mode: str) -> bool:
    want = str((entry.get("match") or {}).get("mode") or "CLIENT_AND_SERVER")
    return want in ("CLIENT_AND_SERVER", mode)


def telemetries(proxy: Proxy) -> list[Resource]:
    """The Telemetries for this proxy, least specific first: root namespace, namespace, workload selector.
    `policies_for` already lists the root namespace's before the workload namespace's; the stable sort only moves
    the selecting ones after the selector-less ones of the same namespace."""
    found = []
    for tel in proxy.mesh.policies_for("Telemetry", proxy.workload):
        if tel.spec.get("targetRef") or tel.spec.get("targetRefs"):  # Gateway API / waypoint binding
            proxy.notes.add(tel, "spec.targetRef", "Telemetry bound by targetRef(s) is not translated (selector is)")
            continue
        found.append(tel)
    return sorted(found, key=lambda t: selector_labels(t.spec) is not None)


def find_provider(proxy: Proxy, name: str) -> Mapping[str, Any] | None:
    """istiod's fetchProvider: the meshConfig extension provider of that name, compared case-insensitively
    (strings.EqualFold), else the built-in one."""
    for p in (*proxy.mesh.config.extension_providers, *BUILTIN_PROVIDERS.values()):
        if str(p.get("name")).casefold() == name.casefold():
            return p
    return None


# --------------------------------------------------------------------------- tracing

@dataclass
class MergedTracing:
    providers: tuple[str, ...] = ()
    sampling: float | None = None
    disable_span_reporting: bool = False
    enable_istio_tags: bool = True
    custom_tags: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    sources: list[tuple[Resource, str]] = field(default_factory=list)  # (Telemetry, field path) for notes
    provider_source: tuple[Resource, str] | None = None  # the entry whose `providers` won


def merge_tracing(levels: list[Resource], mode: str) -> MergedTracing:
    out = MergedTracing()
    for tel in levels:
        for i, entry in enumerate(tel.spec.get("tracing") or ()):
            if not applies(entry, mode):
                continue
            out.sources.append((tel, f"spec.tracing[{i}]"))
            names = tuple(str(p.get("name")) for p in entry.get("providers") or () if p.get("name"))
            if names:
                out.providers = names
                out.provider_source = (tel, f"spec.tracing[{i}]")
            if entry.get("randomSamplingPercentage") is not None:
                out.sampling = float(entry["randomSamplingPercentage"])
            if entry.get("disableSpanReporting") is not None:
                out.disable_span_reporting = bool(entry["disableSpanReporting"])
            if entry.get("enableIstioTags") is not None:
                out.enable_istio_tags = bool(entry["enableIstioTags"])
            if entry.get("customTags") is not None:  # istiod: a level's customTags replace the inherited ones
                out.custom_tags = {str(k): v for k, v in entry["customTags"].items()}
    return out


def canonical_service(proxy: Proxy) -> tuple[str, str]:
    """(canonical name, canonical revision), as the injector labels them."""
    w = proxy.workload
    name = (w.labels.get("service.istio.io/canonical-name") or w.labels.get("app.kubernetes.io/name")
            or w.labels.get("app") or w.owner or w.name)
    revision = (w.labels.get("service.istio.io/canonical-revision") or w.labels.get("app.kubernetes.io/version")
                or w.labels.get("version") or "latest")
    return name, revision


def mesh_id(proxy: Proxy) -> str:
    """ISTIO_META_MESH_ID: `defaultConfig.meshId`, else the trust domain (the injector's default)."""
    return str(proxy.mesh.config.default_config.get("meshId") or proxy.mesh.config.trust_domain)


def istio_tags(proxy: Proxy) -> list[dict]:
    """istiod's buildServiceTags: literal custom tags naming this workload."""
    name, revision = canonical_service(proxy)
    values = (("istio.canonical_revision", revision), ("istio.canonical_service", name),
              ("istio.mesh_id", mesh_id(proxy)), ("istio.namespace", proxy.namespace),
              ("istio.cluster_id", CLUSTER_ID))
    return [{"tag": tag, "literal": {"value": value}} for tag, value in values]


def custom_tag(proxy: Proxy, name: str, spec: Mapping[str, Any], where: tuple[Resource, str] | None) -> dict | None:
    if spec.get("literal") is not None:
        return {"tag": name, "literal": {"value": str(spec["literal"].get("value", ""))}}
    if spec.get("environment") is not None:
        env = spec["environment"]
        return {"tag": name, "environment": {"name": str(env.get("name", "")),
                                             "default_value": str(env.get("defaultValue", ""))}}
    if spec.get("header") is not None:
        h = spec["header"]
        return {"tag": name, "request_header": {"name": str(h.get("name", "")),
                                                "default_value": str(h.get("defaultValue", ""))}}
    if where is not None:
        proxy.notes.add(where[0], f"{where[1]}.customTags.{name}",
                        "only literal, environment and header custom tags are translated (formatter is not)")
    return None


def _service_cluster(proxy: Proxy, host: str, port: int, provider: str, path: str) -> str | None:
    """istiod's cluster for a provider's service (`outbound|<port>||<host>`); None (with a note) when the mesh
    has no such service, where istiod logs an error and leaves tracing out."""
    for svc in proxy.mesh.services:
        if svc.hostname == host and svc.port(port) is not None:
            return cluster_name("outbound", port, "", host)
    proxy.notes.text(f"meshConfig.extensionProviders {provider!r}: {path} {host}:{port} is not a service of "
                     "the mesh (no cluster for it)")
    return None


def tracer_provider(proxy: Proxy, provider: Mapping[str, Any], service_name: str) -> dict | None:
    name = str(provider.get("name"))
    if "opentelemetry" in provider:
        otel = provider["opentelemetry"] or {}
        host, port = str(otel.get("service", "")), int(otel.get("port") or 0)
        http = otel.get("http")
        if http is None:
            proxy.notes.text(f"meshConfig.extensionProviders {name!r}: OpenTelemetry export over gRPC is not "
                             "implemented by pyproxy; add `http: {path: /v1/traces}` (OTLP/HTTP)")
            return None
        cluster = _service_cluster(proxy, host, port, name, "opentelemetry.service")
        if cluster is None:
            return None
        http_uri = {"uri": f"http://{host}:{port}{http.get('path') or '/v1/traces'}", "cluster": cluster,
                    "timeout": str(http.get("timeout") or "5s")}
        service: dict[str, Any] = {"http_uri": http_uri}
        headers = [{"header": {"key": str(h.get("name")), "value": str(h.get("value", ""))}}
                   for h in http.get("headers") or () if h.get("name")]
        if headers:
            service["request_headers_to_add"] = headers
        return {"name": "envoy.tracers.opentelemetry",
                "typed_config": {"@type": OTEL_CONFIG, "http_service": service, "service_name": service_name}}
    if "zipkin" in provider:
        z = provider["zipkin"] or {}
        if z.get("traceContextOption") not in (None, "USE_B3"):
            proxy.notes.text(f"meshConfig.extensionProviders {name!r}: zipkin.traceContextOption "
                             f"{z.get('traceContextOption')} is not translated (B3 only)")
        host, port = str(z.get("service", "")), int(z.get("port") or 0)
        cluster = _service_cluster(proxy, host, port, name, "zipkin.service")
        if cluster is None:
            return None
        return {"name": "envoy.tracers.zipkin", "typed_config": {
            "@type": ZIPKIN_CONFIG, "collector_cluster": cluster,
            "collector_endpoint": str(z.get("path") or "/api/v2/spans"),
            "trace_id_128bit": not bool(z.get("enable64bitTraceId")), "shared_span_context": False,
            "collector_endpoint_version": "HTTP_JSON", "collector_hostname": host}}
    kind = next((k for k in provider if k != "name"), "?")
    proxy.notes.text(f"meshConfig.extensionProviders {name!r}: {kind} is not a tracing provider pyproxy "
                     "implements (opentelemetry with http, zipkin)")
    return None


def hcm_tracing(proxy: Proxy, direction: str) -> dict | None:
    """The HCM `tracing` block istiod would set for this side, or None."""
    merged = merge_tracing(telemetries(proxy), mode_of(direction))
    config = proxy.mesh.config
    names = merged.providers or tuple(config.default_providers.get("tracing", ()))
    if not names:
        return None
    where = merged.provider_source or (merged.sources[-1] if merged.sources else None)
    if len(names) > 1 and where is not None:
        proxy.notes.add(where[0], f"{where[1]}.providers", f"only the first tracing provider is used ({names[0]}), "
                                                           "as istiod does")
    provider = find_provider(proxy, names[0])
    if provider is None:
        text = f"tracing provider {names[0]!r} is not defined in meshConfig.extensionProviders: no tracing"
        if where is not None:
            proxy.notes.add(where[0], f"{where[1]}.providers", text)
        else:
            proxy.notes.text(text)
        return None
    name, _ = canonical_service(proxy)
    sampling = merged.sampling
    if sampling is None:
        legacy = (config.default_config.get("tracing") or {}).get("sampling")
        sampling = float(legacy) if legacy is not None else DEFAULT_SAMPLING
    out: dict[str, Any] = {"client_sampling": {"value": 100.0}, "random_sampling": {"value": sampling},
                           "overall_sampling": {"value": 100.0}}
    tags = istio_tags(proxy) if merged.enable_istio_tags else []
    for tag in sorted(merged.custom_tags):
        built = custom_tag(proxy, tag, merged.custom_tags[tag], where)
        if built is not None:
            tags.append(built)
    if tags:
        out["custom_tags"] = tags
    if not merged.disable_span_reporting:
        tp = tracer_provider(proxy, provider, f"{name}.{proxy.namespace}")
        if tp is None:
            return None
        out["provider"] = tp
    out["max_path_tag_length"] = DEFAULT_MAX_PATH_TAG_LENGTH
    if direction == "gateway":
        out["spawn_upstream_span"] = True  # istiod: gateways get an upstream span (SpawnUpstreamSpanForGateway)
    return out


# --------------------------------------------------------------------------- access logging

# the providers istiod's telemetryAccessLog makes an access log of
ACCESS_LOG_KINDS = ("envoyFileAccessLog", "envoyHttpAls", "envoyTcpAls", "envoyOtelAls")


@dataclass
class LogChoice:
    disabled: bool = False
    expression: str = ""


def _provider_names(entry: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(p.get("name")) for p in entry.get("providers") or () if p.get("name"))


def merge_access_logging(proxy: Proxy, levels: list[Resource], mode: str) -> dict[str, LogChoice] | None:
    """provider name -> its state, as istiod's mergeLogs computes it; None when neither a Telemetry's
    `accessLogging` nor `meshConfig.defaultProviders.accessLogging` configures logging (the legacy switch applies).
    In scope: the providers named by this side's entries of the most specific Telemetry that names any (all its
    entries together), else the defaults. Then every entry of this side, in order, sets the providers it names (or
    the previous entry's, of either side; the defaults first) that are in scope: `disabled`, or enabled with the
    filter of the last entry of this side that named that provider."""
    defaults = tuple(str(n) for n in proxy.mesh.config.default_providers.get("accessLogging", ()))
    entries_by_level = [tel.spec["accessLogging"] for tel in levels if tel.spec.get("accessLogging")]
    if not entries_by_level:
        return {n: LogChoice() for n in defaults} if defaults else None
    in_scope, expressions = set(defaults), {}
    for entries in entries_by_level:
        named: set[str] = set()
        for entry in entries:
            if applies(entry, mode):
                names = _provider_names(entry)
                named.update(names)
                expressions.update(dict.fromkeys(names, str((entry.get("filter") or {}).get("expression") or "")))
        if named:
            in_scope = named
    chosen: dict[str, LogChoice] = {}
    parent = defaults
    for entries in entries_by_level:
        for entry in entries:
            parent = _provider_names(entry) or parent
            if applies(entry, mode):
                for name in parent:
                    if name in in_scope:
                        chosen[name] = (LogChoice(disabled=True) if entry.get("disabled")
                                        else LogChoice(expression=expressions.get(name, "")))
    return chosen


def _file_log(path: str, log_format: Mapping[str, Any] | None, expression: str) -> dict:
    """A Telemetry `envoyFileAccessLog` provider's logger: its own `logFormat` (labels or text), else Istio's
    default text format (accesslog.log_format, the same as meshConfig's)."""
    if log_format is not None and log_format.get("labels") is not None:
        fmt: dict[str, Any] = {"json_format": thaw(log_format["labels"])}
    elif log_format is not None and log_format.get("text"):  # istiod fileAccessLogFormat: a newline added
        fmt = accesslog.log_format("TEXT", str(log_format["text"]))
    else:
        fmt = accesslog.log_format("TEXT", "")
    log: dict[str, Any] = {"name": "envoy.access_loggers.file",
                           "typed_config": {"@type": FILE_ACCESS_LOG, "path": path, "log_format": fmt}}
    if expression:
        log["filter"] = {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel",
                                              "typed_config": {"@type": CEL_FILTER, "expression": expression}}}
    return log


def hcm_access_logs(proxy: Proxy, direction: str) -> list[dict]:
    """The HCM `access_log` list istiod would set for this side, one log per provider in name order (istiod sorts
    them). As istiod, the legacy `meshConfig.accessLogFile` applies when no access log provider is chosen for this
    side; a provider chosen but `disabled` turns logging off instead."""
    chosen = merge_access_logging(proxy, telemetries(proxy), mode_of(direction))
    defined = []
    for name, choice in sorted((chosen or {}).items()):
        provider = find_provider(proxy, name)
        if provider is None:
            proxy.notes.text(f"access log provider {name!r} is not defined in meshConfig.extensionProviders")
            continue
        kind = next((k for k in ACCESS_LOG_KINDS if k in provider), None)
        if kind is None:  # istiod's telemetryAccessLog makes no log of it (a tracing or metrics provider)
            proxy.notes.text(f"access log provider {name!r} is not an access log provider "
                             f"({', '.join(ACCESS_LOG_KINDS)})")
            continue
        defined.append((name, choice, provider, kind))
    if not defined:
        return accesslog.mesh_access_logs(proxy)  # the legacy mesh-wide switch, as tcp_proxy gets it
    out = []
    for name, choice, provider, kind in defined:
        if choice.disabled:
            continue
        if kind != "envoyFileAccessLog":
            proxy.notes.text(f"access log provider {name!r}: {kind} is not translated (envoyFileAccessLog is)")
            continue
        spec = provider["envoyFileAccessLog"] or {}
        if choice.expression:
            from pyproxy.observe.cel import CelError, compile_filter
            try:
                compile_filter(choice.expression)
            except CelError as e:  # Envoy would NACK the listener; istiod does not check CEL
                proxy.notes.text(f"access log provider {name!r}: filter {choice.expression!r} is not an "
                                 f"expression the proxy evaluates ({e}); this access log is left out")
                continue
        log = _file_log(str(spec.get("path") or "/dev/stdout"), spec.get("logFormat"), expression=choice.expression)
        if provider.get("name") == "envoy" and spec.get("logFormat") is None and not spec.get("omitEmptyValues"):
            config = proxy.mesh.config  # istiod FileAccessLogFromMeshConfig: the built-in one formats as meshConfig
            log["typed_config"]["log_format"] = accesslog.log_format(config.access_log_encoding,
                                                                     config.access_log_format)
        out.append(log)
    return out


# --------------------------------------------------------------------------- metrics

# Telemetry metric selectors -> Istio's stats.PluginConfig metric names (telemetry_metrics.go)
METRIC_NAMES = {"REQUEST_COUNT": "requests_total", "REQUEST_DURATION": "request_duration_milliseconds",
                "REQUEST_SIZE": "request_bytes", "RESPONSE_SIZE": "response_bytes",
                "TCP_OPENED_CONNECTIONS": "tcp_connections_opened_total",
                "TCP_CLOSED_CONNECTIONS": "tcp_connections_closed_total", "TCP_SENT_BYTES": "tcp_sent_bytes_total",
                "TCP_RECEIVED_BYTES": "tcp_received_bytes_total", "GRPC_REQUEST_MESSAGES": "request_messages_total",
                "GRPC_RESPONSE_MESSAGES": "response_messages_total"}
HTTP_METRIC_NAMES = ("requests_total", "request_duration_milliseconds", "request_bytes", "response_bytes")


@dataclass
class MetricOverride:
    drop: bool = False
    dimensions: dict[str, str] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)


def stats_config(proxy: Proxy, direction: str) -> tuple[bool, list[dict]]:
    """(istio.stats present?, its stats.PluginConfig `metrics`) for this side. Overrides merge root ->
    namespace -> workload in list order; ALL_METRICS expands to every metric; UPSERT sets a dimension to a CEL
    expression, REMOVE removes the tag; `disabled: true` on ALL_METRICS drops the filter until a later override
    on this side (of any metric) brings it back, as istiod's mergeMetrics; otherwise `disabled` sets each
    matched metric's `drop`.
    Only HTTP metrics go into the config (pyproxy reports no TCP or gRPC-message metrics yet: noted); a value
    that is not an expression pyproxy evaluates is noted and left out."""
    from pyproxy.observe.cel import CelError, compile_value

    mode = mode_of(direction)
    enabled = True
    merged: dict[str, MetricOverride] = {}
    for tel in telemetries(proxy):
        for i, entry in enumerate(tel.spec.get("metrics") or ()):
            for j, override in enumerate(entry.get("overrides") or ()):
                match = override.get("match") or {}
                if str(match.get("mode") or "CLIENT_AND_SERVER") not in ("CLIENT_AND_SERVER", mode):
                    continue
                path = f"spec.metrics[{i}].overrides[{j}]"
                metric = str(match.get("metric") or "ALL_METRICS")
                if metric == "ALL_METRICS" and not match.get("customMetric") and override.get("disabled"):
                    enabled = False  # istiod drops the filter on this side and skips the rest of this override
                    continue
                enabled = True  # istiod: any other override on this side turns the filter back on
                if match.get("customMetric"):
                    proxy.notes.add(tel, f"{path}.match.customMetric", "custom metrics are not translated")
                    continue
                names = HTTP_METRIC_NAMES if metric == "ALL_METRICS" else (METRIC_NAMES.get(metric),)
                if names[0] not in HTTP_METRIC_NAMES:
                    proxy.notes.add(tel, path, f"{metric} overrides are not translated (pyproxy reports the HTTP "
                                               "metrics only)")
                    continue
                for name in names:
                    o = merged.setdefault(name, MetricOverride())
                    if override.get("disabled") is not None:  # ALL_METRICS `disabled: false` re-enables each one
                        o.drop = bool(override["disabled"])
                    for tag, spec in (override.get("tagOverrides") or {}).items():
                        tag = str(tag)
                        if (spec or {}).get("operation") == "REMOVE":
                            o.dimensions.pop(tag, None)
                            if tag not in o.remove:
                                o.remove.append(tag)
                            continue
                        value = str((spec or {}).get("value") or "")
                        try:
                            compile_value(value)
                        except CelError as e:
                            proxy.notes.add(tel, f"{path}.tagOverrides.{tag}.value",
                                            f"{value!r} is not an expression pyproxy evaluates "
                                            f"({str(e).split(' (supported')[0]}); tag left out")
                            continue
                        o.dimensions[tag] = value
                        if tag in o.remove:
                            o.remove.remove(tag)
    out = []
    for name in HTTP_METRIC_NAMES:
        o = merged.get(name)
        if o is None or not (o.drop or o.dimensions or o.remove):
            continue
        entry: dict[str, Any] = {"name": name}
        if o.dimensions:
            entry["dimensions"] = dict(sorted(o.dimensions.items()))
        if o.remove:
            entry["tags_to_remove"] = list(o.remove)
        if o.drop:
            entry["drop"] = True
        out.append(entry)
    return enabled, out
