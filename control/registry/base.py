"""The registry interface: where services and workloads come from.

istiod aggregates several service registries (Kubernetes, ServiceEntry, ...) behind one interface; so do we.
`Registry` is the contract the mesh snapshot (`control.mesh`) reads. Implementations:

* `control.registry.files.FileRegistry`: Kubernetes Service/Deployment/Pod manifests, ServiceEntry and
  WorkloadEntry from YAML files (today);
* live self-registration (proxies register when they connect to the xDS server) and the Kubernetes API
  (later issues) plug in by implementing the same two methods; `CompositeRegistry` merges several.

Which workloads back which service port (`endpoints`) is the same rule for every source, so it lives here.
"""
from __future__ import annotations

import abc
from typing import Iterable

from control.registry.model import Endpoint, Service, ServicePort, Workload


class Registry(abc.ABC):
    """A read-only view of services and workload instances. Implementations must be cheap to call
    repeatedly (return stored tuples) and deterministic in order."""

    @abc.abstractmethod
    def services(self) -> tuple[Service, ...]:
        """Every service (Kubernetes Service, ServiceEntry host), in a stable order."""

    @abc.abstractmethod
    def workloads(self) -> tuple[Workload, ...]:
        """Every workload instance (Deployment replica, Pod, WorkloadEntry, live proxy), in a stable order."""

    def endpoints(self, service: Service, port: ServicePort) -> tuple[Endpoint, ...]:
        """The workload instances serving `service` on `port` (what EDS lists for its clusters)."""
        return select_endpoints(service, port, self.workloads())


class CompositeRegistry(Registry):
    """Several registries seen as one (istiod's aggregate controller): services by first definition of a
    hostname+namespace, workloads concatenated."""

    def __init__(self, registries: Iterable[Registry]):
        self._registries = tuple(registries)
        seen: set[tuple[str, str]] = set()
        services: list[Service] = []
        for reg in self._registries:
            for svc in reg.services():
                if (svc.hostname, svc.namespace) not in seen:
                    seen.add((svc.hostname, svc.namespace))
                    services.append(svc)
        self._services = tuple(services)
        self._workloads = tuple(w for reg in self._registries for w in reg.workloads())

    def services(self) -> tuple[Service, ...]:
        return self._services

    def workloads(self) -> tuple[Workload, ...]:
        return self._workloads


def workload_port(port: ServicePort, workload: Workload) -> int | None:
    """The port a workload serves `port` on, or None if it cannot (a named targetPort it does not declare).

    WorkloadEntry / ServiceEntry endpoints may remap by port *name* (`ports: {http: 8080}`); Kubernetes
    Services map by `targetPort` (number, or container port name); otherwise the service port number."""
    if port.name and port.name in workload.port_map:
        return workload.port_map[port.name]
    target = port.target_port
    if isinstance(target, str):
        return workload.container_port(target)
    return target if target else port.port


def select_endpoints(service: Service, port: ServicePort, workloads: Iterable[Workload]) -> tuple[Endpoint, ...]:
    """Endpoints of one service port: inline ServiceEntry endpoints, plus workloads in the service's namespace
    whose labels match its selector (Kubernetes Service `selector`, ServiceEntry `workloadSelector`)."""
    out: list[Endpoint] = []
    for w in service.static_endpoints:
        number = workload_port(port, w)
        if number is not None:
            out.append(Endpoint(w.address, number, w, port))
    if service.selector:  # Kubernetes: a Service without (or with an empty) selector has no endpoints
        for w in workloads:
            if w.namespace != service.namespace or not w.matches(service.selector):
                continue
            number = workload_port(port, w)
            if number is not None:
                out.append(Endpoint(w.address, number, w, port))
    return tuple(out)
