"""IST0132 VirtualServiceHostNotFoundInGateway: a VirtualService bound to a Gateway has no host that any of
the Gateway's servers accept, so the Gateway serves none of it.

Istio's analyzer: virtualservice/gateways.go (vsHostInGateway): reported once per VirtualService and
gateway when none of the VirtualService's hosts overlaps a server host visible to its namespace (a gateway
that does not exist accepts nothing, so it gets this besides IST0101). A server host is `[namespace/]dnsName`
where the namespace is `*` (any, the default), `.` (the Gateway's own) or a name, and dnsName may be `*`
or `*.suffix`. Internal gateway names (Istio's IST0165) are left alone.
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import Index, get, hosts_overlap, is_internal_gateway, report
from control.istio import messages as msg
from control.istio.messages import Finding


def _server_hosts(gateway, vs_namespace: str) -> list[str]:
    hosts = []
    for server in get(gateway.spec, "servers", default=()):
        for entry in get(server, "hosts", default=()):
            ns, slash, name = entry.rpartition("/")
            if not slash or ns == "*" or (ns == "." and vs_namespace == gateway.namespace) or ns == vs_namespace:
                hosts.append(name)
    return hosts


def analyze(index: Index) -> Iterator[Finding]:
    for vs in index.of("VirtualService"):
        vs_hosts = get(vs.spec, "hosts", default=())
        for i, ref in enumerate(get(vs.spec, "gateways", default=())):
            if ref == "mesh" or is_internal_gateway(ref):
                continue
            gateway = index.gateway(ref, vs.namespace)
            accepted = _server_hosts(gateway, vs.namespace) if gateway is not None else []
            if not any(hosts_overlap(a, h) for a in accepted for h in vs_hosts):
                name = f"{gateway.namespace}/{gateway.name}" if gateway is not None else \
                    ref if "/" in ref else f"{vs.namespace}/{ref}"
                yield report(msg.VS_HOST_NOT_FOUND_IN_GATEWAY, vs, f"spec.gateways[{i}]", "[" + " ".join(vs_hosts) + "]",
                             f"{vs.namespace}/{vs.name}", name)
