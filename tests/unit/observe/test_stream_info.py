"""StreamInfo and Envoy's response flags (source/common/stream_info/utility.h, ALL_RESPONSE_STRINGS_FLAGS)."""
import pytest

from pyproxy.http.headers import Headers
from pyproxy.observe.stream_info import (
    flags_in_set_order,
    RESPONSE_FLAGS,
    ResponseFlag,
    StreamInfo,
    parse_response_flag,
    response_flags_long,
    response_flags_short,
)

ENVOY_ORDER = ["LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
               "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO"]


def test_the_flag_table_is_envoys_list_in_envoys_order():
    assert [short for short, _ in RESPONSE_FLAGS] == ENVOY_ORDER


@pytest.mark.parametrize("flag, short, long", [
    (ResponseFlag.NO_HEALTHY_UPSTREAM, "UH", "NoHealthyUpstream"),
    (ResponseFlag.UPSTREAM_CONNECTION_FAILURE, "UF", "UpstreamConnectionFailure"),
    (ResponseFlag.UPSTREAM_OVERFLOW, "UO", "UpstreamOverflow"),
    (ResponseFlag.NO_ROUTE_FOUND, "NR", "NoRouteFound"),
    (ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX", "UpstreamRetryLimitExceeded"),
    (ResponseFlag.NO_CLUSTER_FOUND, "NC", "NoClusterFound"),
    (ResponseFlag.DURATION_TIMEOUT, "DT", "DurationTimeout"),
    (ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION, "DC", "DownstreamConnectionTermination"),
    (ResponseFlag.FAILED_LOCAL_HEALTH_CHECK, "LH", "FailedLocalHealthCheck"),
    (ResponseFlag.UPSTREAM_REQUEST_TIMEOUT, "UT", "UpstreamRequestTimeout"),
    (ResponseFlag.LOCAL_RESET, "LR", "LocalReset"),
    (ResponseFlag.UPSTREAM_REMOTE_RESET, "UR", "UpstreamRemoteReset"),
    (ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, "UC", "UpstreamConnectionTermination"),
    (ResponseFlag.DELAY_INJECTED, "DI", "DelayInjected"),
    (ResponseFlag.FAULT_INJECTED, "FI", "FaultInjected"),
    (ResponseFlag.RATE_LIMITED, "RL", "RateLimited"),
    (ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE, "UAEX", "UnauthorizedExternalService"),
    (ResponseFlag.RATE_LIMIT_SERVICE_ERROR, "RLSE", "RateLimitServiceError"),
    (ResponseFlag.INVALID_ENVOY_REQUEST_HEADERS, "IH", "InvalidEnvoyRequestHeaders"),
    (ResponseFlag.STREAM_IDLE_TIMEOUT, "SI", "StreamIdleTimeout"),
    (ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR, "DPE", "DownstreamProtocolError"),
    (ResponseFlag.UPSTREAM_PROTOCOL_ERROR, "UPE", "UpstreamProtocolError"),
    (ResponseFlag.UPSTREAM_MAX_STREAM_DURATION_REACHED, "UMSDR", "UpstreamMaxStreamDurationReached"),
    (ResponseFlag.OVERLOAD_MANAGER, "OM", "OverloadManagerTerminated"),
    (ResponseFlag.DNS_RESOLUTION_FAILED, "DF", "DnsResolutionFailed"),
    (ResponseFlag.DROP_OVERLOAD, "DO", "DropOverload"),
])
def test_each_flag_renders_its_short_and_long_name(flag, short, long):
    assert response_flags_short(flag) == short
    assert response_flags_long(flag) == long
    assert getattr(ResponseFlag, short) == flag
    assert parse_response_flag(short) == flag


def test_no_flag_renders_a_dash():
    assert response_flags_short(0) == "-"
    assert response_flags_long(0) == "-"


@pytest.mark.parametrize("set_in_order, table_order, set_order", [
    (["UO", "UH"], "UH,UO", "UO,UH"),
    (["URX", "UF"], "UF,URX", "URX,UF"),
    (["DC", "UT", "LH"], "LH,UT,DC", "DC,UT,LH"),
    (["DI", "FI", "DI"], "DI,FI", "DI,FI"),
])
def test_several_flags_render_in_the_order_set_and_the_mask_in_table_order(set_in_order, table_order, set_order):
    """%RESPONSE_FLAGS% lists flags in the order they were set (Envoy >= 1.29; tests/differential retry-reset
    shows `URX,UC`); the bare mask renders in Envoy's table order."""
    info = StreamInfo()
    for short in set_in_order:
        info.response_flags |= parse_response_flag(short)
    assert response_flags_short(info.response_flags) == table_order
    assert flags_in_set_order(info) == set_order
    assert all(info.has_response_flag(parse_response_flag(s)) for s in set_in_order)


def test_setting_a_flag_twice_is_the_same_as_once():
    info = StreamInfo()
    info.response_flags |= ResponseFlag.UH
    info.response_flags |= ResponseFlag.UH
    assert response_flags_short(info.response_flags) == "UH"


def test_an_unknown_flag_name_is_an_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match="unknown response flag 'XX'.*UH"):
        parse_response_flag("XX")


def test_a_fresh_stream_info_has_nothing_set():
    info = StreamInfo(1700000000.5, 42.0)
    assert (info.start_time, info.start_monotonic) == (1700000000.5, 42.0)
    assert info.response_code is None and info.response_flags == 0
    assert info.bytes_received == info.bytes_sent == info.upstream_request_attempt_count == 0
    assert info.request_complete is None and info.upstream_host is None
    assert info.x_request_id is None


def test_stream_info_has_no_instance_dict():
    info = StreamInfo()
    with pytest.raises(AttributeError):
        info.not_a_field = 1  # type: ignore[attr-defined]


def test_x_request_id_comes_from_the_request_headers():
    info = StreamInfo()
    info.request_headers = Headers([("X-Request-Id", "abc-123")])
    assert info.x_request_id == "abc-123"
