"""Access logs as Envoy documents them (docs/root/configuration/observability/access_log/usage.rst)."""
import json
import os

import pytest

from pyproxy.config.decode import ConfigError, decode
from pyproxy.config.model import AccessLog, DataSource, SubstitutionFormatString
from pyproxy.http.headers import Headers
from pyproxy.observe.access_log import (
    DEFAULT_FORMAT,
    AccessLogManager,
    Formatter,
    JsonFormatter,
    LogFile,
    TextFormatter,
    build_access_loggers,
)
from pyproxy.observe.stream_info import ResponseFlag, StreamInfo

START = 1460751420.310  # 2016-04-15T20:17:00.310Z, the example in Envoy's docs
T0 = 1000.0  # monotonic clock at the start of the request


def full_info() -> StreamInfo:
    """The request of Envoy's documented example line, with every field the formatter reads set."""
    info = StreamInfo(START, T0)
    info.method, info.path, info.authority, info.scheme = "POST", "/api/v1/locations", "locations", "http"
    info.protocol = "HTTP/2"
    info.request_headers = Headers([
        ("x-forwarded-for", "10.0.35.28"), ("user-agent", "nsq2http"),
        ("x-request-id", "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"), ("x-custom", "first"), ("x-custom", "second"),
    ])
    info.response_headers = Headers([("x-envoy-upstream-service-time", "100"), ("content-type", "text/plain")])
    info.response_trailers = Headers([("grpc-status", "0")])
    info.response_code = 204
    info.response_code_details = "via_upstream"
    info.bytes_received, info.bytes_sent = 154, 0
    info.last_downstream_rx = T0 + 0.012
    info.last_upstream_tx = T0 + 0.015
    info.first_upstream_rx = T0 + 0.120
    info.last_downstream_tx = T0 + 0.2255
    info.request_complete = T0 + 0.226
    info.upstream_host = "10.0.2.1:80"
    info.upstream_cluster = "outbound|80||locations.default.svc.cluster.local"
    info.upstream_local_address = "10.0.0.5:41234"
    info.downstream_local_address = "10.0.0.5:15001"
    info.downstream_remote_address = "10.0.35.28:53000"
    info.downstream_direct_remote_address = "10.0.35.1:53001"
    info.requested_server_name = "locations.example.com"
    info.route_name = "default"
    info.upstream_request_attempt_count = 2
    info.connection_id = 17
    return info


def render(fmt: str, info: StreamInfo | None = None) -> str:
    return Formatter.compile(fmt).format(info if info is not None else full_info())


# ---------------------------------------------------------------- the default format


def test_no_format_means_envoys_default_format():
    assert Formatter.compile(None).format(full_info()) == (
        '[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" '
        '"nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "10.0.2.1:80"\n'
    )


def test_default_format_text_is_envoys():
    assert DEFAULT_FORMAT == (
        '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
        "%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "
        '"%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" '
        '"%UPSTREAM_HOST%"\n'
    )


def test_default_format_of_a_local_reply_without_upstream_shows_dashes_and_flags():
    info = StreamInfo(START, T0)
    info.method, info.path, info.authority, info.protocol = "GET", "/nope", "svc", "HTTP/1.1"
    info.request_headers = Headers([("user-agent", "curl/8")])
    info.response_code = 404
    info.response_flags |= ResponseFlag.NR
    info.bytes_sent = 0
    info.request_complete = T0 + 0.001
    assert Formatter.compile(None).format(info) == (
        '[2016-04-15T20:17:00.310Z] "GET /nope HTTP/1.1" 404 NR 0 0 1 - "-" "curl/8" "-" "svc" "-"\n'
    )


# ---------------------------------------------------------------- every operator


@pytest.mark.parametrize("fmt, expected", [
    ("%START_TIME%", "2016-04-15T20:17:00.310Z"),
    ("%START_TIME(%Y/%m/%dT%H:%M:%S%z %s)%", "2016/04/15T20:17:00+0000 1460751420"),
    ("%START_TIME(%s.%3f)%", "1460751420.310"),
    ("%START_TIME(%s.%6f)%", "1460751420.310000"),
    ("%START_TIME(%s.%9f)%", "1460751420.310000000"),
    ("%START_TIME(%f)%", "310000000"),
    ("%START_TIME(%1f)%", "3"),
    ("%START_TIME(%H%%M)%", "20%M"),
    ("%REQ(:METHOD)%", "POST"),
    ("%REQ(:PATH)%", "/api/v1/locations"),
    ("%REQ(:AUTHORITY)%", "locations"),
    ("%REQ(:SCHEME)%", "http"),
    ("%REQ(HOST)%", "locations"),
    ("%REQ(USER-AGENT)%", "nsq2http"),
    ("%REQ(user-agent)%", "nsq2http"),
    ("%REQ(X-CUSTOM)%", "first"),
    ("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/api/v1/locations"),
    ("%REQ(USER-AGENT?:PATH)%", "nsq2http"),
    ("%REQ(USER-AGENT):3%", "nsq"),
    ("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH):4%", "/api"),
    ("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "100"),
    ("%RESP(CONTENT-TYPE):4%", "text"),
    ("%RESP(:STATUS)%", "204"),
    ("%TRAILER(GRPC-STATUS)%", "0"),
    ("%RESPONSE_CODE%", "204"),
    ("%RESPONSE_CODE_DETAILS%", "via_upstream"),
    ("%RESPONSE_FLAGS%", "-"),
    ("%RESPONSE_FLAGS_LONG%", "-"),
    ("%BYTES_RECEIVED%", "154"),
    ("%BYTES_SENT%", "0"),
    ("%DURATION%", "226"),
    ("%REQUEST_DURATION%", "12"),
    ("%REQUEST_TX_DURATION%", "15"),
    ("%RESPONSE_DURATION%", "120"),
    ("%RESPONSE_TX_DURATION%", "105"),
    ("%PROTOCOL%", "HTTP/2"),
    ("%UPSTREAM_HOST%", "10.0.2.1:80"),
    ("%UPSTREAM_CLUSTER%", "outbound|80||locations.default.svc.cluster.local"),
    ("%UPSTREAM_LOCAL_ADDRESS%", "10.0.0.5:41234"),
    ("%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.0.0.5"),
    ("%UPSTREAM_LOCAL_PORT%", "41234"),
    ("%UPSTREAM_REMOTE_ADDRESS%", "10.0.2.1:80"),
    ("%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.2.1"),
    ("%UPSTREAM_REMOTE_PORT%", "80"),
    ("%DOWNSTREAM_REMOTE_ADDRESS%", "10.0.35.28:53000"),
    ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.35.28"),
    ("%DOWNSTREAM_REMOTE_PORT%", "53000"),
    ("%DOWNSTREAM_LOCAL_ADDRESS%", "10.0.0.5:15001"),
    ("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.0.0.5"),
    ("%DOWNSTREAM_LOCAL_PORT%", "15001"),
    ("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "10.0.35.1:53001"),
    ("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.35.1"),
    ("%DOWNSTREAM_DIRECT_REMOTE_PORT%", "53001"),
    ("%REQUESTED_SERVER_NAME%", "locations.example.com"),
    ("%ROUTE_NAME%", "default"),
    ("%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "2"),
    ("%CONNECTION_ID%", "17"),
    ("%HOSTNAME%", os.uname().nodename),
    ("%%", "%"),
    ("100%% done", "100% done"),
    ("code=%RESPONSE_CODE%%%", "code=204%"),
    ("no operators at all", "no operators at all"),
])
def test_each_operator_renders_what_envoy_documents(fmt, expected):
    assert render(fmt) == expected


def test_header_bytes_count_names_and_values_including_pseudo_headers():
    info = full_info()
    expected_request = sum(len(k) + len(v) for k, v in info.request_headers) + sum(
        len(p) + len(v) for p, v in ((":method", "POST"), (":path", "/api/v1/locations"),
                                     (":authority", "locations"), (":scheme", "http")))
    assert render("%REQUEST_HEADERS_BYTES%") == str(expected_request)
    assert render("%RESPONSE_HEADERS_BYTES%") == str(len("x-envoy-upstream-service-time") + 3 + len("content-type")
                                                     + len("text/plain"))
    assert render("%RESPONSE_TRAILERS_BYTES%") == str(len("grpc-status") + 1)


def test_start_time_zero_pads_milliseconds():
    info = full_info()
    info.start_time = 1460751420.007
    assert render("%START_TIME%", info) == "2016-04-15T20:17:00.007Z"


@pytest.mark.parametrize("address, without_port, port", [
    ("[::1]:8080", "::1", "8080"),
    ("10.1.2.3", "10.1.2.3", "-"),
    ("/var/run/app.sock", "/var/run/app.sock", "-"),
])
def test_address_operators_split_ipv6_and_portless_addresses(address, without_port, port):
    info = full_info()
    info.downstream_remote_address = address
    assert render("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_REMOTE_PORT%", info) == f"{without_port} {port}"


@pytest.mark.parametrize("fmt, expected", [
    ("%REQ(X-MISSING)%", "-"),
    ("%REQ(X-MISSING?X-ALSO-MISSING)%", "-"),
    ("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "-"),
    ("%TRAILER(GRPC-STATUS)%", "-"),
    ("%RESP(:STATUS)%", "-"),
    ("%RESPONSE_CODE%", "0"),  # Envoy: 0 means no response was sent
    ("%RESPONSE_CODE_DETAILS%", "-"),
    ("%CONNECTION_TERMINATION_DETAILS%", "-"),
    ("%DURATION%", "-"),
    ("%REQUEST_DURATION%", "-"),
    ("%RESPONSE_DURATION%", "-"),
    ("%RESPONSE_TX_DURATION%", "-"),
    ("%PROTOCOL%", "-"),
    ("%UPSTREAM_HOST%", "-"),
    ("%UPSTREAM_CLUSTER%", "-"),
    ("%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "-"),
    ("%UPSTREAM_TRANSPORT_FAILURE_REASON%", "-"),
    ("%DOWNSTREAM_REMOTE_ADDRESS%", "-"),
    ("%REQUESTED_SERVER_NAME%", "-"),
    ("%ROUTE_NAME%", "-"),
    ("%BYTES_RECEIVED%", "0"),
    ("%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "0"),
    ("%REQUEST_HEADERS_BYTES%", "0"),
])
def test_unset_values_render_a_dash_in_text(fmt, expected):
    assert render(fmt, StreamInfo(START, T0)) == expected


def test_an_empty_header_value_renders_a_dash():
    info = full_info()
    info.request_headers = Headers([("x-empty", "")])
    assert render("%REQ(X-EMPTY)%", info) == "-"


def test_omit_empty_values_renders_nothing_instead_of_a_dash():
    fmt = Formatter.compile(SubstitutionFormatString(text_format="[%UPSTREAM_HOST%][%PROTOCOL%]",
                                                     omit_empty_values=True))
    info = StreamInfo(START, T0)
    info.protocol = "HTTP/1.1"
    assert fmt.format(info) == "[][HTTP/1.1]"


def test_response_flags_render_short_and_long_names_in_the_order_set():
    """Envoy >= 1.29 prints flags in the order they were set (checked against Envoy 1.40 in tests/differential)."""
    info = full_info()
    info.response_flags |= ResponseFlag.UO
    info.response_flags |= ResponseFlag.UH
    assert render("%RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG%", info) == "UO,UH UpstreamOverflow,NoHealthyUpstream"


def test_connection_termination_and_transport_failure_details():
    info = full_info()
    info.connection_termination_details = "rbac_access_denied_matched_policy[none]"
    info.upstream_transport_failure_reason = "TLS_error:|268435581:SSL_routines"
    assert render("%CONNECTION_TERMINATION_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON%", info) == (
        "rbac_access_denied_matched_policy[none] TLS_error:|268435581:SSL_routines")


def test_durations_truncate_to_whole_milliseconds_like_envoy():
    info = StreamInfo(START, T0)
    info.request_complete = T0 + 0.00199  # 1.99 ms
    assert render("%DURATION%", info) == "1"


# ---------------------------------------------------------------- JSON


def test_json_format_keeps_numbers_as_numbers_and_unset_as_null():
    spec = {"method": "%REQ(:METHOD)%", "code": "%RESPONSE_CODE%", "duration": "%DURATION%",
            "bytes": "%BYTES_RECEIVED%", "upstream": "%UPSTREAM_HOST%", "flags": "%RESPONSE_FLAGS%",
            "start": "%START_TIME%"}
    line = Formatter.compile(SubstitutionFormatString(json_format=spec)).format(full_info())
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"method": "POST", "code": 204, "duration": 226, "bytes": 154,
                                "upstream": "10.0.2.1:80", "flags": "-", "start": "2016-04-15T20:17:00.310Z"}
    bare = json.loads(Formatter.compile(spec).format(StreamInfo(START, T0)))
    assert bare["upstream"] is None and bare["duration"] is None and bare["method"] is None
    assert bare["code"] == 0


def test_json_format_nests_objects_and_renders_mixed_strings_as_text():
    spec = {"request": {"line": "%REQ(:METHOD)% %REQ(:PATH)%", "id": "%REQ(X-REQUEST-ID)%"},
            "upstream": {"cluster": "%UPSTREAM_CLUSTER%", "missing": "host=%UPSTREAM_TRANSPORT_FAILURE_REASON%"},
            "literal": "pyproxy", "version": 3, "tags": ["%PROTOCOL%", "x"]}
    out = json.loads(Formatter.compile(spec).format(full_info()))
    assert out == {
        "request": {"line": "POST /api/v1/locations", "id": "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"},
        "upstream": {"cluster": "outbound|80||locations.default.svc.cluster.local", "missing": "host=-"},
        "literal": "pyproxy", "version": 3, "tags": ["HTTP/2", "x"],
    }


def test_json_omit_empty_values_drops_unset_keys_and_empty_objects():
    spec = {"code": "%RESPONSE_CODE%", "host": "%UPSTREAM_HOST%", "up": {"c": "%UPSTREAM_CLUSTER%"}}
    fmt = Formatter.compile(SubstitutionFormatString(json_format=spec, omit_empty_values=True))
    assert isinstance(fmt, JsonFormatter)
    assert json.loads(fmt.format(StreamInfo(START, T0))) == {"code": 0}


def test_json_escapes_header_values():
    info = full_info()
    info.request_headers = Headers([("user-agent", 'evil" \\ \n agent')])
    assert json.loads(Formatter.compile({"ua": "%REQ(USER-AGENT)%"}).format(info)) == {"ua": 'evil" \\ \n agent'}


# ---------------------------------------------------------------- config errors, at load time


@pytest.mark.parametrize("fmt, message", [
    ("%RESPONSE_CODES%", r"unknown command operator %RESPONSE_CODES% \(did you mean %RESPONSE_CODE%\?\)"),
    ("%NOT_A_THING%", "unknown command operator %NOT_A_THING%"),
    ("%DYNAMIC_METADATA(istio.mixer:status)%", "%DYNAMIC_METADATA% is an Envoy operator that pyproxy does not support"),
    ("%REQ%", r"%REQ\(...\)% needs a header name"),
    ("%REQ()%", r"%REQ\(...\)% needs a header name"),
    ("%REQ(A?B?C)%", "expected HEADER or HEADER\\?ALTERNATIVE"),
    ("%PROTOCOL(x)%", "%PROTOCOL% takes no argument"),
    ("100% done", "no valid %COMMAND% at position 3"),
    ("%lowercase%", "no valid %COMMAND% at position 0"),
    ("%DURATION", "no valid %COMMAND% at position 0"),
])
def test_a_bad_format_is_a_config_error_naming_the_problem(fmt, message):
    with pytest.raises(ConfigError, match=message) as e:
        Formatter.compile(SubstitutionFormatString(text_format=fmt), path="listeners[0].access_log[0]")
    assert e.value.path == "listeners[0].access_log[0].text_format"


def test_a_bad_operator_inside_json_names_the_json_key():
    with pytest.raises(ConfigError) as e:
        Formatter.compile(SubstitutionFormatString(json_format={"a": {"b": "%NOPE%"}}), path="log_format")
    assert e.value.path == "log_format.json_format.a.b"


def file_log_config(path: str, **log_format) -> AccessLog:
    typed = {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": path}
    if log_format:
        typed["log_format"] = log_format
    return decode(AccessLog, {"name": "envoy.access_loggers.file", "typed_config": typed})


def test_build_reports_the_config_path_of_a_bad_format(tmp_path):
    configs = (file_log_config(str(tmp_path / "ok.log")),
               file_log_config(str(tmp_path / "bad.log"), text_format="%BYTES_RECIEVED%\n"))
    with pytest.raises(ConfigError, match="did you mean %BYTES_RECEIVED%") as e:
        build_access_loggers(configs, path="http_connection_manager.access_log")
    assert e.value.path == "http_connection_manager.access_log[1].typed_config.log_format.text_format"


def test_an_unopenable_log_file_is_a_config_error_naming_the_path_field(tmp_path):
    with pytest.raises(ConfigError, match="cannot open access log file") as e:
        build_access_loggers((file_log_config(str(tmp_path / "no" / "such" / "dir.log")),))
    assert e.value.path == "access_log[0].typed_config.path"


# ---------------------------------------------------------------- loggers and sinks


def test_no_access_log_configured_means_no_loggers():
    assert build_access_loggers(()) == []


def test_a_file_access_log_appends_one_line_per_request(tmp_path):
    path = tmp_path / "access.log"
    (logger,) = build_access_loggers((file_log_config(str(path), text_format="%RESPONSE_CODE% %REQ(:PATH)%\n"),))
    logger.log(full_info())
    info = full_info()
    info.response_code, info.path = 503, "/other"
    logger.log(info)
    assert path.read_text() == "204 /api/v1/locations\n503 /other\n"


def test_a_file_access_log_without_format_uses_the_default(tmp_path):
    path = tmp_path / "access.log"
    (logger,) = build_access_loggers((file_log_config(str(path)),))
    logger.log(full_info())
    assert path.read_text() == Formatter.compile(None).format(full_info())


def test_json_file_access_log(tmp_path):
    path = tmp_path / "access.json"
    (logger,) = build_access_loggers((file_log_config(str(path), json_format={"code": "%RESPONSE_CODE%"}),))
    logger.log(full_info())
    assert json.loads(path.read_text()) == {"code": 204}


@pytest.mark.parametrize("type_name, stream", [
    ("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", "out"),
    ("envoy.extensions.access_loggers.stream.v3.StderrAccessLog", "err"),
])
def test_stdout_and_stderr_access_logs_write_to_the_process_streams(capfd, type_name, stream):
    config = decode(AccessLog, {"name": "x", "typed_config": {
        "@type": f"type.googleapis.com/{type_name}", "log_format": {"text_format": "%RESPONSE_CODE%\n"}}})
    (logger,) = build_access_loggers((config,))
    logger.log(full_info())
    captured = capfd.readouterr()
    assert getattr(captured, stream) == "204\n"


def test_a_file_log_at_dev_stdout_writes_to_the_process_stdout(capfd):
    (logger,) = build_access_loggers((file_log_config("/dev/stdout", text_format="%PROTOCOL%\n"),))
    logger.log(full_info())
    assert capfd.readouterr().out == "HTTP/2\n"


class ManualScheduler:
    """The injected `call_later`: records timers; the test fires them (no sleeping, no event loop)."""

    def __init__(self):
        self.timers: list["ManualTimer"] = []

    def __call__(self, delay, callback):
        timer = ManualTimer(delay, callback)
        self.timers.append(timer)
        return timer

    def fire(self):
        due, self.timers = [t for t in self.timers if not t.cancelled], []
        for timer in due:
            timer.callback()


class ManualTimer:
    def __init__(self, delay, callback):
        self.delay, self.callback, self.cancelled = delay, callback, False

    def cancel(self):
        self.cancelled = True


def test_with_a_scheduler_lines_are_buffered_until_the_flush_timer_fires(tmp_path):
    path = tmp_path / "access.log"
    scheduler = ManualScheduler()
    manager = AccessLogManager(scheduler=scheduler, flush_interval=1.0)
    (logger,) = build_access_loggers((file_log_config(str(path), text_format="%RESPONSE_CODE%\n"),),
                                     manager=manager)
    for _ in range(3):
        logger.log(full_info())
    assert path.read_text() == ""
    assert [t.delay for t in scheduler.timers] == [1.0]  # one timer for the batch, not one per line
    scheduler.fire()
    assert path.read_text() == "204\n" * 3
    logger.log(full_info())
    assert len(scheduler.timers) == 1  # the next line arms the timer again
    manager.close()


def test_a_full_buffer_is_written_without_waiting_for_the_timer(tmp_path):
    path = tmp_path / "access.log"
    log_file = LogFile(str(path), scheduler=ManualScheduler(), flush_min_size=64 * 1024)
    line = "x" * 1023 + "\n"
    for _ in range(63):
        log_file.write(line)
    assert path.read_text() == ""
    log_file.write(line)  # 64 KiB buffered
    assert path.read_text() == line * 64
    assert log_file.buffered_bytes == 0
    log_file.close()


def test_close_writes_what_is_buffered_and_cancels_the_timer(tmp_path):
    path = tmp_path / "access.log"
    scheduler = ManualScheduler()
    log_file = LogFile(str(path), scheduler=scheduler)
    log_file.write("last words\n")
    log_file.close()
    assert path.read_text() == "last words\n"
    assert scheduler.timers[0].cancelled


def test_loggers_on_one_path_share_one_file_across_config_versions(tmp_path):
    path = tmp_path / "access.log"
    scheduler = ManualScheduler()
    manager = AccessLogManager(scheduler=scheduler)
    first = build_access_loggers((file_log_config(str(path), text_format="a %RESPONSE_CODE%\n"),), manager=manager)
    second = build_access_loggers((file_log_config(str(path), text_format="b %RESPONSE_CODE%\n"),), manager=manager)
    assert first[0].file is second[0].file
    first[0].log(full_info())
    second[0].log(full_info())
    first[0].log(full_info())
    manager.flush()
    assert path.read_text() == "a 204\nb 204\na 204\n"
    manager.close()


def test_reopen_follows_a_rotated_log_file(tmp_path):
    path = tmp_path / "access.log"
    manager = AccessLogManager()
    (logger,) = build_access_loggers((file_log_config(str(path), text_format="%REQ(:PATH)%\n"),), manager=manager)
    logger.log(full_info())
    os.rename(path, tmp_path / "access.log.1")
    manager.reopen()
    info = full_info()
    info.path = "/after-rotation"
    logger.log(info)
    manager.close()
    assert (tmp_path / "access.log.1").read_text() == "/api/v1/locations\n"
    assert path.read_text() == "/after-rotation\n"


def test_file_stats_count_buffered_completed_and_timer_flushes(tmp_path):
    from pyproxy.observe.stats import Stats

    stats = Stats()
    scheduler = ManualScheduler()
    log_file = LogFile(str(tmp_path / "a.log"), scheduler=scheduler, stats=stats)
    log_file.write("1\n")
    log_file.write("2\n")
    scheduler.fire()
    assert stats.counter("filesystem.write_buffered").value == 2
    assert stats.counter("filesystem.write_completed").value == 1
    assert stats.counter("filesystem.flushed_by_timer").value == 1
    log_file.close()


def test_a_failed_write_is_counted_not_raised(tmp_path):
    from pyproxy.observe.stats import Stats

    stats = Stats()
    log_file = LogFile(str(tmp_path / "a.log"), stats=stats)
    os.close(log_file.fd)  # the descriptor goes bad under the logger
    log_file.write("lost\n")
    assert stats.counter("filesystem.write_failed").value == 1
    log_file.fd = -1


def test_formatters_have_a_readable_repr():
    assert "TextFormatter('%PROTOCOL%')" == repr(TextFormatter("%PROTOCOL%"))


def test_text_format_source_reads_an_inline_string_or_a_file(tmp_path):
    inline = decode(SubstitutionFormatString, {"text_format_source": {"inline_string": "%PROTOCOL%\n"}})
    assert Formatter.compile(inline).format(full_info()) == "HTTP/2\n"
    fmt_file = tmp_path / "format.txt"
    fmt_file.write_text("%RESPONSE_CODE%")
    from_file = decode(SubstitutionFormatString, {"text_format_source": {"filename": str(fmt_file)}})
    assert Formatter.compile(from_file).format(full_info()) == "204"


def test_a_missing_text_format_source_file_is_a_config_error(tmp_path):
    missing = decode(SubstitutionFormatString, {"text_format_source": {"filename": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match="cannot read") as e:
        Formatter.compile(missing, path="log_format")
    assert e.value.path == "log_format.text_format_source.filename"


def test_text_format_source_inline_bytes_that_are_not_base64_is_a_config_error():
    bad = SubstitutionFormatString(text_format_source=DataSource(inline_bytes="%%%not base64"))
    with pytest.raises(ConfigError, match="not base64") as e:
        Formatter.compile(bad, path="log_format")
    assert e.value.path == "log_format.text_format_source.inline_bytes"


def test_a_log_format_with_only_omit_empty_values_uses_the_default_format():
    fmt = Formatter.compile(SubstitutionFormatString(omit_empty_values=True))
    assert fmt.format(full_info()).startswith('[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204')


async def test_the_scheduler_can_be_the_event_loops_call_later(tmp_path):
    import asyncio

    path = tmp_path / "access.log"
    log_file = LogFile(str(path), scheduler=asyncio.get_running_loop().call_later, flush_interval=3600)
    log_file.write("buffered\n")
    handle = log_file._timer
    assert isinstance(handle, asyncio.TimerHandle) and not handle.cancelled()
    assert path.read_text() == ""
    log_file.close()  # shutdown writes what is left and cancels the loop's timer
    assert handle.cancelled()
    assert path.read_text() == "buffered\n"
