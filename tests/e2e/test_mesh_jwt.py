"""RequestAuthentication + AuthorizationPolicy in the live mesh: `pyproxy-control` translates them and pushes
`envoy.filters.http.jwt_authn` + RBAC to the reviews sidecar over xDS; that sidecar fetches the keys from a
JWKS server on 127.0.0.1 (remote_jwks) and enforces them on requests productpage's app sends through its own
sidecar. Processes: tests/support/mesh.py.
"""
from __future__ import annotations

import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.jwks import JwksServer, jwk
from tests.support.mesh import Mesh, bookinfo_config, call, client_session, labels, outbound_cluster

ISS = "https://issuer.mesh"

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def jwks_server():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = await JwksServer().start()
    server.keys = [jwk(key, "k1")]
    yield key, server.uri
    await server.close()


def _token(key, **claims) -> str:
    payload = {"iss": ISS, "sub": "alice", "exp": int(time.time()) + 600, **claims}
    return pyjwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})


def _policies(jwks_uri: str) -> list[dict]:
    selector = {"matchLabels": {"app": "reviews"}}
    return [
        {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
         "metadata": {"name": "reviews-jwt", "namespace": "default"},
         "spec": {"selector": selector, "jwtRules": [{"issuer": ISS, "jwksUri": jwks_uri}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "reviews-needs-alice", "namespace": "default"},
         "spec": {"selector": selector, "rules": [{"from": [{"source": {"requestPrincipals": [f"{ISS}/alice"]}}]}]}},
    ]


async def test_the_reviews_sidecar_verifies_tokens_with_keys_it_fetches(mesh: Mesh, jwks_server):
    key, jwks_uri = jwks_server
    bookinfo_config(mesh, {"v1": 100})
    mesh.write("jwt.yaml", _policies(jwks_uri))
    await mesh.control_plane()
    productpage, reviews = await mesh.workloads(("productpage-v1", labels("productpage")),
                                                ("reviews-v1", labels("reviews", "v1")))
    await mesh.wait_hosts(productpage.sidecar, outbound_cluster("reviews", subset="v1"),
                          lambda h: reviews.sidecar.endpoint in h, "has the reviews sidecar")
    await reviews.app.ready()
    cases = [("no token", {}, 403, "RBAC: access denied"),
             ("alice", {"authorization": f"Bearer {_token(key)}"}, 200, ""),
             ("bob", {"authorization": f"Bearer {_token(key, sub='bob')}"}, 403, "RBAC: access denied"),
             ("expired", {"authorization": f"Bearer {_token(key, exp=int(time.time()) - 3600)}"}, 401,
              "Jwt is expired")]
    got = []
    async with client_session() as session:
        for _, headers, _, _ in cases:
            a = await call(session, productpage.sidecar.outbound_port, "reviews:9080", headers=headers)
            got.append((a.status, a.served_by if a.status == 200 else a.error))
    assert got == [(s, "reviews-v1" if s == 200 else text) for _, _, s, text in cases], mesh.logs()
    stats = await reviews.sidecar.stats()
    prefix = "http.inbound_0.0.0.0_9080."
    assert (stats[prefix + "jwt_authn.allowed"], stats[prefix + "jwt_authn.denied"]) == (3, 1)
    assert stats[prefix + "jwt_authn.jwks_fetch_success"] == 1
    assert (stats[prefix + "rbac.allowed"], stats[prefix + "rbac.denied"]) == (1, 2)
