"""control.translate.request_authn.http_filters: which connection managers get jwt_authn, whether it clears the
route cache (only a gateway, and only when a VirtualService routes on JWT claims: istiod's
convertToEnvoyJwtConfig with `clearRouteCache`), and that what it cannot honour reaches the proxy's notes."""
from __future__ import annotations

import pytest

from control.istio.load import load_text
from control.mesh import build_mesh
from control.translate import find_workload
from control.translate.common import make_proxy
from control.translate.request_authn import http_filters
from tests.unit.control.test_translate import BASE

NO_KEYS = """---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: default}
spec:
  jwtRules: [{issuer: iss}]
"""
CLAIM_ROUTE = """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: by-claim, namespace: default}
spec:
  hosts: [reviews.example.com]
  gateways: [ingress]  # claim routing is refused on sidecars (Istio: "only supported for gateway")
  http:
  - match: [{headers: {"@request.auth.claims.group": {exact: admin}}}]
    route: [{destination: {host: reviews}}]
"""


def proxy_for(extra: str):
    result = load_text(BASE + NO_KEYS + extra, "ra.yaml")
    assert not [f for f in result.findings if f.level.label == "Error"], [str(f) for f in result.findings]
    mesh = build_mesh(result.resources)
    return make_proxy(mesh, find_workload(mesh, "client"))


@pytest.mark.parametrize("direction, extra, clears", [
    ("gateway", "", False),  # a gateway without claim routing: the route cache is left alone
    ("gateway", CLAIM_ROUTE, True),
    ("inbound", CLAIM_ROUTE, False),  # claim routing happens where routes are chosen on the JWT: gateways only
])
def test_the_route_cache_is_cleared_only_on_a_gateway_that_routes_on_claims(direction, extra, clears):
    [f] = http_filters(proxy_for(extra), direction)
    provider = f["typed_config"]["providers"]["origins-0"]
    assert provider.get("clear_route_cache", False) is clears


def test_outbound_gets_no_jwt_authn():
    assert http_filters(proxy_for(""), "outbound") == []


def test_what_the_filter_cannot_honour_is_a_note_of_the_proxy():
    proxy = proxy_for("")
    http_filters(proxy, "inbound")
    assert [n for n in proxy.notes.items if "jwtRules[0]" in n] == [
        "ra.yaml:38: RequestAuthentication default/ra: spec.jwtRules[0]: neither jwks nor jwksUri: OpenID discovery "
        "of the issuer's keys is not done by this control plane; its tokens are rejected"]
