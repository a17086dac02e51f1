"""CertificateService.create_certificate (control/ca/server.py) without sockets: who may get which
certificate, what is refused, and how every outcome is counted under Istio's metric names."""
from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from control.ca.authority import AuthenticationError, CAError, CSRParseError, Reason, SigningError
from control.ca.server import CAMetrics, CertificateService
from control.ca.tokens import TokenSigner, TokenVerifier
from pyproxy.tls.identity import PeerIdentity, uri_sans_from_certificate
from pyproxy.tls.pki import build_csr, generate_key, load_certificates

from .conftest import NOW

TOKEN_KEY = generate_key()
SLEEP = PeerIdentity("cluster.local", "default", "sleep")
COUNTERS = ("citadel_server_csr_count", "citadel_server_authentication_failure_count",
            "citadel_server_csr_parsing_err_count", "citadel_server_success_cert_issuance_count")


@pytest.fixture
def service(authority, clock):
    return CertificateService(authority, TokenVerifier([TOKEN_KEY.public_key()], clock=clock),
                              CAMetrics(CollectorRegistry(auto_describe=False)))


@pytest.fixture
def bearer(clock):
    def make(ns="default", sa="sleep", **kw):
        return "Bearer " + TokenSigner(TOKEN_KEY, clock=clock).create(ns, sa, **kw)
    return make


def body(csr, validity=0, key="validity_duration"):
    return json.dumps({"csr": csr.decode() if isinstance(csr, bytes) else csr, key: validity}).encode()


def counts(service):
    return tuple(service.metrics.value(name) for name in COUNTERS)


def test_token_caller_gets_its_own_identity(service, bearer):
    chain = service.create_certificate(body(build_csr(generate_key(), SLEEP.uri), 3600), bearer(), None)["cert_chain"]
    assert len(chain) == 3 and all(pem.count("BEGIN CERTIFICATE") == 1 for pem in chain)
    leaf = load_certificates(chain[0])[0]
    assert uri_sans_from_certificate(leaf) == (SLEEP.uri,)
    assert leaf.not_valid_after_utc.timestamp() == NOW + 3600
    assert counts(service) == (1, 0, 0, 1)


@pytest.mark.parametrize("validity", ["3600", 3600.0])
def test_proto3_json_spellings_are_accepted(service, bearer, validity):
    doc = body(build_csr(generate_key(), SLEEP.uri), validity, key="validityDuration")
    leaf = load_certificates(service.create_certificate(doc, bearer(), None)["cert_chain"][0])[0]
    assert leaf.not_valid_after_utc.timestamp() == NOW + 3600


def test_certificate_caller_renews_its_own_identity(service):
    peercert = {"subjectAltName": (("URI", SLEEP.uri),)}
    chain = service.create_certificate(body(build_csr(generate_key(), None)), None, peercert)["cert_chain"]
    assert uri_sans_from_certificate(load_certificates(chain[0])[0]) == (SLEEP.uri,)


CASES = [
    # name, request factory (csr, bearer) -> (body, authorization, peercert), error, reason, counters after
    ("no credential", lambda b: (body(build_csr(generate_key(), SLEEP.uri)), None, None),
     AuthenticationError, Reason.UNAUTHENTICATED, (1, 1, 0, 0), "no bearer token"),
    ("not a bearer header", lambda b: (body(build_csr(generate_key(), SLEEP.uri)), "Basic dXNlcg==", None),
     AuthenticationError, Reason.UNAUTHENTICATED, (1, 1, 0, 0), "not 'Bearer <token>'"),
    ("expired token", lambda b: (body(build_csr(generate_key(), SLEEP.uri)), b(ttl=1), None),
     AuthenticationError, Reason.UNAUTHENTICATED, (1, 1, 0, 0), "expired at"),  # (clock moved below)
    ("token for another workload", lambda b: (body(build_csr(generate_key(), SLEEP.uri)), b(sa="httpbin"), None),
     SigningError, Reason.PERMISSION_DENIED, (1, 0, 0, 0), "authenticated as spiffe://cluster.local/ns/default/sa/httpbin"),
    ("client cert outside trust domain", lambda b: (body(build_csr(generate_key(), None)), None,
                                                    {"subjectAltName": (("URI", "spiffe://evil.org/ns/a/sa/b"),)}),
     AuthenticationError, Reason.UNAUTHENTICATED, (1, 1, 0, 0), "outside the trust domain"),
    ("client cert without spiffe id", lambda b: (body(build_csr(generate_key(), None)), None,
                                                 {"subjectAltName": (("DNS", "istiod"),)}),
     AuthenticationError, Reason.UNAUTHENTICATED, (1, 1, 0, 0), "no spiffe:// URI SAN"),
    ("ttl over max", lambda b: (body(build_csr(generate_key(), SLEEP.uri), 91 * 86400), b(), None),
     SigningError, Reason.INVALID_ARGUMENT, (1, 0, 0, 0), "max allowed TTL"),
    ("body not json", lambda b: (b"{csr", b(), None), CSRParseError, Reason.INVALID_ARGUMENT, (1, 0, 1, 0), "not JSON"),
    ("csr missing", lambda b: (b'{"validity_duration": 5}', b(), None), CSRParseError, Reason.INVALID_ARGUMENT,
     (1, 0, 1, 0), "'csr' is missing"),
    ("validity not a number", lambda b: (body(build_csr(generate_key(), SLEEP.uri), "1d"), b(), None),
     CSRParseError, Reason.INVALID_ARGUMENT, (1, 0, 1, 0), "whole seconds"),
    ("csr garbage", lambda b: (body("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
                               b(), None), CSRParseError, Reason.INVALID_ARGUMENT, (1, 0, 1, 0), "PKCS#10"),
]


@pytest.mark.parametrize("name, make, error, reason, after, says", CASES, ids=[c[0] for c in CASES])
def test_refused_requests_sign_nothing_and_are_counted(service, bearer, clock, name, make, error, reason, after,
                                                       says):
    request = make(bearer)
    clock.now = NOW + 120  # moves past the 1 s token's expiry + skew; harmless for the others
    with pytest.raises(error) as info:
        service.create_certificate(*request)
    assert isinstance(info.value, CAError) and info.value.reason is reason
    assert says in info.value.message
    assert counts(service) == after  # success count stays 0: nothing signed


def test_sign_errors_are_labelled_with_istio_error_type(service, bearer):
    for validity in (91 * 86400, 92 * 86400):
        with pytest.raises(SigningError):
            service.create_certificate(body(build_csr(generate_key(), SLEEP.uri), validity), bearer(), None)
    with pytest.raises(SigningError):
        service.create_certificate(body(build_csr(generate_key(), SLEEP.uri)), bearer(sa="other"), None)
    assert service.metrics.value("citadel_server_csr_sign_err_count", "TTLError") == 2
    assert service.metrics.value("citadel_server_csr_sign_err_count", "CSRError") == 1


def test_metrics_render_with_istio_sample_names(service, bearer, authority):
    registry = CollectorRegistry(auto_describe=False)
    service = CertificateService(authority, service.tokens, CAMetrics(registry))
    service.create_certificate(body(build_csr(generate_key(), SLEEP.uri)), bearer(), None)
    with pytest.raises(AuthenticationError):
        service.create_certificate(body(build_csr(generate_key(), SLEEP.uri)), None, None)
    samples = {s.name: s.value for family in text_string_to_metric_families(generate_latest(registry).decode())
               for s in family.samples}
    assert samples["citadel_server_csr_count"] == 2
    assert samples["citadel_server_success_cert_issuance_count"] == 1
    assert samples["citadel_server_authentication_failure_count"] == 1
    assert samples["citadel_server_root_cert_expiry_timestamp"] == authority.root_cert_expiry
    assert authority.root_cert_expiry == authority.chain_root.not_valid_after_utc.timestamp() > NOW
