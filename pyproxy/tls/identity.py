"""SPIFFE workload identity: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, read from a peer's
certificate. Pure: strings and certificates in, a frozen `PeerIdentity` out, no sockets.

Where it sits: after a TLS handshake (inbound mTLS termination, outbound origination, the CA's 15012 port)
the verified peer certificate's URI SAN names the workload. Istio keeps the identity *only* in the URI SAN
(security/pkg/pki/util/san.go; the SAN extension is critical because the subject is empty), and its parser
requires segment 1 to be `ns` and segment 3 to be `sa` (pkg/spiffe/spiffe.go). Two spellings are used:

* `.uri`        `spiffe://cluster.local/ns/default/sa/sleep`: the SAN itself, and the `source_principal` /
                `destination_principal` metric labels (istio_stats reads `uriSanPeerCertificate()[0]`);
* `.principal`  `cluster.local/ns/default/sa/sleep`: how AuthorizationPolicy `principals` are written (the
                generator adds `spiffe://` before matching).

Python's `ssl` hostname check knows DNS and IP SANs only, so the URI SAN check Envoy does with
`match_typed_subject_alt_names` (exact URI matchers for ISTIO_MUTUAL) is `check_peer_uri_san` here, run on
`SSLSocket.getpeercert()` after the handshake.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from cryptography import x509

SCHEME = "spiffe"
URI_PREFIX = "spiffe://"
DEFAULT_TRUST_DOMAIN = "cluster.local"  # meshConfig.trustDomain default (pkg/config/mesh/mesh.go)


class IdentityError(ValueError):
    """A string or certificate that does not carry a well-formed Istio SPIFFE identity."""


def _check_segment(what: str, value: str, uri: str) -> None:
    if not value or "/" in value or any(c.isspace() for c in value):
        raise IdentityError(f"invalid SPIFFE id {uri!r}: bad {what} {value!r}")


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """One workload's identity: trust domain, namespace and service account."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        uri = f"{URI_PREFIX}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"
        _check_segment("trust domain", self.trust_domain, uri)
        _check_segment("namespace", self.namespace, uri)
        _check_segment("service account", self.service_account, uri)

    @property
    def uri(self) -> str:
        """The URI SAN: `spiffe://td/ns/NS/sa/SA`."""
        return f"{URI_PREFIX}{self.principal}"

    @property
    def principal(self) -> str:
        """Istio's principal form (AuthorizationPolicy `principals`): `td/ns/NS/sa/SA`."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @classmethod
    def parse(cls, uri: str) -> "PeerIdentity":
        return parse_spiffe_uri(uri)

    def __str__(self) -> str:
        return self.uri


def parse_spiffe_uri(uri: str) -> PeerIdentity:
    """`spiffe://td/ns/NS/sa/SA` -> PeerIdentity; anything else raises IdentityError naming what is wrong."""
    if not isinstance(uri, str) or not uri.lower().startswith(URI_PREFIX):
        raise IdentityError(f"invalid SPIFFE id {uri!r}: must start with {URI_PREFIX!r}")
    parts = uri[len(URI_PREFIX):].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
        raise IdentityError(f"invalid SPIFFE id {uri!r}: expected spiffe://<trust-domain>/ns/<namespace>/sa/<sa>")
    return PeerIdentity(parts[0], parts[2], parts[4])


def uri_sans_from_peercert(peercert: Mapping[str, Any] | None) -> tuple[str, ...]:
    """URI SANs from the dict `ssl.SSLSocket.getpeercert()` returns (empty when there is no verified peer)."""
    if not peercert:
        return ()
    return tuple(value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI")


def uri_sans_from_certificate(cert: "x509.Certificate") -> tuple[str, ...]:
    from cryptography import x509  # imported here: a sidecar reads verified peers from getpeercert() instead

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.UniformResourceIdentifier))


def uri_sans_from_der(der: bytes) -> tuple[str, ...]:
    """URI SANs from a DER certificate (`getpeercert(binary_form=True)`, or an SDS secret)."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as err:
        raise IdentityError(f"peer certificate is not valid DER: {err}") from None
    return uri_sans_from_certificate(cert)


def identity_from_uri_sans(uris: Iterable[str]) -> PeerIdentity | None:
    """The first SPIFFE URI SAN as a PeerIdentity (Envoy and Istio read the first one); None when none is
    SPIFFE. A malformed `spiffe://` URI raises IdentityError rather than being skipped."""
    for uri in uris:
        if uri.lower().startswith(URI_PREFIX):
            return parse_spiffe_uri(uri)
    return None


def identity_from_peercert(peercert: Mapping[str, Any] | None) -> PeerIdentity | None:
    return identity_from_uri_sans(uri_sans_from_peercert(peercert))


def identity_from_der(der: bytes) -> PeerIdentity | None:
    return identity_from_uri_sans(uri_sans_from_der(der))


def check_peer_uri_san(peercert: Mapping[str, Any] | None, allowed: Iterable[str]) -> str:
    """Envoy's `match_typed_subject_alt_names` with exact URI matchers: returns the peer's matching URI SAN, or
    raises IdentityError saying what the peer presented. An empty `allowed` accepts any SPIFFE URI SAN."""
    allowed = tuple(allowed)
    uris = uri_sans_from_peercert(peercert)
    if not peercert:
        raise IdentityError("peer presented no verified certificate")
    for uri in uris:
        if (uri in allowed) if allowed else uri.lower().startswith(URI_PREFIX):
            return uri
    want = ", ".join(allowed) if allowed else "any spiffe:// URI"
    raise IdentityError(f"peer URI SAN {list(uris)} does not match {want}")
