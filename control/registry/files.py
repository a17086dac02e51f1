"""File-backed registry: services and workloads from Kubernetes manifests, ServiceEntry and WorkloadEntry.

Input is the `Resource`s `control.istio.load` produced. What each kind contributes (as istiod's kube and
serviceentry controllers do):

* `Service` (v1): host `<name>.<namespace>.svc.<domain>`, ports (protocol from `appProtocol`, else the port
  name prefix `http`/`http-web`/`grpc-x`...; unnamed = auto-detect), `targetPort`, `selector`, cluster IP,
  annotation `networking.istio.io/exportTo`.
* `ServiceEntry`: one service per `hosts[]` entry (hosts are *not* namespace-qualified), `ports`,
  `resolution`, `location`, `addresses`, inline `endpoints` or `workloadSelector`, `exportTo`.
* `Deployment`: `spec.replicas` workload instances (default 1) with the pod template's labels,
  `serviceAccountName` (default "default") and container ports.
* `Pod`: one instance (manifests carry no `status.podIP`, so it gets an address like a replica).
* `WorkloadEntry`: one instance with its `address`, `labels`, `serviceAccount`, `ports` (name -> number).

A workload labelled `security.istio.io/tlsMode: istio` (what sidecar injection puts on a pod; on a Deployment's
pod template, a Pod or a WorkloadEntry here) has a sidecar: its endpoints carry the auto-mTLS metadata.

Deterministic addresses (file-based workloads have no IP, and an endpoint needs one). Each Deployment (and
each Pod) owns the block `10.A.B.0/24`, where A.B are the first two bytes of
sha256("<namespace>/<name>"); replica *i* gets `10.A.B.(i+1)` and is named `<deployment>-<i>`. Blocks are
assigned in sorted (namespace, name) order and a block already taken moves to the next one (B+1, carrying
into A), so an address only changes if a colliding workload is added before it. Replica counts above 254
are an error. Nothing routes to these addresses: live proxies (a later issue) register their real ones.
"""
from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from control.istio.resources import Resource
from control.registry.base import Registry
from control.registry.model import (ContainerPort, Protocol, Resolution, Service, ServicePort, Workload,
                                    tls_mode_of)

DEFAULT_DOMAIN = "cluster.local"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
MAX_REPLICAS = 254


class RegistryError(ValueError):
    """Input the registry cannot use; the message names file, resource and field."""


def where(res: Resource, path: str) -> str:
    """`file:line: Kind ns/name: field.path` for messages about one field."""
    line = res.line_of(path)
    loc = f"{res.source.file}:{line}" if line else res.source.file
    return f"{loc}: {res.key}: {path}"


def _labels(value: Any) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in (value or {}).items()})


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (value or ()))


class FileRegistry(Registry):
    """Services and workloads from loaded YAML resources. Build once with `from_resources`; immutable after."""

    def __init__(self, services: Iterable[Service], workloads: Iterable[Workload]):
        self._services = tuple(sorted(services, key=lambda s: (s.hostname, s.namespace)))
        self._workloads = tuple(sorted(workloads, key=lambda w: (w.namespace, w.name)))

    def services(self) -> tuple[Service, ...]:
        return self._services

    def workloads(self) -> tuple[Workload, ...]:
        return self._workloads

    def __repr__(self) -> str:
        return f"FileRegistry(services={len(self._services)}, workloads={len(self._workloads)})"

    @classmethod
    def from_resources(cls, resources: Iterable[Resource], domain: str = DEFAULT_DOMAIN) -> "FileRegistry":
        services: list[Service] = []
        workloads: list[Workload] = []
        allocate: list[tuple[Resource, int]] = []  # (Deployment or IP-less Pod, replicas)
        for res in resources:
            if res.kind == "Service" and res.group == "":
                services.append(kube_service(res, domain))
            elif res.kind == "ServiceEntry":
                services.extend(service_entry_services(res))
            elif res.kind == "WorkloadEntry":
                workloads.append(workload_entry(res, res.spec, res.name, res.namespace))
            elif res.kind == "Deployment":
                replicas = res.spec.get("replicas", 1)
                if not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
                    raise RegistryError(f"{where(res, 'spec.replicas')}: replicas must be 0..{MAX_REPLICAS}, "
                                        f"got {replicas!r}")
                allocate.append((res, replicas))
            elif res.kind == "Pod" and res.group == "":
                allocate.append((res, 1))  # the loader keeps no `status`, so no podIP: allocate one
        workloads.extend(_allocate(allocate))
        return cls(services, workloads)


def kube_service(res: Resource, domain: str = DEFAULT_DOMAIN) -> Service:
    spec = res.spec
    ports = []
    for i, p in enumerate(spec.get("ports") or ()):
        if "port" not in p:
            raise RegistryError(f"{where(res, f'spec.ports[{i}]')}: port is required")
        name = str(p.get("name", ""))
        proto = Protocol.parse(p["appProtocol"]) if p.get("appProtocol") else Protocol.from_port_name(name)
        if str(p.get("protocol", "TCP")).upper() == "UDP":
            proto = Protocol.UDP
        ports.append(ServicePort(name, int(p["port"]), proto, p.get("targetPort")))
    selector = spec.get("selector")
    cluster_ip = spec.get("clusterIP")
    addresses = (str(cluster_ip),) if cluster_ip and cluster_ip != "None" else ()
    export = res.annotations.get(EXPORT_TO_ANNOTATION, "")
    return Service(
        hostname=f"{res.name}.{res.namespace}.svc.{domain}",
        namespace=res.namespace,
        name=res.name,
        ports=tuple(ports),
        kind="Service",
        selector=_labels(selector) if selector is not None else None,
        addresses=addresses,
        resolution=Resolution.NONE if cluster_ip == "None" else Resolution.STATIC,
        export_to=tuple(e.strip() for e in export.split(",") if e.strip()),
        source=f"{res.key} ({res.source})",
    )


_RESOLUTIONS = {"NONE": Resolution.NONE, "STATIC": Resolution.STATIC, "DNS": Resolution.DNS,
                "DNS_ROUND_ROBIN": Resolution.DNS_ROUND_ROBIN}


def service_entry_services(res: Resource) -> list[Service]:
    spec = res.spec
    resolution_text = str(spec.get("resolution", "NONE"))
    if resolution_text not in _RESOLUTIONS:
        raise RegistryError(f"{where(res, 'spec.resolution')}: unsupported resolution {resolution_text!r} "
                            f"(supported: {', '.join(_RESOLUTIONS)})")
    ports = []
    for i, p in enumerate(spec.get("ports") or ()):
        if "number" not in p:
            raise RegistryError(f"{where(res, f'spec.ports[{i}]')}: number is required")
        ports.append(ServicePort(str(p.get("name", "")), int(p["number"]), Protocol.parse(p.get("protocol")),
                                 p.get("targetPort")))
    endpoints = tuple(workload_entry(res, e, f"{res.name}-endpoint-{i}", res.namespace, kind="ServiceEntry")
                      for i, e in enumerate(spec.get("endpoints") or ()))
    ws = spec.get("workloadSelector")
    selector = _labels(ws.get("labels")) if isinstance(ws, Mapping) else None
    return [
        Service(
            hostname=str(host),
            namespace=res.namespace,
            name=res.name,
            ports=tuple(ports),
            kind="ServiceEntry",
            selector=selector,
            addresses=_tuple_of_str(spec.get("addresses")),
            resolution=_RESOLUTIONS[resolution_text],
            mesh_external=str(spec.get("location", "MESH_EXTERNAL")) != "MESH_INTERNAL",
            export_to=_tuple_of_str(spec.get("exportTo")),
            static_endpoints=endpoints,
            subject_alt_names=_tuple_of_str(spec.get("subjectAltNames")),
            source=f"{res.key} ({res.source})",
        )
        for host in spec.get("hosts") or ()
    ]


def workload_entry(res: Resource, spec: Mapping[str, Any], name: str, namespace: str,
                   kind: str = "WorkloadEntry") -> Workload:
    """A WorkloadEntry spec (also the shape of ServiceEntry `endpoints[]`)."""
    ports = spec.get("ports") or {}
    labels = _labels(spec.get("labels") if kind != "WorkloadEntry" or spec.get("labels") else res.labels)
    return Workload(
        name=name,
        namespace=namespace,
        labels=labels,
        address=str(spec.get("address", "")),
        service_account=str(spec.get("serviceAccount") or "default"),
        kind=kind,
        port_map=MappingProxyType({str(k): int(v) for k, v in ports.items()}),
        weight=int(spec.get("weight", 0) or 0),
        locality=str(spec.get("locality", "")),
        network=str(spec.get("network", "")),
        tls_mode=tls_mode_of(labels),
    )


def _pod_template(res: Resource) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(labels, pod spec) of a Deployment's template or a Pod. Loader keeps a Pod's body in `spec` when the
    document has `spec` at top level; both shapes are accepted."""
    if res.kind == "Deployment":
        template = res.spec.get("template") or {}
        return (template.get("metadata") or {}).get("labels") or {}, template.get("spec") or {}
    return res.labels, res.spec


def _container_ports(pod_spec: Mapping[str, Any]) -> tuple[ContainerPort, ...]:
    out = []
    for container in pod_spec.get("containers") or ():
        for p in container.get("ports") or ():
            if "containerPort" in p:
                out.append(ContainerPort(str(p.get("name", "")), int(p["containerPort"])))
    return tuple(out)


def _pod_workload(res: Resource, address: str, name: str | None = None, owner: str = "") -> Workload:
    labels, pod_spec = _pod_template(res)
    return Workload(
        name=name or res.name,
        namespace=res.namespace,
        labels=_labels(labels),
        tls_mode=tls_mode_of(labels),
        address=address,
        service_account=str(pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or "default"),
        ports=_container_ports(pod_spec),
        kind="Pod" if res.kind == "Pod" else "Deployment",
        owner=owner,
    )


def _block(namespace: str, name: str) -> int:
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:2], "big")


def _allocate(items: list[tuple[Resource, int]]) -> list[Workload]:
    """Deterministic 10.A.B.(i+1) addresses; see the module docstring."""
    taken: set[int] = set()
    out: list[Workload] = []
    for res, replicas in sorted(items, key=lambda it: (it[0].namespace, it[0].name, it[0].kind)):
        block = _block(res.namespace, res.name)
        while block in taken:
            block = (block + 1) % 65536
        taken.add(block)
        prefix = f"10.{block >> 8}.{block & 0xFF}"
        if res.kind == "Pod":
            out.append(_pod_workload(res, f"{prefix}.1"))
            continue
        for i in range(replicas):
            out.append(_pod_workload(res, f"{prefix}.{i + 1}", name=f"{res.name}-{i}", owner=res.name))
    return out
