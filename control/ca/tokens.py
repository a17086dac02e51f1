"""Service-account tokens the control plane signs: the analogue of a Kubernetes projected service-account token
(what istiod accepts from VM workloads and from pods), so that a sidecar can prove *who it is* before it has a
certificate. Pure: the key and the clock are injected; PyJWT does the JOSE work.

A token's claims are those of a projected token (pkg/serviceaccount/claims.go in Kubernetes):

    iss  the issuer (DEFAULT_ISSUER)        sub  system:serviceaccount:<ns>:<sa>
    aud  ["istio-ca"] (Istio's TOKEN_AUDIENCES default)
    iat, nbf, exp                            kubernetes.io: {namespace, serviceaccount: {name}}

and the header carries `kid`, a digest of the signing key, so the verifier can hold several keys (rotation).
Verification (Istio does this with a TokenReview, security/pkg/server/ca/authenticate/kubeauth): only the
algorithm that fits the key (ES256 for EC P-256, RS256 for RSA; never `none`), the signature, the issuer and
the audience through PyJWT; `exp`/`nbf`/`iat` are checked here against the injected clock with a small skew.
Any failure is an `AuthenticationError` with one line saying what is wrong with the token.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from control.ca.authority import AuthenticationError, iso_time

DEFAULT_ISSUER = "istiod.istio-system.svc"   # this control plane, in the role of the API server's SA issuer
DEFAULT_AUDIENCE = "istio-ca"                # TOKEN_AUDIENCES (pkg/security/security.go)
DEFAULT_TOKEN_TTL = 24 * 3600
CLOCK_SKEW = 60                              # seconds of leeway on exp/nbf/iat, as Kubernetes' JWT validator
SUBJECT_PREFIX = "system:serviceaccount:"


def key_id(key: PublicKeyTypes) -> str:
    """`kid`: the first 16 bytes of SHA-256 over the SubjectPublicKeyInfo, hex."""
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()[:32]


def algorithm_for(key: PublicKeyTypes | PrivateKeyTypes) -> str:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {256: "ES256", 384: "ES384"}.get(key.curve.key_size, "unsupported")
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    return "unsupported"


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    namespace: str
    name: str

    @property
    def subject(self) -> str:
        return f"{SUBJECT_PREFIX}{self.namespace}:{self.name}"


def parse_subject(sub: Any) -> ServiceAccount:
    if not isinstance(sub, str) or not sub.startswith(SUBJECT_PREFIX):
        raise AuthenticationError(f"token subject {sub!r} is not system:serviceaccount:<namespace>:<name>")
    ns, sep, name = sub[len(SUBJECT_PREFIX):].partition(":")
    if not sep or not ns or not name or ":" in name:
        raise AuthenticationError(f"token subject {sub!r} is not system:serviceaccount:<namespace>:<name>")
    return ServiceAccount(ns, name)


class TokenSigner:
    """Makes tokens (`meshctl token create`)."""

    def __init__(self, key: PrivateKeyTypes, *, clock: Callable[[], float], issuer: str = DEFAULT_ISSUER):
        self._alg = algorithm_for(key)
        if self._alg == "unsupported":
            raise ValueError("token signing key must be EC P-256/P-384 or RSA")
        self._key = key
        self._kid = key_id(key.public_key())
        self._clock = clock
        self.issuer = issuer

    def create(self, namespace: str, service_account: str, ttl: float = DEFAULT_TOKEN_TTL,
               audiences: Sequence[str] = (DEFAULT_AUDIENCE,)) -> str:
        if ttl <= 0:
            raise ValueError(f"token TTL must be positive, got {ttl}s")
        sa = ServiceAccount(namespace, service_account)
        parse_subject(sa.subject)  # same rules as the verifier: no ':' or empty names
        now = int(self._clock())
        claims = {
            "iss": self.issuer, "sub": sa.subject, "aud": list(audiences),
            "iat": now, "nbf": now, "exp": now + int(ttl),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}},
        }
        return jwt.encode(claims, self._key, algorithm=self._alg, headers={"kid": self._kid})


class TokenVerifier:
    """Checks a bearer token and returns the service account it names, or raises AuthenticationError."""

    def __init__(self, public_keys: Sequence[PublicKeyTypes], *, clock: Callable[[], float],
                 issuer: str = DEFAULT_ISSUER, audience: str = DEFAULT_AUDIENCE, skew: float = CLOCK_SKEW):
        if not public_keys:
            raise ValueError("token verifier needs at least one public key")
        self._keys = {key_id(k): k for k in public_keys}
        self._clock = clock
        self.issuer = issuer
        self.audience = audience
        self.skew = skew

    def _key_for(self, header: dict[str, Any]) -> PublicKeyTypes:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise AuthenticationError("token is unsigned (alg 'none' is not accepted)")
        kid = header.get("kid")
        if kid is not None and kid not in self._keys:
            raise AuthenticationError("token was not signed by this control plane (unknown key id)")
        key = self._keys[kid] if kid is not None else next(iter(self._keys.values()))
        if alg != algorithm_for(key):
            raise AuthenticationError(f"token algorithm {alg} is not accepted (expected {algorithm_for(key)})")
        return key

    def verify(self, token: str) -> ServiceAccount:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthenticationError("token is not a JWT (expected header.payload.signature)") from None
        key = self._key_for(header)
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm_for(key)], audience=self.audience,
                                issuer=self.issuer,
                                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                         "require": ["iss", "sub", "aud", "exp", "iat", "nbf"]})
        except jwt.InvalidSignatureError:
            raise AuthenticationError("token signature is invalid (forged, or signed by another key)") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(f"token audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(f"token issuer is not {self.issuer!r}") from None
        except jwt.MissingRequiredClaimError as err:
            raise AuthenticationError(f"token has no {err.claim!r} claim") from None
        except jwt.InvalidTokenError as err:
            raise AuthenticationError(f"token is invalid: {err}") from None
        self._check_times(claims)
        sa = parse_subject(claims["sub"])
        k8s = claims.get("kubernetes.io")
        if isinstance(k8s, dict):
            named = (k8s.get("namespace"), (k8s.get("serviceaccount") or {}).get("name"))
            if named != (sa.namespace, sa.name):
                raise AuthenticationError("token's kubernetes.io claim disagrees with its subject")
        return sa

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self._clock()
        times = {}
        for name in ("exp", "nbf", "iat"):
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise AuthenticationError(f"token claim {name!r} is not a number")
            times[name] = float(value)
        if now >= times["exp"] + self.skew:
            raise AuthenticationError(f"token expired at {iso_time(times['exp'])}")
        if now + self.skew < times["nbf"]:
            raise AuthenticationError(f"token is not valid before {iso_time(times['nbf'])}")
        if now + self.skew < times["iat"]:
            raise AuthenticationError(f"token was issued in the future ({iso_time(times['iat'])})")
