"""The compose mesh, run for real by the command a user runs (`scripts/compose-demo.sh up`, i.e. `make compose-up`).

Part of `make test` (CI): it is the only proof that docker-compose.yml and `meshctl inject` work. What it needs it
installs when it can (root and apt: `apt-get install -y docker.io docker-compose debootstrap`, only what is
missing); a machine that cannot run a Docker daemon at all (no root, no packages, dockerd refuses to start) skips
it with one loud reason. Any failure once the daemon is up fails.

The script starts a dockerd of its own (socket, exec root under a temp dir; its image store cached in
/tmp/pyproxy-compose-cache between runs on one machine, with the debootstrap rootfs, so a second run only rebuilds
changed layers), builds, starts the project and waits for /productpage. The test then checks, as a user would:
bookinfo through the ingress gateway (details and reviews on the page), mTLS between sidecars (details' app sees
the caller's SPIFFE identity in x-forwarded-client-cert; plaintext to a sidecar's inbound port is refused),
Prometheus's HTTP API counting the requests it sent in `istio_requests_total`, and a two-service app injected by
`meshctl inject` calling across both sidecars with mTLS. `scripts/compose-demo.sh down` removes everything
(containers, networks, volumes) and stops the daemon by its PID whatever happens. Only 127.0.0.1 and the compose
networks' own containers are addressed.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from pyproxy.demo_mesh import free_ports

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compose-demo.sh"
PACKAGES = {"dockerd": "docker.io", "docker": "docker.io", "docker-compose": "docker-compose",
            "debootstrap": "debootstrap"}
EXIT_NO_DAEMON, EXIT_MISSING = 3, 4  # scripts/compose-demo.sh
# Each test's own limit (the suite's is 120 s): the first test that uses the mesh also pays for starting it, which
# on a clean machine includes apt, debootstrap and two image builds (about 5 minutes), then about 2 minutes.
TIMEOUT = 1800

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _skip(reason: str) -> None:
    """One loud line: the suite runs with -ra, so the summary shows it (once for the four tests)."""
    pytest.skip(f"DOCKER COMPOSE TEST SKIPPED: {reason}")


def _ensure_tools() -> None:
    """Install docker.io, docker-compose and debootstrap when missing and we may (root, apt-get)."""
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        _skip(f"{', '.join(missing)} not installed and cannot install them here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *missing]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        _skip(f"apt-get install {' '.join(missing)} failed: {done.stderr.strip().splitlines()[-1:]}")


def _http(url: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _until(check, what: str, timeout: float):
    """Poll `check` (returns a truthy value when done) for at most `timeout` seconds; the last value on failure."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError, KeyError, AssertionError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(1)  # poll interval of a bounded wait
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


class Mesh:
    """The environment `scripts/compose-demo.sh up` made: how to reach its daemon and run compose against it."""

    def __init__(self, work: pathlib.Path, ports: dict[str, int]):
        self.work = work
        self.ports = ports
        self.env = {**os.environ, "WORK": str(work), "COMPOSE_PROJECT_NAME": f"pyproxytest{os.getpid()}",
                    "GATEWAY_PORT": str(ports["gateway"]), "PROMETHEUS_PORT": str(ports["prometheus"]),
                    "XDS_PORT": str(ports["xds"]),
                    "COMPOSE_FILE": str(ROOT / "docker-compose.yml")}
        if os.geteuid() == 0:  # a daemon of the test's own, even when the machine runs one
            self.env["DOCKER_HOST"] = f"unix://{work}/docker.sock"

    def loaded(self) -> None:
        """Take DOCKER_HOST, PROMETHEUS_IMAGE and the compose command the script chose (its $WORK/env)."""
        values = dict(line.split("=", 1) for line in
                      subprocess.run(["sh", "-c", f"set -a; . {self.work}/env; env"], capture_output=True, text=True,
                                     check=True).stdout.splitlines() if "=" in line)
        for key in ("DOCKER_HOST", "PROMETHEUS_IMAGE"):
            if values.get(key):
                self.env[key] = values[key]
        self.compose = values["COMPOSE"].split()

    def run(self, args: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args[:6])}... exited {done.returncode}: {done.stderr[-2000:]}")
        return done

    def exec_python(self, service: str, code: str, *argv: str, project: list[str] | None = None) -> str:
        cmd = [*self.compose, *(project or []), "exec", "-T", service, "python", "-c", code, *argv]
        return self.run(cmd).stdout


@pytest.fixture(scope="module")
def mesh():
    _ensure_tools()
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyc-", dir="/tmp"))  # short: a socket path has a length limit
    ports = dict(zip(("gateway", "prometheus", "xds"), free_ports(3)))
    m = Mesh(work, ports)
    started = time.monotonic()
    try:
        up = subprocess.run(["sh", str(SCRIPT), "up"], env=m.env, capture_output=True, text=True, timeout=1500)
        print(f"[docker-test] compose-demo.sh up: rc={up.returncode} in {time.monotonic() - started:.0f} s\n"
              f"{up.stdout}{up.stderr}")
        if up.returncode in (EXIT_NO_DAEMON, EXIT_MISSING):
            _skip(up.stderr.strip().splitlines()[-1] if up.stderr.strip() else f"exit {up.returncode}")
        assert up.returncode == 0, f"scripts/compose-demo.sh up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        m.loaded()
        yield m
    finally:
        if (work / "env").exists():
            try:
                m.loaded()
                logs = m.run([*m.compose, "logs", "--no-color", "--tail", "15"], timeout=60, check=False)
                print(f"[docker-test] compose logs (last lines per service):\n{logs.stdout[-6000:]}")
            except (subprocess.SubprocessError, OSError, KeyError) as e:
                print(f"[docker-test] no compose logs: {e}")
        down = subprocess.run(["sh", str(SCRIPT), "down"], env=m.env, capture_output=True, text=True, timeout=300)
        print(f"[docker-test] compose-demo.sh down: rc={down.returncode} {down.stdout}{down.stderr}")
        _stop_daemon(work)
        shutil.rmtree(work, ignore_errors=True)


def _stop_daemon(work: pathlib.Path) -> None:
    """If `down` could not stop the daemon this test's `up` started, stop it by its PID."""
    started = work / "dockerd.started"
    if not started.exists():
        return
    pid = int(started.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(60):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)  # poll interval of a bounded wait for the exit
    os.kill(pid, signal.SIGKILL)


# Runs inside a container: GET a URL with headers, print status and body as JSON (no curl in the image).
FETCH = """
import json, sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(json.dumps({"status": r.status, "body": r.read().decode()}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
except OSError as e:
    print(json.dumps({"status": 0, "body": type(e).__name__ + ": " + str(e)}))
"""


def fetch(mesh: Mesh, service: str, url: str, headers: dict[str, str], project: list[str] | None = None) -> dict:
    return json.loads(mesh.exec_python(service, FETCH, url, json.dumps(headers), project=project).splitlines()[-1])


@pytest.mark.timeout(TIMEOUT)
def test_bookinfo_through_the_gateway_shows_details_and_reviews(mesh):
    gw = f"http://127.0.0.1:{mesh.ports['gateway']}"
    status, body = _http(f"{gw}/api/v1/products/0")
    assert status == 200, body
    product = json.loads(body)
    assert product["details"]["author"] == "William Shakespeare", product
    assert product["reviews"]["version"] in {"v1", "v2", "v3"} and len(product["reviews"]["reviews"]) == 2, product
    # jason always goes to reviews v2 (black stars, from ratings): productpage -> reviews -> ratings all worked
    jason = json.loads(_http(f"{gw}/api/v1/products/0?u=jason")[1])["reviews"]
    assert jason["version"] == "v2" and jason["reviews"][0]["rating"]["color"] == "black", jason
    status, page = _http(f"{gw}/productpage")
    assert status == 200 and b"Book Details" in page and b"Reviewer1" in page


@pytest.mark.timeout(TIMEOUT)
def test_meshctl_proxy_status_sees_every_proxy_through_the_published_xds_port(mesh):
    done = subprocess.run([sys.executable, "-m", "control.cli.meshctl", "proxy-status", "--control",
                           f"http://127.0.0.1:{mesh.ports['xds']}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for proxy in ("productpage.default", "details.default", "reviews-v1.default", "reviews-v2.default",
                  "reviews-v3.default", "ratings.default", "istio-ingressgateway.istio-system"):
        assert proxy in done.stdout, done.stdout
    assert "SYNCED" in done.stdout and "STALE" not in done.stdout, done.stdout


@pytest.mark.timeout(TIMEOUT)
def test_sidecars_talk_mutual_tls_and_refuse_plaintext(mesh):
    seen = fetch(mesh, "productpage", "http://127.0.0.1:15001/headers", {"Host": "details:9080"})
    assert seen["status"] == 200, seen
    headers = {k.lower(): v for k, v in json.loads(seen["body"])["headers"].items()}
    xfcc = headers["x-forwarded-client-cert"]
    assert "By=spiffe://cluster.local/ns/default/sa/bookinfo-details" in xfcc, xfcc
    assert "URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage" in xfcc, xfcc
    # STRICT: a client without a mesh certificate, straight to details' inbound listener, gets no answer
    plain = fetch(mesh, "productpage", "http://details:15006/headers", {"Host": "details:9080"})
    assert plain["status"] == 0, plain


@pytest.mark.timeout(TIMEOUT)
def test_prometheus_sees_istio_requests_total_for_the_traffic_sent(mesh):
    gw = f"http://127.0.0.1:{mesh.ports['gateway']}"
    prom = f"http://127.0.0.1:{mesh.ports['prometheus']}/api/v1/query"
    query = ('sum(istio_requests_total{reporter="destination",destination_workload="productpage",'
             'source_workload="istio-ingressgateway",connection_security_policy="mutual_tls"})')

    def count() -> float:
        status, body = _http(prom, data=urllib.parse.urlencode({"query": query}).encode())
        result = json.loads(body)["data"]["result"] if status == 200 else []
        return float(result[0]["value"][1]) if result else 0.0

    before = count()
    sent = 12
    for _ in range(sent):
        assert _http(f"{gw}/productpage")[0] == 200
    after = _until(lambda: count() >= before + sent and count(), f"Prometheus to count {sent} more requests "
                   f"(from {before:.0f}) in istio_requests_total", timeout=90)
    print(f"[docker-test] istio_requests_total gateway->productpage (mTLS, reporter=destination): "
          f"{before:.0f} -> {after:.0f}")


# A two-service app as a user writes it, before injection: `web` calls `api` through its sidecar by name.
APP_COMPOSE = {"services": {
    "web": {"image": "${PYPROXY_IMAGE:-pyproxy-mesh:local}",
            "command": ["python", "-m", "bookinfo.app", "--service", "details", "--port", "8000"],
            "expose": ["8000"], "labels": {"app": "web"}},
    "api": {"image": "${PYPROXY_IMAGE:-pyproxy-mesh:local}",
            "command": ["python", "-m", "bookinfo.app", "--service", "ratings", "--port", "9080"],
            "expose": ["9080"], "labels": {"app": "api", "mesh.pyproxy.io/service-account": "api-server"}},
}}
APP_MESH = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8000}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: http, port: 9080}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"""


@pytest.mark.timeout(TIMEOUT)
def test_meshctl_inject_makes_a_two_service_app_call_across_both_sidecars_with_mtls(mesh, tmp_path):
    app = tmp_path / "app-compose.yml"
    app.write_text(yaml.safe_dump(APP_COMPOSE, sort_keys=False))
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "services.yaml").write_text(APP_MESH)
    injected = tmp_path / "app-injected.yml"
    done = subprocess.run([sys.executable, "-m", "control.cli.meshctl", "inject", "-f", str(app), "-o",
                           str(injected)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    project = ["-p", f"pyproxyinject{os.getpid()}", "-f", str(injected)]
    try:
        mesh.run([*mesh.compose, *project, "up", "-d", "--no-build"], timeout=300)

        def call() -> dict | None:
            r = fetch(mesh, "web", "http://127.0.0.1:15001/headers", {"Host": "api:9080"}, project=project)
            return r if r["status"] == 200 else None

        seen = _until(call, "web -> api through both sidecars", timeout=120)
        xfcc = {k.lower(): v for k, v in json.loads(seen["body"])["headers"].items()}["x-forwarded-client-cert"]
        assert "By=spiffe://cluster.local/ns/default/sa/api-server" in xfcc, xfcc
        assert "URI=spiffe://cluster.local/ns/default/sa/web" in xfcc, xfcc
    finally:
        mesh.run([*mesh.compose, *project, "down", "-v", "--remove-orphans", "--timeout", "10"], timeout=180,
                 check=False)
