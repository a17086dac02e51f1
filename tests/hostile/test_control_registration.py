"""Item 9: anyone on the host could register as an endpoint of any service over plaintext xDS. With
`--plaintext-xds read-only` a made-up node still gets config but joins no service's endpoints; with `off` the
xDS port is not bound at all (/debug and /ready stay on the metrics port); `on` (the demo's default) still
registers. Real control-plane processes; the made-up node is a plain HTTP client."""
from __future__ import annotations

import aiohttp
import pytest

from tests.hostile.test_control_serving import ControlPlane
from tests.integration.test_xds_server import PATHS, Proxy, node
from tests.support.mesh import get, get_json
from tests.support.process import listening_ports

INTRUDER = node("details-v9", {"app": "details", "version": "v1"}, 15306, 9380)  # claims to be details


async def intrude(cp: ControlPlane) -> tuple[int, list]:
    """The intruder's full sync; (its CDS status, the details endpoints its own EDS shows)."""
    async with aiohttp.ClientSession() as session:
        proxy = Proxy(session, cp.url, INTRUDER)
        for path in PATHS:
            status, _ = await proxy.post(path)
            assert status == 200, (path, cp.output())
            await proxy.post(path, wait=0)
    (cla,) = [c for c in proxy.held["endpoints"]["resources"]
              if c["cluster_name"] == "outbound|9080||details.default.svc.cluster.local"]
    return status, [lb["endpoint"]["address"]["socket_address"]["port_value"]
                    for group in cla.get("endpoints", ()) for lb in group["lb_endpoints"]]


@pytest.mark.parametrize("mode, joined", [("read-only", []), ("on", [15306])])
async def test_a_made_up_node_registers_only_when_plaintext_xds_is_on(start, config_dir, mode, joined):
    cp = await start(config_dir, "--plaintext-xds", mode)
    status, endpoints = await intrude(cp)
    assert status == 200  # config is served either way
    assert endpoints == joined
    (entry,) = await get_json(f"{cp.url}/debug/syncz")
    assert entry["name"] == "details-v9.default"
    if mode == "read-only":
        assert "connected, not registered: unauthenticated (plaintext xDS is read-only)" in cp.output()


async def test_off_binds_no_xds_port_and_serves_debug_on_the_metrics_port(start, config_dir):
    cp = await start(config_dir, "--plaintext-xds", "off")
    assert set(cp.ports) == {"METRICS_PORT"}
    metrics = f"http://127.0.0.1:{cp.ports['METRICS_PORT']}"
    assert (await get(f"{metrics}/ready"))[0] == 200
    assert (await get_json(f"{metrics}/debug/configz"))["resources"] > 0
    assert listening_ports(cp.pid) == {cp.ports["METRICS_PORT"]}
    assert "plaintext xDS is off" in cp.output()
