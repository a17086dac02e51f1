"""IST0118 PortNameIsNotUnderNamingConvention and IST0150 ExternalNameServiceTypeInvalidPortName: a Service
port whose protocol Istio cannot tell, so its traffic is treated as opaque TCP.

Istio's analyzer: service/portname.go with kube.ConvertProtocol: UDP ports are fine; otherwise the
protocol comes from `appProtocol` (with Kubernetes' `kubernetes.io/h2c|ws|wss`), else from the port name's
prefix before '-' (`http-web` -> HTTP; `grpc-web` whole), else TCP for the well-known ports 25, 53, 3306 and
27017. An ExternalName Service's port named `tcp` is reported too (IST0150 instead of IST0118 for that type).
Control-plane Services (label `istio`, or `release: istio`) and gateway-controller managed ones are skipped.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding
from control.istio.schema import PROTOCOLS

WELL_KNOWN_PORTS = frozenset({25, 53, 3306, 27017})  # SMTP, DNS, MySQL, MongoDB
KUBERNETES_APP_PROTOCOLS = frozenset({"kubernetes.io/h2c", "kubernetes.io/ws", "kubernetes.io/wss"})
MANAGED = frozenset({"istio.io-gateway-controller", "istio.io-mesh-controller", "istio.io-eastwest-controller"})


def protocol_known(port: Mapping[str, Any]) -> bool:
    """kube.ConvertProtocol(...) is not Unsupported."""
    if str(port.get("protocol") or "").upper() == "UDP":
        return True
    name = str(port.get("appProtocol") or port.get("name") or "")
    if name in KUBERNETES_APP_PROTOCOLS or name[:8].lower() == "grpc-web":
        return True
    prefix = name.split("-", 1)[0].upper()
    return prefix in PROTOCOLS - {"HBONE"} or port.get("port") in WELL_KNOWN_PORTS


def analyze(index: Index) -> Iterator[Finding]:
    for svc in index.of("Service"):
        if "istio" in svc.labels or svc.labels.get("release") == "istio" \
                or svc.labels.get("gateway.istio.io/managed") in MANAGED:
            continue
        external = get(svc.spec, "type") == "ExternalName"
        for i, port in enumerate(get(svc.spec, "ports", default=())):
            if not isinstance(port, Mapping):
                continue
            if protocol_known(port) and not (external and port.get("name") == "tcp"):
                continue
            path = f"spec.ports[{i}].name"
            if external:
                yield report(msg.EXTERNAL_NAME_INVALID_PORT_NAME, svc, path)
            else:
                target = port.get("targetPort", port.get("port"))
                yield report(msg.PORT_NAME_NOT_UNDER_NAMING_CONVENTION, svc, path, port.get("name", ""),
                             port.get("port"), target if target is not None else 0)
