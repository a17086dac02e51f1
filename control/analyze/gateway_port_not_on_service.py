"""IST0162 GatewayPortNotDefinedOnService: a Gateway server listens on a port that no Service in front of its
workloads exposes, so the port cannot be reached through the gateway Service.

Istio's analyzer: gateway/gateway.go (IngressGatewayPortAnalyzer). For the workloads the Gateway's selector
picks, the Services of their namespace that select them contribute their TCP ports: the `targetPort` when it
is a number (and the port itself as mapped to it), else the `port`. A server port among neither is reported.
A selector that picks no workload is IST0101 (control.analyze.referenced_resource_not_found).
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import Index, format_labels, get, report, selects
from control.istio import messages as msg
from control.istio.messages import Finding


def reachable_ports(index: Index, selector) -> set[int]:
    ports: set[int] = set()
    for workload in index.workloads_selected(selector, None):
        for svc in index.services:
            if svc.resource.kind != "Service" or svc.namespace != workload.namespace or not svc.selector \
                    or not selects(svc.selector, workload.labels):
                continue
            for port in get(svc.resource.spec, "ports", default=()):
                if str(get(port, "protocol", default="TCP") or "TCP").upper() != "TCP":
                    continue
                target = get(port, "targetPort")
                if isinstance(target, int) and target:
                    ports.add(target)
                    ports.add(get(port, "port"))  # Istio's portMapping: the service port maps to the target
                else:
                    ports.add(get(port, "port"))
    return ports


def analyze(index: Index) -> Iterator[Finding]:
    for gw in index.of("Gateway"):
        selector = get(gw.spec, "selector")
        if not selector or not index.workloads_selected(selector, None):
            continue
        ports = reachable_ports(index, selector)
        for i, server in enumerate(get(gw.spec, "servers", default=())):
            number = get(server, "port", "number")
            if number is not None and number not in ports:
                yield report(msg.GATEWAY_PORT_NOT_ON_SERVICE, gw, f"spec.servers[{i}].port.number", number,
                             format_labels(selector))
