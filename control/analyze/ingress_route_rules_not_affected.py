"""IST0140 IngressRouteRulesNotAffected: a VirtualService bound to gateways routes to a host without a subset,
while another VirtualService for that host routes by subset: the subset routing does not apply to requests
coming through the gateway (they go straight to the host, not through the other VirtualService).

Istio's analyzer: virtualservice/destinationhosts.go (analyzeSubset): the other VirtualServices are those with
an HTTP destination that has a subset and whose host is one of their own hosts, compared as written.
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding


def analyze(index: Index) -> Iterator[Finding]:
    subset_routes: list[tuple[str, set[str]]] = []  # (ns/name, hosts it routes to by subset among its own hosts)
    for vs in index.of("VirtualService"):
        own = set(get(vs.spec, "hosts", default=()))
        hosts = {get(d, "destination", "host") for rule in get(vs.spec, "http", default=())
                 for d in get(rule, "route", default=()) if get(d, "destination", "subset")}
        if hosts & own:
            subset_routes.append((f"{vs.namespace}/{vs.name}", hosts & own))
    for vs in index.of("VirtualService"):
        if not get(vs.spec, "gateways"):
            continue
        for i, rule in enumerate(get(vs.spec, "http", default=())):
            for j, dest in enumerate(get(rule, "route", default=())):
                host = get(dest, "destination", "host")
                if host is None or get(dest, "destination", "subset"):
                    continue
                for other, hosts in subset_routes:
                    if host in hosts:
                        yield report(msg.INGRESS_ROUTE_RULES_NOT_AFFECTED, vs,
                                     f"spec.http[{i}].route[{j}].destination.host", other, f"{vs.namespace}/{vs.name}")
