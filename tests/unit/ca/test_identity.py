"""SPIFFE ids (pyproxy/tls/identity.py): parsing, the two spellings, and reading them from certificates."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from control.ca.authority import CertificateAuthority
from pyproxy.tls.identity import (IdentityError, PeerIdentity, check_peer_uri_san, identity_from_der,
                                  identity_from_peercert, parse_spiffe_uri)
from pyproxy.tls.pki import build_csr, generate_key, load_certificates


def test_parse_gives_trust_domain_namespace_service_account_and_both_spellings():
    ident = parse_spiffe_uri("spiffe://cluster.local/ns/default/sa/sleep")
    assert ident == PeerIdentity("cluster.local", "default", "sleep")
    assert ident.uri == "spiffe://cluster.local/ns/default/sa/sleep"
    assert ident.principal == "cluster.local/ns/default/sa/sleep"
    assert PeerIdentity.parse(ident.uri) == ident
    with pytest.raises(AttributeError):
        ident.namespace = "other"  # frozen


@pytest.mark.parametrize("uri, says", [
    ("http://cluster.local/ns/default/sa/sleep", "must start with"),
    ("spiffe://cluster.local/default/sa/sleep", "expected spiffe://"),
    ("spiffe://cluster.local/ns/default/serviceaccount/sleep", "expected spiffe://"),
    ("spiffe://cluster.local/ns/default/sa/sleep/extra", "expected spiffe://"),
    ("spiffe://cluster.local/ns//sa/sleep", "bad namespace"),
    ("spiffe:///ns/default/sa/sleep", "bad trust domain"),
    ("spiffe://cluster.local/ns/default/sa/", "bad service account"),
])
def test_malformed_spiffe_ids_are_refused_with_the_reason(uri, says):
    with pytest.raises(IdentityError, match=says):
        parse_spiffe_uri(uri)


PEERCERT = {"subject": (), "subjectAltName": (("DNS", "x.example"), ("URI", "https://not-spiffe/"),
                                             ("URI", "spiffe://cluster.local/ns/prod/sa/reviews"))}


def test_identity_from_getpeercert_dict_is_the_first_spiffe_uri_san():
    assert identity_from_peercert(PEERCERT) == PeerIdentity("cluster.local", "prod", "reviews")
    assert identity_from_peercert({"subjectAltName": (("DNS", "a"),)}) is None
    assert identity_from_peercert({}) is None
    assert identity_from_peercert(None) is None


def test_identity_from_der_certificate(authority: CertificateAuthority):
    ident = PeerIdentity("cluster.local", "default", "sleep")
    leaf_pem = authority.sign_csr(build_csr(generate_key(), ident.uri), ident)[0]
    der = load_certificates(leaf_pem)[0].public_bytes(serialization.Encoding.DER)
    assert identity_from_der(der) == ident
    with pytest.raises(IdentityError, match="not valid DER"):
        identity_from_der(b"\x30\x03junk")


@pytest.mark.parametrize("allowed, ok", [
    (["spiffe://cluster.local/ns/prod/sa/reviews"], True),
    (["spiffe://cluster.local/ns/prod/sa/other", "spiffe://cluster.local/ns/prod/sa/reviews"], True),
    (["spiffe://cluster.local/ns/prod/sa/other"], False),
    (["spiffe://cluster.local/ns/prod/sa/review"], False),   # exact, not prefix
    ([], True),                                               # any SPIFFE id
])
def test_uri_san_check_is_exact(allowed, ok):
    if ok:
        assert check_peer_uri_san(PEERCERT, allowed).startswith("spiffe://")
    else:
        with pytest.raises(IdentityError, match="does not match"):
            check_peer_uri_san(PEERCERT, allowed)


def test_uri_san_check_refuses_a_peer_without_certificate():
    with pytest.raises(IdentityError, match="no verified certificate"):
        check_peer_uri_san({}, [])
