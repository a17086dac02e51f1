"""The CA's endpoint on the control plane's secure port (15012): Istio's
`POST /istio.v1.auth.IstioCertificateService/CreateCertificate` in its JSON form, and the TLS context of that
port. The lead mounts `ca_app(...)` on the 15012 application (which also serves xDS over TLS) and serves it
with `server_ssl_context(...)`.

Request (security/v1alpha1/ca.proto `IstioCertificateRequest`):
    {"csr": "<PEM>", "validity_duration": <seconds>}     (proto3-JSON spellings `validityDuration` and
                                                          int64-as-string are accepted too)
    Authorization: Bearer <service-account token>       or a client certificate from the mesh (renewal)
Response (`IstioCertificateResponse`): {"cert_chain": [leaf, intermediates..., root]}, one PEM each.
Errors: the gRPC-gateway shape {"code": <grpc code>, "message": "...", "reason": "<grpc name>"} with the HTTP
status of the gRPC code (401 Unauthenticated, 403 PermissionDenied, 400 InvalidArgument, 503 Unavailable).

`CertificateService.create_certificate` is the whole decision (parse, authenticate, sign, count) with no
I/O; the aiohttp handler only hands it the body, the Authorization header and the TLS peer certificate.

Metrics, Istio's names (security/pkg/server/ca/monitoring.go), registered on the control plane's registry:
`citadel_server_csr_count`, `citadel_server_authentication_failure_count`,
`citadel_server_csr_parsing_err_count`, `citadel_server_csr_sign_err_count{error}`,
`citadel_server_success_cert_issuance_count` (untyped, Istio's sample names: see control/metrics.py) and the
gauge `citadel_server_root_cert_expiry_timestamp`.
"""
from __future__ import annotations

import json
import ssl
from typing import Any, Mapping, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from control.ca.authn import authenticate
from control.ca.authority import (AuthenticationError, CAError, CertificateAuthority, CSRParseError, Reason,
                                  SigningError)
from control.ca.tokens import TokenVerifier
from control.metrics import _Counters, _Gauges
from pyproxy.tls.contexts import server_context
from pyproxy.tls.pki import KeyType, generate_key, private_key_pem

CREATE_CERTIFICATE_PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
MAX_REQUEST_BYTES = 64 * 1024   # a CSR is ~1 KiB; anything this big is not one
# istiod's serving certificate names (the agent's CA_ADDR defaults to istiod.istio-system.svc:15012) plus
# loopback, where the local mesh runs.
SERVING_HOSTS = ("istiod.istio-system.svc", "istiod", "localhost", "127.0.0.1", "::1")


class CAMetrics:
    """The CA's counters and gauge on a registry passed in (the control plane's: no global state)."""

    def __init__(self, registry: CollectorRegistry):
        self.counters = _Counters({
            "citadel_server_csr_count": ("The number of CSRs received by Citadel server.", ()),
            "citadel_server_authentication_failure_count": ("The number of authentication failures.", ()),
            "citadel_server_csr_parsing_err_count": ("The number of errors occurred when parsing the CSR.", ()),
            "citadel_server_csr_sign_err_count": ("The number of errors occurred when signing the CSR.", ("error",)),
            "citadel_server_success_cert_issuance_count": (
                "The number of certificates issuances that have succeeded.", ()),
        })
        self.gauges = _Gauges({
            "citadel_server_root_cert_expiry_timestamp": "The unix timestamp, in seconds, when Citadel root cert "
                                                         "will expire. A negative time indicates the cert is expired.",
        })
        registry.register(self.counters)
        registry.register(self.gauges)

    def value(self, name: str, *labels: str) -> float:
        return self.counters.value(name, *labels)


def parse_request(body: bytes) -> tuple[str, int]:
    """The JSON body -> (csr PEM, validity seconds); CSRParseError naming the bad field."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise CSRParseError(f"request body is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise CSRParseError("request body must be a JSON object {\"csr\": ..., \"validity_duration\": ...}")
    csr = doc.get("csr")
    if not isinstance(csr, str) or not csr.strip():
        raise CSRParseError("request field 'csr' is missing or not a PEM string")
    raw = doc.get("validity_duration", doc.get("validityDuration", 0))
    try:
        if isinstance(raw, bool) or isinstance(raw, float) and not raw.is_integer():
            raise ValueError
        validity = int(raw)  # proto3 JSON writes int64 as a string: both are accepted
    except (TypeError, ValueError):
        raise CSRParseError(f"request field 'validity_duration' must be whole seconds, got {raw!r}") from None
    return csr, validity


class CertificateService:
    """`IstioCertificateService.CreateCertificate` without the transport (server/ca/server.go)."""

    def __init__(self, authority: CertificateAuthority, tokens: TokenVerifier, metrics: CAMetrics):
        self.authority = authority
        self.tokens = tokens
        self.metrics = metrics
        metrics.gauges.set_source("citadel_server_root_cert_expiry_timestamp", self._root_expiry)

    def _root_expiry(self) -> float:
        return self.authority.root_cert_expiry

    def replace_authority(self, authority: CertificateAuthority) -> None:
        """Swap the signing material / trust bundle whole (a plugged-in CA reloaded, a root rotation step)."""
        self.authority = authority

    def create_certificate(self, body: bytes, authorization: str | None,
                           peercert: Mapping[str, Any] | None) -> dict[str, list[str]]:
        """-> {"cert_chain": [...]}; every refusal is a CAError, counted, and nothing is signed."""
        counters = self.metrics.counters
        counters.inc("citadel_server_csr_count")
        authority = self.authority  # one snapshot for the whole request
        try:
            csr, validity = parse_request(body)
            identity = authenticate(authorization, peercert, self.tokens, authority.policy.trust_domain)
            chain = authority.sign_csr(csr, identity, validity)
        except AuthenticationError:
            counters.inc("citadel_server_authentication_failure_count")
            raise
        except CSRParseError:
            counters.inc("citadel_server_csr_parsing_err_count")
            raise
        except SigningError as err:
            counters.inc("citadel_server_csr_sign_err_count", err.error_type)
            raise
        counters.inc("citadel_server_success_cert_issuance_count")
        return {"cert_chain": list(chain)}


def error_body(err: CAError) -> dict[str, Any]:
    return {"code": err.reason.grpc_code, "reason": err.reason.grpc_name, "message": err.message}


def ca_routes(service: CertificateService) -> list[web.RouteDef]:
    """The CreateCertificate route, to add to the 15012 application beside xDS: `app.add_routes(ca_routes(s))`."""

    async def create_certificate(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
            err = CSRParseError(f"request body is larger than {MAX_REQUEST_BYTES} bytes")
            return web.json_response(error_body(err), status=err.reason.http_status)
        body = await request.read()
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        try:
            result = service.create_certificate(body, request.headers.get("Authorization"), peercert)
        except CAError as err:
            return web.json_response(error_body(err), status=err.reason.http_status)
        return web.json_response(result)

    return [web.post(CREATE_CERTIFICATE_PATH, create_certificate)]


def ca_app(service: CertificateService) -> web.Application:
    """A standalone aiohttp application serving only CreateCertificate (tests, or a CA-only port)."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.add_routes(ca_routes(service))
    return app


SERVING_CERT_TTL = 90 * 24 * 3600  # the 15012 certificate: 90 days (MAX_WORKLOAD_CERT_TTL's value), whatever
#                                   --max-cert-ttl says workloads may ask for; not renewed while running


def server_ssl_context(authority: CertificateAuthority, *, hosts: Sequence[str] = SERVING_HOSTS,
                       key_type: KeyType = KeyType.EC_P256, ttl: float | None = None) -> ssl.SSLContext:
    """The TLS context of 15012: a serving certificate the CA issues to itself (DNS/IP SANs `hosts`, a new key
    in memory only), the trust bundle to verify client certificates, which are optional (token callers have
    none; renewing workloads and xDS clients with certificates present theirs)."""
    chain_pem, key_pem = serving_pems(authority, hosts=hosts, key_type=key_type, ttl=ttl)
    return server_context(chain_pem, key_pem, authority.trust_bundle_pem, require_client_cert=False)


def serving_pems(authority: CertificateAuthority, *, hosts: Sequence[str] = SERVING_HOSTS,
                 key_type: KeyType = KeyType.EC_P256, ttl: float | None = None) -> tuple[bytes, bytes]:
    """(chain PEM, key PEM) of a serving certificate the CA issues to itself: what `server_ssl_context` serves
    with, and what gRPC ADS over TLS (grpc.ssl_server_credentials, which takes PEM) serves with."""
    key = generate_key(key_type)
    chain = authority.issue_server_certificate(key.public_key(), hosts, SERVING_CERT_TTL if ttl is None else ttl)
    served = chain[:len(chain) - len(authority.roots)]  # leaf + intermediates; the peer has the roots
    return "".join(served).encode("ascii"), private_key_pem(key)


class ServingContext:
    """15012's TLS across CA reloads. A listening socket keeps the SSLContext it was given for its whole life, so
    the port is served with `outer`, whose `sni_callback` moves each new handshake to the `current` context
    (`SSLObject.context = ...`, OpenSSL's SSL_set_SSL_CTX, called with or without SNI): after `replace`, new
    connections get the new serving certificate and verify client certificates against the new trust bundle;
    connections already open keep their handshake (istiod reloads a changed `cacerts` the same way)."""

    def __init__(self, authority: CertificateAuthority):
        self.current = server_ssl_context(authority)
        self.outer = server_ssl_context(authority)
        self.outer.sni_callback = self._select
        self.replacements = 0

    def _select(self, sslobj: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        sslobj.context = self.current
        return None

    def replace(self, authority: CertificateAuthority) -> None:
        self.current = server_ssl_context(authority)
        self.replacements += 1

    def __repr__(self) -> str:
        return f"<ServingContext replacements={self.replacements}>"


__all__ = ["CAMetrics", "CertificateService", "ServingContext", "ca_app", "ca_routes", "server_ssl_context",
           "serving_pems", "CREATE_CERTIFICATE_PATH", "parse_request", "Reason"]
