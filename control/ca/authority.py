"""The certificate authority's decisions (Citadel, istiod's `IstioCA`): check a CSR against the caller's
authenticated identity and sign it into a SPIFFE workload certificate. Pure: the clock is injected, key
material is passed in (control/ca/store.py reads and writes it), no sockets.

What `sign_csr` does, after Istio (security/pkg/pki/ca/ca.go `sign`, pki/util/generate_cert.go
`genCertTemplateFromCSR`, server/ca/server.go `CreateCertificate`):

* the CSR must parse and its self-signature verify; its key must be EC P-256/P-384 or RSA >= 2048 bits;
* the identity comes from the caller's credential, never from the CSR: a CSR may carry no SAN (the CA sets
  the URI SAN from the identity) or exactly the caller's own `spiffe://` URI; anything else is refused;
* TTL: `validity_duration` <= 0 means the default (24 h, `DEFAULT_WORKLOAD_CERT_TTL`); above the maximum
  (90 days, `MAX_WORKLOAD_CERT_TTL`) is an error, never clamped silently; `NotAfter` is clamped to the
  signing chain's own expiry, and an expired signing certificate signs nothing;
* the leaf: empty subject, one critical URI SAN, KeyUsage digitalSignature+keyEncipherment, ExtKeyUsage
  serverAuth+clientAuth, not a CA, random serial, `NotBefore = now - 2 min` (`ClockSkewGracePeriod`);
* the answer is `[leaf, intermediates..., root(s)]`, one PEM certificate per element, root last (during a
  root rotation the trust bundle holds two roots: both are appended).

Errors are `CAError`s carrying an Istio-like reason (gRPC status name and the HTTP status it maps to) and,
for signing errors, Istio's `caerror` type (`TTLError`, `CSRError`, `CANotReady`, `CertGenError`), which
labels `citadel_server_csr_sign_err_count{error}`.
"""
from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyproxy.tls.identity import DEFAULT_TRUST_DOMAIN, PeerIdentity
from pyproxy.tls.pki import certificate_pem, certificates_pem, is_self_signed, issued_by, same_public_key

HOUR = 3600
DEFAULT_WORKLOAD_CERT_TTL = 24 * HOUR        # DEFAULT_WORKLOAD_CERT_TTL
MAX_WORKLOAD_CERT_TTL = 90 * 24 * HOUR       # MAX_WORKLOAD_CERT_TTL
SELF_SIGNED_ROOT_TTL = 3650 * 24 * HOUR      # CITADEL_SELF_SIGNED_CA_CERT_TTL (10 years)
CLOCK_SKEW_GRACE = 120                       # pki/util ClockSkewGracePeriod = 2 min
MIN_RSA_BITS = 2048
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)


class Reason(enum.Enum):
    """gRPC status name, code and the HTTP status the REST endpoint answers with."""

    UNAUTHENTICATED = ("Unauthenticated", 16, 401)
    PERMISSION_DENIED = ("PermissionDenied", 7, 403)
    INVALID_ARGUMENT = ("InvalidArgument", 3, 400)
    UNAVAILABLE = ("Unavailable", 14, 503)
    INTERNAL = ("Internal", 13, 500)

    @property
    def grpc_name(self) -> str:
        return self.value[0]

    @property
    def grpc_code(self) -> int:
        return self.value[1]

    @property
    def http_status(self) -> int:
        return self.value[2]


class CAError(Exception):
    """A refused request: one clear message, an Istio-like reason, and what it counts as."""

    reason = Reason.INTERNAL

    def __init__(self, message: str, reason: Reason | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason.grpc_name}: {self.message}"


class AuthenticationError(CAError):
    """No usable credential (bad/expired/forged token, untrusted client certificate): counted in
    `citadel_server_authentication_failure_count`."""

    reason = Reason.UNAUTHENTICATED


class CSRParseError(CAError):
    """The CSR is not a PEM PKCS#10 request or its signature does not verify: `csr_parsing_err_count`."""

    reason = Reason.INVALID_ARGUMENT


class SigningError(CAError):
    """The CSR parsed but will not be signed: `csr_sign_err_count{error=<error_type>}`."""

    def __init__(self, message: str, error_type: str, reason: Reason = Reason.INVALID_ARGUMENT):
        super().__init__(message, reason)
        self.error_type = error_type  # Istio's caerror.ErrorType: CSRError, TTLError, CANotReady, CertGenError


def _when(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def iso_time(seconds: float) -> str:
    return _when(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_ttl(seconds: float) -> str:
    """`86400` -> `24h0m0s` (Go's Duration.String(), as in Istio's TTL error messages)."""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m}m{s}s" if h else (f"{m}m{s}s" if m else f"{s}s")


def check_public_key(key: PublicKeyTypes) -> None:
    """Workload keys: EC on P-256/P-384, or RSA of at least 2048 bits."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_CURVES):
            raise SigningError(f"CSR key uses curve {key.curve.name}; allowed: P-256, P-384", "CSRError")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise SigningError(f"CSR RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} required", "CSRError")
    else:
        raise SigningError(f"CSR key type {type(key).__name__} is not allowed; use ECDSA P-256 or RSA-2048",
                           "CSRError")


def parse_csr(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
    data = csr_pem.encode("utf-8") if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError:
        raise CSRParseError("CSR is not a PEM-encoded PKCS#10 certificate request") from None
    if not csr.is_signature_valid:
        raise CSRParseError("CSR signature does not verify with its own public key")
    return csr


def check_csr_identity(csr: x509.CertificateSigningRequest, identity: PeerIdentity) -> None:
    """The CSR may name no one, or exactly the caller; it may not ask for another identity or extra names."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    except ValueError as err:  # a malformed extension
        raise CSRParseError(f"CSR extensions do not parse: {err}") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    others = [name for name in san if not isinstance(name, x509.UniformResourceIdentifier)]
    if others or any(uri != identity.uri for uri in uris):
        asked = ", ".join([*uris, *(str(getattr(n, "value", n)) for n in others)])
        raise SigningError(f"CSR asks for SAN {asked} but the caller is authenticated as {identity.uri}",
                           "CSRError", Reason.PERMISSION_DENIED)


@dataclass(frozen=True, slots=True)
class CAPolicy:
    trust_domain: str = DEFAULT_TRUST_DOMAIN           # meshConfig.trustDomain
    default_ttl: int = DEFAULT_WORKLOAD_CERT_TTL
    max_ttl: int = MAX_WORKLOAD_CERT_TTL

    def __post_init__(self) -> None:
        if not 0 < self.default_ttl <= self.max_ttl:
            raise ValueError(f"workload TTLs: need 0 < default ({self.default_ttl}s) <= max ({self.max_ttl}s)")


def _leaf_builder(public_key: PublicKeyTypes, issuer: x509.Certificate, not_before: float, not_after: float,
                  sans: Sequence[x509.GeneralName], subject: x509.Name) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_when(not_before))
            .not_valid_after(_when(not_after))
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), critical=False)
            # Istio: the SAN extension is critical when the subject is empty (RFC 5280 4.2.1.6)
            .add_extension(x509.SubjectAlternativeName(list(sans)), critical=len(subject) == 0))


class CertificateAuthority:
    """A signing certificate and key, the chain from it up to a root, and the trust bundle (one or more
    roots). Frozen in use: rotating the signing material or the bundle builds a new CertificateAuthority."""

    def __init__(self, signing_cert: x509.Certificate, signing_key: CertificateIssuerPrivateKeyTypes,
                 chain: Sequence[x509.Certificate] = (), roots: Sequence[x509.Certificate] = (), *,
                 clock: Callable[[], float], policy: CAPolicy = CAPolicy()):
        self.signing_cert = signing_cert
        self.signing_key = signing_key
        self.policy = policy
        self._clock = clock
        if not same_public_key(signing_cert.public_key(), signing_key.public_key()):
            raise ValueError("CA key does not match the CA certificate")
        try:
            constraints = signing_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise ValueError("CA certificate is not a CA (basicConstraints CA:TRUE missing)")
        # The intermediates between the signing cert and a root: everything in `chain` that is not a root
        # and not the signing cert itself (Istio's cert-chain.pem starts with ca-cert.pem).
        self.intermediates = tuple(c for c in chain if c != signing_cert and not is_self_signed(c))
        self.roots = tuple(roots) or ((signing_cert,) if is_self_signed(signing_cert) else ())
        if not self.roots:
            raise ValueError("no root certificate: the trust bundle is empty")
        for root in self.roots:
            if not is_self_signed(root):
                raise ValueError(f"trust bundle entry {root.subject.rfc4514_string()} is not a self-signed root")
        self.chain_root = self._find_chain_root()

    def _find_chain_root(self) -> x509.Certificate:
        path = (self.signing_cert, *self.intermediates)
        for child, parent in zip(path, path[1:]):
            if not issued_by(child, parent):
                raise ValueError(f"cert chain is broken: {child.subject.rfc4514_string()} is not issued by "
                                 f"{parent.subject.rfc4514_string()}")
        top = path[-1]
        for root in self.roots:
            if top == root or issued_by(top, root):
                return root
        raise ValueError(f"CA certificate {top.subject.rfc4514_string()} does not chain to any root in the bundle")

    def __repr__(self) -> str:
        return (f"CertificateAuthority(signer={self.signing_cert.subject.rfc4514_string()!r}, "
                f"intermediates={len(self.intermediates)}, roots={len(self.roots)}, "
                f"trust_domain={self.policy.trust_domain!r})")

    # ------------------------------------------------------------------ facts
    @property
    def trust_bundle_pem(self) -> bytes:
        """ROOTCA: every trusted root (old and new during a rotation)."""
        return certificates_pem(self.roots)

    @property
    def root_cert_expiry(self) -> float:
        """Unix time the root this CA signs under expires (`citadel_server_root_cert_expiry_timestamp`)."""
        return self.chain_root.not_valid_after_utc.timestamp()

    @property
    def chain_expiry(self) -> float:
        """The earliest NotAfter on the signing path: no leaf may outlive it."""
        path = (self.signing_cert, *self.intermediates, self.chain_root)
        return min(c.not_valid_after_utc.timestamp() for c in path)

    def response_chain(self, leaf: x509.Certificate) -> tuple[str, ...]:
        """`[leaf, signing cert (if not a root), intermediates..., roots...]`, one PEM per element."""
        middle = () if self.signing_cert in self.roots else (self.signing_cert, *self.intermediates)
        return tuple(certificate_pem(c) for c in (leaf, *middle, *self.roots))

    # ------------------------------------------------------------------ decisions
    def resolve_ttl(self, requested: float, now: float) -> float:
        """Requested seconds -> the NotAfter to use; SigningError when over the max or the CA has expired."""
        if requested > self.policy.max_ttl:
            raise SigningError(f"requested TTL {format_ttl(requested)} is greater than the max allowed TTL "
                               f"{format_ttl(self.policy.max_ttl)}", "TTLError")
        expiry = self.chain_expiry
        if expiry <= now:
            raise SigningError(f"CA certificate chain expired at {iso_time(expiry)}", "CANotReady", Reason.UNAVAILABLE)
        ttl = requested if requested > 0 else self.policy.default_ttl
        return min(now + ttl, expiry)

    def sign_csr(self, csr_pem: str | bytes, identity: PeerIdentity, ttl_seconds: float = 0) -> tuple[str, ...]:
        """Check the CSR for `identity` (already authenticated) and sign it: returns the response chain."""
        csr = parse_csr(csr_pem)
        check_public_key(csr.public_key())
        if identity.trust_domain != self.policy.trust_domain:
            raise SigningError(f"identity {identity.uri} is outside the trust domain {self.policy.trust_domain!r}",
                               "CSRError", Reason.PERMISSION_DENIED)
        check_csr_identity(csr, identity)
        now = self._clock()
        not_after = self.resolve_ttl(ttl_seconds, now)
        builder = _leaf_builder(csr.public_key(), self.signing_cert, now - CLOCK_SKEW_GRACE, not_after,
                                [x509.UniformResourceIdentifier(identity.uri)], x509.Name([]))
        return self.response_chain(builder.sign(self.signing_key, hashes.SHA256()))

    def issue_server_certificate(self, public_key: PublicKeyTypes, dns_names: Iterable[str], ttl_seconds: float,
                                 *, uris: Iterable[str] = ()) -> tuple[str, ...]:
        """A serving certificate for the control plane itself (15012): DNS and IP SANs (strings that parse as
        an IP address become IP SANs), optional URI SANs. Same template as a workload's. Its lifetime is not
        bounded by the workload policy (`--max-cert-ttl` is about what workloads may ask for; istiod's own DNS
        certificate is not a workload's either), only by the CA chain's expiry."""
        sans: list[x509.GeneralName] = []
        for name in dns_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        sans.extend(x509.UniformResourceIdentifier(u) for u in uris)
        now = self._clock()
        expiry = self.chain_expiry
        if expiry <= now:
            raise SigningError(f"CA certificate chain expired at {iso_time(expiry)}", "CANotReady", Reason.UNAVAILABLE)
        not_after = min(now + ttl_seconds, expiry)
        builder = _leaf_builder(public_key, self.signing_cert, now - CLOCK_SKEW_GRACE, not_after, sans,
                                x509.Name([]))
        return self.response_chain(builder.sign(self.signing_key, hashes.SHA256()))


# ---------------------------------------------------------------------- CA material (roots, intermediates)

def _ca_name(trust_domain: str, label: str, key: PublicKeyTypes) -> x509.Name:
    """O = trust domain (Istio's self-signed root); the CN carries a short key id so that an old and a new root
    (a rotation) never share a subject."""
    key_id = x509.SubjectKeyIdentifier.from_public_key(key).digest.hex()[:8]
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{label} {key_id}")])


def _ca_builder(subject: x509.Name, issuer: x509.Name, public_key: PublicKeyTypes, now: float, ttl: float,
                path_length: int | None) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_when(now - CLOCK_SKEW_GRACE)).not_valid_after(_when(now + ttl))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def make_root_certificate(key: CertificateIssuerPrivateKeyTypes, trust_domain: str, now: float,
                          ttl: float = SELF_SIGNED_ROOT_TTL) -> x509.Certificate:
    """A self-signed root (Istio's `NewSelfSignedIstioCAOptions`: O = trust domain, CA, 10 years)."""
    name = _ca_name(trust_domain, "Root CA", key.public_key())
    return _ca_builder(name, name, key.public_key(), now, ttl, None).sign(key, hashes.SHA256())


def make_intermediate_certificate(public_key: PublicKeyTypes, issuer: x509.Certificate,
                                  issuer_key: CertificateIssuerPrivateKeyTypes, trust_domain: str, now: float,
                                  ttl: float) -> x509.Certificate:
    """An intermediate (the plugged-in `ca-cert.pem`), clamped to its issuer's lifetime; may sign leaves only."""
    ttl = min(ttl, issuer.not_valid_after_utc.timestamp() - now)
    builder = _ca_builder(_ca_name(trust_domain, "Intermediate CA", public_key), issuer.subject, public_key, now,
                          ttl, 0)
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),
                                    critical=False)
    return builder.sign(issuer_key, hashes.SHA256())
