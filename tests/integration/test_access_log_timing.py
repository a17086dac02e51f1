"""The access log's durations through a real proxy: which moment each one ends at (and the upstream address).

Envoy's `%DURATION%` is the whole exchange (start to the last byte sent downstream), `%REQUEST_DURATION%`
ends at the request's last byte received, `%REQUEST_TX_DURATION%` at its last byte sent upstream,
`%RESPONSE_DURATION%` at the upstream's first byte, and `%RESPONSE_TX_DURATION%` runs from that first byte to
the last byte sent downstream; `x-envoy-upstream-service-time` counts from the downstream request's end.
Two slow exchanges tell them apart: an origin that waits before answering, and a client that waits before
sending its body; a third, a retried request whose first try failed after the wait, shows that the
answering try's moments and the service time count through the failed try. Each duration is classed as slow
(≥ the wait), fast, or `-` (no upstream). The same table
is what real Envoy 1.40 logs for the same bootstrap and bytes (tests/oracle/test_access_log_timing_differential.py).
`%UPSTREAM_LOCAL_ADDRESS%`, the proxy's end of the upstream connection, rides along: set when an upstream
answered, `-` for a direct response.
"""
from __future__ import annotations

import asyncio
import json
import pathlib

from tests.support.client import RawClient, request_bytes
from tests.support.proxy import FILE_LOG_TYPE, HCM_TYPE, ROUTER_TYPE, cluster, route, run_proxy, socket_address
from tests.support.upstream import TestUpstream

WAIT_S = 0.3
FIELDS = {"path": "%REQ(:PATH)%", "duration": "%DURATION%", "request": "%REQUEST_DURATION%",
          "request_tx": "%REQUEST_TX_DURATION%", "response": "%RESPONSE_DURATION%",
          "response_tx": "%RESPONSE_TX_DURATION%", "service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
          "upstream_local": "%UPSTREAM_LOCAL_ADDRESS%"}
EXPECTED = {  # what Envoy 1.40 logs (the oracle test checks this table against it)
    f"/delay/{WAIT_S}": {"duration": "slow", "request": "fast", "request_tx": "fast", "response": "slow",
                         "response_tx": "fast", "service_time": "slow", "upstream_local": "127.0.0.1:port"},
    "/slow-upload": {"duration": "slow", "request": "slow", "request_tx": "slow", "response": "slow",
                     "response_tx": "fast", "service_time": "fast", "upstream_local": "127.0.0.1:port"},
    "/direct": {"duration": "fast", "request": "fast", "request_tx": "-", "response": "-",
                "response_tx": "-", "service_time": "-", "upstream_local": "-"},
    # a retried request whose first try failed slowly: the answering try's moments count from the stream's
    # start, and the service time from the downstream request's end, both through the failed try
    f"/fail-first/{WAIT_S}": {"duration": "slow", "request": "fast", "request_tx": "slow", "response": "slow",
                              "response_tx": "fast", "service_time": "slow", "upstream_local": "127.0.0.1:port"},
}


def config(log_path: pathlib.Path, upstream_port: int) -> dict:
    retried = route("/fail-first/", "up", retry_policy={"retry_on": "5xx", "num_retries": 1,
                                                        "retry_back_off": {"base_interval": "0.001s"}})
    routes = [{"match": {"path": "/direct"}, "direct_response": {"status": 204}}, retried, route("/", "up")]
    hcm = {"@type": HCM_TYPE, "stat_prefix": "timing",
           "access_log": [{"name": "envoy.access_loggers.file",
                           "typed_config": {"@type": FILE_LOG_TYPE, "path": str(log_path),
                                            "log_format": {"json_format": FIELDS}}}],
           "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": routes}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}]}
    listener = {"name": "timing", "address": socket_address(0), "filter_chains": [{"filters": [
        {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}
    return {"static_resources": {"listeners": [listener], "clusters": [cluster("up", [upstream_port])]}}


async def exchanges(port: int) -> None:
    """The four exchanges, one connection each, each read to its end."""
    async with await RawClient.connect(port) as c:
        await c.send(request_bytes("GET", f"/delay/{WAIT_S}"))
        assert (await c.read_response()).status == 200
    async with await RawClient.connect(port) as c:
        await c.send(request_bytes("POST", "/slow-upload", [("Content-Length", "4")]))
        await asyncio.sleep(WAIT_S)  # the client's wait, between its head and its body
        await c.send(b"body")
        assert (await c.read_response()).status == 200
    async with await RawClient.connect(port) as c:
        await c.send(request_bytes("GET", "/direct"))
        assert (await c.read_response()).status == 204
    async with await RawClient.connect(port) as c:
        await c.send(request_bytes("GET", f"/fail-first/{WAIT_S}"))
        assert (await c.read_response()).status == 200  # the retry's answer


def classify(log_path: pathlib.Path) -> dict[str, dict[str, str]]:
    """Each logged request's durations as slow / fast / -; slow is at least the wait, fast well under it."""
    table = {}
    for line in log_path.read_text().splitlines():
        entry = json.loads(line)
        row = {}
        for name in FIELDS:
            if name == "path":
                continue
            value = entry[name]
            if value is None or value == "-":
                row[name] = "-"
            elif name == "upstream_local":  # the proxy's end of the upstream connection: which port varies
                host, _, port = str(value).rpartition(":")
                row[name] = f"{host}:port" if port.isdigit() and int(port) > 0 else str(value)
            else:
                ms = int(value)
                assert not WAIT_S * 1000 / 2 < ms < WAIT_S * 1000, f"{entry['path']} {name}={ms} ms: neither"
                row[name] = "slow" if ms >= WAIT_S * 1000 else "fast"
        table[entry["path"]] = row
    return table


async def test_each_duration_ends_where_envoy_ends_it(tmp_path: pathlib.Path):
    upstream = await TestUpstream().start()
    log_path = tmp_path / "timing.log"
    try:
        async with run_proxy(config(log_path, upstream.port)) as proxy:
            await exchanges(next(iter(proxy.server.listeners.values())).port)
            proxy.server.access_logs.flush()
    finally:
        await upstream.close()
    assert classify(log_path) == EXPECTED
