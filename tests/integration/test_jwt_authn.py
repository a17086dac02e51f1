"""RequestAuthentication + AuthorizationPolicy enforced by a real pyproxy, keys served by a JWKS server on
127.0.0.1: the YAML goes through the control plane's translation (request_authn.py, authz.py) into
`envoy.filters.http.jwt_authn` + `envoy.filters.http.rbac`, and requests carry tokens signed here.

Istio's split: a missing token passes authentication and is refused by the ALLOW policy (403 `RBAC: access
denied`); a present but invalid token is refused by authentication (401 with Envoy's text and
`www-authenticate`). Keys rotate at the JWKS server: picked up only once the cache duration has passed.
"""
from __future__ import annotations

import asyncio
import json
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from control.istio.load import load_text
from control.translate.authz import build_filters
from control.translate.request_authn import build_filter
from tests.support.jwks import JwksServer, jwk
from tests.support.proxy import bootstrap

ISS = "https://issuer.example"
POLICY = """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  jwtRules:
  - issuer: "{iss}"
    audiences: ["my-app"]
    jwksUri: "{uri}"
    fromHeaders: [{{name: authorization, prefix: "Bearer "}}]
    fromParams: ["token"]
    fromCookies: ["session"]
    outputClaimToHeaders: [{{header: x-team, claim: team.name}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: default}}
spec:
  rules:
  - from: [{{source: {{requestPrincipals: ["{iss}/alice", "{iss}/bob"]}}}}]
    to: [{{operation: {{paths: ["/api/*"]}}}}]
  - to: [{{operation: {{paths: ["/admin"]}}}}]
    when:
    - {{key: "request.auth.claims[groups]", values: ["admin"]}}
    - {{key: "request.auth.claims[team][name]", values: ["blue"]}}
"""
REALM = 'Bearer realm="http://example.com{path}", error="invalid_token"'


@pytest.fixture(scope="module")
def keys():
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("k1", "k2", "stray")}


@pytest.fixture
async def jwks(keys):
    server = await JwksServer().start()
    server.keys = [jwk(keys["k1"], "k1")]
    yield server
    await server.close()


def token(keys, key="k1", kid="k1", **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISS, "sub": "alice", "aud": "my-app", "exp": now + 600, "iat": now, **claims}
    return pyjwt.encode({k: v for k, v in payload.items() if v is not None}, keys[key], algorithm="RS256",
                        headers={"kid": kid})


def _filters(uri: str, cache_duration: str | None = None) -> list[dict]:
    result = load_text(POLICY.format(iss=ISS, uri=uri), "policy.yaml")
    ra = [r for r in result.resources if r.kind == "RequestAuthentication"]
    ap = [r for r in result.resources if r.kind == "AuthorizationPolicy"]
    jwt_filter = build_filter(ra, notes=None)
    assert jwt_filter is not None
    if cache_duration is not None:
        jwt_filter["typed_config"]["providers"]["origins-0"]["remote_jwks"]["cache_duration"] = cache_duration
    return [jwt_filter, *build_filters(ap)]


async def _proxy(proxy_factory, upstream, tmp_path, uri: str, cache_duration: str | None = None):
    b = bootstrap({"backend": [upstream.port]}, access_log=tmp_path / "access.log",
                  hcm={"stat_prefix": "inbound_0.0.0.0_8080"})
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = _filters(uri, cache_duration) + hcm["http_filters"]
    hcm["access_log"][0]["typed_config"]["log_format"]["json_format"] = {
        "code": "%RESPONSE_CODE%", "details": "%RESPONSE_CODE_DETAILS%"}
    return await proxy_factory(b)


@pytest.fixture
async def proxy(proxy_factory, upstream, tmp_path, jwks):
    return await _proxy(proxy_factory, upstream, tmp_path, jwks.uri)


def bearer(t: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {t}")]


CASES = [
    # name, path, headers(keys) -> expected status, body, details
    ("no token: authentication passes, the ALLOW policy refuses", "/api/x", lambda k: [],
     403, b"RBAC: access denied", "rbac_access_denied_matched_policy[none]"),
    ("valid token for alice", "/api/x", lambda k: bearer(token(k)), 200, b"ok", "via_upstream"),
    ("valid token for bob", "/api/x", lambda k: bearer(token(k, sub="bob")), 200, b"ok", "via_upstream"),
    ("valid token, subject not allowed", "/api/x", lambda k: bearer(token(k, sub="eve")),
     403, b"RBAC: access denied", "rbac_access_denied_matched_policy[none]"),
    ("expired", "/api/x", lambda k: bearer(token(k, exp=int(time.time()) - 3600)),
     401, b"Jwt is expired", "jwt_authn_access_denied{Jwt_is_expired}"),
    ("not yet valid", "/api/x", lambda k: bearer(token(k, nbf=int(time.time()) + 3600)),
     401, b"Jwt not yet valid", "jwt_authn_access_denied{Jwt_not_yet_valid}"),
    ("wrong issuer", "/api/x", lambda k: bearer(token(k, iss="https://evil.example")),
     401, b"Jwt issuer is not configured", "jwt_authn_access_denied{Jwt_issuer_is_not_configured}"),
    ("wrong audience", "/api/x", lambda k: bearer(token(k, aud="other")),
     403, b"Audiences in Jwt are not allowed", "jwt_authn_access_denied{Audiences_in_Jwt_are_not_allowed}"),
    ("signed by a key the JWKS does not have", "/api/x", lambda k: bearer(token(k, key="stray")),
     401, b"Jwt verification fails", "jwt_authn_access_denied{Jwt_verification_fails}"),
    ("alg none", "/api/x", lambda k: bearer(pyjwt.encode({"iss": ISS, "sub": "alice"}, None, algorithm="none")),
     401, b"Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
     "jwt_authn_access_denied{Jwt_is_not_in_the_form_of_Header.Payload.Signature_with_two_dots_and_3_sections}"),
    ("token in a query parameter", "/api/x?token=", lambda k: [], 200, b"ok", "via_upstream"),
    ("token in a cookie", "/api/x", lambda k: [("cookie", f"a=1; session={token(k)}")], 200, b"ok",
     "via_upstream"),
    ("nested and list claims allow /admin", "/admin",
     lambda k: bearer(token(k, sub="carol", groups=["dev", "admin"], team={"name": "blue"})), 200, b"ok",
     "via_upstream"),
    ("nested claim mismatch refuses /admin", "/admin",
     lambda k: bearer(token(k, sub="carol", groups=["admin"], team={"name": "red"})),
     403, b"RBAC: access denied", "rbac_access_denied_matched_policy[none]"),
]


@pytest.mark.parametrize("name,path,headers,status,body,details", CASES, ids=[c[0] for c in CASES])
async def test_request_authentication_table(proxy, keys, upstream, name, path, headers, status, body, details):
    if path.endswith("token="):
        path += token(keys)
    r = await proxy.fetch("GET", path, headers(keys))
    assert (r.status, r.body) == (status, body)
    (entry,) = proxy.access_log()
    assert (entry["code"], entry["details"]) == (status, details)
    if status == 401 or (status == 403 and body != b"RBAC: access denied"):
        assert r.header("www-authenticate") == REALM.format(path=path)
    else:
        assert r.header("www-authenticate") is None
    assert len(upstream.requests) == (1 if status == 200 else 0)
    if status == 200:  # forwardOriginalToken false: the token's query parameter is dropped, as Envoy does
        assert upstream.requests[0].path == path.split("?")[0]


async def test_verified_token_is_removed_and_claims_copied_to_headers(proxy, keys, upstream):
    r = await proxy.fetch("GET", "/api/x", bearer(token(keys, team={"name": "blue"})) + [("x-team", "forged")])
    assert r.status == 200
    (req,) = upstream.requests
    assert req.header("authorization") is None  # forwardOriginalToken false: Envoy removes the token header
    assert req.header("x-team") == "blue"  # outputClaimToHeaders replaces what the client sent
    prefix = "http.inbound_0.0.0.0_8080."
    assert (proxy.stat(prefix + "jwt_authn.allowed"), proxy.stat(prefix + "jwt_authn.denied")) == (1, 0)
    assert proxy.stat(prefix + "jwt_authn.jwks_fetch_success") == 1


async def test_jwks_is_fetched_once_and_cached(proxy, keys, jwks):
    same = token(keys)
    for _ in range(3):
        assert (await proxy.fetch("GET", "/api/x", bearer(same))).status == 200
    assert jwks.fetches == 1
    prefix = "http.inbound_0.0.0.0_8080.jwt_authn."
    assert (proxy.stat(prefix + "jwt_cache_miss"), proxy.stat(prefix + "jwt_cache_hit")) == (1, 2)
    jwks.keys = [jwk(keys["k2"], "k2")]  # rotated at the server; the 5 min cache still holds k1
    assert (await proxy.fetch("GET", "/api/x", bearer(token(keys)))).status == 200
    r = await proxy.fetch("GET", "/api/x", bearer(token(keys, key="k2", kid="k2")))
    assert (r.status, r.body) == (401, b"Jwks doesn't have key to match kid or alg from Jwt")
    assert jwks.fetches == 1


async def test_rotation_is_picked_up_after_the_cache_duration(proxy_factory, upstream, tmp_path, keys, jwks):
    p = await _proxy(proxy_factory, upstream, tmp_path, jwks.uri, cache_duration="0.2s")
    assert (await p.fetch("GET", "/api/x", bearer(token(keys)))).status == 200
    jwks.keys = [jwk(keys["k2"], "k2")]
    new = token(keys, key="k2", kid="k2")
    deadline = time.monotonic() + 10  # hang guard only: the cache expires after 0.2 s
    while (await p.fetch("GET", "/api/x", bearer(new))).status != 200:
        assert time.monotonic() < deadline, "the rotated key was never fetched"
        await asyncio.sleep(0.05)  # poll interval of a bounded wait
    assert jwks.fetches >= 2
    r = await p.fetch("GET", "/api/x", bearer(token(keys)))  # k1 is gone from the JWKS now
    assert (r.status, r.body) == (401, b"Jwks doesn't have key to match kid or alg from Jwt")


async def test_unreachable_jwks_fails_closed(proxy_factory, upstream, tmp_path, keys):
    server = await JwksServer().start()
    uri = server.uri
    await server.close()  # nothing listens there any more
    p = await _proxy(proxy_factory, upstream, tmp_path, uri)
    r = await p.fetch("GET", "/api/x", bearer(token(keys)))
    assert (r.status, r.body) == (401, b"Jwks remote fetch is failed")
    assert p.stat("http.inbound_0.0.0.0_8080.jwt_authn.jwks_fetch_failed") == 1
    assert (await p.fetch("GET", "/api/x")).status == 403  # no token: still RBAC's answer, no fetch needed


async def test_jwt_claim_routing_picks_the_route_after_verification(proxy_factory, upstream_factory, keys):
    """A VirtualService `@request.auth.claims.groups` match (istiod: route dynamic_metadata on the payload) routes
    verified admins to another cluster; jwt_authn's clear_route_cache makes the route be picked again."""
    from control.translate.request_authn import claim_route_matcher
    from tests.support.proxy import route

    plain, admins = await upstream_factory("plain"), await upstream_factory("admins")
    admin_route = route("/", "admins")
    admin_route["match"]["dynamic_metadata"] = [claim_route_matcher(["groups"], {"exact": "admin"})]
    b = bootstrap({"plain": [plain.port], "admins": [admins.port]}, routes=[admin_route, route("/", "plain")])
    jwks = json.dumps({"keys": [jwk(keys["k1"], "k1")]})
    jwt_filter = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"origins-0": {"issuer": ISS, "payload_in_metadata": "payload", "clear_route_cache": True,
                                    "local_jwks": {"inline_string": jwks}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "origins-0"}, {"allow_missing": {}}]}}}]}}
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [jwt_filter] + hcm["http_filters"]
    p = await proxy_factory(b)
    calls = [("no token", []), ("list claim with admin", bearer(token(keys, groups=["dev", "admin"]))),
             ("string claim admin", bearer(token(keys, groups="admin"))),
             ("no admin", bearer(token(keys, groups=["dev"]))), ("unverified claim", [("groups", "admin")])]
    for _, headers in calls:
        assert (await p.fetch("GET", "/x", headers)).status == 200
    assert (len(admins.requests), len(plain.requests)) == (2, 3)


async def test_an_oversized_jwks_is_refused(proxy_factory, upstream, tmp_path, keys, jwks):
    from pyproxy.filters.jwt_authn import MAX_JWKS_BYTES
    jwks.keys = [jwk(keys["k1"], "k1"), {"kty": "oct", "k": "A" * MAX_JWKS_BYTES}]
    p = await _proxy(proxy_factory, upstream, tmp_path, jwks.uri)
    r = await p.fetch("GET", "/api/x", bearer(token(keys)))
    assert (r.status, r.body) == (401, b"Jwks remote fetch is failed")
    assert p.stat("http.inbound_0.0.0.0_8080.jwt_authn.jwks_fetch_failed") == 1
