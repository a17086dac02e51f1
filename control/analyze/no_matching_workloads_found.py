"""IST0127 NoMatchingWorkloadsFound: a policy's workload selector (AuthorizationPolicy,
RequestAuthentication, PeerAuthentication, Sidecar, Telemetry) matches no workload, so it applies to nothing.

Istio's analyzers: authz/authorizationpolicies.go and the selector checks of the other kinds. A selector in
the root namespace (istio-system) applies mesh-wide, so workloads of every namespace count.
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import ROOT_NAMESPACE, Index, format_labels, get, report
from control.istio import messages as msg
from control.istio.messages import Finding

CODES = (msg.NO_MATCHING_WORKLOADS_FOUND.code,)
_SELECTOR_FIELD = {"AuthorizationPolicy": "selector", "RequestAuthentication": "selector",
                   "PeerAuthentication": "selector", "Telemetry": "selector", "Sidecar": "workloadSelector"}


def analyze(index: Index) -> Iterator[Finding]:
    for kind, field in _SELECTOR_FIELD.items():
        for policy in index.of(kind):
            labels = get(policy.spec, field, "matchLabels")
            if not labels:
                continue
            namespace = None if policy.namespace == ROOT_NAMESPACE else policy.namespace
            if not index.workloads_selected(labels, namespace):
                yield report(msg.NO_MATCHING_WORKLOADS_FOUND, policy, f"spec.{field}.matchLabels",
                             format_labels(labels))
