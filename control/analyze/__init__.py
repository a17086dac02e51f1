"""`meshctl analyze`: Istio's analyzers over loaded resources, one module per message (named after it).

`analyze(resources)` runs every analyzer over an `Index` of the resources and returns the findings sorted
by file and line. Schema problems (IST0106, IST0133, IST0002) come from loading with `strict=True`
(`control.istio.load`); this package adds the cross-resource checks.
"""
from __future__ import annotations

from typing import Sequence

from control.analyze import (
    conflicting_gateways,
    conflicting_mesh_gateway_virtual_service_hosts,
    conflicting_telemetry_workload_selectors,
    destination_rule_subset_not_select_pods,
    gateway_duplicate_certificate,
    invalid_gateway_credential,
    invalid_telemetry_provider,
    merged_destination_rule_ignored,
    multiple_telemetries_without_workload_selectors,
    no_matching_workloads_found,
    no_server_certificate_verification,
    plaintext_to_strict_mtls,
    referenced_resource_not_found,
    unknown_destination_rule_host,
    virtual_service_host_not_found_in_gateway,
    virtual_service_unreachable_rule,
)
from control.analyze.index import Index
from control.istio import messages as msg
from control.istio.messages import Finding, finding
from control.istio.resources import Resource

ANALYZERS = (
    referenced_resource_not_found,
    conflicting_mesh_gateway_virtual_service_hosts,
    no_matching_workloads_found,
    no_server_certificate_verification,
    virtual_service_unreachable_rule,
    virtual_service_host_not_found_in_gateway,
    conflicting_gateways,
    destination_rule_subset_not_select_pods,
    unknown_destination_rule_host,
    merged_destination_rule_ignored,
    invalid_gateway_credential,
    gateway_duplicate_certificate,
    plaintext_to_strict_mtls,
    invalid_telemetry_provider,
    conflicting_telemetry_workload_selectors,
    multiple_telemetries_without_workload_selectors,
)


def analyze(resources: Sequence[Resource]) -> tuple[Finding, ...]:
    latest, findings = dedupe(resources)
    index = Index(latest)
    findings += [f for analyzer in ANALYZERS for f in analyzer.analyze(index)]
    return tuple(sort_findings(findings))


def dedupe(resources: Sequence[Resource]) -> tuple[list[Resource], list[Finding]]:
    """One resource per kind/namespace/name, the last one read winning (as `kubectl apply` of the files in
    order would leave it); each overridden one gets an Info finding."""
    latest: dict[tuple[str, str, str], Resource] = {}
    findings: list[Finding] = []
    for r in resources:
        key = (r.kind, r.namespace, r.name)
        if key in latest:
            old = latest[key]
            findings.append(finding(msg.DUPLICATE_RESOURCE, old.key, str(r.source), file=old.source.file,
                                    line=old.source.line, resource=old.key))
        latest[key] = r
    return list(latest.values()), findings


def sort_findings(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.file, f.line, f.code, f.message))
