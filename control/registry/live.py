"""Automatic service registration: proxies that connect to the xDS server register their workload.

istiod learns workloads from Kubernetes pods, or, for VMs, from WorkloadEntries it creates when a proxy
connects (`PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION`) and deletes a grace period after it disconnects
(`PILOT_WORKLOAD_ENTRY_GRACE_PERIOD`, default 10s). Here every proxy registers that way: the `node` of its
DiscoveryRequests (control.xds.node) names it, its namespace, service account, labels, IP and ports.

* `LiveRegistry` is the store: `connect(node, now)` when a request arrives, `release(id, now)` when it ends,
  `expire(now)` removes proxies with no request in flight for `grace` seconds. Time is passed in (no clock
  read here), so the grace period is tested without sleeping. As a `Registry` it lists the proxies' own
  workloads (kind "Proxy") and no services.
* `MeshRegistry` is what the serving control plane translates from: the file registry's services,
  WorkloadEntries and ServiceEntry endpoints, merged with the live proxies. A proxy's missing metadata
  (labels, service account, ports) is filled from the file workload of the same name (Deployment, or a pod
  `<deployment>-...`). File Deployments and Pods are *templates* here, not endpoints: as in Kubernetes, a
  Deployment has endpoints only when its pods run, and the pods are the proxies that registered.

Explicit capture on a shared host (ARCHITECTURE.md decisions 4 and 5): a sidecar's mesh address is its inbound
listener, so its endpoints are `<ip>:<INBOUND_PORT>`, not `<ip>:<targetPort>`. A sidecar that declares one
app port (or none) serves every port of every service selecting it on that port (see control.xds.generate);
with several app ports, Kubernetes' targetPort rules pick among them. Gateways (`router`) are endpoints on
their own ports. A registered sidecar has `tls_mode` "istio" when its labels carry injection's
`security.istio.io/tlsMode: istio` (pyproxy sidecar adds it when it follows the secure port and so holds a
workload certificate), so auto-mTLS clients talk mTLS to it; a plaintext-only sidecar and gateways do not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Iterable

from control.registry.base import Registry, select_endpoints, workload_port
from control.registry.model import ContainerPort, Endpoint, Service, ServicePort, Workload, tls_mode_of
from control.xds.node import ProxyNode

DEFAULT_GRACE = 10.0  # seconds; istiod's PILOT_WORKLOAD_ENTRY_GRACE_PERIOD
LIVE_KIND = "Proxy"
TEMPLATE_KINDS = ("Deployment", "Pod")  # file workloads that stand for pods, which register live


@dataclass(slots=True)
class _Entry:
    node: ProxyNode
    registered_at: float
    last_seen: float
    in_flight: int = 0
    member: bool = True  # joins the endpoints of the services it matches (False: config only, read-only)


class LiveRegistry(Registry):
    """Self-registered proxies, keyed by node id. Mutable; `generation` counts changes of the set."""

    def __init__(self, grace: float = DEFAULT_GRACE):
        self.grace = grace
        self.generation = 0
        self._entries: dict[str, _Entry] = {}
        self._workloads: tuple[Workload, ...] | None = None

    def __repr__(self) -> str:
        busy = sum(1 for e in self._entries.values() if e.in_flight)
        return f"LiveRegistry(proxies={len(self._entries)}, in_flight={busy}, grace={self.grace}s)"

    def _changed(self) -> None:
        self.generation += 1
        self._workloads = None

    def connect(self, node: ProxyNode, now: float, member: bool = True) -> bool:
        """A request from this proxy began. True when the registry changed (new proxy, new metadata, or
        membership: `member=False` keeps it out of every service's endpoints, see control.xds.admission)."""
        entry = self._entries.get(node.id)
        if entry is None:
            self._entries[node.id] = _Entry(node, now, now, 1, member)
            self._changed()
            return True
        entry.in_flight += 1
        entry.last_seen = now
        if entry.node != node or entry.member != member:
            entry.node, entry.member = node, member
            self._changed()
            return True
        return False

    def restore(self, nodes: Iterable[ProxyNode], now: float) -> int:
        """Re-register proxies remembered from before a control-plane restart, as seen `now` with no request
        in flight: they keep their endpoints for the grace period, and stay if they reconnect in time
        (istiod keeps auto-registered WorkloadEntries the same way). Returns how many were added."""
        added = 0
        for node in nodes:
            if node.id not in self._entries:
                self._entries[node.id] = _Entry(node, now, now, 0)
                added += 1
        if added:
            self._changed()
        return added

    def release(self, node_id: str, now: float) -> None:
        """A request from this proxy ended (answered, timed out, or the client went away)."""
        entry = self._entries.get(node_id)
        if entry is not None:
            entry.in_flight = max(0, entry.in_flight - 1)
            entry.last_seen = now

    def expire(self, now: float) -> tuple[ProxyNode, ...]:
        """Remove proxies with no request in flight for `grace` seconds; returns them."""
        gone = [e.node for e in self._entries.values() if not e.in_flight and now - e.last_seen >= self.grace]
        for node in gone:
            del self._entries[node.id]
        if gone:
            self._changed()
        return tuple(gone)

    def remove(self, node_id: str) -> bool:
        if self._entries.pop(node_id, None) is None:
            return False
        self._changed()
        return True

    def nodes(self) -> tuple[ProxyNode, ...]:
        return tuple(self._entries[k].node for k in sorted(self._entries))

    def members(self) -> frozenset[str]:
        """Ids of the proxies that are endpoints (registered), not only config readers."""
        return frozenset(k for k, e in self._entries.items() if e.member)

    def node(self, node_id: str) -> ProxyNode | None:
        entry = self._entries.get(node_id)
        return entry.node if entry else None

    def connected(self, node_id: str) -> bool:
        """Has a request in flight (a long-poll waiting counts)."""
        entry = self._entries.get(node_id)
        return bool(entry and entry.in_flight)

    def info(self, node_id: str) -> dict:
        entry = self._entries[node_id]
        return {"registered_at": entry.registered_at, "last_seen": entry.last_seen, "in_flight": entry.in_flight}

    # Registry
    def services(self) -> tuple[Service, ...]:
        return ()

    def workloads(self) -> tuple[Workload, ...]:
        if self._workloads is None:
            self._workloads = tuple(proxy_workload(e.node) for k, e in sorted(self._entries.items()) if e.member)
        return self._workloads


def proxy_workload(node: ProxyNode, template: Workload | None = None,
                   extra_ports: Iterable[ContainerPort] = ()) -> Workload:
    """The workload a proxy stands for: its metadata, gaps filled from the file workload of its name."""
    ports = tuple(ContainerPort(p.name, p.port) for p in node.pod_ports)
    if not ports and template is not None:
        ports = template.ports
    return Workload(
        name=node.name,
        namespace=node.namespace,
        labels=node.labels or (template.labels if template is not None else node.labels),
        address=node.ip,
        service_account=node.service_account or (template.service_account if template is not None else "default"),
        ports=ports + tuple(extra_ports),
        kind=LIVE_KIND,
        owner=(template.owner or template.name) if template is not None else "",
        # a sidecar holding a workload certificate says so with the injection label (pyproxy sidecar sets it
        # when it follows the secure port); one without cannot terminate Istio mTLS, so peers send plaintext
        tls_mode="" if node.is_gateway else tls_mode_of(node.labels),
    )


def template_for(node: ProxyNode, workloads: Iterable[Workload]) -> Workload | None:
    """The file workload a proxy is an instance of: same namespace and its name, its Deployment's name, or
    the longest Deployment name that prefixes it (`reviews-v1-7d9f` -> reviews-v1)."""
    best: Workload | None = None
    for w in workloads:
        if w.namespace != node.namespace or w.kind not in TEMPLATE_KINDS:
            continue
        if w.name == node.name or w.owner == node.name:
            return w
        if w.owner and node.name.startswith(w.owner + "-") and (best is None or len(w.owner) > len(best.owner)):
            best = w
    return best


def app_port(node: ProxyNode) -> int | None:
    """The one port a sidecar's app listens on, when it declares exactly one."""
    return node.pod_ports[0].port if len(node.pod_ports) == 1 else None


class MeshRegistry(Registry):
    """File services + WorkloadEntries + live proxies: the registry the serving control plane translates from.
    Immutable: build a new one when the files or the live set change. Every node gets a workload (its
    config is rendered for it); only `members` (default: all) are endpoints of the services they match."""

    def __init__(self, files: Registry, nodes: Iterable[ProxyNode], members: Collection[str] | None = None):
        file_workloads = files.workloads()
        self._services = files.services()
        self._static = tuple(w for w in file_workloads if w.kind not in TEMPLATE_KINDS)
        live: list[Workload] = []
        self._node_of: dict[int, ProxyNode] = {}
        self._by_node_id: dict[str, Workload] = {}
        for node in nodes:
            template = template_for(node, file_workloads)
            base = proxy_workload(node, template)
            w = proxy_workload(node, template, self._named_target_ports(node, base))
            if members is None or node.id in members:
                live.append(w)
            self._node_of[id(w)] = node
            self._by_node_id[node.id] = w
        self._live = tuple(live)
        self._live_by_namespace: dict[str, list[Workload]] = {}
        for w in self._live:
            self._live_by_namespace.setdefault(w.namespace, []).append(w)
        self._workloads = self._static + self._live

    def __repr__(self) -> str:
        return (f"MeshRegistry(services={len(self._services)}, static_workloads={len(self._static)}, "
                f"proxies={len(self._live)})")

    def _named_target_ports(self, node: ProxyNode, w: Workload) -> list[ContainerPort]:
        """A one-app-port sidecar serves named targetPorts of the services selecting it on its app port."""
        port = app_port(node)
        if node.is_gateway or port is None:
            return []
        declared = {p.name for p in w.ports}
        names = {sp.target_port for svc in self._services if svc.selector and svc.namespace == w.namespace
                 and w.matches(svc.selector) for sp in svc.ports if isinstance(sp.target_port, str)}
        return [ContainerPort(n, port) for n in sorted(names - declared)]

    def services(self) -> tuple[Service, ...]:
        return self._services

    def workloads(self) -> tuple[Workload, ...]:
        return self._workloads

    def node_of(self, workload: Workload) -> ProxyNode | None:
        """The proxy behind a live workload (None for file workloads)."""
        return self._node_of.get(id(workload))

    def workload_of(self, node_id: str) -> Workload | None:
        """The workload a registered proxy stands for."""
        return self._by_node_id.get(node_id)

    def endpoint_sources(self) -> dict[str, tuple[ProxyNode, Workload]]:
        """node id -> (node, workload) of the proxies that are endpoints: all `endpoints` reads of them."""
        return {node.id: (node, w) for w in self._live for node in (self._node_of[id(w)],)}

    def endpoints(self, service: Service, port: ServicePort) -> tuple[Endpoint, ...]:
        out = list(select_endpoints(service, port, self._static))
        if not service.selector:
            return tuple(out)
        for w in self._live_by_namespace.get(service.namespace, ()):
            if not w.matches(service.selector):
                continue
            node = self._node_of[id(w)]
            number = workload_port(port, w)
            if node.is_gateway:
                if number is not None:
                    out.append(Endpoint(w.address, number, w, port))
            elif number is not None or app_port(node) is not None or not node.pod_ports:
                out.append(Endpoint(w.address, node.inbound_port, w, port))
        return tuple(out)
