"""The per-request record the access log reads: Envoy's `StreamInfo`, reduced to what pyproxy logs.

The HTTP connection manager creates one `StreamInfo` when a request's headers arrive, the filters and the
router fill it in as the request moves along (response code, details, response flags, upstream host,
timestamps, byte counts), and when the stream ends it is handed to every configured access logger
(`pyproxy.observe.access_log`). Nothing here does I/O or reads a clock: the engine stores the times it read.

It is a plain mutable `__slots__` object with every attribute set in `__init__`, so creating one per request
costs one allocation and reading a field is an attribute load.

Times: `start_time` is wall-clock epoch seconds (rendered by %START_TIME%); everything else is a
`time.monotonic()` reading, or None when the event did not happen. Durations are taken relative to
`start_monotonic`, as Envoy's `TimingUtility` does.

Response flags (%RESPONSE_FLAGS%) are an int bitmask: set one with `info.response_flags |= ResponseFlag.UH`.
The bit order is Envoy's `ResponseFlag` enum order (`envoy/stream_info/stream_info.h`,
`source/common/stream_info/utility.h` ALL_RESPONSE_STRINGS_FLAGS), and flags render in that order.
Envoy >= 1.29 keeps flags in a list and prints them in the order they were set; `response_flags` is a
property whose setter also records each newly set group of bits (`flag_order`), and %RESPONSE_FLAGS%
(`flags_in_set_order`) prints in that order, as Envoy 1.40 does (HTTP retries `URX,UC`, tcp_proxy `UF,URX`).
The mask alone (`response_flags_short`) renders in the table order, as Istio's metric label wants.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pyproxy.http.headers import Headers

__all__ = [
    "RESPONSE_FLAGS",
    "ResponseFlag",
    "StreamInfo",
    "parse_response_flag",
    "flags_in_set_order",
    "response_flags_long",
    "response_flags_short",
]

# (short name, long name), in Envoy's enum order: bit i is entry i.
RESPONSE_FLAGS: tuple[tuple[str, str], ...] = (
    ("LH", "FailedLocalHealthCheck"),
    ("UH", "NoHealthyUpstream"),
    ("UT", "UpstreamRequestTimeout"),
    ("LR", "LocalReset"),
    ("UR", "UpstreamRemoteReset"),
    ("UF", "UpstreamConnectionFailure"),
    ("UC", "UpstreamConnectionTermination"),
    ("UO", "UpstreamOverflow"),
    ("NR", "NoRouteFound"),
    ("DI", "DelayInjected"),
    ("FI", "FaultInjected"),
    ("RL", "RateLimited"),
    ("UAEX", "UnauthorizedExternalService"),
    ("RLSE", "RateLimitServiceError"),
    ("DC", "DownstreamConnectionTermination"),
    ("URX", "UpstreamRetryLimitExceeded"),
    ("SI", "StreamIdleTimeout"),
    ("IH", "InvalidEnvoyRequestHeaders"),
    ("DPE", "DownstreamProtocolError"),
    ("UMSDR", "UpstreamMaxStreamDurationReached"),
    ("RFCF", "ResponseFromCacheFilter"),
    ("NFCF", "NoFilterConfigFound"),
    ("DT", "DurationTimeout"),
    ("UPE", "UpstreamProtocolError"),
    ("NC", "NoClusterFound"),
    ("OM", "OverloadManagerTerminated"),
    ("DF", "DnsResolutionFailed"),
    ("DO", "DropOverload"),
)


class ResponseFlag:
    """Bit values for `StreamInfo.response_flags`, by Envoy's short name and by its enum name (two lines per
    flag rather than `LH = FAILED_LOCAL_HEALTH_CHECK = ...`: the compiled build, scripts/build_compiled.py, wants
    one constant per line; `Final` makes them constants there)."""

    LH: Final = 1 << 0
    FAILED_LOCAL_HEALTH_CHECK: Final = 1 << 0
    UH: Final = 1 << 1
    NO_HEALTHY_UPSTREAM: Final = 1 << 1
    UT: Final = 1 << 2
    UPSTREAM_REQUEST_TIMEOUT: Final = 1 << 2
    LR: Final = 1 << 3
    LOCAL_RESET: Final = 1 << 3
    UR: Final = 1 << 4
    UPSTREAM_REMOTE_RESET: Final = 1 << 4
    UF: Final = 1 << 5
    UPSTREAM_CONNECTION_FAILURE: Final = 1 << 5
    UC: Final = 1 << 6
    UPSTREAM_CONNECTION_TERMINATION: Final = 1 << 6
    UO: Final = 1 << 7
    UPSTREAM_OVERFLOW: Final = 1 << 7
    NR: Final = 1 << 8
    NO_ROUTE_FOUND: Final = 1 << 8
    DI: Final = 1 << 9
    DELAY_INJECTED: Final = 1 << 9
    FI: Final = 1 << 10
    FAULT_INJECTED: Final = 1 << 10
    RL: Final = 1 << 11
    RATE_LIMITED: Final = 1 << 11
    UAEX: Final = 1 << 12
    UNAUTHORIZED_EXTERNAL_SERVICE: Final = 1 << 12
    RLSE: Final = 1 << 13
    RATE_LIMIT_SERVICE_ERROR: Final = 1 << 13
    DC: Final = 1 << 14
    DOWNSTREAM_CONNECTION_TERMINATION: Final = 1 << 14
    URX: Final = 1 << 15
    UPSTREAM_RETRY_LIMIT_EXCEEDED: Final = 1 << 15
    SI: Final = 1 << 16
    STREAM_IDLE_TIMEOUT: Final = 1 << 16
    IH: Final = 1 << 17
    INVALID_ENVOY_REQUEST_HEADERS: Final = 1 << 17
    DPE: Final = 1 << 18
    DOWNSTREAM_PROTOCOL_ERROR: Final = 1 << 18
    UMSDR: Final = 1 << 19
    UPSTREAM_MAX_STREAM_DURATION_REACHED: Final = 1 << 19
    RFCF: Final = 1 << 20
    RESPONSE_FROM_CACHE_FILTER: Final = 1 << 20
    NFCF: Final = 1 << 21
    NO_FILTER_CONFIG_FOUND: Final = 1 << 21
    DT: Final = 1 << 22
    DURATION_TIMEOUT: Final = 1 << 22
    UPE: Final = 1 << 23
    UPSTREAM_PROTOCOL_ERROR: Final = 1 << 23
    NC: Final = 1 << 24
    NO_CLUSTER_FOUND: Final = 1 << 24
    OM: Final = 1 << 25
    OVERLOAD_MANAGER: Final = 1 << 25
    DF: Final = 1 << 26
    DNS_RESOLUTION_FAILED: Final = 1 << 26
    DO: Final = 1 << 27
    DROP_OVERLOAD: Final = 1 << 27


_BY_SHORT = {short: 1 << i for i, (short, _) in enumerate(RESPONSE_FLAGS)}
_SHORT_CACHE: dict[int, str] = {0: "-"}
_LONG_CACHE: dict[int, str] = {0: "-"}


def _render(mask: int, column: int, cache: dict[int, str]) -> str:
    text = cache.get(mask)
    if text is None:
        names = [entry[column] for i, entry in enumerate(RESPONSE_FLAGS) if mask & (1 << i)]
        text = ",".join(names) if names else "-"
        if len(cache) < 4096:  # real traffic produces a handful of combinations
            cache[mask] = text
    return text


def response_flags_short(mask: int) -> str:
    """%RESPONSE_FLAGS%: short names comma-joined in Envoy's order, "-" when none is set."""
    return _render(mask, 0, _SHORT_CACHE)


def response_flags_long(mask: int) -> str:
    """%RESPONSE_FLAGS_LONG%: the PascalCase names, comma-joined, "-" when none is set."""
    return _render(mask, 1, _LONG_CACHE)


def flags_in_set_order(info: "StreamInfo", long: bool = False) -> str:
    """%RESPONSE_FLAGS% (or _LONG) as Envoy 1.40 prints them: in the order they were set (an HTTP retry that
    gives up logs `URX,UC`: URX when retrying stops, then the final failure; tcp_proxy logs `UF,URX`; checked
    in tests/differential and tests/oracle/test_tcp_proxy_differential.py)."""
    render = response_flags_long if long else response_flags_short
    order = info.flag_order
    if order is None or len(order) == 1:
        return render(info.response_flags)
    return ",".join(render(added) for added in order)


def parse_response_flag(short: str) -> int:
    """The bit for a short name ("UH"); ValueError naming the valid ones otherwise."""
    try:
        return _BY_SHORT[short]
    except KeyError:
        raise ValueError(
            f"unknown response flag {short!r}; expected one of {', '.join(_BY_SHORT)}"
        ) from None


class StreamInfo:
    """What is known about one request/response exchange, for access logs (and later stats/tracing)."""

    __slots__ = (
        # timing: wall clock for display, monotonic for durations
        "start_time",
        "start_monotonic",
        "last_downstream_rx",  # the request's last byte in: %REQUEST_DURATION%, x-envoy-upstream-service-time's start
        "last_upstream_tx",  # its last byte sent upstream (this try's): %REQUEST_TX_DURATION%
        "first_upstream_rx",  # the answer's first byte from upstream: %RESPONSE_DURATION%
        "last_downstream_tx",  # the response's last byte out: %RESPONSE_TX_DURATION%'s end, istio's duration
        "request_complete",  # the exchange's end (Envoy's requestComplete): %DURATION%
        # request: pseudo-headers are fields, not entries of request_headers
        "method",
        "path",
        "authority",
        "scheme",
        "protocol",
        "request_headers",
        # response
        "response_code",
        "response_code_details",
        "connection_termination_details",
        "_response_flags",
        "flag_order",  # each set of newly set flag bits, in the order they were set (None until one is)
        "response_headers",
        "response_trailers",
        "bytes_received",
        "bytes_sent",
        # upstream
        "upstream_host",
        "upstream_cluster",
        "upstream_local_address",
        "upstream_transport_failure_reason",
        "upstream_request_attempt_count",
        # downstream connection
        "downstream_local_address",
        "downstream_remote_address",
        "downstream_direct_remote_address",
        "requested_server_name",
        "downstream_tls",
        "downstream_transport_failure_reason",
        "connection_id",
        # routing
        "route_name",
        # filters' dynamic metadata (namespace -> {key: value}), e.g. envoy.filters.http.rbac; None until set
        "dynamic_metadata",
    )

    def __init__(self, start_time: float = 0.0, start_monotonic: float = 0.0) -> None:
        self.start_time = start_time
        self.start_monotonic = start_monotonic
        self.last_downstream_rx: float | None = None
        self.last_upstream_tx: float | None = None
        self.first_upstream_rx: float | None = None
        self.last_downstream_tx: float | None = None
        self.request_complete: float | None = None
        self.method: str | None = None
        self.path: str | None = None
        self.authority: str | None = None
        self.scheme: str | None = None
        self.protocol: str | None = None
        self.request_headers: Headers | None = None
        self.response_code: int | None = None
        self.response_code_details: str | None = None
        self.connection_termination_details: str | None = None
        self._response_flags = 0
        self.flag_order: list[int] | None = None
        self.response_headers: Headers | None = None
        self.response_trailers: Headers | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.upstream_host: str | None = None
        self.upstream_cluster: str | None = None
        self.upstream_local_address: str | None = None
        self.upstream_transport_failure_reason: str | None = None
        self.upstream_request_attempt_count = 0
        self.downstream_local_address: str | None = None
        self.downstream_remote_address: str | None = None
        self.downstream_direct_remote_address: str | None = None
        self.requested_server_name: str | None = None
        self.downstream_tls: Any = None  # pyproxy.tls.session.TlsSession of a TLS downstream connection
        self.downstream_transport_failure_reason: str | None = None
        self.connection_id: int | None = None
        self.route_name: str | None = None
        self.dynamic_metadata: dict[str, dict[str, Any]] | None = None

    def set_dynamic_metadata(self, namespace: str, values: dict[str, Any]) -> None:
        """Merge `values` into the namespace (Envoy `setDynamicMetadata` merges the struct's fields)."""
        if self.dynamic_metadata is None:
            self.dynamic_metadata = {}
        self.dynamic_metadata.setdefault(namespace, {}).update(values)

    @property
    def response_flags(self) -> int:
        return self._response_flags

    @response_flags.setter
    def response_flags(self, value: int) -> None:
        added = value & ~self._response_flags
        if added:
            if self.flag_order is None:
                self.flag_order = []
            self.flag_order.append(added)
        self._response_flags = value

    def has_response_flag(self, flag: int) -> bool:
        return bool(self.response_flags & flag)

    @property
    def x_request_id(self) -> str | None:
        headers = self.request_headers
        return headers.get_first("x-request-id") if headers is not None else None

    def __repr__(self) -> str:
        return (
            f"StreamInfo({self.method} {self.path} {self.protocol} -> {self.response_code} "
            f"{response_flags_short(self.response_flags)} details={self.response_code_details} "
            f"upstream={self.upstream_cluster}/{self.upstream_host})"
        )
