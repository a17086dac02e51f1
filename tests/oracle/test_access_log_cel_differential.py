"""Access-log CEL filters (what istiod emits for Telemetry `accessLogging[].filter.expression`): the same
bootstrap served by real Envoy and by pyproxy, the same requests to both; the requests each one logged must be
the same. Each expression in the table gets a listener of its own on both proxies."""
from __future__ import annotations

import json
import pathlib

import pytest

from tests.support.client import fetch
from tests.support.envoy import EnvoyProcess, require_envoy
from tests.support.proxy import FILE_LOG_TYPE, HCM_TYPE, ROUTER_TYPE, cluster, route, run_proxy, socket_address
from tests.support.upstream import TestUpstream

CEL = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
EXPRESSIONS = [
    "response.code >= 400",
    "response.code == 404 || response.code == 503",
    "!(response.code < 500)",
    "'x-debug' in request.headers",
    "request.headers['x-debug'] == 'on'",
    "request.method == 'POST' && response.code >= 200",
    "request.url_path == '/status/404'",
    "connection.mtls",
    "!connection.mtls && response.code >= 500",
    "size(request.path) > 12",
    "response.code == '200'",
    "destination.port > 1 && source.port > 1 && response.code == 404",
]
REQUESTS = [("GET", "/status/200", []), ("GET", "/status/404", []), ("GET", "/status/503", []),
            ("POST", "/status/201", []), ("GET", "/status/200", [("x-debug", "on")]),
            ("GET", "/status/500", [("X-Debug", "off")]), ("GET", "/a/very/long/path/200", [])]


def config(tmp: pathlib.Path, upstream: int, tag: str) -> dict:
    listeners = []
    for i, expr in enumerate(EXPRESSIONS):
        log = {"name": "envoy.access_loggers.file",
               "filter": {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel",
                                               "typed_config": {"@type": CEL, "expression": expr}}},
               "typed_config": {"@type": FILE_LOG_TYPE, "path": str(tmp / f"{tag}-{i}.log"),
                                "log_format": {"json_format": {"m": "%REQ(:METHOD)%", "p": "%REQ(:PATH)%",
                                                               "d": "%REQ(X-DEBUG)%"}}}}
        hcm = {"@type": HCM_TYPE, "stat_prefix": f"l{i}", "access_log": [log],
               "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [route("/", "up")]}]},
               "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}]}
        listeners.append({"name": f"l{i}", "address": socket_address(0), "filter_chains": [{"filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]})
    return {"static_resources": {"listeners": listeners, "clusters": [cluster("up", [upstream])]}}


def logged(tmp: pathlib.Path, tag: str, i: int) -> list[tuple]:
    path = tmp / f"{tag}-{i}.log"
    if not path.exists():
        return []
    return [tuple(sorted(json.loads(line).items())) for line in path.read_text().splitlines() if line.strip()]


async def send_all(ports: list[int]) -> None:
    for port in ports:
        for method, path, headers in REQUESTS:
            await fetch(port, method, path, headers)


async def test_cel_access_log_filters_log_what_envoy_logs(tmp_path: pathlib.Path):
    require_envoy()
    upstream = await TestUpstream().start()
    envoy = EnvoyProcess(config(tmp_path, upstream.port, "envoy"), tmp_path)
    try:
        envoy.start()
        await envoy.wait_ready()
        await send_all(envoy.listener_ports)
        async with run_proxy(config(tmp_path, upstream.port, "pyproxy")) as proxy:
            ports = [rt.port for rt in proxy.server.listeners.values()]
            await send_all(ports)
            proxy.server.access_logs.flush()
    finally:
        envoy.stop()  # Envoy flushes its access logs when it stops
        await upstream.close()
    table = {expr: (logged(tmp_path, "envoy", i), logged(tmp_path, "pyproxy", i)) for i, expr in enumerate(EXPRESSIONS)}
    assert any(e for e, _ in table.values()) and any(not e for e, _ in table.values())  # the table discriminates
    for expr, (expected, actual) in table.items():
        assert actual == expected, f"{expr!r}: Envoy logged {expected}, pyproxy {actual}"


async def test_conversion_functions_are_refused_by_both(tmp_path: pathlib.Path):
    """Envoy 1.40 refuses `string(...)` in an access-log filter ("No overload found"); so does pyproxy."""
    require_envoy()
    cfg = config(tmp_path, 1, "refused")
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"][0]["filter"]["extension_filter"]["typed_config"]["expression"] = "string(response.code) == '1'"
    cfg["static_resources"]["listeners"] = cfg["static_resources"]["listeners"][:1]
    envoy = EnvoyProcess(cfg, tmp_path)
    try:
        envoy.start()
        with pytest.raises(AssertionError) as refused:
            await envoy.wait_ready()
        assert "No overload found" in str(refused.value)
    finally:
        envoy.stop()
    with pytest.raises(Exception) as ours:
        async with run_proxy(cfg):
            pass
    assert "string() at position 0: no overload" in str(ours.value)
