"""IST0167 IneffectivePolicy: an AuthorizationPolicy rule uses HTTP-only attributes (hosts, methods, paths,
requestPrincipals, request.headers, request.auth.*) but applies only to TCP ports.

On a TCP filter chain istiod cannot evaluate those attributes (authz model `"<key>" is HTTP only`): an ALLOW
rule using one is dropped (nothing it allows gets through) and a DENY/AUDIT rule loses them (it matches more
than written), which is what `meshctl render` notes for the proxy. Istio reports IST0167 ("The policy has no
impact") for policies it can tell are ineffective; this analyzer applies it to the TCP case the issue names.
The rule's ports are its `to.operation.ports`, else every port of the Services that select the policy's
workloads; a port is TCP when its name or appProtocol says a non-HTTP protocol (Istio's port naming).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from control.analyze.index import ROOT_NAMESPACE, Index, get, report, selects
from control.istio import messages as msg
from control.istio.messages import Finding
from control.registry.model import Protocol

HTTP_ONLY_SOURCE = ("requestPrincipals", "notRequestPrincipals")
HTTP_ONLY_OPERATION = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")


def http_only_fields(rule: Mapping[str, Any]) -> list[str]:
    found = []
    for entry in get(rule, "from", default=()) or ():
        found += [k for k in HTTP_ONLY_SOURCE if get(entry, "source", k)]
    for entry in get(rule, "to", default=()) or ():
        found += [k for k in HTTP_ONLY_OPERATION if get(entry, "operation", k)]
    for cond in get(rule, "when", default=()) or ():
        key = str(get(cond, "key", default=""))
        if key.startswith("request.headers[") or key.startswith("request.auth."):
            found.append(key)
    return list(dict.fromkeys(found))


def _port_protocols(index: Index, pol) -> dict[int, bool]:
    """Service port -> is HTTP, for the Services selecting the policy's workloads."""
    selector = get(pol.spec, "selector", "matchLabels", default=None)
    namespace = None if pol.namespace == ROOT_NAMESPACE else pol.namespace
    workloads = index.workloads_selected(selector or {}, namespace)
    out: dict[int, bool] = {}
    for svc in index.of("Service"):
        sel = get(svc.spec, "selector")
        if not sel or not any(w.namespace == svc.namespace and selects(sel, w.labels) for w in workloads):
            continue
        for p in get(svc.spec, "ports", default=()) or ():
            if not isinstance(p, Mapping) or not isinstance(p.get("port"), int):
                continue
            proto = Protocol.parse(p["appProtocol"]) if p.get("appProtocol") else Protocol.from_port_name(p.get("name"))
            for number in {p["port"], p.get("targetPort")} - {None}:
                if isinstance(number, int):
                    out[number] = out.get(number, False) or proto.is_http or proto == Protocol.UNSUPPORTED
    return out


def analyze(index: Index) -> Iterator[Finding]:
    for pol in index.of("AuthorizationPolicy"):
        action = str(get(pol.spec, "action", default="ALLOW"))
        protocols = None
        for i, rule in enumerate(get(pol.spec, "rules", default=()) or ()):
            fields = http_only_fields(rule or {})
            if not fields:
                continue
            if protocols is None:
                protocols = _port_protocols(index, pol)
            ports = [int(p) for entry in get(rule, "to", default=()) or ()
                     for p in get(entry, "operation", "ports", default=()) or () if str(p).isdigit()]
            ports = ports or sorted(protocols)
            if not ports or any(protocols.get(p, True) for p in ports):
                continue  # some port is HTTP (or unknown): the attributes take effect there
            effect = "the ALLOW rule is dropped there" if action == "ALLOW" else \
                f"the {action} rule ignores them there and matches more"
            yield report(msg.INEFFECTIVE_POLICY, pol, f"spec.rules[{i}]",
                         f"rule {i} uses HTTP-only attributes ({', '.join(fields)}) but applies only to TCP ports "
                         f"({', '.join(str(p) for p in sorted(set(ports)))}): {effect}")
