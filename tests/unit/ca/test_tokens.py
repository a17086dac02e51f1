"""Service-account tokens (control/ca/tokens.py): what a good token holds, and every way a bad one is refused."""
from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from control.ca.authority import AuthenticationError
from control.ca.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, ServiceAccount, TokenSigner, TokenVerifier, key_id
from pyproxy.tls.pki import KeyType, generate_key

from .conftest import NOW

KEY = generate_key(KeyType.EC_P256)
OTHER_KEY = generate_key(KeyType.EC_P256)


@pytest.fixture
def signer(clock):
    return TokenSigner(KEY, clock=clock)


@pytest.fixture
def verifier(clock):
    return TokenVerifier([KEY.public_key()], clock=clock)


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_token_claims_look_like_a_projected_kubernetes_token(signer, verifier):
    token = signer.create("default", "sleep", ttl=3600)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:default:sleep"
    assert claims["aud"] == [DEFAULT_AUDIENCE] and claims["iss"] == DEFAULT_ISSUER
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (NOW, NOW, NOW + 3600)
    assert claims["kubernetes.io"] == {"namespace": "default", "serviceaccount": {"name": "sleep"}}
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == key_id(KEY.public_key())
    assert verifier.verify(token) == ServiceAccount("default", "sleep")


def test_rsa_signing_key_uses_rs256(clock):
    key = generate_key(KeyType.RSA_2048)
    token = TokenSigner(key, clock=clock).create("ns1", "sa1")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert TokenVerifier([key.public_key()], clock=clock).verify(token) == ServiceAccount("ns1", "sa1")


def _forged_payload(token: str) -> str:
    header, _, sig = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    claims["kubernetes.io"] = {"namespace": "kube-system", "serviceaccount": {"name": "admin"}}
    return f"{header}.{_b64(claims)}.{sig}"


def _alg_none(token: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def _hs256_with_public_key(token: str) -> str:
    """The classic key-confusion attack: HMAC 'signed' with the verifier's public key bytes."""
    claims = jwt.decode(token, options={"verify_signature": False})
    pub = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": key_id(KEY.public_key())})
    body = _b64(claims)
    import hashlib
    import hmac
    sig = base64.urlsafe_b64encode(hmac.new(pub, f"{header}.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=")
    return f"{header}.{body}.{sig.decode()}"


def _same_kid_other_key(clock) -> str:
    claims = jwt.decode(TokenSigner(KEY, clock=clock).create("default", "sleep"), options={"verify_signature": False})
    return jwt.encode(claims, OTHER_KEY, algorithm="ES256", headers={"kid": key_id(KEY.public_key())})


REFUSED = [
    # name, (signer, clock) -> token, clock offset at verification, message fragment
    ("expired", lambda s, c: s.create("default", "sleep", ttl=600), 600 + 60, "expired at"),
    ("not yet valid", lambda s, c: s.create("default", "sleep"), -3600, "not valid before"),
    ("signed by another key", lambda s, c: TokenSigner(OTHER_KEY, clock=c).create("default", "sleep"), 0,
     "unknown key id"),
    ("another key claiming our kid", lambda s, c: _same_kid_other_key(c), 0, "signature is invalid"),
    ("payload changed after signing", lambda s, c: _forged_payload(s.create("default", "sleep")), 0,
     "signature is invalid"),
    ("alg none", lambda s, c: _alg_none(s.create("default", "sleep")), 0, "alg 'none'"),
    ("HS256 with the public key", lambda s, c: _hs256_with_public_key(s.create("default", "sleep")), 0,
     "algorithm HS256 is not accepted"),
    ("wrong audience", lambda s, c: s.create("default", "sleep", audiences=("kubernetes",)), 0,
     "audience is not 'istio-ca'"),
    ("wrong issuer", lambda s, c: TokenSigner(KEY, clock=c, issuer="https://evil").create("default", "sleep"), 0,
     "issuer is not"),
    ("not a JWT", lambda s, c: "hello", 0, "not a JWT"),
    ("subject not a service account", lambda s, c: jwt.encode(
        {**jwt.decode(s.create("a", "b"), options={"verify_signature": False}), "sub": "alice"}, KEY,
        algorithm="ES256", headers={"kid": key_id(KEY.public_key())}), 0, "is not system:serviceaccount"),
    ("kubernetes.io claim disagrees", lambda s, c: jwt.encode(
        {**jwt.decode(s.create("a", "b"), options={"verify_signature": False}),
         "kubernetes.io": {"namespace": "x", "serviceaccount": {"name": "b"}}}, KEY,
        algorithm="ES256", headers={"kid": key_id(KEY.public_key())}), 0, "disagrees"),
    ("no exp claim", lambda s, c: jwt.encode(
        {k: v for k, v in jwt.decode(s.create("a", "b"), options={"verify_signature": False}).items() if k != "exp"},
        KEY, algorithm="ES256", headers={"kid": key_id(KEY.public_key())}), 0, "no 'exp' claim"),
]


@pytest.mark.parametrize("name, make, offset, says", REFUSED, ids=[r[0] for r in REFUSED])
def test_bad_tokens_are_refused_with_one_clear_line(signer, verifier, clock, name, make, offset, says):
    token = make(signer, clock)
    clock.now = NOW + offset
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(token)
    assert says in info.value.message
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("offset, ok", [(600 + 59, True), (600 + 60, False), (-59, True), (-61, False)])
def test_clock_skew_is_sixty_seconds(signer, verifier, clock, offset, ok):
    token = signer.create("default", "sleep", ttl=600)
    clock.now = NOW + offset
    if ok:
        assert verifier.verify(token).name == "sleep"
    else:
        with pytest.raises(AuthenticationError):
            verifier.verify(token)


def test_verifier_holding_two_keys_accepts_both(clock):
    verifier = TokenVerifier([KEY.public_key(), OTHER_KEY.public_key()], clock=clock)
    for key in (KEY, OTHER_KEY):
        assert verifier.verify(TokenSigner(key, clock=clock).create("ns", "sa")) == ServiceAccount("ns", "sa")


@pytest.mark.parametrize("ns, sa, ttl", [("a:b", "sa", 60), ("ns", "", 60), ("ns", "sa", 0)])
def test_signer_refuses_bad_names_and_ttl(signer, ns, sa, ttl):
    with pytest.raises((ValueError, AuthenticationError)):
        signer.create(ns, sa, ttl=ttl)
