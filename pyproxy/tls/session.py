"""What one TLS connection knows after its handshake, and what Envoy derives from it (pure).

`TlsSession` is built once per connection from the handshake's results (the peer certificate as DER, the
negotiated version and ALPN, the SNI the client asked for, the URI SANs of our own certificate). Everything
Envoy exposes from `Ssl::ConnectionInfo` is a property here: `peer_identity` (SPIFFE, `pyproxy.tls.identity`),
`peer_uri_sans`, `peer_dns_sans`, `peer_subject` (RFC 2253 order), `peer_hash` (SHA-256 of the DER, hex),
`tls_version` (`TLSv1.3`). The access log (%DOWNSTREAM_PEER_URI_SAN% ...) and HTTP filters read these through
`ActiveStream.conn.tls` / `StreamInfo.downstream_tls`.

`forwarded_client_cert` is the HCM's `forward_client_cert_details` + `set_current_client_cert_details` logic
(Envoy `ConnectionManagerUtility::mutateXfccRequestHeader`): the x-forwarded-client-cert value to send
upstream, or None to remove the header. Elements look like
`By=spiffe://td/ns/a/sa/server;Hash=<sha256 hex>;Subject="";URI=spiffe://td/ns/b/sa/client`.

`san_matcher` / `SanCheck` implement `match_typed_subject_alt_names` (SAN type + StringMatcher) and the
deprecated `match_subject_alt_names` (any SAN type) on a parsed certificate.
"""
from __future__ import annotations

import hashlib
import ipaddress
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence
from urllib.parse import quote

from ..config import model
from .files import memory_file
from .identity import IdentityError, PeerIdentity, identity_from_uri_sans

if TYPE_CHECKING:  # pragma: no cover
    from cryptography import x509

# Envoy's san_type names, in the order SANs are listed, and how Python's ssl (OpenSSL) names each kind in
# `getpeercert()["subjectAltName"]` (Modules/_ssl.c _get_peer_alt_names)
_SAN_TYPES = {"DNS": "DNS", "URI": "URI", "EMAIL": "email", "IP_ADDRESS": "IP Address"}


def certificate_sans(cert: "x509.Certificate | None") -> tuple[tuple[str, str], ...]:
    """(type, value) for each SAN of a parsed certificate: types DNS, URI, EMAIL, IP_ADDRESS (Envoy's san_type
    names)."""
    if cert is None:
        return ()
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    classes = {"DNS": x509.DNSName, "URI": x509.UniformResourceIdentifier, "EMAIL": x509.RFC822Name,
               "IP_ADDRESS": x509.IPAddress}
    out = []
    for name, cls in classes.items():
        for value in ext.get_values_for_type(cls):
            out.append((name, str(value) if not isinstance(value, str) else value))
    return tuple(out)


def sans_from_peercert(peercert: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """`certificate_sans` from the dict `ssl` decodes for a verified peer (`getpeercert()`): the same pairs in
    the same order (IP addresses in their canonical text, as `ipaddress` writes them)."""
    pairs = peercert.get("subjectAltName", ())
    out = []
    for name, kind in _SAN_TYPES.items():
        for k, value in pairs:
            if k == kind:
                out.append((name, _canonical(name, value.strip()) if name == "IP_ADDRESS" else value))
    return tuple(out)


# OpenSSL's long names (what `getpeercert()["subject"]` uses) of the attributes RFC 4514 writes by short name;
# any other attribute is written as its dotted OID, which only `cryptography` knows: that subject is parsed there
_RFC4514_NAMES = {"commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST", "organizationName": "O",
                  "organizationalUnitName": "OU", "countryName": "C", "streetAddress": "STREET",
                  "domainComponent": "DC", "userId": "UID"}
_RFC4514_ESCAPES = [("\\", "\\\\"), ('"', '\\"'), ("+", "\\+"), (",", "\\,"), (";", "\\;"), ("<", "\\<"),
                    (">", "\\>"), ("\0", "\\00")]


def _rfc4514_value(value: str) -> str:
    """RFC 4514 section 2.4 escaping, as `cryptography`'s Name.rfc4514_string() does it."""
    if not value:
        return ""
    for char, escaped in _RFC4514_ESCAPES:
        value = value.replace(char, escaped)
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


def subject_from_peercert(peercert: Mapping[str, Any]) -> str | None:
    """The subject as Envoy's subjectPeerCertificate writes it (RFC 4514: the most specific RDN first) from
    `getpeercert()["subject"]`; None when it has an attribute without a short name or a multi-valued RDN (the
    caller then asks `cryptography`, whose text this equals)."""
    parts = []
    for rdn in reversed(peercert.get("subject", ())):
        if len(rdn) != 1 or rdn[0][0] not in _RFC4514_NAMES:
            return None
        name, value = rdn[0]
        parts.append(f"{_RFC4514_NAMES[name]}={_rfc4514_value(value)}")
    return ",".join(parts)


def load_der_certificate(der: bytes) -> "x509.Certificate":
    """The `cryptography` object for a DER certificate, imported on first use: a peer verified by OpenSSL is
    read from `getpeercert()` instead, so a proxy whose peers are all verified never loads `cryptography`
    (8.3 MiB of a sidecar's RSS, measured)."""
    from cryptography import x509

    return x509.load_der_x509_certificate(der)


def peer_sans(der: bytes | None, peercert: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """The peer certificate's SANs: from `ssl`'s decoding when the handshake verified it (`peercert`
    non-empty), else (a peer that was not verified, `CERT_NONE`) parsed from its DER."""
    if not der:
        return ()
    if peercert:
        return sans_from_peercert(peercert)
    return certificate_sans(load_der_certificate(der))


def leaf_sans_from_pem(chain_pem: bytes) -> tuple[tuple[str, str], ...]:
    """The SANs of the first certificate of a PEM chain (our own certificate: its URI SANs are XFCC's `By=`).
    Decoded by the `ssl` module's own OpenSSL decoder (`_ssl._test_decode_cert`, what `getpeercert()` returns,
    read from `memory_file`) so `cryptography` is not loaded for it; where that is not available, by
    `cryptography`. ValueError when the PEM holds no certificate."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is not None:
        with memory_file(chain_pem, "leaf-certificate") as path:
            try:
                return sans_from_peercert(decode(path))
            except (OSError, ssl.SSLError) as err:
                raise ValueError(f"not a PEM certificate: {err}") from None
    from cryptography import x509

    return certificate_sans(x509.load_pem_x509_certificate(chain_pem))


def ssl_peer_sans(sslobj: Any) -> tuple[bytes | None, tuple[tuple[str, str], ...]]:
    """(DER, SANs) of the peer of an `ssl.SSLObject` after its handshake; (None, ()) without a certificate."""
    if sslobj is None:
        return None, ()
    der = sslobj.getpeercert(binary_form=True)
    return der, peer_sans(der, sslobj.getpeercert() if der else None)


@dataclass(frozen=True, slots=True)
class TlsSession:
    """The result of one completed handshake, seen from this proxy."""

    version: str = ""  # "TLSv1.3" (ssl.SSLObject.version())
    server_name: str = ""  # the SNI the client sent (downstream) or that we sent (upstream)
    alpn: str = ""  # the negotiated application protocol, "" when none
    peer_der: bytes | None = field(default=None, repr=False)
    local_uri_sans: tuple[str, ...] = ()
    peer_sans: tuple[tuple[str, str], ...] = ()
    subject: str | None = field(default=None, repr=False)  # from getpeercert(); None: parse the DER when asked
    # values derived from the session that every request on the connection would otherwise recompute
    # (xfcc_element: a SHA-256 of the certificate and five joins, 2.7 µs per request), filled on first use
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, version: str, server_name: str, alpn: str, peer_der: bytes | None,
              local_uri_sans: tuple[str, ...] = (), peercert: Mapping[str, Any] | None = None) -> "TlsSession":
        """`peercert`: `getpeercert()` of a verified peer (its SANs are read from it); without it the DER is
        parsed."""
        return cls(version or "", server_name or "", alpn or "", peer_der, local_uri_sans,
                   peer_sans(peer_der, peercert), subject_from_peercert(peercert) if peer_der and peercert else None)

    @property
    def peer_certificate(self) -> "x509.Certificate | None":
        """The parsed certificate (`cryptography`, loaded on first use: only the subject needs it)."""
        return load_der_certificate(self.peer_der) if self.peer_der else None

    @property
    def peer_presented(self) -> bool:
        return self.peer_der is not None

    @property
    def peer_uri_sans(self) -> tuple[str, ...]:
        return tuple(v for t, v in self.peer_sans if t == "URI")

    @property
    def peer_dns_sans(self) -> tuple[str, ...]:
        return tuple(v for t, v in self.peer_sans if t == "DNS")

    @property
    def peer_identity(self) -> PeerIdentity | None:
        """The client's SPIFFE identity (first spiffe:// URI SAN), None without one (or a malformed one)."""
        try:
            return identity_from_uri_sans(self.peer_uri_sans)
        except IdentityError:
            return None

    @property
    def peer_subject(self) -> str:
        """Envoy's subjectPeerCertificate: RFC 2253 (most specific RDN first), "" when the subject is empty."""
        if self.subject is not None:
            return self.subject
        cert = self.peer_certificate
        return cert.subject.rfc4514_string() if cert is not None else ""

    @property
    def peer_hash(self) -> str:
        return hashlib.sha256(self.peer_der).hexdigest() if self.peer_der else ""

    @property
    def peer_pem(self) -> str:
        return ssl.DER_cert_to_PEM_cert(self.peer_der) if self.peer_der else ""


# ------------------------------------------------------------------ x-forwarded-client-cert

def forwarded_client_cert(mode: str, details: model.SetCurrentClientCertDetails | None, tls: TlsSession | None,
                          existing: str | None) -> str | None:
    """The x-forwarded-client-cert value to forward (None: remove the header). `mode` is the HCM's
    forward_client_cert_details (SANITIZE by default)."""
    if mode == "ALWAYS_FORWARD_ONLY":
        return existing
    if mode == "SANITIZE" or tls is None or not tls.peer_presented:
        return None
    if mode == "FORWARD_ONLY":
        return existing
    value = xfcc_element(details, tls)
    if mode == "APPEND_FORWARD" and existing:
        return f"{existing},{value}"
    return value


def xfcc_element(details: model.SetCurrentClientCertDetails | None, tls: TlsSession) -> str:
    """This hop's x-forwarded-client-cert element (By, Hash, then what `set_current_client_cert_details` asks
    for): the same for every request on a connection, so it is built once per (session, details)."""
    cached = tls.memo.get(id(details))
    if cached is not None and cached[0] is details:
        return cached[1]
    parts = [f"By={uri}" for uri in tls.local_uri_sans]
    if tls.peer_hash:
        parts.append(f"Hash={tls.peer_hash}")
    if details is not None:
        # Envoy builds the list in this order (http_connection_manager config.cc)
        if details.subject:
            parts.append(f'Subject="{tls.peer_subject}"')
        if details.cert:
            parts.append(f'Cert="{quote(tls.peer_pem, safe="")}"')
        if details.chain:
            parts.append(f'Chain="{quote(tls.peer_pem, safe="")}"')  # the leaf: Python exposes no peer chain
        if details.uri:
            uris = tls.peer_uri_sans
            parts.extend(f"URI={u}" for u in uris) if uris else parts.append("URI=")
        if details.dns:
            parts.extend(f"DNS={d}" for d in tls.peer_dns_sans)
    value = ";".join(parts)
    tls.memo[id(details)] = (details, value)  # the details object is kept: its id cannot be reused meanwhile
    return value


# ------------------------------------------------------------------ subject alt name checks

SanPredicate = Callable[[Sequence[tuple[str, str]]], bool]


def _string_predicate(m: model.StringMatcher, where: str) -> Callable[[str], bool]:
    from ..routing.table import compile_string_matcher  # the one StringMatcher implementation

    return compile_string_matcher(m, where)


def san_matcher(vc: model.CertificateValidationContext | None, where: str) -> SanPredicate | None:
    """A predicate over a certificate's SANs: True when any matcher matches any SAN of its type (Envoy ORs
    the list). None when the validation context has no SAN matchers (any SAN is accepted)."""
    if vc is None:
        return None
    checks: list[tuple[str | None, Callable[[str], bool]]] = []
    for i, typed in enumerate(vc.match_typed_subject_alt_names):
        if typed.san_type not in _SAN_TYPES:
            raise ValueError(f"{where}.match_typed_subject_alt_names[{i}].san_type {typed.san_type} is not "
                             "supported (DNS, URI, EMAIL, IP_ADDRESS)")
        checks.append((typed.san_type, _string_predicate(typed.matcher, f"{where}.match_typed_subject_alt_names[{i}]")))
    for i, m in enumerate(vc.match_subject_alt_names):
        checks.append((None, _string_predicate(m, f"{where}.match_subject_alt_names[{i}]")))
    if not checks:
        return None

    def matches(sans: Sequence[tuple[str, str]]) -> bool:
        for kind, value in sans:
            for want, pred in checks:
                if (want is None or want == kind) and pred(_canonical(kind, value)):
                    return True
        return False

    return matches


def _canonical(kind: str, value: str) -> str:
    if kind == "IP_ADDRESS":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value
    return value
