"""A config a proxy rejects shows as a NACK (issue 5): the control plane accepts it, the sidecar refuses it,
keeps serving its last good config, and `/debug/syncz` and `meshctl proxy-status` show the type STALE with
the proxy's error_detail.

The rejected config is one the translator really emits: a DestinationRule `warmup` on reviews gives its
clusters a `round_robin_lb_config` (`slow_start_config`), and pyproxy's load balancers have no slow start, so CDS is
NACKed. (Until pyproxy learned tcp_proxy, a TCP Service's outbound listener was the refused config.) Writing the
DestinationRule back without `warmup` must bring the proxy back to SYNCED, and the NACK's error_detail should
name the cluster it refused.
"""
from __future__ import annotations

import json
import socket
import subprocess

import pytest

from tests.support.mesh import (XDS_TYPES, Mesh, bookinfo_config, call, client_session, console_script,
                                destination_rule, free_ports, labels, poll, service, synced)

pytestmark = pytest.mark.timeout(90)


def proxy_status(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*console_script("meshctl", "control.cli.meshctl"), "proxy-status", "--control", url,
                           *args], capture_output=True, text=True, timeout=30)


def with_warmup() -> list[dict]:
    """services.yaml of bookinfo_config, its reviews DestinationRule with `warmup` (slow start: refused)."""
    dr = destination_rule("reviews", ("v1", "v2"))
    dr["spec"]["trafficPolicy"] = {"loadBalancer": {"simple": "ROUND_ROBIN", "warmup": {"duration": "30s"}}}
    return [service("productpage"), service("reviews"), dr]


def write_warmup(mesh: Mesh) -> None:
    mesh.write("services.yaml", with_warmup())


async def nacked(cp, name: str, xds_type: str = "cds") -> dict:
    """Wait until `name`'s last response of this type is NACKed in /debug/syncz; its row."""
    async def probe() -> dict | None:
        row = (await cp.proxy_rows()).get(name)
        return row if row and row["types"].get(xds_type, {}).get("nacked") else None
    return await poll(f"{name} {xds_type.upper()} NACKed in /debug/syncz", probe)


@pytest.mark.slow
async def test_a_cluster_the_proxy_rejects_is_nacked_shown_stale_and_the_last_good_config_keeps_serving(mesh: Mesh):
    bookinfo_config(mesh, {"v1": 100})
    cp = await mesh.control_plane()
    productpage, _ = await mesh.workloads(("productpage-v1", labels("productpage")),
                                          ("reviews-v1", labels("reviews", "v1")))
    client = productpage.sidecar
    good = (await cp.proxy_rows())["productpage-v1"]["types"]["cds"]["acked"]["version"]

    write_warmup(mesh)
    row = await nacked(cp, "productpage-v1")
    cds = row["types"]["cds"]
    assert cds["status"] == "STALE"
    assert cds["acked"]["version"] == good and cds["nack"]["version"] == cds["sent"]["version"] != good
    assert "round_robin_lb_config" in cds["nack"]["error"], cds
    assert row["types"]["rds"]["status"] == "SYNCED"  # RDS content did not change; the NACK did not touch it
    assert cp.log_time("proxy productpage-v1.default rejected CDS")

    # the proxy's side: it counted the rejection and still holds (and serves) the last good listeners
    info = await client.server_info()
    assert info["xds"]["cds"]["rejects"] >= 1 and info["xds"]["cds"]["version"] == good
    assert (await client.stats())["xds.cds.update_rejected"] >= 1
    async with client_session() as session:
        answers = [await call(session, client.outbound_port, "reviews:9080") for _ in range(5)]
    assert [(a.status, a.served_by) for a in answers] == [(200, "reviews-v1")] * 5

    # the operator's view
    table = proxy_status(cp.url)
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if line.startswith("productpage-v1"))
    assert "STALE" in line or "NACK" in line, table.stdout
    as_json = proxy_status(cp.url, "productpage-v1", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert "round_robin_lb_config" in as_json.stdout and "STALE" in as_json.stdout, as_json.stdout
    json.loads(as_json.stdout)


async def one_sidecar_nacking(mesh: Mesh):
    """The control plane and reviews-v1; then the TCP service, and wait for the LDS NACK. (cp, syncz row)"""
    bookinfo_config(mesh, {"v1": 100})
    cp = await mesh.control_plane()
    await mesh.workloads(("reviews-v1", labels("reviews", "v1")))
    write_warmup(mesh)
    return cp, await nacked(cp, "reviews-v1")


@pytest.mark.slow
async def test_reverting_a_rejected_config_brings_the_proxy_back_to_synced(mesh: Mesh):
    await one_sidecar_nacking(mesh)
    bookinfo_config(mesh, {"v1": 100})  # the DestinationRule again without warmup
    rows = await mesh.wait_all_synced(["reviews-v1"], timeout=5)
    assert not any(rows["reviews-v1"]["types"][t]["nacked"] for t in XDS_TYPES)


@pytest.mark.slow
async def test_the_nack_error_names_the_rejected_cluster(mesh: Mesh):
    _, row = await one_sidecar_nacking(mesh)
    error = row["types"]["cds"]["nack"]["error"]
    assert "(Cluster 'outbound|9080|" in error and "|reviews.default.svc.cluster.local')" in error, error


@pytest.mark.slow
async def test_a_listener_whose_port_is_taken_is_nacked_then_serves_once_the_port_frees(mesh: Mesh):
    """Something else holds the outbound port (a gateway's 8080 taken by `pyproxy run`): the listener cannot bind,
    the update that would start it is NACKed (VHDS, pyproxy's default in delta mode: the listener warms until the
    virtual hosts of its route configuration arrive; RDS without VHDS), and once the port frees the proxy binds it
    on its own (no config change needed) and ACKs."""
    bookinfo_config(mesh, {"v1": 100})
    cp = await mesh.control_plane()
    inbound, outbound, admin = free_ports(3)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", outbound))
    blocker.listen()
    try:
        w = mesh.start_workload("productpage-v1", labels("productpage"), extra_args=["--bind", "127.0.0.1"],
                                ports=(inbound, outbound, admin))
        await w.app.ready()
        row = await nacked(cp, "productpage-v1", "vhds")
        assert "cannot bind listener" in row["types"]["vhds"]["nack"]["error"]
        assert row["types"]["vhds"]["status"] == "STALE" and row["types"]["rds"]["status"] == "SYNCED"
    finally:
        blocker.close()

    async def serving() -> dict | None:
        row = (await cp.proxy_rows()).get("productpage-v1")
        return row if row and synced(row) else None

    await poll("productpage-v1 SYNCED after the port freed", serving)
    stats = await w.sidecar.stats()
    assert stats["xds.vhds.bind_retry"] >= 1
    listener = json.loads(subprocess.run(
        [*console_script("meshctl", "control.cli.meshctl"), "proxy-config", "listener", "productpage-v1",
         "--control", cp.url, "-o", "json"], capture_output=True, text=True, timeout=30).stdout)
    bound = {lis["name"]: lis["address"]["socket_address"] for lis in listener}
    assert bound[f"0.0.0.0_{outbound}"] == {"address": "127.0.0.1", "port_value": outbound}
    with socket.create_connection(("127.0.0.1", outbound), timeout=5):
        pass  # the proxy accepts on the port it could not bind before
