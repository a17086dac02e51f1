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
* With `sds_socket` (the agent's SDS server, pyproxy.agent.sds): the `sds-grpc` static cluster, HTTP/2 to a `pipe`
  address (istio-agent's `./var/run/secrets/workload-spiffe-uds/socket`); the control plane's TLS contexts name
  their `default` / `ROOTCA` secrets with `sds_config.api_config_source` -> `sds-grpc` (control/translate/authn.py).
* `Ports.status` (the agent's status server, Istio's 15020): the `agent` cluster, and on `Ports.health` (15021) a
  static listener routing `/healthz/ready` to it, as Istio's bootstrap does for kubelet's readiness probe.
* `Ports.stats` (15090): a static listener routing `/stats/prometheus` to the `prometheus_stats` cluster, which is
  Envoy's own admin port (Istio's bootstrap: Prometheus scrapes Envoy without reaching the admin API).
  0 leaves a listener out.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Mapping

from ..xds.node import build_node

HTTP_PROTOCOL_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
XDS_CLUSTER = "xds-grpc"  # istio-agent's name for the ADS cluster
SDS_CLUSTER = "sds-grpc"  # istio-agent's name for the SDS cluster (the name istiod's sds_config points at)
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
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


@dataclass(frozen=True, slots=True)
class Ports:
    """The agent's and Envoy's side ports (Istio: status 15020, health 15021, stats 15090); 0 = none."""

    status: int = 0
    health: int = 0
    stats: int = 0


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


def _static_cluster(name: str, address: dict, http2: bool = False, connect_timeout: str = "1s") -> dict:
    cluster = {"name": name, "type": "STATIC", "connect_timeout": connect_timeout,
               "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                   "address": address}}]}]}}
    if http2:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_PROTOCOL_OPTIONS, "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def _local(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _route_listener(bind: str, port: int, stat_prefix: str, prefix: str, cluster: str) -> dict:
    """Istio's bootstrap listeners for 15090 and 15021: one HCM, one route prefix -> one static cluster."""
    return {"name": f"{stat_prefix}_{port}",
            "address": {"socket_address": {"address": bind, "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": HCM, "codec_type": "AUTO", "stat_prefix": stat_prefix,
                "route_config": {"virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": [
                    {"match": {"prefix": prefix}, "route": {"cluster": cluster}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}}]}]}


def _check_port(what: str, port: int, zero_ok: bool) -> None:
    if not (0 if zero_ok else 1) <= port < 65536:
        raise ValueError(f"{what} port {port} out of range {0 if zero_ok else 1}..65535")


def envoy_bootstrap(w: Workload, xds_host: str, xds_port: int, tls: XdsTls | None = None, *,
                    delta: bool = False, sds_socket: str | None = None, ports: Ports = Ports()) -> dict:
    """The whole bootstrap for `w`, with ADS over gRPC to xds_host:xds_port (plaintext, or TLS + token);
    `delta`: incremental xDS (`api_type: DELTA_GRPC`, DeltaAggregatedResources) instead of state of the world;
    `sds_socket`: the agent's SDS unix socket (the `sds-grpc` cluster); `ports`: status/health/stats."""
    _check_port("xds", xds_port, zero_ok=False)
    for what in ("status", "health", "stats"):
        _check_port(what, getattr(ports, what), zero_ok=True)
    if ports.health and not ports.status:
        raise ValueError("the health port (15021) routes to the agent's status port: give both")
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
    statics = bootstrap["static_resources"]
    if sds_socket is not None:
        statics["clusters"].append(_static_cluster(SDS_CLUSTER, {"pipe": {"path": sds_socket}}, http2=True))
    listeners = []
    if ports.stats:
        statics["clusters"].append(_static_cluster("prometheus_stats", _local(w.admin_port), connect_timeout="0.250s"))
        listeners.append(_route_listener(w.bind_address, ports.stats, "stats", "/stats/prometheus",
                                         "prometheus_stats"))
    if ports.status:
        statics["clusters"].append(_static_cluster("agent", _local(ports.status), connect_timeout="0.250s"))
    if ports.health:
        listeners.append(_route_listener(w.bind_address, ports.health, "agent", "/healthz/ready", "agent"))
    if listeners:
        statics["listeners"] = listeners
    if tls is not None:
        grpc_service = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]
        grpc_service["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {tls.token.strip()}"}]
        bootstrap["static_resources"]["clusters"][0]["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": UPSTREAM_TLS, "sni": tls.sni, "common_tls_context": {
                "alpn_protocols": ["h2"],
                "validation_context": {"trusted_ca": {"filename": tls.root_cert_file}}}}}
    return bootstrap
