"""IST0128 NoServerCertificateVerificationDestinationLevel and IST0129 ...PortLevel: a DestinationRule
originates TLS (mode SIMPLE or MUTUAL) without `caCertificates`, so the server's identity is not checked.

Istio's analyzer: destinationrule/ca-certificates.go. Not reported when `insecureSkipVerify` is set, nor
when a `credentialName` is used together with a `workloadSelector` (the credential then carries the CA).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding


def _unverified(tls: Any, has_selector: bool) -> str | None:
    """The TLS mode when it originates TLS without a CA to verify the server, else None."""
    if not isinstance(tls, Mapping) or tls.get("mode") not in ("SIMPLE", "MUTUAL"):
        return None
    if tls.get("caCertificates") or tls.get("insecureSkipVerify"):
        return None
    if tls.get("credentialName") and has_selector:
        return None
    return tls["mode"]


def analyze(index: Index) -> Iterator[Finding]:
    for dr in index.of("DestinationRule"):
        host = get(dr.spec, "host", default="")
        has_selector = bool(get(dr.spec, "workloadSelector"))
        mode = _unverified(get(dr.spec, "trafficPolicy", "tls"), has_selector)
        if mode:
            yield report(msg.NO_SERVER_CERT_VERIFICATION_DESTINATION, dr, "spec.trafficPolicy.tls.mode",
                         dr.name, dr.namespace, mode, host)
        for i, port_policy in enumerate(get(dr.spec, "trafficPolicy", "portLevelSettings", default=())):
            mode = _unverified(get(port_policy, "tls"), has_selector)
            if mode:
                yield report(msg.NO_SERVER_CERT_VERIFICATION_PORT, dr,
                             f"spec.trafficPolicy.portLevelSettings[{i}].tls.mode", dr.name, dr.namespace, mode,
                             host, get(port_policy, "port", "number", default=""))
