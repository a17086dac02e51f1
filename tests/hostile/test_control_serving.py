"""A running control plane (`pyproxy-control serve`, a real process under a 512 MiB RLIMIT_AS, watching a real
directory) fed hostile files: at start-up it serves the rest and reports each file; a hostile edit of a served
file is reported (log line, /debug/configz, galley_validation_failed) while that file's last good version keeps
serving, and a later valid edit still applies. The xDS side is a plain HTTP client of docs/xds.md."""
from __future__ import annotations

import os
import shutil
import sys

import aiohttp
from tests.hostile.files import CAP_BYTES, HOSTILE, valid_vs, write
from tests.integration.test_xds_server import EXAMPLES, PATHS, Proxy, node
from tests.support.mesh import console_script, get_json
from tests.support.process import Process, poll

CAPPED = ("import os, resource, sys\n"
          f"resource.setrlimit(resource.RLIMIT_AS, ({CAP_BYTES}, {CAP_BYTES}))\n"
          "os.execv(sys.argv[1], sys.argv[1:])")


class ControlPlane(Process):
    """`pyproxy-control serve` on ports 0, its address space capped; `ready()` learns the ports."""

    def __init__(self, workdir, config_dir, *extra: str):
        command = console_script("pyproxy-control", "control.cli.control")
        if len(command) == 1:
            command = [command[0]]
        argv = [sys.executable, "-c", CAPPED, *([sys.executable, *command[1:]] if command[0] == sys.executable
                                                 else command), "serve", "--config-dir", str(config_dir),
                "--xds-port", "0", "--metrics-port", "0", "--state-file", "", "--debounce", "0.05", *extra]
        super().__init__("control-plane", argv, workdir, env={"MALLOC_ARENA_MAX": "2"})
        self.ports: dict[str, int] = {}

    async def ready(self) -> "ControlPlane":
        async def ports() -> dict[str, int]:
            self.check_running()
            found = {}
            for line in self.stdout_path.read_text().splitlines():
                key, _, value = line.partition(" ")
                found[key] = int(value)
            return found if "METRICS_PORT" in found else {}
        self.ports = await poll("control plane ports", ports, detail=self.output)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['XDS_PORT']}"

    async def configz(self) -> dict:
        return await get_json(f"{self.url}/debug/configz")

    async def metric(self, name: str) -> float:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{self.ports['METRICS_PORT']}/metrics") as r:
                text = await r.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def details_timeout(url: str, name: str) -> str | None:
    """The details route's timeout in the RDS a new proxy (named `name`) gets after a full sync from `url`."""
    async with aiohttp.ClientSession() as session:
        proxy = Proxy(session, url, node(name, {"app": "productpage", "version": "v1"}, 15206, 9180))
        for path in PATHS:  # ADS order: each type's ACK opens the next
            status, _ = await proxy.post(path)
            assert status == 200, path
            await proxy.post(path, wait=0)
    for rc in proxy.held["routes"]["resources"]:
        for vhost in rc["virtual_hosts"]:
            if vhost["name"].startswith("details"):
                return vhost["routes"][0]["route"].get("timeout")
    return None


async def test_start_up_with_every_hostile_file_serves_the_rest_and_reports_each(start, config_dir):
    for name, (content, _needle) in HOSTILE.items():
        write(config_dir / name, content)
    write(config_dir / "details.yaml", valid_vs(7))
    cp = await start(config_dir)
    configz = await cp.configz()
    for name, (_content, needle) in HOSTILE.items():
        assert any(f"{config_dir}/{name}" in e and needle in e for e in configz["errors"]), (name, configz)
    assert configz["files"] == sorted(str(p) for p in config_dir.iterdir() if p.name not in HOSTILE)
    assert await details_timeout(cp.url, "productpage-v1") == "7s"
    assert await cp.metric("galley_validation_failed") >= 1
    cp.check_running()
    assert "Traceback" not in cp.output(tail=None)
    assert all(name in cp.output(tail=None) for name in HOSTILE)  # each is in the log too


async def test_a_hostile_edit_keeps_the_last_good_version_and_a_later_valid_edit_applies(start, config_dir):
    path = config_dir / "details.yaml"
    write(path, valid_vs(1))
    cp = await start(config_dir)
    assert await details_timeout(cp.url, "p0") == "1s"
    for i, (name, (content, needle)) in enumerate(sorted(HOSTILE.items()), start=2):
        write(path, content)

        async def reported() -> bool:
            errors = (await cp.configz())["errors"]
            return any(needle in e for e in errors) and any("keeping its last good version" in e for e in errors)
        await poll(f"{name} written over details.yaml is reported", reported, detail=cp.output)
        assert await details_timeout(cp.url, f"p{i}a") == f"{i - 1}s", name  # the last good version serves
        write(path, valid_vs(i))

        async def applied() -> bool:
            return (await cp.configz())["errors"] == [] and await details_timeout(cp.url, f"p{i}b") == f"{i}s"
        await poll(f"a valid edit after {name} applies", applied, detail=cp.output)
    cp.check_running()
    assert "Traceback" not in cp.output(tail=None)


async def test_the_watcher_survives_the_config_directory_being_removed_and_recreated(start, config_dir):
    write(config_dir / "details.yaml", valid_vs(3))
    cp = await start(config_dir)
    assert await details_timeout(cp.url, "a") == "3s"
    shutil.rmtree(config_dir)
    await poll("the missing directory is reported", lambda: _has_error(cp, "no such file or directory"),
               detail=cp.output)
    assert await details_timeout(cp.url, "gone") == "3s"  # the last good config keeps serving
    shutil.copytree(EXAMPLES, config_dir)
    write(config_dir / "details.yaml", valid_vs(4))

    async def back() -> bool:
        return await details_timeout(cp.url, f"b{os.urandom(2).hex()}") == "4s"
    await poll("a new config in the recreated directory applies", back, detail=cp.output)


async def _has_error(cp: ControlPlane, needle: str) -> bool:
    return any(needle in e for e in (await cp.configz())["errors"])
