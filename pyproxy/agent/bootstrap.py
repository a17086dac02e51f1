"""The bootstrap a real Envoy sidecar starts from, as Istio's agent (pilot-agent) writes it. Pure: arguments in,
a bootstrap dict (Envoy's config.bootstrap.v3.Bootstrap in JSON) out.

Envoy learns everything else over ADS from the control plane (control.xds.grpc_ads):

* `node`: id `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local` and the metadata istio-agent fills
  (NAME, NAMESPACE, SERVICE_ACCOUNT, LABELS, INSTANCE_IPS, POD_PORTS as a JSON string, ISTIO_VERSION; Istio's
  agent sends strings), plus this mesh's per-proxy ports (INBOUND_PORT, OUTBOUND_PORT, ADMIN_PORT) and
  BIND_ADDRESS (docs/xds.md "The node"): the control plane registers the workload from them.
* `dynamic_resources.ads_config`: `api_type: GRPC` to the `xds-grpc` static cluster (istio-agent's name), with
  `cds_config` / `lds_config` `{ads: {}}`; the clusters' `eds_config: {ads: {}}` and listeners'
  `rds.config_source: {ads: {}}` then ride the same stream (Envoy's "ADS must be configured" otherwise).
* `xds-grpc` speaks HTTP/2 (gRPC): `typed_extension_protocol_options`
  `envoy.extensions.upstreams.http.v3.HttpProtocolOptions.explicit_http_config.http2_protocol_options`.
* `admin` on 127.0.0.1 only (istio-agent binds it to localhost: /config_dump is not for the network).
* With `XdsTls` (the control plane's secure gRPC port, `--secure-grpc-port`): `xds-grpc` gets an
  UpstreamTlsContext verifying the control plane against the mesh root file (istio-agent's
  `root-cert.pem`, SNI `istiod.istio-system.svc`), and the stream carries the service-account token as
  `authorization: Bearer` initial metadata (istio-agent sends it as call credentials read from the token file;
  here it is read once, when the bootstrap is written).
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Mapping

from ..xds.node import build_node

HTTP_PROTOCOL_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
XDS_CLUSTER = "xds-grpc"  # istio-agent's name for the ADS cluster
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@dataclass(frozen=True, slots=True)
class XdsTls:
    """ADS over TLS: the mesh root that verifies the control plane, and the token that authenticates us."""

    root_cert_file: str
    token: str
    sni: str = "istiod.istio-system.svc"


@dataclass(frozen=True, slots=True)
class Workload:
    """Who the sidecar is (the pod's downward-API facts istio-agent reads) and its ports on a shared host."""

    name: str
    namespace: str = "default"
    ip: str = "127.0.0.1"
    service_account: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[tuple[str, int], ...] = ()  # (name, containerPort) of the app
    inbound_port: int = 15006
    outbound_port: int = 15001
    admin_port: int = 15000
    bind_address: str = "127.0.0.1"
    node_type: str = "sidecar"
    version: str = ""  # ISTIO_VERSION; "" = the control plane shows Envoy's own build version


def node(w: Workload) -> dict:
    """Envoy's `node` as istio-agent fills it: pyproxy's own node (pyproxy.xds.node.build_node, the same keys
    the control plane parses) with istio-agent's encodings: metadata values as strings, POD_PORTS a JSON
    string, ISTIO_VERSION only when given (else the control plane shows Envoy's build version)."""
    out = build_node(kind="gateway" if w.node_type == "router" else "sidecar", name=w.name, namespace=w.namespace,
                     ip=w.ip, service_account=w.service_account, labels=dict(w.labels),
                     inbound_port=w.inbound_port, outbound_port=w.outbound_port, admin_port=w.admin_port,
                     bind_address=w.bind_address)
    meta = out["metadata"]
    for key in ("INBOUND_PORT", "OUTBOUND_PORT", "ADMIN_PORT"):
        meta[key] = str(meta[key])
    meta["LABELS"] = {str(k): str(v) for k, v in meta["LABELS"].items()}
    meta.pop("POD_PORTS")
    if w.ports:
        meta["POD_PORTS"] = json.dumps([{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in w.ports])
    meta.pop("ISTIO_VERSION")
    if w.version:
        meta["ISTIO_VERSION"] = w.version
    out.pop("user_agent_name")  # Envoy sends its own
    return out


def _address_type(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return "STATIC"
    except ValueError:
        return "STRICT_DNS"  # istio-agent's xds-grpc resolves istiod's name the same way


def envoy_bootstrap(w: Workload, xds_host: str, xds_port: int, tls: XdsTls | None = None, *,
                    delta: bool = False) -> dict:
    """The whole bootstrap for `w`, with ADS over gRPC to xds_host:xds_port (plaintext, or TLS + token);
    `delta`: incremental xDS (`api_type: DELTA_GRPC`, DeltaAggregatedResources) instead of state of the world."""
    if not 0 < xds_port < 65536:
        raise ValueError(f"xds port {xds_port} out of range 1..65535")
    if tls is not None and not tls.token.strip():
        raise ValueError("xDS over TLS needs a service-account token (the token file is empty)")
    ads = {"ads": {}, "resource_api_version": "V3"}
    bootstrap = {
        "node": node(w),
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": w.admin_port}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "DELTA_GRPC" if delta else "GRPC", "transport_api_version": "V3",
                           "set_node_on_first_message_only": True,
                           "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]},
            "cds_config": dict(ads),
            "lds_config": dict(ads),
        },
        "static_resources": {"clusters": [{
            "name": XDS_CLUSTER,
            "type": _address_type(xds_host),
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": xds_host, "port_value": xds_port}}}}]}]},
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS, "explicit_http_config": {"http2_protocol_options": {}}}},
        }]},
    }
    if tls is not None:
        grpc_service = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]
        grpc_service["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {tls.token.strip()}"}]
        bootstrap["static_resources"]["clusters"][0]["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": UPSTREAM_TLS, "sni": tls.sni, "common_tls_context": {
                "alpn_protocols": ["h2"],
                "validation_context": {"trusted_ca": {"filename": tls.root_cert_file}}}}}
    return bootstrap
