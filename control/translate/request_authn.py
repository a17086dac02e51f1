"""RequestAuthentication -> `envoy.filters.http.jwt_authn` on a sidecar's inbound and a gateway's HTTP chains.

What istiod does (pilot/pkg/security/authn/policy_applier.go `convertToEnvoyJwtConfig`, builder.go):

* Which policies: the mesh-wide ones (root namespace, no selector), the workload's namespace ones (no
  selector) and the workload ones (`selector.matchLabels`), as `MeshSnapshot.policies_for` selects them.
  Their `jwtRules` together, sorted by issuer; rule i becomes provider `origins-<i>`.
* A provider: `issuer`, `audiences`, `forward` (forwardOriginalToken), `forward_payload_header`
  (outputPayloadToHeader), `payload_in_metadata: payload` (what RBAC's requestPrincipals / request.auth.*
  matchers read), `normalize_payload_in_metadata.space_delimited_claims` (`permission`, `scope` and the rule's
  `spaceDelimitedClaims`, sorted), `claim_to_headers` (outputClaimToHeaders), `from_headers` (name,
  value_prefix), `from_params`, `from_cookies`, `clear_route_cache` when JWT claim routing needs the route
  picked again (gateways whose VirtualServices match `@request.auth.claims.*`).
* Keys: `jwks` inline -> `local_jwks.inline_string`. `jwksUri` -> `remote_jwks` (istiod's
  `PILOT_JWT_ENABLE_REMOTE_JWKS=envoy` mode: the proxy fetches; cluster `outbound|<port>||<host>` of the URI,
  `timeout` the rule's (default 5 s), `cache_duration` 5 min). istiod's default mode fetches the URI itself
  and inlines the keys; this control plane does no I/O while translating, so it always lets the proxy fetch.
  Neither: istiod discovers the keys through the issuer's OpenID configuration; not done here (reported, and
  the provider gets an empty key set, so its tokens fail, as istiod's fallback "fake JWKS" makes them fail).
* Requirement on prefix `/`: one provider -> `requires_any [origins-0, allow_missing]`; several ->
  `requires_any [P0, P1, ..., requires_all [any(P0, allow_missing), any(P1, allow_missing), ...]]`: a missing
  token passes (AuthorizationPolicy decides), a present invalid token is rejected. `bypass_cors_preflight`.
"""
from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

from control.istio.resources import Resource
from control.translate.common import Proxy

JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
FILTER_NAME = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"  # filters.EnvoyJwtFilterPayload: where RBAC reads the claims
DEFAULT_SPACE_DELIMITED = ("permission", "scope")
JWKS_TIMEOUT = "5s"  # JWTRule.timeout default in istiod
JWKS_CACHE = "300s"  # istiod's remote_jwks cache_duration
EMPTY_JWKS = '{"keys":[]}'
CLAIM_ROUTE_PREFIX = "@request.auth.claims"


def policies_for(proxy: Proxy) -> tuple[Resource, ...]:
    return proxy.mesh.policies_for("RequestAuthentication", proxy.workload)


def jwks_cluster(uri: str) -> str:
    """istiod's cluster for a jwksUri: `outbound|<port>||<host>` (port from the URI or its scheme)."""
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"outbound|{port}||{parts.hostname or ''}"


def _provider(pol: Resource, index: int, rule: Mapping[str, Any], clear_route_cache: bool, notes: Any) -> dict:
    p: dict = {"issuer": str(rule.get("issuer", ""))}
    if rule.get("audiences"):
        p["audiences"] = [str(a) for a in rule["audiences"]]
    if rule.get("forwardOriginalToken"):
        p["forward"] = True
    if rule.get("outputPayloadToHeader"):
        p["forward_payload_header"] = str(rule["outputPayloadToHeader"])
    p["payload_in_metadata"] = PAYLOAD_KEY
    claims = sorted({*DEFAULT_SPACE_DELIMITED, *(str(c) for c in rule.get("spaceDelimitedClaims") or ())})
    p["normalize_payload_in_metadata"] = {"space_delimited_claims": claims}
    if clear_route_cache:
        p["clear_route_cache"] = True
    headers = [{"header_name": str(c.get("header", "")), "claim_name": str(c.get("claim", ""))}
               for c in rule.get("outputClaimToHeaders") or ()]
    if headers:
        p["claim_to_headers"] = headers
    from_headers = []
    for h in rule.get("fromHeaders") or ():
        entry = {"name": str(h.get("name", ""))}
        if h.get("prefix"):
            entry["value_prefix"] = str(h["prefix"])
        from_headers.append(entry)
    if from_headers:
        p["from_headers"] = from_headers
    if rule.get("fromParams"):
        p["from_params"] = [str(v) for v in rule["fromParams"]]
    if rule.get("fromCookies"):
        p["from_cookies"] = [str(v) for v in rule["fromCookies"]]
    if rule.get("jwks"):
        p["local_jwks"] = {"inline_string": str(rule["jwks"])}
    elif rule.get("jwksUri"):
        uri = str(rule["jwksUri"])
        p["remote_jwks"] = {"http_uri": {"uri": uri, "cluster": jwks_cluster(uri),
                                         "timeout": str(rule.get("timeout") or JWKS_TIMEOUT)},
                            "cache_duration": JWKS_CACHE}
    else:
        notes.add(pol, f"spec.jwtRules[{index}]", "neither jwks nor jwksUri: OpenID discovery of the issuer's keys "
                                                  "is not done by this control plane; its tokens are rejected")
        p["local_jwks"] = {"inline_string": EMPTY_JWKS}
    return p


def _either(name: str) -> dict:
    return {"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}}


def build_filter(policies: tuple[Resource, ...] | list[Resource], notes: Any,
                 clear_route_cache: bool = False) -> dict | None:
    """The jwt_authn filter for these RequestAuthentications, or None when they have no rules."""
    rules = [(pol, i, r) for pol in policies for i, r in enumerate(pol.spec.get("jwtRules") or ())
             if isinstance(r, Mapping)]
    if not rules:
        return None
    rules.sort(key=lambda t: str(t[2].get("issuer", "")))  # istiod sorts by issuer (stable)
    providers = {}
    for n, (pol, i, rule) in enumerate(rules):
        providers[f"origins-{n}"] = _provider(pol, i, rule, clear_route_cache, notes)
    names = list(providers)
    if len(names) == 1:
        requires = _either(names[0])
    else:
        requires = {"requires_any": {"requirements": [{"provider_name": n} for n in names] + [
            {"requires_all": {"requirements": [_either(n) for n in names]}}]}}
    return {"name": FILTER_NAME, "typed_config": {
        "@type": JWT_AUTHN, "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": requires}], "bypass_cors_preflight": True}}


def routing_claims(header: str) -> list[str] | None:
    """istiod jwt.ToRoutingClaim: `@request.auth.claims.a.b` or `@request.auth.claims[a][b]` -> ["a", "b"];
    None when the header is not a claim (or names none)."""
    if not header.startswith(CLAIM_ROUTE_PREFIX):
        return None
    rest = header[len(CLAIM_ROUTE_PREFIX):]
    if rest.startswith("."):
        claims = rest[1:].split(".")
    elif rest.startswith("[") and rest.endswith("]"):
        claims = rest[1:-1].split("][")
    else:
        return None
    return claims if claims and all(claims) else None


def claim_route_matcher(claims: list[str], string_matcher: dict | None, invert: bool = False) -> dict:
    """istiod translateMetadataMatch: a route `dynamic_metadata` matcher on the verified payload (string or
    list claim, MetadataMatcherForJWTClaims); jwt_authn re-picks the route (`clear_route_cache`)."""
    one = {"string_match": string_matcher} if string_matcher is not None else {"present_match": True}
    m: dict = {"filter": FILTER_NAME, "path": [{"key": k} for k in [PAYLOAD_KEY, *claims]],
               "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": one}}, one]}}}
    if invert:
        m["invert"] = True
    return m


def uses_claim_routing(vs: Resource) -> bool:
    """A VirtualService matching on `@request.auth.claims.*` headers (istiod: JWT claim based routing)."""
    for route in vs.spec.get("http") or ():
        for m in (route or {}).get("match") or ():
            for key in ("headers", "withoutHeaders"):
                if any(str(h).lower().startswith(CLAIM_ROUTE_PREFIX) for h in ((m or {}).get(key) or {})):
                    return True
    return False


def http_filters(proxy: Proxy, direction: str) -> list[dict]:
    """The jwt_authn filter of an inbound or gateway connection manager (before RBAC, istiod's order)."""
    if direction not in ("inbound", "gateway"):
        return []
    clear = direction == "gateway" and any(uses_claim_routing(vs) for vs in proxy.mesh.virtual_services)
    f = build_filter(policies_for(proxy), proxy.notes, clear)
    return [f] if f is not None else []
