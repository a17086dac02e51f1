"""control.xds.secure: a DiscoveryRequest on the secure port is served only to a caller that authenticated
(token or verified mesh client certificate: 401 otherwise) as the node's own namespace and service account
(403 otherwise); refusals are counted as pilot_xds_auth_failures{reason}. Also the sidecar's side of the
credentials (pyproxy.xds.credentials): token per request, certificate alone once the token is gone."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from control.ca.authority import Reason
from control.ca.store import token_signer, token_verifier
from control.xds.secure import XdsAuthError, XdsAuthMetrics, authorize_discovery
from pyproxy.xds.credentials import ControlPlaneCredentials, CredentialsError
from tests.unit.control.test_admission import node

TD = "cluster.local"


def peercert(uri: str) -> dict:
    """What ssl.SSLObject.getpeercert() returns for a verified certificate with this URI SAN."""
    return {"subject": (), "subjectAltName": (("URI", uri),)}


@pytest.fixture
def keys(tmp_path):
    state = tmp_path / "state"
    return token_signer(state), token_verifier(state), token_signer(tmp_path / "other")


def bearer(signer, ns="default", sa="bookinfo-reviews") -> str:
    return f"Bearer {signer.create(ns, sa, 3600)}"


@pytest.mark.parametrize("case, proxy, credential, want", [
    ("token for the node's service account", node(), ("token", "default", "bookinfo-reviews"), None),
    ("client certificate of the node's identity", node(),
     ("cert", "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"), None),
    ("token for another service account", node(), ("token", "default", "bookinfo-ratings"),
     (Reason.PERMISSION_DENIED, "claims namespace/service account default/bookinfo-reviews but authenticated as "
                                "default/bookinfo-ratings")),
    ("token for another namespace", node(), ("token", "prod", "bookinfo-reviews"),
     (Reason.PERMISSION_DENIED, "but authenticated as prod/bookinfo-reviews")),
    ("node without a service account", node(sa=""), ("token", "default", "bookinfo-reviews"),
     (Reason.PERMISSION_DENIED, "default/<none>")),
    ("certificate of another service account", node(),
     ("cert", "spiffe://cluster.local/ns/default/sa/bookinfo-details"),
     (Reason.PERMISSION_DENIED, "authenticated as default/bookinfo-details")),
    ("certificate from another trust domain", node(),
     ("cert", "spiffe://evil.example/ns/default/sa/bookinfo-reviews"),
     (Reason.UNAUTHENTICATED, "outside the trust domain 'cluster.local'")),
    ("forged token (another key)", node(), ("forged", "default", "bookinfo-reviews"),
     (Reason.UNAUTHENTICATED, "bearer token")),
    ("not a bearer header", node(), ("header", "Basic dXNlcjpwYXNz"),
     (Reason.UNAUTHENTICATED, "authorization header is not 'Bearer <token>'")),
    ("no credential at all", node(), ("none",),
     (Reason.UNAUTHENTICATED, "no client certificate presented; bearer token: no bearer token")),
])
def test_authorize_discovery(keys, case, proxy, credential, want):
    signer, verifier, stranger = keys
    kind, *args = credential
    authorization, cert = {
        "token": lambda: (bearer(signer, *args), None),
        "forged": lambda: (bearer(stranger, *args), None),
        "cert": lambda: (None, peercert(args[0])),
        "header": lambda: (args[0], None),
        "none": lambda: (None, None),
    }[kind]()
    if want is None:
        decision = authorize_discovery(proxy, authorization, cert, verifier, TD)
        assert decision.admission.register
        assert decision.identity.uri == f"spiffe://{TD}/ns/{proxy.namespace}/sa/{proxy.service_account}"
        return
    with pytest.raises(XdsAuthError) as err:
        authorize_discovery(proxy, authorization, cert, verifier, TD)
    reason, text = want
    assert err.value.reason is reason and err.value.http_status == reason.http_status
    assert text in err.value.message
    assert err.value.body() == {"error": err.value.message, "code": reason.grpc_code, "reason": reason.grpc_name}


def test_refusals_are_counted_by_reason():
    metrics = XdsAuthMetrics(CollectorRegistry(auto_describe=False))
    for reason in (Reason.UNAUTHENTICATED, Reason.PERMISSION_DENIED, Reason.PERMISSION_DENIED):
        metrics.refused(XdsAuthError(reason, "x"))
    assert (metrics.value("Unauthenticated"), metrics.value("PermissionDenied")) == (1, 2)


class Secret:
    """The two fields ControlPlaneCredentials reads from a WorkloadSecret."""

    def __init__(self, chain: bytes, key: bytes):
        self.cert_chain_pem, self.private_key_pem = chain, key


def test_credentials_send_the_token_then_the_certificate_alone_once_the_token_is_gone(tmp_path):
    from control.ca.store import create_ca_set, load_cacerts
    from pyproxy.tls.identity import PeerIdentity
    from pyproxy.tls.pki import KeyType, build_csr, generate_key, private_key_pem

    create_ca_set(tmp_path / "ca", trust_domain=TD, key_type=KeyType.EC_P256)
    authority = load_cacerts(tmp_path / "ca")
    root = tmp_path / "root-cert.pem"
    root.write_bytes(authority.trust_bundle_pem)
    token = tmp_path / "istio-token"
    token.write_text("abc.def.ghi\n")
    creds = ControlPlaneCredentials(root, token)
    assert creds.headers() == {"Authorization": "Bearer abc.def.ghi"}
    token.unlink()
    with pytest.raises(CredentialsError, match="cannot read the service-account token"):
        creds.headers()  # no certificate yet: nothing to authenticate with

    ident = PeerIdentity(TD, "default", "bookinfo-reviews")
    key = generate_key(KeyType.EC_P256)
    chain = authority.sign_csr(build_csr(key, ident.uri), ident, 3600)
    before = creds.ssl_context()
    creds.use_secret(Secret("".join(chain[:-1]).encode(), private_key_pem(key)))
    assert creds.headers() == {} and creds.client_certificate
    assert creds.ssl_context() is not before


def test_credentials_name_a_missing_root_file(tmp_path):
    with pytest.raises(CredentialsError, match="root-cert.pem: cannot read the mesh root certificate"):
        ControlPlaneCredentials(tmp_path / "root-cert.pem", tmp_path / "token")
