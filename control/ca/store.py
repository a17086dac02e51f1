"""Where the CA's key material lives (the I/O shell around control/ca/authority.py).

Istio's layouts (pilot/pkg/bootstrap/istio_ca.go, security/pkg/pki/ca/ca.go):

* plugged-in CA, the `cacerts` directory:  `ca-cert.pem` (the signing, usually intermediate, certificate),
  `ca-key.pem` (its key), `root-cert.pem` (the trust bundle: one root, or the old and the new root during a
  rotation), `cert-chain.pem` (from ca-cert up to the root);
* self-signed: at first start a root is made (RSA-2048, O = trust domain, 10 years, as istiod's
  `istio-ca-secret`) and kept in `<state dir>/ca/` in the same four files, so a restart signs with the same
  root. `ca-cert.pem` is then the root itself.

The token signing key (`<state dir>/sa-token-key.pem`, EC P-256) is separate from the CA key, as a
Kubernetes API server's service-account key is separate from its cluster CA.

Private keys are written with mode 0600 inside 0700 directories, atomically (temp file + rename), and never
printed. Every problem is a `CAStoreError` with one line naming the file.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from control.ca.authority import (SELF_SIGNED_ROOT_TTL, CAPolicy, CertificateAuthority,
                                  make_intermediate_certificate, make_root_certificate)
from control.ca.tokens import TokenSigner, TokenVerifier
from pyproxy.tls.files import make_private_dir, write_file_atomic as _write
from pyproxy.tls.pki import (KeyType, certificates_pem, generate_key, load_certificates, load_private_key,
                             private_key_pem)

CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN = "ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"
ROOT_KEY = "root-key.pem"          # only from `meshctl ca init`: keep it offline, it signs new intermediates
TOKEN_KEY = "sa-token-key.pem"
SELF_SIGNED_DIR = "ca"
INTERMEDIATE_TTL = 730 * 24 * 3600  # Istio's tools/certs Makefile: intermediate 2 years, root 10 years


class CAStoreError(Exception):
    """Unusable CA files: the message names the file and what is wrong, in one line."""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CAStoreError(f"{path}: missing") from None
    except OSError as err:
        raise CAStoreError(f"{path}: cannot read ({err.strerror})") from None


def _mkdir_private(directory: Path) -> None:
    try:
        make_private_dir(directory)
    except OSError as err:
        raise CAStoreError(f"{directory}: cannot create directory ({err.strerror})") from None


def _certs(path: Path) -> list[x509.Certificate]:
    try:
        return load_certificates(_read(path), str(path))
    except ValueError as err:
        raise CAStoreError(str(err)) from None


def _key(path: Path) -> CertificateIssuerPrivateKeyTypes:
    try:
        return load_private_key(_read(path), str(path))
    except ValueError as err:
        raise CAStoreError(str(err)) from None


def write_cacerts(directory: str | Path, signing_cert: x509.Certificate, signing_key: CertificateIssuerPrivateKeyTypes,
                  intermediates: list[x509.Certificate], roots: list[x509.Certificate]) -> None:
    """Write Istio's cacerts layout. cert-chain.pem = ca-cert + intermediates + the first root."""
    directory = Path(directory)
    _mkdir_private(directory)
    _write(directory / CA_KEY, private_key_pem(signing_key), 0o600)
    _write(directory / CA_CERT, certificates_pem([signing_cert]), 0o644)
    chain = [signing_cert, *intermediates] + ([] if signing_cert in roots else roots[:1])
    _write(directory / CERT_CHAIN, certificates_pem(chain), 0o644)
    _write(directory / ROOT_CERT, certificates_pem(roots), 0o644)


def load_cacerts(directory: str | Path, *, clock: Callable[[], float] = time.time,
                 policy: CAPolicy = CAPolicy()) -> CertificateAuthority:
    """A CertificateAuthority from a cacerts directory; CAStoreError when a file is missing or they disagree."""
    directory = Path(directory)
    signing_cert = _certs(directory / CA_CERT)[0]
    signing_key = _key(directory / CA_KEY)
    roots = _certs(directory / ROOT_CERT)
    chain = _certs(directory / CERT_CHAIN) if (directory / CERT_CHAIN).exists() else []
    try:
        return CertificateAuthority(signing_cert, signing_key, chain, roots, clock=clock, policy=policy)
    except ValueError as err:
        raise CAStoreError(f"{directory}: {err}") from None


def create_ca_set(out: str | Path, *, trust_domain: str, clock: Callable[[], float] = time.time,
                  key_type: KeyType = KeyType.RSA_2048, root_ttl: float = SELF_SIGNED_ROOT_TTL,
                  intermediate_ttl: float = INTERMEDIATE_TTL, also_trust: list[x509.Certificate] = (),
                  force: bool = False) -> Path:
    """`meshctl ca init`: a new root and an intermediate under it, in the cacerts layout, plus root-key.pem.
    `also_trust` roots are appended to root-cert.pem (a rotation's two-root bundle)."""
    out = Path(out)
    existing = [name for name in (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN, ROOT_KEY) if (out / name).exists()]
    if existing and not force:
        raise CAStoreError(f"{out}: already holds {', '.join(existing)} (use --force to replace them)")
    now = clock()
    root_key, signing_key = generate_key(key_type), generate_key(key_type)
    root = make_root_certificate(root_key, trust_domain, now, root_ttl)
    intermediate = make_intermediate_certificate(signing_key.public_key(), root, root_key, trust_domain, now,
                                                 intermediate_ttl)
    write_cacerts(out, intermediate, signing_key, [], [root, *(c for c in also_trust if c != root)])
    _write(out / ROOT_KEY, private_key_pem(root_key), 0o600)
    return out


def open_authority(state_dir: str | Path, *, cacerts_dir: str | Path | None = None,
                   clock: Callable[[], float] = time.time, policy: CAPolicy = CAPolicy(),
                   key_type: KeyType = KeyType.RSA_2048) -> CertificateAuthority:
    """The control plane's CA at start: the plugged-in `cacerts_dir` when given, else the self-signed root in
    `<state_dir>/ca/`, made on first start."""
    if cacerts_dir is not None:
        return load_cacerts(cacerts_dir, clock=clock, policy=policy)
    own = Path(state_dir) / SELF_SIGNED_DIR
    if not (own / CA_CERT).exists():
        key = generate_key(key_type)
        root = make_root_certificate(key, policy.trust_domain, clock())
        write_cacerts(own, root, key, [], [root])
    return load_cacerts(own, clock=clock, policy=policy)


def cacerts_fingerprint(files: Mapping[str, bytes | None]) -> str:
    """What a reload decision compares: a digest of the four cacerts files' contents (None: missing). Pure, so
    the watcher only reads files and asks whether this changed."""
    digest = hashlib.sha256()
    for name in (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN):
        content = files.get(name)
        digest.update(name.encode() + b"\0" + (b"-" if content is None else b"+" + content) + b"\0")
    return digest.hexdigest()


def read_cacerts_files(cacerts_dir: str | Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for name in (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN):
        try:
            out[name] = (Path(cacerts_dir) / name).read_bytes()
        except OSError:
            out[name] = None
    return out


def token_signing_key(state_dir: str | Path, *, create: bool = True) -> CertificateIssuerPrivateKeyTypes:
    """The service-account token key in `<state_dir>/sa-token-key.pem`, made (EC P-256) when absent."""
    path = Path(state_dir) / TOKEN_KEY
    if not path.exists():
        if not create:
            raise CAStoreError(f"{path}: missing (start the control plane once with this state directory)")
        _mkdir_private(path.parent)
        _write(path, private_key_pem(generate_key(KeyType.EC_P256)), 0o600)
    return _key(path)


def token_signer(state_dir: str | Path, *, clock: Callable[[], float] = time.time) -> TokenSigner:
    return TokenSigner(token_signing_key(state_dir), clock=clock)


def token_verifier(state_dir: str | Path, *, clock: Callable[[], float] = time.time) -> TokenVerifier:
    return TokenVerifier([token_signing_key(state_dir).public_key()], clock=clock)
