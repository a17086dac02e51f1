"""Envoy's JWT authentication as pure functions: request facts and keys in, a status and the verified payloads out.

Where it sits: `envoy.filters.http.jwt_authn` (pyproxy.filters.jwt_authn) extracts tokens from the request,
asks here, and answers or continues. Nothing here does I/O; time comes in as `now` (seconds since the epoch).
Signatures are checked by PyJWT's algorithm implementations (`cryptography` underneath), never by hand.

Semantics (envoy source/extensions/filters/http/jwt_authn/{extractor,authenticator,verifier}.cc and
jwt_verify_lib; the texts and the order of checks were compared with Envoy 1.40, see tests/oracle):

* Locations: a provider's `from_headers` (`value_prefix` must start the value, case-sensitive), `from_params`,
  `from_cookies`; none given -> `Authorization: Bearer <t>` and the `access_token` query parameter.
* Checks in order: the token's form (three non-empty base64url parts, JSON header with a supported `alg`, JSON
  payload with typed `iss`/`sub`/`exp`/`nbf`/`iat`/`aud`), the issuer (`Jwt issuer is not configured`), `exp`
  and `nbf` with `clock_skew_seconds` (0 means 60), the audiences (403), then the keys: keys whose `kid` (when
  both have one) and type/`alg` fit the token's `alg`; none fits -> `Jwks doesn't have key to match kid or alg
  from Jwt`; some fit but none verifies -> `Jwt verification fails`. `alg: none` has an empty third part, so
  it is rejected as malformed, as Envoy does.
* Requirements: `provider_name`, `provider_and_audiences`, `requires_any` (any child OK; else the most telling
  error: not JwtMissed / JwtUnknownIssuer if there is one; `allow_missing` turns a JwtMissed result into OK,
  `allow_missing_or_failed` any result), `requires_all` (the first failure).
"""
from __future__ import annotations

import base64
import binascii
import enum
import functools
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping


from ..config import model

__all__ = ["Status", "Jwk", "Jwks", "Jwt", "parse_jwks", "parse_jwt", "check_claims", "verify_signature",
           "ProviderSpec", "extract_tokens", "verify_token", "www_authenticate", "Requirement", "compile_requirement",
           "original_uri", "normalise_payload", "claim_value", "remove_query_param", "DEFAULT_CLOCK_SKEW",
           "VerifiedTokens", "check_config"]

DEFAULT_CLOCK_SKEW = 60  # JwtProvider.clock_skew_seconds: "If not specified, the default is 60 seconds"
MAX_PATH_IN_REALM = 256  # Envoy crops the path of `www-authenticate`'s realm (Http::Utility::buildOriginalUri)


class Status(str, enum.Enum):
    """jwt_verify_lib status texts: Envoy's 401/403 body."""

    OK = "OK"
    JwtMissed = "Jwt is missing"
    JwtNotYetValid = "Jwt not yet valid"
    JwtExpired = "Jwt is expired"
    JwtBadFormat = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    JwtHeaderParseErrorBadBase64 = "Jwt header is an invalid Base64url encoded"
    JwtHeaderParseErrorBadJson = "Jwt header is an invalid JSON"
    JwtHeaderBadAlg = "Jwt header [alg] field is required and must be a string"
    JwtHeaderNotImplementedAlg = "Jwt header [alg] is not supported"
    JwtHeaderBadKid = "Jwt header [kid] field is not a string"
    JwtPayloadParseErrorBadBase64 = "Jwt payload is an invalid Base64url encoded"
    JwtPayloadParseErrorBadJson = "Jwt payload is an invalid JSON"
    JwtPayloadParseErrorIssNotString = "Jwt payload [iss] field is not a string"
    JwtPayloadParseErrorSubNotString = "Jwt payload [sub] field is not a string"
    JwtPayloadParseErrorIatNotInteger = "Jwt payload [iat] field is not an integer"
    JwtPayloadParseErrorNbfNotInteger = "Jwt payload [nbf] field is not an integer"
    JwtPayloadParseErrorExpNotInteger = "Jwt payload [exp] field is not an integer"
    JwtPayloadParseErrorAudNotString = "Jwt payload [aud] field is not a string or string list"
    JwtSignatureParseErrorBadBase64 = "Jwt signature is an invalid Base64url encoded"
    JwtUnknownIssuer = "Jwt issuer is not configured"
    JwtAudienceNotAllowed = "Audiences in Jwt are not allowed"
    JwtVerificationFail = "Jwt verification fails"
    JwksParseError = "Jwks is an invalid JSON"
    JwksNoKeys = "Jwks does not have [keys] field"
    JwksBadKeys = "[keys] in Jwks is not an array"
    JwksNoValidKeys = "Jwks doesn't have any valid public key"
    JwksKidAlgMismatch = "Jwks doesn't have key to match kid or alg from Jwt"
    JwksFetchFail = "Jwks remote fetch is failed"

    @property
    def http_status(self) -> int:
        """filter.cc onComplete: 403 for a disallowed audience, else 401."""
        return 403 if self is Status.JwtAudienceNotAllowed else 401

    @property
    def details(self) -> str:
        """Response details `jwt_authn_access_denied{<text, spaces as _>}`."""
        return "jwt_authn_access_denied{" + self.value.replace(" ", "_") + "}"


# alg -> (JWK kty, EC curve or None): which keys may verify a token (jwt_verify_lib verify.cc)
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    **{a: ("RSA", None) for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    **{a: ("oct", None) for a in ("HS256", "HS384", "HS512")},
    "EdDSA": ("OKP", None),
}


@functools.cache
def _pyjwt() -> tuple[Any, dict[str, Any]]:
    """PyJWT and its algorithm objects, imported on first use: a proxy whose config has no jwt_authn does
    not load PyJWT and the cryptography backend under it (9.3 MiB of a sidecar's RSS, measured)."""
    import jwt
    from jwt.algorithms import get_default_algorithms

    return jwt, get_default_algorithms()
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def b64url_decode(part: str) -> bytes | None:
    """base64url with or without padding; None when it is not."""
    if _B64URL.fullmatch(part) is None:
        return None
    raw = part.rstrip("=").encode("ascii")
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        return None


# ---------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class Jwk:
    kty: str
    kid: str
    alg: str
    crv: str
    key: Any  # what PyJWT's algorithm objects verify with (a cryptography public key, or bytes for oct)


@dataclass(frozen=True, slots=True)
class Jwks:
    keys: tuple[Jwk, ...] = ()
    status: Status = Status.OK  # why there are no keys, when there are none

    def __repr__(self) -> str:
        return f"Jwks(kids={[k.kid for k in self.keys]}, status={self.status.name})"


def _jwk(data: Mapping[str, Any]) -> Jwk | None:
    kty = data.get("kty")
    if not isinstance(kty, str):
        return None
    alg = data.get("alg") if isinstance(data.get("alg"), str) else ""
    if alg and alg not in ALGORITHMS:
        return None
    loader = {"RSA": "RS256", "EC": "ES256", "oct": "HS256", "OKP": "EdDSA"}.get(kty)
    if loader is None:
        return None
    pyjwt, algorithms = _pyjwt()
    try:
        key = algorithms[loader].from_jwk(dict(data))
    except (pyjwt.exceptions.InvalidKeyError, ValueError, KeyError, TypeError):
        return None
    kid = data.get("kid") if isinstance(data.get("kid"), str) else ""
    crv = data.get("crv") if isinstance(data.get("crv"), str) else ""
    return Jwk(kty, kid, alg, crv, key)


def parse_jwks(text: str) -> Jwks:
    """A JWKS document -> its usable public keys (a key that cannot be loaded is skipped, as Envoy does)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return Jwks((), Status.JwksParseError)
    if not isinstance(doc, dict):
        return Jwks((), Status.JwksParseError)
    if "keys" not in doc:
        return Jwks((), Status.JwksNoKeys)
    if not isinstance(doc["keys"], list):
        return Jwks((), Status.JwksBadKeys)
    keys = tuple(k for k in (_jwk(d) for d in doc["keys"] if isinstance(d, dict)) if k is not None)
    return Jwks(keys, Status.OK if keys else Status.JwksNoValidKeys)


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Jwt:
    """A parsed (not yet trusted) token."""

    alg: str
    kid: str
    payload: Mapping[str, Any]
    iss: str
    sub: str
    audiences: tuple[str, ...]
    exp: int
    nbf: int
    signing_input: bytes
    signature: bytes
    payload_b64: str  # the payload part as received (forward_payload_header carries it)


def _int_claim(payload: Mapping[str, Any], name: str) -> int | None:
    v = payload.get(name, 0)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        return None
    return int(v)


def _json_part(part: str, bad_base64: Status, bad_json: Status) -> dict | Status:
    raw = b64url_decode(part)
    if raw is None:
        return bad_base64
    try:
        value = json.loads(raw)
    except ValueError:
        return bad_json
    return value if isinstance(value, dict) else bad_json


def parse_jwt(token: str) -> Jwt | Status:
    """jwt_verify_lib Jwt::parseFromString: the token's parts, or the status saying what is wrong."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return Status.JwtBadFormat
    header = _json_part(parts[0], Status.JwtHeaderParseErrorBadBase64, Status.JwtHeaderParseErrorBadJson)
    if isinstance(header, Status):
        return header
    alg = header.get("alg")
    if not isinstance(alg, str):
        return Status.JwtHeaderBadAlg
    if alg not in ALGORITHMS:
        return Status.JwtHeaderNotImplementedAlg
    kid = header.get("kid", "")
    if not isinstance(kid, str):
        return Status.JwtHeaderBadKid
    payload = _json_part(parts[1], Status.JwtPayloadParseErrorBadBase64, Status.JwtPayloadParseErrorBadJson)
    if isinstance(payload, Status):
        return payload
    iss, sub = payload.get("iss", ""), payload.get("sub", "")
    if not isinstance(iss, str):
        return Status.JwtPayloadParseErrorIssNotString
    if not isinstance(sub, str):
        return Status.JwtPayloadParseErrorSubNotString
    checked = {}
    for name, bad in (("iat", Status.JwtPayloadParseErrorIatNotInteger),
                      ("nbf", Status.JwtPayloadParseErrorNbfNotInteger),
                      ("exp", Status.JwtPayloadParseErrorExpNotInteger)):
        value = _int_claim(payload, name)
        if value is None:
            return bad
        checked[name] = value
    aud = payload.get("aud", [])
    if isinstance(aud, str):
        audiences: tuple[str, ...] = (aud,)
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        audiences = tuple(aud)
    else:
        return Status.JwtPayloadParseErrorAudNotString
    signature = b64url_decode(parts[2])
    if signature is None:
        return Status.JwtSignatureParseErrorBadBase64
    return Jwt(alg, kid, payload, iss, sub, audiences, checked["exp"], checked["nbf"],
               f"{parts[0]}.{parts[1]}".encode(), signature, parts[1])


def check_claims(token: Jwt, issuer: str, audiences: Iterable[str], now: float,
                 clock_skew: int = DEFAULT_CLOCK_SKEW) -> Status:
    """The issuer, then the time window with the clock skew, then the audiences (Envoy's order)."""
    if issuer and token.iss != issuer:
        return Status.JwtUnknownIssuer
    if token.exp and now > token.exp + clock_skew:
        return Status.JwtExpired
    if token.nbf and token.nbf > now + clock_skew:
        return Status.JwtNotYetValid
    allowed = tuple(audiences)
    if allowed and not any(a in allowed for a in token.audiences):
        return Status.JwtAudienceNotAllowed
    return Status.OK


def _fits(key: Jwk, token: Jwt) -> bool:
    kty, crv = ALGORITHMS[token.alg]
    if token.kid and key.kid and token.kid != key.kid:
        return False
    if key.kty != kty or (key.alg and key.alg != token.alg):
        return False
    return crv is None or not key.crv or key.crv == crv


def verify_signature(token: Jwt, jwks: Jwks) -> Status:
    """Try every key that fits the token's kid and alg (jwt_verify_lib verifyJwt)."""
    if not jwks.keys:
        return jwks.status if jwks.status is not Status.OK else Status.JwksNoValidKeys
    pyjwt, algorithms = _pyjwt()
    algorithm = algorithms[token.alg]
    fitting = [k for k in jwks.keys if _fits(k, token)]
    if not fitting:
        return Status.JwksKidAlgMismatch
    for key in fitting:
        try:
            if algorithm.verify(token.signing_input, key.key, token.signature):
                return Status.OK
        except (ValueError, TypeError, pyjwt.exceptions.PyJWTError):
            continue
    return Status.JwtVerificationFail


# ---------------------------------------------------------------- where tokens are


@dataclass(frozen=True, slots=True)
class Location:
    kind: str  # "header", "param", "cookie"
    name: str
    prefix: str = ""


DEFAULT_LOCATIONS = (Location("header", "authorization", "Bearer "), Location("param", "access_token"))


def locations_of(p: model.JwtProvider) -> tuple[Location, ...]:
    out = [Location("header", h.name.lower(), h.value_prefix) for h in p.from_headers]
    out += [Location("param", n) for n in p.from_params]
    out += [Location("cookie", n) for n in p.from_cookies]
    return tuple(out) or DEFAULT_LOCATIONS


def _cookies(header_values: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in header_values:
        for pair in value.split(";"):
            name, eq, v = pair.strip().partition("=")
            if eq and name not in out:
                out[name] = v.strip().strip('"')
    return out


def extract_tokens(locations: Iterable[Location], header: Callable[[str], list[str]],
                   query: Mapping[str, str]) -> list[tuple[str, Location]]:
    """The tokens at these locations, in order. `header(name)` gives every value of a request header."""
    out = []
    cookies: dict[str, str] | None = None
    for loc in locations:
        if loc.kind == "header":
            for value in header(loc.name):
                if value.startswith(loc.prefix):
                    token = value[len(loc.prefix):].strip()
                    if token:
                        out.append((token, loc))
        elif loc.kind == "param":
            token = query.get(loc.name)
            if token:
                out.append((token, loc))
        else:
            if cookies is None:
                cookies = _cookies(header("cookie"))
            token = cookies.get(loc.name)
            if token:
                out.append((token, loc))
    return out


# ---------------------------------------------------------------- a provider and the requirement tree


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider's checks, compiled once."""

    name: str
    issuer: str
    audiences: tuple[str, ...]
    clock_skew: int
    locations: tuple[Location, ...]

    @classmethod
    def of(cls, name: str, p: model.JwtProvider) -> "ProviderSpec":
        return cls(name, p.issuer, p.audiences, p.clock_skew_seconds or DEFAULT_CLOCK_SKEW, locations_of(p))


def verify_token(spec: ProviderSpec, text: str, jwks: Jwks, now: float,
                 audiences: tuple[str, ...] | None = None) -> "ProviderResult":
    """One token against one provider: its form, claims, then signature (authenticator.cc's order)."""
    token = parse_jwt(text)
    if isinstance(token, Status):
        return token, None
    status = check_claims(token, spec.issuer, spec.audiences if audiences is None else audiences, now,
                          spec.clock_skew)
    if status is Status.OK:
        status = verify_signature(token, jwks)
    return status, (token if status is Status.OK else None)


class VerifiedTokens:
    """Envoy's per-provider JWT cache (`jwt_cache_config`, on by default, 100 tokens, LRU): a token whose
    signature verified against these keys skips parsing and the signature next time; issuer, time window and
    audiences are checked again on every hit. An entry is only valid for the key set it was verified with, so
    a JWKS refresh (rotation) makes every cached token verify again."""

    __slots__ = ("size", "_entries")

    def __init__(self, size: int = 0):
        self.size = size or 100
        self._entries: OrderedDict[str, tuple[Jwks, Jwt]] = OrderedDict()

    def get(self, text: str, jwks: Jwks) -> Jwt | None:
        entry = self._entries.get(text)
        if entry is None or entry[0] is not jwks:
            return None
        self._entries.move_to_end(text)
        return entry[1]

    def put(self, text: str, jwks: Jwks, token: Jwt) -> None:
        self._entries[text] = (jwks, token)
        self._entries.move_to_end(text)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# The outcome of one provider for one request: its status and, when OK, the token it verified.
ProviderResult = tuple[Status, "Jwt | None"]
Check = Callable[[str, "tuple[str, ...] | None"], ProviderResult]


def _aggregate_any(statuses: list[Status]) -> Status:
    final = Status.JwtMissed
    for s in statuses:
        if s is Status.JwtUnknownIssuer and final is Status.JwtMissed:
            final = s
        elif s not in (Status.JwtMissed, Status.JwtUnknownIssuer):
            final = s
    return final


@dataclass(frozen=True, slots=True)
class Requirement:
    """A compiled JwtRequirement. `evaluate(check)` asks `check(provider, audiences)` for each provider it needs."""

    kind: str  # "provider", "any", "all", "allow_missing", "allow_missing_or_failed"
    provider: str = ""
    audiences: tuple[str, ...] | None = None
    children: tuple["Requirement", ...] = ()

    def providers(self) -> set[str]:
        if self.kind == "provider":
            return {self.provider}
        return set().union(*(c.providers() for c in self.children))

    def evaluate(self, check: Check) -> Status:
        if self.kind == "provider":
            return check(self.provider, self.audiences)[0]
        if self.kind == "allow_missing_or_failed":
            return Status.OK
        if self.kind == "allow_missing":
            return Status.JwtMissed  # only meaningful inside requires_any (alone: Envoy's AllowMissing verifier)
        if self.kind == "all":
            for child in self.children:
                s = child.evaluate(check)
                if s is not Status.OK:
                    return s
            return Status.OK
        allow_missing = any(c.kind == "allow_missing" for c in self.children)
        if any(c.kind == "allow_missing_or_failed" for c in self.children):
            for c in self.children:
                c.evaluate(check)
            return Status.OK
        statuses = []
        for child in self.children:  # an allow_missing child says JwtMissed, which the aggregate never prefers
            s = child.evaluate(check)
            if s is Status.OK:
                return s
            statuses.append(s)
        final = _aggregate_any(statuses)
        return Status.OK if allow_missing and final is Status.JwtMissed else final


def compile_requirement(r: model.JwtRequirement | None, providers: Mapping[str, Any], path: str) -> Requirement:
    """A JwtRequirement -> Requirement; an unknown provider name is a config error naming the field."""
    if r is None:
        return Requirement("allow_missing_or_failed")
    if r.provider_name is not None or r.provider_and_audiences is not None:
        name = r.provider_name if r.provider_name is not None else r.provider_and_audiences.provider_name
        if name not in providers:
            raise ValueError(f"{path}: unknown provider {name!r} (providers: {', '.join(sorted(providers))})")
        auds = r.provider_and_audiences.audiences if r.provider_and_audiences is not None else None
        return Requirement("provider", name, auds)
    if r.requires_any is not None:
        return Requirement("any", children=tuple(compile_requirement(c, providers, f"{path}.requires_any[{i}]")
                                                 for i, c in enumerate(r.requires_any.requirements)))
    if r.requires_all is not None:
        return Requirement("all", children=tuple(compile_requirement(c, providers, f"{path}.requires_all[{i}]")
                                                 for i, c in enumerate(r.requires_all.requirements)))
    if r.allow_missing is not None:
        return Requirement("allow_missing")
    return Requirement("allow_missing_or_failed")


def check_config(cfg: model.JwtAuthentication) -> None:
    """What Envoy refuses when the filter is loaded: a requirement naming no provider, requirement_map rules."""
    providers = dict(cfg.providers or {})
    for i, rule in enumerate(cfg.rules):
        if rule.requirement_name is not None:
            raise ValueError(f"rules[{i}].requirement_name: requirement_map is not supported")
        compile_requirement(rule.requires, providers, f"rules[{i}].requires")


# ---------------------------------------------------------------- what a verified token leaves behind


def normalise_payload(payload: Mapping[str, Any], space_delimited: Iterable[str]) -> dict[str, Any]:
    """`normalize_payload_in_metadata.space_delimited_claims`: such a string claim becomes a list of its words."""
    out = dict(payload)
    for name in space_delimited:
        v = out.get(name)
        if isinstance(v, str):
            out[name] = v.split()
    return out


def claim_value(payload: Mapping[str, Any], claim: str) -> str | None:
    """`claim_to_headers`: a claim (nested with `.`) as a header value; strings as they are, numbers and bools
    as JSON, lists of those joined by `,`; objects are not copied."""
    node: Any = payload
    for key in claim.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]

    def scalar(v: Any) -> str | None:
        if isinstance(v, str):
            return v
        if isinstance(v, (bool, int, float)):
            return json.dumps(v)
        return None

    if isinstance(node, list):
        items = [scalar(v) for v in node]
        return ",".join(i for i in items if i is not None) if all(i is not None for i in items) else None
    return scalar(node)


def remove_query_param(path: str, name: str) -> str:
    """`forward: false` with a token in a query parameter: Envoy drops that parameter (every occurrence) from
    `:path`, and the `?` when nothing is left (checked against Envoy 1.40, tests/oracle)."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    kept = [p for p in query.split("&") if p.partition("=")[0] != name]
    return base + ("?" + "&".join(kept) if kept else "")


def original_uri(scheme: str, authority: str, path: str) -> str:
    """Http::Utility::buildOriginalUri: the realm of `www-authenticate` (the path cropped to 256 characters)."""
    return f"{scheme}://{authority}{path[:MAX_PATH_IN_REALM]}"


def www_authenticate(status: Status, uri: str) -> str:
    """`Bearer realm="<uri>"`, plus `, error="invalid_token"` unless the token was missing (filter.cc)."""
    value = f'Bearer realm="{uri}"'
    return value if status is Status.JwtMissed else value + ', error="invalid_token"'
