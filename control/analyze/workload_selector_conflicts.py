"""IST0110/IST0111 (Sidecar) and IST0159/IST0160 (Telemetry): several resources of one kind apply to the same
workload, and which one wins is undefined; IST0167 IneffectivePolicy for Sidecars on ambient workloads.

Istio's analyzers: sidecar/selector.go and telemetry/selector.go (two with a selector picking the same pod of
their namespace: ConflictingSidecarWorkloadSelectors / ConflictingTelemetryWorkloadSelectors, reported on each,
once per pod), telemetry/default_selector.go and the Sidecar part of sidecar/selector.go (two without a
selector in one namespace: MultipleSidecars/TelemetriesWithoutWorkloadSelectors). A Sidecar selecting a pod in
ambient mode (annotation ambient.istio.io/redirection: enabled), or without a selector in an ambient
namespace (label istio.io/dataplane-mode: ambient, no injection label), has no effect (IST0167, once).
Names are listed sorted, as Istio's getNames does.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from control.analyze.index import Index, Workload, get, report
from control.istio import messages as msg
from control.istio.messages import Finding, MessageType
from control.istio.resources import Resource

# kind -> (selector labels path, conflict message, no-selector message)
KINDS: dict[str, tuple[tuple[str, ...], MessageType, MessageType]] = {
    "Sidecar": (("workloadSelector", "labels"), msg.CONFLICTING_SIDECAR_SELECTORS, msg.MULTIPLE_SIDECARS_NO_SELECTOR),
    "Telemetry": (("selector", "matchLabels"), msg.CONFLICTING_TELEMETRY_SELECTORS,
                  msg.MULTIPLE_TELEMETRIES_NO_SELECTOR),
}


def pod_in_ambient(workload: Workload) -> bool:
    return workload.resource.kind == "Pod" and \
        workload.resource.annotations.get("ambient.istio.io/redirection") == "enabled"


def namespace_in_ambient(namespace: Resource | None) -> bool:
    if namespace is None or namespace.labels.get("istio-injection") == "enabled" or namespace.labels.get("istio.io/rev"):
        return False
    return namespace.labels.get("istio.io/dataplane-mode") == "ambient"


def _names(resources: list[Resource]) -> str:
    return "[" + " ".join(sorted(r.name for r in resources)) + "]"


def _kind(index: Index, kind: str) -> Iterator[Finding]:
    path, conflicting, unselected = KINDS[kind]
    by_workload: dict[int, tuple[Workload, list[Resource]]] = {}
    without: dict[str, list[Resource]] = defaultdict(list)
    for r in index.of(kind):
        labels = get(r.spec, *path)
        if not labels:
            if kind == "Sidecar" or get(r.spec, path[0]) is None:  # Telemetry: `selector` absent
                without[r.namespace].append(r)
            continue
        for w in index.workloads_selected(labels, r.namespace):
            by_workload.setdefault(id(w), (w, []))[1].append(r)
    ineffective: set[int] = set()

    def no_impact(resources: list[Resource], why: str) -> Iterator[Finding]:
        for r in resources:
            if id(r) not in ineffective:  # once per Sidecar
                ineffective.add(id(r))
                yield report(msg.INEFFECTIVE_POLICY, r, "metadata.name", f"{why}, the policy has no impact")

    for workload, resources in by_workload.values():
        if kind == "Sidecar" and pod_in_ambient(workload):
            yield from no_impact(resources, "selected workload is in ambient mode")
        elif len(resources) > 1:
            for r in resources:
                yield report(conflicting, r, "metadata.name", _names(resources), workload.namespace, workload.name)
    namespaces = {ns.name: ns for ns in index.of("Namespace")}
    for namespace, resources in sorted(without.items()):
        if kind == "Sidecar" and namespace_in_ambient(namespaces.get(namespace)):
            yield from no_impact(resources, "namespace is in ambient mode")
        elif len(resources) > 1:
            for r in resources:
                yield report(unselected, r, "metadata.name", _names(resources), namespace)


def analyze(index: Index) -> Iterator[Finding]:
    for kind in KINDS:
        yield from _kind(index, kind)
