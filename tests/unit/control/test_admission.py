"""control.xds.admission: who may register as an endpoint. A node registers only as the identity the caller
authenticated as (istiod's checkConnectionIdentity); an unauthenticated caller only when the plaintext port is
`on`. A node that may not register still gets its config but joins no service's endpoints."""
from __future__ import annotations

import pytest

from control.serve import ControlPlane
from control.xds.admission import Admission, PlaintextXds, admit
from pyproxy.tls.identity import PeerIdentity as SpiffeId
from control.xds.node import node_id, parse_node
from tests.unit.control.test_incremental_push import SERVICES, eds_ports

REVIEWS_CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"


def node(name="reviews-v1-a", namespace="default", sa="bookinfo-reviews", inbound=20002):
    meta = {"INSTANCE_IPS": "127.0.0.1", "INBOUND_PORT": inbound, "NAMESPACE": namespace}
    if sa:
        meta["SERVICE_ACCOUNT"] = sa
    return parse_node({"id": node_id("sidecar", "127.0.0.1", name, namespace), "metadata": meta})


REVIEWS_ID = SpiffeId("cluster.local", "default", "bookinfo-reviews")


@pytest.mark.parametrize("proxy, identity, anonymous, trust_domain, register, reason", [
    # not authenticated: the plaintext port's policy alone
    (node(), None, True, None, True, ""),
    (node(), None, False, None, False, "unauthenticated (plaintext xDS is read-only)"),
    # authenticated: only as itself
    (node(), REVIEWS_ID, False, "cluster.local", True, ""),
    (node(), REVIEWS_ID, True, None, True, ""),
    (node(sa="bookinfo-details"), REVIEWS_ID, True, None, False,
     "claims namespace/service account default/bookinfo-details but authenticated as default/bookinfo-reviews"),
    (node(namespace="prod"), REVIEWS_ID, True, None, False, "claims namespace/service account prod/"),
    (node(sa=""), REVIEWS_ID, True, None, False, "default/<none> but authenticated as default/bookinfo-reviews"),
    (node(), SpiffeId("evil.example", "default", "bookinfo-reviews"), True, "cluster.local", False,
     "trust domain 'evil.example' is not the mesh's 'cluster.local'"),
])
def test_admit(proxy, identity, anonymous, trust_domain, register, reason):
    got = admit(proxy, identity, anonymous_may_register=anonymous, trust_domain=trust_domain)
    assert got.register is register
    assert (reason in got.reason) if reason else got.reason == ""


@pytest.mark.parametrize("mode, anonymous", [(PlaintextXds.ON, True), (PlaintextXds.READ_ONLY, False),
                                            (PlaintextXds.OFF, False)])
def test_only_an_open_plaintext_port_lets_unauthenticated_callers_register(mode, anonymous):
    assert mode.anonymous_may_register is anonymous
    assert PlaintextXds(mode.value) is mode


async def test_a_node_that_may_not_register_gets_config_but_is_in_no_endpoints(tmp_path):
    (tmp_path / "services.yaml").write_text(SERVICES)
    cp = ControlPlane(str(tmp_path), clock=lambda: 0.0, nonce_prefix="t-")
    assert cp.reload() and not cp.errors
    member, reader = node("reviews-v1-a", inbound=20002), node("reviews-v1-b", inbound=20003)
    cp.connect(member, Admission(True))
    cp.connect(reader, Admission(False, "read-only"))
    await cp.push(0.0)
    assert eds_ports(cp, member, REVIEWS_CLUSTER) == [20002]  # only the registered one is an endpoint
    assert eds_ports(cp, reader, REVIEWS_CLUSTER) == [20002]  # the reader has its config all the same
    assert cp.live.members() == {member.id}
    cp.connect(reader, Admission(True))  # e.g. the same proxy, now authenticated: it joins
    await cp.push(1.0)
    assert eds_ports(cp, member, REVIEWS_CLUSTER) == [20002, 20003]
    cp.connect(member, Admission(False, "read-only"))  # and leaves when it may no longer register
    await cp.push(2.0)
    assert eds_ports(cp, reader, REVIEWS_CLUSTER) == [20003]
