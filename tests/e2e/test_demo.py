"""The README's demo commands work: each shows requests going through and exits cleanly with --once."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--once", *args], capture_output=True, text=True,
                          timeout=150)


def test_front_proxy_demo_shows_a_request_through_the_proxy():
    r = run("pyproxy.demo", "--free-ports")
    assert r.returncode == 0, r.stderr
    assert "<- HTTP 200" in r.stdout
    assert '"X-Request-ID"' in r.stdout  # added by the proxy on the way through
    assert "GET /anything/hello?from=demo HTTP/1.1\" 200" in r.stdout  # its access-log line


@pytest.mark.slow
def test_mesh_demo_routes_through_sidecars_by_the_virtual_service():
    r = run("pyproxy.demo_mesh")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every sidecar registered itself and is SYNCED" in r.stdout
    # every proxy joined over the secure port with a certificate for its own service account
    assert "reviews-v2             spiffe://cluster.local/ns/default/sa/bookinfo-reviews" in r.stdout
    assert "istio-ingressgateway   spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account" \
        in r.stdout
    jason = next(line for line in r.stdout.splitlines() if "end-user: jason" in line)
    assert "'reviews-v2': 5" in jason  # the header match always goes to v2
    split = next(line for line in r.stdout.splitlines() if "80% v1 / 20% v2" in line)
    assert "reviews-v1" in split and "HTTP" not in split  # every request answered by a reviews app
    gateway = next(line for line in r.stdout.splitlines() if "through the ingress gateway: GET" in line)
    assert "-> 200, served by productpage-v1" in gateway
    # STRICT mTLS between the sidecars: the server side saw the caller's SPIFFE identity, plaintext is refused
    xfcc = next(line for line in r.stdout.splitlines() if "details saw: x-forwarded-client-cert:" in line)
    assert "By=spiffe://cluster.local/ns/default/sa/bookinfo-details;" in xfcc
    assert xfcc.endswith("URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage")
    assert "as STRICT requires" in next(line for line in r.stdout.splitlines() if "plaintext straight to" in line)
