"""IST0159 ConflictingTelemetryWorkloadSelectors: two or more Telemetries of a namespace select the same workload
(pod), so which one applies is undefined. Also IST0101 for a selector that matches no workload, as Istio's
Telemetry selector analyzer reports it (`Referenced selector not found`).

Istio's analyzer: pkg/config/analysis/analyzers/telemetry/selector.go. Each conflicting Telemetry is reported
once per pod, naming all of them.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from control.analyze.index import Index, format_labels, get, report, selects
from control.istio import messages as msg
from control.istio.messages import Finding
from control.istio.resources import Resource


def analyze(index: Index) -> Iterator[Finding]:
    by_pod: dict[tuple[str, str], list[Resource]] = defaultdict(list)
    for tel in index.of("Telemetry"):
        labels = get(tel.spec, "selector", "matchLabels")
        if not labels:
            continue
        matched = [w for w in index.workloads if w.namespace == tel.namespace and selects(labels, w.labels)]
        if not matched:
            yield report(msg.REFERENCED_RESOURCE_NOT_FOUND, tel, "spec.selector.matchLabels", "selector",
                         format_labels(labels))
        for w in matched:
            by_pod[(w.namespace, w.name)].append(tel)
    for (ns, pod), tels in sorted(by_pod.items()):
        if len(tels) > 1:
            names = "[" + " ".join(f"{t.name}.{t.namespace}" for t in tels) + "]"
            for tel in tels:
                yield report(msg.CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS, tel, "spec.selector", names, ns, pod)
