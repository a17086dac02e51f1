"""Oracle: one tcp_proxy bootstrap run by real Envoy and by pyproxy (`pyproxy run`, a real subprocess).

The same client talks to each: bytes echoed both ways and a FIN passed on while the other direction keeps
flowing (the echo server answers `bye` after the client's FIN), an upstream close reaching the client as EOF,
and a connection to a cluster whose only host refuses closed without a byte. The access-log lines (flags, byte
counts, cluster) must match too.
"""
from __future__ import annotations

import asyncio
import json
import socket

from tests.support.envoy import require_envoy, start_either
from tests.support.proxy import FILE_LOG_TYPE, cluster, socket_address
from tests.support.tcp import TCP_PROXY, EchoServer, exchange

LOG = {"flags": "%RESPONSE_FLAGS%", "rx": "%BYTES_RECEIVED%", "tx": "%BYTES_SENT%", "cluster": "%UPSTREAM_CLUSTER%"}


def _listener(name: str, cluster_name: str, log_path) -> dict:
    return {"name": name, "address": socket_address(0), "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": TCP_PROXY, "stat_prefix": name, "cluster": cluster_name,
            "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                "@type": FILE_LOG_TYPE, "path": str(log_path), "log_format": {"json_format": LOG}}}]}}]}]}


def tcp_bootstrap(echo_port: int, dead_port: int, log_path) -> dict:
    return {"static_resources": {
        "listeners": [_listener("echo", "echo", log_path), _listener("dead", "dead", log_path)],
        "clusters": [cluster("echo", [echo_port]), cluster("dead", [dead_port])]}}


async def _read_log(path, n: int) -> list[dict]:
    for _ in range(500):
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines()]
            if len(lines) >= n:
                for e in lines:
                    if "UF" in e["flags"]:
                        # bytes the client sent before the refused connect was noticed: a race in Envoy and in
                        # pyproxy alike (0 or 5 in either), so not part of the comparison
                        e["rx"] = "-"
                return sorted(lines, key=lambda e: (e["cluster"], e["rx"] if isinstance(e["rx"], int) else -1))
        await asyncio.sleep(0.01)  # poll interval of a bounded wait
    raise AssertionError(f"{path}: fewer than {n} access-log lines")


async def observe(ports: list[int], echo: EchoServer, log_path) -> tuple:
    echo_port, dead_port = ports
    half_close, _ = await exchange(echo_port, b"0123456789" * 100)
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    writer.write(b"ping")
    await reader.readexactly(4)
    echo.conns[-1].transport.close()
    upstream_close = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    try:
        refused, _ = await exchange(dead_port, b"hello")
    except OSError:  # reset, or closed before our FIN could go out: nothing was answered either way
        refused = b""
    return half_close, upstream_close, refused, await _read_log(log_path, 3)


async def test_tcp_proxy_behaves_as_envoy(tmp_path):
    require_envoy()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    views = []
    for who in ("envoy", "pyproxy"):
        d = tmp_path / who
        d.mkdir()
        echo = await EchoServer("up").start()
        log_path = d / "tcp.log"
        proc, ports = await start_either(who, tcp_bootstrap(echo.port, dead, log_path), d)
        try:
            views.append(await observe(ports, echo, log_path))
        finally:
            proc.stop()
            await echo.close()
    envoy, pyproxy = views
    assert pyproxy == envoy
    half_close, upstream_close, refused, log = envoy
    assert half_close == b"0123456789" * 100 + b"up:bye:1000"
    assert (upstream_close, refused) == (b"", b"")
    assert [e["flags"] for e in log] == ["UF,URX", "-", "-"] and [e["rx"] for e in log] == ["-", 4, 1000]

