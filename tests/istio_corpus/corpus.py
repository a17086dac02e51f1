"""Istio's own analyzer and validation test data, as this project's measuring table.

Two corpora, both copied from istio/istio (Apache-2.0, attribution in each file's header) under `testdata/`:

* `ANALYZER_CASES`: the rows of Istio's `pkg/config/analysis/analyzers/analyzers_test.go` testGrid whose
  analyzer can emit a code this project claims (`CLAIMED`). Istio runs one analyzer per row and compares
  (message type, origin) as a multiset; `meshctl analyze` runs all of its analyzers at once, so each finding
  is attributed to the Istio analyzer that would have produced it (`istio_analyzer`) and only those of the
  row's analyzer are compared. The expected findings are written here from Istio's table.
* `crd_documents()`: every document of `pkg/config/validation/testdata/crds/*-{valid,invalid}.yaml` (the
  CRD schema/CEL corpus), judged as `meshctl validate` judges it (an Error finding = invalid).

Pure apart from reading the files under `testdata/`; `scripts/istio_agreement.py` prints the figures and
`test_istio_agreement.py` turns every row into a test.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from control.analyze import analyze
from control.istio.load import KINDS, VALIDATED_ONLY, load_text, quote_flow_ipv6
from control.istio.messages import Finding, Level
from control.istio.validate import Meta, check_message, metadata_issues

TESTDATA = Path(__file__).parent / "testdata"

# Istio codes `meshctl analyze` claims to produce as Istio does (control/istio/messages.py).
CLAIMED = frozenset({"IST0002", "IST0101", "IST0106", "IST0112", "IST0140", "IST0165", "IST0118", "IST0134", "IST0150", "IST0162", "IST0110", "IST0111", "IST0159", "IST0160", "IST0167", "IST0151", "IST0152", "IST0153", "IST0154", "IST0155", "IST0109", "IST0127", "IST0128", "IST0129", "IST0130", "IST0131", "IST0132",
                     "IST0138", "IST0145", "IST0161", "IST0173", "IST0174"})

# Istio analyzer -> the codes it can emit (its Metadata and the messages its code reports).
ANALYZER_CODES: dict[str, frozenset[str]] = {
    "gateway.IngressGatewayPortAnalyzer": frozenset({"IST0101", "IST0162"}),
    "service.PortNameAnalyzer": frozenset({"IST0118", "IST0150"}),
    "serviceentry.ProtocolAddressesAnalyzer": frozenset({"IST0134"}),
    "gateway.SecretAnalyzer": frozenset({"IST0101", "IST0161"}),
    "gateway.ConflictingGatewayAnalyzer": frozenset({"IST0145"}),
    "gateway.CertificateAnalyzer": frozenset({"IST0138"}),
    "sidecar.SelectorAnalyzer": frozenset({"IST0101", "IST0110", "IST0111", "IST0167"}),
    "telemetry.SelectorAnalyzer": frozenset({"IST0101", "IST0159"}),
    "telemetry.DefaultSelectorAnalyzer": frozenset({"IST0160"}),
    "virtualservice.ConflictingMeshGatewayHostsAnalyzer": frozenset({"IST0109"}),
    "virtualservice.DestinationHostAnalyzer": frozenset({"IST0101", "IST0112", "IST0140"}),
    "virtualservice.DestinationRuleAnalyzer": frozenset({"IST0101"}),
    "virtualservice.GatewayAnalyzer": frozenset({"IST0101", "IST0132", "IST0165"}),
    "authz.AuthorizationPoliciesAnalyzer": frozenset({"IST0101", "IST0127"}),
    "destinationrule.CaCertificateAnalyzer": frozenset({"IST0128", "IST0129"}),
    "destinationrule.PodNotSelectedAnalyzer": frozenset({"IST0173", "IST0174"}),
    "schema.ValidationAnalyzer.VirtualService": frozenset({"IST0106", "IST0130", "IST0131"}),
    "deprecation.FieldAnalyzer": frozenset({"IST0002"}),
    "envoyfilter.EnvoyPatchAnalyzer": frozenset({"IST0151", "IST0152", "IST0153", "IST0154", "IST0155"}),
}


def istio_analyzers(f: Finding) -> frozenset[str]:
    """The Istio analyzers that report what this finding reports (by code, kind and field). A Gateway
    selector matching no pod is reported by two of them; istioctl prints the message once (deduplicated)."""
    kind = f.resource.split(" ", 1)[0]
    if f.code == "IST0101":
        if kind == "Gateway":
            if "credentialName" in f.path:
                return frozenset({"gateway.SecretAnalyzer"})
            return frozenset({"gateway.IngressGatewayPortAnalyzer", "gateway.SecretAnalyzer"})
        if kind == "VirtualService":
            if f.path.startswith("spec.gateways"):
                return frozenset({"virtualservice.GatewayAnalyzer"})
            if f.path.endswith(".subset"):
                return frozenset({"virtualservice.DestinationRuleAnalyzer"})
            return frozenset({"virtualservice.DestinationHostAnalyzer"})
    if f.code in ("IST0110", "IST0111", "IST0167") and kind == "Sidecar":
        return frozenset({"sidecar.SelectorAnalyzer"})
    if f.code in ("IST0101", "IST0127", "IST0110", "IST0159"):
        by_kind = {"Sidecar": "sidecar.SelectorAnalyzer", "Telemetry": "telemetry.SelectorAnalyzer",
                   "AuthorizationPolicy": "authz.AuthorizationPoliciesAnalyzer"}
        return frozenset({by_kind[kind]}) if kind in by_kind else frozenset()
    if f.code in ("IST0130", "IST0131", "IST0106"):  # the schema analyzer of the resource's own kind
        return frozenset({f"schema.ValidationAnalyzer.{kind}"})
    return frozenset(name for name, codes in ANALYZER_CODES.items() if f.code in codes)


@dataclass(frozen=True)
class AnalyzerCase:
    """One row of Istio's testGrid: input files, the analyzer, the (code, origin) findings it expects.
    An origin without a namespace is a resource whose YAML names none ("default" here, as kubectl)."""

    name: str
    files: tuple[str, ...]
    analyzer: str
    expected: tuple[tuple[str, str], ...] = ()
    # a known disagreement with Istio: why (the row is a strict xfail in the tests)
    known_difference: str = ""
    # the disagreement comes from something out of this project's scope (a kind it does not load): the row
    # is left out of the figures, and docs/istio-config.md lists it
    out_of_scope: bool = False

    @property
    def codes(self) -> frozenset[str]:
        return ANALYZER_CODES[self.analyzer] & CLAIMED


def _c(name: str, files: str | Sequence[str], analyzer: str, *expected: tuple[str, str], known: str = "",
       out_of_scope: bool = False) -> AnalyzerCase:
    files = (files,) if isinstance(files, str) else tuple(files)
    return AnalyzerCase(name, files, analyzer, tuple(expected), known, out_of_scope)


IGP, SEC, CGW, CRT = ("gateway.IngressGatewayPortAnalyzer", "gateway.SecretAnalyzer",
                      "gateway.ConflictingGatewayAnalyzer", "gateway.CertificateAnalyzer")
VSH, VSR, VSG, VSC = ("virtualservice.DestinationHostAnalyzer", "virtualservice.DestinationRuleAnalyzer",
                      "virtualservice.GatewayAnalyzer", "virtualservice.ConflictingMeshGatewayHostsAnalyzer")
CAC, PNS = "destinationrule.CaCertificateAnalyzer", "destinationrule.PodNotSelectedAnalyzer"
EFP = "envoyfilter.EnvoyPatchAnalyzer"

ANALYZER_CASES: tuple[AnalyzerCase, ...] = (
    _c("deprecation", "deprecation", "deprecation.FieldAnalyzer",
       ("IST0002", "VirtualService foo/productpage"), ("IST0002", "Sidecar default/no-selector")),
    _c("gatewayNoWorkload", "gateway-no-workload", IGP, ("IST0101", "Gateway httpbin-gateway")),
    _c("gatewayBadPort", "gateway-no-port", IGP, ("IST0162", "Gateway httpbin-gateway")),
    _c("gatewayCorrectPort", "gateway-correct-port", IGP),
    _c("gatewayCustomIngressGateway", "gateway-custom-ingressgateway", IGP),
    _c("gatewayCustomIngressGatewayBadPort", "gateway-custom-ingressgateway-badport", IGP,
       ("IST0162", "Gateway httpbin-gateway")),
    _c("gatewayCustomIngressGatewayBadPortWithoutTarget", "gateway-custom-ingressgateway-badport-notarget", IGP,
       ("IST0162", "Gateway httpbin-gateway")),
    _c("gatewayCustomIngressGatewayTranslation", "gateway-custom-ingressgateway-translation", IGP),
    _c("gatewayServiceMatchPod", "gateway-custom-ingressgateway-svcselector", IGP,
       ("IST0162", "Gateway httpbin8002-gateway")),
    _c("portNameNotFollowConvention", "service-no-port-name", "service.PortNameAnalyzer",
       ("IST0118", "Service my-namespace1/my-service1"), ("IST0118", "Service my-namespace1/my-service1"),
       ("IST0118", "Service my-namespace2/my-service2")),
    _c("namedPort", "service-port-name", "service.PortNameAnalyzer"),
    _c("unnamedPortInSystemNamespace", "service-no-port-name-system-namespace", "service.PortNameAnalyzer"),
    _c("ExternalNameServiceTypeInvalidPortName", "incorrect-port-name-external-name-service-type",
       "service.PortNameAnalyzer",
       ("IST0150", "Service nginx-ns/nginx"), ("IST0150", "Service nginx-ns2/nginx-svc2"),
       ("IST0150", "Service nginx-ns3/nginx-svc3")),
    _c("ExternalNameServiceTypeValidPortName", "correct-port-name-external-name-service-type",
       "service.PortNameAnalyzer"),
    _c("missing Addresses and Protocol in Service Entry", "serviceentry-missing-addresses-protocol",
       "serviceentry.ProtocolAddressesAnalyzer",
       ("IST0134", "ServiceEntry default/service-entry-test-03"),
       ("IST0134", "ServiceEntry default/service-entry-test-04"),
       ("IST0134", "ServiceEntry default/service-entry-test-07")),
    _c("ServiceEntry Addresses Required Lowercase Protocol", "serviceentry-address-required-lowercase",
       "serviceentry.ProtocolAddressesAnalyzer", ("IST0134", "ServiceEntry address-missing-lowercase")),
    _c("ServiceEntry Addresses Required Uppercase Protocol", "serviceentry-address-required-uppercase",
       "serviceentry.ProtocolAddressesAnalyzer", ("IST0134", "ServiceEntry address-missing-uppercase")),
    _c("gatewaySecret", "gateway-secrets", SEC,
       ("IST0101", "Gateway defaultgateway-bogusCredentialName"),
       ("IST0101", "Gateway customgateway-wrongnamespace"),
       ("IST0101", "Gateway bogusgateway")),
    _c("gatewaySecretValidations", "gateway-secrets-validation", SEC,
       ("IST0161", "Gateway defaultgateway-invalid-keys"), ("IST0161", "Gateway defaultgateway-missing-keys"),
       ("IST0161", "Gateway defaultgateway-invalid-cert"), ("IST0161", "Gateway defaultgateway-expired")),
    _c("conflicting gateways detect", "conflicting-gateways", CGW,
       ("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")),
    _c("gateways with different port are non-conflicting", "gateway-different-port", CGW),
    _c("conflicting gateways with multiple port declarations", "conflicting-gateways-multiple-ports", CGW,
       ("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")),
    _c("conflicting gateways detect by sub selector", "conflicting-gateways-subSelector", CGW,
       ("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")),
    _c("conflicting gateways detect: no port", "conflicting-gateways-invalid-port", CGW),
    _c("Analyze conflicting gateway with list type", "analyze-list-type", CGW,
       ("IST0145", "Gateway alpha"), ("IST0145", "Gateway alpha-l"), ("IST0145", "Gateway beta-l")),
    _c("sidecarDefaultSelector", "sidecar-default-selector", "sidecar.SelectorAnalyzer",
       ("IST0111", "Sidecar ns2/has-conflict-2"), ("IST0111", "Sidecar ns2/has-conflict-1"),
       ("IST0167", "Sidecar ns-ambient/namespace-scoped"), ("IST0167", "Sidecar ns-ambient/pod-scoped")),
    _c("sidecarSelector", "sidecar-selector", "sidecar.SelectorAnalyzer",
       ("IST0101", "Sidecar default/maps-to-nonexistent"), ("IST0101", "Sidecar other/maps-to-different-ns"),
       ("IST0110", "Sidecar default/dupe-1"), ("IST0110", "Sidecar default/dupe-2"),
       ("IST0110", "Sidecar default/overlap-1"), ("IST0110", "Sidecar default/overlap-2")),
    _c("telemetrySelector", "telemetry-selector", "telemetry.SelectorAnalyzer",
       ("IST0101", "Telemetry default/maps-to-nonexistent"), ("IST0101", "Telemetry other/maps-to-different-ns"),
       ("IST0159", "Telemetry default/dupe-1"), ("IST0159", "Telemetry default/dupe-2"),
       ("IST0159", "Telemetry default/overlap-1"), ("IST0159", "Telemetry default/overlap-2")),
    _c("telemetryDefaultSelector", "telemetry-default-selector", "telemetry.DefaultSelectorAnalyzer",
       ("IST0160", "Telemetry ns2/has-conflict-2"), ("IST0160", "Telemetry ns2/has-conflict-1")),
    _c("virtualServiceConflictingMeshGatewayHosts", "virtualservice_conflictingmeshgatewayhosts", VSC,
       ("IST0109", "VirtualService team3/ratings"), ("IST0109", "VirtualService team4/ratings"),
       ("IST0109", "VirtualService foo/ratings"), ("IST0109", "VirtualService bar/ratings"),
       ("IST0109", "VirtualService foo/productpage"), ("IST0109", "VirtualService foo/bogus-productpage"),
       ("IST0109", "VirtualService team2/ratings")),
    _c("virtualServiceConflictingMeshGatewayHostsWithExportTo",
       "virtualservice_conflictingmeshgatewayhosts_with_exportto", VSC,
       ("IST0109", "VirtualService foo/productpage"), ("IST0109", "VirtualService bar/productpage"),
       ("IST0109", "VirtualService foo/productpage-c"), ("IST0109", "VirtualService bar/productpage-c"),
       ("IST0109", "VirtualService foo/productpage-d"), ("IST0109", "VirtualService bar/productpage-d")),
    _c("virtualServiceDestinationHosts", "virtualservice_destinationhosts", VSH,
       ("IST0101", "VirtualService default/reviews-bogushost"),
       ("IST0101", "VirtualService default/reviews-bogushost"),
       ("IST0101", "VirtualService default/reviews-bookinfo-other"),
       ("IST0101", "VirtualService default/reviews-mirror-bogushost"),
       ("IST0101", "VirtualService default/reviews-bogusport"),
       ("IST0112", "VirtualService default/reviews-2port-missing"),
       ("IST0101", "VirtualService istio-system/cross-namespace-details"),
       ("IST0101", "VirtualService hello/hello-export-to-bogus")),
    _c("virtualServiceDestinationRules", "virtualservice_destinationrules", VSR,
       ("IST0101", "VirtualService default/reviews-bogussubset"),
       ("IST0101", "VirtualService default/reviews-mirror-bogussubset")),
    _c("virtualServiceGateways", "virtualservice_gateways", VSG,
       ("IST0101", "VirtualService httpbin-bogus"), ("IST0132", "VirtualService default/cross-test"),
       ("IST0132", "VirtualService httpbin-bogus"), ("IST0132", "VirtualService httpbin")),
    _c("virtualServiceKubernetesGateways", "virtualservice_kubernetes_gateways", VSG,
       ("IST0132", "VirtualService default/my-vs-host-mismatch")),
    _c("virtualServiceInternalGatewayRef", "virtualservice_internal_gateway_ref", VSG,
       ("IST0165", "VirtualService httpbin")),
    _c("Route Rule no effect on Ingress", "virtualservice_route_rule_no_effects_ingress", VSH,
       ("IST0140", "VirtualService default/testing-service-01-test-01")),
    _c("host defined in virtualservice not found in the gateway", "virtualservice_host_not_found_gateway", VSG,
       ("IST0132", "VirtualService default/testing-service-02-test-01"),
       ("IST0132", "VirtualService default/testing-service-02-test-02"),
       ("IST0132", "VirtualService default/testing-service-02-test-03"),
       ("IST0132", "VirtualService default/testing-service-03-test-04")),
    _c("host defined in virtualservice not found in the gateway(beta version)",
       "virtualservice_host_not_found_gateway_beta", VSG,
       ("IST0132", "VirtualService default/testing-service-02-test-01"),
       ("IST0132", "VirtualService default/testing-service-02-test-02"),
       ("IST0132", "VirtualService default/testing-service-02-test-03"),
       ("IST0132", "VirtualService default/testing-service-03-test-04")),
    _c("host defined in virtualservice not found in the gateway with ns",
       "virtualservice_host_not_found_gateway_with_ns_prefix", VSG,
       ("IST0132", "VirtualService default/testing-service-01-test-01")),
    _c("host defined in virtualservice not found in the gateway with ns(beta version)",
       "virtualservice_host_not_found_gateway_with_ns_prefix_beta", VSG,
       ("IST0132", "VirtualService default/testing-service-01-test-01")),
    _c("authorizationpolicies", "authorizationpolicies", "authz.AuthorizationPoliciesAnalyzer",
       ("IST0127", "AuthorizationPolicy istio-system/meshwide-httpbin-v1"),
       ("IST0127", "AuthorizationPolicy httpbin-empty/httpbin-empty-namespace-wide"),
       ("IST0127", "AuthorizationPolicy httpbin/httpbin-nopods"),
       ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
       ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
       ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-not-ns"),
       ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-not-ns"),
       ("IST0127", "AuthorizationPolicy test-ambient/no-workload")),
    _c("destinationrule with no cacert, simple at destinationlevel", "destinationrule-simple-destination", CAC,
       ("IST0128", "DestinationRule db-tls")),
    _c("destinationrule with no cacert, mutual at destinationlevel", "destinationrule-mutual-destination", CAC,
       ("IST0128", "DestinationRule db-mtls")),
    _c("destinationrule with no cacert, simple at portlevel", "destinationrule-simple-port", CAC,
       ("IST0129", "DestinationRule db-tls")),
    _c("destinationrule with credentialname, simple at destinationlevel, no workloadSelector",
       "destinationrule-simple-destination-credentialname", CAC, ("IST0128", "DestinationRule db-tls")),
    _c("destinationrule with credentialname, simple at destinationlevel, workloadSelector",
       "destinationrule-simple-destination-credentialname-selector", CAC),
    _c("destinationrule with credentialname, simple at portlevel, no workloadSelector",
       "destinationrule-simple-port-credentialname", CAC, ("IST0129", "DestinationRule db-tls")),
    _c("destinationrule with credentialname, simple at portlevel, workloadSelector",
       "destinationrule-simple-port-credentialname-selector", CAC),
    _c("destinationrule with no cacert, mutual at portlevel", "destinationrule-mutual-port", CAC,
       ("IST0129", "DestinationRule db-mtls")),
    _c("destinationrule with no cacert, mutual at destinationlevel and simple at port level",
       "destinationrule-compound-simple-mutual", CAC,
       ("IST0128", "DestinationRule db-mtls"), ("IST0129", "DestinationRule db-mtls")),
    _c("destinationrule with no cacert, simple at destinationlevel and mutual at port level",
       "destinationrule-compound-mutual-simple", CAC,
       ("IST0129", "DestinationRule db-mtls"), ("IST0128", "DestinationRule db-mtls")),
    _c("destinationrule with both cacerts", "destinationrule-with-ca", CAC),
    _c("dupmatches", ("virtualservice_dupmatches", "virtualservice_overlappingmatches"),
       "schema.ValidationAnalyzer.VirtualService",
       ("IST0130", "VirtualService duplicate-match"), ("IST0130", "VirtualService foo/sample-foo-cluster01"),
       ("IST0131", "VirtualService almost-duplicate-match"), ("IST0131", "VirtualService duplicate-match"),
       ("IST0130", "VirtualService duplicate-tcp-match"), ("IST0130", "VirtualService duplicate-empty-tcp"),
       ("IST0131", "VirtualService almost-duplicate-tcp-match"), ("IST0131", "VirtualService duplicate-tcp-match"),
       ("IST0130", "VirtualService none/tls-routing"), ("IST0131", "VirtualService none/tls-routing-almostmatch"),
       ("IST0131", "VirtualService none/tls-routing"), ("IST0131", "VirtualService non-method-get"),
       ("IST0131", "VirtualService overlapping-in-single-match"),
       ("IST0131", "VirtualService overlapping-in-two-matches"),
       ("IST0131", "VirtualService overlapping-mathes-with-different-methods")),
    _c("certificate duplication in Gateway", "gateway-duplicate-certificate", CRT,
       ("IST0138", "Gateway istio-system/gateway-01-test-01"), ("IST0138", "Gateway istio-system/gateway-02-test-01"),
       ("IST0138", "Gateway istio-system/gateway-01-test-02"), ("IST0138", "Gateway default/gateway-01-test-03")),
    _c("EnvoyFilterUsesRelativeOperation", "relative-envoy-filter-operation", EFP,
       ("IST0151", "EnvoyFilter bookinfo/test-relative-1"), ("IST0151", "EnvoyFilter bookinfo/test-relative-2"),
       ("IST0151", "EnvoyFilter bookinfo/test-relative-3"), ("IST0155", "EnvoyFilter bookinfo/test-relative-3")),
    _c("EnvoyFilterFilterChainMatch", "envoy-filter-filterchain", EFP),
    _c("EnvoyFilterUsesAbsoluteOperation", "absolute-envoy-filter-operation", EFP),
    _c("EnvoyFilterUsesReplaceOperation", "envoy-filter-replace-operation", EFP,
       ("IST0152", "EnvoyFilter bookinfo/test-replace-1"), ("IST0155", "EnvoyFilter bookinfo/test-replace-3"),
       ("IST0151", "EnvoyFilter bookinfo/test-replace-3")),
    _c("EnvoyFilterUsesAddOperation", "envoy-filter-add-operation", EFP,
       ("IST0153", "EnvoyFilter bookinfo/test-auth-2"), ("IST0153", "EnvoyFilter bookinfo/test-auth-3")),
    _c("EnvoyFilterUsesRemoveOperation", "envoy-filter-remove-operation", EFP,
       ("IST0151", "EnvoyFilter bookinfo/test-remove-1"), ("IST0154", "EnvoyFilter bookinfo/test-remove-2"),
       ("IST0154", "EnvoyFilter bookinfo/test-remove-3"), ("IST0151", "EnvoyFilter bookinfo/test-remove-5")),
    _c("DestinationRuleWithFakeHost", "destinationrule-with-fake-host", PNS,
       ("IST0174", "DestinationRule default/fake-host")),
    _c("DestinationRuleSubsetsNotSelectPods", "destinationrule-subsets-not-select-pods", PNS,
       ("IST0173", "DestinationRule default/subsets-not-select-pods")),
    _c("DestinationRuleSubsetsWithTopologyLabels", "destinationrule-subsets-with-topology-labels", PNS),
    _c("DestinationRuleEmptyTopologyLabels", "destinationrule-empty-topology-labels", PNS,
       ("IST0173", "DestinationRule default/empty-topology-labels")),
)


def normalize_origin(origin: str) -> str:
    """Istio's FriendlyName without a namespace is a resource whose YAML names none: "default" here."""
    kind, _, name = origin.partition(" ")
    return origin if "/" in name else f"{kind} default/{name}"


def load_and_analyze(paths: Iterable[Path]) -> tuple[Finding, ...]:
    """What `meshctl analyze FILES` finds: loading (strict) findings and the analyzers' findings."""
    resources, findings = [], []
    for path in paths:
        result = load_text(path.read_text(), str(path), strict=True, keep_invalid=True)
        resources += result.resources
        findings += result.findings
    return tuple(findings) + analyze(resources, now=datetime.now(timezone.utc))  # Istio's test uses the clock


@dataclass
class Outcome:
    """A row's comparison: the (code, origin) multisets Istio expects and meshctl gives, in the row's scope."""

    expected: Counter = field(default_factory=Counter)
    actual: Counter = field(default_factory=Counter)

    @property
    def missed(self) -> Counter:
        return self.expected - self.actual

    @property
    def extra(self) -> Counter:
        return self.actual - self.expected

    @property
    def agrees(self) -> bool:
        return self.expected == self.actual


def run_case(case: AnalyzerCase) -> Outcome:
    findings = load_and_analyze(TESTDATA / "analyzers" / f"{f}.yaml" for f in case.files)
    out = Outcome()
    out.expected.update((code, normalize_origin(o)) for code, o in case.expected if code in case.codes)
    # Istio's test sources have no file reference, so its SortedDedupedCopy folds messages with the same text on
    # the same resource into one (istioctl on files keeps them apart by line, as meshctl does)
    shown = {(f.code, f.resource, f.message) for f in findings
             if f.code in case.codes and case.analyzer in istio_analyzers(f)}
    out.actual.update((code, resource) for code, resource, _ in shown)
    return out


@dataclass(frozen=True)
class CrdDocument:
    """One document of Istio's CRD corpus: its kind, whether Istio accepts it, and its text (`_err` removed)."""

    file: str
    index: int
    kind: str
    valid: bool
    text: str
    istio_error: str  # the `_err` Istio expects, for invalid documents

    @property
    def id(self) -> str:
        return f"{self.file}#{self.index}"


def crd_documents() -> list[CrdDocument]:
    """Every document, kept as written (not re-serialized: YAML typing such as `001:db8::` matters)."""
    docs = []
    for path in sorted((TESTDATA / "crds").glob("*.yaml")):
        valid = path.stem.endswith("-valid")
        chunks = [c for c in re.split(r"^---[ \t]*$", path.read_text(), flags=re.M) if yaml.safe_load(c)]
        for i, chunk in enumerate(chunks):
            err = re.search(r"^_err:[ \t]*(.*)$", chunk, flags=re.M)
            text = chunk[:err.start()] + chunk[err.end():] if err else chunk
            kind = yaml.safe_load(text).get("kind")
            docs.append(CrdDocument(path.name, i, str(kind), valid, text,
                                    err.group(1).strip("'\"") if err else ""))
    return docs


def validate_document(doc: CrdDocument) -> tuple[bool, bool, tuple[Finding, ...]]:
    """(loaded, judged valid, findings) as `meshctl validate -f` would give for the document alone."""
    result = load_text(doc.text, doc.id, strict=True)
    errors = tuple(f for f in result.findings if f.level >= Level.ERROR)
    body = yaml.safe_load(quote_flow_ipv6(doc.text))
    group = str(body.get("apiVersion", "")).rpartition("/")[0]
    loaded = (group, doc.kind) in KINDS or (group, doc.kind) in VALIDATED_ONLY
    return loaded, not errors, result.findings


# The CRD corpus files of kinds meshctl loads, or validates without serving (EnvoyFilter, ProxyConfig,
# WasmPlugin, WorkloadGroup: control.istio.load.VALIDATED_ONLY).
LOADED_CRD_KINDS = frozenset({"AuthorizationPolicy", "DestinationRule", "PeerAuthentication",
                              "RequestAuthentication", "ServiceEntry", "Telemetry", "WorkloadEntry",
                              "EnvoyFilter", "ProxyConfig", "WasmPlugin", "WorkloadGroup"})


@dataclass(frozen=True)
class ValidationCase:
    """One row of Istio's pkg/config/validation/validation_test.go tables (testdata/validation/, ported by
    scripts/port_istio_validation_tables.py): the input as YAML, the message it is, Istio's verdict."""

    table: str
    index: int
    name: str
    message: str
    valid: bool
    spec: Any
    warning: bool | None = None  # Istio's verdict also carries a warning (None: the table does not say)
    # the config metadata Istio's test gives the input (name, namespace, labels, annotations), where the
    # table sets it
    metadata: Any = None

    @property
    def meta(self) -> Meta:
        m = self.metadata or {}
        return Meta(str(m.get("name", "")), str(m.get("namespace", "")), m.get("labels") or {},
                    m.get("annotations") or {})

    @property
    def id(self) -> str:
        return f"{self.table}#{self.index} {self.name}"

    @property
    def go_only(self) -> str:
        return GO_ONLY_CASES.get(f"{self.table}: {self.name}", "")


# Cases whose Go input has no YAML equivalent, left out of the figures (strict xfail in the tests), by table
# and case name: a nil element in a Go slice is `null` in YAML, which the CRD schema and meshctl refuse
# ("list entries cannot be null"), while Istio's Go validation skips it; and an empty JWT issuer.
GO_ONLY_CASES: dict[str, str] = {
    **{f"TestValidateHTTPRoute: {name}": "a Go nil match element; as YAML `null` the CRD schema refuses it too"
       for name in ("match with nil element", "valid mirror percentage", "mirrors valid mirror percentage")},
    "TestValidateRequestAuthentication: empty issuer and set jwksUri":
        "an empty issuer passes Istio's Go validation, but the CRD's `issuer` minLength 1 refuses it (as meshctl "
        "does)",
}


def validation_cases() -> list[ValidationCase]:
    cases = []
    for path in sorted((TESTDATA / "validation").glob("*.yaml")):
        for i, doc in enumerate(d for d in yaml.safe_load_all(path.read_text()) if d):
            cases.append(ValidationCase(path.stem, i, str(doc["case"]), doc["message"], bool(doc["valid"]),
                                        doc["spec"], doc.get("warning"), doc.get("metadata")))
    return cases


def judge_validation_case(case: ValidationCase) -> tuple[bool, list[str]]:
    """(meshctl accepts it, the errors) as `meshctl validate` would judge the message: an error or an unknown
    field (strict) rejects."""
    _, issues = check_message(case.message, case.spec, meta=case.meta)
    issues += metadata_issues(case.message, case.spec, case.meta)
    errors = [f"{i.path}: {i.text}" for i in issues if i.kind in ("error", "unknown")]
    return not errors, errors


# Deprecated fields Istio reports only through its deprecation analyzer (IST0002 in `istioctl analyze`,
# pkg/config/analysis/analyzers/deprecation), not as validation warnings; meshctl reports them as IST0002 too.
ANALYZER_ONLY_DEPRECATIONS = (".outboundTrafficPolicy.egressProxy", ".fault.delay.percent")


def validation_warnings(case: ValidationCase) -> list[str]:
    """The warnings meshctl gives where Istio's validation warns: schema warnings (IST0133), deprecations
    (IST0002) but those only Istio's analyzer reports, and unused VirtualService rules/matches
    (IST0130/IST0131); this project's own notes (unsupported fields, relative weights) are not Istio's warnings."""
    _, issues = check_message(case.message, case.spec, meta=case.meta)
    return [f"{i.path}: {i.text}" for i in issues if i.kind in ("warning", "deprecated", "unreachable", "ineffective")
            and not (i.kind == "deprecated" and i.path.endswith(ANALYZER_ONLY_DEPRECATIONS))]
