"""IST0101 ReferencedResourceNotFound: a VirtualService names a host, subset or gateway that does not exist,
or a Gateway's selector matches no workload.

Istio's analyzers: virtualservice/destinationhosts.go (hosts), virtualservice/destinationrules.go
(`host+subset in destinationrule`), virtualservice/gateways.go (gateways) and gateway/gateway.go
(`selector`). Message text: `Referenced host not found: "reviews-bogus"`.
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import Index, format_labels, get, http_destinations, report
from control.istio import messages as msg
from control.istio.messages import Finding


def analyze(index: Index) -> Iterator[Finding]:
    for vs in index.of("VirtualService"):
        for path, dest in http_destinations(vs):
            host = dest.get("host")
            if not isinstance(host, str) or not host:
                continue
            if not index.has_host(host, vs.namespace):
                yield report(msg.REFERENCED_RESOURCE_NOT_FOUND, vs, f"{path}.host", "host", host)
                continue
            subset = dest.get("subset")
            if subset and subset not in index.subsets(host, vs.namespace):
                yield report(msg.REFERENCED_RESOURCE_NOT_FOUND, vs, f"{path}.subset",
                             "host+subset in destinationrule", f"{host}+{subset}")
        for i, ref in enumerate(get(vs.spec, "gateways", default=())):
            if ref != "mesh" and index.gateway(ref, vs.namespace) is None:
                yield report(msg.REFERENCED_RESOURCE_NOT_FOUND, vs, f"spec.gateways[{i}]", "gateway", ref)
    for gw in index.of("Gateway"):
        selector = get(gw.spec, "selector")
        if selector and not index.workloads_selected(selector, None):
            yield report(msg.REFERENCED_RESOURCE_NOT_FOUND, gw, "spec.selector", "selector",
                         format_labels(selector))
