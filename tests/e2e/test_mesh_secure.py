"""Sidecars that get their identity from the control plane's secure port (15012) and follow xDS over it.

The live mesh (tests/support/mesh.py) with `control_plane(secure=True)`: `pyproxy-control serve --secure-port 0
--ca-dir DIR --plaintext-xds read-only`; every sidecar runs `pyproxy sidecar --control https://... --ca-root
<DIR>/root-cert.pem --token-file <token for its service account>`. What is checked is what an operator would
see: the sidecar's admin /server_info (identity, certificate serial, rotations), the other sidecars' EDS
(admin /clusters), /debug/syncz, the control plane's /metrics (citadel_server_*, pilot_xds_auth_failures)
and the answers of the secure port itself to a client holding the same credentials.
"""
from __future__ import annotations

import json

import aiohttp
import pytest

from control.ca.store import token_signer
from pyproxy.tls.contexts import client_context
from pyproxy.xds.node import build_node
from tests.support.mesh import Mesh, bookinfo_config, call, client_session, labels, outbound_cluster, synced
from tests.support.process import poll

V1 = outbound_cluster("reviews", subset="v1")
REVIEWS_ID = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
ISSUED = "citadel_server_success_cert_issuance_count"

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def reviews_node() -> dict:
    return build_node(kind="sidecar", name="reviews-v1", namespace="default", ip="127.0.0.1",
                      service_account="bookinfo-reviews", labels=labels("reviews"), app_ports=[9080],
                      inbound_port=1, outbound_port=2, admin_port=3)


async def discovery(mesh: Mesh, node: dict, token: str | None, url: str | None = None) -> tuple[int, dict]:
    """One CDS request (`wait=0`) to the secure port (verified with the mesh root) or to `url`."""
    cp = mesh.cp
    base = url or cp.secure_url
    ssl_ctx = client_context(cp.root_cert.read_bytes(), check_hostname=True) if base.startswith("https") else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.post(f"{base}/v3/discovery:clusters", params={"wait": "0"}, json={"node": node},
                          headers=headers, ssl=ssl_ctx) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else {}


async def logged(proc, needle: str, times: int = 1) -> None:
    """Wait until the process's output holds `needle` `times` times (it keeps running meanwhile)."""
    async def seen() -> bool:
        proc.check_running()
        return proc.output(tail=None).count(needle) >= times
    await poll(f"{proc.name} logs {needle!r} x{times}", seen, detail=proc.output)


async def test_a_sidecar_joins_over_the_secure_port_with_a_token_and_receives_config(mesh: Mesh):
    bookinfo_config(mesh, {"v1": 100})
    cp = await mesh.control_plane(secure=True)
    productpage, reviews = await mesh.workloads(("productpage-v1", labels("productpage")),
                                                ("reviews-v1", labels("reviews", "v1")))
    hosts = await mesh.wait_hosts(productpage.sidecar, V1, lambda h: h == {reviews.sidecar.endpoint}, "has reviews")
    assert hosts == {reviews.sidecar.endpoint}
    await reviews.app.ready()
    async with client_session() as session:
        answer = await call(session, productpage.sidecar.outbound_port, "reviews:9080")
    assert (answer.status, answer.served_by) == (200, "reviews-v1"), answer

    info = await reviews.sidecar.server_info()
    assert info["identity"] == REVIEWS_ID
    assert info["certificate_rotations"] == 1 and info["certificate_failures"] == 0
    # mTLS both ways, XFCC, a certificate from the CA, xDS over HTTPS and the admin port, and none of the heavy
    # libraries in the sidecar process (the CSR is made in a child process; docs/performance.md, Memory)
    assert info["optional_libraries_loaded"] == []
    assert (await productpage.sidecar.server_info())["optional_libraries_loaded"] == []
    assert (await productpage.sidecar.server_info())["identity"] == \
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert await cp.metric(ISSUED) == 2
    assert await cp.metric("pilot_xds_auth_failures", 'reason="PermissionDenied"') == 0
    # the read-only plaintext port serves config to anyone, but not under a registered proxy's node id
    status, body = await discovery(mesh, _node_of(reviews), None, cp.url)
    assert status == 403 and "registered by an authenticated proxy" in body["error"], body


def _node_of(workload) -> dict:
    """The node the fixture's sidecar sends (same id, so the plaintext port would replace it)."""
    sc = workload.sidecar
    return build_node(kind="sidecar", name=sc.workload, namespace="default", ip="127.0.0.1",
                      service_account="bookinfo-reviews", labels=sc.labels, app_ports=[sc.app_port],
                      inbound_port=sc.inbound_port, outbound_port=sc.outbound_port, admin_port=sc.admin_port)


async def test_a_token_for_another_service_account_cannot_register_as_this_workload(mesh: Mesh):
    bookinfo_config(mesh, {"v1": 100})
    cp = await mesh.control_plane(secure=True)
    (productpage,) = await mesh.workloads(("productpage-v1", labels("productpage")))
    ratings_token = cp.token("default", "bookinfo-ratings")
    impostor = mesh.start_workload("reviews-v1", labels("reviews", "v1"), token=ratings_token)
    # the CA refuses its CSR (it names bookinfo-reviews, the token proves bookinfo-ratings) and it retries
    await logged(impostor.sidecar, "CA refused the CSR: HTTP 403 PermissionDenied", times=2)
    assert "Traceback" not in impostor.sidecar.output(tail=None)
    assert await cp.metric("citadel_server_csr_sign_err_count", 'error="CSRError"') >= 2
    assert await cp.metric(ISSUED) == 1  # productpage's only: nothing signed for the impostor

    # xDS with the same token, claiming to be reviews-v1: 403, counted, not registered
    status, body = await discovery(mesh, reviews_node(), ratings_token.read_text().strip())
    assert status == 403 and body["reason"] == "PermissionDenied", body
    assert "default/bookinfo-reviews but authenticated as default/bookinfo-ratings" in body["error"]
    assert await cp.metric("pilot_xds_auth_failures", 'reason="PermissionDenied"') == 1
    assert "reviews-v1" not in await cp.proxy_rows()
    assert (await productpage.sidecar.clusters()).get(V1) == set()
    assert impostor.sidecar.running()


async def test_a_forged_token_is_refused(mesh: Mesh, tmp_path):
    bookinfo_config(mesh, {"v1": 100})
    cp = await mesh.control_plane(secure=True)
    forged = tmp_path / "forged-token"  # right claims, signed by a key the control plane never had
    forged.write_text(token_signer(tmp_path / "elsewhere").create("default", "bookinfo-reviews", 3600))
    impostor = mesh.start_workload("reviews-v1", labels("reviews", "v1"), token=forged)
    await logged(impostor.sidecar, "CA refused the CSR: HTTP 401 Unauthenticated", times=2)
    assert "Traceback" not in impostor.sidecar.output(tail=None)
    assert await cp.metric("citadel_server_authentication_failure_count") >= 2
    assert await cp.metric(ISSUED) == 0

    status, body = await discovery(mesh, reviews_node(), forged.read_text())
    assert status == 401 and body["reason"] == "Unauthenticated", body
    assert "bearer token" in body["error"]
    status, body = await discovery(mesh, reviews_node(), None)
    assert status == 401 and "no bearer token" in body["error"], body
    assert await cp.metric("pilot_xds_auth_failures", 'reason="Unauthenticated"') == 2
    assert await cp.proxy_rows() == {}


async def test_renewal_authenticates_with_the_current_certificate(mesh: Mesh):
    """4 s certificates (renewed at about 2 s); once the sidecar holds one, its token file is removed: every
    later renewal, and every xDS request, can only authenticate with the current certificate."""
    bookinfo_config(mesh, {"v1": 100})
    cp = await mesh.control_plane(secure=True)
    token = cp.token("default", "bookinfo-reviews")
    renewing = mesh.start_workload("reviews-v1", labels("reviews", "v1"), token=token,
                                   extra_args=["--secret-ttl", "4s"])
    await renewing.sidecar.ready()
    first = await renewing.sidecar.server_info()
    assert first["identity"] == REVIEWS_ID
    token.unlink()
    rotations = first["certificate_rotations"]

    async def renewed_twice() -> dict | None:
        info = await renewing.sidecar.server_info()
        return info if info["certificate_rotations"] >= rotations + 2 else None
    later = await poll("two renewals after the token is gone", renewed_twice, detail=renewing.sidecar.output)
    assert later["identity"] == REVIEWS_ID
    assert later["workload_certificate"]["serial_number"] != first["workload_certificate"]["serial_number"]
    assert later["certificate_failures"] == 0
    assert await cp.metric("citadel_server_authentication_failure_count") == 0
    # a config change: every type is pushed, applied and ACKed in new requests that carry no token
    before = (await cp.proxy_rows())["reviews-v1"]["version"]
    bookinfo_config(mesh, {"v1": 90, "v2": 10})

    async def synced_again() -> dict | None:
        row = (await cp.proxy_rows()).get("reviews-v1")
        return row if row and row["version"] != before and synced(row) else None
    await poll("reviews-v1 SYNCED on the new config", synced_again, detail=mesh.logs)
    assert await cp.metric("pilot_xds_auth_failures", 'reason="Unauthenticated"') == 0
    assert (await renewing.sidecar.server_info())["control_plane_refused"] is None
