"""The CEL subset behind access-log filters (what istiod emits for Telemetry `accessLogging[].filter`), as a
table, and the filter wired into an access logger built from Envoy config."""
from __future__ import annotations

import pytest

from pyproxy.config.decode import ConfigError, decode
from pyproxy.config.model import AccessLog
from pyproxy.http.headers import Headers
from pyproxy.observe.access_log import AccessLogManager, build_access_loggers
from pyproxy.observe.cel import CelError, compile_filter
from pyproxy.observe.stream_info import StreamInfo


class _Tls:
    def __init__(self, peer: bool):
        self.peer_presented = peer


def info(code=200, headers=(("x-debug", "1"), ("User-Agent", "curl")), method="GET", path="/api/x?q=1",
         mtls=False) -> StreamInfo:
    i = StreamInfo(0.0, 0.0)
    i.response_code, i.method, i.path, i.authority = code, method, path, "shop.example.com"
    i.request_headers = Headers(list(headers))
    i.downstream_tls = _Tls(True) if mtls else None
    return i


@pytest.mark.parametrize("expr,kwargs,expected", [
    ("response.code >= 400", {"code": 503}, True),
    ("response.code >= 400", {"code": 200}, False),
    ("response.code == 404 || response.code == 503", {"code": 404}, True),
    ("response.code != 200 && request.method == 'POST'", {"code": 500, "method": "POST"}, True),
    ("response.code != 200 && request.method == 'POST'", {"code": 500}, False),
    ("!(response.code < 500)", {"code": 502}, True),
    ("'x-debug' in request.headers", {}, True),
    ("'X-DEBUG' in request.headers", {}, True),  # Envoy lowers header keys
    ("'x-debug' in request.headers", {"headers": ()}, False),
    ("has(request.headers.x_trace)", {"headers": (("x_trace", "1"),)}, True),
    ("request.headers['user-agent'] == \"curl\"", {}, True),
    ("request.headers['missing'] == 'x'", {}, False),  # evaluation error: do not log
    ("connection.mtls", {"mtls": True}, True),
    ("connection.mtls", {}, False),
    ("!connection.mtls && response.code >= 400", {"code": 403}, True),
    ("request.url_path == '/api/x'", {}, True),
    ("response.code == '200'", {}, False),  # CEL: no int/string equality
    ("size(request.path) > 5", {}, True),
    ("response.code < 200", {}, False),
    ("response.code <= 200", {}, True),
    ("response.code > 200", {}, False),
    ("response.code >= 200", {}, True),
    ("response.code >= 201", {}, False),
    ("response.code != '200'", {}, False),  # no int/string inequality either: an error, do not log
    ("'200' != response.code", {}, False),
    ("response.code == 200  ", {}, True),  # trailing blanks
    ("request.method in request.headers", {"headers": (("get", "1"),)}, True),
    ("request.headers[request.method] == '1'", {"headers": (("get", "1"),)}, True),
])
def test_expression(expr, kwargs, expected):
    assert compile_filter(expr)(info(**kwargs)) is expected


@pytest.mark.parametrize("expr,says", [
    ("response.codes >= 400", "unknown attribute 'response.codes' at position 0"),
    ("response.code >= ", "at position"),
    ("response.code >> 4", "unexpected"),
    ("request.headers['a'] ~ 1", "unexpected character '~'"),
    ("string(response.code) == '200'", "string() at position 0: no overload in an access-log filter (Envoy's CEL "
                                       "refuses it too)"),
    ("response.code == ", "unexpected 'end of expression' at position 16"),
    ("response.code == )", "unexpected ')' at position 17"),
    ("response.code request.method", "unexpected 'request' at position 14"),
    ("foo(1)", "unknown attribute 'foo' at position 0 (supported: response.code, response.code_details, "
               "response.size, response.flags, response.headers, request.method, "),
    ("request.headers['a') == 'x'", "expected ']' at position 19, found ')'"),
    ("int(response.code) == 200", "int() at position 0: no overload in an access-log filter"),
    ("has(1)", "has() takes a field selection (a.b.c) at position 4"),
    ("has(request.bogus)", "has(request.bogus) at position 0: unknown attribute"),
    ("request.1 == 1", "expected a field name at position 8"),
    ("(response.code == 200", "expected ')' at position 21, found 'the end'"),
    ("response.code == 200 200", "unexpected 200 at position 21"),
    ("has(request.method]", "expected ')' at position 18, found ']'"),
    ("size(request.path] > 1", "expected ')' at position 17, found ']'"),
    ("has(filter_state.downstream_peer)", "has(filter_state.downstream_peer) at position 0: unknown attribute"),
])
def test_outside_the_subset_is_a_config_error_naming_the_place(expr, says):
    with pytest.raises(CelError) as e:
        compile_filter(expr)
    assert says in str(e.value)


def _logger(tmp_path, expression: str):
    cfg = decode(AccessLog, {
        "name": "envoy.access_loggers.file",
        "filter": {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": expression}}},
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                         "path": str(tmp_path / "a.log"),
                         "log_format": {"text_format_source": {"inline_string": "%RESPONSE_CODE%\n"}}}})
    return build_access_loggers([cfg], manager=AccessLogManager())


def test_filtered_logger_writes_only_matching_requests(tmp_path):
    (logger,) = _logger(tmp_path, "response.code >= 400")
    for code in (200, 404, 204, 503):
        logger.log(info(code=code))
    assert (tmp_path / "a.log").read_text().split() == ["404", "503"]


def test_bad_expression_rejects_the_config_by_field(tmp_path):
    with pytest.raises(ConfigError) as e:
        _logger(tmp_path, "response.code >=")
    assert "access_log[0].filter.extension_filter.typed_config.expression" in str(e.value)


def test_metric_dimension_values():
    from pyproxy.observe.cel import compile_value
    assert compile_value("string(response.code)")(info(code=404)) == "404"
    assert compile_value("request.headers['x-debug']")(info()) == "1"
    assert compile_value("request.headers['nope']")(info()) == "unknown"
    assert compile_value("connection.mtls")(info(mtls=True)) == "true"
    assert compile_value("'literal'")(info()) == "literal"
    assert compile_value("'it\\'s'")(info()) == "it's"  # a backslash escapes the next character
    i = info()
    i.downstream_local_address, i.downstream_remote_address = "10.0.0.1:9080", "[::1]:5555"
    assert (compile_value("string(destination.port)")(i), compile_value("source.port")(i)) == ("9080", "5555")
    assert compile_filter("destination.port == 9080")(i) is True
    for address in ("10.0.0.1:", "10.0.0.1:http", "8080"):  # no port after a colon: an evaluation error
        i.downstream_remote_address = address
        assert (compile_value("source.port")(i), compile_filter("source.port > 0")(i)) == ("unknown", False)
    assert compile_value("string(request.method)")(info()) == "GET"  # only booleans are lowered
    with pytest.raises(CelError, match=r"^has\(foo\.bar\) at position 0: unknown attribute$"):
        compile_value("has(foo.bar)")


@pytest.mark.parametrize("expr, expected", [
    ("response.headers['x'] == 'a'", False),  # no response headers: an empty map, the key missing: do not log
    ("has(response.headers.x)", False),
    ("has(request.method)", True),  # a field of the request: always present
    ("source.port == 8080", False),  # no remote address: no port, an evaluation error
    ("response.code < 'a'", False),  # no ordering between int and string
    ("connection.mtls < true", False),  # nor between booleans
    ("1 in request.headers", False),  # `in` needs a string key
    ("'x' in response.code", False),  # ... and a map
    ("response.code['a'] == 1", False),  # indexing needs a map
    ("request.headers[1] == 'a'", False),  # ... and a string key
    ("true", True),
    ("null == null", True),
    ("false || (response.code == 200 && !false)", True),
])
def test_evaluation_errors_do_not_log(expr, expected):
    assert compile_filter(expr)(info()) is expected


def test_int_and_string_conversions_in_metric_values():
    from pyproxy.observe.cel import compile_value
    i = info(headers=(("x-n", "42"), ("x-s", "abc")))
    assert compile_value("int(request.headers['x-n'])")(i) == "42"
    assert compile_value("int(request.headers['x-s'])", default="none")(i) == "none"  # not a number
    assert compile_value("string(connection.mtls)")(i) == "false"
    assert compile_value("null")(i) == "unknown"  # no value: the default


def test_peer_metadata_is_read_in_metric_dimensions_only():
    """`filter_state.downstream_peer` / `upstream_peer` (Istio's peer metadata) are dimension attributes: the
    istio.stats filter evaluates with the peers beside the StreamInfo; an access-log filter has no peers."""
    from types import SimpleNamespace

    from pyproxy.observe.cel import CelError, compile_filter, compile_value
    from pyproxy.observe.istio_metrics import PeerMetadata

    peer = PeerMetadata(workload="reviews-v2", namespace="bookinfo", app="reviews", version="v2",
                        canonical_service="reviews", canonical_revision="v2", cluster="Kubernetes")
    seen = SimpleNamespace(downstream_peer=peer, upstream_peer=None, method="GET")
    values = {expr: compile_value(expr)(seen) for expr in (
        "filter_state.downstream_peer.app", "filter_state.downstream_peer.workload",
        "filter_state.downstream_peer.name", "filter_state.downstream_peer.service",
        "filter_state.downstream_peer.revision", "filter_state.downstream_peer.cluster",
        "filter_state.downstream_peer.labels['version']", "filter_state.upstream_peer.app",
        "filter_state.downstream_peer.labels['app']", "string(has(filter_state.upstream_peer))",
        "string(has(filter_state.downstream_peer))", "string(has(filter_state.upstream_peer.app))")}
    assert values == {
        "filter_state.downstream_peer.app": "reviews", "filter_state.downstream_peer.workload": "reviews-v2",
        "filter_state.downstream_peer.name": "reviews-v2", "filter_state.downstream_peer.service": "reviews",
        "filter_state.downstream_peer.revision": "v2", "filter_state.downstream_peer.cluster": "Kubernetes",
        "filter_state.downstream_peer.labels['version']": "v2",
        "filter_state.upstream_peer.app": "unknown",  # no peer on that side: the dimension's default
        "filter_state.downstream_peer.labels['app']": "reviews", "string(has(filter_state.upstream_peer))": "false",
        "string(has(filter_state.downstream_peer))": "true", "string(has(filter_state.upstream_peer.app))": "false"}
    bare = SimpleNamespace(method="GET")  # a StreamInfo with no peers beside it at all
    assert [compile_value(e)(bare) for e in ("filter_state.upstream_peer.app", "string(has(filter_state.upstream_peer))",
                                             "filter_state.downstream_peer")] == ["unknown", "false", "unknown"]
    with pytest.raises(CelError, match="unknown attribute 'filter_state.downstream_peer.type'"):
        compile_value("filter_state.downstream_peer.type")
    with pytest.raises(CelError, match="unknown attribute 'filter_state.downstream_peer.app'"):
        compile_filter("filter_state.downstream_peer.app == 'reviews'")
