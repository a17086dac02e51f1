"""A throwaway CA for TLS tests (what trustme does, on the `cryptography` package).

`TestCA("name")` makes a self-signed root (EC P-256); `ca.issue(...)` makes a leaf with the SANs asked for
(`uris=["spiffe://cluster.local/ns/a/sa/b"]`, `dns=[...]`, `ips=[...]`) and a validity window relative to now
(`not_before` / `not_after` in seconds: negative is the past, so an expired certificate is
`not_before=-7200, not_after=-3600`). `Leaf.chain_pem` / `key_pem` are PEM bytes; `write(dir)` puts them in
files for file-based DataSources. Nothing here talks to a network.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import pathlib
from dataclasses import dataclass
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class Leaf:
    cert: x509.Certificate
    key_pem: bytes
    ca_pem: bytes  # the issuing root

    @property
    def chain_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
        directory.mkdir(parents=True, exist_ok=True)
        chain, key = directory / f"{name}.crt", directory / f"{name}.key"
        chain.write_bytes(self.chain_pem)
        key.write_bytes(self.key_pem)
        return chain, key


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, name: str = "pyproxy test CA"):
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
        now = _now()
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=3))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write_ca(self, directory: pathlib.Path, name: str = "ca") -> pathlib.Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.crt"
        path.write_bytes(self.cert_pem)
        return path

    def issue(self, *, uris: Sequence[str] = (), dns: Sequence[str] = (), ips: Sequence[str] = (),
              common_name: str | None = None, not_before: float = -3600, not_after: float = 86400) -> Leaf:
        key = _key()
        now = _now()
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(seconds=not_before))
            .not_valid_after(now + dt.timedelta(seconds=not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=not attrs)
        return Leaf(builder.sign(self.key, hashes.SHA256()), _key_pem(key), self.cert_pem)
