"""The bundled load generator (benchmarks/loadgen.py) against real loopback servers on port 0.

Short runs (well under a second each); assertions are about counts and the ordering of percentiles, never
about how fast anything was.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from benchmarks import backend, loadgen

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def origin():
    """benchmarks/backend.py's server on 127.0.0.1:<free port>; yields its URL."""
    server = await backend.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/"
    server.close()


async def _serve_fixed(response: bytes, close_after: bool):
    """A server that answers every request with `response` (closing the connection after it if asked)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(response)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


def _assert_sane(latency) -> None:
    assert 0 < latency.p50_us <= latency.p90_us <= latency.p99_us <= latency.p999_us <= latency.max_us
    assert latency.mean_us > 0


async def test_open_loop_completes_every_scheduled_request(origin):
    result = await loadgen.run_open_loop(origin, rate=400, count=200, connections=4)
    assert result.mode == "open"
    assert (result.requested, result.completed, result.ok) == (200, 200, 200)
    assert result.errors == {"status": 0, "connect": 0, "read": 0, "timeout": 0}
    assert result.latency.count == 200 and len(result.samples_s) == 200
    _assert_sane(result.latency)
    assert result.send_lag is not None and result.send_lag.count == 200
    assert result.target_rps == 400 and result.achieved_rps > 0


async def test_the_polling_pacer_completes_every_scheduled_request_too(origin):
    result = await loadgen.run_open_loop(origin, rate=400, count=100, connections=4, pacer="spin")
    assert (result.requested, result.completed, result.ok) == (100, 100, 100)
    assert result.send_lag is not None and result.send_lag.count == 100


async def test_the_timer_clock_never_wakes_the_pacer_early():
    """A send must not leave before its time: each timerfd sleep lasts at least what was asked (sub-millisecond,
    which an event-loop timer cannot do), and the clock is released after."""
    loop = asyncio.get_running_loop()
    clock = loadgen._timer_clock(loop)
    assert clock is not None, "Linux has timerfd"
    try:
        for seconds in (0.0003, 0.0007, 0.002):
            began = time.monotonic()
            await asyncio.wait_for(clock.sleep(seconds), 5)  # bounded only against a hang
            assert time.monotonic() - began >= seconds
    finally:
        clock.close()
    with pytest.raises(OSError):
        loadgen.os.fstat(clock.fd)


async def test_closed_loop_stops_at_its_request_budget(origin):
    result = await loadgen.run_closed_loop(origin, connections=4, duration=5.0, max_requests=300)
    assert result.mode == "closed"
    assert (result.completed, result.ok) == (300, 300)
    assert sum(result.errors.values()) == 0
    _assert_sane(result.latency)
    assert result.send_lag is None


async def test_closed_loop_stops_at_its_duration(origin):
    result = await loadgen.run_closed_loop(origin, connections=2, duration=0.3)
    assert 0 < result.completed == result.ok < 10_000_000
    assert sum(result.errors.values()) == 0


async def test_non_2xx_answers_are_counted_as_status_errors():
    server, url = await _serve_fixed(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", False)
    try:
        result = await loadgen.run_open_loop(url, rate=500, count=50, connections=2)
    finally:
        server.close()
    assert (result.completed, result.ok, result.errors["status"]) == (50, 0, 50)


async def test_connection_close_answers_make_it_reconnect_and_finish():
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    server, url = await _serve_fixed(response, True)
    try:
        result = await loadgen.run_open_loop(url, rate=200, count=40, connections=2)
    finally:
        server.close()
    assert (result.completed, result.ok) == (40, 40)
    assert result.errors["read"] == 0 and result.errors["timeout"] == 0


async def test_a_refused_connection_is_a_clear_error():
    server, url = await _serve_fixed(b"", False)
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionError, match="cannot connect to 127.0.0.1"):
        await loadgen.run_open_loop(url, rate=100, count=5, connections=1)


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://10.0.0.1:80/", "only targets loopback"),
        ("http://example.com/", "only targets loopback"),
        ("https://127.0.0.1/", "only http://"),
    ],
)
def test_only_plain_http_to_loopback_is_accepted(url, problem):
    with pytest.raises(ValueError, match=problem):
        loadgen.parse_target(url)


def test_target_keeps_port_path_and_query():
    target = loadgen.parse_target("http://127.0.0.1:8080/a/b?x=1")
    assert (target.host, target.port, target.path, target.authority) == ("127.0.0.1", 8080, "/a/b?x=1", "127.0.0.1:8080")
    assert target.request_bytes().startswith(b"GET /a/b?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")


def test_a_host_header_of_its_own_still_connects_to_the_url():
    """A sidecar's outbound port routes by Host: `--host details:9080` sends that, to the URL's loopback port."""
    target = loadgen.parse_target("http://127.0.0.1:15001/details/0", "details:9080")
    assert (target.host, target.port, target.authority) == ("127.0.0.1", 15001, "details:9080")
    assert target.request_bytes().startswith(b"GET /details/0 HTTP/1.1\r\nHost: details:9080\r\n")


async def test_the_command_line_prints_one_json_result(origin):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "benchmarks" / "loadgen.py"), origin, "--rate", "200", "--duration", "0.5",
        "--connections", "2", "--json", "--raw",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert (result["mode"], result["requested"], result["completed"], result["ok"]) == ("open", 100, 100, 100)
    assert len(result["samples_s"]) == 100
    assert result["latency"]["p50_us"] <= result["latency"]["p99_us"]


async def test_the_command_line_writes_its_json_to_a_file_when_asked(origin, tmp_path):
    """What benchmarks/run.py and mesh_bench.py read: the whole object in the file, nothing on stdout."""
    out = tmp_path / "result.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "benchmarks" / "loadgen.py"), origin, "--rate", "200", "--duration", "0.5",
        "--connections", "2", "--raw", "--json-file", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    assert stdout == b""
    result = json.loads(out.read_text())
    assert (result["mode"], result["requested"], result["completed"]) == ("open", 100, 100)
    assert len(result["samples_s"]) == 100


async def test_the_command_line_rejects_a_non_loopback_target():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "benchmarks" / "loadgen.py"), "http://192.168.1.1/", "--rate", "10",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"only targets loopback" in stderr and b"Traceback" not in stderr


async def test_requests_queued_when_sending_ends_still_go_out_on_replacement_connections():
    """All five are due at once on one connection that the server closes after each answer: four wait in the
    queue when the last is scheduled, and each replacement connection must still take one (a replacement used to
    be opened only while requests were still being scheduled, so the four timed out)."""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    server, url = await _serve_fixed(response, True)
    try:
        result = await loadgen.run_open_loop(url, rate=100_000, count=5, connections=1, timeout=3)
    finally:
        server.close()
    assert (result.completed, result.ok, result.errors) == (5, 5, {"status": 0, "connect": 0, "read": 0, "timeout": 0})
