"""Who may use the secure xDS port (15012), and as whom: the decision for one DiscoveryRequest, without I/O.

istiod's port 15012 serves xDS and the CA over TLS. Each xDS stream is authenticated (pilot/pkg/xds/ads.go
`authenticate`: the same authenticators as the CA, a verified client certificate or a Kubernetes JWT in
`authorization: Bearer ...`) and then authorized (`checkConnectionIdentity`: the authenticated SPIFFE
identity's namespace and service account must be the node's `NAMESPACE` and `SERVICE_ACCOUNT`, else
PermissionDenied "authorization failed"). Here every REST request is checked the same way (REST has no
stream: each request carries its credentials):

    credentials (client certificate URI SAN | Bearer token) --control.ca.authn--> identity    else 401
    identity + node --control.xds.admission.admit--> registers as that workload                else 403

One difference from istiod, on purpose: istiod lets a connection with *no* identity through (its TODO:
"allow locking down, rejecting unauthenticated requests"); here the secure port refuses it (401), since
anonymous readers have the plaintext port's `read-only` policy.

`authorize_discovery` is the decision; `XdsAuthMetrics` counts refusals as `pilot_xds_auth_failures{reason}`.
istiod has no metric for this (it only logs "Unauthorized XDS"); the name is this project's, in pilot's
namespace, and `reason` is the gRPC status name the refusal carries (Unauthenticated, PermissionDenied).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from prometheus_client import CollectorRegistry

from control.ca.authn import authenticate
from control.ca.authority import AuthenticationError, Reason
from control.ca.tokens import TokenVerifier
from control.metrics import _Counters
from control.xds.admission import Admission, admit
from control.xds.node import ProxyNode
from pyproxy.tls.identity import PeerIdentity

AUTH_FAILURES = "pilot_xds_auth_failures"


class XdsAuthError(Exception):
    """A refused DiscoveryRequest: the gRPC reason (and so the HTTP status) and one line saying why."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def http_status(self) -> int:
        return self.reason.http_status

    def body(self) -> dict[str, Any]:
        """`{"error": ...}` as every xDS error here, plus the gRPC-gateway fields the CA answers with."""
        return {"error": self.message, "code": self.reason.grpc_code, "reason": self.reason.grpc_name}


@dataclass(frozen=True, slots=True)
class SecureAdmission:
    """An accepted request: who the caller proved to be, and the registration decision for its node."""

    identity: PeerIdentity
    admission: Admission


def authorize_discovery(node: ProxyNode, authorization: str | None, peercert: Mapping[str, Any] | None,
                        tokens: TokenVerifier, trust_domain: str) -> SecureAdmission:
    """May this request's caller act as `node`? XdsAuthError (401 / 403) when not; never registers anyone
    it could not authenticate."""
    try:
        identity = authenticate(authorization, peercert, tokens, trust_domain)
    except AuthenticationError as err:
        raise XdsAuthError(Reason.UNAUTHENTICATED, f"xDS on the secure port needs a service-account token "
                                                   f"(Authorization: Bearer) or a mesh client certificate: "
                                                   f"{err.message}") from None
    admission = admit(node, identity, anonymous_may_register=False, trust_domain=trust_domain)
    if not admission.register:
        raise XdsAuthError(Reason.PERMISSION_DENIED, f"authorization failed for {node.short} as {identity.uri}: "
                                                     f"{admission.reason}")
    return SecureAdmission(identity, admission)


class XdsAuthMetrics:
    """`pilot_xds_auth_failures{reason}` on the control plane's registry (untyped, like its other counters)."""

    def __init__(self, registry: CollectorRegistry):
        self.counters = _Counters({
            AUTH_FAILURES: ("xDS requests on the secure port refused: no valid credential (Unauthenticated) or "
                            "an identity that is not the node's (PermissionDenied).", ("reason",)),
        })
        registry.register(self.counters)

    def refused(self, err: XdsAuthError) -> None:
        self.counters.inc(AUTH_FAILURES, err.reason.grpc_name)

    def value(self, reason: str) -> float:
        return self.counters.value(AUTH_FAILURES, reason)
