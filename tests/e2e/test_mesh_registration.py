"""Automatic registration in the live mesh (issue 5): a sidecar that starts shows up in the other proxies'
endpoints, and leaves them after it stops (the control plane's grace period, here 1 s).

"Visible" is read where an operator would: the client sidecar's admin /clusters, the hosts of
`outbound|9080|v1|reviews.default.svc.cluster.local`. The times are recorded, not asserted (a hang guard of
10 s is the only bound); the new instance is also sent traffic, so "in EDS" means "reachable".
"""
from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from tests.support.mesh import (Mesh, bookinfo_config, call, client_session, failures, labels, load,
                                outbound_cluster)
from tests.support.process import poll

V1 = outbound_cluster("reviews", subset="v1")
HANG_GUARD = 10.0

pytestmark = pytest.mark.timeout(90)


async def _status_is(row, status: str) -> bool:
    return ((await row) or {}).get("status") == status


@pytest.mark.slow
@pytest.mark.parametrize("how, xds", [("SIGTERM", "delta+LEDS"), ("SIGKILL", "delta+LEDS"), ("SIGTERM", "delta")])
async def test_a_new_sidecar_joins_the_endpoints_and_leaves_them_when_it_stops(mesh: Mesh, record_property, how,
                                                                               xds):
    """`delta+LEDS` (the default): the sidecars ask for endpoints as LbEndpoint resources (LEDS, docs/xds.md);
    `delta`: whole ClusterLoadAssignments (`--no-xds-leds`)."""
    bookinfo_config(mesh, {"v1": 100})
    await mesh.control_plane(grace=1.0)
    args = [] if xds == "delta+LEDS" else ["--no-xds-leds"]
    productpage, first = await mesh.workloads(("productpage-v1", labels("productpage")),
                                              ("reviews-v1", labels("reviews", "v1")), extra_args=args)
    client = productpage.sidecar
    assert await mesh.wait_hosts(client, V1, lambda h: h == {first.sidecar.endpoint}, "is the first instance")

    second = mesh.start_workload("reviews-v1-b", labels("reviews", "v1"), extra_args=args)
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
    if how == "SIGTERM":  # it stops following the control plane at once, and serves 2 s more (drain)
        second.sidecar.terminate()
    else:  # a crash: no goodbye, the control plane sees its long-polls drop
        second.sidecar.kill()
    try:
        hosts = await mesh.wait_hosts(client, V1, lambda h: second.sidecar.endpoint not in h,
                                      "drops the stopped one", timeout=HANG_GUARD)
    except AssertionError as exc:  # seen once in CI: tell a request stuck in flight from an expiry never run
        # (seen twice in CI: in_flight stuck at 5, its long-polls' handlers never cancelled although the sidecar
        # had exited; the control plane's sockets say whether it ever saw those connections close: CLOSE-WAIT
        # is a FIN received and not acted on)
        row = (await mesh.cp.proxy_rows()).get("reviews-v1-b")
        held = {k: row.get(k) for k in ("connected", "in_flight", "last_seen", "registered_at")} if row else None
        sockets = subprocess.run(["ss", "-tan", f"( sport = :{mesh.cp.xds_port} )"], capture_output=True,
                                 text=True).stdout
        raise AssertionError(f"{exc}\ncontrol plane's registry entry for reviews-v1-b: {held}\n"
                             f"the control plane's xDS sockets:\n{sockets}") from None
    left = time.monotonic() - stopping
    assert hosts == {first.sidecar.endpoint}
    leds_pushes = await mesh.cp.metric("pilot_xds_pushes", 'type="leds"')  # LbEndpoint responses sent
    assert (leds_pushes > 0) == (xds == "delta+LEDS"), leds_pushes
    async def leds_row() -> dict | None:  # meshctl proxy-status's LEDS column (the ACK may be on its way)
        return (await mesh.cp.proxy_rows())["productpage-v1"]["types"].get("leds")
    if xds == "delta+LEDS":
        await poll("productpage's LEDS SYNCED in /debug/syncz",
                   lambda: _status_is(leds_row(), "SYNCED"), timeout=HANG_GUARD)
    else:
        assert await leds_row() is None
    assert await second.sidecar.exited() == (0 if how == "SIGTERM" else -9), second.sidecar.output()
    rows = await mesh.cp.proxy_rows()
    assert "reviews-v1-b" not in rows and {"productpage-v1", "reviews-v1"} <= set(rows)
    record_property("sidecar_start_to_visible_in_eds_seconds", round(joined, 3))
    record_property("registration_to_visible_in_eds_seconds", round(visible_at - registered_at, 3))
    record_property(f"sidecar_{how}_to_gone_from_eds_seconds", round(left, 3))
    print(f"sidecar process start -> in client's EDS: {joined * 1000:.0f} ms "
          f"(registered at the control plane -> in client's EDS: {(visible_at - registered_at) * 1000:.0f} ms); "
          f"{how} -> gone from EDS: {left * 1000:.0f} ms (grace 1 s)")


@pytest.mark.slow
async def test_stopping_one_of_two_instances_under_load_loses_no_request(mesh: Mesh, record_property):
    """SIGTERM one instance's sidecar: it leaves the control plane (grace 1 s, then a push drops its endpoint)
    while it keeps serving for its drain time (2 s), as Istio's sidecar does; a request that still reaches a
    closed port is retried elsewhere by Istio's default retry policy (connect-failure, 2 attempts,
    previous_hosts with 5 host re-picks), and a request in flight to it when its endpoint leaves EDS finishes (the
    client drains a removed host's connections, it does not cut them). The client sees no failure."""
    bookinfo_config(mesh, {"v1": 100})
    await mesh.control_plane(grace=1.0)
    productpage, first, second = await mesh.workloads(("productpage-v1", labels("productpage")),
                                                      ("reviews-v1", labels("reviews", "v1")),
                                                      ("reviews-v1-b", labels("reviews", "v1")))
    client = productpage.sidecar
    await mesh.wait_hosts(client, V1, lambda h: h == {first.sidecar.endpoint, second.sidecar.endpoint}, "has both")
    gone: list[float] = []
    exited: list[float] = []  # when the stopped sidecar was first seen exited (it exits after its drain)

    def stop_then_wait(answers) -> bool:
        if not gone and len(answers) >= 20:
            second.sidecar.terminate()
            gone.append(time.monotonic())
        if gone and not exited and not second.sidecar.running():
            exited.append(time.monotonic())  # a request sent from now on can only reach reviews-v1
        return bool(exited) and sum(a.sent > exited[0] for a in answers) >= 20  # some traffic after the exit
    slow: list = []  # requests that take 0.2 s: some are always in flight when the endpoint leaves EDS
    answers, _ = await asyncio.gather(
        load(client.outbound_port, "reviews:9080", until=stop_then_wait, max_seconds=20),
        load(client.outbound_port, "reviews:9080", until=lambda _: bool(exited), max_seconds=20, workers=4,
             path="/delay/0.2", answers=slow))
    assert gone and exited and len(slow) > 20
    counters = {k.rsplit(".", 1)[1]: v for k, v in (await client.stats()).items()
                if k.startswith(f"cluster.{V1}.") and ("retry" in k or "connect_fail" in k)}
    record_property("scale_down_counters", counters)
    bad = failures(answers + slow)
    assert not bad, (counters, [(f"+{a.sent - gone[0]:.3f}s", a.status, a.error) for a in bad])
    assert await second.sidecar.exited() == 0, second.sidecar.output()
    late = [a for a in answers if a.sent > exited[0]]  # after the stopped sidecar exited: only the remaining one
    assert late and {a.served_by for a in late} == {"reviews-v1"}
