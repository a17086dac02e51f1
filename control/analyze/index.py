"""The facts analyzers look things up in: hosts, workloads, gateways and destination rules, by namespace.

A small, pure index over loaded resources (istioctl analyze's view of a cluster, built from files):
* hosts: Kubernetes Services (`name.namespace.svc.cluster.local`) and ServiceEntry hosts (exact or
  wildcard `*.example.com`);
* workloads: Pods, Deployments (their pod template) and WorkloadEntries, each with namespace and labels;
* gateways by `namespace/name`, destination rules by resolved host.
Short names resolve in the namespace of the rule that wrote them, as in Istio
(`reviews` in namespace `default` -> `reviews.default.svc.cluster.local`); a name with a dot is taken as
written (`reviews.default` is not expanded, as Istio's ResolveShortnameToFQDN does not).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Mapping, Sequence

from control.istio.messages import Finding, MessageType, finding
from control.istio.resources import Resource, get  # noqa: F401 - `get` is used by every analyzer

DOMAIN_SUFFIX = "svc.cluster.local"
ROOT_NAMESPACE = "istio-system"  # meshConfig.rootNamespace default
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"  # a Service's exportTo


def resolve_host(host: str, namespace: str) -> str:
    """Istio's short-name resolution: a name without a dot is a Service in the rule's namespace."""
    if not host or "." in host or host == "*" or host.startswith("*"):
        return host
    return f"{host}.{namespace}.{DOMAIN_SUFFIX}"


def host_matches(pattern: str, host: str) -> bool:
    """Exact match, or a left-most wildcard pattern (`*.example.com`, `*`) covering the host."""
    if pattern == host or pattern == "*":
        return True
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    return False


def hosts_overlap(a: str, b: str) -> bool:
    return host_matches(a, b) or host_matches(b, a)


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels) selects labels when every pair is present."""
    return all(labels.get(k) == v for k, v in selector.items())


def format_labels(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


@dataclass(frozen=True, slots=True)
class Service:
    host: str  # FQDN or (for ServiceEntry) a possibly wildcard host
    namespace: str
    selector: Mapping[str, str] | None  # Kubernetes Service selector; None for ServiceEntry / selector-less
    ports: tuple[int, ...]
    resource: Resource


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    namespace: str
    labels: Mapping[str, str]
    resource: Resource


class Index:
    """Everything analyzers need to look up, built once from the loaded resources."""

    def __init__(self, resources: Sequence[Resource], now: datetime | None = None) -> None:
        self.now = now  # the time certificates are checked against (None: their validity window is not checked)
        self.by_kind: dict[str, list[Resource]] = defaultdict(list)
        for r in resources:
            self.by_kind[_index_kind(r)].append(r)
        self.services: list[Service] = []
        self.workloads: list[Workload] = []
        # (scope, fqdn) -> service: who may see a host ("*" everyone, else a namespace), Istio's ScopedFqdn
        self.scoped_hosts: dict[tuple[str, str], Service] = {}
        for r in self.of("Service"):
            selector = get(r.spec, "selector")
            ports = tuple(p.get("port") for p in get(r.spec, "ports", default=()) if isinstance(p, Mapping))
            service = Service(f"{r.name}.{r.namespace}.{DOMAIN_SUFFIX}", r.namespace,
                              dict(selector) if selector else None, ports, r)
            self.services.append(service)
            scopes = r.annotations.get(EXPORT_TO_ANNOTATION, "")
            for scope in _scopes([s.strip() for s in scopes.split(",")] if scopes else [], r.namespace):
                self.scoped_hosts[(scope, service.host)] = service
        for r in self.of("ServiceEntry"):
            ports = tuple(p.get("number") for p in get(r.spec, "ports", default=()) if isinstance(p, Mapping))
            scopes = _scopes(list(get(r.spec, "exportTo", default=())), r.namespace)
            for host in get(r.spec, "hosts", default=()):
                service = Service(host, r.namespace, None, ports, r)
                self.services.append(service)
                for scope in scopes:
                    self.scoped_hosts[(scope, resolve_host(host, r.namespace))] = service
        nodes = {n.name: n.labels for n in self.of("Node")}
        for r in self.of("Pod"):
            labels = {**r.labels, **topology_labels(nodes, get(r.spec, "nodeName", default=""))}
            self.workloads.append(Workload(r.name, r.namespace, labels, r))
        for r in self.of("Deployment"):
            labels = get(r.spec, "template", "metadata", "labels", default={})
            self.workloads.append(Workload(r.name, r.namespace, dict(labels), r))
        for r in self.of("WorkloadEntry"):
            self.workloads.append(Workload(r.name, r.namespace, dict(get(r.spec, "labels", default={})), r))
        self.gateways = {f"{g.namespace}/{g.name}": g for g in self.of("Gateway")}
        self.kubernetes_gateways = {f"{g.namespace}/{g.name}": g for g in self.of("KubernetesGateway")}
        self.destination_rules: dict[str, list[Resource]] = defaultdict(list)
        for dr in self.of("DestinationRule"):
            host = get(dr.spec, "host")
            if isinstance(host, str):
                self.destination_rules[resolve_host(host, dr.namespace)].append(dr)

    def of(self, kind: str) -> list[Resource]:
        return self.by_kind.get(kind, [])

    def find_services(self, host: str, namespace: str) -> list[Service]:
        """Services a (possibly short or wildcard) host written in `namespace` refers to."""
        fqdn = resolve_host(host, namespace)
        return [s for s in self.services if hosts_overlap(s.host, fqdn)]

    def destination_service(self, host: str, namespace: str, export_to: Sequence[str] = ()) -> Service | None:
        """The Service or ServiceEntry a VirtualService in `namespace` (exported to `export_to`) reaches as
        `host`, honouring exportTo; Istio's util.GetDestinationHost: exact FQDN visible to all, then to the
        VirtualService's own scopes, then a visible wildcard ServiceEntry host covering it."""
        fqdn = resolve_host(host, namespace)
        found = self.scoped_hosts.get(("*", fqdn))
        for scope in (export_to or (namespace,)):
            found = found or self.scoped_hosts.get((namespace if scope == "." else scope, fqdn))
        if found:
            return found
        for (scope, pattern), service in self.scoped_hosts.items():
            if pattern.startswith("*") and scope in ("*", namespace) and host.lstrip("*").endswith(pattern[1:]):
                return service
        return None

    def has_host(self, host: str, namespace: str) -> bool:
        return bool(self.find_services(host, namespace))

    def workloads_selected(self, selector: Mapping[str, str], namespace: str | None) -> list[Workload]:
        """Workloads the selector picks in `namespace` (None: every namespace)."""
        return [w for w in self.workloads
                if (namespace is None or w.namespace == namespace) and selects(selector, w.labels)]

    def subsets(self, host: str, namespace: str) -> set[str]:
        fqdn = resolve_host(host, namespace)
        names: set[str] = set()
        for dr_host, rules in self.destination_rules.items():
            if host_matches(dr_host, fqdn):
                for dr in rules:
                    names.update(s.get("name") for s in get(dr.spec, "subsets", default=())
                                 if isinstance(s, Mapping))
        return names

    def gateway(self, ref: str, namespace: str) -> Resource | None:
        """A VirtualService's (Istio) gateway reference: `name`, `ns/name` or the legacy `name.ns[.svc...]` form."""
        return self.gateways.get(gateway_key(ref, namespace))

    def kubernetes_gateway(self, ref: str, namespace: str) -> Resource | None:
        """The Kubernetes Gateway API Gateway a VirtualService's gateway reference names, when no Istio
        Gateway has that name (Istio's GatewayAnalyzer looks there second)."""
        return self.kubernetes_gateways.get(gateway_key(ref, namespace))


def gateway_key(ref: str, namespace: str) -> str:
    """`namespace/name` of a gateway reference (`name`, `ns/name`, or `name.ns[.svc...]`)."""
    if "/" in ref:
        return ref
    if "." in ref:
        name, ns = ref.split(".")[:2]
        return f"{ns}/{name}"
    return f"{namespace}/{ref}"


def _index_kind(r: Resource) -> str:
    """The key a resource is indexed under: its kind, but `KubernetesGateway` (Istio's gvk name) for a Gateway
    API Gateway, so that `of("Gateway")` is Istio's Gateways only."""
    return "KubernetesGateway" if r.kind == "Gateway" and r.group == "gateway.networking.k8s.io" else r.kind


# Node labels that become a pod's locality labels (Istio's label.AugmentLabels), and the hostname label.
TOPOLOGY_LABELS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone")


def topology_labels(nodes: Mapping[str, Mapping[str, str]], node_name: Any) -> dict[str, str]:
    """The labels istiod adds to a pod's own from the Node it runs on: region, zone, subzone, hostname."""
    if not isinstance(node_name, str) or not node_name:
        return {}
    node = nodes.get(node_name, {})
    added = {k: node[k] for k in TOPOLOGY_LABELS if node.get(k)}
    added["kubernetes.io/hostname"] = node_name
    return added


def _scopes(export_to: Sequence[str], namespace: str) -> tuple[str, ...]:
    """Where a host is visible: "*" (everyone, also when exportTo is empty) or namespaces ("." = its own)."""
    if not export_to or "*" in export_to:
        return ("*",)
    return tuple(namespace if e == "." else e for e in export_to)


def report(type_: MessageType, resource: Resource, path: str, *args: object) -> Finding:
    """A finding about `resource`, pointing at the line of `path` (or the resource)."""
    return finding(type_, *args, file=resource.source.file, line=resource.line_of(path),
                   resource=resource.key, path=path)


def http_destinations(vs: Resource) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(field path, destination) for every destination a VirtualService routes or mirrors to."""
    for section in ("http", "tcp", "tls"):
        for i, route in enumerate(get(vs.spec, section, default=())):
            for j, dest in enumerate(get(route, "route", default=())):
                if isinstance(get(dest, "destination"), Mapping):
                    yield f"spec.{section}[{i}].route[{j}].destination", dest["destination"]
            if isinstance(get(route, "mirror"), Mapping):
                yield f"spec.{section}[{i}].mirror", route["mirror"]
            for j, mirror in enumerate(get(route, "mirrors", default=())):
                if isinstance(get(mirror, "destination"), Mapping):
                    yield f"spec.{section}[{i}].mirrors[{j}].destination", mirror["destination"]


def is_internal_gateway(ref: str) -> bool:
    """kubeconfig.IsInternalGatewayReference: a gateway Istio generated from a Kubernetes Gateway."""
    return "~istio-autogenerated-k8s-gateway~" in ref.rpartition("/")[2]


def vs_gateways(vs: Resource) -> tuple[str, ...]:
    """A VirtualService's gateways; omitted means the mesh (all sidecars)."""
    gateways = get(vs.spec, "gateways", default=())
    return tuple(gateways) if gateways else ("mesh",)
