"""The service registry's vocabulary: services, their ports, workloads and the endpoints they make.

This is istiod's `model.Service` / `model.IstioEndpoint` / workload instance, reduced to what translation
needs. A `Service` comes from a Kubernetes Service manifest or a ServiceEntry host; a `Workload` from a
Deployment replica, a Pod, a WorkloadEntry (or, later, a proxy that registered itself). An `Endpoint` is one
workload instance serving one service port: the thing EDS lists. All frozen: a registry snapshot is swapped
whole, never edited.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


class Protocol(str, enum.Enum):
    """Istio's port protocols (`pkg/config/protocol`), chosen from the port name prefix (`http-web`),
    `appProtocol`, or the ServiceEntry `protocol` field. UNSUPPORTED means "auto-detect" in Istio."""

    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    MONGO = "Mongo"
    REDIS = "Redis"
    MYSQL = "MySQL"
    UDP = "UDP"
    UNSUPPORTED = "UnsupportedProtocol"

    @classmethod
    def parse(cls, text: str | None) -> "Protocol":
        """Istio's `protocol.Parse` (case-insensitive); unknown text is UNSUPPORTED (auto-detect)."""
        if not text:
            return cls.UNSUPPORTED
        lowered = text.lower()
        for member in cls:
            if member.value.lower() == lowered:
                return member
        return cls.UNSUPPORTED

    @classmethod
    def from_port_name(cls, name: str | None) -> "Protocol":
        """Kubernetes Service port naming convention: `<protocol>[-<suffix>]` (`http`, `http-web`, `grpc-x`)."""
        if not name:
            return cls.UNSUPPORTED
        return cls.parse(name.split("-", 1)[0])

    @property
    def is_http(self) -> bool:
        """HTTP family: gets an HTTP connection manager and route configuration.

        UNSUPPORTED (unnamed port, Istio sniffs the protocol) is treated as HTTP here: pyproxy speaks HTTP and
        the outbound listener is an explicit HTTP proxy (ARCHITECTURE.md decision 5), so there is nothing
        else it could be sniffed as."""
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB, Protocol.UNSUPPORTED)

    @property
    def is_http2(self) -> bool:
        return self in (Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB)


class Resolution(str, enum.Enum):
    """ServiceEntry `resolution`; Kubernetes Services are CLIENT_SIDE_LB ("STATIC" via EDS) unless headless."""

    STATIC = "STATIC"  # endpoints known to the control plane: EDS
    DNS = "DNS"  # Envoy STRICT_DNS
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"  # Envoy LOGICAL_DNS
    NONE = "NONE"  # passthrough: ORIGINAL_DST


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a service. `target_port` is the workload port (int, or a container port *name* for a
    Kubernetes Service `targetPort: http-web`); None means "same number as `port`"."""

    name: str
    port: int
    protocol: Protocol
    target_port: int | str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """A host the mesh can route to (istiod's `model.Service`)."""

    hostname: str  # FQDN (`reviews.default.svc.cluster.local`) or a ServiceEntry host (may be `*.foo.com`)
    namespace: str
    name: str  # Kubernetes Service name, or the ServiceEntry name
    ports: tuple[ServicePort, ...]
    kind: str  # "Service" | "ServiceEntry"
    selector: Mapping[str, str] | None = None  # pods/workload entries backing it; None = no selector
    addresses: tuple[str, ...] = ()  # cluster IP / ServiceEntry addresses
    resolution: Resolution = Resolution.STATIC
    mesh_external: bool = False  # ServiceEntry location MESH_EXTERNAL (the default for ServiceEntry)
    export_to: tuple[str, ...] = ()  # () = everywhere ("*")
    # ServiceEntry inline `endpoints` (WorkloadEntry shapes) and DNS endpoints; Workloads come separately
    static_endpoints: tuple["Workload", ...] = ()
    subject_alt_names: tuple[str, ...] = ()
    source: str = ""  # "Service default/reviews (file:line)" for messages

    def port(self, number: int) -> ServicePort | None:
        for p in self.ports:
            if p.port == number:
                return p
        return None


TLS_MODE_LABEL = "security.istio.io/tlsMode"  # istiod's model.TLSModeLabelName
ISTIO_TLS_MODE = "istio"  # model.IstioMutualTLSModeLabel


def tls_mode_of(labels: Mapping[str, str]) -> str:
    """istiod's GetTLSModeFromEndpointLabels: the label's value when it is `istio`, else "" (disabled)."""
    return ISTIO_TLS_MODE if labels.get(TLS_MODE_LABEL) == ISTIO_TLS_MODE else ""


@dataclass(frozen=True, slots=True)
class ContainerPort:
    name: str
    port: int


@dataclass(frozen=True, slots=True)
class Workload:
    """One instance that can run a sidecar: a Deployment replica, a Pod, a WorkloadEntry, or a live proxy."""

    name: str  # pod-like name: `reviews-v1-0` for replica 0 of Deployment reviews-v1; WorkloadEntry name
    namespace: str
    labels: Mapping[str, str]
    address: str
    service_account: str = "default"
    ports: tuple[ContainerPort, ...] = ()
    kind: str = "Deployment"  # "Deployment" | "Pod" | "WorkloadEntry" | "ServiceEntry" (inline endpoint)
    owner: str = ""  # Deployment name for replicas
    # WorkloadEntry `ports`: service port name -> workload port
    port_map: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    weight: int = 0
    locality: str = ""
    network: str = ""
    # `security.istio.io/tlsMode`: "istio" when the workload has a sidecar that terminates Istio mTLS (the
    # label injection puts on pods; every registered sidecar), else "" (istiod's IstioEndpoint.TLSMode)
    tls_mode: str = ""

    def container_port(self, name: str) -> int | None:
        for p in self.ports:
            if p.name == name:
                return p.port
        return None

    def matches(self, selector: Mapping[str, str] | None) -> bool:
        """Label selector semantics: every selector label present with the same value. An empty selector
        matches everything; None (no selector) matches nothing."""
        if selector is None:
            return False
        return all(self.labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address:port serving a service port (an Envoy LbEndpoint)."""

    address: str
    port: int
    workload: Workload
    service_port: ServicePort

    @property
    def labels(self) -> Mapping[str, str]:
        return self.workload.labels
