"""registry: services, workloads and endpoints (istiod's service registries).

`Registry` (base.py) is the interface; `FileRegistry` (files.py) reads Kubernetes manifests, ServiceEntry and
WorkloadEntry; live self-registration and the Kubernetes API plug in later behind the same interface.
"""
from control.registry.base import CompositeRegistry, Registry, select_endpoints
from control.registry.files import FileRegistry, RegistryError
from control.registry.model import ContainerPort, Endpoint, Protocol, Resolution, Service, ServicePort, Workload

__all__ = ["CompositeRegistry", "ContainerPort", "Endpoint", "FileRegistry", "Protocol", "Registry",
           "RegistryError", "Resolution", "Service", "ServicePort", "Workload", "select_endpoints"]
