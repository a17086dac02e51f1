"""CertificateAuthority.sign_csr (control/ca/authority.py): what a workload certificate looks like, and every
reason a CSR is refused (with nothing signed)."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from control.ca.authority import (CAPolicy, CertificateAuthority, CSRParseError, Reason, SigningError,
                                  make_intermediate_certificate, make_root_certificate)
from pyproxy.tls.identity import PeerIdentity
from pyproxy.tls.pki import KeyType, build_csr, generate_key, is_self_signed, issued_by, load_certificates

from .conftest import NOW

SLEEP = PeerIdentity("cluster.local", "default", "sleep")
HOUR, DAY = 3600, 86400


def _sign(authority, csr, ttl=0, who=SLEEP):
    return [load_certificates(pem)[0] for pem in authority.sign_csr(csr, who, ttl)]


def test_leaf_has_istio_workload_template(authority):
    key = generate_key()
    leaf, inter, root = _sign(authority, build_csr(key, SLEEP.uri))
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [SLEEP.uri]
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.not_valid_before_utc.timestamp() == NOW - 120      # 2 min clock-skew grace
    assert leaf.not_valid_after_utc.timestamp() == NOW + 24 * HOUR  # default TTL for validity 0
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    # chain order: leaf, intermediate, root last
    assert issued_by(leaf, inter) and issued_by(inter, root) and is_self_signed(root)


def test_empty_csr_san_is_filled_from_the_authenticated_identity(authority):
    leaf = _sign(authority, build_csr(generate_key(), None))[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [SLEEP.uri]


@pytest.mark.parametrize("ttl, lifetime", [(0, 24 * HOUR), (-5, 24 * HOUR), (HOUR, HOUR), (90 * DAY, 90 * DAY)])
def test_ttl_default_and_explicit(authority, ttl, lifetime):
    leaf = _sign(authority, build_csr(generate_key(), SLEEP.uri), ttl)[0]
    assert leaf.not_valid_after_utc.timestamp() - NOW == lifetime


def test_not_after_is_clamped_to_the_signing_chain(ca_material, clock):
    root, root_key, _, _ = ca_material
    key = generate_key()
    short = make_intermediate_certificate(key.public_key(), root, root_key, "cluster.local", NOW, 2 * HOUR)
    ca = CertificateAuthority(short, key, [short], [root], clock=clock)
    leaf = _sign(ca, build_csr(generate_key(), SLEEP.uri), 10 * HOUR)[0]
    assert leaf.not_valid_after_utc == short.not_valid_after_utc


def test_self_signed_ca_answers_leaf_then_root(ca_material, clock):
    key = generate_key()
    root = make_root_certificate(key, "cluster.local", NOW)
    ca = CertificateAuthority(root, key, clock=clock)
    leaf, last = _sign(ca, build_csr(generate_key(), SLEEP.uri))
    assert last == root and issued_by(leaf, root)


def test_two_root_bundle_appends_both_roots(ca_material, clock):
    root, _, inter, key = ca_material
    other = make_root_certificate(generate_key(), "cluster.local", NOW)
    ca = CertificateAuthority(inter, key, [inter, root], [root, other], clock=clock)
    chain = _sign(ca, build_csr(generate_key(), SLEEP.uri))
    assert chain[2:] == [root, other] and ca.chain_root == root
    assert ca.trust_bundle_pem.count(b"BEGIN CERTIFICATE") == 2


def _csr_with(key, *names):
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
        x509.SubjectAlternativeName(list(names)), critical=True).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


def _tampered_csr() -> bytes:
    """A CSR whose self-signature does not verify: the public key swapped after signing."""
    good = x509.load_pem_x509_csr(build_csr(generate_key(), SLEEP.uri)).public_bytes(serialization.Encoding.DER)
    other = generate_key().public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    original = x509.load_der_x509_csr(good).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    der = good.replace(original, other)
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + __import__("base64").encodebytes(der) + \
        b"-----END CERTIFICATE REQUEST-----\n"


REFUSALS = [
    # (name, csr factory, ttl, identity, error class, reason, error_type, message fragment)
    ("not PEM", lambda: b"hello", 0, SLEEP, CSRParseError, Reason.INVALID_ARGUMENT, None, "not a PEM"),
    ("bad CSR signature", _tampered_csr, 0, SLEEP, CSRParseError, Reason.INVALID_ARGUMENT, None, "signature"),
    ("SAN of another workload", lambda: build_csr(generate_key(), "spiffe://cluster.local/ns/default/sa/admin"),
     0, SLEEP, SigningError, Reason.PERMISSION_DENIED, "CSRError", "authenticated as spiffe://cluster.local/ns/default/sa/sleep"),
    ("extra DNS SAN", lambda: _csr_with(generate_key(), x509.UniformResourceIdentifier(SLEEP.uri),
                                        x509.DNSName("evil.example")),
     0, SLEEP, SigningError, Reason.PERMISSION_DENIED, "CSRError", "evil.example"),
    ("other trust domain", lambda: build_csr(generate_key(), "spiffe://evil.org/ns/default/sa/sleep"),
     0, PeerIdentity("evil.org", "default", "sleep"), SigningError, Reason.PERMISSION_DENIED, "CSRError",
     "outside the trust domain"),
    ("TTL over max", lambda: build_csr(generate_key(), SLEEP.uri), 90 * DAY + 1, SLEEP, SigningError,
     Reason.INVALID_ARGUMENT, "TTLError", "greater than the max allowed TTL 2160h0m0s"),
    ("P-224 key", lambda: build_csr(ec.generate_private_key(ec.SECP224R1()), SLEEP.uri), 0, SLEEP, SigningError,
     Reason.INVALID_ARGUMENT, "CSRError", "curve"),
    ("RSA-1024 key", lambda: build_csr(rsa.generate_private_key(65537, 1024), SLEEP.uri), 0, SLEEP, SigningError,
     Reason.INVALID_ARGUMENT, "CSRError", "1024 bits"),
    ("Ed25519 key", lambda: x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        ed25519.Ed25519PrivateKey.generate(), None).public_bytes(serialization.Encoding.PEM), 0, SLEEP,
     SigningError, Reason.INVALID_ARGUMENT, "CSRError", "not allowed"),
]


@pytest.mark.parametrize("name, make_csr, ttl, who, error, reason, error_type, says", REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_refusals(authority, name, make_csr, ttl, who, error, reason, error_type, says):
    with pytest.raises(error) as info:
        authority.sign_csr(make_csr(), who, ttl)
    assert info.value.reason is reason
    assert getattr(info.value, "error_type", None) == error_type
    assert says in info.value.message
    assert "\n" not in str(info.value)


def test_expired_signing_chain_signs_nothing(authority, clock):
    clock.now = NOW + 3 * 365 * DAY  # the intermediate lived 2 years
    with pytest.raises(SigningError) as info:
        authority.sign_csr(build_csr(generate_key(), SLEEP.uri), SLEEP)
    assert info.value.error_type == "CANotReady" and "expired at" in info.value.message


def test_policy_max_is_configurable(ca_material, clock):
    root, _, inter, key = ca_material
    ca = CertificateAuthority(inter, key, [inter], [root], clock=clock,
                              policy=CAPolicy(default_ttl=HOUR, max_ttl=2 * HOUR))
    assert _sign(ca, build_csr(generate_key(), SLEEP.uri))[0].not_valid_after_utc.timestamp() == NOW + HOUR
    with pytest.raises(SigningError, match="TTLError|max allowed"):
        ca.sign_csr(build_csr(generate_key(), SLEEP.uri), SLEEP, 3 * HOUR)
    with pytest.raises(ValueError):
        CAPolicy(default_ttl=3 * HOUR, max_ttl=2 * HOUR)


def test_rsa_2048_workload_key_is_accepted(authority):
    key = generate_key(KeyType.RSA_2048)
    assert isinstance(_sign(authority, build_csr(key, SLEEP.uri))[0].public_key(), rsa.RSAPublicKey)


@pytest.mark.parametrize("case", ["key mismatch", "not a CA", "broken chain", "no root"])
def test_inconsistent_ca_material_is_refused_at_construction(ca_material, clock, case):
    root, root_key, inter, key = ca_material
    stranger_root = make_root_certificate(generate_key(), "cluster.local", NOW)
    args = {"key mismatch": (inter, generate_key(), [inter], [root]),
            "not a CA": (load_certificates(CertificateAuthority(inter, key, [inter], [root], clock=clock).sign_csr(
                build_csr(key, SLEEP.uri), SLEEP)[0])[0], key, [], [root]),
            "broken chain": (inter, key, [inter], [stranger_root]),
            "no root": (inter, key, [inter], [])}[case]
    with pytest.raises(ValueError, match="does not match|not a CA|does not chain|no root"):
        CertificateAuthority(*args, clock=clock)


def test_server_certificate_has_dns_and_ip_sans(authority):
    leaf = load_certificates(authority.issue_server_certificate(
        generate_key().public_key(), ["istiod.istio-system.svc", "127.0.0.1"], HOUR)[0])[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert leaf.not_valid_after_utc == dt.datetime.fromtimestamp(NOW + HOUR, dt.timezone.utc)
