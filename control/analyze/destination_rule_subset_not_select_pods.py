"""IST0173 DestinationRuleSubsetNotSelectPods: a DestinationRule subset's labels, together with the
Service's selector, match no pod, so traffic routed to that subset fails with 503 UH (no healthy upstream).

Istio's analyzer: destinationrule/subset.go. Checked only for hosts that are Kubernetes Services with a
selector (ServiceEntry hosts have no pods here).
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding


def analyze(index: Index) -> Iterator[Finding]:
    for dr in index.of("DestinationRule"):
        host = get(dr.spec, "host")
        if not isinstance(host, str):
            continue
        services = [s for s in index.find_services(host, dr.namespace) if s.selector]
        if not services:
            continue
        for i, subset in enumerate(get(dr.spec, "subsets", default=())):
            labels = dict(get(subset, "labels", default={}))
            if not any(index.workloads_selected({**svc.selector, **labels}, svc.namespace) for svc in services):
                yield report(msg.DR_SUBSET_NOT_SELECT_PODS, dr, f"spec.subsets[{i}]", get(subset, "name", default=""))
