"""LDS: the listeners of a sidecar or a gateway, each an HTTP connection manager in front of the routes.

Sidecar (istiod listener_builder.go, adapted to ARCHITECTURE.md decision 5, explicit outbound capture):

* `0.0.0.0_15001` binds 0.0.0.0:15001: the app sends every outbound request here (HTTP_PROXY style, with the
  service in the Host header or absolute URI, `reviews:9080`). Istio's 15001 is `virtualOutbound`, which only
  hands connections to per-port listeners by their original destination (`use_original_dst`); with explicit
  capture there is no original destination, so this listener is what istiod builds for a Sidecar egress
  listener of protocol HTTP_PROXY: one HTTP connection manager over the route configuration `http_proxy`,
  i.e. every port's virtual hosts merged (port-80 hosts with all domains, other ports by `host:port`).
* `0.0.0.0_<port>` per HTTP service port (Istio's per-port outbound listeners, `bind_to_port: false`: they
  receive nothing until transparent capture hands them connections via SO_ORIGINAL_DST, a later option). Their
  connection manager uses the RDS route configuration named by the port (`"9080"`). A TCP port gets a
  `tcp_proxy` to the first service on it.
* `virtualInbound` binds 0.0.0.0:15006 (only when the workload serves a port): one filter chain per workload port (`filter_chain_match.destination_port`)
  whose connection manager carries an inline route configuration `inbound|<port>||` with virtual host
  `inbound|http|<port>` (`*`) -> `inbound|<port>||<fqdn>` -> 127.0.0.1:<port>.

Connection managers use RDS `{route_config_name, config_source: {ads: {}}}` unless `Options.inline_routes`.
Settings istiod puts on every sidecar HCM: `use_remote_address` false (gateways: true), `stream_idle_timeout`
0s, `normalize_path` true, websocket upgrades, HTTP/1.0 accepted; inbound and gateways send `server:
istio-envoy`. HTTP filters: security contributors, envoy.filters.http.fault, envoy.filters.http.cors, stats /
rate-limit contributors, envoy.filters.http.router.

Gateway (istiod gateway.go): one listener `0.0.0.0_<port>` per server port. Plain HTTP servers share one chain
with RDS `http.<port>`; each terminating HTTPS server (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL) gets a chain
matched on SNI (`server_names` = its hosts) with a DownstreamTlsContext (`credentialName` -> SDS
`kubernetes://<name>`, or file paths) and RDS `https.<port>.<portName>.<gateway>.<namespace>`.
PASSTHROUGH / AUTO_PASSTHROUGH / TCP / TLS servers are reported as not translated yet.
"""
from __future__ import annotations

from typing import Any, Mapping

from control.istio.resources import Resource
from control.registry.model import Protocol
from control.translate.clusters import InboundPort, inbound_ports
from control.translate.common import (ADS, CORS, DOWNSTREAM_TLS, FAULT, HCM, INBOUND_PORT, LISTENER, OUTBOUND_PORT,
                                      ROUTER, TCP_PROXY, TLS_INSPECTOR, Proxy, cluster_name)
from control.translate.routes import HTTP_PROXY_ROUTE, retry_policy, route_configuration, RouteContext

INBOUND_RETRY = {"attempts": 2, "retryOn": "reset-before-request"}  # istiod BuildDefaultHTTPInboundRoute
TERMINATING_TLS = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL")


def http_filters(proxy: Proxy, direction: str) -> list[dict]:
    ext = proxy.options.extensions
    out: list[dict] = []
    for contribute in ext.http_filters_authn:
        out += contribute(proxy, direction)
    out.append({"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT}})
    out.append({"name": "envoy.filters.http.cors", "typed_config": {"@type": CORS}})
    for contribute in ext.http_filters_before_router:
        out += contribute(proxy, direction)
    out.append({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}})
    return out


def _inline(route_config: dict) -> dict:
    return {k: v for k, v in route_config.items() if k != "@type"}


def http_connection_manager(proxy: Proxy, direction: str, stat_prefix: str, route_name: str,
                            routes: Mapping[str, dict], inline: bool | None = None) -> dict:
    """The HCM network filter. `routes` maps route names to RouteConfigurations (for inlining)."""
    inline = proxy.options.inline_routes if inline is None else inline
    hcm: dict = {"@type": HCM, "stat_prefix": stat_prefix}
    if inline:
        hcm["route_config"] = _inline(routes[route_name])
    else:
        hcm["rds"] = {"route_config_name": route_name, "config_source": dict(ADS)}
    hcm["http_filters"] = http_filters(proxy, direction)
    hcm["use_remote_address"] = direction == "gateway"
    if direction != "outbound":
        hcm["server_name"] = "istio-envoy"
    hcm["stream_idle_timeout"] = "0s"
    hcm["normalize_path"] = True
    hcm["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    hcm["http_protocol_options"] = {"accept_http_10": True}
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def _address(port: int, ip: str = "0.0.0.0") -> dict:
    return {"socket_address": {"address": ip, "port_value": port}}


def _listener(name: str, port: int, direction: str, chains: list[dict], **extra: Any) -> dict:
    return {"@type": LISTENER, "name": name, "address": _address(port), "traffic_direction": direction,
            "filter_chains": chains, **extra}


def _tcp_proxy(stat: str, cluster: str) -> dict:
    return {"name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": TCP_PROXY, "stat_prefix": stat, "cluster": cluster}}


# --- sidecar ---------------------------------------------------------------------------------------------

def outbound_listeners(proxy: Proxy, routes: Mapping[str, dict]) -> list[dict]:
    name = f"0.0.0.0_{OUTBOUND_PORT}"
    out = [_listener(name, OUTBOUND_PORT, "OUTBOUND", [{"filters": [
        http_connection_manager(proxy, "outbound", f"outbound_{name}", HTTP_PROXY_ROUTE, routes)]}])]
    tcp_ports: dict[int, str] = {}
    http_ports: set[int] = set()
    for svc in proxy.visible_services():
        for sp in svc.ports:
            if sp.protocol.is_http:
                http_ports.add(sp.port)
            elif sp.protocol != Protocol.UDP:
                tcp_ports.setdefault(sp.port, cluster_name("outbound", sp.port, "", svc.hostname))
    for port in sorted(http_ports):
        lname = f"0.0.0.0_{port}"
        out.append(_listener(lname, port, "OUTBOUND", [{"filters": [
            http_connection_manager(proxy, "outbound", f"outbound_{lname}", str(port), routes)]}],
            bind_to_port=False))
    for port in sorted(set(tcp_ports) - http_ports):
        lname = f"0.0.0.0_{port}"
        out.append(_listener(lname, port, "OUTBOUND", [{"filters": [_tcp_proxy(tcp_ports[port], tcp_ports[port])]}],
                             bind_to_port=False))
    return out


def inbound_route_configuration(proxy: Proxy, ip: InboundPort) -> dict:
    ctx = RouteContext(proxy, {}, ip.port)
    action: dict = {"cluster": ip.cluster, "timeout": "0s"}
    if not ip.service_port.protocol.is_http2:  # istiod: not on gRPC/HTTP2 ports
        action["retry_policy"] = retry_policy(ctx, None, "", INBOUND_RETRY, False)
    action["max_grpc_timeout"] = "0s"
    vhost = {"name": f"inbound|http|{ip.port}", "domains": ["*"],
             "routes": [{"name": "default", "match": {"prefix": "/"}, "route": action}]}
    return route_configuration(f"inbound|{ip.port}||", [vhost])


def inbound_listener(proxy: Proxy) -> dict:
    chains = []
    for ip in inbound_ports(proxy):
        match = {"destination_port": ip.port}
        stat = f"inbound_0.0.0.0_{ip.port}"
        if ip.service_port.protocol.is_http:
            rc = inbound_route_configuration(proxy, ip)
            hcm = http_connection_manager(proxy, "inbound", stat, rc["name"], {rc["name"]: rc}, inline=True)
            chains.append({"filter_chain_match": match, "filters": [hcm], "name": ip.cluster})
        else:
            chains.append({"filter_chain_match": match, "filters": [_tcp_proxy(ip.cluster, ip.cluster)],
                           "name": ip.cluster})
    return _listener("virtualInbound", INBOUND_PORT, "INBOUND", chains)


def sidecar_listeners(proxy: Proxy, routes: Mapping[str, dict]) -> list[dict]:
    """Outbound listeners, and `virtualInbound` when the workload serves some port (Envoy rejects a listener
    without filter chains; istiod's passthrough chain for unknown ports is not emitted: with explicit capture
    it would loop back into 15006)."""
    out = outbound_listeners(proxy, routes)
    if inbound_ports(proxy):
        out.append(inbound_listener(proxy))
    for contribute in proxy.options.extensions.listener_contributors:
        out = [contribute(proxy, listener) for listener in out]
    return out


# --- gateway ---------------------------------------------------------------------------------------------

def gateway_route_name(gw: Resource, server: Mapping[str, Any]) -> str:
    port = server.get("port") or {}
    tls = server.get("tls") or {}
    if str(port.get("protocol", "")).upper() == "HTTPS" or tls.get("mode") in TERMINATING_TLS:
        return f"https.{port.get('number')}.{port.get('name', '')}.{gw.name}.{gw.namespace}"
    return f"http.{port.get('number')}"


def _sds(name: str) -> dict:
    return {"name": name, "sds_config": dict(ADS)}


def downstream_tls(tls: Mapping[str, Any]) -> dict:
    mode = str(tls.get("mode") or "SIMPLE")
    common: dict = {"alpn_protocols": ["h2", "http/1.1"]}
    context: dict = {"@type": DOWNSTREAM_TLS}
    if mode == "ISTIO_MUTUAL":
        common["tls_certificate_sds_secret_configs"] = [_sds("default")]
        common["combined_validation_context"] = {"default_validation_context": {},
                                                 "validation_context_sds_secret_config": _sds("ROOTCA")}
    elif tls.get("credentialName"):
        credential = str(tls["credentialName"])
        common["tls_certificate_sds_secret_configs"] = [_sds(f"kubernetes://{credential}")]
        if mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
            common["combined_validation_context"] = {
                "default_validation_context": {},
                "validation_context_sds_secret_config": _sds(f"kubernetes://{credential}-cacert")}
    else:
        if tls.get("serverCertificate"):
            common["tls_certificates"] = [{"certificate_chain": {"filename": str(tls["serverCertificate"])},
                                           "private_key": {"filename": str(tls.get("privateKey", ""))}}]
        if tls.get("caCertificates") and mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
            common["validation_context"] = {"trusted_ca": {"filename": str(tls["caCertificates"])}}
    params: dict = {}
    for src, dst in (("minProtocolVersion", "tls_minimum_protocol_version"),
                     ("maxProtocolVersion", "tls_maximum_protocol_version")):
        if tls.get(src) and tls[src] != "TLS_AUTO":
            params[dst] = str(tls[src]).replace("TLSV", "TLSv")
    if tls.get("cipherSuites"):
        params["cipher_suites"] = [str(c) for c in tls["cipherSuites"]]
    if params:
        common["tls_params"] = params
    context["common_tls_context"] = common
    if mode in ("MUTUAL", "ISTIO_MUTUAL"):
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def gateway_servers(proxy: Proxy) -> dict[int, list[tuple[Resource, Mapping[str, Any]]]]:
    """Servers of the Gateways selecting this proxy, by port number."""
    by_port: dict[int, list[tuple[Resource, Mapping[str, Any]]]] = {}
    for gw in proxy.mesh.gateways_for(proxy.workload):
        for i, server in enumerate(gw.spec.get("servers") or ()):
            port = server.get("port") or {}
            protocol = str(port.get("protocol", "")).upper()
            mode = str((server.get("tls") or {}).get("mode") or "")
            if protocol in ("TCP", "TLS", "MONGO") or mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") or \
                    (protocol == "HTTPS" and not mode):
                proxy.notes.add(gw, f"spec.servers[{i}]", f"{protocol} {mode or ''} servers are not translated "
                                                          "yet (HTTP and terminated HTTPS only)".replace("  ", " "))
                continue
            by_port.setdefault(int(port.get("number", 0)), []).append((gw, server))
    return by_port


def gateway_listeners(proxy: Proxy, servers: Mapping[int, list], routes: Mapping[str, dict]) -> list[dict]:
    out = []
    for port in sorted(servers):
        name = f"0.0.0.0_{port}"
        chains: list[dict] = []
        plain_done = False
        tls_chains = False
        for gw, server in servers[port]:
            route = gateway_route_name(gw, server)
            tls = server.get("tls") or {}
            if route.startswith("https."):
                hosts = sorted({str(h).rpartition("/")[2] for h in server.get("hosts") or ()} - {"*"})
                chain: dict = {}
                if hosts:
                    chain["filter_chain_match"] = {"server_names": hosts}
                chain["filters"] = [http_connection_manager(proxy, "gateway", f"outbound_{name}", route, routes)]
                chain["transport_socket"] = downstream_tls(tls)
                chains.append(chain)
                tls_chains = True
            elif not plain_done:
                chains.append({"filters": [http_connection_manager(proxy, "gateway", f"outbound_{name}", route,
                                                                   routes)]})
                plain_done = True
        extra: dict = {}
        if tls_chains:
            extra["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector",
                                          "typed_config": {"@type": TLS_INSPECTOR}}]
        out.append(_listener(name, port, "OUTBOUND", chains, **extra))
    for contribute in proxy.options.extensions.listener_contributors:
        out = [contribute(proxy, listener) for listener in out]
    return out
