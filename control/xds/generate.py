"""One connected proxy's xDS resources: translate the mesh for its registered workload (istiod's ConfigGenerator).

`generate(mesh, registry, node)` renders a sidecar (`control.translate.render_sidecar`) or a gateway
(`render_gateway`) for the workload the proxy registered (control.registry.live.MeshRegistry), then applies
the proxy's own ports (ARCHITECTURE.md decision 4: on a shared host ports are assigned per proxy and sent
in its node metadata, docs/xds.md):

* the outbound listener `0.0.0.0_15001` binds OUTBOUND_PORT (and is named after it);
* `virtualInbound` binds INBOUND_PORT. Peers reach a sidecar at `<ip>:<INBOUND_PORT>` (explicit capture), so
  the connection's destination port is the inbound port, not the app port istiod's `destination_port`
  filter-chain match expects; for a sidecar with one app port the first port's chains (mTLS and/or
  plaintext, per PeerAuthentication) are kept without `destination_port` (the others name the same app), with
  several the chains are kept as translated (correct only under transparent capture) and a note says so;
* `inbound|...` clusters of a one-app-port sidecar send to 127.0.0.1:<app port>, whatever the service's
  targetPort (two replicas on one host cannot both listen on the targetPort).

Endpoint-only pushes (istiod's incremental EDS push): a shape's CDS/LDS/RDS are kept in a `ShapeCache` across
pushes while the config and the endpoint identities translation reads (`endpoint_identities`) are unchanged;
then only EDS is computed, each ClusterLoadAssignment once (`EndpointTable`, itself kept across pushes that move
no endpoint), and the unchanged types keep their content hashes, so the cache (control.xds.cache) re-sends EDS
alone.

Across pushes (control.serve keeps them): the `EndpointTable` advances to a new set of registered proxies by
computing the assignments of the services they move only; a full push's `ShapeCache` knows the last one's
shapes and takes their payloads where its serialized pieces are the same (after a VirtualService edit, whose
push carries the mesh over, most are the very same objects), and `SnapshotBuilder` finds the serialized bytes
of the last push's clusters and virtual hosts (`fragments`).

Pure: returns a `Generated` (resources per xDS type, as `ProxySnapshot.build` takes them, plus notes).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

from control.mesh import MeshSnapshot
from control.registry.live import MeshRegistry, app_port
from control.registry.model import Service, Workload
from control.translate import Options, Rendered, render_gateway, render_sidecar
from control.translate.clusters import ClusterSpec, build_endpoints
from control.translate.common import INBOUND_PORT, OUTBOUND_PORT
from control.xds.cache import (Payload, ProxySnapshot, canonical_json, canonical_json_spliced, content_hash,
                               resource_version)
from control.xds import vhds
from control.xds.node import ProxyNode

VIRTUAL_INBOUND = "virtualInbound"


@dataclass(frozen=True, slots=True)
class Generated:
    resources: dict  # "cds" | "eds" | "lds" | "rds" -> list of resource dicts, or a shared Payload
    notes: tuple[str, ...] = ()


class GenerateError(LookupError):
    """The proxy is not in the registry the mesh was built from."""


def _with_port(listener: dict, port: int, name: str | None = None) -> dict:
    out = copy.deepcopy(listener)
    out["address"]["socket_address"]["port_value"] = port
    if name is not None:
        out["name"] = name
    return out


def _bound(listener: dict, address: str) -> dict:
    """The listener on the node's BIND_ADDRESS where the translator said 0.0.0.0 (its name, istiod's
    `0.0.0.0_<port>`, is kept: names are how routes and stats find it)."""
    sock = (listener.get("address") or {}).get("socket_address") or {}
    if sock.get("address") != "0.0.0.0":
        return listener
    out = copy.deepcopy(listener)
    out["address"]["socket_address"]["address"] = address
    return out


def _inbound_listener(listener: dict, node: ProxyNode, notes: list[str]) -> dict:
    out = _with_port(listener, node.inbound_port)
    chains = out.get("filter_chains") or []
    if app_port(node) is not None and chains:
        # the chains of the first port (one per PeerAuthentication mode: mTLS, plaintext): they keep their
        # transport_protocol / application_protocols match and lose destination_port, which explicit
        # capture cannot preserve
        port = (chains[0].get("filter_chain_match") or {}).get("destination_port")
        kept = []
        for chain in chains:
            match = dict(chain.get("filter_chain_match") or {})
            if match.pop("destination_port", None) != port:
                continue
            chain = dict(chain)
            if match:
                chain["filter_chain_match"] = match
            else:
                chain.pop("filter_chain_match", None)
            kept.append(chain)
        out["filter_chains"] = kept
    elif len(chains) > 1:
        notes.append(f"{node.short}: {len(chains)} inbound ports share {VIRTUAL_INBOUND} on port "
                     f"{node.inbound_port}; chains match the app port, which only transparent capture preserves")
    return out


def _inbound_cluster(cluster: dict, port: int) -> dict:
    out = copy.deepcopy(cluster)
    for group in out.get("load_assignment", {}).get("endpoints", []):
        for lb in group.get("lb_endpoints", []):
            lb["endpoint"]["address"]["socket_address"]["port_value"] = port
    return out


def apply_proxy_ports(rendered: Rendered, node: ProxyNode) -> tuple[list[dict], list[dict], list[str]]:
    """(listeners, clusters, notes) of a sidecar rendering, moved to the proxy's own ports."""
    notes: list[str] = []
    listeners = []
    outbound_name = f"0.0.0.0_{OUTBOUND_PORT}"
    for lis in rendered.listeners:
        if lis.get("name") == outbound_name and node.outbound_port != OUTBOUND_PORT:
            lis = _with_port(lis, node.outbound_port, f"0.0.0.0_{node.outbound_port}")
        elif lis.get("name") == VIRTUAL_INBOUND and (node.inbound_port != INBOUND_PORT or app_port(node)):
            lis = _inbound_listener(lis, node, notes)
        listeners.append(lis)
    if node.bind_address:
        listeners = [_bound(lis, node.bind_address) for lis in listeners]
    names = [lis.get("name") for lis in listeners]
    if len(set(names)) != len(names):
        notes.append(f"{node.short}: OUTBOUND_PORT {node.outbound_port} is also a service port; "
                     f"pick another outbound port")
    port = app_port(node)
    clusters = [_inbound_cluster(c, port) if port is not None and c.get("name", "").startswith("inbound|")
                and c.get("load_assignment") else c for c in rendered.clusters]
    return listeners, clusters, notes


def render_key(node: ProxyNode, workload: Workload) -> tuple:
    """What a rendering depends on besides the mesh: translation reads the workload's namespace, labels,
    service account and ports, never its name or address (a gateway's name only appears in a note)."""
    return (node.type, workload.namespace, tuple(sorted(workload.labels.items())), workload.service_account,
            workload.ports, workload.owner if node.is_gateway else "")


def _render(mesh: MeshSnapshot, workload: Workload, node: ProxyNode, options: Options) -> Rendered:
    if node.is_gateway:
        return render_gateway(mesh, workload, options=options, endpoints=False)
    return render_sidecar(mesh, workload, options=options, endpoints=False)


def identity_parts(mesh: MeshSnapshot, services: Iterable[Service] | None = None) -> dict[tuple, tuple]:
    """Per service port of `services` (default: all) with endpoints, (host, namespace, port) -> the sorted
    (namespace, service account, labels) of the workloads behind it: what `endpoint_identities` digests."""
    seen: dict[int, tuple] = {}
    parts = {}
    for svc in mesh.services if services is None else services:
        for port in svc.ports:
            ids = set()
            for ep in mesh.endpoints(svc, port):
                w = ep.workload
                ident = seen.get(id(w))
                if ident is None:
                    ident = seen[id(w)] = (w.namespace, w.service_account, tuple(sorted(w.labels.items())))
                ids.add(ident)
            parts[(svc.hostname, svc.namespace, port.port)] = tuple(sorted(ids))
    return {k: v for k, v in parts.items() if v}


def identities_digest(parts: Mapping[tuple, tuple]) -> str:
    return content_hash(repr(sorted(parts.items())).encode())


def endpoint_identities(mesh: MeshSnapshot) -> str:
    """A digest of what CDS/LDS/RDS read from endpoints: per service port, the namespaces, service accounts and
    labels of the workloads behind it (ISTIO_MUTUAL SANs are the destination's service accounts, per
    subset). Addresses and ports are not in it: only EDS carries them. While the digest and the config are
    unchanged, a registration or a WorkloadEntry edit changes EDS alone (istiod's incremental EDS push; it
    also turns a push full when a service's service accounts change)."""
    return identities_digest(identity_parts(mesh))


def moved_services(services: Iterable[Service], before: Mapping[str, tuple], after: Mapping[str, tuple]) \
        -> frozenset[tuple[str, str]]:
    """(host, namespace) of the services whose endpoints may differ between two sets of registered proxies
    (`MeshRegistry.endpoint_sources`: node id -> (node, workload)): those whose selector matches, in its
    namespace, a proxy that came, left or changed, in its old or new form (MeshRegistry.endpoints' rule).
    istiod's EDS update names the services too (`ConfigsUpdated` of kind ServiceEntry per hostname)."""
    changed = [pair[1] for nid in before.keys() | after.keys() if before.get(nid) != after.get(nid)
               for pair in (before.get(nid), after.get(nid)) if pair is not None]
    if not changed:
        return frozenset()
    return frozenset((svc.hostname, svc.namespace) for svc in services if svc.selector and any(
        w.namespace == svc.namespace and w.matches(svc.selector) for w in changed))


@dataclass(frozen=True, slots=True)
class Shape:
    """One workload shape's rendering without endpoints: CDS/LDS/RDS serialized, and of the decoded resources
    only what `apply_proxy_ports` edits (listeners; clusters for one-app-port sidecars) plus the EDS clusters.
    The rest is dropped once serialized, so memory holds one copy of each distinct config as bytes."""

    rendered: Rendered
    payloads: Mapping[str, Payload]  # "cds" | "lds" (RDS: `rds`)
    cluster_parts: tuple[bytes, ...] = ()  # each of the clusters serialized
    eds_keys: tuple[tuple, ...] = ()  # EndpointTable.assignment_key of each of rendered.eds_clusters
    # per route configuration: (its fields but virtual_hosts, its virtual hosts serialized, their VHDS names)
    route_pieces: tuple[tuple[dict, tuple[bytes, ...], tuple[str, ...]], ...] = ()
    # RDS payloads joined from route_pieces when a proxy first needs them (SnapshotBuilder._rds): "whole", and
    # "split" (RDS, VHDS) for proxies that asked for VHDS (control.xds.vhds.split); a shape whose proxies all use
    # VHDS never holds the whole one. Shared with the next push's shape while its route configurations are the same
    rds: dict = field(default_factory=dict, compare=False)


class ShapeCache:
    """Shapes by render key, kept across pushes while `key` (config generation, endpoint identities) holds:
    an endpoint-only push reuses every shape and computes EDS alone. `proxies` keeps, per proxy, its CDS and LDS
    (its own ports applied, serialized) with what they came from (the node, the hashes of the shape's CDS and
    LDS, its notes), so a push that leaves those alone does not apply the ports again. `previous`: the shapes
    of the cache this one replaces, whose payloads a new shape takes when its pieces are the very same
    objects (a VirtualService edit carries them over: SnapshotBuilder), so they are not joined and hashed again.
    `retain` drops shapes no proxy uses and proxies gone."""

    def __init__(self, key: tuple = (), previous: "ShapeCache | None" = None):
        self.key = key
        self.shapes: dict[tuple, Shape] = {}
        self.previous: Mapping[tuple, Shape] = previous.shapes if previous is not None else {}
        self.proxies: dict[str, tuple[tuple, Payload, Payload, tuple[str, ...]]] = \
            previous.proxies if previous is not None else {}

    def __repr__(self) -> str:
        return f"ShapeCache(shapes={len(self.shapes)})"

    def retain(self, keys: Iterable[tuple], proxies: Iterable[str] | None = None) -> None:
        keep = set(keys)
        for key in [k for k in self.shapes if k not in keep]:
            del self.shapes[key]
        self.previous = {}
        if proxies is not None:
            kept = set(proxies)
            self.proxies = {k: v for k, v in self.proxies.items() if k in kept}


class EndpointTable:
    """EDS of one registry state (services, workloads, registered proxies; `key` = (files' registry generation,
    live generation) names it): each ClusterLoadAssignment serialized once and shared by every shape that lists
    the cluster (an assignment depends on its service port, subset labels, whether the DestinationRule sets a
    tls mode, and the workloads only), and `identities` (endpoint_identities). Kept across pushes while the
    registry state holds, so a config change that moves no endpoint computes no EDS.

    `advance` to a new live generation (proxies registering, leaving) keeps every assignment of the services
    whose endpoints did not move (`moved_services`) and recomputes the others: a replica registering rebuilds
    the assignments of the services it joins, not the whole mesh's (istiod's incremental EDS push recomputes
    the endpoint shards of the updated services only). A new files generation (a Service, Deployment,
    WorkloadEntry, PeerAuthentication or DestinationRule change) starts afresh."""

    def __init__(self, key: tuple = (), identities: str = ""):
        self.key = key
        self.identities = identities
        self.built = 0  # assignments computed
        self.moved: frozenset[tuple[str, str]] | None = None  # by `advance`: services recomputed (None: all)
        self._assignments: dict[tuple, tuple[bytes, str]] = {}  # key -> (JSON, resource_version)
        self._payloads: dict[int, tuple[tuple, Payload]] = {}  # id(keys) -> (keys, payload): see `payload`
        self._sources: Mapping[str, tuple] = {}
        self._parts: Mapping[tuple, tuple] = {}

    def __repr__(self) -> str:
        return f"EndpointTable(assignments={len(self._assignments)})"

    @classmethod
    def of(cls, key: tuple, mesh: MeshSnapshot, registry: MeshRegistry) -> "EndpointTable":
        """A table for `mesh`, built from nothing."""
        parts = identity_parts(mesh)
        table = cls(key, identities_digest(parts))
        table._sources, table._parts = registry.endpoint_sources(), parts
        return table

    def advance(self, key: tuple, mesh: MeshSnapshot, registry: MeshRegistry) -> "EndpointTable":
        """The table for `mesh` (registry state `key`), reusing this one's assignments of the services whose
        endpoints did not move when only the registered proxies changed (same files generation, key[0])."""
        if key == self.key:
            return self
        if not self.key or key[0] != self.key[0]:
            return EndpointTable.of(key, mesh, registry)
        sources = registry.endpoint_sources()
        moved = moved_services(registry.services(), self._sources, sources)
        parts = {k: v for k, v in self._parts.items() if (k[0], k[1]) not in moved}
        parts.update(identity_parts(mesh, [s for s in registry.services() if (s.hostname, s.namespace) in moved]))
        table = EndpointTable(key, identities_digest(parts))
        table._sources, table._parts, table.moved = sources, parts, moved
        table._assignments = {k: v for k, v in self._assignments.items() if (k[1], k[2]) not in moved}
        return table

    @staticmethod
    def assignment_key(spec: ClusterSpec) -> tuple:
        """What an assignment depends on besides the endpoints of its service port: two clusters with equal
        keys share one ClusterLoadAssignment (control.translate.clusters.build_endpoints)."""
        tls = (spec.policy or {}).get("tls")  # control.translate.clusters.mtls_checker reads its mode only
        return (spec.name, spec.service.hostname, spec.service.namespace, spec.port.port,
                tuple(sorted(spec.subset_labels.items())) if spec.subset_labels else (),
                None if tls is None else tls.get("mode") == "ISTIO_MUTUAL")

    def payload(self, mesh: MeshSnapshot, clusters: Iterable[ClusterSpec], keys: Iterable[tuple] | None = None) \
            -> Payload:
        """The EDS payload listing `clusters` (whose `assignment_key`s are `keys`, when known), endpoints from
        `mesh` (whose registry state is `key`)."""
        if isinstance(keys, tuple):  # a shape's keys: the same tuple object gets the same payload from this table
            hit = self._payloads.get(id(keys))
            if hit is not None and hit[0] is keys:
                return hit[1]
            if len(self._payloads) > 256:
                self._payloads.clear()
        clusters = tuple(clusters)
        given = keys
        keys = tuple(keys) if keys is not None else tuple(self.assignment_key(spec) for spec in clusters)
        parts, names, versions = [], [], []
        for spec, key in zip(clusters, keys, strict=True):
            found = self._assignments.get(key)
            if found is None:
                body = canonical_json(build_endpoints(mesh, (spec,))[0])
                found = self._assignments[key] = (body, resource_version(body))
                self.built += 1
            parts.append(found[0])
            versions.append(found[1])
            names.append(spec.name)
        payload = Payload.join(parts, names, versions)
        if isinstance(given, tuple):
            self._payloads[id(given)] = (given, payload)
        return payload


def _route_config_json(rest: dict, parts: tuple[bytes, ...]) -> bytes:
    """canonical_json of a route configuration: its fields but virtual_hosts, and its virtual hosts serialized."""
    if any(k > "virtual_hosts" for k in rest):  # (no RouteConfiguration field sorts after it: never, but correct)
        return canonical_json({**rest, "virtual_hosts": [json.loads(p) for p in parts]})
    return canonical_json_spliced({**rest, "virtual_hosts": []}, "virtual_hosts", list(parts))


def _same_pieces(mine: Iterable, theirs: Iterable) -> bool:
    """Equal sequences, found mostly by identity: the pieces a carried mesh gives are the last push's objects
    (a few, built afresh by every render, e.g. the passthrough cluster, are compared by value)."""
    mine, theirs = list(mine), list(theirs)
    return len(mine) == len(theirs) and all(a is b or a == b for a, b in zip(mine, theirs))


class SnapshotBuilder:
    """Snapshots for every proxy of one mesh state. Proxies with the same render key share one rendering and
    its serialized payloads: a push renders and serializes once per workload shape, not once per proxy, and
    with a `ShapeCache` kept from an earlier push of the same config, not at all (EDS only).
    Only what the proxy's ports change (its listeners; its clusters when it has one app port) is per proxy."""

    def __init__(self, mesh: MeshSnapshot, registry: MeshRegistry, options: Options = Options(),
                 shapes: ShapeCache | None = None, endpoints: EndpointTable | None = None,
                 fragments: Mapping[int, list] | None = None, vh_resources: vhds.ResourceMemo | None = None):
        self.mesh = mesh
        self.registry = registry
        self.options = options
        self.shapes = shapes if shapes is not None else ShapeCache()
        self.endpoints = endpoints if endpoints is not None else EndpointTable()
        self._eds: dict[tuple, Payload] = {}
        # id -> [dict, its JSON, its resource_version or ""]: those this push serialized or found in `fragments`,
        # an earlier push's (its mesh carried over, MeshSnapshot.with_virtual_services: the same dicts)
        self.fragments: dict[int, list] = {}
        self._earlier = fragments or {}
        self.used: set[tuple] = set()
        # VHDS resources and versions by virtual host bytes, kept across pushes (control.serve): shapes share them,
        # and an edit hashes only the virtual hosts it rebuilt
        self.vh_resources = vh_resources if vh_resources is not None else vhds.ResourceMemo()
        self.renders = 0
        self.serialized = 0  # clusters and virtual hosts serialized (not found serialized already)

    def _shape(self, node: ProxyNode, workload: Workload) -> tuple[tuple, Shape]:
        keep_clusters = not node.is_gateway and app_port(node) is not None
        key = render_key(node, workload) + (keep_clusters,)
        self.used.add(key)
        shape = self.shapes.shapes.get(key)
        if shape is None:
            shape = self.shapes.shapes[key] = self._new_shape(node, workload, keep_clusters,
                                                              self.shapes.previous.get(key))
        return key, shape

    def _new_shape(self, node: ProxyNode, workload: Workload, keep_clusters: bool, prev: Shape | None) -> Shape:
        """Render and serialize a shape; where its pieces are the very objects of `prev` (the same shape in the
        last push), take prev's payloads, assignment keys and route configurations instead of building them."""
        rendered = _render(self.mesh, workload, node, self.options)
        self.renders += 1
        cluster_parts, cluster_versions = self._serialize(rendered.clusters, versions=True)
        if prev is not None and _same_pieces(cluster_parts, prev.cluster_parts):
            cds, cluster_parts = prev.payloads["cds"], prev.cluster_parts
        else:
            cds = Payload.join(cluster_parts, [c["name"] for c in rendered.clusters], cluster_versions)
        eds_keys = tuple(EndpointTable.assignment_key(spec) for spec in rendered.eds_clusters)
        if prev is not None and eds_keys == prev.eds_keys:
            eds_keys = prev.eds_keys  # the same object: EndpointTable.payload finds its payload by it
        earlier = prev.route_pieces if prev is not None else ()
        route_pieces, same = [], prev is not None and len(rendered.routes) == len(earlier)
        for i, rc in enumerate(rendered.routes):
            rest = {k: v for k, v in rc.items() if k != "virtual_hosts"}
            parts = self._serialize(rc["virtual_hosts"])[0]
            old = earlier[i] if i < len(earlier) else None
            if old is not None and old[0] == rest and _same_pieces(parts, old[1]):
                route_pieces.append(old)
            else:
                route_pieces.append((rest, tuple(parts), vhds.names_of(rc)))
                same = False
        payloads = {"cds": cds, "lds": Payload.of(rendered.listeners)}
        slim = Rendered(listeners=rendered.listeners, routes=(), endpoints=(), notes=rendered.notes,
                        clusters=rendered.clusters if keep_clusters else (), eds_clusters=rendered.eds_clusters)
        rds = prev.rds if same and prev is not None else {}  # the same route configurations: the last push's RDS
        return Shape(slim, MappingProxyType(payloads), tuple(cluster_parts), eds_keys, tuple(route_pieces), rds)

    def _serialize(self, resources: Iterable[dict], versions: bool = False) -> tuple[list[bytes], list[str]]:
        """Each resource's canonical JSON (and, with `versions`, its `resource_version`: resources, not virtual
        hosts, have one); a dict that several shapes share (an outbound cluster, a virtual host:
        control.translate memoizes them per mesh snapshot) is serialized and hashed once per push."""
        parts, hashes = [], []
        for item in resources:
            hit = self.fragments.get(id(item))
            if hit is None or hit[0] is not item:
                hit = self._earlier.get(id(item))
                if hit is None or hit[0] is not item:
                    hit = [item, canonical_json(item), ""]  # holds `item`: its id stays its own
                    self.serialized += 1
                self.fragments[id(item)] = hit
            parts.append(hit[1])
            if versions:
                if not hit[2]:
                    hit[2] = resource_version(hit[1])
                hashes.append(hit[2])
        return parts, hashes

    def _endpoints(self, key: tuple, shape: Shape) -> Payload:
        eds = self._eds.get(key)
        if eds is None:
            eds = self._eds[key] = self.endpoints.payload(self.mesh, shape.rendered.eds_clusters, shape.eds_keys)
        return eds

    def generate(self, node: ProxyNode) -> Generated:
        workload = self.registry.workload_of(node.id)
        if workload is None:
            raise GenerateError(f"proxy {node.id!r} is not registered")
        key, shape = self._shape(node, workload)
        eds = self._endpoints(key, shape)
        made_of = (node, shape.payloads["cds"].hash, shape.payloads["lds"].hash, shape.rendered.notes)
        hit = self.shapes.proxies.get(node.id)
        if hit is None or hit[0] != made_of:  # (else the same node and shape content: the same output)
            hit = self.shapes.proxies[node.id] = (made_of, *self._own_ports(node, shape))
        _made_of, cds, lds, notes = hit
        resources = {"cds": cds, "eds": eds, "lds": lds}
        if node.vhds and shape.route_pieces:  # (no route configuration: nothing for VHDS to answer, no VHDS)
            resources["rds"], resources["vhds"] = self._rds(shape, "split")
        else:
            resources["rds"] = self._rds(shape, "whole")
        return Generated(resources, notes)

    def _rds(self, shape: Shape, kind: str):
        """The shape's RDS payload ("whole"), or (RDS, VHDS) ("split"), joined at the first proxy that needs it."""
        found = shape.rds.get(kind)
        if found is None:
            pieces = shape.route_pieces
            found = shape.rds[kind] = vhds.split(pieces, self.vh_resources) if kind == "split" else Payload.join(
                [_route_config_json(rest, parts) for rest, parts, _names in pieces], [p[0]["name"] for p in pieces])
        return found

    @staticmethod
    def _own_ports(node: ProxyNode, shape: Shape) -> tuple[Payload, Payload, tuple[str, ...]]:
        """(CDS, LDS, notes) of the shape for this proxy: its ports and bind address applied."""
        rendered, payloads = shape.rendered, shape.payloads
        if node.is_gateway:
            lds = Payload.of([_bound(lis, node.bind_address) for lis in rendered.listeners]) \
                if node.bind_address else payloads["lds"]
            return payloads["cds"], lds, tuple(rendered.notes)
        listeners, clusters, notes = apply_proxy_ports(rendered, node)
        if app_port(node) is None:
            cds = payloads["cds"]
        else:  # only the inbound clusters moved to the app port are serialized again
            cds = Payload.join([part if mine is theirs else canonical_json(mine)
                                for mine, theirs, part in zip(clusters, rendered.clusters, shape.cluster_parts)],
                               [c["name"] for c in clusters])
        return cds, Payload.of(listeners), tuple(rendered.notes) + tuple(notes)

    def snapshot(self, node: ProxyNode, changed_at: float = 0.0) -> tuple[ProxySnapshot, tuple[str, ...]]:
        gen = self.generate(node)
        return ProxySnapshot.build(gen.resources, changed_at), gen.notes


def generate(mesh: MeshSnapshot, registry: MeshRegistry, node: ProxyNode, options: Options = Options()) -> Generated:
    """The four xDS resource lists for one registered proxy."""
    return SnapshotBuilder(mesh, registry, options).generate(node)
