"""The Envoy v3 resources pyproxy understands, as frozen dataclasses.

Field names are Envoy's proto field names, so `static_resources.clusters[0].connect_timeout` in a bootstrap
YAML is `bootstrap.static_resources.clusters[0].connect_timeout` here. Defaults are Envoy's defaults (cited
where they matter). Every class is immutable (`frozen=True`, tuples for repeated fields): a whole snapshot
is built once and swapped in; a request keeps the snapshot it started with.

A field that is not declared here is *unsupported* and the decoder rejects it by path rather than silently
ignoring it. Oneofs are declared in `ONEOFS` (at most one member set) and `REQUIRED_ONEOFS` (exactly one).

Reference: envoy/api/envoy/config/{bootstrap,listener,route,cluster,endpoint,core}/v3/*.proto.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, TypeVar, dataclass_transform

from .schema import SIGNED, any_config, duration, enum, fld, struct, typed, wrapped

_C = TypeVar("_C", bound=type)


@dataclass_transform(frozen_default=True, kw_only_default=True)
def frozen(cls: _C) -> _C:
    """`dataclass(frozen=True, slots=True, kw_only=True)`, spelled so that mypy (and the compiled build's
    mypyc, scripts/build_compiled.py) sees the generated constructor and fields."""
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)

# ---------------------------------------------------------------- core


@frozen
class SocketAddress:
    address: str = fld(required=True)
    port_value: int = 0
    protocol: str = enum("TCP", "UDP")
    ipv4_compat: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port_value <= 65535:
            raise ValueError(f"port_value {self.port_value} out of range 0..65535")


@frozen
class Address:
    socket_address: SocketAddress | None = fld(required=True)


@frozen
class Percent:
    value: float = 0.0


@frozen
class FractionalPercent:
    """envoy.type.v3.FractionalPercent: numerator / denominator (HUNDRED, TEN_THOUSAND, MILLION)."""

    numerator: int = 0
    denominator: str = enum("HUNDRED", "TEN_THOUSAND", "MILLION")

    @property
    def fraction(self) -> float:
        return self.numerator / {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}[self.denominator]


@frozen
class RuntimeFractionalPercent:
    default_value: FractionalPercent | None = None
    runtime_key: str = ""


@frozen
class HeaderValue:
    key: str = fld(required=True)
    value: str = ""


@frozen
class HeaderValueOption:
    """A header to add. `append_action` (v3) supersedes the deprecated `append` (BoolValue, default true)."""

    header: HeaderValue | None = fld(required=True)
    append: bool | None = wrapped()
    append_action: str = enum(
        "APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS"
    )
    keep_empty_value: bool = False

    @property
    def action(self) -> str:
        if self.append is False and self.append_action == "APPEND_IF_EXISTS_OR_ADD":
            return "OVERWRITE_IF_EXISTS_OR_ADD"
        return self.append_action


@frozen
class DataSource:
    filename: str | None = None
    inline_bytes: str | None = None  # base64 in JSON
    inline_string: str | None = None
    environment_variable: str | None = None
    ONEOFS = (("filename", "inline_bytes", "inline_string", "environment_variable"),)


@frozen
class TypedExtensionConfig:
    """A named extension with a `typed_config` (Any)."""

    name: str = ""
    typed_config: Any = any_config()


@frozen
class Node:
    id: str = ""
    cluster: str = ""
    metadata: Mapping[str, Any] | None = struct()
    locality: Mapping[str, Any] | None = struct()


@frozen
class RegexMatcher:
    """envoy.type.matcher.v3.RegexMatcher (RE2 in Envoy; Python `re` here, see docs/deviations)."""

    regex: str = fld(required=True)
    google_re2: Mapping[str, Any] | None = struct()

    def __post_init__(self) -> None:
        import re

        re.compile(self.regex)


@frozen
class StringMatcher:
    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    contains: str | None = None
    safe_regex: RegexMatcher | None = None
    ignore_case: bool = False
    REQUIRED_ONEOFS = (("exact", "prefix", "suffix", "contains", "safe_regex"),)


@frozen
class Int64Range:
    """envoy.type.v3.Int64Range: [start, end), int64 (a header range_match of [-10, 0) is valid)."""

    start: int = fld(0, kind=SIGNED)
    end: int = fld(0, kind=SIGNED)


# ---------------------------------------------------------------- access log


@frozen
class SubstitutionFormatString:
    """How an access-log line is formatted: text with %COMMAND% operators, or a JSON object of them."""

    text_format: str | None = None
    text_format_source: DataSource | None = None
    json_format: Mapping[str, Any] | None = struct()
    omit_empty_values: bool = False
    content_type: str = ""
    ONEOFS = (("text_format", "text_format_source", "json_format"),)


@typed("envoy.extensions.access_loggers.file.v3.FileAccessLog")
@frozen
class FileAccessLog:
    path: str = fld(required=True)
    log_format: SubstitutionFormatString | None = None
    format: str | None = None  # deprecated text form
    json_format: Mapping[str, Any] | None = struct()  # deprecated JSON form
    ONEOFS = (("log_format", "format", "json_format"),)


@typed("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog")
@frozen
class StdoutAccessLog:
    log_format: SubstitutionFormatString | None = None


@typed("envoy.extensions.access_loggers.stream.v3.StderrAccessLog")
@frozen
class StderrAccessLog:
    log_format: SubstitutionFormatString | None = None


@typed("envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter")
@frozen
class ExpressionFilter:
    """`envoy.access_loggers.extension_filters.cel`: log only when the CEL expression is true (pyproxy evaluates
    the subset in pyproxy/observe/cel.py; istiod emits this for a Telemetry `accessLogging[].filter`)."""

    expression: str = fld(required=True)


@frozen
class ExtensionFilter:
    name: str = ""
    typed_config: Any = any_config(required=True)


@frozen
class AccessLogFilter:
    """envoy.config.accesslog.v3.AccessLogFilter; only `extension_filter` (CEL) is implemented, any other kind
    is refused by name by the decoder."""

    extension_filter: ExtensionFilter | None = None


@frozen
class AccessLog:
    name: str = ""
    filter: AccessLogFilter | None = None
    typed_config: Any = any_config(required=True)


# ---------------------------------------------------------------- routes


@frozen
class HeaderMatcher:
    """envoy.config.route.v3.HeaderMatcher. Exactly one way to match; `invert_match` flips it."""

    name: str = fld(required=True)
    exact_match: str | None = None
    safe_regex_match: RegexMatcher | None = None
    range_match: Int64Range | None = None
    present_match: bool | None = None
    prefix_match: str | None = None
    suffix_match: str | None = None
    contains_match: str | None = None
    string_match: StringMatcher | None = None
    invert_match: bool = False
    treat_missing_header_as_empty: bool = False
    ONEOFS = (
        (
            "exact_match",
            "safe_regex_match",
            "range_match",
            "present_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "string_match",
        ),
    )


@frozen
class QueryParameterMatcher:
    name: str = fld(required=True)
    string_match: StringMatcher | None = None
    present_match: bool | None = None
    ONEOFS = (("string_match", "present_match"),)


@frozen
class RouteMatch:
    prefix: str | None = None
    path: str | None = None
    safe_regex: RegexMatcher | None = None
    path_separated_prefix: str | None = None
    case_sensitive: bool | None = wrapped()  # default true
    headers: tuple[HeaderMatcher, ...] = ()
    query_parameters: tuple[QueryParameterMatcher, ...] = ()
    runtime_fraction: RuntimeFractionalPercent | None = None
    dynamic_metadata: tuple[MetadataMatcher, ...] = ()  # read after the filters ran (istiod: JWT claim routing)
    REQUIRED_ONEOFS = (("prefix", "path", "safe_regex", "path_separated_prefix"),)


def check_per_filter_configs(configs: Mapping[str, Any] | None) -> None:
    """Rules Envoy applies to a `typed_per_filter_config` when it loads the route, whatever the chain holds:
    a LocalRateLimit there must have a `token_bucket` (local_ratelimit.cc FilterConfig, `per_route`)."""
    for value in (configs or {}).values():
        if isinstance(value, LocalRateLimit) and value.token_bucket is None:
            raise ValueError("local rate limit token bucket must be set for per filter configs")


@frozen
class ClusterWeight:
    name: str = fld(required=True)
    weight: int = wrapped(0)
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()
    typed_per_filter_config: Mapping[str, Any] | None = fld(kind="any_map")

    def __post_init__(self) -> None:
        check_per_filter_configs(self.typed_per_filter_config)


@frozen
class WeightedCluster:
    clusters: tuple[ClusterWeight, ...] = ()
    total_weight: int | None = wrapped()  # deprecated: Envoy now uses the sum of weights
    runtime_key_prefix: str = ""


@frozen
class RegexMatchAndSubstitute:
    pattern: RegexMatcher | None = fld(required=True)
    substitution: str = ""


@frozen
class RetryBackOff:
    """Envoy default: base 25 ms, max 10 × base; jittered exponential (router.proto RetryBackOff)."""

    base_interval: float | None = duration(required=True)
    max_interval: float | None = duration()


@frozen
class RetryPolicy:
    """envoy.config.route.v3.RetryPolicy."""

    retry_on: str = ""
    num_retries: int = wrapped(1)  # Envoy default: 1
    per_try_timeout: float | None = duration()
    per_try_idle_timeout: float | None = duration()
    retry_host_predicate: tuple[TypedExtensionConfig, ...] = ()
    retry_priority: TypedExtensionConfig | None = None
    host_selection_retry_max_attempts: int = 1
    retriable_status_codes: tuple[int, ...] = ()
    retry_back_off: RetryBackOff | None = None
    retriable_headers: tuple[HeaderMatcher, ...] = ()
    retriable_request_headers: tuple[HeaderMatcher, ...] = ()


@typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate")
@frozen
class PreviousHostsPredicate:
    """`retry_host_predicate` envoy.retry_host_predicates.previous_hosts (no fields): a retry avoids hosts
    already tried (pyproxy.routing.retry reads the predicate by name)."""


@frozen
class RequestMirrorPolicy:
    cluster: str = fld(required=True)
    runtime_fraction: RuntimeFractionalPercent | None = None
    trace_sampled: bool | None = wrapped()


@frozen
class HashPolicyHeader:
    header_name: str = fld(required=True)


@frozen
class HashPolicyCookie:
    name: str = fld(required=True)
    ttl: float | None = duration()
    path: str = ""


@frozen
class HashPolicyConnectionProperties:
    source_ip: bool = False


@frozen
class HashPolicyQueryParameter:
    name: str = fld(required=True)


@frozen
class HashPolicy:
    header: HashPolicyHeader | None = None
    cookie: HashPolicyCookie | None = None
    connection_properties: HashPolicyConnectionProperties | None = None
    query_parameter: HashPolicyQueryParameter | None = None
    terminal: bool = False
    REQUIRED_ONEOFS = (("header", "cookie", "connection_properties", "query_parameter"),)


@frozen
class UpgradeConfig:
    upgrade_type: str = fld(required=True)
    enabled: bool | None = wrapped()


@frozen
class MaxStreamDuration:
    max_stream_duration: float | None = duration()
    grpc_timeout_header_max: float | None = duration()
    grpc_timeout_header_offset: float | None = duration()


@frozen
class GenericKeyAction:
    """RateLimit.Action.GenericKey: the entry (`descriptor_key` or "generic_key", `descriptor_value`)."""

    descriptor_value: str = fld(required=True)
    descriptor_key: str = ""


@frozen
class HeaderValueMatchAction:
    """RateLimit.Action.HeaderValueMatch: the entry (`descriptor_key` or "header_match", `descriptor_value`) when
    the `headers` all match (or, with `expect_match: false`, when they do not)."""

    descriptor_value: str = fld(required=True)
    descriptor_key: str = ""
    expect_match: bool | None = wrapped()  # default true
    headers: tuple[HeaderMatcher, ...] = fld((), required=True)


@frozen
class RequestHeadersAction:
    """RateLimit.Action.RequestHeaders: the entry (`descriptor_key`, the header's value); an absent header drops
    the whole descriptor unless `skip_if_absent`."""

    header_name: str = fld(required=True)
    descriptor_key: str = fld(required=True)
    skip_if_absent: bool = False


@frozen
class RateLimitAction:
    """envoy.config.route.v3.RateLimit.Action: the kinds pyproxy computes (others are refused by name)."""

    generic_key: GenericKeyAction | None = None
    header_value_match: HeaderValueMatchAction | None = None
    request_headers: RequestHeadersAction | None = None
    remote_address: Mapping[str, Any] | None = struct()
    destination_cluster: Mapping[str, Any] | None = struct()
    source_cluster: Mapping[str, Any] | None = struct()
    REQUIRED_ONEOFS = (("generic_key", "header_value_match", "request_headers", "remote_address",
                        "destination_cluster", "source_cluster"),)


@frozen
class RateLimit:
    """envoy.config.route.v3.RateLimit: one descriptor, built from its `actions` in order (route and virtual host
    `rate_limits`, or the local rate limit filter's own `rate_limits`)."""

    stage: int | None = wrapped()  # default 0
    disable_key: str = ""
    actions: tuple[RateLimitAction, ...] = fld((), required=True)


@frozen
class RouteAction:
    """envoy.config.route.v3.RouteAction: where a matched request goes and how."""

    cluster: str | None = None
    cluster_header: str | None = None
    weighted_clusters: WeightedCluster | None = None
    cluster_not_found_response_code: str = enum("SERVICE_UNAVAILABLE", "NOT_FOUND", "INTERNAL_SERVER_ERROR")
    prefix_rewrite: str = ""
    regex_rewrite: RegexMatchAndSubstitute | None = None
    host_rewrite_literal: str | None = None
    auto_host_rewrite: bool | None = wrapped()
    timeout: float | None = duration()  # Envoy default 15 s; 0 disables
    idle_timeout: float | None = duration()
    retry_policy: RetryPolicy | None = None
    request_mirror_policies: tuple[RequestMirrorPolicy, ...] = ()
    hash_policy: tuple[HashPolicy, ...] = ()
    upgrade_configs: tuple[UpgradeConfig, ...] = ()
    max_stream_duration: MaxStreamDuration | None = None
    max_grpc_timeout: float | None = duration()  # deprecated (max_stream_duration); istiod still sets it
    grpc_timeout_offset: float | None = duration()  # deprecated (max_stream_duration)
    priority: str = enum("DEFAULT", "HIGH")
    rate_limits: tuple[RateLimit, ...] = ()  # read by the local rate limit's descriptors
    include_vh_rate_limits: bool | None = wrapped()
    REQUIRED_ONEOFS = (("cluster", "cluster_header", "weighted_clusters"),)
    ONEOFS = (("host_rewrite_literal", "auto_host_rewrite"),)

    @property
    def effective_timeout(self) -> float:
        """Envoy: 15 s when unset; 0 means no timeout (returned as 0.0)."""
        return 15.0 if self.timeout is None else self.timeout


@frozen
class RedirectAction:
    https_redirect: bool | None = None
    scheme_redirect: str | None = None
    host_redirect: str = ""
    port_redirect: int = 0
    path_redirect: str | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: RegexMatchAndSubstitute | None = None
    response_code: str = enum("MOVED_PERMANENTLY", "FOUND", "SEE_OTHER", "TEMPORARY_REDIRECT", "PERMANENT_REDIRECT")
    strip_query: bool = False
    ONEOFS = (("https_redirect", "scheme_redirect"), ("path_redirect", "prefix_rewrite", "regex_rewrite"))

    STATUS = {
        "MOVED_PERMANENTLY": 301,
        "FOUND": 302,
        "SEE_OTHER": 303,
        "TEMPORARY_REDIRECT": 307,
        "PERMANENT_REDIRECT": 308,
    }


@frozen
class DirectResponseAction:
    status: int = fld(required=True)
    body: DataSource | None = None

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} out of range 100..599")


@frozen
class Decorator:
    operation: str = fld(required=True)
    propagate: bool | None = wrapped()


@frozen
class Route:
    name: str = ""
    match: RouteMatch | None = fld(required=True)
    route: RouteAction | None = None
    redirect: RedirectAction | None = None
    direct_response: DirectResponseAction | None = None
    decorator: Decorator | None = None
    tracing: RouteTracing | None = None
    metadata: Mapping[str, Any] | None = struct()
    typed_per_filter_config: Mapping[str, Any] | None = fld(kind="any_map")
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()
    REQUIRED_ONEOFS = (("route", "redirect", "direct_response"),)

    def __post_init__(self) -> None:
        check_per_filter_configs(self.typed_per_filter_config)


@typed("envoy.config.route.v3.VirtualHost")  # a VHDS resource (pyproxy.xds.vhds)
@frozen
class VirtualHost:
    name: str = fld(required=True)
    domains: tuple[str, ...] = fld(required=True)
    routes: tuple[Route, ...] = ()
    require_tls: str = enum("NONE", "EXTERNAL_ONLY", "ALL")
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()
    retry_policy: RetryPolicy | None = None
    typed_per_filter_config: Mapping[str, Any] | None = fld(kind="any_map")
    rate_limits: tuple[RateLimit, ...] = ()  # read by the local rate limit's descriptors
    include_request_attempt_count: bool = False
    include_attempt_count_in_response: bool = False

    def __post_init__(self) -> None:
        check_per_filter_configs(self.typed_per_filter_config)


@typed("envoy.config.route.v3.RouteConfiguration")
@frozen
class RouteConfiguration:
    name: str = ""
    virtual_hosts: tuple[VirtualHost, ...] = ()
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()
    internal_only_headers: tuple[str, ...] = ()
    validate_clusters: bool | None = wrapped()
    most_specific_header_mutations_wins: bool = False  # default: route, then vhost, then this level
    ignore_port_in_host_matching: bool = False  # default: the Host header is matched with its port
    vhds: Vhds | None = None  # its virtual hosts (also) come over VHDS: pyproxy.xds assembles them in


@frozen
class Vhds:
    """RouteConfiguration.vhds: where the virtual hosts come from (envoy.config.route.v3.Vhds)."""

    config_source: ConfigSource | None = fld(required=True)


# ---------------------------------------------------------------- HTTP connection manager


@frozen
class InternalAddressConfig:
    """Which downstream addresses make a request internal (HCM `internal_address_config`)."""

    unix_sockets: bool = False
    cidr_ranges: tuple["CidrRange", ...] = ()


@frozen
class ConfigSource:
    ads: Mapping[str, Any] | None = struct()
    api_config_source: Mapping[str, Any] | None = struct()
    path: str | None = None
    resource_api_version: str = enum("AUTO", "V2", "V3")
    initial_fetch_timeout: float | None = duration()


@frozen
class Rds:
    route_config_name: str = fld(required=True)
    config_source: ConfigSource | None = None


@frozen
class HttpProtocolOptions:
    """envoy.config.core.v3.Http1ProtocolOptions (the HCM's `http_protocol_options`)."""

    accept_http_10: bool = False
    default_host_for_http_10: str = ""
    allow_absolute_url: bool | None = wrapped()
    allow_chunked_length: bool = False
    enable_trailers: bool = False


@frozen
class CommonHttpProtocolOptions:
    """envoy.config.core.v3.HttpProtocolOptions. `max_headers_count` default 100 (Envoy)."""

    idle_timeout: float | None = duration()  # downstream default 1 h (HCM), upstream default 1 h
    max_connection_duration: float | None = duration()
    max_headers_count: int | None = wrapped()
    max_stream_duration: float | None = duration()
    headers_with_underscores_action: str = enum("ALLOW", "REJECT_REQUEST", "DROP_HEADER")
    max_requests_per_connection: int | None = wrapped()


@frozen
class HttpFilter:
    name: str = fld(required=True)
    typed_config: Any = any_config()
    is_optional: bool = False


@frozen
class SetCurrentClientCertDetails:
    """HCM `set_current_client_cert_details`: which parts of the client certificate go into the
    x-forwarded-client-cert element this proxy adds (APPEND_FORWARD / SANITIZE_SET)."""

    subject: bool | None = wrapped()
    cert: bool = False
    chain: bool = False
    dns: bool = False
    uri: bool = False


# ---------------------------------------------------------------- tracing (HCM `tracing`, envoy.config.trace.v3)


@frozen
class HttpUri:
    """envoy.config.core.v3.HttpUri: where a tracer posts spans, or a remote JWKS lives (`cluster` names the
    cluster Envoy reaches it through)."""

    uri: str = fld(required=True)
    cluster: str = ""
    timeout: float | None = duration(required=True)


@frozen
class HttpService:
    """envoy.config.core.v3.HttpService: OTLP/HTTP export target of the OpenTelemetry tracer."""

    http_uri: HttpUri | None = fld(required=True)
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()


@typed("envoy.config.trace.v3.OpenTelemetryConfig")
@frozen
class OpenTelemetryConfig:
    """`envoy.tracers.opentelemetry`. Only `http_service` (OTLP/HTTP protobuf) is implemented: a
    `grpc_service` is refused by name rather than ignored."""

    http_service: HttpService | None = None
    service_name: str = ""
    max_cache_size: int | None = wrapped()


@typed("envoy.config.trace.v3.ZipkinConfig")
@frozen
class ZipkinConfig:
    """`envoy.tracers.zipkin`: Zipkin JSON v2 (`HTTP_JSON`) posted to `collector_cluster` + `collector_endpoint`."""

    collector_cluster: str = fld(required=True)
    collector_endpoint: str = fld(required=True)
    trace_id_128bit: bool = False
    shared_span_context: bool | None = wrapped()
    collector_endpoint_version: str = enum("DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE", "HTTP_JSON", "HTTP_PROTO", "GRPC")
    collector_hostname: str = ""
    split_spans_for_request: bool = False


@frozen
class TracingProvider:
    """envoy.config.trace.v3.Tracing.Http: the tracer's extension name and its typed config."""

    name: str = fld(required=True)
    typed_config: Any = any_config()


@frozen
class CustomTagLiteral:
    value: str = fld(required=True)


@frozen
class CustomTagEnvironment:
    name: str = fld(required=True)
    default_value: str = ""


@frozen
class CustomTagHeader:
    name: str = fld(required=True)
    default_value: str = ""


@frozen
class CustomTag:
    """envoy.type.tracing.v3.CustomTag: a span tag from a literal, an environment variable or a request header."""

    tag: str = fld(required=True)
    literal: CustomTagLiteral | None = None
    environment: CustomTagEnvironment | None = None
    request_header: CustomTagHeader | None = None
    REQUIRED_ONEOFS = (("literal", "environment", "request_header"),)


@frozen
class RouteTracing:
    """envoy.config.route.v3.Tracing: for requests this route matches, its own sampling (each fraction unset
    means 100 %, Envoy's route default) replaces the HCM's, and its custom tags are added to the HCM's (a tag
    of the same name replaces the HCM's)."""

    client_sampling: FractionalPercent | None = None
    random_sampling: FractionalPercent | None = None
    overall_sampling: FractionalPercent | None = None
    custom_tags: tuple[CustomTag, ...] = ()


@frozen
class HcmTracing:
    """HttpConnectionManager.Tracing. Sampling percentages default to 100 % (Envoy); Istio sends its own."""

    client_sampling: Percent | None = None
    random_sampling: Percent | None = None
    overall_sampling: Percent | None = None
    verbose: bool = False
    max_path_tag_length: int | None = wrapped()  # default 256
    custom_tags: tuple[CustomTag, ...] = ()
    provider: TracingProvider | None = None
    spawn_upstream_span: bool | None = wrapped()


@typed("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager")
@frozen
class HttpConnectionManager:
    """The HTTP connection manager network filter: codec, limits, route table, HTTP filters, access log."""

    stat_prefix: str = fld(required=True)
    codec_type: str = enum("AUTO", "HTTP1", "HTTP2", "HTTP3")
    route_config: RouteConfiguration | None = None
    rds: Rds | None = None
    http_filters: tuple[HttpFilter, ...] = ()
    access_log: tuple[AccessLog, ...] = ()
    tracing: HcmTracing | None = None
    common_http_protocol_options: CommonHttpProtocolOptions | None = None
    http_protocol_options: HttpProtocolOptions | None = None
    max_request_headers_kb: int | None = wrapped()  # default 60, max 8192
    request_headers_timeout: float | None = duration()  # default: disabled
    stream_idle_timeout: float | None = duration()  # default 5 min
    request_timeout: float | None = duration()  # default: disabled
    drain_timeout: float | None = duration()
    delayed_close_timeout: float | None = duration()
    use_remote_address: bool | None = wrapped()
    internal_address_config: InternalAddressConfig | None = None  # default: no address is internal (Envoy 1.40)
    xff_num_trusted_hops: int = 0
    skip_xff_append: bool = False
    via: str = ""
    generate_request_id: bool | None = wrapped()  # default true
    preserve_external_request_id: bool = False
    always_set_request_id_in_response: bool = False
    server_name: str = ""
    server_header_transformation: str = enum("OVERWRITE", "APPEND_IF_ABSENT", "PASS_THROUGH")
    normalize_path: bool | None = wrapped()
    merge_slashes: bool = False
    path_with_escaped_slashes_action: str = enum(
        "IMPLEMENTATION_SPECIFIC_DEFAULT", "KEEP_UNCHANGED", "REJECT_REQUEST", "UNESCAPE_AND_REDIRECT",
        "UNESCAPE_AND_FORWARD")
    upgrade_configs: tuple[UpgradeConfig, ...] = ()
    forward_client_cert_details: str = enum(
        "SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET", "ALWAYS_FORWARD_ONLY"
    )
    set_current_client_cert_details: SetCurrentClientCertDetails | None = None
    REQUIRED_ONEOFS = (("route_config", "rds"),)

    def __post_init__(self) -> None:
        kb = self.max_request_headers_kb
        if kb is not None and not 1 <= kb <= 8192:
            raise ValueError("max_request_headers_kb must be in 1..8192")

    @property
    def header_limit_bytes(self) -> int:
        return (self.max_request_headers_kb or 60) * 1024

    @property
    def max_headers_count(self) -> int:
        opts = self.common_http_protocol_options
        return (opts.max_headers_count if opts and opts.max_headers_count else None) or 100


@frozen
class TcpClusterWeight:
    """TcpProxy.WeightedCluster.ClusterWeight (`weight` is a plain uint32 here, not a wrapper)."""

    name: str = fld(required=True)
    weight: int = 0


@frozen
class TcpWeightedCluster:
    clusters: tuple[TcpClusterWeight, ...] = fld((), required=True)


@typed("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy")
@frozen
class TcpProxy:
    """The TCP proxy network filter (pyproxy.tcp): bytes both ways to a host of `cluster` (or one of
    `weighted_clusters`, picked per connection). `idle_timeout` defaults to 1 h; 0 disables it."""

    stat_prefix: str = fld(required=True)
    cluster: str | None = None
    weighted_clusters: TcpWeightedCluster | None = None
    idle_timeout: float | None = duration()
    access_log: tuple[AccessLog, ...] = ()
    max_connect_attempts: int | None = wrapped()  # default 1, at least 1
    REQUIRED_ONEOFS = (("cluster", "weighted_clusters"),)

    def __post_init__(self) -> None:
        if self.max_connect_attempts is not None and self.max_connect_attempts < 1:
            raise ValueError("max_connect_attempts must be at least 1")
        if self.weighted_clusters is not None:
            if any(w.weight < 1 for w in self.weighted_clusters.clusters):
                raise ValueError("weighted_clusters: every weight must be at least 1")

    @property
    def effective_idle_timeout(self) -> float:
        return 3600.0 if self.idle_timeout is None else self.idle_timeout


@typed("envoy.extensions.filters.http.router.v3.Router")
@frozen
class Router:
    dynamic_stats: bool | None = wrapped()
    start_child_span: bool = False
    suppress_envoy_headers: bool = False
    respect_expected_rq_timeout: bool = False
    suppress_grpc_request_failure_code_stats: bool = False


@frozen
class FaultDelay:
    fixed_delay: float | None = duration()
    header_delay: Mapping[str, Any] | None = struct()
    percentage: FractionalPercent | None = None
    REQUIRED_ONEOFS = (("fixed_delay", "header_delay"),)


@frozen
class FaultAbort:
    http_status: int | None = None
    grpc_status: int | None = None
    header_abort: Mapping[str, Any] | None = struct()
    percentage: FractionalPercent | None = None
    REQUIRED_ONEOFS = (("http_status", "grpc_status", "header_abort"),)


@typed("envoy.extensions.filters.http.fault.v3.HTTPFault")
@frozen
class HTTPFault:
    """envoy.filters.http.fault: inject delays (flag DI) and aborts (flag FI)."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    upstream_cluster: str = ""
    headers: tuple[HeaderMatcher, ...] = ()
    downstream_nodes: tuple[str, ...] = ()
    max_active_faults: int | None = wrapped()


@typed("udpa.type.v1.TypedStruct")
@frozen
class TypedStruct:
    """udpa.type.v1.TypedStruct: an extension's config as a Struct, named by `type_url`. Istio's stats filter
    (`istio.stats`, `type.googleapis.com/stats.PluginConfig`) comes this way: Envoy's protos do not carry it."""

    type_url: str = ""
    value: Mapping[str, Any] | None = struct()


@frozen
class TokenBucket:
    """envoy.type.v3.TokenBucket: `max_tokens` (> 0), refilled by `tokens_per_fill` (default 1) every
    `fill_interval` (Envoy 1.40 refills continuously at that rate: pyproxy.filters.local_ratelimit_logic)."""

    max_tokens: int = 0
    tokens_per_fill: int | None = wrapped()
    fill_interval: float | None = duration(required=True)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.tokens_per_fill is not None and self.tokens_per_fill < 1:
            raise ValueError("tokens_per_fill must be at least 1")
        if self.fill_interval is not None and self.fill_interval < 0.05:
            raise ValueError("fill_interval must be at least 50ms (Envoy: local rate limit token bucket fill timer "
                             "must be >= 50ms)")


@frozen
class HttpStatus:
    """envoy.type.v3.HttpStatus: `code`, a StatusCode enum, by number (429) or name (TooManyRequests)."""

    code: Any = None


@frozen
class DescriptorEntry:
    """RateLimitDescriptor.Entry; an empty `value` in a configured descriptor matches any value (Envoy's dynamic
    descriptors: one bucket per distinct value, at most `max_dynamic_descriptors`, least recently used dropped)."""

    key: str = fld(required=True)
    value: str = ""


@frozen
class LocalRateLimitDescriptor:
    entries: tuple[DescriptorEntry, ...] = fld((), required=True)
    token_bucket: TokenBucket | None = fld(required=True)


@typed("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit")
@frozen
class LocalRateLimit:
    """envoy.filters.http.local_ratelimit, in the chain and per route / virtual host (pyproxy.filters.local_ratelimit).
    Not modelled, so refused by name when set: `local_cluster_rate_limit`."""

    stat_prefix: str = fld(required=True)
    status: HttpStatus | None = None
    token_bucket: TokenBucket | None = None
    filter_enabled: RuntimeFractionalPercent | None = None  # absent: disabled (Envoy)
    filter_enforced: RuntimeFractionalPercent | None = None  # absent: not enforced (Envoy)
    request_headers_to_add_when_not_enforced: tuple[HeaderValueOption, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    stage: int = 0
    local_rate_limit_per_downstream_connection: bool = False
    enable_x_ratelimit_headers: str = enum("OFF", "DRAFT_VERSION_03")
    vh_rate_limits: str = enum("OVERRIDE", "INCLUDE", "IGNORE")
    always_consume_default_token_bucket: bool | None = wrapped()
    rate_limited_as_resource_exhausted: bool = False
    max_dynamic_descriptors: int | None = wrapped()
    descriptors: tuple[LocalRateLimitDescriptor, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()

    def __post_init__(self) -> None:
        keys = [tuple((e.key, e.value) for e in d.entries) for d in self.descriptors]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate descriptor in the local rate descriptor")
        if len(self.response_headers_to_add) > 10 or len(self.request_headers_to_add_when_not_enforced) > 10:
            raise ValueError("at most 10 headers in response_headers_to_add / request_headers_to_add_when_not_enforced")
        if self.stage > 10:
            raise ValueError("stage must be at most 10")


@typed("envoy.extensions.filters.http.cors.v3.Cors")
@frozen
class Cors:
    """envoy.filters.http.cors in the HTTP filter chain (no fields); the policy is per route (CorsPolicy)."""


@typed("envoy.extensions.filters.http.cors.v3.CorsPolicy")
@frozen
class CorsPolicy:
    """`typed_per_filter_config["envoy.filters.http.cors"]` of a virtual host or route (cors.v3.CorsPolicy)."""

    allow_origin_string_match: tuple[StringMatcher, ...] = ()
    allow_methods: str = ""
    allow_headers: str = ""
    expose_headers: str = ""
    max_age: str = ""  # seconds, as a string (Envoy's field type)
    allow_credentials: bool | None = wrapped()
    filter_enabled: RuntimeFractionalPercent | None = None  # default 100 %
    shadow_enabled: RuntimeFractionalPercent | None = None
    allow_private_network_access: bool | None = wrapped()
    forward_not_matching_preflights: bool | None = wrapped()  # default true


# ---------------------------------------------------------------- RBAC (envoy.filters.http.rbac)
# envoy/config/rbac/v3/rbac.proto and envoy/extensions/filters/http/rbac/v3/rbac.proto: evaluated by
# pyproxy.filters.rbac_logic (pure) behind pyproxy.filters.rbac; docs/authz.md.


@frozen
class PathMatcher:
    """envoy.type.matcher.v3.PathMatcher: a StringMatcher on the path without query and fragment."""

    path: StringMatcher | None = fld(required=True)


@frozen
class PathSegment:
    key: str = fld(required=True)


@frozen
class ListMatcher:
    """envoy.type.matcher.v3.ListMatcher: some element of a list value matches `one_of`."""

    one_of: ValueMatcher | None = fld(required=True)


@frozen
class OrMatcher:
    """envoy.type.matcher.v3.OrMatcher: any of `value_matchers` (istiod's JWT claim matchers: list OR string)."""

    value_matchers: tuple[ValueMatcher, ...] = ()


@frozen
class ValueMatcher:
    """envoy.type.matcher.v3.ValueMatcher (the subset RBAC and route metadata matchers use)."""

    string_match: StringMatcher | None = None
    present_match: bool | None = None
    bool_match: bool | None = None
    list_match: ListMatcher | None = None
    or_match: OrMatcher | None = None
    REQUIRED_ONEOFS = (("string_match", "present_match", "bool_match", "list_match", "or_match"),)


@frozen
class MetadataMatcher:
    """envoy.type.matcher.v3.MetadataMatcher: dynamic metadata `filter` -> `path` keys -> `value`."""

    filter: str = fld(required=True)
    path: tuple[PathSegment, ...] = ()
    value: ValueMatcher | None = fld(required=True)
    invert: bool = False


@frozen
class Int32Range:
    start: int = 0
    end: int = 0


@frozen
class PermissionSet:
    rules: tuple[Permission, ...] = ()


@frozen
class Permission:
    """envoy.config.rbac.v3.Permission: exactly one rule (what the request is for)."""

    and_rules: PermissionSet | None = None
    or_rules: PermissionSet | None = None
    any: bool | None = None
    header: HeaderMatcher | None = None
    url_path: PathMatcher | None = None
    destination_ip: CidrRange | None = None
    destination_port: int | None = None
    destination_port_range: Int32Range | None = None
    metadata: MetadataMatcher | None = None
    not_rule: Permission | None = None
    requested_server_name: StringMatcher | None = None
    REQUIRED_ONEOFS = (("and_rules", "or_rules", "any", "header", "url_path", "destination_ip", "destination_port",
                        "destination_port_range", "metadata", "not_rule", "requested_server_name"),)


@frozen
class PrincipalSet:
    ids: tuple[Principal, ...] = ()


@frozen
class Authenticated:
    """The peer's certificate: URI SANs, then DNS SANs, then the subject, against `principal_name`
    (unset: any authenticated peer)."""

    principal_name: StringMatcher | None = None


@frozen
class Principal:
    """envoy.config.rbac.v3.Principal: exactly one identifier (who sends the request)."""

    and_ids: PrincipalSet | None = None
    or_ids: PrincipalSet | None = None
    any: bool | None = None
    authenticated: Authenticated | None = None
    source_ip: CidrRange | None = None
    direct_remote_ip: CidrRange | None = None
    remote_ip: CidrRange | None = None
    header: HeaderMatcher | None = None
    url_path: PathMatcher | None = None
    metadata: MetadataMatcher | None = None
    not_id: Principal | None = None
    REQUIRED_ONEOFS = (("and_ids", "or_ids", "any", "authenticated", "source_ip", "direct_remote_ip", "remote_ip",
                        "header", "url_path", "metadata", "not_id"),)


@frozen
class Policy:
    """A policy matches when ANY permission and ANY principal match."""

    permissions: tuple[Permission, ...] = fld((), required=True)
    principals: tuple[Principal, ...] = fld((), required=True)


@frozen
class RBACRules:
    """envoy.config.rbac.v3.RBAC: `action` applied when a policy matches (LOG only marks the request)."""

    action: str = enum("ALLOW", "DENY", "LOG")
    policies: Mapping[str, Policy] | None = fld(kind="message_map")


@typed("envoy.extensions.filters.http.rbac.v3.RBAC")
@frozen
class RBAC:
    """envoy.filters.http.rbac: enforced `rules` and logged-only `shadow_rules` (Istio's dry-run)."""

    rules: RBACRules | None = None
    rules_stat_prefix: str = ""
    shadow_rules: RBACRules | None = None
    shadow_rules_stat_prefix: str = ""
    track_per_rule_stats: bool = False


@typed("envoy.extensions.filters.network.rbac.v3.RBAC")
@frozen
class NetworkRBAC:
    """envoy.filters.network.rbac: the same engines on a TCP connection (no HTTP attributes); stats under
    `<stat_prefix>rbac.` (pyproxy.tcp.rbac)."""

    rules: RBACRules | None = None
    shadow_rules: RBACRules | None = None
    shadow_rules_stat_prefix: str = ""
    stat_prefix: str = fld(required=True)
    enforcement_type: str = enum("ONE_TIME_ON_FIRST_BYTE", "CONTINUOUS")


# ---------------------------------------------------------------- JWT (envoy.filters.http.jwt_authn)
# envoy/extensions/filters/http/jwt_authn/v3/config.proto: verified by pyproxy.filters.jwt_authn_logic (pure)
# behind pyproxy.filters.jwt_authn; docs/authz.md.


@frozen
class JwtHeader:
    name: str = fld(required=True)
    value_prefix: str = ""


@frozen
class JwksAsyncFetch:
    fast_listener: bool = False
    failed_refetch_duration: float | None = duration()


@frozen
class RemoteJwks:
    """Fetched over HTTP(S), kept `cache_duration` (Envoy default 10 min), then fetched again."""

    http_uri: HttpUri | None = fld(required=True)
    cache_duration: float | None = duration()
    async_fetch: JwksAsyncFetch | None = None


@frozen
class JwtClaimToHeader:
    header_name: str = fld(required=True)
    claim_name: str = fld(required=True)


@frozen
class NormalizePayload:
    space_delimited_claims: tuple[str, ...] = ()


@frozen
class JwtCacheConfig:
    """Verified tokens kept per provider (Envoy caches by default; 0 means its default size, 100)."""

    jwt_cache_size: int = 0
    jwt_max_token_size: int = 0


@frozen
class JwtProvider:
    """One issuer: where its tokens are, its keys, and what a verified token leaves behind."""

    issuer: str = ""
    audiences: tuple[str, ...] = ()
    require_expiration: bool = False
    remote_jwks: RemoteJwks | None = None
    local_jwks: DataSource | None = None
    forward: bool = False
    from_headers: tuple[JwtHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    forward_payload_header: str = ""
    pad_forward_payload_header: bool = False
    payload_in_metadata: str = ""
    normalize_payload_in_metadata: NormalizePayload | None = None
    clock_skew_seconds: int = 0  # 0: Envoy's default, 60
    clear_route_cache: bool = False
    claim_to_headers: tuple[JwtClaimToHeader, ...] = ()
    jwt_cache_config: JwtCacheConfig | None = None
    ONEOFS = (("remote_jwks", "local_jwks"),)


@frozen
class ProviderWithAudiences:
    provider_name: str = fld(required=True)
    audiences: tuple[str, ...] = ()


@frozen
class JwtRequirementOrList:
    requirements: tuple[JwtRequirement, ...] = ()


@frozen
class JwtRequirementAndList:
    requirements: tuple[JwtRequirement, ...] = ()


@frozen
class JwtRequirement:
    """A tree of providers: one, any of, all of; `allow_missing` / `allow_missing_or_failed` are Empty."""

    provider_name: str | None = None
    provider_and_audiences: ProviderWithAudiences | None = None
    requires_any: JwtRequirementOrList | None = None
    requires_all: JwtRequirementAndList | None = None
    allow_missing_or_failed: Mapping[str, Any] | None = struct()
    allow_missing: Mapping[str, Any] | None = struct()
    ONEOFS = (("provider_name", "provider_and_audiences", "requires_any", "requires_all", "allow_missing_or_failed",
               "allow_missing"),)


@frozen
class RequirementRule:
    match: RouteMatch | None = fld(required=True)
    requires: JwtRequirement | None = None
    requirement_name: str | None = None
    ONEOFS = (("requires", "requirement_name"),)


@typed("envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication")
@frozen
class JwtAuthentication:
    """envoy.filters.http.jwt_authn: providers by name, and per-path rules saying which are required."""

    providers: Mapping[str, JwtProvider] | None = fld(kind="message_map")
    rules: tuple[RequirementRule, ...] = ()
    bypass_cors_preflight: bool = False
    stat_prefix: str = ""
    requirement_map: Mapping[str, JwtRequirement] | None = fld(kind="message_map")


# ---------------------------------------------------------------- TLS transport sockets
# envoy.extensions.transport_sockets.tls.v3: served by pyproxy.tls.transport_socket (docs/tls.md).


@frozen
class SdsSecretConfig:
    name: str = ""
    sds_config: ConfigSource | None = None


@frozen
class TlsCertificate:
    certificate_chain: DataSource | None = None
    private_key: DataSource | None = None


_TLS_VERSIONS = ("TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3")


@frozen
class TlsParameters:
    tls_minimum_protocol_version: str = enum(*_TLS_VERSIONS)
    tls_maximum_protocol_version: str = enum(*_TLS_VERSIONS)
    cipher_suites: tuple[str, ...] = ()
    ecdh_curves: tuple[str, ...] = ()


@frozen
class SubjectAltNameMatcher:
    san_type: str = enum("SAN_TYPE_UNSPECIFIED", "EMAIL", "DNS", "URI", "IP_ADDRESS", "OTHER_NAME")
    matcher: StringMatcher | None = fld(required=True)


@frozen
class CertificateValidationContext:
    trusted_ca: DataSource | None = None
    match_typed_subject_alt_names: tuple[SubjectAltNameMatcher, ...] = ()
    match_subject_alt_names: tuple[StringMatcher, ...] = ()  # deprecated
    verify_certificate_spki: tuple[str, ...] = ()
    verify_certificate_hash: tuple[str, ...] = ()
    crl: DataSource | None = None


@frozen
class CombinedCertificateValidationContext:
    default_validation_context: CertificateValidationContext | None = fld(required=True)
    validation_context_sds_secret_config: SdsSecretConfig | None = fld(required=True)


@frozen
class CommonTlsContext:
    tls_params: TlsParameters | None = None
    tls_certificates: tuple[TlsCertificate, ...] = ()
    tls_certificate_sds_secret_configs: tuple[SdsSecretConfig, ...] = ()
    validation_context: CertificateValidationContext | None = None
    validation_context_sds_secret_config: SdsSecretConfig | None = None
    combined_validation_context: CombinedCertificateValidationContext | None = None
    alpn_protocols: tuple[str, ...] = ()
    ONEOFS = (("validation_context", "validation_context_sds_secret_config", "combined_validation_context"),)


@typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")
@frozen
class UpstreamTlsContext:
    """A cluster's `transport_socket` envoy.transport_sockets.tls: TLS origination (DestinationRule tls)."""

    common_tls_context: CommonTlsContext | None = None
    sni: str = ""
    allow_renegotiation: bool = False
    max_session_keys: int | None = wrapped()


@typed("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext")
@frozen
class DownstreamTlsContext:
    """A filter chain's `transport_socket` envoy.transport_sockets.tls: TLS termination (Gateway servers)."""

    common_tls_context: CommonTlsContext | None = None
    require_client_certificate: bool | None = wrapped()
    require_sni: bool | None = wrapped()
    session_timeout: float | None = duration()


@typed("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer")
@frozen
class RawBuffer:
    """Transport socket envoy.transport_sockets.raw_buffer: plaintext (Istio's `tlsMode-disabled` match)."""


@typed("envoy.extensions.filters.listener.http_inspector.v3.HttpInspector")
@frozen
class HttpInspector:
    """Listener filter envoy.filters.listener.http_inspector: sets the application protocol of a plaintext
    connection (`http/1.0`, `http/1.1`, `h2c`) for filter_chain_match.application_protocols."""


@typed("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector")
@frozen
class TlsInspector:
    """Listener filter envoy.filters.listener.tls_inspector (SNI/ALPN for filter_chain_match)."""

    enable_ja3_fingerprinting: bool | None = wrapped()


@typed("envoy.extensions.filters.network.sni_cluster.v3.SniCluster")
@frozen
class SniCluster:
    """Network filter envoy.filters.network.sni_cluster (no settings): the connection's SNI names the cluster
    the tcp_proxy after it connects to (Istio's AUTO_PASSTHROUGH gateways: `outbound_.<port>_.<subset>_.<host>`)."""


# ---------------------------------------------------------------- listeners


@frozen
class Filter:
    name: str = fld(required=True)
    typed_config: Any = any_config()


@frozen
class CidrRange:
    address_prefix: str = fld(required=True)
    prefix_len: int | None = wrapped()


@frozen
class FilterChainMatch:
    """How a connection picks its filter chain (pyproxy.listener.chain_match: Envoy's order and rules)."""

    destination_port: int | None = wrapped()
    prefix_ranges: tuple[CidrRange, ...] = ()
    server_names: tuple[str, ...] = ()
    transport_protocol: str = ""
    application_protocols: tuple[str, ...] = ()
    direct_source_prefix_ranges: tuple[CidrRange, ...] = ()
    source_type: str = enum("ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL")
    source_prefix_ranges: tuple[CidrRange, ...] = ()
    source_ports: tuple[int, ...] = ()


@frozen
class FilterChain:
    name: str = ""
    filter_chain_match: FilterChainMatch | None = None
    filters: tuple[Filter, ...] = ()
    transport_socket: TypedExtensionConfig | None = None

    @property
    def http_connection_manager(self) -> HttpConnectionManager | None:
        for f in self.filters:
            if isinstance(f.typed_config, HttpConnectionManager):
                return f.typed_config
        return None

    @property
    def tcp_proxy(self) -> TcpProxy | None:
        for f in self.filters:
            if isinstance(f.typed_config, TcpProxy):
                return f.typed_config
        return None

    @property
    def sni_cluster(self) -> bool:
        """An envoy.filters.network.sni_cluster filter comes before the tcp_proxy."""
        return any(isinstance(f.typed_config, SniCluster) for f in self.filters)

    @property
    def network_rbac(self) -> tuple[NetworkRBAC, ...]:
        """`envoy.filters.network.rbac` filters before the terminal filter (pyproxy.tcp.rbac)."""
        return tuple(f.typed_config for f in self.filters if isinstance(f.typed_config, NetworkRBAC))


@frozen
class ListenerFilter:
    name: str = fld(required=True)
    typed_config: Any = any_config()


@typed("envoy.config.listener.v3.Listener")
@frozen
class Listener:
    name: str = ""
    address: Address | None = fld(required=True)
    filter_chains: tuple[FilterChain, ...] = ()
    default_filter_chain: FilterChain | None = None
    listener_filters: tuple[ListenerFilter, ...] = ()
    per_connection_buffer_limit_bytes: int | None = wrapped()
    traffic_direction: str = enum("UNSPECIFIED", "INBOUND", "OUTBOUND")
    metadata: Mapping[str, Any] | None = struct()
    continue_on_listener_filters_timeout: bool = False
    listener_filters_timeout: float | None = duration()
    use_original_dst: bool | None = wrapped()
    bind_to_port: bool | None = wrapped()
    reuse_port: bool | None = wrapped()
    enable_reuse_port: bool | None = wrapped()


# ---------------------------------------------------------------- clusters and endpoints


@frozen
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""


@frozen
class Endpoint:
    address: Address | None = fld(required=True)
    hostname: str = ""
    health_check_config: Mapping[str, Any] | None = struct()


@frozen
class LbEndpoint:
    endpoint: Endpoint | None = fld(required=True)
    health_status: str = enum("UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED")
    metadata: Mapping[str, Any] | None = struct()
    load_balancing_weight: int | None = wrapped()  # default 1


@frozen
class LocalityLbEndpoints:
    locality: Locality | None = None
    lb_endpoints: tuple[LbEndpoint, ...] = ()
    load_balancing_weight: int | None = wrapped()
    priority: int = 0


@frozen
class ClusterLoadAssignmentPolicy:
    overprovisioning_factor: int | None = wrapped()
    endpoint_stale_after: float | None = duration()


@typed("envoy.config.endpoint.v3.ClusterLoadAssignment")
@frozen
class ClusterLoadAssignment:
    cluster_name: str = fld(required=True)
    endpoints: tuple[LocalityLbEndpoints, ...] = ()
    policy: ClusterLoadAssignmentPolicy | None = None


@frozen
class Thresholds:
    """circuit_breakers.thresholds[]: Envoy's defaults are 1024 each and 3 retries; Istio sets them to
    2^32-1 ("unlimited") unless a DestinationRule says otherwise."""

    priority: str = enum("DEFAULT", "HIGH")
    max_connections: int | None = wrapped()
    max_pending_requests: int | None = wrapped()
    max_requests: int | None = wrapped()
    max_retries: int | None = wrapped()
    max_connection_pools: int | None = wrapped()
    track_remaining: bool = False
    retry_budget: Mapping[str, Any] | None = struct()


@frozen
class CircuitBreakers:
    thresholds: tuple[Thresholds, ...] = ()


@frozen
class OutlierDetection:
    """envoy.config.cluster.v3.OutlierDetection (defaults from outlier_detection.proto)."""

    consecutive_5xx: int | None = wrapped()  # 5
    interval: float | None = duration()  # 10 s
    base_ejection_time: float | None = duration()  # 30 s
    max_ejection_percent: int | None = wrapped()  # 10
    enforcing_consecutive_5xx: int | None = wrapped()  # 100
    enforcing_success_rate: int | None = wrapped()  # 100
    success_rate_minimum_hosts: int | None = wrapped()  # 5
    success_rate_request_volume: int | None = wrapped()  # 100
    success_rate_stdev_factor: int | None = wrapped()  # 1900
    consecutive_gateway_failure: int | None = wrapped()  # 5
    enforcing_consecutive_gateway_failure: int | None = wrapped()  # 0
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failure: int | None = wrapped()
    enforcing_consecutive_local_origin_failure: int | None = wrapped()
    enforcing_local_origin_success_rate: int | None = wrapped()
    failure_percentage_threshold: int | None = wrapped()
    enforcing_failure_percentage: int | None = wrapped()
    enforcing_failure_percentage_local_origin: int | None = wrapped()
    failure_percentage_minimum_hosts: int | None = wrapped()
    failure_percentage_request_volume: int | None = wrapped()
    max_ejection_time: float | None = duration()  # 300 s
    max_ejection_time_jitter: float | None = duration()
    successful_active_health_check_uneject_host: bool | None = wrapped()
    always_eject_one_host: bool | None = wrapped()  # default false: max_ejection_percent is strict


@frozen
class CommonLbConfig:
    healthy_panic_threshold: Percent | None = None  # Envoy default 50 %
    locality_weighted_lb_config: Mapping[str, Any] | None = struct()
    zone_aware_lb_config: Mapping[str, Any] | None = struct()
    update_merge_window: float | None = duration()
    ignore_new_hosts_until_first_hc: bool = False
    close_connections_on_host_set_change: bool = False


@frozen
class LeastRequestLbConfig:
    choice_count: int | None = wrapped()  # default 2
    active_request_bias: Mapping[str, Any] | None = struct()


@frozen
class RingHashLbConfig:
    minimum_ring_size: int | None = wrapped()  # 1024
    maximum_ring_size: int | None = wrapped()  # 8M
    hash_function: str = enum("XX_HASH", "MURMUR_HASH_2")


@frozen
class MaglevLbConfig:
    table_size: int | None = wrapped()  # 65537


@frozen
class TcpKeepalive:
    keepalive_probes: int | None = wrapped()
    keepalive_time: int | None = wrapped()
    keepalive_interval: int | None = wrapped()


@frozen
class UpstreamConnectionOptions:
    tcp_keepalive: TcpKeepalive | None = None


@frozen
class EdsClusterConfig:
    eds_config: ConfigSource | None = None
    service_name: str = ""


@frozen
class ExplicitHttpConfig:
    http_protocol_options: Mapping[str, Any] | None = struct()
    http2_protocol_options: Mapping[str, Any] | None = struct()
    ONEOFS = (("http_protocol_options", "http2_protocol_options"),)


@typed("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
@frozen
class UpstreamHttpProtocolOptions:
    common_http_protocol_options: CommonHttpProtocolOptions | None = None
    explicit_http_config: ExplicitHttpConfig | None = None
    use_downstream_protocol_config: Mapping[str, Any] | None = struct()
    auto_config: Mapping[str, Any] | None = struct()


@frozen
class TransportSocketMatch:
    """Cluster `transport_socket_matches[]`: the socket for endpoints whose
    `metadata.filter_metadata["envoy.transport_socket_match"]` holds every key/value of `match`."""

    name: str = fld(required=True)
    match: Mapping[str, Any] | None = struct()
    transport_socket: TypedExtensionConfig | None = None


@typed("envoy.config.cluster.v3.Cluster")
@frozen
class Cluster:
    """envoy.config.cluster.v3.Cluster: a named group of upstream hosts and how to talk to them."""

    name: str = fld(required=True)
    alt_stat_name: str = ""
    type: str = enum("STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST")
    eds_cluster_config: EdsClusterConfig | None = None
    connect_timeout: float | None = duration()  # Envoy default 5 s
    per_connection_buffer_limit_bytes: int | None = wrapped()  # 1 MiB
    lb_policy: str = enum("ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "RANDOM", "MAGLEV", "CLUSTER_PROVIDED")
    load_assignment: ClusterLoadAssignment | None = None
    circuit_breakers: CircuitBreakers | None = None
    typed_extension_protocol_options: Mapping[str, Any] | None = fld(kind="any_map")
    max_requests_per_connection: int | None = wrapped()  # deprecated, still honoured
    common_http_protocol_options: CommonHttpProtocolOptions | None = None  # deprecated
    http_protocol_options: Mapping[str, Any] | None = struct()  # deprecated
    http2_protocol_options: Mapping[str, Any] | None = struct()  # deprecated; HTTP/2 upstream unsupported
    outlier_detection: OutlierDetection | None = None
    common_lb_config: CommonLbConfig | None = None
    least_request_lb_config: LeastRequestLbConfig | None = None
    ring_hash_lb_config: RingHashLbConfig | None = None
    maglev_lb_config: MaglevLbConfig | None = None
    dns_lookup_family: str = enum("AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL")
    dns_refresh_rate: float | None = duration()  # 5 s
    respect_dns_ttl: bool = False
    upstream_connection_options: UpstreamConnectionOptions | None = None
    transport_socket: TypedExtensionConfig | None = None
    transport_socket_matches: tuple[TransportSocketMatch, ...] = ()
    metadata: Mapping[str, Any] | None = struct()
    cleanup_interval: float | None = duration()
    ignore_health_on_host_removal: bool = False

    @property
    def effective_connect_timeout(self) -> float:
        return 5.0 if self.connect_timeout is None else self.connect_timeout

    @property
    def upstream_http_options(self) -> CommonHttpProtocolOptions | None:
        """The v3 home (typed_extension_protocol_options) wins over the deprecated cluster field."""
        opts = (self.typed_extension_protocol_options or {}).get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        if isinstance(opts, UpstreamHttpProtocolOptions) and opts.common_http_protocol_options:
            return opts.common_http_protocol_options
        return self.common_http_protocol_options

    @property
    def effective_max_requests_per_connection(self) -> int:
        opts = self.upstream_http_options
        if opts and opts.max_requests_per_connection:
            return opts.max_requests_per_connection
        return self.max_requests_per_connection or 0  # 0 = unlimited


# ---------------------------------------------------------------- bootstrap


@frozen
class Admin:
    address: Address | None = None
    access_log_path: str = ""
    access_log: tuple[AccessLog, ...] = ()
    profile_path: str = ""


@frozen
class StaticResources:
    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    secrets: tuple[Mapping[str, Any], ...] = ()


@frozen
class DynamicResources:
    lds_config: ConfigSource | None = None
    cds_config: ConfigSource | None = None
    ads_config: Mapping[str, Any] | None = struct()


@frozen
class Bootstrap:
    """envoy.config.bootstrap.v3.Bootstrap (the subset pyproxy runs)."""

    node: Node | None = None
    admin: Admin | None = None
    static_resources: StaticResources | None = None
    dynamic_resources: DynamicResources | None = None
    layered_runtime: Mapping[str, Any] | None = struct()
    stats_flush_interval: float | None = duration()
