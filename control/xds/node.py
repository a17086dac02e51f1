"""The proxy's identity on the wire: Envoy's `node` object (config.core.v3.Node) as Istio's agent fills it.

Every DiscoveryRequest carries `node`. istiod reads the proxy's type, IP and pod from `node.id`
(`<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`, types `sidecar` and `router`) and the rest from
`node.metadata` (Istio's `NodeMetadata` keys: NAME, NAMESPACE, SERVICE_ACCOUNT, LABELS, INSTANCE_IPS,
POD_PORTS). This project adds the per-proxy ports a shared host needs (ARCHITECTURE.md decision 4):
INBOUND_PORT (its `virtualInbound` listener, default 15006), OUTBOUND_PORT (the app's outbound proxy port,
default 15001) and ADMIN_PORT (where `meshctl proxy-config` reads `/config_dump`, default 15000), and
BIND_ADDRESS: the address its listeners bind instead of istiod's `0.0.0.0` (a pod's own network namespace makes
0.0.0.0 private; a mesh of local processes shares the host's, so `make demo` asks for 127.0.0.1).

Metadata values may be JSON numbers or strings (Istio's agent sends strings: `"INBOUND_PORT": "15006"`);
`POD_PORTS` may be a list or Istio's JSON-encoded string (`'[{"name":"http","containerPort":9080}]'`);
`INSTANCE_IPS` a list or a comma-separated string. `parse_node` is pure: a dict in, a `ProxyNode` or a
`NodeError` naming the field out. docs/xds.md is the contract.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

SIDECAR = "sidecar"
ROUTER = "router"  # Istio's node type for gateways
NODE_TYPES = (SIDECAR, ROUTER)
DEFAULT_INBOUND_PORT = 15006  # ARCHITECTURE.md decision 4
DEFAULT_OUTBOUND_PORT = 15001
DEFAULT_ADMIN_PORT = 15000
DNS_SUFFIX = "svc.cluster.local"
VHDS_FEATURE = "pyproxy.vhds"  # node.client_features entry (control.xds.vhds.FEATURE)


class NodeError(ValueError):
    """A DiscoveryRequest `node` the control plane cannot use; the message names the field."""


@dataclass(frozen=True, slots=True)
class PodPort:
    """One entry of POD_PORTS (a Kubernetes containerPort)."""

    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class ProxyNode:
    """What a connected proxy says about itself. `id` is the key of everything kept per proxy."""

    id: str
    type: str  # "sidecar" | "router"
    ip: str
    name: str  # pod name (`reviews-v1`, `reviews-v1-7d9f`)
    namespace: str
    service_account: str = ""  # "" = not sent (the file registry's or "default" is used)
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    pod_ports: tuple[PodPort, ...] = ()
    inbound_port: int = DEFAULT_INBOUND_PORT
    outbound_port: int = DEFAULT_OUTBOUND_PORT
    admin_port: int = DEFAULT_ADMIN_PORT
    cluster: str = ""  # node.cluster (Istio: `<app>.<namespace>`)
    version: str = ""  # metadata ISTIO_VERSION, shown by proxy-status
    bind_address: str = ""  # metadata BIND_ADDRESS; "" = bind what the translator says (0.0.0.0, as istiod)
    client_features: tuple[str, ...] = ()  # Envoy's node.client_features: `pyproxy.vhds`, `pyproxy.xds.leds`

    @property
    def vhds(self) -> bool:
        """It wants its route configurations' virtual hosts over VHDS (control.xds.vhds)."""
        return VHDS_FEATURE in self.client_features

    @property
    def is_gateway(self) -> bool:
        return self.type == ROUTER

    @property
    def short(self) -> str:
        """`<name>.<namespace>`: how istioctl names a proxy (`reviews-v1.default`)."""
        return f"{self.name}.{self.namespace}"


def node_id(node_type: str, ip: str, name: str, namespace: str) -> str:
    """Istio's node id: `sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local`."""
    return f"{node_type}~{ip}~{name}.{namespace}~{namespace}.{DNS_SUFFIX}"


def _port(meta: Mapping[str, Any], key: str, default: int) -> int:
    value = meta.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise NodeError(f"node.metadata.{key}: want a port number, got {value!r}") from None
    if not 0 < number < 65536:
        raise NodeError(f"node.metadata.{key}: port {number} out of range 1..65535")
    return number


def _labels(meta: Mapping[str, Any]) -> Mapping[str, str]:
    value = meta.get("LABELS") or {}
    if not isinstance(value, Mapping):
        raise NodeError(f"node.metadata.LABELS: want a map of label to value, got {type(value).__name__}")
    return MappingProxyType({str(k): str(v) for k, v in value.items()})


def _pod_ports(meta: Mapping[str, Any]) -> tuple[PodPort, ...]:
    value = meta.get("POD_PORTS") or ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise NodeError(f"node.metadata.POD_PORTS: not JSON: {err.msg}") from None
    if not isinstance(value, (list, tuple)):
        raise NodeError("node.metadata.POD_PORTS: want a list of {name, containerPort, protocol}")
    out = []
    for i, p in enumerate(value):
        if not isinstance(p, Mapping) or "containerPort" not in p:
            raise NodeError(f"node.metadata.POD_PORTS[{i}]: containerPort is required")
        out.append(PodPort(str(p.get("name", "")), _port(p, "containerPort", 0), str(p.get("protocol", "TCP"))))
    return tuple(out)


def _first_ip(meta: Mapping[str, Any], from_id: str) -> str:
    value = meta.get("INSTANCE_IPS") or from_id
    ips = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    ip = ips[0] if ips else ""
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise NodeError(f"node.metadata.INSTANCE_IPS: {ip!r} is not an IP address "
                        f"(and node.id carries none)") from None
    return ip


def _bind_address(meta: Mapping[str, Any]) -> str:
    value = str(meta.get("BIND_ADDRESS") or "")
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise NodeError(f"node.metadata.BIND_ADDRESS: {value!r} is not an IP address") from None
    return value


def _client_features(node: Mapping[str, Any]) -> tuple[str, ...]:
    value = node.get("client_features") or ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(f, str) for f in value):
        raise NodeError("node.client_features: want a list of strings")
    return tuple(sorted(set(value)))


def parse_node(node: Any) -> ProxyNode:
    """A DiscoveryRequest's `node` -> ProxyNode (NodeError names the bad field)."""
    if not isinstance(node, Mapping):
        raise NodeError("node: required (an Envoy Node object with id and metadata)")
    nid = node.get("id")
    if not isinstance(nid, str) or not nid:
        raise NodeError("node.id: required, e.g. sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local")
    parts = nid.split("~")
    if len(parts) != 4 or parts[0] not in NODE_TYPES:
        raise NodeError(f"node.id: {nid!r} is not <sidecar|router>~<ip>~<pod>.<namespace>~<domain>")
    meta = node.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise NodeError("node.metadata: want an object")
    pod, _, ns_from_id = parts[2].partition(".")
    name = str(meta.get("NAME") or pod)
    namespace = str(meta.get("NAMESPACE") or ns_from_id)
    if not name or not namespace:
        raise NodeError(f"node.metadata.NAME/NAMESPACE: missing, and node.id {nid!r} has no <pod>.<namespace>")
    return ProxyNode(
        id=nid,
        type=parts[0],
        ip=_first_ip(meta, parts[1]),
        name=name,
        namespace=namespace,
        service_account=str(meta.get("SERVICE_ACCOUNT") or ""),
        labels=_labels(meta),
        pod_ports=_pod_ports(meta),
        inbound_port=_port(meta, "INBOUND_PORT", DEFAULT_INBOUND_PORT),
        outbound_port=_port(meta, "OUTBOUND_PORT", DEFAULT_OUTBOUND_PORT),
        admin_port=_port(meta, "ADMIN_PORT", DEFAULT_ADMIN_PORT),
        cluster=str(node.get("cluster") or ""),
        version=str(meta.get("ISTIO_VERSION") or ""),
        bind_address=_bind_address(meta),
        client_features=_client_features(node),
    )


def without_vhds(node: ProxyNode) -> ProxyNode:
    """The node as served where VHDS is not (gRPC ADS: its streams carry CDS, EDS, LDS, RDS only), so its route
    configurations keep their virtual hosts whatever its client_features say."""
    if not node.vhds:
        return node
    return replace(node, client_features=tuple(f for f in node.client_features if f != VHDS_FEATURE))


def node_dict(node: ProxyNode) -> dict:
    """The Envoy `node` object a ProxyNode was parsed from (`parse_node(node_dict(n)) == n`): what the control
    plane persists to remember registrations across its own restarts."""
    meta: dict = {"NAME": node.name, "NAMESPACE": node.namespace, "LABELS": dict(node.labels),
                  "INSTANCE_IPS": node.ip, "INBOUND_PORT": node.inbound_port, "OUTBOUND_PORT": node.outbound_port,
                  "ADMIN_PORT": node.admin_port}
    if node.service_account:
        meta["SERVICE_ACCOUNT"] = node.service_account
    if node.pod_ports:
        meta["POD_PORTS"] = [{"name": p.name, "containerPort": p.port, "protocol": p.protocol}
                             for p in node.pod_ports]
    if node.version:
        meta["ISTIO_VERSION"] = node.version
    if node.bind_address:
        meta["BIND_ADDRESS"] = node.bind_address
    out = {"id": node.id, "cluster": node.cluster, "metadata": meta}
    if node.client_features:
        out["client_features"] = list(node.client_features)
    return out
