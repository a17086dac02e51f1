"""IST0127 NoMatchingWorkloadsFound: a policy's workload selector (AuthorizationPolicy,
RequestAuthentication, PeerAuthentication) matches no workload, so it applies to nothing; and an
AuthorizationPolicy without a selector in a namespace that has no workload at all.

Istio's analyzer: authz/authorizationpolicies.go (this project applies the same rule to the other security
kinds). A selector in the root namespace (istio-system) applies mesh-wide, so workloads of every namespace
count. Sidecar and Telemetry selectors matching nothing are IST0101 (control.analyze.referenced_resource_not_found),
as Istio reports them.
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
                   "PeerAuthentication": ("selector", "matchLabels")}


def analyze(index: Index) -> Iterator[Finding]:
    for kind, (field, labels_field) in _SELECTOR_FIELD.items():
        for policy in index.of(kind):
            labels = get(policy.spec, field, labels_field)
            namespace = None if policy.namespace == ROOT_NAMESPACE else policy.namespace
            if not labels:
                if kind == "AuthorizationPolicy" and namespace and not index.workloads_selected({}, namespace):
                    yield report(msg.NO_MATCHING_WORKLOADS_FOUND, policy, "metadata.name", "")
                continue
            if not index.workloads_selected(labels, namespace):
                yield report(msg.NO_MATCHING_WORKLOADS_FOUND, policy, f"spec.{field}.{labels_field}",
                             format_labels(labels))
