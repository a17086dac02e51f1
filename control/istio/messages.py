"""Findings and the message catalogue: Istio's analyzer messages (`istioctl analyze` codes, names, levels)
plus the few this project adds for loading (file errors, ignored kinds, unsupported fields).

Istio's codes, names, levels and templates are those of istio/istio `pkg/config/analysis/msg/messages.yaml`.
Our own codes use the `PYM` prefix so they never collide with Istio's `IST` range.

A `Finding` is what every stage produces: a level, a message type, the text, and where it points
(file, line, `Kind namespace/name`, field path). `str(finding)` is istioctl's log line:
    Error [IST0101] (VirtualService default/reviews file.yaml:12) Referenced host not found: "x"
"""
from __future__ import annotations

import enum
import string
from dataclasses import dataclass


class Level(enum.IntEnum):
    """istioctl's diag levels, ordered so thresholds compare (`--failure-threshold Warning`)."""

    INFO = 0
    WARNING = 1
    ERROR = 2

    @property
    def label(self) -> str:  # "Info" / "Warning" / "Error", as istioctl prints them
        return self.name.capitalize()

    @classmethod
    def parse(cls, text: str) -> "Level":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown level {text!r} (want Info, Warning or Error)") from None


@dataclass(frozen=True, slots=True)
class MessageType:
    code: str
    name: str
    level: Level
    template: str  # printf-style like Istio's ("%s", "%q" is written as "%r"-ish quoting by `render`)


_m = MessageType  # a short name for the catalogue below


# Istio's messages this project produces (subset of messages.yaml; same codes, names, levels, text).
INTERNAL_ERROR = _m("IST0001", "InternalError", Level.ERROR, "Internal error: {0}")
DEPRECATED = _m("IST0002", "Deprecated", Level.WARNING, "Deprecated: {0}")
REFERENCED_RESOURCE_NOT_FOUND = _m("IST0101", "ReferencedResourceNotFound", Level.ERROR,
                                   "Referenced {0} not found: {1!q}")
SCHEMA_VALIDATION_ERROR = _m("IST0106", "SchemaValidationError", Level.ERROR, "Schema validation error: {0}")
CONFLICTING_MESH_GATEWAY_VS_HOSTS = _m(
    "IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Level.ERROR,
    "The VirtualServices {0} associated with mesh gateway define the same host {1} which can lead to "
    "undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.")
NO_MATCHING_WORKLOADS_FOUND = _m("IST0127", "NoMatchingWorkloadsFound", Level.WARNING,
                                 "No matching workloads for this resource with the following labels: {0}")
INVALID_TELEMETRY_PROVIDER = _m("IST0157", "InvalidTelemetryProvider", Level.WARNING,
                                "The Telemetry {0} in namespace {1!q} with empty providers will be ignored.")
NO_SERVER_CERT_VERIFICATION_DESTINATION = _m(
    "IST0128", "NoServerCertificateVerificationDestinationLevel", Level.WARNING,
    "DestinationRule {0} in namespace {1} has TLS mode set to {2} but no caCertificates are set to validate "
    "server identity for host: {3}")
NO_SERVER_CERT_VERIFICATION_PORT = _m(
    "IST0129", "NoServerCertificateVerificationPortLevel", Level.WARNING,
    "DestinationRule {0} in namespace {1} has TLS mode set to {2} but no caCertificates are set to validate "
    "server identity for host: {3} at port {4}")
GATEWAY_DUPLICATE_CERTIFICATE = _m(
    "IST0138", "GatewayDuplicateCertificate", Level.WARNING,
    "Duplicate certificate in multiple gateways {0} may cause 404s if clients re-use HTTP2 connections.")
VS_UNREACHABLE_RULE = _m("IST0130", "VirtualServiceUnreachableRule", Level.WARNING,
                         "VirtualService rule {0} not used ({1}).")
VS_INEFFECTIVE_MATCH = _m("IST0131", "VirtualServiceIneffectiveMatch", Level.INFO,
                          "VirtualService rule {0} match {1} is not used (duplicate/overlapping match in rule {2}).")
VS_HOST_NOT_FOUND_IN_GATEWAY = _m("IST0132", "VirtualServiceHostNotFoundInGateway", Level.WARNING,
                                  "one or more host {0} defined in VirtualService {1} not found in Gateway {2}.")
SCHEMA_WARNING = _m("IST0133", "SchemaWarning", Level.WARNING, "Schema validation warning: {0}")
JWT_CLAIM_ROUTING_WITHOUT_REQUEST_AUTHN = _m(
    "IST0149", "JwtClaimBasedRoutingWithoutRequestAuthN", Level.ERROR,
    "The virtual service uses the JWT claim based routing (key: {0}) but found no request authentication for the "
    "gateway ({1}) pod ({2}). The request authentication must first be applied for the gateway pods to validate "
    "the JWT token and make the claims available for routing.")
INEFFECTIVE_POLICY = _m("IST0167", "IneffectivePolicy", Level.WARNING, "The policy has no impact: {0}.")
CONFLICTING_GATEWAYS = _m("IST0145", "ConflictingGateways", Level.ERROR,
                          "Conflict with gateways {0} (workload selector {1}, port {2}, hosts {3}).")
INVALID_GATEWAY_CREDENTIAL = _m(
    "IST0161", "InvalidGatewayCredential", Level.ERROR,
    "The credential referenced by the Gateway {0} in namespace {1} is invalid, which can cause the traffic not "
    "to work as expected.")
CONFLICTING_SIDECAR_SELECTORS = _m(
    "IST0110", "ConflictingSidecarWorkloadSelectors", Level.ERROR,
    "The Sidecars {0} in namespace {1!q} select the same workload pod {2!q}, which can lead to undefined behavior.")
MULTIPLE_SIDECARS_NO_SELECTOR = _m(
    "IST0111", "MultipleSidecarsWithoutWorkloadSelectors", Level.ERROR,
    "The Sidecars {0} in namespace {1!q} have no workload selector, which can lead to undefined behavior.")
CONFLICTING_TELEMETRY_SELECTORS = _m(
    "IST0159", "ConflictingTelemetryWorkloadSelectors", Level.ERROR,
    "The Telemetries {0} in namespace {1!q} select the same workload pod {2!q}, which can lead to undefined "
    "behavior.")
MULTIPLE_TELEMETRIES_NO_SELECTOR = _m(
    "IST0160", "MultipleTelemetriesWithoutWorkloadSelectors", Level.ERROR,
    "The Telemetries {0} in namespace {1!q} have no workload selector, which can lead to undefined behavior.")
PORT_NAME_NOT_UNDER_NAMING_CONVENTION = _m(
    "IST0118", "PortNameIsNotUnderNamingConvention", Level.INFO,
    "Port name {0} (port: {1}, targetPort: {2}) doesn't follow the naming convention of Istio port.")
SERVICE_ENTRY_ADDRESSES_REQUIRED = _m("IST0134", "ServiceEntryAddressesRequired", Level.WARNING,
                                      "ServiceEntry addresses are required for this protocol.")
EXTERNAL_NAME_INVALID_PORT_NAME = _m(
    "IST0150", "ExternalNameServiceTypeInvalidPortName", Level.WARNING,
    "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for "
    "ports serving TCP protocol from being forwarded correctly")
GATEWAY_PORT_NOT_ON_SERVICE = _m(
    "IST0162", "GatewayPortNotDefinedOnService", Level.WARNING,
    "The gateway is listening on a target port (port {0}) that is not defined in the Service associated with its "
    "workload instances (Pod selector {1}). If you need to access the gateway port through the gateway Service, "
    "it will not be available.")
VS_DESTINATION_PORT_SELECTOR_REQUIRED = _m(
    "IST0112", "VirtualServiceDestinationPortSelectorRequired", Level.ERROR,
    "This VirtualService routes to a service {0!q} that exposes multiple ports {1}. Specifying a port in the "
    "destination is required to disambiguate.")
INGRESS_ROUTE_RULES_NOT_AFFECTED = _m("IST0140", "IngressRouteRulesNotAffected", Level.WARNING,
                                      "Subset in virtual service {0} has no effect on ingress gateway {1} requests")
REFERENCED_INTERNAL_GATEWAY = _m(
    "IST0165", "ReferencedInternalGateway", Level.WARNING,
    "Gateway reference in VirtualService {0} is to an implementation-generated internal Gateway: {1}.")
ENVOY_FILTER_RELATIVE_OPERATION = _m(
    "IST0151", "EnvoyFilterUsesRelativeOperation", Level.WARNING,
    "This EnvoyFilter does not have a priority and has a relative patch operation set which can cause the "
    "EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD option or setting the priority may help in "
    "ensuring the EnvoyFilter is applied correctly.")
ENVOY_FILTER_REPLACE_INCORRECTLY = _m("IST0152", "EnvoyFilterUsesReplaceOperationIncorrectly", Level.ERROR,
                                      "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER.")
ENVOY_FILTER_ADD_INCORRECTLY = _m(
    "IST0153", "EnvoyFilterUsesAddOperationIncorrectly", Level.ERROR,
    "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.")
ENVOY_FILTER_REMOVE_INCORRECTLY = _m(
    "IST0154", "EnvoyFilterUsesRemoveOperationIncorrectly", Level.ERROR,
    "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.")
ENVOY_FILTER_RELATIVE_WITH_PROXY_VERSION = _m(
    "IST0155", "EnvoyFilterUsesRelativeOperationWithProxyVersion", Level.WARNING,
    "This EnvoyFilter does not have a priority and has a relative patch operation (NSTERT_BEFORE/AFTER, REPLACE, "
    "MERGE, DELETE) and proxyVersion set which can cause the EnvoyFilter not to be applied during an upgrade. "
    "Using the INSERT_FIRST or ADD option or setting the priority may help in ensuring the EnvoyFilter is "
    "applied correctly.")
DR_SUBSET_NOT_SELECT_PODS = _m(
    "IST0173", "DestinationRuleSubsetNotSelectPods", Level.ERROR,
    "The Subset {0} defined in the DestinationRule does not select any pods. Which may lead to 503 UH "
    "(NoHealthyUpstream).")
UNKNOWN_DR_HOST = _m("IST0174", "UnknownDestinationRuleHost", Level.WARNING,
                     "The host {0} defined in the DestinationRule does not match any services in the mesh.")

# This project's own messages (not Istio's): loading and support.
FILE_ERROR = _m("PYM0001", "FileError", Level.ERROR, "{0}")
YAML_SYNTAX_ERROR = _m("PYM0002", "YAMLSyntaxError", Level.ERROR, "YAML syntax error: {0}")
IGNORED_KIND = _m("PYM0003", "IgnoredKind", Level.INFO, "{0}")
UNSUPPORTED_FIELD = _m("PYM0004", "UnsupportedField", Level.WARNING,
                       "{0} is accepted by Istio but not supported by pyproxy mesh yet; it is ignored")
UNKNOWN_FIELD_DROPPED = _m("PYM0005", "UnknownFieldDropped", Level.WARNING, "{0}")
DUPLICATE_RESOURCE = _m("PYM0006", "DuplicateResource", Level.INFO, "{0} is defined again at {1}; the later one wins")
MERGED_DESTINATION_RULES = _m(
    "PYM0007", "MergedDestinationRuleIgnored", Level.WARNING,
    "DestinationRules {0} for host {1} in namespace {2} are merged (istiod's mergeDestinationRule, in "
    "creation order): {3}. Put the host's policy in one DestinationRule.")
LIMIT_EXCEEDED = _m("PYM0008", "ConfigLimitExceeded", Level.ERROR, "{0}")
CEL_VALUE_NOTE = _m("PYM0010", "TagValueIsCel", Level.WARNING, "{0}")
ENVOY_FILTER_UNSUPPORTED = _m("PYM0011", "EnvoyFilterPatchNotApplied", Level.WARNING, "{0}")
PLAINTEXT_TO_STRICT_MTLS = _m(
    "PYM0009", "PlaintextToStrictMtls", Level.WARNING,
    "DestinationRule {0} sends {1} to {2} port {3}, whose PeerAuthentication {4} is STRICT: the server only "
    "accepts Istio mTLS and refuses these connections (use ISTIO_MUTUAL or remove the tls setting)")

# Loading problems that make the input unusable as a whole (the CLI exits 1 rather than 79 for these):
# unreadable files, YAML syntax, and files over a loader limit (control.istio.load.LoadLimits).
FATAL_CODES = frozenset({FILE_ERROR.code, YAML_SYNTAX_ERROR.code, LIMIT_EXCEEDED.code})

CATALOGUE: dict[str, MessageType] = {
    m.code: m for m in (
        INTERNAL_ERROR, DEPRECATED, REFERENCED_RESOURCE_NOT_FOUND, SCHEMA_VALIDATION_ERROR,
        CONFLICTING_MESH_GATEWAY_VS_HOSTS, NO_MATCHING_WORKLOADS_FOUND, NO_SERVER_CERT_VERIFICATION_DESTINATION,
        NO_SERVER_CERT_VERIFICATION_PORT, VS_UNREACHABLE_RULE, VS_INEFFECTIVE_MATCH,
        VS_HOST_NOT_FOUND_IN_GATEWAY, SCHEMA_WARNING, CONFLICTING_GATEWAYS, DR_SUBSET_NOT_SELECT_PODS,
        GATEWAY_DUPLICATE_CERTIFICATE, INVALID_GATEWAY_CREDENTIAL, ENVOY_FILTER_RELATIVE_OPERATION,
        ENVOY_FILTER_REPLACE_INCORRECTLY, ENVOY_FILTER_ADD_INCORRECTLY, ENVOY_FILTER_REMOVE_INCORRECTLY,
        ENVOY_FILTER_RELATIVE_WITH_PROXY_VERSION, JWT_CLAIM_ROUTING_WITHOUT_REQUEST_AUTHN,
        CONFLICTING_SIDECAR_SELECTORS, MULTIPLE_SIDECARS_NO_SELECTOR, CONFLICTING_TELEMETRY_SELECTORS,
        MULTIPLE_TELEMETRIES_NO_SELECTOR, INEFFECTIVE_POLICY, INVALID_TELEMETRY_PROVIDER,
        PORT_NAME_NOT_UNDER_NAMING_CONVENTION, SERVICE_ENTRY_ADDRESSES_REQUIRED, EXTERNAL_NAME_INVALID_PORT_NAME,
        GATEWAY_PORT_NOT_ON_SERVICE,
        VS_DESTINATION_PORT_SELECTOR_REQUIRED, INGRESS_ROUTE_RULES_NOT_AFFECTED, REFERENCED_INTERNAL_GATEWAY,
        UNKNOWN_DR_HOST, FILE_ERROR, YAML_SYNTAX_ERROR, IGNORED_KIND, UNSUPPORTED_FIELD, UNKNOWN_FIELD_DROPPED,
        DUPLICATE_RESOURCE, MERGED_DESTINATION_RULES, LIMIT_EXCEEDED, CEL_VALUE_NOTE, ENVOY_FILTER_UNSUPPORTED,
    )
}


def _quote(value: object) -> str:
    """Go's %q: a double-quoted string with escapes."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


class _Formatter(string.Formatter):
    """`str.format` with one extra conversion, `!q`, for Go's %q."""

    def convert_field(self, value, conversion):  # noqa: D401 - string.Formatter hook
        if conversion == "q":
            return _quote(value)
        return super().convert_field(value, conversion)


_FORMATTER = _Formatter()


@dataclass(frozen=True, slots=True)
class Finding:
    """One message about the input. `file`/`line` point at the field when known, else the resource."""

    type: MessageType
    message: str
    level: Level
    file: str = ""
    line: int = 0
    resource: str = ""  # `Kind namespace/name`, empty for file-level problems
    path: str = ""  # field path, e.g. "spec.http[0].route[0].destination.host"

    @property
    def code(self) -> str:
        return self.type.code

    @property
    def location(self) -> str:
        """`file:line`, or just the file when the line is unknown."""
        return f"{self.file}:{self.line}" if self.file and self.line else self.file

    @property
    def origin(self) -> str:
        return " ".join(p for p in (self.resource, self.location) if p)

    def __str__(self) -> str:
        origin = f" ({self.origin})" if self.origin else ""
        return f"{self.level.label} [{self.code}]{origin} {self.message}"

    def as_dict(self) -> dict:
        """istioctl's -o json shape (code, level, message, origin, reference) plus our file/line/path."""
        return {
            "code": self.code,
            "name": self.type.name,
            "level": self.level.label,
            "message": self.message,
            "origin": self.resource,
            "reference": self.location,
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "documentationUrl": (f"https://istio.io/latest/docs/reference/config/analysis/{self.code.lower()}/"
                                 if self.code.startswith("IST") else ""),
        }


def finding(type_: MessageType, *args: object, file: str = "", line: int = 0, resource: str = "",
            path: str = "", level: Level | None = None) -> Finding:
    """Build a finding from a message type and its template arguments."""
    return Finding(type_, _FORMATTER.format(type_.template, *args), type_.level if level is None else level,
                   file, line, resource, path)
