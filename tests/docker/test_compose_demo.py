"""The docker-compose demo mesh (Dockerfile + docker-compose.yml at the top level), run for real.

Off by default: set PYPROXY_DOCKER_TESTS=1 (needs root, dockerd, docker, docker-compose and debootstrap; see
/work/shared/docs/DOCKER.md). The test then starts a Docker daemon of its own (own socket, data and exec folders,
no default bridge), makes a Debian base image with debootstrap (no registry needed), builds the project image on it,
runs `docker-compose up`, and checks the mesh as a user would: the ingress gateway published on 127.0.0.1 serves
/productpage from productpage-v1, and the productpage app, calling reviews:9080 through its sidecar (outbound port
15001 in the pod's shared network namespace), is served by reviews v1/v2 as the VirtualService says (end-user: jason
always goes to v2). Everything it started (containers, networks, volumes, the daemon) is removed whatever happens.
Only 127.0.0.1 and the compose network's own containers are ever addressed.
"""
from __future__ import annotations

import collections
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE_IMAGE = "localbase:bookworm"
IMAGE = "pyproxy-mesh:test"
HOST_CA_BUNDLE = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("PYPROXY_DOCKER_TESTS") != "1",
                       reason="docker-compose demo test: set PYPROXY_DOCKER_TESTS=1 to run it (starts its own "
                              "dockerd; needs root, docker.io, docker-compose and debootstrap)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], env: dict[str, str], timeout: float, stdin: bytes | None = None) -> str:
    started = time.monotonic()
    p = subprocess.run(args, env=env, input=stdin, capture_output=True, timeout=timeout)
    print(f"[docker-test] {' '.join(args[:4])}... rc={p.returncode} in {time.monotonic() - started:.1f}s")
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout.decode()[-3000:]}\n"
                             f"{p.stderr.decode()[-3000:]}")
    return p.stdout.decode()


class Daemon:
    """A dockerd of the test's own, in a temp folder; `stop()` ends it by PID."""

    def __init__(self, workdir: pathlib.Path):
        self.workdir = workdir
        self.socket = workdir / "docker.sock"
        self.log = open(workdir / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "--host", f"unix://{self.socket}", "--data-root", str(workdir / "data"),
             "--exec-root", str(workdir / "exec"), "--pidfile", str(workdir / "dockerd.pid"), "--bridge", "none"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dockerd exited {self.proc.returncode}: "
                                     f"{(self.workdir / 'dockerd.log').read_text()[-2000:]}")
            if subprocess.run(["docker", "info"], env=self.env, capture_output=True).returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError("dockerd did not answer within 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        # dockerd leaves its exec root's network-namespace bind mount behind: unmount what is under workdir.
        mounts = [line.split()[1] for line in pathlib.Path("/proc/self/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(f"{self.workdir}/")), reverse=True):
            subprocess.run(["umount", target], capture_output=True)


def _build_context(dest: pathlib.Path) -> pathlib.Path:
    """What the Dockerfile copies, plus (for this machine only) its CA bundle: never written into the repository."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest.mkdir()
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("pyproxy", "control"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copytree(ROOT / "examples" / "mesh", dest / "examples" / "mesh")
    if HOST_CA_BUNDLE.exists():
        shutil.copy2(HOST_CA_BUNDLE, dest / "build-ca.crt")
    return dest


def _http(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# Runs inside the productpage app container: N requests to reviews:9080 through the pod's sidecar.
CALL_REVIEWS = """
import collections, json, sys, urllib.request
seen = collections.Counter()
headers = json.loads(sys.argv[2])
for _ in range(int(sys.argv[1])):
    req = urllib.request.Request("http://127.0.0.1:15001/anything", headers={"Host": "reviews:9080", **headers})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            seen[json.loads(r.read())["served_by"]] += 1
    except urllib.error.HTTPError as e:
        seen[f"HTTP {e.code}"] += 1
print(json.dumps(seen))
"""


@pytest.fixture
def compose():
    for tool in ("dockerd", "docker", "docker-compose", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"PYPROXY_DOCKER_TESTS=1 but {tool} is not installed "
                        f"(apt-get install -y docker.io docker-compose debootstrap)")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="pyd-", dir="/tmp"))  # short: the socket path has a limit
    daemon = Daemon(workdir)
    project = f"pyproxydemo{os.getpid()}"
    gateway_port = _free_port()
    env = {**daemon.env, "PYPROXY_IMAGE": IMAGE, "GATEWAY_PORT": str(gateway_port)}
    cmd = ["docker-compose", "-p", project, "-f", str(ROOT / "docker-compose.yml")]
    try:
        daemon.wait_ready()
        rootfs = workdir / "rootfs"
        _run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
              "bookworm", str(rootfs)], env, timeout=600)
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
        _run(["docker", "import", "-", BASE_IMAGE], env, timeout=300, stdin=tar)
        context = _build_context(workdir / "context")
        _run(["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", IMAGE,
              str(context)], env, timeout=900)
        _run(cmd + ["up", "-d", "--no-build"], env, timeout=300)
        yield cmd, env, gateway_port
    finally:
        try:
            logs = subprocess.run(cmd + ["logs", "--no-color", "--tail", "40"], env=env, capture_output=True,
                                  timeout=60).stdout.decode()
            print(f"[docker-test] compose logs (last lines per service):\n{logs}")
            subprocess.run(cmd + ["down", "-v", "--remove-orphans", "--timeout", "10"], env=env,
                           capture_output=True, timeout=180)
        except subprocess.TimeoutExpired:
            pass
        finally:
            daemon.stop()
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.timeout(1800)
def test_compose_demo_serves_productpage_and_routes_reviews_through_the_sidecar(compose):
    cmd, env, gateway_port = compose
    url = f"http://127.0.0.1:{gateway_port}/productpage"

    # The ingress gateway, published on 127.0.0.1 only, routes /productpage to productpage-v1 (bounded wait).
    deadline, last = time.monotonic() + 180, None
    while time.monotonic() < deadline:
        try:
            last = _http(url)
            if last[0] == 200:
                break
        except OSError as e:
            last = (None, str(e).encode())
        time.sleep(1)
    assert last is not None and last[0] == 200, f"GET {url} never returned 200; last: {last}"
    assert json.loads(last[1])["served_by"] == "productpage-v1"

    def reviews(n: int, headers: dict[str, str]) -> collections.Counter:
        out = _run(cmd + ["exec", "-T", "productpage", "python", "-c", CALL_REVIEWS, str(n), json.dumps(headers)],
                   env, timeout=120)
        return collections.Counter(json.loads(out.strip().splitlines()[-1]))

    # Both reviews pods must be in productpage's EDS before the split can be checked: jason goes to v2 only.
    deadline, jason = time.monotonic() + 60, collections.Counter()
    while time.monotonic() < deadline:
        jason = reviews(5, {"end-user": "jason"})
        if jason == {"reviews-v2": 5}:
            break
        time.sleep(1)
    assert jason == {"reviews-v2": 5}, f"end-user: jason -> {dict(jason)}"

    split = reviews(40, {})
    print(f"[docker-test] 40 requests to reviews:9080 from productpage's pod: {dict(split)}")
    assert set(split) <= {"reviews-v1", "reviews-v2"}, dict(split)
    assert split["reviews-v1"] > 0, dict(split)  # 80 % v1: missing v1 in 40 tries has probability 0.2**40
