"""Key, CSR and certificate helpers shared by the sidecar agent and the CA, over the `cryptography` package.
Pure (no files, no sockets); no hand-made ASN.1.

Key types follow pilot-agent's options (pilot/cmd/pilot-agent/options/options.go): ECDSA P-256 is this
project's default (`ECC_SIGNATURE_ALGORITHM=ECDSA`, `ECC_CURVE=P256`), RSA-2048 (`WORKLOAD_RSA_KEY_SIZE`) the
option; P-384 is accepted as Istio's other curve. Keys are written as unencrypted PKCS#8 PEM, the form Envoy
reads from an SDS `tls_certificate.private_key`.
"""
from __future__ import annotations

import enum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PublicKeyTypes


class KeyType(str, enum.Enum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"

    @classmethod
    def parse(cls, text: str) -> "KeyType":
        try:
            return cls(text.lower())
        except ValueError:
            choices = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown key type {text!r} (choose one of {choices})") from None


def generate_key(kind: KeyType = KeyType.EC_P256) -> CertificateIssuerPrivateKeyTypes:
    if kind is KeyType.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP384R1() if kind is KeyType.EC_P384 else ec.SECP256R1())


def private_key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(pem: bytes, what: str = "private key") -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{what} is not an unencrypted PEM private key ({err})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(f"{what} is a {type(key).__name__}; only EC and RSA keys are supported")
    return key


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_certificates(pem: bytes | str, what: str = "certificate file") -> list[x509.Certificate]:
    """Every certificate in a PEM blob, in order; ValueError (naming `what`) when there is none."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise ValueError(f"{what} holds no readable PEM certificate ({err})") from None
    return certs


def certificates_pem(certs: list[x509.Certificate] | tuple[x509.Certificate, ...]) -> bytes:
    return "".join(certificate_pem(c) for c in certs).encode("ascii")


def same_public_key(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(serialization.Encoding.DER, fmt) == b.public_bytes(serialization.Encoding.DER, fmt)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """`issuer` signed `cert` (names chain and the signature verifies with the issuer's key)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    """A root: issuer equals subject and the signature verifies with the certificate's own key."""
    return issued_by(cert, cert)


def build_csr(key: CertificateIssuerPrivateKeyTypes, uri_san: str | None) -> bytes:
    """A PKCS#10 request with an empty subject and one critical URI SAN (Istio's shape,
    security/pkg/pki/util/generate_csr.go), signed with SHA-256. Returns PEM. Without `uri_san` the request
    names no one and the CA fills in the caller's authenticated identity."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if uri_san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri_san)]),
                                        critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
