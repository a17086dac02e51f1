"""`pyproxy run` says when a local backend is not running (the front-proxy example's 503 puzzle)."""
from __future__ import annotations

import socket

from pyproxy.bootstrap import load_bootstrap
from pyproxy.cli import loopback_endpoints, unreachable_backends
from pyproxy.config.decode import decode
from pyproxy.config.model import Cluster


def cluster(name: str, host: str, port: int, type_: str = "STATIC") -> Cluster:
    return decode(Cluster, {"name": name, "type": type_, "load_assignment": {"cluster_name": name, "endpoints": [
        {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]}})


def test_the_front_proxy_examples_backend_is_a_local_endpoint():
    b = load_bootstrap("examples/static/front-proxy.yaml")
    assert loopback_endpoints(b.static_resources.clusters) == [("backend", "localhost", 8080)]


def test_only_loopback_endpoints_are_probed():
    assert loopback_endpoints([cluster("far", "10.1.2.3", 80), cluster("dns", "example.com", 80, "STRICT_DNS"),
                               cluster("near", "127.0.0.2", 81), cluster("eds", "127.0.0.1", 1, "EDS")]) == [
        ("near", "127.0.0.2", 81)]


async def test_a_listening_backend_is_quiet_and_a_missing_one_gets_one_line_with_the_fix():
    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen()
    down = socket.socket()
    down.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        lines = await unreachable_backends([cluster("up", "127.0.0.1", up.getsockname()[1]),
                                            cluster("down", "127.0.0.1", down.getsockname()[1])])
    finally:
        up.close()
        down.close()
    assert len(lines) == 1 and lines[0].startswith("cluster down: nothing listens on 127.0.0.1:")
    assert "503 (flag UF)" in lines[0] and "pyproxy.demo_app --port" in lines[0]
