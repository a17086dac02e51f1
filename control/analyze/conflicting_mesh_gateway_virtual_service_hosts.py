"""IST0109 ConflictingMeshGatewayVirtualServiceHosts: VirtualServices bound to the mesh gateway (sidecars)
define the same host for the same namespaces. Istio then picks one arbitrarily per host; merge them.

Istio's analyzer: virtualservice/conflictingmeshgatewayhosts.go. Each host is scoped by the VirtualService's
exportTo (`*` when empty or listing `*`, else each namespace, `.` being its own) after short-name resolution
in its namespace. VirtualServices sharing a scoped host conflict; a host scoped to a namespace also conflicts
with the hosts exported to all that match it (wildcards included). Each VirtualService is reported once,
naming all of them (`ns/name`, sorted) and the scoped host (`scope/fqdn`).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from control.analyze.index import Index, get, hosts_overlap, report, resolve_host, vs_gateways
from control.istio import messages as msg
from control.istio.messages import Finding
from control.istio.resources import Resource


def _scoped_hosts(index: Index) -> dict[tuple[str, str], list[Resource]]:
    hosts: dict[tuple[str, str], list[Resource]] = defaultdict(list)
    for vs in index.of("VirtualService"):
        if "mesh" not in vs_gateways(vs):
            continue
        export_to = list(get(vs.spec, "exportTo", default=()))
        scopes = ["*"] if not export_to or "*" in export_to else \
            sorted({vs.namespace if e == "." else e for e in export_to})
        for scope in scopes:
            for host in get(vs.spec, "hosts", default=()):
                hosts[(scope, resolve_host(str(host), vs.namespace))].append(vs)
    return hosts


def analyze(index: Index) -> Iterator[Finding]:
    hosts = _scoped_hosts(index)
    reported: set[str] = set()
    for (scope, fqdn), entries in sorted(hosts.items()):
        entries = list(entries)
        if scope != "*":
            entries += [vs for (s, h), others in sorted(hosts.items()) if s == "*" and hosts_overlap(fqdn, h)
                        for vs in others]
        if len(entries) < 2:
            continue
        names = ",".join(sorted(f"{vs.namespace}/{vs.name}" for vs in entries))
        for vs in entries:
            key = f"{vs.namespace}/{vs.name}"
            if key not in reported:
                reported.add(key)
                yield report(msg.CONFLICTING_MESH_GATEWAY_VS_HOSTS, vs, "metadata.name", names, f"{scope}/{fqdn}")
