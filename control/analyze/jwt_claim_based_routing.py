"""IST0149 JwtClaimBasedRoutingWithoutRequestAuthN: a VirtualService routes on `@request.auth.claims.*` at a
gateway whose pods no RequestAuthentication applies to, so no token is ever verified and the claim matches
never hold.

Istio's analyzer: virtualservice/jwtclaimroute.go. The first claim key of the VirtualService (headers, then
withoutHeaders, rule by rule); for each Gateway it is bound to (not `mesh`) and each pod (here: workload) its
selector picks, a RequestAuthentication in the root namespace or the pod's namespace whose selector matches
the pod's labels (no selector matches all) must exist; otherwise one message per pod.
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import ROOT_NAMESPACE, Index, get, report, selects
from control.istio import messages as msg
from control.istio.messages import Finding
from control.translate.request_authn import routing_claims


def claim_key(vs) -> str:
    """routeBasedOnJWTClaimKey: the first header key that is a JWT claim, or ""."""
    for route in get(vs.spec, "http", default=()):
        for m in get(route, "match", default=()) or ():
            for section in ("headers", "withoutHeaders"):
                for key in get(m, section, default={}) or {}:
                    if routing_claims(str(key)) is not None:
                        return str(key)
    return ""


def analyze(index: Index) -> Iterator[Finding]:
    authns = index.of("RequestAuthentication")
    for vs in index.of("VirtualService"):
        key = claim_key(vs)
        if not key:
            continue
        for i, ref in enumerate(get(vs.spec, "gateways", default=())):
            gateway = index.gateway(str(ref), vs.namespace) if ref != "mesh" else None
            if gateway is None:
                continue
            selector = get(gateway.spec, "selector", default={}) or {}
            for pod in index.workloads_selected(selector, None):
                if any(ra.namespace in (ROOT_NAMESPACE, pod.namespace)
                       and selects(get(ra.spec, "selector", "matchLabels", default={}) or {}, pod.labels)
                       for ra in authns):
                    continue
                yield report(msg.JWT_CLAIM_ROUTING_WITHOUT_REQUEST_AUTHN, vs, f"spec.gateways[{i}]", key,
                             f"{gateway.namespace}/{gateway.name}", pod.name)
