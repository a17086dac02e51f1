"""The JWT verifier of `envoy.filters.http.jwt_authn` as tables: tokens made here with keys made here.

Expected texts and statuses are Envoy 1.40's (observed with the same tokens; tests/oracle/test_jwt_differential.py
checks a subset against a live Envoy).
"""
from __future__ import annotations

import json

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pyproxy.config import model
from pyproxy.filters.jwt_authn_logic import (Location, ProviderSpec, Status, claim_value, compile_requirement,
                                             extract_tokens, locations_of, normalise_payload, original_uri,
                                             parse_jwks, parse_jwt, verify_token, www_authenticate)

NOW = 1_800_000_000
ISS = "https://issuer.example"


def _jwk(public_key, alg: str, kid: str) -> dict:
    d = json.loads(pyjwt.algorithms.get_default_algorithms()[alg].to_jwk(public_key))
    d.update(kid=kid)
    return d


@pytest.fixture(scope="module")
def keys():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec256 = ec.generate_private_key(ec.SECP256R1())
    ec384 = ec.generate_private_key(ec.SECP384R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    jwks = {"keys": [_jwk(rsa_key.public_key(), "RS256", "rsa"), _jwk(ec256.public_key(), "ES256", "ec256"),
                     _jwk(ec384.public_key(), "ES384", "ec384"), _jwk(ed.public_key(), "EdDSA", "ed")]}
    return {"rsa": rsa_key, "other": other_rsa, "ec256": ec256, "ec384": ec384, "ed": ed,
            "jwks": parse_jwks(json.dumps(jwks))}


def claims(**over):
    base = {"iss": ISS, "sub": "alice", "aud": ["api"], "exp": NOW + 3600, "iat": NOW - 10}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def sign(keys, payload, key="rsa", alg="RS256", kid="rsa"):
    """PyJWS signs any payload bytes (PyJWT's encode refuses a non-string iss, which we need to test)."""
    return pyjwt.api_jws.PyJWS().encode(json.dumps(payload).encode(), keys[key], algorithm=alg,
                                        headers={"kid": kid} if kid else None)


def forged(header: dict, payload: dict | None, signature: str = "c2ln") -> str:
    """A token with any header (PyJWS refuses a non-string alg or kid); payload None: a part that is not base64url."""
    part = pyjwt.utils.base64url_encode
    body = part(json.dumps(payload).encode()).decode() if payload is not None else "a*b"
    return f"{part(json.dumps(header).encode()).decode()}.{body}.{signature}"


def tamper(token: str) -> str:
    h, _, s = token.split(".")
    forged = pyjwt.utils.base64url_encode(json.dumps(claims(sub="mallory")).encode()).decode()
    return f"{h}.{forged}.{s}"


SPEC = ProviderSpec("origins-0", ISS, ("api",), 60, locations_of(model.JwtProvider(issuer=ISS)))

CASES = [
    ("valid RS256", lambda k: sign(k, claims()), Status.OK),
    ("valid PS256 with the RSA key", lambda k: sign(k, claims(), alg="PS256"), Status.OK),
    ("valid RS384", lambda k: sign(k, claims(), alg="RS384"), Status.OK),
    ("valid RS512", lambda k: sign(k, claims(), alg="RS512"), Status.OK),
    ("valid ES256", lambda k: sign(k, claims(), "ec256", "ES256", "ec256"), Status.OK),
    ("valid ES384", lambda k: sign(k, claims(), "ec384", "ES384", "ec384"), Status.OK),
    ("valid EdDSA", lambda k: sign(k, claims(), "ed", "EdDSA", "ed"), Status.OK),
    ("no kid: every fitting key is tried", lambda k: sign(k, claims(), "ec256", "ES256", None), Status.OK),
    ("audience as a string", lambda k: sign(k, claims(aud="api")), Status.OK),
    ("expired 30 s ago: inside the 60 s skew", lambda k: sign(k, claims(exp=NOW - 30)), Status.OK),
    ("expired 100 s ago", lambda k: sign(k, claims(exp=NOW - 100)), Status.JwtExpired),
    ("not valid for an hour", lambda k: sign(k, claims(nbf=NOW + 3600)), Status.JwtNotYetValid),
    ("nbf 30 s ahead: inside the skew", lambda k: sign(k, claims(nbf=NOW + 30)), Status.OK),
    ("wrong issuer", lambda k: sign(k, claims(iss="https://evil.example")), Status.JwtUnknownIssuer),
    ("wrong audience", lambda k: sign(k, claims(aud=["other"])), Status.JwtAudienceNotAllowed),
    ("no audience", lambda k: sign(k, claims(aud=None)), Status.JwtAudienceNotAllowed),
    ("signed by a key not in the JWKS", lambda k: sign(k, claims(), key="other"), Status.JwtVerificationFail),
    ("kid not in the JWKS", lambda k: sign(k, claims(), kid="nope"), Status.JwksKidAlgMismatch),
    ("ES256 claimed with an RSA kid", lambda k: sign(k, claims(), "ec256", "ES256", "rsa"), Status.JwksKidAlgMismatch),
    ("alg none (empty signature part)", lambda k: pyjwt.encode(claims(), None, algorithm="none"), Status.JwtBadFormat),
    ("alg none with a signature part", lambda k: pyjwt.encode(claims(), None, algorithm="none") + "c2ln",
     Status.JwtHeaderNotImplementedAlg),
    ("tampered payload", lambda k: tamper(sign(k, claims())), Status.JwtVerificationFail),
    ("expired and signed by a stranger: time is checked first",
     lambda k: sign(k, claims(exp=NOW - 100), key="other"), Status.JwtExpired),
    ("two parts", lambda k: "abc.def", Status.JwtBadFormat),
    ("header not base64url", lambda k: "a*b.def.ghi", Status.JwtHeaderParseErrorBadBase64),
    ("header not JSON", lambda k: "bm90anNvbg.e30.c2ln", Status.JwtHeaderParseErrorBadJson),
    ("iss not a string", lambda k: sign(k, claims(iss=5)), Status.JwtPayloadParseErrorIssNotString),
    ("exp not an integer", lambda k: sign(k, claims(exp="soon")), Status.JwtPayloadParseErrorExpNotInteger),
    ("iat not an integer", lambda k: sign(k, claims(iat="soon")), Status.JwtPayloadParseErrorIatNotInteger),
    ("header JSON but not an object", lambda k: "W10.e30.c2ln", Status.JwtHeaderParseErrorBadJson),
    ("payload not JSON", lambda k: forged({"alg": "RS256"}, None).replace("a*b", "bm90anNvbg"),
     Status.JwtPayloadParseErrorBadJson),
    ("alg not a string", lambda k: forged({"alg": 5}, claims()), Status.JwtHeaderBadAlg),
    ("kid not a string", lambda k: forged({"alg": "RS256", "kid": 5}, claims()), Status.JwtHeaderBadKid),
    ("payload not base64url", lambda k: forged({"alg": "RS256"}, None), Status.JwtPayloadParseErrorBadBase64),
    ("sub not a string", lambda k: sign(k, claims(sub=7)), Status.JwtPayloadParseErrorSubNotString),
    ("aud a list with a number", lambda k: sign(k, claims(aud=["api", 3])), Status.JwtPayloadParseErrorAudNotString),
    ("signature not base64url", lambda k: forged({"alg": "RS256"}, claims(), "c2ln*"),
     Status.JwtSignatureParseErrorBadBase64),
    ("signature of an impossible base64 length", lambda k: forged({"alg": "RS256"}, claims(), "abcde"),
     Status.JwtSignatureParseErrorBadBase64),
]


@pytest.mark.parametrize("name,make,expected", CASES, ids=[c[0] for c in CASES])
def test_token_table(keys, name, make, expected):
    status, token = verify_token(SPEC, make(keys), keys["jwks"], NOW)
    assert status is expected
    assert (token is not None) == (expected is Status.OK)
    if token is not None:
        assert (token.iss, token.sub) == (ISS, "alice")


def test_clock_skew_is_configurable(keys):
    spec = ProviderSpec("p", ISS, (), 0, SPEC.locations)
    assert verify_token(spec, sign(keys, claims(exp=NOW - 1)), keys["jwks"], NOW)[0] is Status.JwtExpired


def test_audience_override_of_provider_and_audiences(keys):
    tok = sign(keys, claims(aud=["other"]))
    assert verify_token(SPEC, tok, keys["jwks"], NOW, ("other",))[0] is Status.OK


def test_statuses_answer_as_envoy():
    assert (Status.JwtVerificationFail.http_status, Status.JwtAudienceNotAllowed.http_status) == (401, 403)
    assert Status.JwtVerificationFail.details == "jwt_authn_access_denied{Jwt_verification_fails}"
    uri = original_uri("http", "h.example:81", "/p/a?q=1")
    assert www_authenticate(Status.JwtExpired, uri) == \
        'Bearer realm="http://h.example:81/p/a?q=1", error="invalid_token"'
    assert www_authenticate(Status.JwtMissed, uri) == 'Bearer realm="http://h.example:81/p/a?q=1"'
    assert original_uri("http", "h", "/" + "x" * 400) == "http://h/" + "x" * 255


def test_jwks_documents():
    for text, status in (("not json", Status.JwksParseError), ("[]", Status.JwksParseError),
                         ("{}", Status.JwksNoKeys), ('{"keys": 3}', Status.JwksBadKeys)):
        assert (parse_jwks(text).status, parse_jwks(text).keys) == (status, ()), text
    assert parse_jwks('{"keys": [{"kty": "RSA", "n": "bad"}]}').status is Status.JwksNoValidKeys
    assert parse_jwt("e30.e30.") is Status.JwtBadFormat
    assert parse_jwks("[]").status is Status.JwksParseError  # JSON, but not an object
    unusable = parse_jwks(json.dumps({"keys": [{"kty": 5}, {"kty": "RSA", "alg": "XS999"}, {"kty": "DSA"}]}))
    assert unusable.status is Status.JwksNoValidKeys and unusable.keys == ()
    assert repr(unusable) == "Jwks(kids=[], status=JwksNoValidKeys)"


def test_jwks_keys_keep_kid_alg_and_curve_and_every_key_type_loads(keys):
    """Each JWK is loaded by its `kty`; `kid`, `alg`, `crv` are kept when they are strings (else absent); a key
    whose `alg` Envoy does not know is skipped. An HS256 token verifies with the `oct` key."""
    secret = b"s" * 32
    oct_key = json.loads(pyjwt.algorithms.get_default_algorithms()["HS256"].to_jwk(secret))
    doc = {"keys": [
        {**_jwk(keys["rsa"].public_key(), "RS256", "rsa"), "alg": "RS256"},
        _jwk(keys["ec256"].public_key(), "ES256", "ec256"),
        {**_jwk(keys["ed"].public_key(), "EdDSA", "ed"), "alg": "EdDSA"},
        {**oct_key, "kid": 7, "alg": 5, "crv": 9},
        {**_jwk(keys["other"].public_key(), "RS256", "unknown-alg"), "alg": "XS999"},
    ]}
    jwks = parse_jwks(json.dumps(doc))
    assert jwks.status is Status.OK
    assert [(k.kty, k.kid, k.alg, k.crv) for k in jwks.keys] == [
        ("RSA", "rsa", "RS256", ""), ("EC", "ec256", "", "P-256"), ("OKP", "ed", "EdDSA", "Ed25519"),
        ("oct", "", "", "")]
    assert verify_token(SPEC, pyjwt.encode(claims(), secret, algorithm="HS256"), jwks, NOW)[0] is Status.OK
    assert verify_token(SPEC, sign(keys, claims()), jwks, NOW)[0] is Status.OK  # the key's alg is the token's
    es384 = sign(keys, claims(), "ec384", "ES384", None)  # only a P-256 key: no key of the token's curve
    assert verify_token(SPEC, es384, jwks, NOW)[0] is Status.JwksKidAlgMismatch


def test_parsed_token_keeps_its_payload_and_defaults_absent_claims(keys):
    """No iss/sub: empty strings; no exp/nbf: 0 (no limit), so such a token never expires."""
    token = sign(keys, {"aud": "api"})
    jwt = parse_jwt(token)
    assert (jwt.iss, jwt.sub, jwt.exp, jwt.nbf, jwt.payload) == ("", "", 0, 0, {"aud": "api"})
    assert jwt.payload_b64 == token.split(".")[1]
    assert verify_token(ProviderSpec("p", "", (), 60, SPEC.locations), token, keys["jwks"], NOW)[0] is Status.OK


@pytest.mark.parametrize("offset, status", [(-60, Status.OK), (-61, Status.JwtExpired)])
def test_expiry_boundary_is_exp_plus_the_skew(keys, offset, status):
    assert verify_token(SPEC, sign(keys, claims(exp=NOW + offset)), keys["jwks"], NOW)[0] is status


@pytest.mark.parametrize("offset, status", [(60, Status.OK), (61, Status.JwtNotYetValid)])
def test_not_before_boundary_is_nbf_minus_the_skew(keys, offset, status):
    assert verify_token(SPEC, sign(keys, claims(nbf=NOW + offset)), keys["jwks"], NOW)[0] is status


def test_base64url_parts_with_or_without_padding():
    from pyproxy.filters.jwt_authn_logic import b64url_decode
    for data in (b"{}", b"a", b"ab", b"abc", b"ab\x17"):  # the last one encodes to YWIX
        encoded = pyjwt.utils.base64url_encode(data).decode()
        assert b64url_decode(encoded) == data
        assert b64url_decode(encoded + "=" * (-len(encoded) % 4)) == data
    assert b64url_decode("abcde") is None  # 5 characters: no byte boundary


def test_a_key_set_without_keys_answers_with_its_own_status(keys):
    from pyproxy.filters.jwt_authn_logic import Jwks
    token = sign(keys, claims())
    assert verify_token(SPEC, token, Jwks(), NOW)[0] is Status.JwksNoValidKeys
    assert verify_token(SPEC, token, parse_jwks("{}"), NOW)[0] is Status.JwksNoKeys


# ---------------------------------------------------------------- where tokens are


def _headers(pairs):
    def get_all(name):
        return [v for k, v in pairs if k == name]
    return get_all


EXTRACT = [
    ("default: Authorization Bearer", (), [("authorization", "Bearer T1")], {}, ["T1"]),
    ("default: the prefix is case-sensitive", (), [("authorization", "bearer T1")], {}, []),
    ("default: no prefix, no token", (), [("authorization", "T1")], {}, []),
    ("default: access_token query parameter", (), [], {"access_token": "T2"}, ["T2"]),
    ("custom header with prefix", ("header:x-jwt:Token ",), [("x-jwt", "Token T3")], {}, ["T3"]),
    ("custom header, no prefix", ("header:x-jwt:",), [("x-jwt", "T3")], {}, ["T3"]),
    ("custom header: Authorization is not looked at", ("header:x-jwt:",), [("authorization", "Bearer T1")], {},
     []),
    ("query parameter", ("param:tok",), [], {"tok": "T4"}, ["T4"]),
    ("cookie", ("cookie:session",), [("cookie", "a=1; session=T5; b=2")], {}, ["T5"]),
    ("cookie absent", ("cookie:session",), [("cookie", "a=1")], {}, []),
    ("cookie value with = padding", ("cookie:session",), [("cookie", "session=T5==")], {}, ["T5=="]),
    ("cookie quoted", ("cookie:session",), [("cookie", 'flag; session="T6X"')], {}, ["T6X"]),
    ("cookie named twice: the first", ("cookie:session",), [("cookie", "session=T7; session=T8")], {}, ["T7"]),
]


def _locations(spec):
    out = []
    for s in spec:
        kind, name, *rest = s.split(":", 2)
        out.append(Location(kind, name, rest[0] if rest else ""))
    return tuple(out)


@pytest.mark.parametrize("name,spec,headers,query,expected", EXTRACT, ids=[e[0] for e in EXTRACT])
def test_extraction_table(name, spec, headers, query, expected):
    locs = _locations(spec) if spec else locations_of(model.JwtProvider())
    assert [t for t, _ in extract_tokens(locs, _headers(headers), query)] == expected


def test_provider_locations_and_spec_come_from_the_provider_config():
    from pyproxy.config.decode import decode
    p = decode(model.JwtProvider, {"issuer": ISS, "audiences": ["api"], "clock_skew_seconds": 5,
                                   "from_headers": [{"name": "X-JWT", "value_prefix": "Token "}],
                                   "from_params": ["tok"], "from_cookies": ["session"]})
    locations = (Location("header", "x-jwt", "Token "), Location("param", "tok"), Location("cookie", "session"))
    assert ProviderSpec.of("origins-0", p) == ProviderSpec("origins-0", ISS, ("api",), 5, locations)
    assert ProviderSpec.of("p", model.JwtProvider(issuer=ISS)).clock_skew == 60  # 0 means Envoy's default


# ---------------------------------------------------------------- requirements


def _req(d):
    from pyproxy.config.decode import decode
    return compile_requirement(decode(model.JwtRequirement, d), {"a": 1, "b": 2}, "requires")


ANY_A_MISSING = {"requires_any": {"requirements": [{"provider_name": "a"}, {"allow_missing": {}}]}}
ISTIO_TWO = {"requires_any": {"requirements": [
    {"provider_name": "a"}, {"provider_name": "b"},
    {"requires_all": {"requirements": [
        {"requires_any": {"requirements": [{"provider_name": "a"}, {"allow_missing": {}}]}},
        {"requires_any": {"requirements": [{"provider_name": "b"}, {"allow_missing": {}}]}}]}}]}}
S = Status
REQS = [
    ("one provider OR allow_missing: no token passes", ANY_A_MISSING, {"a": S.JwtMissed}, S.OK),
    ("one provider OR allow_missing: a bad token fails", ANY_A_MISSING, {"a": S.JwtExpired}, S.JwtExpired),
    ("one provider OR allow_missing: another issuer fails", ANY_A_MISSING, {"a": S.JwtUnknownIssuer},
     S.JwtUnknownIssuer),
    ("provider alone: missing fails", {"provider_name": "a"}, {"a": S.JwtMissed}, S.JwtMissed),
    ("istiod two providers: none", ISTIO_TWO, {"a": S.JwtMissed, "b": S.JwtMissed}, S.OK),
    ("istiod two providers: b's token (a sees another issuer)", ISTIO_TWO,
     {"a": S.JwtUnknownIssuer, "b": S.OK}, S.OK),
    ("istiod two providers: unknown issuer for both", ISTIO_TWO,
     {"a": S.JwtUnknownIssuer, "b": S.JwtUnknownIssuer}, S.JwtUnknownIssuer),
    ("istiod two providers: a bad signature wins over missing", ISTIO_TWO,
     {"a": S.JwtVerificationFail, "b": S.JwtMissed}, S.JwtVerificationFail),
    ("allow_missing_or_failed: anything passes", {"requires_any": {"requirements": [
        {"provider_name": "a"}, {"allow_missing_or_failed": {}}]}}, {"a": S.JwtExpired}, S.OK),
    ("requires_any: the error of a rejected token wins over another issuer", {"requires_any": {"requirements": [
        {"provider_name": "a"}, {"provider_name": "b"}]}}, {"a": S.JwtExpired, "b": S.JwtUnknownIssuer}, S.JwtExpired),
    ("requires_any without allow_missing: no token fails", {"requires_any": {"requirements": [
        {"provider_name": "a"}, {"provider_name": "b"}]}}, {"a": S.JwtMissed, "b": S.JwtMissed}, S.JwtMissed),
    ("allow_missing listed first: the providers after it still count", {"requires_any": {"requirements": [
        {"allow_missing": {}}, {"provider_name": "a"}]}}, {"a": S.JwtExpired}, S.JwtExpired),
    ("requires_all: first failure", {"requires_all": {"requirements": [
        {"provider_name": "a"}, {"provider_name": "b"}]}}, {"a": S.OK, "b": S.JwtExpired}, S.JwtExpired),
]


@pytest.mark.parametrize("name,req,statuses,expected", REQS, ids=[r[0] for r in REQS])
def test_requirement_table(name, req, statuses, expected):
    assert _req(req).evaluate(lambda p, auds: (statuses[p], None)) is expected


def test_requirement_kinds_and_their_providers():
    assert _req({"allow_missing": {}}).evaluate(lambda p, a: (S.OK, None)) is S.JwtMissed  # alone: a missing JWT
    none = compile_requirement(None, {}, "requires")
    assert none.kind == "allow_missing_or_failed" and none.providers() == set()
    assert _req(ISTIO_TWO).providers() == {"a", "b"}
    assert _req({"allow_missing": {}}).providers() == set()


def test_allow_missing_or_failed_passes_and_still_verifies_every_provider():
    """Envoy runs every verifier of such a requires_any (their payloads are written) and passes whatever they say."""
    asked = []
    req = _req({"requires_any": {"requirements": [{"allow_missing_or_failed": {}}, {"provider_name": "a"}]}})
    assert req.evaluate(lambda p, auds: (asked.append(p), (S.JwtExpired, None))[1]) is S.OK
    assert asked == ["a"]
    assert compile_requirement(None, {}, "requires").evaluate(lambda p, auds: (S.JwtExpired, None)) is S.OK


def test_provider_and_audiences_overrides_the_audiences():
    def check(p, auds):
        return (S.OK if auds == ("x",) else S.JwtAudienceNotAllowed), None
    assert _req({"provider_and_audiences": {"provider_name": "a", "audiences": ["x"]}}).evaluate(check) is S.OK
    assert _req({"provider_name": "a"}).evaluate(check) is S.JwtAudienceNotAllowed  # None: the provider's own
    r = _req({"provider_and_audiences": {"provider_name": "b", "audiences": ["x"]}})
    assert (r.kind, r.provider, r.audiences) == ("provider", "b", ("x",))
    assert (_req(ANY_A_MISSING).kind, _req({"requires_all": {"requirements": []}}).kind) == ("any", "all")


def test_a_requirement_map_rule_is_refused():
    from pyproxy.config.decode import decode
    from pyproxy.filters.jwt_authn_logic import check_config
    cfg = decode(model.JwtAuthentication, {"providers": {"a": {"issuer": ISS}},
                                           "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "a"}},
                                                     {"match": {"prefix": "/x"}, "requirement_name": "r"}]})
    with pytest.raises(ValueError, match=r"rules\[1\]\.requirement_name: requirement_map is not supported"):
        check_config(cfg)


def test_unknown_provider_is_a_config_error():
    with pytest.raises(ValueError, match=r"^requires: unknown provider 'zz' \(providers: a, b\)$"):
        _req({"provider_name": "zz"})
    with pytest.raises(ValueError, match=r"^requires\.requires_all\[1\]: unknown provider 'zz'"):
        _req({"requires_all": {"requirements": [{"provider_name": "a"}, {"provider_name": "zz"}]}})


def test_payload_helpers():
    p = {"scope": "read write", "nested": {"team": "blue", "n": 3}, "groups": ["a", "b"], "flag": True}
    assert normalise_payload(p, ("scope", "permission"))["scope"] == ["read", "write"]
    assert claim_value(p, "nested.team") == "blue"
    assert claim_value(p, "nested.n") == "3"
    assert claim_value(p, "groups") == "a,b"
    assert claim_value(p, "flag") == "true"
    assert claim_value(p, "nested") is None
    assert claim_value(p, "missing") is None
    assert claim_value({"l": ["a", {"x": 1}]}, "l") is None  # a list holding an object is not copied


@pytest.mark.parametrize("path,expected", [
    ("/p?access_token=T", "/p"), ("/p?q=1&access_token=T&r=2", "/p?q=1&r=2"), ("/p", "/p"),
    ("/p?access_token=T&access_token=U", "/p"), ("/p?access_tokens=T", "/p?access_tokens=T"),
    ("/p?access_token=eyJ0=&q=1", "/p?q=1"), ("/p?access_token=T?x", "/p"),
])
def test_token_parameter_is_removed_from_the_path(path, expected):
    from pyproxy.filters.jwt_authn_logic import remove_query_param
    assert remove_query_param(path, "access_token") == expected


# ---------------------------------------------------------------- the verified-token cache


def test_verified_tokens_are_an_lru_bound_to_their_key_set(keys):
    from pyproxy.filters.jwt_authn_logic import VerifiedTokens
    cache = VerifiedTokens(2)
    jwks, rotated = keys["jwks"], parse_jwks(json.dumps({"keys": []}))
    a, b, c = (parse_jwt(sign(keys, claims(sub=s))) for s in "abc")
    cache.put("a", jwks, a)
    cache.put("b", jwks, b)
    assert cache.get("a", jwks) is a  # a is now the most recent
    cache.put("c", jwks, c)
    assert (cache.get("b", jwks), cache.get("a", jwks), cache.get("c", jwks)) == (None, a, c)
    assert cache.get("a", rotated) is None  # verified with other keys: must verify again
    assert VerifiedTokens().size == 100  # Envoy's default jwt_cache_size


def test_a_cached_token_still_expires_and_is_counted(keys):
    from pyproxy.config.decode import decode
    from pyproxy.filters.jwt_authn import JwtAuthnFilter, JwtAuthnFilterConfig
    from pyproxy.observe.stats import Stats
    now = [float(NOW)]
    cfg = decode(model.JwtAuthentication, {"providers": {"p": {
        "issuer": ISS, "local_jwks": {"inline_string": json.dumps(
            {"keys": [_jwk(keys["rsa"].public_key(), "RS256", "rsa")]})}}}})
    stats = Stats()
    config = JwtAuthnFilterConfig(cfg, stats, clock=lambda: now[0])
    provider = config.providers["p"]
    text = sign(keys, claims(exp=NOW + 100))
    f = JwtAuthnFilter(config)
    f.tokens = {"p": [(text, Location("header", "authorization", "Bearer "))]}
    results = [f._check_provider(provider, None, now[0])[0] for _ in range(2)]
    now[0] += 200  # past exp + 60 s skew
    results.append(f._check_provider(provider, None, now[0])[0])
    assert results == [Status.OK, Status.OK, Status.JwtExpired]
    counts = {c.name: c.value for c in stats.counters()}
    assert (counts["jwt_authn.jwt_cache_miss"], counts["jwt_authn.jwt_cache_hit"]) == (1, 2)
