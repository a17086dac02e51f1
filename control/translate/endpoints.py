"""EDS: one `ClusterLoadAssignment` per EDS cluster, its endpoints selected by the subset's labels.

istiod's EndpointBuilder (pilot/pkg/xds/endpoints): the service port's endpoints (`MeshSnapshot.endpoints`:
workloads whose labels match the Service selector / ServiceEntry endpoints), filtered to those carrying every
label of the DestinationRule subset, grouped by locality. Each `LbEndpoint` carries the workload's address and
port and istiod's `istio.workload` metadata (`<workload>;<namespace>;<canonical name>;<revision>;<cluster>`),
which telemetry uses for `destination_workload`. Also used inline (`load_assignment`) for DNS and STATIC clusters.

Auto-mTLS (istiod's mtls_checker.go `checkMtlsEnabled`, util.AppendLbEndpointMetadata): an endpoint whose
workload has a sidecar (`Workload.tls_mode == "istio"`) carries
`filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}`, so the cluster's `tlsMode-istio` transport
socket (mTLS) is used for it, unless the cluster's DestinationRule sets a tls mode other than ISTIO_MUTUAL or
the endpoint workload's PeerAuthentication is DISABLE on that port (then it is sent plaintext). The caller
passes that decision in as `mtls_enabled(endpoint)`.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

from control.registry.model import Endpoint
from control.translate.common import CLUSTER_LOAD_ASSIGNMENT

CLUSTER_ID = "Kubernetes"  # istiod's default cluster id
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"  # util.EnvoyTransportSocketMetadataKey
MtlsCheck = Callable[[Endpoint], bool]


def workload_metadata(ep: Endpoint) -> str:
    w = ep.workload
    name = w.owner or w.name
    canonical = w.labels.get("service.istio.io/canonical-name") or w.labels.get("app") or name
    revision = w.labels.get("service.istio.io/canonical-revision") or w.labels.get("version") or "latest"
    return f"{name};{w.namespace};{canonical};{revision};{CLUSTER_ID}"


def select(endpoints: Iterable[Endpoint], subset_labels: Mapping[str, str] | None) -> list[Endpoint]:
    """Endpoints carrying every subset label (all of them when there is no subset)."""
    if not subset_labels:
        return list(endpoints)
    return [ep for ep in endpoints if all(ep.labels.get(k) == v for k, v in subset_labels.items())]


def lb_endpoint(address: str, port: int, ep: Endpoint | None = None, mtls: bool = False) -> dict:
    out: dict = {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}
    if ep is not None:
        metadata: dict = {}
        if mtls:
            metadata[TRANSPORT_SOCKET_MATCH] = {"tlsMode": ep.workload.tls_mode}
        metadata["istio"] = {"workload": workload_metadata(ep)}
        out["metadata"] = {"filter_metadata": metadata}
        out["load_balancing_weight"] = ep.workload.weight or 1
    return out


def locality_groups(endpoints: Iterable[Endpoint], mtls_enabled: MtlsCheck | None = None) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for ep in endpoints:
        mtls = bool(ep.workload.tls_mode) and (mtls_enabled is None or mtls_enabled(ep))
        groups.setdefault(ep.workload.locality, []).append(lb_endpoint(ep.address, ep.port, ep, mtls))
    out = []
    for locality in sorted(groups):
        group: dict = {}
        if locality:
            parts = locality.split("/")
            group["locality"] = {k: v for k, v in zip(("region", "zone", "sub_zone"), parts) if v}
        group["lb_endpoints"] = groups[locality]
        out.append(group)
    return out


def cluster_load_assignment(cluster_name: str, endpoints: Iterable[Endpoint],
                            subset_labels: Mapping[str, str] | None = None,
                            mtls_enabled: MtlsCheck | None = None) -> dict:
    """The EDS resource for one cluster (`mtls_enabled`: see the module docstring; None = sidecar = mTLS)."""
    return {
        "@type": CLUSTER_LOAD_ASSIGNMENT,
        "cluster_name": cluster_name,
        "endpoints": locality_groups(select(endpoints, subset_labels), mtls_enabled),
    }
