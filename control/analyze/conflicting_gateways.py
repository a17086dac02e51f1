"""IST0145 ConflictingGateways: Gateways that select the same gateway workload declare servers on the same
port with overlapping hosts; Envoy cannot tell which one a request belongs to.

Istio's analyzer: gateway/conflictinggateway.go. Two selectors pick the same workload when they are equal,
or when one's labels are part of the other's and some workload has them all. Hosts overlap when equal or one
wildcard covers the other (and both servers have the same `bind`). Reported once per Gateway server that
conflicts, naming every Gateway it conflicts with (`ns/name`, sorted, comma-separated) and its own hosts.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from control.analyze.index import Index, format_labels, get, hosts_overlap, report, selects
from control.istio import messages as msg
from control.istio.messages import Finding
from control.istio.resources import Resource


def _same_workload(index: Index, a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    if a == b:
        return True
    if not (selects(a, b) or selects(b, a)):
        return False
    return bool(index.workloads_selected({**a, **b}, None))


def _conflict(server: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Same port, same bind, and a host of one overlapping a host of the other (model.CheckDuplicates)."""
    if get(server, "port", "number") != get(other, "port", "number") or server.get("bind") != other.get("bind"):
        return False
    hosts = [str(h).rpartition("/")[2] for h in get(server, "hosts", default=())]
    others = [str(h).rpartition("/")[2] for h in get(other, "hosts", default=())]
    return any(hosts_overlap(h, o) for h in hosts for o in others)


def _gateway(index: Index, gw: Resource, gateways: list[Resource]) -> Iterator[Finding]:
    selector = dict(get(gw.spec, "selector", default={}) or {})
    peers = [o for o in gateways
             if o is not gw and _same_workload(index, selector, dict(get(o.spec, "selector", default={}) or {}))]
    for i, server in enumerate(get(gw.spec, "servers", default=())):
        names = sorted({f"{o.namespace}/{o.name}" for o in peers
                        if any(_conflict(server, s) for s in get(o.spec, "servers", default=()))})
        if names:
            yield report(msg.CONFLICTING_GATEWAYS, gw, f"spec.servers[{i}].port", ",".join(names),
                         format_labels(selector), get(server, "port", "number"),
                         ",".join(str(h) for h in get(server, "hosts", default=())))


def analyze(index: Index) -> Iterator[Finding]:
    gateways = index.of("Gateway")
    for gw in gateways:
        yield from _gateway(index, gw, gateways)
