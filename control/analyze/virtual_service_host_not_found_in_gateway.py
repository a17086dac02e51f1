"""IST0132 VirtualServiceHostNotFoundInGateway: a VirtualService bound to a Gateway lists hosts that none of
the Gateway's servers accept, so those hosts are not served there.

Istio's analyzer: virtualservice/gateways.go. A server host is `[namespace/]dnsName` where the namespace
is `*` (any, the default), `.` (the Gateway's own) or a name, and dnsName may be `*` or `*.suffix`.
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import Index, get, hosts_overlap, report
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
            gateway = index.gateway(ref, vs.namespace) if ref != "mesh" else None
            if gateway is None:
                continue  # a missing gateway is IST0101's business
            accepted = _server_hosts(gateway, vs.namespace)
            missing = [h for h in vs_hosts if not any(hosts_overlap(a, h) for a in accepted)]
            if missing:
                yield report(msg.VS_HOST_NOT_FOUND_IN_GATEWAY, vs, f"spec.gateways[{i}]", "[" + " ".join(missing) + "]",
                             f"{vs.namespace}/{vs.name}", f"{gateway.namespace}/{gateway.name}")
