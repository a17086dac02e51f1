"""IST0160 MultipleTelemetriesWithoutWorkloadSelectors: a namespace holds more than one Telemetry without a
`selector` (or `targetRef`); only one namespace-wide (or, in the root namespace, mesh-wide) Telemetry is valid.

Istio's analyzer: pkg/config/analysis/analyzers/telemetry/selector.go. Each of them is reported, naming all.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding
from control.istio.resources import Resource


def has_selector(tel: Resource) -> bool:
    return bool(get(tel.spec, "selector", "matchLabels") or get(tel.spec, "targetRef") or get(tel.spec, "targetRefs"))


def analyze(index: Index) -> Iterator[Finding]:
    by_ns: dict[str, list[Resource]] = defaultdict(list)
    for tel in index.of("Telemetry"):
        if not has_selector(tel):
            by_ns[tel.namespace].append(tel)
    for ns, tels in by_ns.items():
        if len(tels) > 1:
            names = "[" + " ".join(f"{t.name}.{t.namespace}" for t in tels) + "]"
            for tel in tels:
                yield report(msg.MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS, tel, "metadata.name", names, ns)
