"""The access log's durations, pyproxy against real Envoy: the same bootstrap and the same two slow exchanges
(an origin that waits before answering, a client that waits before its body), one direct response and one
retried request whose first try failed slowly; each
duration classed slow / fast / `-` must be the same in both logs (tests/integration/test_access_log_timing.py
has the table and checks pyproxy alone)."""
from __future__ import annotations

import pathlib

from tests.integration.test_access_log_timing import EXPECTED, classify, config, exchanges
from tests.support.envoy import EnvoyProcess, require_envoy
from tests.support.proxy import run_proxy
from tests.support.upstream import TestUpstream


async def test_durations_end_where_envoys_end(tmp_path: pathlib.Path):
    require_envoy()
    upstream = await TestUpstream().start()
    envoy_log, ours_log = tmp_path / "envoy-access.log", tmp_path / "pyproxy-access.log"
    envoy = EnvoyProcess(config(envoy_log, upstream.port), tmp_path)
    try:
        envoy.start()
        await envoy.wait_ready()
        await exchanges(envoy.listener_ports[0])
        upstream.fail_first_seen.clear()  # pyproxy's retried request meets a slow failure first too
        async with run_proxy(config(ours_log, upstream.port)) as proxy:
            await exchanges(next(iter(proxy.server.listeners.values())).port)
            proxy.server.access_logs.flush()
    finally:
        envoy.stop()  # Envoy flushes its access logs when it stops
        await upstream.close()
    expected = classify(envoy_log)
    assert expected == EXPECTED, "Envoy's own log no longer matches the table the pyproxy-only test checks"
    assert classify(ours_log) == expected
