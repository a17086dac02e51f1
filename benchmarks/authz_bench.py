"""Authorization cost: pyproxy with a 10-rule AuthorizationPolicy and JWT authentication against plain pyproxy
(issue 10: target ≤ 15 % fewer requests/s).

    .venv/bin/python benchmarks/authz_bench.py             # about 50 s; --duration / --rounds to change

Same backend, load tool and request; configs run one at a time, alternating (routes_bench.py's runner):
* `plain`: the engine benchmark's bootstrap (benchmarks/configs.py), no HTTP filter but the router;
* `authz`: the control plane's translation (control.translate.authz) of an ALLOW AuthorizationPolicy with 10
  rules (principals, namespaces, methods + paths, hosts, ports, headers, ipBlocks, ...), put first in the HTTP
  filters as istiod does; the request matches only the 10th rule (`paths: /api/*` + `methods: GET`), so every
  rule is tried;
* `authz-jwt`: the same with a RequestAuthentication (control.translate.request_authn: jwt_authn before RBAC,
  inline RS256 JWKS) and the 10th rule also requiring `requestPrincipals` and a `request.auth.claims[groups]`
  condition: every request carries a valid RS256 token that is verified, its payload put in metadata and
  matched by RBAC.
The token travels as the `access_token` query parameter (jwt_authn's default location), so wrk and the bundled
loadgen send identical bytes without header support; jwt_authn removes it from the path before forwarding.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jwt as pyjwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from benchmarks import configs, routes_bench  # noqa: E402
from control.istio.load import load_text  # noqa: E402
from control.translate.authz import build_filters  # noqa: E402
from control.translate.request_authn import build_filter  # noqa: E402

ISSUER = "https://issuer.bench"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS = json.dumps({"keys": [{**json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(_KEY.public_key())),
                             "kid": "bench", "alg": "RS256"}]})
TOKEN = pyjwt.encode({"iss": ISSUER, "sub": "alice", "aud": "bench", "groups": ["dev", "admin"],
                      "exp": int(time.time()) + 86400}, _KEY, algorithm="RS256", headers={"kid": "bench"})
PATH = "/api/orders/42?access_token=" + TOKEN

NINE_RULES = """
  - from: [{source: {principals: ["cluster.local/ns/default/sa/r1"]}}]
  - from: [{source: {namespaces: ["ns-2"]}}]
  - to: [{operation: {methods: ["POST"], paths: ["/admin/*"]}}]
  - to: [{operation: {hosts: ["r4.example.com"]}}]
  - to: [{operation: {ports: ["9999"]}}]
  - when: [{key: "request.headers[x-r6]", values: ["yes"]}]
  - from: [{source: {ipBlocks: ["10.6.0.0/16"]}}]
  - to: [{operation: {paths: ["/v8/*"], methods: ["DELETE"]}}]
  - from: [{source: {serviceAccounts: ["ns-9/sa-9"]}}]"""
POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: bench, namespace: default}}
spec:
  rules:{nine}
  - {last}
"""
LAST_PLAIN = 'to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]'
LAST_JWT = ('from: [{source: {requestPrincipals: ["https://issuer.bench/alice"]}}]\n'
            '    to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]\n'
            '    when: [{key: "request.auth.claims[groups]", values: ["admin"]}]')
REQUEST_AUTHN = f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: bench, namespace: default}}
spec:
  jwtRules: [{{issuer: "{ISSUER}", audiences: [bench], jwks: '{JWKS}'}}]
"""


def authz_bootstrap(*, listen_port: int, admin_port: int, backend_port: int, jwt: bool = False) -> dict:
    """configs.pyproxy_bootstrap with the translated filters first in the HTTP filter chain."""
    b = configs.pyproxy_bootstrap(listen_port=listen_port, admin_port=admin_port, backend_port=backend_port)
    text = POLICY.format(nine=NINE_RULES, last=LAST_JWT if jwt else LAST_PLAIN)
    resources = load_text(text + ("---\n" + REQUEST_AUTHN if jwt else ""), "bench.yaml").resources
    filters = build_filters([r for r in resources if r.kind == "AuthorizationPolicy"])
    if jwt:
        jwt_filter = build_filter([r for r in resources if r.kind == "RequestAuthentication"], None)
        filters = [jwt_filter, *filters]
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [*filters, *hcm["http_filters"]]
    return b


CONFIGS = {
    "plain": ("no filter but the router (the engine benchmark's config)", configs.pyproxy_bootstrap),
    "authz": ("RBAC: ALLOW policy, 10 rules, the request matches the 10th (methods + paths)", authz_bootstrap),
    "authz-jwt": ("jwt_authn (RS256, inline JWKS) + RBAC: 10 rules, the 10th also requires requestPrincipals and "
                  "a claim", functools.partial(authz_bootstrap, jwt=True)),
}


def sanity_check(name: str, port: int) -> None:
    """The token is accepted and the request allowed; without the token the jwt config answers 403."""
    for path, want in ((PATH, 200), ("/api/orders/42", 403 if name == "authz-jwt" else 200),
                       ("/other", 200 if name == "plain" else 403)):
        routes_bench.expect_answer(name, port, path, want)


SUITE = routes_bench.Suite("authz-bench", CONFIGS, PATH, sanity_check,
                           "pyproxy throughput: plain vs a 10-rule AuthorizationPolicy, with and without JWT")


if __name__ == "__main__":
    sys.exit(routes_bench.main(sys.argv[1:], SUITE))
