"""`meshctl analyze`: Istio's analyzers over loaded resources, one module per message (named after it).

`analyze(resources)` runs every analyzer over an `Index` of the resources and returns the findings sorted
by file and line. Like `istioctl analyze` without a cluster, it adds Istio's default ingress gateway
(control.analyze.default_ingress_gateway) unless `default_ingress=False`, and leaves out resources of the
Kubernetes system namespaces (kube-system, kube-public, kube-node-lease, local-path-storage). Schema problems (IST0106, IST0133, IST0002) come from loading with `strict=True`
(`control.istio.load`); this package adds the cross-resource checks.
"""
from __future__ import annotations

from datetime import datetime
from typing import Sequence

from control.analyze import (
    conflicting_gateways,
    conflicting_mesh_gateway_virtual_service_hosts,
    destination_rule_subset_not_select_pods,
    envoy_filter_patch,
    gateway_duplicate_certificate,
    gateway_port_not_on_service,
    ineffective_policy,
    ingress_route_rules_not_affected,
    invalid_gateway_credential,
    invalid_telemetry_provider,
    jwt_claim_based_routing,
    merged_destination_rule_ignored,
    no_matching_workloads_found,
    no_server_certificate_verification,
    plaintext_to_strict_mtls,
    port_name_convention,
    referenced_internal_gateway,
    referenced_resource_not_found,
    service_entry_addresses,
    unknown_destination_rule_host,
    virtual_service_destination_port_selector_required,
    virtual_service_host_not_found_in_gateway,
    workload_selector_conflicts,
)
from control.analyze.default_ingress_gateway import default_ingress_gateway
from control.analyze.index import Index
from control.istio import messages as msg
from control.istio.messages import Finding, finding
from control.istio.resources import Resource

ANALYZERS = (
    referenced_resource_not_found,
    conflicting_mesh_gateway_virtual_service_hosts,
    no_matching_workloads_found,
    no_server_certificate_verification,
    virtual_service_host_not_found_in_gateway,
    conflicting_gateways,
    destination_rule_subset_not_select_pods,
    unknown_destination_rule_host,
    merged_destination_rule_ignored,
    invalid_gateway_credential,
    gateway_duplicate_certificate,
    plaintext_to_strict_mtls,
    jwt_claim_based_routing,
    ineffective_policy,
    envoy_filter_patch,
    workload_selector_conflicts,
    gateway_port_not_on_service,
    port_name_convention,
    service_entry_addresses,
    virtual_service_destination_port_selector_required,
    ingress_route_rules_not_affected,
    referenced_internal_gateway,
    invalid_telemetry_provider,
)


def analyze(resources: Sequence[Resource], *, default_ingress: bool = True,
            now: datetime | None = None) -> tuple[Finding, ...]:
    """`now` (injected, UTC): certificates outside their validity window at that time are invalid (IST0161);
    None leaves the window unchecked."""
    resources = [r for r in resources if not ignored_namespace(r)]
    defaults = default_ingress_gateway() if default_ingress else ()
    given = {(r.kind, r.namespace, r.name) for r in resources}
    latest, findings = dedupe([d for d in defaults if (d.kind, d.namespace, d.name) not in given] + list(resources))
    index = Index(latest, now)
    findings += [f for analyzer in ANALYZERS for f in analyzer.analyze(index)]
    return tuple(sort_findings(findings))


# Kubernetes' system namespaces, whose resources istioctl analyze leaves out of its input (Istio's
# inject.IgnoredNamespaces, applied by the local analyzer's namespace filter).
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})


def ignored_namespace(r: Resource) -> bool:
    return (r.name if r.kind == "Namespace" else r.namespace) in IGNORED_NAMESPACES


def dedupe(resources: Sequence[Resource]) -> tuple[list[Resource], list[Finding]]:
    """One resource per API group/kind/namespace/name, the last one read winning (as `kubectl apply` of the
    files in order would leave it); each overridden one gets an Info finding. An Istio Gateway and a Gateway API
    Gateway of the same name are two resources."""
    latest: dict[tuple[str, str, str, str], Resource] = {}
    findings: list[Finding] = []
    for r in resources:
        key = (r.group, r.kind, r.namespace, r.name)
        if key in latest:
            old = latest[key]
            findings.append(finding(msg.DUPLICATE_RESOURCE, old.key, str(r.source), file=old.source.file,
                                    line=old.source.line, resource=old.key))
        latest[key] = r
    return list(latest.values()), findings


def sort_findings(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.file, f.line, f.code, f.message))
