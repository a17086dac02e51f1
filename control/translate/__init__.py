"""translate: the mesh snapshot -> one proxy's Envoy v3 resources (LDS, RDS, CDS, EDS), like istiod's ConfigGen.

Pure functions: `render_sidecar(mesh, "reviews-v1")` and `render_gateway(mesh, "istio-ingressgateway")` return
a `Rendered` with plain JSON-like dicts in Envoy's v3 JSON shape (snake_case fields, `@type` on every resource
and typed_config), the same dicts pyproxy decodes and real Envoy accepts. One module per output:
listeners.py, routes.py, clusters.py (+ policy.py), endpoints.py; common.py holds names, values and the
extension seams (security and telemetry add HTTP filters, listener and cluster changes there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from control.istio.resources import Resource
from control.mesh import MeshSnapshot
from control.registry.model import Workload
from control.translate import clusters as cds
from control.translate import envoy_filter as ef
from control.translate import listeners as lds
from control.translate import routes as rds
from control.translate.common import Extensions, Notes, Options, TranslateError, make_proxy

# istiod's default ingress/egress gateway deployments (manifests/charts/gateways): used when the config
# directory has no Deployment of that name.
DEFAULT_GATEWAYS = {
    "istio-ingressgateway": {"app": "istio-ingressgateway", "istio": "ingressgateway"},
    "istio-egressgateway": {"app": "istio-egressgateway", "istio": "egressgateway"},
}


@dataclass(frozen=True, slots=True)
class Rendered:
    """One proxy's resources, grouped by xDS type, each list sorted by resource name."""

    listeners: tuple[dict, ...]
    routes: tuple[dict, ...]
    clusters: tuple[dict, ...]
    endpoints: tuple[dict, ...]
    notes: tuple[str, ...] = ()
    # the EDS clusters, sorted by name: what `endpoints` is computed from, so a caller whose only change is
    # endpoints can recompute EDS (`clusters.build_endpoints`) without rendering the rest again
    eds_clusters: tuple[cds.ClusterSpec, ...] = ()

    def as_dict(self) -> dict:
        return {"listeners": list(self.listeners), "routes": list(self.routes), "clusters": list(self.clusters),
                "endpoints": list(self.endpoints)}


def find_workload(mesh: MeshSnapshot, name: str, namespace: str | None = None) -> Workload:
    found = mesh.workload(name, namespace)
    if found is None:
        known = ", ".join(sorted({f"{w.namespace}/{w.owner or w.name}" for w in mesh.workloads})) or "none"
        where = f" in namespace {namespace}" if namespace else ""
        raise TranslateError(f"no workload named {name!r}{where} (Deployment, Pod or WorkloadEntry); "
                             f"known workloads: {known}")
    return found


def render_sidecar(mesh: MeshSnapshot, workload: str | Workload, namespace: str | None = None,
                   options: Options = Options(), endpoints: bool = True) -> Rendered:
    """The sidecar configuration of one workload (by Deployment/Pod/WorkloadEntry name or a Workload).
    `endpoints=False` leaves EDS empty (`eds_clusters` still says which clusters it would list)."""
    wl = workload if isinstance(workload, Workload) else find_workload(mesh, workload, namespace)
    proxy = make_proxy(mesh, wl, "sidecar", options)
    specs = cds.outbound_specs(proxy)
    index = cds.spec_index(specs)
    eds_clusters = cds.eds_clusters(specs)
    patches = ef.patches_for(mesh, wl, proxy.notes)
    route_configs = [ef.patch_route_configuration(rc, patches, ef.rds_context("sidecar"))
                     for rc in rds.sidecar_route_configs(proxy, index)]
    by_name = {r["name"]: r for r in route_configs}
    listeners = [ef.patch_listener(lis, patches, "sidecar") for lis in lds.sidecar_listeners(proxy, by_name, index)]
    return Rendered(
        listeners=tuple(sorted(listeners, key=lambda l: l["name"])),
        routes=() if options.inline_routes else tuple(route_configs),
        clusters=tuple(cds.build_clusters(proxy, specs)),
        endpoints=tuple(cds.build_endpoints(mesh, eds_clusters)) if endpoints else (),
        notes=tuple(proxy.notes.items),
        eds_clusters=eds_clusters,
    )


def gateway_workload(mesh: MeshSnapshot, name: str, namespace: str | None = None) -> Workload:
    """The gateway's workload: a Deployment/Pod of that name, else Istio's default gateway labels."""
    found = mesh.workload(name, namespace)
    if found is not None:
        return found
    if name in DEFAULT_GATEWAYS:
        return Workload(name=name, namespace=namespace or mesh.config.root_namespace,
                        labels=DEFAULT_GATEWAYS[name], address="0.0.0.0", service_account=f"{name}-service-account",
                        kind="Deployment", owner=name)
    return find_workload(mesh, name, namespace)


def render_gateway(mesh: MeshSnapshot, name: str | Workload = "istio-ingressgateway", namespace: str | None = None,
                   options: Options = Options(), endpoints: bool = True) -> Rendered:
    """The configuration of a gateway proxy (by deployment name or a Workload, e.g. a registered proxy):
    listeners for the servers of the Gateways selecting it, routes from the VirtualServices bound to them,
    clusters and endpoints for every service."""
    wl = name if isinstance(name, Workload) else gateway_workload(mesh, name, namespace)
    proxy = make_proxy(mesh, wl, "router", options)
    specs = cds.outbound_specs(proxy)
    servers = lds.gateway_servers(proxy)
    if any(lds.l4_server(server) == "auto_passthrough" for entries in servers.values() for _, server in entries):
        specs = specs + cds.sni_dnat_specs(specs)  # istiod: ContainsAutoPassthroughGateways
    index = cds.spec_index(specs)
    eds_clusters = cds.eds_clusters(specs)
    by_route: dict[str, tuple[int, list]] = {}
    for port, entries in servers.items():
        for gw, server in entries:
            if lds.l4_server(server) is not None:
                continue  # tcp_proxy chains, no route configuration
            by_route.setdefault(lds.gateway_route_name(gw, server), (port, []))[1].append((gw, server))
    patches = ef.patches_for(mesh, wl, proxy.notes)
    route_configs = [ef.patch_route_configuration(
        rds.route_configuration(rname, rds.gateway_virtual_hosts(proxy, index, port, entries)), patches, "GATEWAY")
        for rname, (port, entries) in sorted(by_route.items())]
    listeners = [ef.patch_listener(lis, patches, "router")
                 for lis in lds.gateway_listeners(proxy, servers, {r["name"]: r for r in route_configs}, index)]
    if not servers:
        proxy.notes.add(None, "", f"no Gateway selects {wl.namespace}/{wl.owner or wl.name} "
                                  f"(labels {dict(wl.labels)}): it has no listeners")
    return Rendered(
        listeners=tuple(listeners),
        routes=() if options.inline_routes else tuple(route_configs),
        clusters=tuple(cds.build_clusters(proxy, specs)),
        endpoints=tuple(cds.build_endpoints(mesh, eds_clusters)) if endpoints else (),
        notes=tuple(proxy.notes.items),
        eds_clusters=eds_clusters,
    )


# MeshSnapshot.memo kinds (a key's first item) whose values read no VirtualService, directly or through another
# entry: kept across a VirtualService edit (MeshSnapshot.with_virtual_services). A kind not listed is dropped,
# so a new memo starts out safe. "vhost" and "http_proxy_vhost" are keyed by the identity of the routes / virtual
# host they wrap (and hold it): those of an edited VirtualService are simply not asked for again.
VIRTUAL_SERVICE_FREE_MEMOS = frozenset({
    "endpoints", "destination_rule", "visible_services", "peer_authentication", "service_accounts",
    "cluster_specs", "outbound_cluster", "service_domains", "default_routes", "vhost", "http_proxy_vhost",
})


def kept_across_virtual_service_edit(virtual_services: Iterable[Resource]) -> Callable[[tuple], bool]:
    """Which memo entries of the last snapshot stay valid when the VirtualServices become `virtual_services` and
    nothing else changes: the VirtualService-free kinds, and the routes of each VirtualService still there, the
    same object (an edited one is a new Resource: its routes are built again, and with them the virtual hosts
    and route configurations that list them; routes.shared_http_routes keys them by the VirtualService's id).
    The one that lists the VirtualServices a proxy sees (`mesh_virtual_services`) is built again."""
    present = {id(vs) for vs in virtual_services}

    def keep(key: tuple) -> bool:
        return key[0] in VIRTUAL_SERVICE_FREE_MEMOS or (key[0] == "http_routes" and key[1] in present)
    return keep


__all__ = ["Extensions", "Notes", "Options", "Rendered", "TranslateError", "find_workload", "render_gateway",
           "render_sidecar"]
