"""The `jwt` oracle group: an HCM with `envoy.filters.http.jwt_authn` as istiod emits it for one
RequestAuthentication (one provider OR allow_missing, payload in metadata, inline JWKS), and the tokens the
cases send. The key is made once per test run; both proxies get the same bootstrap, so the same keys."""
from __future__ import annotations

import json
import time

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://issuer.example"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_STRANGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_NOW = int(time.time())
JWKS = json.dumps({"keys": [{**json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(_KEY.public_key())),
                             "kid": "k1", "alg": "RS256"}]})


def token(key=_KEY, kid: str = "k1", **claims) -> str:
    payload = {"iss": ISSUER, "sub": "alice", "aud": "app", "exp": _NOW + 86400, **claims}
    return pyjwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm="RS256",
                        headers={"kid": kid})


TOKENS = {
    "valid": token(),
    "expired": token(exp=_NOW - 3600),
    "not-yet-valid": token(nbf=_NOW + 3600),
    "wrong-issuer": token(iss="https://evil.example"),
    "wrong-audience": token(aud="other"),
    "wrong-key": token(_STRANGER),
    "unknown-kid": token(kid="k9"),
    "alg-none": pyjwt.encode({"iss": ISSUER, "sub": "alice"}, None, algorithm="none"),
    "garbage": "abc.def",
}

HCM = {"http_filters": [
    {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"origins-0": {"issuer": ISSUER, "audiences": ["app"], "payload_in_metadata": "payload",
                                    "forward_payload_header": "x-jwt-payload",
                                    "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"}],
                                    "local_jwks": {"inline_string": JWKS}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "origins-0"}, {"allow_missing": {}}]}}}],
        "bypass_cors_preflight": True}},
    {"name": "envoy.filters.http.router",
     "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
