"""IST0109 ConflictingMeshGatewayVirtualServiceHosts: two VirtualServices bound to the mesh gateway (sidecars)
define the same host. Istio then picks one arbitrarily per host; merge them into one resource.

Istio's analyzer: virtualservice/conflictingmeshgatewayhosts.go. Hosts are compared after short-name
resolution in each VirtualService's namespace; the message is reported on every VirtualService involved.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from control.analyze.index import Index, get, report, resolve_host, vs_gateways
from control.istio import messages as msg
from control.istio.messages import Finding
from control.istio.resources import Resource


def analyze(index: Index) -> Iterator[Finding]:
    by_host: dict[str, list[tuple[Resource, int]]] = defaultdict(list)
    for vs in index.of("VirtualService"):
        if "mesh" not in vs_gateways(vs):
            continue
        for i, host in enumerate(get(vs.spec, "hosts", default=())):
            entries = by_host[resolve_host(host, vs.namespace)]
            if all(other is not vs for other, _ in entries):
                entries.append((vs, i))
    for host, entries in sorted(by_host.items()):
        if len(entries) < 2:
            continue
        names = ",".join(f"{vs.namespace}/{vs.name}" for vs, _ in entries)
        for vs, i in entries:
            yield report(msg.CONFLICTING_MESH_GATEWAY_VS_HOSTS, vs, f"spec.hosts[{i}]", names, host)
