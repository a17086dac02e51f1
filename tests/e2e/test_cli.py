"""`pyproxy validate` and `pyproxy run` as a user runs them: real processes, real ports, exit codes.

Bad input must give exit code 1 and one clear line naming the file and the field, never a Python
traceback. `run` serves traffic, answers its admin port, and stops cleanly on SIGTERM; with
`--concurrency 2` both worker processes accept connections on the shared (SO_REUSEPORT) listener and
the supervisor's /stats shows each worker's `downstream_cx_total`. Every process started here is
stopped by PID (the `pyproxy_process` fixture), workers included.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket

import aiohttp
import pytest
import yaml

from tests.support.client import fetch
from tests.support.process import REPO, _alive, run_cli
from tests.support.proxy import bootstrap

FRONT_PROXY = REPO / "examples" / "static" / "front-proxy.yaml"


def write(tmp_path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def assert_clean_error(result, *needles: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def misspelt_config() -> dict:
    cfg = yaml.safe_load(FRONT_PROXY.read_text())
    c = cfg["static_resources"]["clusters"][0]
    c["conect_timeout"] = c.pop("connect_timeout")
    return cfg


# ---------------------------------------------------------------- validate

def test_validate_accepts_the_front_proxy_example():
    r = run_cli("validate", "-c", str(FRONT_PROXY))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


def test_validate_unknown_field_names_file_and_field_path(tmp_path):
    path = write(tmp_path, "bad.yaml", misspelt_config())
    r = run_cli("validate", "-c", path)
    assert_clean_error(r, path, "static_resources.clusters[0].conect_timeout", "connect_timeout")


def test_validate_wrong_type_names_the_field(tmp_path):
    cfg = yaml.safe_load(FRONT_PROXY.read_text())
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = "ten thousand"
    path = write(tmp_path, "bad.yaml", cfg)
    assert_clean_error(run_cli("validate", "-c", path), path,
                       "static_resources.listeners[0].address.socket_address.port_value")


def test_validate_invalid_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.yaml", "static_resources:\n  clusters: [\n")
    assert_clean_error(run_cli("validate", "-c", path), f"{path}:3")


def test_validate_missing_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    assert_clean_error(run_cli("validate", "-c", path), path)


def test_validate_rejects_a_chain_without_the_router_last(tmp_path):
    cfg = yaml.safe_load(FRONT_PROXY.read_text())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = []
    path = write(tmp_path, "norouter.yaml", cfg)
    assert_clean_error(run_cli("validate", "-c", path), path, "envoy.filters.http.router")


# ---------------------------------------------------------------- run

def test_run_bad_file_exits_1_with_file_and_field(tmp_path):
    path = write(tmp_path, "bad.yaml", misspelt_config())
    assert_clean_error(run_cli("run", "-c", path), path, "static_resources.clusters[0].conect_timeout")


@pytest.fixture
def busy_port():
    """A 127.0.0.1 port someone else is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_run_listener_port_in_use_exits_1_cleanly(tmp_path, busy_port):
    path = write(tmp_path, "busy.yaml", bootstrap({"backend": [busy_port]}, listener_port=busy_port))
    r = run_cli("run", "-c", path)
    assert_clean_error(r, path, str(busy_port))


def test_run_admin_port_in_use_exits_1_cleanly(tmp_path, busy_port):
    path = write(tmp_path, "busy.yaml", bootstrap({"backend": [busy_port]}, admin_port=busy_port))
    r = run_cli("run", "-c", path)
    assert_clean_error(r, str(busy_port))


async def _admin_get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.get(f"http://127.0.0.1:{port}{path}") as r:
            return r.status, await r.text()


async def _find_admin(ports: set[int]) -> int:
    for port in ports:
        try:
            status, text = await _admin_get(port, "/ready")
        except aiohttp.ClientError:
            continue
        if status == 200 and text == "LIVE\n":
            return port
    raise AssertionError(f"no admin among {ports}")


async def test_run_serves_traffic_and_admin_then_stops_on_sigterm(upstream, pyproxy_process):
    proc = pyproxy_process(bootstrap({"backend": [upstream.port]}, admin_port=0))
    ports = await proc.wait_listening(2)
    admin = await _find_admin(ports)
    (listener,) = ports - {admin}
    for _ in range(3):
        r = await fetch(listener, "GET", "/via-cli")
        assert (r.status, r.body) == (200, b"ok")
    _, stats = await _admin_get(admin, "/stats?filter=downstream_rq_total")
    # every request the listener got (probing for the admin port may have sent one more) reached the upstream
    assert [rq.path for rq in upstream.requests].count("/via-cli") == 3
    assert f"http.ingress_http.downstream_rq_total: {len(upstream.requests)}" in stats.splitlines()
    # a proxy loads a heavy library only when its config asks for it (docs/performance.md, Memory): after serving
    # traffic and its admin port, this one (no TLS, JWT, tracing, nor a scrape) holds PyYAML alone (its
    # bootstrap file); a library imported at some module's top level would show up here
    _, info = await _admin_get(admin, "/server_info")
    assert json.loads(info)["optional_libraries_loaded"] == ["yaml"]
    assert json.loads(info)["request_path_compiled"] is False  # the source tree, as `make test` runs it
    assert proc.stop() == 0
    assert "Traceback" not in proc.output(tail=None)


async def test_run_stops_on_admin_quitquitquit(upstream, pyproxy_process):
    """POST /quitquitquit on the admin port stops the proxy with exit code 0 (Envoy's admin verb)."""
    proc = pyproxy_process(bootstrap({"backend": [upstream.port]}, admin_port=0))
    admin = await _find_admin(await proc.wait_listening(2))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.post(f"http://127.0.0.1:{admin}/quitquitquit") as r:
            assert r.status == 200
    assert await asyncio.to_thread(proc.proc.wait, 15) == 0


STDOUT_LOG = {"name": "envoy.access_loggers.stdout", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"}}


async def test_run_writes_the_default_access_log_to_stdout(upstream, pyproxy_process):
    """A stdout access log with Envoy's default format: one line per request, flushed by shutdown."""
    proc = pyproxy_process(bootstrap({"backend": [upstream.port]}, hcm={"access_log": [STDOUT_LOG]}))
    (port,) = await proc.wait_listening(1)
    assert (await fetch(port, "GET", "/logged", [("User-Agent", "cli-test")])).status == 200
    assert (await fetch(port, "GET", "/status/503")).status == 503
    assert proc.stop() == 0
    lines = [line for line in proc.stdout_path.read_text().splitlines() if '"GET ' in line]
    assert len(lines) == 2, proc.output()
    assert '"GET /logged HTTP/1.1" 200 - ' in lines[0] and '"cli-test"' in lines[0]
    assert f'"127.0.0.1:{upstream.port}"' in lines[0]
    assert '"GET /status/503 HTTP/1.1" 503 - ' in lines[1]


def _reserve_reuseport() -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket on 127.0.0.1:0: holds a port the workers can share."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    return s


@pytest.mark.timeout(120)
async def test_run_concurrency_2_serves_from_both_workers(upstream, pyproxy_process):
    with _reserve_reuseport() as held:
        port = held.getsockname()[1]
        proc = pyproxy_process(bootstrap({"backend": [upstream.port]}, listener_port=port, admin_port=0),
                               "--concurrency", "2")
        (admin,) = await proc.wait_listening(1)  # the supervisor holds only the admin port
        workers = await proc.wait_workers(2, port)
        for i in range(64):
            r = await fetch(port, "GET", f"/w/{i}")
            assert r.status == 200
        status, text = await _admin_get(admin, "/stats?format=json")
        assert status == 200
        stats = {e["name"]: e["value"] for e in json.loads(text)["stats"] if "value" in e}
        prefix = f"listener.127.0.0.1_{port}."
        per_worker = [stats.get(f"{prefix}worker_{i}.downstream_cx_total", 0) for i in range(2)]
        assert all(n > 0 for n in per_worker), per_worker
        assert sum(per_worker) == 64
        assert stats["http.ingress_http.downstream_rq_total"] == 64
        _, info = await _admin_get(admin, "/server_info")
        assert {w["pid"] for w in json.loads(info)["workers"]} == workers
    assert proc.stop() == 0
    assert not [pid for pid in workers if _alive(pid)]


def test_help_lists_the_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    assert re.search(r"\brun\b", r.stdout) and re.search(r"\bvalidate\b", r.stdout)
