"""PYM0009 PlaintextToStrictMtls (this project's check): a DestinationRule makes clients send plaintext
(`tls.mode: DISABLE`) or their own one-way TLS (`SIMPLE`) to workloads whose PeerAuthentication is STRICT on
that port. The server side then accepts only Istio mTLS, so every such connection is refused; Istio's former
IST0113 MTLSPolicyConflict covered this before PeerAuthentication replaced the old Policy API.

Checked for the rule's top-level `tls`, each `portLevelSettings[].tls` (for its port) and each subset's `tls`
(for the workloads the subset selects). The workloads behind the host and their effective mode come from the
mesh snapshot and control.translate.authn (the same resolution translation uses). Reported once per rule, tls
location and service port, naming the first STRICT workload's deciding PeerAuthentication.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding
from control.istio.resources import Resource
from control.mesh import MeshSnapshot, build_mesh, resolve_host
from control.registry.base import workload_port
from control.registry.files import RegistryError
from control.translate import authn

PLAINTEXT_MODES = {"DISABLE": "plaintext (tls DISABLE)", "SIMPLE": "one-way TLS (tls SIMPLE)"}


def _tls_locations(dr: Resource) -> Iterator[tuple[str, Mapping[str, Any], int | None, Mapping[str, str] | None]]:
    """(field path, tls, only this port or None, only workloads with these labels or None)."""
    def of(policy: Any, base: str, labels: Mapping[str, str] | None):
        tls = get(policy, "tls")
        if isinstance(tls, Mapping):
            yield f"{base}.tls.mode", tls, None, labels
        for i, entry in enumerate(get(policy, "portLevelSettings", default=())):
            tls = get(entry, "tls")
            if isinstance(tls, Mapping):
                yield (f"{base}.portLevelSettings[{i}].tls.mode", tls, get(entry, "port", "number"), labels)
    yield from of(get(dr.spec, "trafficPolicy"), "spec.trafficPolicy", None)
    for i, subset in enumerate(get(dr.spec, "subsets", default=())):
        yield from of(get(subset, "trafficPolicy"), f"spec.subsets[{i}].trafficPolicy",
                      dict(get(subset, "labels", default={}) or {}))


def _strict_workload(mesh: MeshSnapshot, host: str, port: int | None,
                     labels: Mapping[str, str] | None) -> Iterator[tuple[int, str]]:
    """(service port, deciding PeerAuthentication key) for each service port a STRICT workload serves."""
    for svc in mesh.services_by_host.get(host, ()):
        for sp in svc.ports:
            if port is not None and sp.port != int(port):
                continue
            for ep in mesh.endpoints(svc, sp):
                if labels and not all(ep.labels.get(k) == v for k, v in labels.items()):
                    continue
                number = workload_port(sp, ep.workload)
                merged = authn.compose(mesh, ep.workload)
                if number is not None and merged.for_port(number) == authn.MtlsMode.STRICT:
                    yield sp.port, merged.policies[-1].key
                    break


def analyze(index: Index) -> Iterator[Finding]:
    rules = index.of("DestinationRule")
    if not rules or not index.of("PeerAuthentication"):
        return
    try:
        mesh = build_mesh([r for kind in index.by_kind.values() for r in kind])
    except RegistryError:
        return  # the registry input itself is broken; loading reports that
    for dr in rules:
        host = resolve_host(str(get(dr.spec, "host", default="")), dr.namespace, mesh.config.domain)
        for path, tls, port, labels in _tls_locations(dr):
            mode = str(tls.get("mode") or "DISABLE")
            if mode not in PLAINTEXT_MODES:
                continue
            for service_port, policy in _strict_workload(mesh, host, port, labels):
                yield report(msg.PLAINTEXT_TO_STRICT_MTLS, dr, path, f"{dr.namespace}/{dr.name}",
                             PLAINTEXT_MODES[mode], host, service_port, policy)
