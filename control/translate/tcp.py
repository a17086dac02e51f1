"""L4 routing: VirtualService `tcp` and `tls` routes -> `envoy.filters.network.tcp_proxy` network filters.

istiod (pilot/pkg/networking/core/networkfilter.go, gateway.go), read and adapted:

* `tcp_proxy_filter`: a route with one destination is `{stat_prefix: <cluster>, cluster: <cluster>}`
  (buildOutboundNetworkFiltersWithSingleDestination); several are `weighted_clusters` with the route weights
  and `stat_prefix` `<vs name>.<vs namespace>` (buildOutboundNetworkFiltersWithWeightedClusters; a weight of 0
  is left out). Clusters are `outbound|<port>|<subset>|<fqdn>` (routes.destination_cluster).
* Sidecar outbound TCP port (buildSidecarOutboundTCPFilterChainOpts): `sidecar_tcp_chains`, the mesh
  VirtualServices' `tcp` rules for the port's service whose matches apply (`l4_match_applies`: istiod matchTCP);
  `destinationSubnets` give `prefix_ranges` chains, the first rule without them is the catch-all. Sidecar TLS
  port (buildSidecarOutboundTLSFilterChainOpts): `sidecar_tls_chains`, one chain per applicable `tls` match by
  `sniHosts`. Istio tells services on one port apart by destination IP; with explicit capture this control
  plane serves the port's first service only (listeners.py).
* Every tcp_proxy carries meshConfig's file access log when `accessLogFile` is set (accesslog.py).
* Gateway `tls.mode: PASSTHROUGH` server (buildGatewayNetworkFiltersFromTLSRoutes): per `tls` rule of a
  VirtualService bound to the gateway, per `match` whose `port` (if set) is the server's and whose `gateways`
  (if set) include it: a chain `filter_chain_match.server_names = match.sniHosts` (no TLS context: the
  ClientHello and the rest go to the upstream unchanged) with that rule's tcp_proxy. The listener gets
  tls_inspector.
* Gateway `TCP` server (buildGatewayNetworkFiltersFromTCPRoutes): the first `tcp` rule that applies, one chain
  without a match.
* Gateway `tls.mode: AUTO_PASSTHROUGH` server (createGatewayTCPFilterChainOpts,
  buildOutboundAutoPassthroughFilterStack): no VirtualService; one chain matched on the server's hosts as SNI
  names with `envoy.filters.network.sni_cluster` before a tcp_proxy to BlackHoleCluster: the SNI a sidecar's
  ISTIO_MUTUAL sends, `outbound_.<port>_.<subset>_.<host>`, names the gateway's SNI-DNAT copy of that cluster
  (clusters.sni_dnat_specs), and the client's mTLS goes through to the destination's sidecar untouched.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Any, Mapping

from control.istio.resources import Resource
from control.mesh import gateway_key, host_matches, hosts_intersect, resolve_host
from control.translate.accesslog import mesh_access_logs
from control.translate.common import BLACKHOLE_CLUSTER, TCP_PROXY, Proxy
from control.translate.routes import RouteContext, destination_cluster


def tcp_proxy_filter(ctx: RouteContext, vs: Resource, path: str, route: list[Mapping[str, Any]]) -> dict | None:
    """The tcp_proxy for one rule's `route` (None when no destination has a weight)."""
    clusters = []
    for k, dest in enumerate(route):
        weight = int(dest.get("weight") or 0)  # unset: 0; one destination takes everything whatever its weight
        if weight > 0 or len(route) == 1:
            clusters.append((destination_cluster(ctx, vs, f"{path}.route[{k}].destination",
                                                 dest.get("destination") or {}), weight))
    if not clusters:
        return None
    if len(clusters) == 1:
        return tcp_proxy(ctx.proxy, clusters[0][0])
    return _filter(ctx.proxy, {"@type": TCP_PROXY, "stat_prefix": f"{vs.name}.{vs.namespace}",
                               "weighted_clusters": {"clusters": [{"name": n, "weight": w} for n, w in clusters]}})


def tcp_proxy(proxy: Proxy, cluster: str) -> dict:
    """The tcp_proxy to one cluster, its stat_prefix the cluster's name (istiod
    buildOutboundNetworkFiltersWithSingleDestination, and the inbound chains' filter)."""
    return _filter(proxy, {"@type": TCP_PROXY, "stat_prefix": cluster, "cluster": cluster})


def _filter(proxy: Proxy, config: dict) -> dict:
    logs = mesh_access_logs(proxy)
    if logs:
        config["access_log"] = logs
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": config}


def l4_match_applies(ctx: RouteContext, vs: Resource, m: Mapping[str, Any]) -> bool:
    """istiod matchTCP / matchTLS for one match block: `port` (the listener's), `gateways` (a sidecar is the
    gateway `mesh`), `sourceLabels` (a subset of the proxy's labels) and `sourceNamespace` (the proxy's)."""
    if m.get("port") and int(m["port"]) != ctx.port:
        return False
    gateways = m.get("gateways")
    if gateways and ctx.gateway not in {gateway_key(str(g), vs.namespace) for g in gateways}:
        return False
    labels = ctx.proxy.workload.labels
    if any(labels.get(str(k)) != str(v) for k, v in (m.get("sourceLabels") or {}).items()):
        return False
    return not m.get("sourceNamespace") or str(m["sourceNamespace"]) == ctx.proxy.namespace


def prefix_ranges(subnets: list[Any]) -> list[dict]:
    """`destinationSubnets` (`10.0.0.0/8`, or a bare IP: /32, /128) -> filter_chain_match.prefix_ranges
    (CidrRange). istiod's ConvertAddressToCidr keeps the address as written (`10.1.2.3/8` stays `10.1.2.3`, not
    masked; Envoy masks it when it matches)."""
    out = []
    for s in subnets:
        iface = ipaddress.ip_interface(str(s))
        out.append({"address_prefix": str(iface.ip), "prefix_len": iface.network.prefixlen})
    return out


def _routing_virtual_services(proxy: Proxy, host: str, section: str):
    """(vs, index, rule) of the `section` rules of mesh VirtualServices whose hosts cover `host`."""
    domain = proxy.mesh.config.domain
    for vs in proxy.mesh_virtual_services():
        if not vs.spec.get(section):
            continue
        if not any(host_matches(resolve_host(str(h), vs.namespace, domain), host) for h in vs.spec.get("hosts") or ()):
            continue
        for i, rule in enumerate(vs.spec[section]):
            yield vs, i, rule


def sidecar_tcp_chains(proxy: Proxy, specs: Mapping[str, Any], port: int, host: str) -> list[dict] | None:
    """The chains mesh VirtualService `tcp` rules give `host`'s port, or None (the default tcp_proxy applies).

    istiod buildSidecarOutboundTCPFilterChainOpts: rules in order; a rule applies when it has no `match` or one
    of its matches applies (l4_match_applies). A rule whose applicable matches all name `destinationSubnets` gets
    a chain on those `prefix_ranges` and the next rules are still read; the first rule without them is the
    catch-all chain and ends the list."""
    ctx = RouteContext(proxy, specs, port)
    chains: list[dict] = []
    for vs, i, rule in _routing_virtual_services(proxy, host, "tcp"):
        matches = [m for m in rule.get("match") or () if l4_match_applies(ctx, vs, m)]
        if rule.get("match") and not matches:
            continue
        f = tcp_proxy_filter(ctx, vs, f"spec.tcp[{i}]", list(rule.get("route") or ()))
        if f is None:
            continue
        subnets = [s for m in matches for s in m.get("destinationSubnets") or ()]
        if matches and all(m.get("destinationSubnets") for m in matches):
            chains.append({"filter_chain_match": {"prefix_ranges": prefix_ranges(subnets)}, "filters": [f]})
            continue
        chains.append({"filters": [f]})
        break
    return chains or None


def sidecar_tls_chains(proxy: Proxy, specs: Mapping[str, Any], port: int, host: str) -> list[dict] | None:
    """The SNI chains mesh VirtualService `tls` rules give `host`'s TLS/HTTPS port, or None (no rule applies:
    the port is proxied as opaque TCP to the service).

    istiod buildSidecarOutboundTLSFilterChainOpts: per rule, per applicable match, a chain
    `filter_chain_match.server_names = sniHosts` (plus `prefix_ranges` from `destinationSubnets`) whose
    tcp_proxy carries the app's own TLS unchanged to the rule's destination; the first chain for a given
    match wins (Envoy rejects two identical matches)."""
    ctx = RouteContext(proxy, specs, port)
    chains: list[dict] = []
    seen: set[tuple] = set()
    for vs, i, rule in _routing_virtual_services(proxy, host, "tls"):
        for m in rule.get("match") or ():
            sni = sorted(str(h) for h in m.get("sniHosts") or ())
            if not sni or not l4_match_applies(ctx, vs, m):
                continue
            match: dict = {"server_names": sni}
            if m.get("destinationSubnets"):
                match["prefix_ranges"] = prefix_ranges(list(m["destinationSubnets"]))
            key = json.dumps(match)  # keys always in the same order
            f = tcp_proxy_filter(ctx, vs, f"spec.tls[{i}]", list(rule.get("route") or ()))
            if f is None or key in seen:
                continue
            seen.add(key)
            chains.append({"filter_chain_match": match, "filters": [f]})
    return chains or None


def _bound(proxy: Proxy, gw: Resource, server: Mapping[str, Any], section: str):
    """(vs, index, rule) for the `section` rules of VirtualServices bound to `gw` whose hosts meet the server's."""
    key = f"{gw.namespace}/{gw.name}"
    domain = proxy.mesh.config.domain
    server_hosts = [str(h).rpartition("/")[2].lower() for h in server.get("hosts") or ()]
    for vs in proxy.mesh.virtual_services_for(key):
        hosts = [resolve_host(str(h), vs.namespace, domain) for h in vs.spec.get("hosts") or ()]
        if not any(hosts_intersect(sh, h) for sh in server_hosts for h in hosts):
            continue
        for i, rule in enumerate(vs.spec.get(section) or ()):
            yield vs, i, rule


def gateway_passthrough_chains(proxy: Proxy, specs: Mapping[str, Any], port: int, gw: Resource,
                               server: Mapping[str, Any]) -> list[dict]:
    """Filter chains of a PASSTHROUGH server: one per applicable `tls` match, by SNI."""
    ctx = RouteContext(proxy, specs, port, f"{gw.namespace}/{gw.name}")
    chains = []
    seen: set[tuple[str, ...]] = set()
    for vs, i, rule in _bound(proxy, gw, server, "tls"):
        for j, m in enumerate(rule.get("match") or ()):
            sni = tuple(sorted(str(h) for h in m.get("sniHosts") or ()))
            if not sni or sni in seen or not l4_match_applies(ctx, vs, m):
                continue
            f = tcp_proxy_filter(ctx, vs, f"spec.tls[{i}]", list(rule.get("route") or ()))
            if f is None:
                continue
            seen.add(sni)  # istiod keeps the first chain for a set of SNI names
            chains.append({"filter_chain_match": {"server_names": list(sni)}, "filters": [f]})
    return chains


def gateway_tcp_chains(proxy: Proxy, specs: Mapping[str, Any], port: int, gw: Resource,
                       server: Mapping[str, Any]) -> list[dict]:
    """The filter chain of a TCP server: the first bound `tcp` rule that applies."""
    ctx = RouteContext(proxy, specs, port, f"{gw.namespace}/{gw.name}")
    for vs, i, rule in _bound(proxy, gw, server, "tcp"):
        matches = list(rule.get("match") or ())
        if matches and not any(l4_match_applies(ctx, vs, m) for m in matches):
            continue
        f = tcp_proxy_filter(ctx, vs, f"spec.tcp[{i}]", list(rule.get("route") or ()))
        if f is not None:
            return [{"filters": [f]}]
    return []


SNI_CLUSTER = {"name": "envoy.filters.network.sni_cluster",
               "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster"}}


def gateway_auto_passthrough_chains(proxy: Proxy, server: Mapping[str, Any]) -> list[dict]:
    """The chain of an AUTO_PASSTHROUGH server: SNI names from its hosts (`*` matches any), sni_cluster, then the
    tcp_proxy whose own cluster (BlackHoleCluster) only serves connections without SNI."""
    hosts = sorted({str(h).rpartition("/")[2] for h in server.get("hosts") or ()} - {"*"})
    chain: dict = {"filter_chain_match": {"server_names": hosts}} if hosts else {}
    chain["filters"] = [SNI_CLUSTER, tcp_proxy(proxy, BLACKHOLE_CLUSTER)]
    return [chain]
