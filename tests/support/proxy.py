"""Build Envoy v3 bootstraps for tests and run a `ProxyServer` in the test's event loop.

`bootstrap(...)` returns a plain dict (what a user would write in YAML): one listener on 127.0.0.1:0
with an inline route_config, one STATIC cluster per entry of `clusters`, and optional access log,
limits, timeouts and HTTP/1 options. `run_proxy(dict)` decodes it with the project's own decoder
(`pyproxy.config.decode.decode(Bootstrap, ...)`), applies it to a fresh `ProxyServer` and stops the
server on exit. The access log is JSON lines (`ACCESS_LOG_FIELDS`) so a test reads flags and details
by name.
"""
from __future__ import annotations

import json
import pathlib
import random
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from pyproxy.config.decode import decode
from pyproxy.config.model import Bootstrap
from pyproxy.server import ProxyServer

from .client import RawClient, Response, fetch

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

ACCESS_LOG_FIELDS = {
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "code": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "upstream_host": "%UPSTREAM_HOST%",
    "cluster": "%UPSTREAM_CLUSTER%",
}


# HCM options that make the test client (on loopback) an internal client, whose x-envoy-* request headers
# (x-envoy-retry-on, x-envoy-max-retries, timeouts...) Envoy honours: the peer address counts
# (use_remote_address) and loopback is internal. Envoy 1.40's default internal_address_config is empty:
# without it every client is external and those headers are removed.
INTERNAL_LOOPBACK = {"use_remote_address": True,
                     "internal_address_config": {"cidr_ranges": [{"address_prefix": "127.0.0.0", "prefix_len": 8}]}}


def socket_address(port: int, address: str = "127.0.0.1") -> dict:
    return {"socket_address": {"address": address, "port_value": port}}


def cluster(name: str, ports: list[int], *, connect_timeout: str = "1s", **extra: Any) -> dict:
    """A STATIC cluster of 127.0.0.1 endpoints (an empty list: a cluster with no hosts)."""
    c = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(p)}} for p in ports]}],
        },
    }
    c.update(extra)
    return c


def route(prefix: str, cluster_name: str, *, timeout: str | None = "5s", **action: Any) -> dict:
    r: dict[str, Any] = {"cluster": cluster_name, **action}
    if timeout is not None:
        r["timeout"] = timeout
    return {"match": {"prefix": prefix}, "route": r}


def virtual_host(name: str, domains: list[str], routes: list[dict]) -> dict:
    return {"name": name, "domains": domains, "routes": routes}


def file_access_log(path: str | pathlib.Path, fields: dict[str, str] | None = None) -> dict:
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {"@type": FILE_LOG_TYPE, "path": str(path),
                         "log_format": {"json_format": fields or ACCESS_LOG_FIELDS}},
    }


def bootstrap(clusters: dict[str, list[int]] | list[dict], *, virtual_hosts: list[dict] | None = None,
              routes: list[dict] | None = None, route_timeout: str | None = "5s",
              access_log: str | pathlib.Path | None = None, hcm: dict | None = None,
              listener_port: int = 0, listener_name: str = "listener_0",
              admin_port: int | None = None) -> dict:
    """A bootstrap dict. `clusters`: {name: [ports]} or full cluster dicts. Without `virtual_hosts` or
    `routes`, everything goes to the first cluster (route `timeout` = `route_timeout`). `hcm` entries are
    merged into the HttpConnectionManager (e.g. `request_headers_timeout`, `http_protocol_options`)."""
    cl = [cluster(n, p) for n, p in clusters.items()] if isinstance(clusters, dict) else list(clusters)
    if virtual_hosts is None:
        if routes is None:
            routes = [route("/", cl[0]["name"], timeout=route_timeout)]
        virtual_hosts = [virtual_host("default", ["*"], routes)]
    manager: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress_http",
        "route_config": {"name": "local_route", "virtual_hosts": virtual_hosts},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    if access_log is not None:
        manager["access_log"] = [file_access_log(access_log)]
    manager.update(hcm or {})
    b: dict[str, Any] = {
        "static_resources": {
            "listeners": [{
                "name": listener_name,
                "address": socket_address(listener_port),
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": manager}]}],
            }],
            "clusters": cl,
        }
    }
    if admin_port is not None:
        b["admin"] = {"address": socket_address(admin_port)}
    return b


def decode_bootstrap(data: dict) -> Bootstrap:
    return decode(Bootstrap, data)


def listeners_and_clusters(data: dict):
    """(listeners, clusters) of a bootstrap dict, for `ProxyServer.apply`."""
    sr = decode_bootstrap(data).static_resources
    return sr.listeners, sr.clusters


class RunningProxy:
    """A started `ProxyServer` and what a test needs to talk to it."""

    def __init__(self, server: ProxyServer, config: dict, access_log: pathlib.Path | None):
        self.server = server
        self.config = config
        self.access_log_path = access_log

    @property
    def port(self) -> int:
        return next(iter(self.server.listeners.values())).port

    async def connect(self) -> RawClient:
        return await RawClient.connect(self.port)

    async def fetch(self, method: str = "GET", path: str = "/", headers=None, body: bytes = b"",
                    **kw: Any) -> Response:
        return await fetch(self.port, method, path, headers, body, **kw)

    def access_log(self) -> list[dict[str, Any]]:
        """The access log entries written so far (flushes the buffered lines first)."""
        if self.server.access_logs is not None:
            self.server.access_logs.flush()
        assert self.access_log_path is not None, "bootstrap built without access_log"
        if not self.access_log_path.exists():
            return []
        return [json.loads(line) for line in self.access_log_path.read_text().splitlines() if line.strip()]

    def stat(self, name: str) -> int:
        """A counter or gauge by full name, after publishing the pure modules' counts. Raises KeyError for a
        name the proxy never created, so `stat("...typo") == 0` cannot pass by accident; use `stat_or_absent`
        where "never created" is the expected answer."""
        value = self.stat_or_absent(name)
        if value is None:
            raise KeyError(f"no stat named {name!r} (use stat_or_absent when absence is expected)")
        return value

    def stat_or_absent(self, name: str) -> int | None:
        """The stat's value, or None when the proxy never created it (Envoy creates most stats lazily)."""
        st = self.server.collect_stats()
        for s in [*st.counters(), *st.gauges()]:
            if s.name == name:
                return s.value
        return None


@asynccontextmanager
async def run_proxy(config: dict, seed: int | None = None) -> AsyncIterator[RunningProxy]:
    """Start a proxy for `config` (a bootstrap dict) in this event loop; stop it on exit. With `seed`, its
    `ProxyServer` draws from `random.Random(seed)`, so a statistical test is the same run every time."""
    server = ProxyServer(drain_time=0.5, rng=None if seed is None else random.Random(seed))
    log = _access_log_path(config)
    try:
        await server.apply_bootstrap(decode_bootstrap(config))
        yield RunningProxy(server, config, log)
    finally:
        await server.stop()


def _access_log_path(config: dict) -> pathlib.Path | None:
    for lis in config["static_resources"]["listeners"]:
        for chain in lis["filter_chains"]:
            for f in chain["filters"]:
                for al in f["typed_config"].get("access_log", ()):
                    path = al.get("typed_config", {}).get("path")
                    if path:
                        return pathlib.Path(path)
    return None
