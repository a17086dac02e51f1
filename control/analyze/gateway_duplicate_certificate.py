"""IST0138 GatewayDuplicateCertificate: two Gateways on the same gateway workloads use the same certificate,
so an HTTP/2 client re-using one connection for both hosts may get 404s (envoyproxy/envoy#6767).

Istio's analyzer: gateway/certificate.go. For each Gateway, the other Gateways whose selector includes its
selector (every Gateway when its selector is empty); two servers share a certificate when both name the same
`credentialName`, or neither has one and both name the same `serverCertificate` and `privateKey`. Reported on
the Gateway (at `metadata.name`) once per matching pair of servers, naming `[<ns>/<this> <ns>/<other>]`.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding


def same_certificate(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """haveSameCertificate."""
    if a.get("credentialName") and b.get("credentialName"):
        return a["credentialName"] == b["credentialName"]
    if not a.get("credentialName") and not b.get("credentialName"):
        if a.get("serverCertificate") and a.get("serverCertificate") == b.get("serverCertificate"):
            return bool(a.get("privateKey")) and a.get("privateKey") == b.get("privateKey")
    return False


def selector_subset(x: Mapping[str, str], y: Mapping[str, str]) -> bool:
    """selectorSubset: every label of x is in y with the same value."""
    return all(k in y and y[k] == v for k, v in x.items())


def analyze(index: Index) -> Iterator[Finding]:
    gateways = index.of("Gateway")
    for gw in gateways:
        selector = get(gw.spec, "selector", default={}) or {}
        for other in gateways:
            if other is gw or (selector and not selector_subset(selector, get(other.spec, "selector", default={}))):
                continue
            for server in get(gw.spec, "servers", default=()):
                for other_server in get(other.spec, "servers", default=()):
                    tls, other_tls = get(server, "tls"), get(other_server, "tls")
                    if isinstance(tls, Mapping) and isinstance(other_tls, Mapping) and same_certificate(tls, other_tls):
                        names = f"[{gw.namespace}/{gw.name} {other.namespace}/{other.name}]"
                        yield report(msg.GATEWAY_DUPLICATE_CERTIFICATE, gw, "metadata.name", names)
