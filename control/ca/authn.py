"""Who is calling the CA: a pure function from the request's credentials to one SPIFFE identity.

Istio's `CreateCertificate` runs its authenticators in order and takes the first that succeeds
(security/pkg/server/ca/server.go `authenticate`): the client-certificate authenticator
(authenticate/cert_authenticator.go: the URI SAN of a peer certificate the TLS layer has verified against the
mesh roots, used by renewals) and the Kubernetes JWT authenticator (here: a token this control plane signed,
control/ca/tokens.py). When none succeeds the answer is Unauthenticated, "request authenticate failure", with
each authenticator's reason so the operator can see which credential was wrong.

`peercert` is the dict `ssl.SSLObject.getpeercert()` returns: it is only non-empty after OpenSSL verified the
chain against the trust bundle (the 15012 context asks for a client certificate optionally and verifies one
when presented), so this module never sees an unverified certificate.
"""
from __future__ import annotations

from typing import Any, Mapping

from control.ca.authority import AuthenticationError
from control.ca.tokens import TokenVerifier
from pyproxy.tls.identity import IdentityError, PeerIdentity, identity_from_peercert


def identity_from_client_certificate(peercert: Mapping[str, Any] | None, trust_domain: str) -> PeerIdentity:
    """A verified client certificate -> its SPIFFE identity, which must be in our trust domain."""
    if not peercert:
        raise AuthenticationError("no client certificate presented")
    try:
        identity = identity_from_peercert(peercert)
    except IdentityError as err:
        raise AuthenticationError(f"client certificate: {err}") from None
    if identity is None:
        raise AuthenticationError("client certificate has no spiffe:// URI SAN")
    if identity.trust_domain != trust_domain:
        raise AuthenticationError(f"client certificate identity {identity.uri} is outside the trust domain "
                                  f"{trust_domain!r}")
    return identity


def identity_from_bearer(authorization: str | None, tokens: TokenVerifier, trust_domain: str) -> PeerIdentity:
    """`Authorization: Bearer <token>` -> spiffe://<trust domain>/ns/<ns>/sa/<sa>."""
    if not authorization:
        raise AuthenticationError("no bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("authorization header is not 'Bearer <token>'")
    sa = tokens.verify(token.strip())
    try:
        return PeerIdentity(trust_domain, sa.namespace, sa.name)
    except IdentityError as err:
        raise AuthenticationError(f"token names an invalid identity: {err}") from None


def authenticate(authorization: str | None, peercert: Mapping[str, Any] | None, tokens: TokenVerifier,
                 trust_domain: str) -> PeerIdentity:
    """The caller's identity from its client certificate or its bearer token, first success wins."""
    failures = []
    for name, attempt in (("client certificate", lambda: identity_from_client_certificate(peercert, trust_domain)),
                          ("bearer token", lambda: identity_from_bearer(authorization, tokens, trust_domain))):
        try:
            return attempt()
        except AuthenticationError as err:
            failures.append(f"{name}: {err.message}")
    raise AuthenticationError("request authenticate failure (" + "; ".join(failures) + ")")
