"""IST0127 NoMatchingWorkloadsFound: a policy's workload selector (AuthorizationPolicy,
RequestAuthentication, PeerAuthentication, Sidecar) matches no workload, so it applies to nothing. (Telemetry's
selector is checked by conflicting_telemetry_workload_selectors, which reports IST0101 as Istio's does.)

Istio's analyzers: authz/authorizationpolicies.go and the selector checks of the other kinds. A selector in
the root namespace (istio-system) applies mesh-wide, so workloads of every namespace count.
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import ROOT_NAMESPACE, Index, format_labels, get, report
from control.istio import messages as msg
from control.istio.messages import Finding

# kind -> (selector field, its labels field): security and telemetry use istio.type.v1beta1.WorkloadSelector
# (`selector.matchLabels`), Sidecar uses networking.v1alpha3.WorkloadSelector (`workloadSelector.labels`).
_SELECTOR_FIELD = {"AuthorizationPolicy": ("selector", "matchLabels"),
                   "RequestAuthentication": ("selector", "matchLabels"),
                   "PeerAuthentication": ("selector", "matchLabels"),
                   "Sidecar": ("workloadSelector", "labels")}


def analyze(index: Index) -> Iterator[Finding]:
    for kind, (field, labels_field) in _SELECTOR_FIELD.items():
        for policy in index.of(kind):
            labels = get(policy.spec, field, labels_field)
            if not labels:
                continue
            namespace = None if policy.namespace == ROOT_NAMESPACE else policy.namespace
            if not index.workloads_selected(labels, namespace):
                yield report(msg.NO_MATCHING_WORKLOADS_FOUND, policy, f"spec.{field}.{labels_field}",
                             format_labels(labels))
