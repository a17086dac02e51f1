"""EnvoyFilter (networking.istio.io/v1alpha3): user patches applied to a proxy's rendered listeners and routes,
as istiod applies them (pilot/pkg/networking/core/envoyfilter: http_filter_patch.go, listener_patch.go,
rc_patch.go; model/envoyfilter.go; push_context.go `EnvoyFilters`).

Which EnvoyFilters a proxy gets (`patches_for`): those of the root namespace, then those of the proxy's own
namespace, each kept when it has no `workloadSelector` or the selector's labels are all on the workload; ordered
by `priority` (stable: root namespace first, then by name, as there are no creation times in files).

The subset applied (anything else is skipped and named, `unsupported()`, also reported by `meshctl analyze`
as PYM0011 with the EnvoyFilter and the field):
- `applyTo: HTTP_FILTER` with INSERT_BEFORE, INSERT_AFTER, INSERT_FIRST, ADD, REMOVE, REPLACE, MERGE, matched on
  `context` (SIDECAR_INBOUND, SIDECAR_OUTBOUND, GATEWAY, ANY), `listener` `name` / `portNumber` (the filter
  chain's destination port on `virtualInbound`), `filterChain` `name` / `sni` / `transportProtocol` /
  `applicationProtocols` / `destinationPort` / `filter.name` (the network filter, i.e.
  envoy.filters.network.http_connection_manager) / `filter.subFilter.name` (the HTTP filter the operation is
  relative to). Without a subFilter, INSERT_BEFORE inserts first and INSERT_AFTER adds last (istiod);
- `applyTo: HTTP_ROUTE` and `VIRTUAL_HOST` with MERGE, matched on `routeConfiguration` `portNumber` / `name` /
  `portName` / `gateway` / `vhost.name` / `vhost.route.name` / `vhost.route.action`. Inbound routes (sidecar)
  are those inline in the inbound listener, outbound ones the RDS route configurations.
MERGE is protobuf's merge on Envoy JSON: messages merge field by field, lists append, scalars and `@type`
(Any) values replace, map entries of `typed_per_filter_config` replace by key.

The patch `value` is Envoy JSON as users write it (`@type` on typed configs, a udpa TypedStruct allowed): it is
copied into the output unchanged, so Envoy and pyproxy read what the user wrote.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from control.istio.resources import Resource
from control.mesh import MeshSnapshot, selector_labels
from control.registry.model import Workload
from control.translate.common import Notes

HCM = "envoy.filters.network.http_connection_manager"
HTTP_FILTER_OPS = ("INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "ADD", "REMOVE", "REPLACE", "MERGE")
SUPPORTED = {"HTTP_FILTER": HTTP_FILTER_OPS, "HTTP_ROUTE": ("MERGE",), "VIRTUAL_HOST": ("MERGE",)}
CONTEXTS = ("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY")
LISTENER_FIELDS = ("portNumber", "name", "filterChain")
CHAIN_FIELDS = ("name", "sni", "transportProtocol", "applicationProtocols", "destinationPort", "filter")
ROUTE_CONFIG_FIELDS = ("portNumber", "portName", "gateway", "name", "vhost")
VIRTUAL_LISTENERS = ("virtualInbound", "virtualOutbound")


@dataclass(frozen=True, slots=True)
class Patch:
    """One configPatch of one EnvoyFilter (`resource`, `index` in spec.configPatches)."""

    resource: Resource
    index: int
    apply_to: str
    context: str
    match: Mapping[str, Any]
    operation: str
    value: Any

    @property
    def where(self) -> str:
        return f"EnvoyFilter {self.resource.namespace}/{self.resource.name} spec.configPatches[{self.index}]"


def unsupported(patch: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field path under the configPatch, why) when pyproxy mesh does not apply this patch, else None."""
    apply_to = str(patch.get("applyTo") or "")
    body = patch.get("patch") if isinstance(patch.get("patch"), Mapping) else {}
    op = str(body.get("operation") or "")
    if apply_to not in SUPPORTED:
        return "applyTo", (f"applyTo {apply_to or 'INVALID'} is not supported (supported: "
                           f"{', '.join(SUPPORTED)}); the patch is skipped")
    if op not in SUPPORTED[apply_to]:
        return "patch.operation", (f"operation {op or 'INVALID'} on {apply_to} is not supported (supported: "
                                   f"{', '.join(SUPPORTED[apply_to])}); the patch is skipped")
    match = patch.get("match") if isinstance(patch.get("match"), Mapping) else {}
    context = str(match.get("context") or "ANY")
    if context not in CONTEXTS:
        return "match.context", f"context {context} is not supported (supported: {', '.join(CONTEXTS)})"
    for key in match:
        if key not in ("context", "listener", "routeConfiguration"):
            return f"match.{key}", f"match.{key} is not supported; the patch is skipped"
    listener = match.get("listener") if isinstance(match.get("listener"), Mapping) else {}
    for key in listener:
        if key not in LISTENER_FIELDS:
            return f"match.listener.{key}", f"match.listener.{key} is not supported; the patch is skipped"
    chain = listener.get("filterChain") if isinstance(listener.get("filterChain"), Mapping) else {}
    for key in chain:
        if key not in CHAIN_FIELDS:
            return (f"match.listener.filterChain.{key}",
                    f"match.listener.filterChain.{key} is not supported; the patch is skipped")
    rc = match.get("routeConfiguration") if isinstance(match.get("routeConfiguration"), Mapping) else {}
    for key in rc:
        if key not in ROUTE_CONFIG_FIELDS:
            return (f"match.routeConfiguration.{key}",
                    f"match.routeConfiguration.{key} is not supported; the patch is skipped")
    if apply_to == "HTTP_FILTER" and rc:
        return "match.routeConfiguration", "HTTP_FILTER patches match a listener, not a routeConfiguration"
    if apply_to != "HTTP_FILTER" and listener:
        return "match.listener", f"{apply_to} patches match a routeConfiguration, not a listener"
    if op != "REMOVE" and not isinstance(body.get("value"), Mapping):
        return "patch.value", f"operation {op} needs a patch.value (Envoy JSON)"
    return None


def unsupported_spec(spec: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(field path, why) for every part of an EnvoyFilter spec that is not applied."""
    if spec.get("targetRefs"):
        yield "spec.targetRefs", "targetRefs is not supported; use workloadSelector"
    for i, patch in enumerate(spec.get("configPatches") or ()):
        if isinstance(patch, Mapping):
            found = unsupported(patch)
            if found is not None:
                yield f"spec.configPatches[{i}].{found[0]}", found[1]


def _selects(ef: Resource, workload: Workload) -> bool:
    sel = selector_labels(ef.spec, "workloadSelector")
    return sel is None or workload.matches(sel)


def patches_for(mesh: MeshSnapshot, workload: Workload, notes: Notes | None = None) -> list[Patch]:
    """The applicable configPatches for one proxy, in istiod's order (priority, root namespace first)."""
    root = mesh.config.root_namespace
    namespaces = [root] + ([workload.namespace] if workload.namespace != root else [])
    filters: list[Resource] = []
    for ns in namespaces:
        found = [r for r in mesh.resources if r.kind == "EnvoyFilter" and r.namespace == ns]
        filters += sorted((r for r in found if _selects(r, workload)), key=lambda r: r.name)
    filters.sort(key=lambda r: int(r.spec.get("priority") or 0))
    out = []
    for ef in filters:
        if ef.spec.get("targetRefs"):
            if notes is not None:
                notes.add(ef, "spec.targetRefs", "targetRefs is not supported; this EnvoyFilter is skipped")
            continue
        for i, raw in enumerate(ef.spec.get("configPatches") or ()):
            if not isinstance(raw, Mapping):
                continue
            why = unsupported(raw)
            if why is not None:
                if notes is not None:
                    notes.add(ef, f"spec.configPatches[{i}].{why[0]}", why[1])
                continue
            match = raw.get("match") or {}
            body = raw["patch"]
            out.append(Patch(ef, i, str(raw["applyTo"]), str(match.get("context") or "ANY"), match,
                             str(body["operation"]), thaw(body.get("value"))))
    return out


def thaw(value: Any) -> Any:
    """The frozen YAML of a resource as plain dicts and lists (what the rendered output is made of)."""
    if isinstance(value, Mapping):
        return {str(k): thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


# ---------------------------------------------------------------- merge (protobuf MergeFrom on JSON)

REPLACED_MAPS = ("typed_per_filter_config", "typedPerFilterConfig")


def proto_merge(dst: dict, src: Mapping[str, Any]) -> dict:
    """`dst` with `src` merged in, as proto.Merge: sub-messages merge, lists append, scalars replace; an Any
    (a dict with `@type`) replaces whole; `typed_per_filter_config` entries replace by key."""
    out = dict(dst)
    for key, value in src.items():
        old = out.get(key)
        if key in REPLACED_MAPS and isinstance(value, Mapping) and isinstance(old, Mapping):
            out[key] = {**old, **copy.deepcopy(dict(value))}
        elif isinstance(value, Mapping) and isinstance(old, Mapping) and "@type" not in value:
            out[key] = proto_merge(dict(old), value)
        elif isinstance(value, list) and isinstance(old, list):
            out[key] = old + copy.deepcopy(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------- HTTP filters

def _port(listener: Mapping[str, Any]) -> int:
    return int(((listener.get("address") or {}).get("socket_address") or {}).get("port_value") or 0)


def _listener_matches(p: Patch, listener: Mapping[str, Any]) -> bool:
    lm = p.match.get("listener") or {}
    if lm.get("name") and lm["name"] != listener.get("name"):
        return False
    port = int(lm.get("portNumber") or 0)
    if port and listener.get("name") not in VIRTUAL_LISTENERS and port != _port(listener):
        return False
    return True


def _chain_matches(p: Patch, listener: Mapping[str, Any], chain: Mapping[str, Any]) -> bool:
    lm = p.match.get("listener") or {}
    cm = lm.get("filterChain") or {}
    fcm = chain.get("filter_chain_match") or {}
    port = int(lm.get("portNumber") or 0)
    if port and listener.get("name") in VIRTUAL_LISTENERS and fcm.get("destination_port") != port:
        return False
    if cm.get("name") and cm["name"] != chain.get("name"):
        return False
    if cm.get("sni") and cm["sni"] not in (fcm.get("server_names") or ()):
        return False
    if cm.get("transportProtocol") and cm["transportProtocol"] != fcm.get("transport_protocol"):
        return False
    if cm.get("applicationProtocols"):
        wanted = [a.strip() for a in str(cm["applicationProtocols"]).split(",")]
        if not any(a in (fcm.get("application_protocols") or ()) for a in wanted):
            return False
    if cm.get("destinationPort") and int(cm["destinationPort"]) != fcm.get("destination_port"):
        return False
    return True


def _sub_filter(p: Patch) -> str:
    f = ((p.match.get("listener") or {}).get("filterChain") or {}).get("filter") or {}
    return str((f.get("subFilter") or {}).get("name") or "")


def _network_filter_matches(p: Patch, name: str) -> bool:
    f = ((p.match.get("listener") or {}).get("filterChain") or {}).get("filter") or {}
    return not f.get("name") or f["name"] == name


def patch_http_filters(filters: list[dict], patches: Iterable[Patch]) -> list[dict]:
    """istiod's patchHTTPFilters on one connection manager's `http_filters` (the patches already matched)."""
    patches = list(patches)
    for p in patches:
        sub = _sub_filter(p)
        value = p.value
        if p.operation == "ADD" or (p.operation == "INSERT_AFTER" and not sub):
            filters = filters + [copy.deepcopy(value)]
        elif p.operation == "INSERT_FIRST" or (p.operation == "INSERT_BEFORE" and not sub):
            filters = [copy.deepcopy(value)] + filters
        elif p.operation in ("INSERT_BEFORE", "INSERT_AFTER"):
            at = next((i for i, f in enumerate(filters) if f.get("name") == sub), None)
            if at is not None:
                at += p.operation == "INSERT_AFTER"
                filters = filters[:at] + [copy.deepcopy(value)] + filters[at:]
        elif p.operation == "REPLACE" and sub:
            filters = [copy.deepcopy(value) if f.get("name") == sub else f for f in filters]
        elif p.operation == "REMOVE" and sub:
            filters = [f for f in filters if f.get("name") != sub]
    for p in patches:
        if p.operation == "MERGE" and _sub_filter(p):
            filters = [_merge_filter(f, p.value) if f.get("name") == _sub_filter(p) else f for f in filters]
    return filters


def _merge_filter(f: dict, value: Mapping[str, Any]) -> dict:
    """istiod's mergeHTTPFilter: the name may be replaced; typed configs merge when both have the same @type."""
    if "typed_config" not in f:
        return f
    out = dict(f)
    if value.get("name"):
        out["name"] = value["name"]
    theirs = value.get("typed_config")
    if isinstance(theirs, Mapping):
        mine = f["typed_config"]
        if mine.get("@type") == theirs.get("@type"):
            out["typed_config"] = proto_merge(dict(mine), {k: v for k, v in theirs.items() if k != "@type"})
    return out


# ---------------------------------------------------------------- routes and virtual hosts

def _route_config_port(name: str, context: str) -> tuple[int, str, str]:
    """(port, port name, gateway) of a route configuration by its name, as istiod parses it."""
    if context == "GATEWAY":
        parts = name.split(".")
        port = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        port_name = parts[2] if len(parts) > 2 else ""
        gateway = f"{parts[4]}/{parts[3]}" if len(parts) > 4 else ""
        return port, port_name, gateway
    if name.startswith("inbound|"):
        fields = name.split("|")
        return (int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0), "", ""
    return (int(name) if name.isdigit() else 0), "", ""


def _route_config_matches(p: Patch, rc: Mapping[str, Any], context: str) -> bool:
    m = p.match.get("routeConfiguration") or {}
    port, port_name, gateway = _route_config_port(str(rc.get("name") or ""), context)
    if m.get("portNumber") and int(m["portNumber"]) != port:
        return False
    if m.get("name") and m["name"] != rc.get("name"):
        return False
    if context == "GATEWAY":
        if m.get("portName") and m["portName"] != port_name:
            return False
        if m.get("gateway") and m["gateway"] != gateway:
            return False
    return True


def _vhost_matches(p: Patch, vhost: Mapping[str, Any]) -> bool:
    vm = (p.match.get("routeConfiguration") or {}).get("vhost") or {}
    return not vm.get("name") or vm["name"] == vhost.get("name")


ACTIONS = {"ROUTE": "route", "REDIRECT": "redirect", "DIRECT_RESPONSE": "direct_response"}


def _route_matches(p: Patch, route: Mapping[str, Any]) -> bool:
    rm = ((p.match.get("routeConfiguration") or {}).get("vhost") or {}).get("route") or {}
    if rm.get("name") and rm["name"] != route.get("name"):
        return False
    action = str(rm.get("action") or "ANY")
    return action == "ANY" or ACTIONS.get(action, "") in route


def patch_route_configuration(rc: dict, patches: Iterable[Patch], context: str) -> dict:
    """VIRTUAL_HOST and HTTP_ROUTE MERGE patches applied to one route configuration (a new dict)."""
    mine = [p for p in patches if p.apply_to in ("VIRTUAL_HOST", "HTTP_ROUTE") and _context_matches(p, context)
            and _route_config_matches(p, rc, context)]
    if not mine:
        return rc
    vhosts = []
    for vh in rc.get("virtual_hosts") or ():
        for p in mine:
            if p.apply_to == "VIRTUAL_HOST" and _vhost_matches(p, vh):
                vh = proto_merge(vh, p.value)
        routes = []
        for route in vh.get("routes") or ():
            for p in mine:
                if p.apply_to == "HTTP_ROUTE" and _vhost_matches(p, vh) and _route_matches(p, route):
                    route = proto_merge(route, p.value)
            routes.append(route)
        vhosts.append({**vh, "routes": routes} if "routes" in vh else vh)
    return {**rc, "virtual_hosts": vhosts}


# ---------------------------------------------------------------- a whole proxy

def _context_matches(p: Patch, context: str) -> bool:
    return p.context in ("ANY", context)


def listener_context(listener: Mapping[str, Any], proxy_kind: str) -> str:
    if proxy_kind == "router":
        return "GATEWAY"
    return "SIDECAR_INBOUND" if listener.get("traffic_direction") == "INBOUND" else "SIDECAR_OUTBOUND"


def patch_listener(listener: dict, patches: list[Patch], proxy_kind: str) -> dict:
    """HTTP_FILTER patches on every matching connection manager of a listener; for a sidecar's inbound
    listener, route patches on its inline route configurations (a new dict; the input is not changed)."""
    context = listener_context(listener, proxy_kind)
    http = [p for p in patches if p.apply_to == "HTTP_FILTER" and _context_matches(p, context)
            and _listener_matches(p, listener)]
    inline_routes = context == "SIDECAR_INBOUND" and any(p.apply_to != "HTTP_FILTER" for p in patches)
    if not http and not inline_routes:
        return listener
    chains = []
    for chain in listener.get("filter_chains") or ():
        mine = [p for p in http if _chain_matches(p, listener, chain)]
        filters = []
        for f in chain.get("filters") or ():
            if f.get("name") == HCM:
                hcm = dict(f.get("typed_config") or {})
                applicable = [p for p in mine if _network_filter_matches(p, HCM)]
                if applicable:
                    hcm["http_filters"] = patch_http_filters(list(hcm.get("http_filters") or ()), applicable)
                if inline_routes and isinstance(hcm.get("route_config"), dict):
                    hcm["route_config"] = patch_route_configuration(hcm["route_config"], patches, context)
                f = {**f, "typed_config": hcm}
            filters.append(f)
        chains.append({**chain, "filters": filters})
    return {**listener, "filter_chains": chains}


def rds_context(proxy_kind: str) -> str:
    return "GATEWAY" if proxy_kind == "router" else "SIDECAR_OUTBOUND"
