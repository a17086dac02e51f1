"""The bootstraps the oracle cases run under, and an Envoy + pyproxy pair per bootstrap.

`GROUPS` names each bootstrap by what it changes on the HTTP connection manager (HCM) of
`tests.support.proxy.bootstrap` (one listener, a catch-all route with a 5 s timeout to one STATIC cluster).
`bootstrap_for(group, upstream_port, access_log)` builds it; Envoy and pyproxy get the same dict except
for the upstream port (each has its own `CapturingUpstream`, so their views never mix) and the access
log path. A module with its own bootstraps passes `builders` (group -> `build(upstream_port, access_log)`)
to `Oracle` instead. `ProxyPair` starts the two proxies of one group side by side (pyproxy with `pyproxy run -c`,
Envoy with `EnvoyProcess`), plays a `Case` through both and stops both by PID. A pyproxy that refuses the
bootstrap is not an error here: its observation carries the refusal, so the case shows it as a difference.
"""
from __future__ import annotations

import asyncio
import pathlib
from dataclasses import replace
from typing import Any, Callable, Mapping

import aiohttp

from tests.support.envoy import EnvoyProcess
from tests.support.mesh import free_ports
from tests.support.process import ProxyProcess, poll
from tests.support.proxy import bootstrap, socket_address

from . import jwt_group
from .harness import (READ_TIMEOUT, CapturingUpstream, Case, LogCursor, Observation, exchange,
                      lines_before_mark, mark, read_json_lines)

GROUPS: dict[str, dict[str, Any]] = {
    "default": {},
    "http10": {"http_protocol_options": {"accept_http_10": True, "default_host_for_http_10": "default.com"}},
    "absolute-url-on": {"http_protocol_options": {"allow_absolute_url": True}},
    "absolute-url-off": {"http_protocol_options": {"allow_absolute_url": False}},
    "normalize": {"normalize_path": True, "merge_slashes": True},
    "via": {"via": "bar"},
    "underscore-drop": {"common_http_protocol_options": {"headers_with_underscores_action": "DROP_HEADER"}},
    "underscore-reject": {"common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"}},
    "websocket": {"upgrade_configs": [{"upgrade_type": "websocket"}]},
    "jwt": jwt_group.HCM,  # envoy.filters.http.jwt_authn as istiod emits it (tests/oracle/jwt_group.py)
    "early": {},  # its own pair: a half-sent request must not leave a poisoned connection for other cases
    **{f"escaped-{action.lower()}": {"normalize_path": True, "path_with_escaped_slashes_action": action}
       for action in ("KEEP_UNCHANGED", "REJECT_REQUEST", "UNESCAPE_AND_REDIRECT", "UNESCAPE_AND_FORWARD")},
}


def bootstrap_for(group: str, upstream_port: int, access_log: pathlib.Path) -> dict:
    return bootstrap({"backend": [upstream_port]}, access_log=access_log, hcm=GROUPS[group])


Build = Callable[[int, pathlib.Path], dict]  # (upstream port, access log path) -> bootstrap


class ProxyPair:
    """Envoy and pyproxy for one group, each with its own capturing upstream."""

    def __init__(self, group: str, workdir: pathlib.Path, build: Build | None = None):
        self.group = group
        self.workdir = workdir
        self.build: Build = build or (lambda port, log: bootstrap_for(group, port, log))
        self.envoy_upstream = CapturingUpstream()
        self.pyproxy_upstream = CapturingUpstream()
        self.envoy: EnvoyProcess | None = None
        self.pyproxy: ProxyProcess | None = None
        self.pyproxy_port = 0
        self.pyproxy_error = ""
        self.log = LogCursor()
        self.pyproxy_log_cursor = LogCursor()

    async def start(self) -> "ProxyPair":
        await self.envoy_upstream.start()
        await self.pyproxy_upstream.start()
        (self.workdir / "envoy").mkdir(parents=True)
        (self.workdir / "pyproxy").mkdir(parents=True)
        self.envoy_log = self.workdir / "envoy" / "access.log"
        self.envoy = EnvoyProcess(self.build(self.envoy_upstream.port, self.envoy_log),
                                  self.workdir / "envoy").start()
        (self.pyproxy_admin,) = free_ports(1)
        self.pyproxy_log = self.workdir / "pyproxy" / "access.log"
        self.pyproxy = ProxyProcess({**self.build(self.pyproxy_upstream.port, self.pyproxy_log),
                                     "admin": {"address": socket_address(self.pyproxy_admin)}},
                                    self.workdir / "pyproxy", "-l", "warning").start()
        await self.envoy.wait_ready()
        try:
            (self.pyproxy_port,) = await self.pyproxy.wait_listening(2) - {self.pyproxy_admin}
        except AssertionError:
            out = [ln for ln in self.pyproxy.output().splitlines() if ln.strip()]
            self.pyproxy_error = out[-1] if out else f"exited {self.pyproxy.proc.returncode}"
        return self

    def stop(self) -> None:
        for proc in (self.envoy, self.pyproxy):
            if proc is not None:
                proc.stop()

    async def close(self) -> None:
        self.stop()
        await self.envoy_upstream.close()
        await self.pyproxy_upstream.close()

    @property
    def admin_urls(self) -> tuple[str, str]:
        """(Envoy's admin URL, pyproxy's)."""
        return self.envoy.admin_url, f"http://127.0.0.1:{self.pyproxy_admin}"

    async def run(self, case: Case) -> tuple[Observation, Observation]:
        """(Envoy's observation, pyproxy's), each with this case's access log lines."""
        envoy_url, pyproxy_url = self.admin_urls
        envoy_obs = await exchange(self.envoy.port, self.envoy_upstream, case, lambda: settled(envoy_url, case.settle))
        envoy_obs = replace(envoy_obs, access_log=tuple(await self._log_lines(
            self.envoy.port, self.envoy_log, self.log, self.envoy.running())))
        if self.pyproxy_error:
            return envoy_obs, Observation((), False, (), startup_error=self.pyproxy_error)
        pyproxy_obs = await exchange(self.pyproxy_port, self.pyproxy_upstream, case,
                                     lambda: settled(pyproxy_url, case.settle))
        return envoy_obs, replace(pyproxy_obs, access_log=tuple(await self._log_lines(
            self.pyproxy_port, self.pyproxy_log, self.pyproxy_log_cursor, self.pyproxy.running())))

    @staticmethod
    async def _log_lines(port: int, path: pathlib.Path, cursor: LogCursor, running: bool) -> list[dict]:
        """This case's access log lines: everything before a mark request's line (polled, bounded)."""
        n = cursor.next_mark
        cursor.next_mark += 1
        if not running:
            return [{"note": "proxy exited"}]
        await mark(port, n)
        deadline = asyncio.get_running_loop().time() + 5 * READ_TIMEOUT
        while True:
            found = lines_before_mark(read_json_lines(path), n, cursor.start)
            if found is not None:
                lines, cursor.start = found
                return lines
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{path} has no line for mark {n}")
            await asyncio.sleep(0.02)  # poll interval of a bounded wait


async def admin_get(url: str, path: str) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(url + path, timeout=aiohttp.ClientTimeout(total=5)) as r:
            assert r.status == 200, f"{url}{path}: {r.status}"
            return await r.text()


async def stat_value(url: str, name: str) -> int:
    """One counter or gauge from admin `/stats` (0 when the proxy has no such stat)."""
    for line in (await admin_get(url, "/stats")).splitlines():
        key, _, value = line.partition(": ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


async def settled(url: str, stat: str) -> None:
    """Wait (bounded) until admin `/stats` shows `stat` non-zero; AssertionError if it never does."""
    if stat:
        async def nonzero() -> bool:
            return await stat_value(url, stat) > 0
        await poll(f"{stat} > 0 at {url}", nonzero, timeout=10)


class Oracle:
    """The pairs of one test module (or one script run), by group, each started on first use."""

    def __init__(self, workdir: pathlib.Path, builders: Mapping[str, Build] | None = None):
        self.workdir = workdir
        self.builders = builders or {}
        self.pairs: dict[str, ProxyPair] = {}

    async def pair(self, group: str) -> ProxyPair:
        if group not in self.pairs:
            # registered first: always closed
            self.pairs[group] = ProxyPair(group, self.workdir / group, self.builders.get(group))
            await self.pairs[group].start()
        return self.pairs[group]

    async def run(self, case: Case) -> tuple[Observation, Observation]:
        return await (await self.pair(case.group)).run(case)

    async def close(self) -> None:
        for p in self.pairs.values():
            await p.close()
