"""The live mesh carries traffic (issue 5): real `pyproxy-control`, `pyproxy sidecar` and demo-app processes.

The app of productpage calls its own sidecar's outbound port with `Host: reviews:9080`; the sidecar routes by
the VirtualService to `outbound|9080|<subset>|reviews...`, whose EDS endpoint is the reviews sidecar's inbound
listener; that sidecar's `inbound|9080||reviews...` cluster is the reviews app. Editing the VirtualService file
moves live traffic with no failed request. Processes: tests/support/mesh.py.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.support.mesh import (Mesh, bookinfo_config, call, client_session, failures, fqdn, labels, load, poll,
                                outbound_cluster, virtual_service)

INBOUND_RQ = "http.inbound_0.0.0.0_9080.downstream_rq_total"
INBOUND_CLUSTER_RQ = f"cluster.inbound|9080||{fqdn('reviews')}.upstream_rq_total"
OUTBOUND_V1_RQ = f"cluster.{outbound_cluster('reviews', subset='v1')}.upstream_rq_total"

pytestmark = pytest.mark.timeout(90)


async def test_request_goes_through_both_sidecars_to_the_service_app(mesh: Mesh):
    bookinfo_config(mesh, {"v1": 100})
    await mesh.control_plane()
    client, server = await mesh.productpage_and_reviews()
    before_in, before_out = await server.stats(), await client.stats()
    request_id = str(uuid.uuid4())
    async with client_session() as session:
        answer = await call(session, client.outbound_port, "reviews:9080", "/anything/hop",
                            {"x-request-id": request_id})
        echoed = await session.get(f"http://127.0.0.1:{client.outbound_port}/anything/hop",
                                   headers={"Host": "reviews:9080", "x-request-id": request_id})
        seen = await echoed.json()
    seen_headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert (answer.status, answer.served_by) == (200, "reviews-v1"), (answer, mesh.logs())
    assert seen["served_by"] == "reviews-v1" and seen["path"] == "/anything/hop"
    # the app saw the request the client sent, with the id it gave, after two proxies
    assert seen_headers["x-request-id"] == request_id
    assert seen_headers["host"] == "reviews:9080"
    after_in, after_out = await server.stats(), await client.stats()
    # destination side: the inbound listener's HCM and the inbound cluster each took both requests
    assert after_in[INBOUND_RQ] - before_in.get(INBOUND_RQ, 0) == 2
    assert after_in[INBOUND_CLUSTER_RQ] - before_in.get(INBOUND_CLUSTER_RQ, 0) == 2
    # source side: the outbound cluster for subset v1 sent them
    assert after_out[OUTBOUND_V1_RQ] - before_out.get(OUTBOUND_V1_RQ, 0) == 2


@pytest.mark.slow
async def test_editing_the_virtual_service_shifts_live_traffic_without_a_failed_request(mesh: Mesh, record_property):
    bookinfo_config(mesh, {"v1": 100})
    await mesh.control_plane()
    productpage, v1, v2 = await mesh.workloads(("productpage-v1", labels("productpage")),
                                               ("reviews-v1", labels("reviews", "v1")),
                                               ("reviews-v2", labels("reviews", "v2")))
    client = productpage.sidecar
    for subset, w in (("v1", v1), ("v2", v2)):
        await mesh.wait_hosts(client, outbound_cluster("reviews", subset=subset),
                              lambda h, w=w: w.sidecar.endpoint in h, f"has {w.name}")
    written: list[float] = []

    def edit_then_see_v2(answers) -> bool:
        """Drive the test from inside the load: edit once warmed up, stop a while after v2 answers."""
        if not written and len(answers) >= 20:
            written.append(mesh.write("reviews-vs.yaml", virtual_service("reviews", {"v2": 100})))
        v2_seen = [a for a in answers if a.served_by == "reviews-v2"]
        return bool(v2_seen) and time.monotonic() - min(a.done for a in v2_seen) > 1.0

    fast: list = []
    slow: list = []  # 0.2 s requests beside the fast ones: some are always in flight when the new routes land
    answers, _ = await asyncio.gather(
        load(client.outbound_port, "reviews:9080", until=edit_then_see_v2, max_seconds=15, answers=fast),
        load(client.outbound_port, "reviews:9080", until=lambda _: edit_then_see_v2(fast), max_seconds=15,
             workers=3, path="/delay/0.2", answers=slow))
    assert written, "the load never warmed up"
    assert len(slow) > 10 and not failures(answers + slow), (failures(answers + slow)[:5], mesh.logs())
    before = [a for a in answers if a.sent < written[0]]
    assert before and {a.served_by for a in before} == {"reviews-v1"}
    first_v2 = min((a.done for a in answers if a.served_by == "reviews-v2"), default=None)
    assert first_v2 is not None, f"no answer from v2 within 15s of the edit\n{mesh.logs()}"
    after = [a for a in answers if a.sent > first_v2]
    assert after and {a.served_by for a in after} == {"reviews-v2"}
    shift = first_v2 - written[0]
    record_property("vs_edit_to_first_v2_seconds", round(shift, 3))
    print(f"VirtualService edit -> first v2 answer: {shift * 1000:.0f} ms; {len(answers) + len(slow)} requests, "
          "0 failed")


BROKEN = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews\n"  # unclosed flow map


def jason_to_v2() -> dict:
    """bookinfo's reviews route: `end-user: jason` -> v2, everyone else -> v1."""
    vs = virtual_service("reviews", {"v1": 100})
    vs["spec"]["http"].insert(0, {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
                                  "route": [{"destination": {"host": "reviews", "subset": "v2"}}]})
    return vs


@pytest.mark.slow
async def test_a_broken_edit_keeps_traffic_on_the_last_good_config_and_the_fix_applies(mesh: Mesh):
    """A VirtualService file that stops parsing is reported (file and line at /debug/configz) and changes
    nothing; the corrected file then takes effect: the header match sends `end-user: jason` to v2."""
    bookinfo_config(mesh, {"v1": 100})
    cp = await mesh.control_plane()
    productpage, v1, v2 = await mesh.workloads(("productpage-v1", labels("productpage")),
                                               ("reviews-v1", labels("reviews", "v1")),
                                               ("reviews-v2", labels("reviews", "v2")))
    port = productpage.sidecar.outbound_port
    for subset, w in (("v1", v1), ("v2", v2)):  # every registration pushed: the mesh is steady
        await mesh.wait_hosts(productpage.sidecar, outbound_cluster("reviews", subset=subset),
                              lambda h, w=w: w.sidecar.endpoint in h, f"has {w.name}")
    version = (await mesh.wait_all_synced(["productpage-v1"]))["productpage-v1"]["version"]
    mesh.write("reviews-vs.yaml", BROKEN)

    async def reported() -> list[str]:
        return [e for e in (await cp.configz())["errors"] if "reviews-vs.yaml" in e]
    errors = await poll("the broken file in /debug/configz errors", reported, detail=mesh.logs)
    assert any(":3" in e or ":4" in e for e in errors), errors  # names the line
    async with client_session() as session:
        answers = [await call(session, port, "reviews:9080", headers={"end-user": "jason"}) for _ in range(5)]
    assert [(a.status, a.served_by) for a in answers] == [(200, "reviews-v1")] * 5
    assert (await cp.proxy_rows())["productpage-v1"]["version"] == version  # nothing was pushed

    mesh.write("reviews-vs.yaml", jason_to_v2())

    async def jason_on_v2() -> bool:
        async with client_session() as session:
            return (await call(session, port, "reviews:9080", headers={"end-user": "jason"})).served_by == "reviews-v2"
    await poll("end-user: jason routed to v2", jason_on_v2, detail=mesh.logs)
    async with client_session() as session:
        jason = [await call(session, port, "reviews:9080", headers={"end-user": "jason"}) for _ in range(5)]
        others = [await call(session, port, "reviews:9080", headers={"end-user": "kim"}) for _ in range(5)]
    assert {(a.status, a.served_by) for a in jason} == {(200, "reviews-v2")}
    assert {(a.status, a.served_by) for a in others} == {(200, "reviews-v1")}
    assert not (await cp.configz())["errors"]
