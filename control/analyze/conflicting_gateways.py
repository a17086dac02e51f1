"""IST0145 ConflictingGateways: two Gateways select the same gateway workload and declare a server on the
same port with overlapping hosts; Envoy cannot tell which one a request belongs to.

Istio's analyzer: gateway/conflictinggateway.go. Selectors conflict when one is a subset of the other
(they pick the same pods); hosts overlap when equal or one wildcard covers the other.
"""
from __future__ import annotations

from itertools import combinations
from typing import Iterator, Mapping

from control.analyze.index import Index, format_labels, get, hosts_overlap, report, selects
from control.istio import messages as msg
from control.istio.messages import Finding


def _overlapping_selectors(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    small, big = (a, b) if len(a) <= len(b) else (b, a)
    return selects(small, big)


def _servers(gateway) -> list[tuple[int, list[str], int]]:
    out = []
    for i, server in enumerate(get(gateway.spec, "servers", default=())):
        port = get(server, "port", "number")
        hosts = [h.rpartition("/")[2] for h in get(server, "hosts", default=())]
        out.append((port, hosts, i))
    return out


def analyze(index: Index) -> Iterator[Finding]:
    gateways = index.of("Gateway")
    conflicts: dict[int, list[tuple[object, str, int, list[str], int]]] = {}
    servers = {id(g): _servers(g) for g in gateways}
    for a, b in combinations(gateways, 2):
        sel_a, sel_b = dict(get(a.spec, "selector", default={})), dict(get(b.spec, "selector", default={}))
        if not _overlapping_selectors(sel_a, sel_b):
            continue
        for port_a, hosts_a, i in servers[id(a)]:
            for port_b, hosts_b, j in servers[id(b)]:
                if port_a != port_b:
                    continue
                shared = sorted({h for h in hosts_a for g in hosts_b if hosts_overlap(h, g)}
                                | {g for g in hosts_b for h in hosts_a if hosts_overlap(h, g)})
                if shared:
                    conflicts.setdefault(id(a), []).append((a, f"{b.namespace}/{b.name}", port_a, shared, i))
                    conflicts.setdefault(id(b), []).append((b, f"{a.namespace}/{a.name}", port_b, shared, j))
    for entries in conflicts.values():
        for gw, other, port, shared, i in entries:
            yield report(msg.CONFLICTING_GATEWAYS, gw, f"spec.servers[{i}].port", other,
                         format_labels(get(gw.spec, "selector", default={})), port, "[" + " ".join(shared) + "]")
