"""IST0132 VirtualServiceHostNotFoundInGateway: a VirtualService bound to a Gateway has no host that any of
the Gateway's servers accept, so the Gateway serves none of it.

Istio's analyzer: virtualservice/gateways.go (vsHostInGateway): reported once per VirtualService and
gateway when none of the VirtualService's hosts overlaps a server host visible to its namespace (a gateway
that does not exist accepts nothing, so it gets this besides IST0101). A server host is `[namespace/]dnsName`
where the namespace is `*` (any, the default), `.` (the Gateway's own) or a name, and dnsName may be `*`
or `*.suffix`. Internal gateway names (Istio's IST0165) are left alone. A reference that names no Istio
Gateway but a Kubernetes Gateway API Gateway is checked against its listeners' `hostname`s
(vsHostInKubernetesGateway): a listener without one accepts every host.
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


def _listener_hosts(gateway) -> list[str]:
    """A Kubernetes Gateway's listener hostnames; `*` when a listener has none (it accepts every host)."""
    return [str(get(listener, "hostname", default="") or "*")
            for listener in get(gateway.spec, "listeners", default=())]


def analyze(index: Index) -> Iterator[Finding]:
    for vs in index.of("VirtualService"):
        vs_hosts = get(vs.spec, "hosts", default=())
        for i, ref in enumerate(get(vs.spec, "gateways", default=())):
            if ref == "mesh" or is_internal_gateway(ref):
                continue
            gateway = index.gateway(ref, vs.namespace)
            if gateway is None and (kube := index.kubernetes_gateway(ref, vs.namespace)) is not None:
                gateway, accepted = kube, _listener_hosts(kube)
            else:
                accepted = _server_hosts(gateway, vs.namespace) if gateway is not None else []
            if not any(hosts_overlap(a, h) for a in accepted for h in vs_hosts):
                name = f"{gateway.namespace}/{gateway.name}" if gateway is not None else \
                    ref if "/" in ref else f"{vs.namespace}/{ref}"
                yield report(msg.VS_HOST_NOT_FOUND_IN_GATEWAY, vs, f"spec.gateways[{i}]", "[" + " ".join(vs_hosts) + "]",
                             f"{vs.namespace}/{vs.name}", name)
