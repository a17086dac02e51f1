"""PeerAuthentication: which mTLS mode a workload's port accepts, and the TLS contexts istiod builds for mesh mTLS.

Resolution follows istiod's `ComposePeerAuthentication` (pilot/pkg/security/authn/policy_applier.go):

* the applicable policies are the mesh one (root namespace, meshConfig `rootNamespace`, no selector), the
  namespace one (the workload's namespace, no selector) and the workload one (the workload's namespace, a
  `selector.matchLabels` matching it; a selector policy in the root namespace is ignored). Of several at one
  level the oldest wins; files carry no creation time, so the first one read stands for it;
* the mode starts PERMISSIVE (istiod's default with no policy), then the mesh, namespace and workload policies
  override it in that order when their `mtls.mode` is set (UNSET or no `mtls` inherits);
* `portLevelMtls` of the workload policy (keys are workload ports) wins for its port; UNSET there inherits
  the workload-level result.

`service_mtls_mode` is istiod's `BestEffortInferServiceMTLSMode`, what a *client* assumes for auto-mTLS:
mesh-external services are unknown (plaintext), otherwise the namespace policy's mode, else the mesh policy's,
else PERMISSIVE; workload and port-level policies are ignored there (EDS handles them per endpoint, see
endpoints.py).

TLS contexts (istiod pilot/pkg/security/authn/utils `BuildInboundTLS`, pkg/model `ConstructSdsSecretConfig`,
cluster_tls.go `buildUpstreamClusterTLSContext`): certificates come over SDS `default` and the trust bundle over
SDS `ROOTCA`, both from the `sds-grpc` cluster (the agent next to the proxy: pyproxy serves them in-process).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from control.istio.resources import Resource
from control.mesh import MeshSnapshot, selector_labels
from control.registry.model import Service, Workload
from control.translate.common import DOWNSTREAM_TLS, UPSTREAM_TLS

SDS_DEFAULT = "default"  # pkg/model SDSDefaultResourceName
SDS_ROOTCA = "ROOTCA"  # SDSRootResourceName
SDS_CLUSTER = "sds-grpc"  # SDSClusterName: the bootstrap cluster to the agent's SDS socket
TLS_SOCKET = "envoy.transport_sockets.tls"

# authn/utils SupportedCiphers: the inbound (server side) cipher list for mesh mTLS
SUPPORTED_CIPHERS = ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
                     "ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256")
ALPN_HTTP = ("h2", "http/1.1")  # util.ALPNHttp: the inbound HTTP chains' server ALPN
ALPN_DOWNSTREAM_MXC = ("istio-peer-exchange", "h2", "http/1.1")  # util.ALPNDownstreamWithMxc: inbound TCP chains
ALPN_IN_MESH = ("istio-peer-exchange", "istio")  # util.ALPNInMeshWithMxc: the client side of mesh mTLS
ALPN_IN_MESH_H2 = ("istio-peer-exchange", "istio", "h2")  # util.ALPNInMeshH2WithMxc: HTTP/2 clusters


class MtlsMode(str, enum.Enum):
    """model.MutualTLSMode. UNKNOWN is what istiod infers when it cannot tell (mesh-external services)."""

    UNKNOWN = "UNKNOWN"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


_API_MODES = {"DISABLE": MtlsMode.DISABLE, "PERMISSIVE": MtlsMode.PERMISSIVE, "STRICT": MtlsMode.STRICT}


def _mode_of(mtls: object) -> MtlsMode | None:
    """The mode a `MutualTLS` object sets; None when UNSET / absent (inherit)."""
    if not isinstance(mtls, Mapping):
        return None
    return _API_MODES.get(str(mtls.get("mode")))  # UNSET, absent (None) or unknown: not a mode


@dataclass(frozen=True, slots=True)
class MergedPeerAuthentication:
    """istiod's MergedPeerAuthentication: the workload's mode, and per-port overrides."""

    mode: MtlsMode
    per_port: Mapping[int, MtlsMode]
    policies: tuple[Resource, ...] = ()  # the (mesh, namespace, workload) policies that were chosen

    def for_port(self, port: int) -> MtlsMode:
        """GetMutualTLSModeForPort."""
        return self.per_port.get(port, self.mode)


def _scoped(mesh: MeshSnapshot, workload: Workload) -> tuple[Resource | None, Resource | None, Resource | None]:
    """The (mesh, namespace, workload) level PeerAuthentication applying to `workload`, first read wins."""
    root = mesh.config.root_namespace
    mesh_level = ns_level = wl_level = None
    for pol in mesh.policies_for("PeerAuthentication", workload):
        sel = selector_labels(pol.spec)
        if sel is None:
            if pol.namespace == root:
                mesh_level = mesh_level or pol
            else:
                ns_level = ns_level or pol
        elif pol.namespace != root:
            wl_level = wl_level or pol
    return mesh_level, ns_level, wl_level


def compose(mesh: MeshSnapshot, workload: Workload) -> MergedPeerAuthentication:
    """istiod's ComposePeerAuthentication for one workload (see the module docstring)."""
    def build() -> MergedPeerAuthentication:
        mesh_level, ns_level, wl_level = _scoped(mesh, workload)
        mode = MtlsMode.PERMISSIVE
        for pol in (mesh_level, ns_level, wl_level):
            if pol is not None:
                mode = _mode_of(pol.spec.get("mtls")) or mode
        per_port: dict[int, MtlsMode] = {}
        if wl_level is not None:
            for port, mtls in (wl_level.spec.get("portLevelMtls") or {}).items():
                try:
                    number = int(port)
                except (TypeError, ValueError):
                    continue
                per_port[number] = _mode_of(mtls) or mode
        chosen = tuple(p for p in (mesh_level, ns_level, wl_level) if p is not None)
        return MergedPeerAuthentication(mode, MappingProxyType(per_port), chosen)
    key = ("peer_authentication", workload.namespace, tuple(sorted(workload.labels.items())))
    return mesh.memo(key, build)


def effective_mtls(mesh: MeshSnapshot, workload: Workload, port: int) -> MtlsMode:
    """The mode `workload` accepts on its (workload, i.e. target) port `port`: STRICT, PERMISSIVE or DISABLE."""
    return compose(mesh, workload).for_port(port)


def namespace_mtls_mode(mesh: MeshSnapshot, namespace: str) -> MtlsMode:
    """PushContext.AuthnPolicies.GetNamespaceMutualTLSMode: the namespace-level policy's mode, else the mesh
    one's, else UNKNOWN."""
    def level(ns: str) -> MtlsMode | None:
        for pol in mesh.policies("PeerAuthentication", ns):
            if selector_labels(pol.spec) is None:
                return _mode_of(pol.spec.get("mtls"))
        return None
    return level(namespace) or level(mesh.config.root_namespace) or MtlsMode.UNKNOWN


def service_mtls_mode(mesh: MeshSnapshot, service: Service) -> MtlsMode:
    """BestEffortInferServiceMTLSMode (what auto-mTLS assumes of a destination service)."""
    if service.mesh_external:
        return MtlsMode.UNKNOWN
    mode = namespace_mtls_mode(mesh, service.namespace)
    return MtlsMode.PERMISSIVE if mode == MtlsMode.UNKNOWN else mode


# --- TLS contexts ----------------------------------------------------------------------------------------

def sds(name: str) -> dict:
    """pkg/model ConstructSdsSecretConfig: SDS from the agent (`sds-grpc`), no initial fetch timeout."""
    return {"name": name, "sds_config": {
        "api_config_source": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
                              "set_node_on_first_message_only": True, "transport_api_version": "V3"},
        "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}


def exact_sans(sans: list[str] | tuple[str, ...]) -> list[dict]:
    """util.StringToExactMatch: `match_subject_alt_names` entries (Envoy checks them against every SAN type)."""
    return [{"exact": s} for s in sans]


def transport_socket(context: dict) -> dict:
    return {"name": TLS_SOCKET, "typed_config": context}


def inbound_tls_context(tcp: bool) -> dict:
    """BuildInboundTLS for STRICT / PERMISSIVE: the sidecar's server side of mesh mTLS (a client certificate
    signed by the mesh CA is required; its SANs are not restricted here, AuthorizationPolicy does that)."""
    common = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3",
                       "cipher_suites": list(SUPPORTED_CIPHERS)},
        "alpn_protocols": list(ALPN_DOWNSTREAM_MXC if tcp else ALPN_HTTP),
        "tls_certificate_sds_secret_configs": [sds(SDS_DEFAULT)],
        "combined_validation_context": {"default_validation_context": {},
                                        "validation_context_sds_secret_config": sds(SDS_ROOTCA)},
    }
    return {"@type": DOWNSTREAM_TLS, "common_tls_context": common, "require_client_certificate": True}


def istio_mutual_upstream(sni: str, sans: list[str] | tuple[str, ...], http2: bool) -> dict:
    """buildUpstreamClusterTLSContext for ISTIO_MUTUAL: the workload certificate, the mesh trust bundle, the
    destination's identities as SANs, SNI `outbound_.<port>_.<subset>_.<host>`, ALPN for metadata exchange."""
    common = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
        "alpn_protocols": list(ALPN_IN_MESH_H2 if http2 else ALPN_IN_MESH),
        "tls_certificate_sds_secret_configs": [sds(SDS_DEFAULT)],
        "combined_validation_context": {"default_validation_context": {"match_subject_alt_names": exact_sans(sans)}
                                        if sans else {}, "validation_context_sds_secret_config": sds(SDS_ROOTCA)},
    }
    return {"@type": UPSTREAM_TLS, "common_tls_context": common, "sni": sni}


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """spiffe://<trust domain>/ns/<namespace>/sa/<service account> (pkg/spiffe)."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
