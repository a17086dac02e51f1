"""A local backend that is not running is named once, with the fix (the front-proxy example's 503 puzzle)."""
from __future__ import annotations

import logging

from pyproxy.config.decode import decode
from pyproxy.config.model import Cluster
from pyproxy.observe.stats import Stats
from pyproxy.upstream.cluster_manager import ClusterRuntime


def runtime(host: str, type_: str = "STATIC") -> ClusterRuntime:
    return ClusterRuntime(decode(Cluster, {
        "name": "backend", "type": type_, "load_assignment": {"cluster_name": "backend", "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": 8080}}}}]}]}}),
        Stats())


def connect_failures(rt: ClusterRuntime, times: int) -> None:
    for _ in range(times):
        rt.limits.inc_connections()
        rt.stats_cx_active.inc()
        rt.on_connect_failure(rt.hosts[0])


def test_the_first_failed_connect_to_a_local_backend_is_named_once_with_the_command_that_starts_one(caplog):
    rt = runtime("127.0.0.1")
    with caplog.at_level(logging.WARNING, logger="pyproxy.upstream"):
        connect_failures(rt, 3)
    hints = [r.getMessage() for r in caplog.records]
    assert hints == ["cluster backend: nothing accepted a connection to 127.0.0.1:8080; requests routed there get "
                     "503 (flag UF) until a backend listens there (a test backend: .venv/bin/python -m "
                     "pyproxy.demo_app --port 8080)"]


def test_remote_backends_are_not_hinted(caplog):
    rt = runtime("10.1.2.3")
    with caplog.at_level(logging.WARNING, logger="pyproxy.upstream"):
        connect_failures(rt, 1)
    assert caplog.records == []
