"""IST0161 InvalidGatewayCredential: a Gateway server's `credentialName` names a Secret without a usable
certificate and key (and IST0101 ReferencedResourceNotFound `credentialName` when there is no such Secret).

Istio's analyzer: gateway/secret.go. The Secret is looked up in the namespace of the gateway workload (the
first Pod/Deployment/WorkloadEntry its `selector` matches); with no such workload nothing is checked (IST0101
`selector` already says so). A Secret is valid when istiod's ExtractCertInfo finds `cert`/`key` or
`tls.crt`/`tls.key` with values (control.translate.credentials) and the certificate is PEM X.509 within its
validity window at the analysis time (xds.ValidateCertificate: "expired or not yet valid"). Secret contents
never appear in a message.
"""
from __future__ import annotations

import warnings
from datetime import datetime
from typing import Iterator

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding
from control.translate import credentials


def valid_certificate(pem: bytes, now: datetime | None = None) -> bool:
    """xds.ValidateCertificate: at least one PEM certificate, each parseable and (given `now`) valid then."""
    try:
        with warnings.catch_warnings():  # a non-positive serial is cryptography's deprecation, not our finding
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return False
    if now is None:
        return bool(certs)
    return bool(certs) and all(c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in certs)


def analyze(index: Index) -> Iterator[Finding]:
    secrets = index.of("Secret")
    for gw in index.of("Gateway"):
        selector = get(gw.spec, "selector")
        workloads = index.workloads_selected(selector, None) if selector else []
        if not workloads:
            continue
        namespace = workloads[0].namespace
        for i, server in enumerate(get(gw.spec, "servers", default=())):
            name = get(server, "tls", "credentialName")
            if not name:
                continue
            path = f"spec.servers[{i}].tls.credentialName"
            secret = credentials.find_secret(secrets, str(name), namespace)
            if secret is None:
                yield report(msg.REFERENCED_RESOURCE_NOT_FOUND, gw, path, "credentialName", str(name))
                continue
            try:
                cred = credentials.extract_cert(secret)
            except credentials.CredentialError:
                cred = None
            if cred is None or not valid_certificate(cred.cert, index.now):
                yield report(msg.INVALID_GATEWAY_CREDENTIAL, gw, path, gw.name, namespace)
