"""The ingress gateway `istioctl analyze` assumes when it has no cluster: Istio's default
`istio-ingressgateway` Service and a Pod labelled `istio: ingressgateway` in the istio namespace.

Istio's local analyzer adds them (pkg/config/analysis/local: AddDefaultResources, defaults.go) unless
meshConfig.ingressControllerMode is OFF, so a Gateway with the usual `selector: {istio: ingressgateway}`
is not reported as selecting nothing (IST0101). `meshctl analyze --no-default-ingress-gateway` leaves them out.
They are built as resources here (no YAML template) and are named after Istio's: a Gateway's own
`istio-ingressgateway` Service or Pod read from the files replaces them.
"""
from __future__ import annotations

from control.istio.resources import Resource, Source, freeze

INGRESS_NAMESPACE = "istio-system"
INGRESS_SERVICE = "istio-ingressgateway"  # meshConfig.ingressService default
SOURCE = Source("internal-ingress")  # the name Istio gives this source
_LABELS = {"istio": "ingressgateway"}
# (name, port) as in Istio's defaults.go; every port TCP, targetPort = port
_PORTS = (("http2", 80), ("https", 443), ("tcp", 31400), ("tls", 15443))


def default_ingress_gateway(namespace: str = INGRESS_NAMESPACE, service: str = INGRESS_SERVICE) -> tuple[Resource, ...]:
    pod = Resource("v1", "Pod", f"{service}-dummypod", namespace,
                   freeze({"containers": [{"name": "istio-proxy"}]}), labels=freeze(_LABELS), source=SOURCE)
    svc = Resource("v1", "Service", service, namespace,
                   freeze({"ports": [{"name": n, "port": p, "protocol": "TCP", "targetPort": p} for n, p in _PORTS],
                           "selector": _LABELS}), source=SOURCE)
    return pod, svc
