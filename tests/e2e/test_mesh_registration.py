"""Automatic registration in the live mesh (issue 5): a sidecar that starts shows up in the other proxies'
endpoints, and leaves them after it stops (the control plane's grace period, here 1 s).

"Visible" is read where an operator would: the client sidecar's admin /clusters, the hosts of
`outbound|9080|v1|reviews.default.svc.cluster.local`. The times are recorded, not asserted (a hang guard of
10 s is the only bound); the new instance is also sent traffic, so "in EDS" means "reachable".
"""
from __future__ import annotations

import time

import pytest

from tests.support.mesh import Mesh, bookinfo_config, call, client_session, labels, outbound_cluster
from tests.support.mesh import mesh  # noqa: F401 (the fixture)

V1 = outbound_cluster("reviews", subset="v1")
HANG_GUARD = 10.0

pytestmark = pytest.mark.timeout(90)


@pytest.mark.slow
async def test_a_new_sidecar_joins_the_endpoints_and_leaves_them_when_it_stops(mesh: Mesh, record_property):
    bookinfo_config(mesh, {"v1": 100})
    await mesh.control_plane(grace=1.0)
    productpage, first = await mesh.workloads(("productpage-v1", labels("productpage")),
                                              ("reviews-v1", labels("reviews", "v1")))
    client = productpage.sidecar
    assert await mesh.wait_hosts(client, V1, lambda h: h == {first.sidecar.endpoint}, "is the first instance")

    second = mesh.start_workload("reviews-v1-b", labels("reviews", "v1"))
    started = second.sidecar.started_at
    await mesh.wait_hosts(client, V1, lambda h: second.sidecar.endpoint in h, "has the new instance",
                          timeout=HANG_GUARD)
    joined, visible_at = time.monotonic() - started, time.time()
    registered_at = mesh.cp.log_time("proxy reviews-v1-b.default registered")
    await second.app.ready()
    answers = []
    async with client_session() as session:  # the load balancer picks among both; stop once each answered
        while len(answers) < 50 and {a.served_by for a in answers} != {"reviews-v1", "reviews-v1-b"}:
            answers.append(await call(session, client.outbound_port, "reviews:9080"))
    assert all(a.ok for a in answers), answers
    assert {a.served_by for a in answers} == {"reviews-v1", "reviews-v1-b"}

    stopping = time.monotonic()
    assert second.sidecar.stop() == 0, second.sidecar.output()
    hosts = await mesh.wait_hosts(client, V1, lambda h: second.sidecar.endpoint not in h, "drops the stopped one",
                                  timeout=HANG_GUARD)
    left = time.monotonic() - stopping
    assert hosts == {first.sidecar.endpoint}
    rows = await mesh.cp.proxy_rows()
    assert "reviews-v1-b" not in rows and {"productpage-v1", "reviews-v1"} <= set(rows)
    record_property("sidecar_start_to_visible_in_eds_seconds", round(joined, 3))
    record_property("registration_to_visible_in_eds_seconds", round(visible_at - registered_at, 3))
    record_property("sidecar_stop_to_gone_from_eds_seconds", round(left, 3))
    print(f"sidecar process start -> in client's EDS: {joined * 1000:.0f} ms "
          f"(registered at the control plane -> in client's EDS: {(visible_at - registered_at) * 1000:.0f} ms); "
          f"SIGTERM -> gone from EDS: {left * 1000:.0f} ms (grace 1 s)")
