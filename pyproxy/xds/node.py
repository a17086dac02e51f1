"""The node identity a dynamic pyproxy presents to the control plane (Envoy's `node`, Istio's conventions).

`id` is Istio's `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local` (type `sidecar`, or `router`
for gateways); `metadata` carries Istio's NodeMetadata keys (NAME, NAMESPACE, SERVICE_ACCOUNT, LABELS,
INSTANCE_IPS, POD_PORTS) plus this project's per-proxy ports (INBOUND_PORT, OUTBOUND_PORT, ADMIN_PORT), which
is how automatic registration works: the control plane learns the workload from the node (docs/xds.md).
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import __version__


def parse_labels(text: str) -> dict[str, str]:
    """`app=reviews,version=v1` -> {"app": "reviews", "version": "v1"}; ValueError names the bad item."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--labels: {item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def build_node(*, kind: str, name: str, namespace: str, ip: str, service_account: str = "",
               labels: dict[str, str] | None = None, app_ports: list[int] | None = None,
               inbound_port: int = 15006, outbound_port: int = 15001, admin_port: int = 15000,
               bind_address: str = "") -> dict[str, Any]:
    node_type = "router" if kind == "gateway" else "sidecar"
    node = {
        "id": f"{node_type}~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local",
        "cluster": f"{(labels or {}).get('app', name)}.{namespace}",
        "metadata": {
            "NAME": name,
            "NAMESPACE": namespace,
            "SERVICE_ACCOUNT": service_account or "default",
            "LABELS": dict(labels or {}),
            "INSTANCE_IPS": ip,
            "POD_PORTS": [{"name": f"http-{p}", "containerPort": p, "protocol": "TCP"} for p in app_ports or []],
            "INBOUND_PORT": inbound_port,
            "OUTBOUND_PORT": outbound_port,
            "ADMIN_PORT": admin_port,
            "ISTIO_VERSION": f"pyproxy-{__version__}",
        },
        "user_agent_name": "pyproxy",
    }
    if bind_address:  # this project's key: bind listeners here instead of 0.0.0.0 (control/xds/node.py)
        node["metadata"]["BIND_ADDRESS"] = bind_address
    return node


def with_client_feature(node: Mapping[str, Any], feature: str) -> dict[str, Any]:
    """The node with `feature` among its `client_features` (Envoy's Node.client_features: what the client
    supports; `pyproxy.vhds` and `pyproxy.xds.leds` ask the control plane for VHDS and LEDS)."""
    features = list(node.get("client_features") or [])
    return {**node, "client_features": features if feature in features else features + [feature]}
