"""What a handshake exposes (pyproxy.tls.session): peer identity, subject, SANs, the XFCC header Envoy writes for
each forward_client_cert_details mode, and SAN matchers. Pure: certificates from a throwaway CA, no sockets."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from pyproxy.config.decode import decode
from pyproxy.config.model import CertificateValidationContext, SetCurrentClientCertDetails
from pyproxy.tls.identity import PeerIdentity
from pyproxy.tls.session import TlsSession, certificate_sans, forwarded_client_cert, san_matcher
from tests.support.pki import TestCA

CLIENT = "spiffe://cluster.local/ns/client/sa/sleep"
SERVER = "spiffe://cluster.local/ns/server/sa/httpbin"


@pytest.fixture(scope="module")
def session():
    leaf = TestCA().issue(uris=[CLIENT], dns=["sleep.client"], common_name="sleep")
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    return TlsSession.build("TLSv1.3", "sni.example", "http/1.1", der, (SERVER,))


def test_session_exposes_identity_subject_and_sans(session):
    assert session.peer_identity == PeerIdentity("cluster.local", "client", "sleep")
    assert (session.peer_uri_sans, session.peer_dns_sans, session.peer_subject) == ((CLIENT,), ("sleep.client",),
                                                                                     "CN=sleep")
    assert len(session.peer_hash) == 64


DETAILS = SetCurrentClientCertDetails(subject=True, uri=True, dns=True)


@pytest.mark.parametrize("mode, existing, expected", [
    ("SANITIZE", "By=x", None),
    ("FORWARD_ONLY", "By=x", "By=x"),
    ("ALWAYS_FORWARD_ONLY", "By=x", "By=x"),
    ("APPEND_FORWARD", "By=x", "By=x,{mine}"),
    ("APPEND_FORWARD", None, "{mine}"),
    ("SANITIZE_SET", "By=x", "{mine}"),
])
def test_xfcc_modes(session, mode, existing, expected):
    mine = f'By={SERVER};Hash={session.peer_hash};Subject="CN=sleep";URI={CLIENT};DNS=sleep.client'
    got = forwarded_client_cert(mode, DETAILS, session, existing)
    assert got == (expected.format(mine=mine) if expected else None)


def test_xfcc_without_a_client_certificate_is_removed_unless_always_forward_only():
    plain = TlsSession.build("TLSv1.3", "", "", None)
    assert forwarded_client_cert("APPEND_FORWARD", DETAILS, plain, "By=x") is None
    assert forwarded_client_cert("FORWARD_ONLY", DETAILS, None, "By=x") is None
    assert forwarded_client_cert("ALWAYS_FORWARD_ONLY", DETAILS, None, "By=x") == "By=x"


def test_the_xfcc_element_is_built_once_per_session_and_details_and_follows_new_details(session):
    """A connection's element is cached on its session; a config swap brings a new details object, which gets
    its own element (not the old one's), and the old details still find theirs."""
    uri_only = SetCurrentClientCertDetails(uri=True)
    first = forwarded_client_cert("SANITIZE_SET", DETAILS, session, None)
    assert forwarded_client_cert("SANITIZE_SET", uri_only, session, None) == (
        f"By={SERVER};Hash={session.peer_hash};URI={CLIENT}")
    assert forwarded_client_cert("SANITIZE_SET", DETAILS, session, None) == first
    assert forwarded_client_cert("SANITIZE_SET", None, session, None) == f"By={SERVER};Hash={session.peer_hash}"
    session.memo[id(DETAILS)] = (DETAILS, "cached")  # what a second request on the connection reads
    try:
        assert forwarded_client_cert("APPEND_FORWARD", DETAILS, session, "By=x") == "By=x,cached"
    finally:
        session.memo.clear()


@pytest.mark.parametrize("vc, ok", [
    ({"match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": CLIENT}}]}, True),
    ({"match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}]}, True),
    ({"match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"suffix": "/sa/other"}}]}, False),
    ({"match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"safe_regex": {"regex": r"spiffe://.*/ns/client/.*"}}}]}, True),
    ({"match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": CLIENT}}]}, False),  # wrong type
    ({"match_subject_alt_names": [{"exact": "sleep.client"}]}, True),  # legacy: any SAN type
])
def test_san_matchers(session, vc, ok):
    check = san_matcher(decode(CertificateValidationContext, vc), "vc")
    assert check(session.peer_sans) is ok


def test_no_matchers_means_no_check():
    assert san_matcher(decode(CertificateValidationContext, {}), "vc") is None
    assert certificate_sans(None) == ()


def _verified_peercert(leaf, tmp_path) -> dict:
    """What `getpeercert()` returns for this leaf on a verified connection: a real handshake in memory."""
    import ssl

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (tmp_path / "cert.pem").write_bytes(leaf.chain_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(cadata=leaf.ca_pem.decode())
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c, s = client.wrap_bio(c_in, c_out), server.wrap_bio(s_in, s_out, server_side=True)
    done = set()
    for _ in range(10):  # a handful of flights; bounded
        for obj, out, peer_in in ((c, c_out, s_in), (s, s_out, c_in)):
            try:
                obj.do_handshake()
                done.add(id(obj))
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
        if id(c) in done:
            return c.getpeercert()
    raise AssertionError("no handshake")


def test_sans_from_ssl_decoding_equal_those_parsed_by_cryptography(tmp_path):
    """A verified peer's SANs are read from `getpeercert()` (no `cryptography` in the process): same pairs, same
    order, IPv6 in canonical form, as parsing the DER gives; the PEM text is the same too."""
    from pyproxy.tls.session import leaf_sans_from_pem, load_der_certificate, peer_sans, sans_from_peercert

    leaf = TestCA().issue(uris=[CLIENT, "https://example.com/x"], dns=["a.example", "b.example"],
                          ips=["10.0.0.1", "2001:db8::1"], common_name="sleep")
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    parsed = certificate_sans(load_der_certificate(der))
    assert parsed == (("DNS", "a.example"), ("DNS", "b.example"), ("URI", CLIENT), ("URI", "https://example.com/x"),
                      ("IP_ADDRESS", "10.0.0.1"), ("IP_ADDRESS", "2001:db8::1"))
    peercert = _verified_peercert(leaf, tmp_path)
    assert sans_from_peercert(peercert) == parsed
    assert peer_sans(der, peercert) == parsed == peer_sans(der, {})  # unverified ({}): parsed from the DER
    assert leaf_sans_from_pem(leaf.chain_pem) == parsed
    session = TlsSession.build("TLSv1.3", "", "", der, (), peercert)
    assert session.peer_pem == leaf.cert.public_bytes(serialization.Encoding.PEM).decode()
    assert session.peer_subject == "CN=sleep"
    with pytest.raises(ValueError):
        leaf_sans_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def _self_signed(subject) -> tuple[bytes, str]:
    """(DER, PEM) of a self-signed certificate with this subject (a cryptography x509.Name)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER), cert.public_bytes(serialization.Encoding.PEM).decode()


def _subjects():
    from cryptography import x509
    from cryptography.x509.oid import NameOID as N

    def name(*rdns):
        return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn]) for rdn in rdns])
    return {
        "empty (Istio's workload certificates)": (name(), True),
        "every short name": (name([(N.COUNTRY_NAME, "US")], [(N.STATE_OR_PROVINCE_NAME, "CA")],
                                  [(N.LOCALITY_NAME, "SF")], [(N.STREET_ADDRESS, "1 Main St")],
                                  [(N.ORGANIZATION_NAME, "Acme, Inc.")], [(N.ORGANIZATIONAL_UNIT_NAME, "a+b;c")],
                                  [(N.DOMAIN_COMPONENT, "example")], [(N.USER_ID, "u1")],
                                  [(N.COMMON_NAME, '#"q" <x> \\ end ')]), True),
        "a leading space": (name([(N.COMMON_NAME, " lead")]), True),
        "unicode": (name([(N.COMMON_NAME, "café ☕")]), True),
        "an attribute without a short name": (name([(N.COMMON_NAME, "x")], [(N.EMAIL_ADDRESS, "a@b.example")]),
                                              False),
        "a multi-valued RDN": (name([(N.COMMON_NAME, "x"), (N.ORGANIZATION_NAME, "y")]), False),
    }


@pytest.mark.parametrize("label", list(_subjects()))
def test_subject_from_ssl_decoding_equals_cryptographys_rfc4514_text(label, tmp_path):
    """XFCC `Subject=` of a verified peer is written from `getpeercert()["subject"]` (Istio's sidecars set
    `subject: true`, so this is on the request path); the text is cryptography's. Where RFC 4514 needs an OID
    (no short name) or an RDN has several values, None: the session then parses the DER."""
    import ssl

    from pyproxy.tls.session import load_der_certificate, subject_from_peercert

    subject, handled = _subjects()[label]
    der, pem = _self_signed(subject)
    (tmp_path / "c.pem").write_text(pem)
    peercert = ssl._ssl._test_decode_cert(str(tmp_path / "c.pem"))  # the decoder getpeercert() uses
    expected = load_der_certificate(der).subject.rfc4514_string()
    got = subject_from_peercert(peercert)
    assert got == (expected if handled else None)
    assert TlsSession.build("TLSv1.3", "", "", der, (), peercert).peer_subject == expected
