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
  `tcp_proxy` to the first service on it, or the chains of mesh VirtualService `tcp` rules; a TLS/HTTPS port
  the SNI chains of `tls` rules (tls_inspector) (tcp.py). A Sidecar egress listener with a TCP/TLS `port` and
  `captureMode: NONE` replaces that port's listener with a bound one, `<bind>_<port>` (127.0.0.1 by default).
* `virtualInbound` binds 0.0.0.0:15006 (only when the workload serves a port): per workload port the filter
  chains its PeerAuthentication mode asks for (`filter_chain_match.destination_port` + `transport_protocol`,
  authn.py resolves the mode; istiod listener_inbound.go, filterchain_options.go): STRICT one `tls` chain with
  the mesh mTLS DownstreamTlsContext; PERMISSIVE that chain (matching Istio's ALPNs) plus a `raw_buffer` one
  (TCP ports also a TLS passthrough chain); DISABLE `raw_buffer` only. `envoy.filters.listener.tls_inspector`
  when a chain matches `tls`. The connection manager carries an inline route configuration `inbound|<port>||`
  with virtual host `inbound|http|<port>` (`*`) -> `inbound|<port>||<fqdn>` -> 127.0.0.1:<port>, and the
  client-certificate headers istiod sets on sidecars (`forward_client_cert_details: APPEND_FORWARD`,
  `set_current_client_cert_details` subject, dns, uri).

Connection managers use RDS `{route_config_name, config_source: {ads: {}}}` unless `Options.inline_routes`.
Settings istiod puts on every sidecar HCM: `use_remote_address` false (gateways: true), `stream_idle_timeout`
0s, `normalize_path` true, websocket upgrades, HTTP/1.0 accepted; inbound and gateways send `server:
istio-envoy`. HTTP filters: inbound jwt_authn from RequestAuthentication (request_authn.py), RBAC from
AuthorizationPolicy (authz.py), security contributors,
envoy.filters.http.fault, envoy.filters.http.cors, stats / rate-limit contributors, `istio.stats` (Istio's standard
metrics, `istio_stats_filter`), envoy.filters.http.router. `tracing` and `access_log` from the Telemetry API
(telemetry.py).

Gateway (istiod gateway.go): one listener `0.0.0.0_<port>` per server port. Plain HTTP servers share one chain
with RDS `http.<port>`; each terminating HTTPS server (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL) gets a chain
matched on SNI (`server_names` = its hosts) with a DownstreamTlsContext (istiod BuildListenerTLSContext:
ALPN h2/http1.1, `require_client_certificate` for MUTUAL/ISTIO_MUTUAL, `minProtocolVersion`/`maxProtocolVersion`/
`cipherSuites` -> `tls_params`; `credentialName` -> the Secret's certificate and key *inline* (credentials.py;
istiod sends `kubernetes://<name>` over SDS, which this control plane does not serve), MUTUAL clients checked
against the Secret's `ca.crt`/`cacert` or the `<name>-cacert` Secret; file paths as DataSource filenames) and
RDS `https.<port>.<portName>.<gateway>.<namespace>`. `httpsRedirect` is `require_tls: ALL` (routes.py).
A `tls.mode: PASSTHROUGH` server gets one chain per SNI set of the bound VirtualServices' `tls` rules with a
tcp_proxy and no TLS context; a `TCP` server one chain with the bound `tcp` rule's tcp_proxy (control/translate/
tcp.py); an AUTO_PASSTHROUGH server one chain [sni_cluster, tcp_proxy] routing by the SNI to the gateway's
SNI-DNAT clusters (tcp.py, clusters.sni_dnat_specs). TLS servers terminating into TCP are reported as not
translated yet, and so is a server's `bind` (an IP-bound server listens on 0.0.0.0; a unix-socket one, port 0,
gets no listener).
"""
from __future__ import annotations

from typing import Any, Mapping

from control.istio.resources import Resource
from control.registry.model import Protocol
from control.translate import authn, authz, credentials, request_authn, telemetry
from control.translate import tcp as l4
from control.translate.clusters import InboundPort, inbound_ports
from control.translate.common import (ADS, CORS, DOWNSTREAM_TLS, FAULT, HCM, INBOUND_PORT, LISTENER, OUTBOUND_PORT,
                                      ROUTER, STATS_PLUGIN_CONFIG, TLS_INSPECTOR, TYPED_STRUCT, Proxy,
                                      cluster_name, egress_admits)
from control.mesh import resolve_host
from control.translate.routes import (HTTP_PROXY_ROUTE, retry_policy, route_configuration, RouteContext,
                                     trace_operation)

INBOUND_RETRY = {"attempts": 2, "retryOn": "reset-before-request"}  # istiod BuildDefaultHTTPInboundRoute
TLS_INSPECTOR_FILTER = {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR}}
TERMINATING_TLS = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL")


def istio_stats_filter(metrics: list[dict] | None = None) -> dict:
    """Istio's stats filter as istiod names it (`istio.stats`, `stats.PluginConfig`, just before the router). The
    reporter is not in the config: the proxy derives it from the listener's `traffic_direction` (INBOUND ->
    destination; sidecar outbound and gateways, OUTBOUND -> source), as istio-proxy does. The config travels
    as a TypedStruct, which Envoy's protos parse (istiod sends the `stats.PluginConfig` Any itself). `metrics`:
    the Telemetry API's overrides (control/translate/telemetry.py `stats_config`)."""
    return {"name": "istio.stats", "typed_config": {"@type": TYPED_STRUCT, "type_url": STATS_PLUGIN_CONFIG,
                                                   "value": {"metrics": metrics} if metrics else {}}}


def tcp_stats(proxy: Proxy, direction: str, filters: list[dict]) -> list[dict]:
    """Istio's TCP metrics: the `istio.stats` network filter before the tcp_proxy (sidecars; same config shape as
    the HTTP one), unless a Telemetry disables ALL_METRICS on this side."""
    stats_on, _ = telemetry.stats_config(proxy, direction)
    return [istio_stats_filter(), *filters] if stats_on else filters


def http_filters(proxy: Proxy, direction: str) -> list[dict]:
    ext = proxy.options.extensions
    out: list[dict] = request_authn.http_filters(proxy, direction)  # RequestAuthentication: jwt_authn (inbound)
    out += authz.http_filters(proxy, direction)  # AuthorizationPolicy: RBAC filters, after jwt_authn as istiod
    for contribute in ext.http_filters_authn:
        out += contribute(proxy, direction)
    out.append({"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT}})
    out.append({"name": "envoy.filters.http.cors", "typed_config": {"@type": CORS}})
    for contribute in ext.http_filters_before_router:
        out += contribute(proxy, direction)
    stats_on, metrics = telemetry.stats_config(proxy, direction)  # Telemetry metrics overrides
    if stats_on:  # a Telemetry disabling ALL_METRICS drops the stats filter
        out.append(istio_stats_filter(metrics))
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
    access_logs = telemetry.hcm_access_logs(proxy, direction)  # Telemetry accessLogging / meshConfig.accessLogFile
    if access_logs:
        hcm["access_log"] = access_logs
    tracing = telemetry.hcm_tracing(proxy, direction)  # Telemetry tracing + meshConfig.extensionProviders
    if tracing is not None:
        hcm["tracing"] = tracing
    hcm["use_remote_address"] = direction == "gateway"
    if direction != "outbound":
        hcm["server_name"] = "istio-envoy"
    if direction == "inbound":  # buildSidecarInboundHTTPOpts: the sidecar default of meshConfig's proxy headers
        hcm["forward_client_cert_details"] = "APPEND_FORWARD"
        hcm["set_current_client_cert_details"] = {"subject": True, "dns": True, "uri": True}
    hcm["stream_idle_timeout"] = "0s"
    hcm["normalize_path"] = True
    hcm["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    hcm["http_protocol_options"] = {"accept_http_10": True}
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def _address(port: int, ip: str) -> dict:
    return {"socket_address": {"address": ip, "port_value": port}}


def _listener(name: str, port: int, direction: str, chains: list[dict], ip: str = "0.0.0.0", **extra: Any) -> dict:
    return {"@type": LISTENER, "name": name, "address": _address(port, ip), "traffic_direction": direction,
            "filter_chains": chains, **extra}


# --- sidecar ---------------------------------------------------------------------------------------------

def _l4_port_chains(proxy: Proxy, specs: Mapping[str, Any], port: int, svc: Any, protocol: Protocol) -> list[dict]:
    """A non-HTTP outbound port's chains: by SNI for TLS/HTTPS ports with VirtualService `tls` rules, else the
    `tcp` rules' chains, else one tcp_proxy to the service (istiod: TLS ports without a VirtualService are
    opaque TCP)."""
    default = cluster_name("outbound", port, "", svc.hostname)
    chains = None
    if protocol in (Protocol.TLS, Protocol.HTTPS):
        chains = l4.sidecar_tls_chains(proxy, specs, port, svc.hostname)
    if chains is None:
        chains = l4.sidecar_tcp_chains(proxy, specs, port, svc.hostname) or [{"filters": [l4.tcp_proxy(proxy, default)]}]
    return [{**c, "filters": tcp_stats(proxy, "outbound", c["filters"])} for c in chains]  # Istio's TCP metrics


def _l4_listener(name: str, port: int, chains: list[dict], **extra: Any) -> dict:
    if any("server_names" in (c.get("filter_chain_match") or {}) for c in chains):
        extra["listener_filters"] = [TLS_INSPECTOR_FILTER]  # SNI is read from the ClientHello
    return _listener(name, port, "OUTBOUND", chains, **extra)  # extra may carry `ip`


def egress_port_listeners(proxy: Proxy, specs: Mapping[str, Any]) -> dict[int, dict]:
    """Sidecar `egress[]` listeners with a `port` and `captureMode: NONE`, by port: istiod binds them
    (`bind`, default 127.0.0.1 when the listener captures nothing) and names them `<bind>_<port>`; the app
    connects to that address, which is how a TCP or TLS service is reached with explicit capture. Only
    services the listener's `hosts` admit are routed. HTTP egress ports are not translated (the HTTP proxy
    listener on 15001 serves every HTTP port)."""
    out: dict[int, dict] = {}
    sidecar = proxy.sidecar
    if sidecar is None:
        return out
    for i, egress in enumerate(sidecar.spec.get("egress") or ()):
        port_spec = egress.get("port") or {}
        if not port_spec:
            continue
        number = int(port_spec.get("number", 0))
        if number == 0:
            proxy.notes.add(sidecar, f"spec.egress[{i}].port", "unix domain socket egress listeners (port 0, a "
                                                               "unix:// bind) are not translated")
            continue
        protocol = Protocol.parse(str(port_spec["protocol"])) if port_spec.get("protocol") \
            else Protocol.from_port_name(port_spec.get("name"))
        if egress.get("captureMode") != "NONE" or protocol.is_http or protocol == Protocol.UDP:
            proxy.notes.add(sidecar, f"spec.egress[{i}].port", "only egress listeners with captureMode NONE and a "
                                                               "TCP/TLS port are translated; this one is not")
            continue
        hosts = tuple(h for h in proxy.egress if h.listener == i)  # this listener's entries, parsed by make_proxy
        svc = next((s for s in proxy.visible_services() if any(sp.port == number for sp in s.ports)
                    and egress_admits(hosts, sidecar.namespace, s.namespace, s.hostname)), None)
        if svc is None:
            proxy.notes.add(sidecar, f"spec.egress[{i}].port", f"no service its hosts admit has port {number}")
            continue
        bind = str(egress.get("bind") or "127.0.0.1")
        chains = _l4_port_chains(proxy, specs, number, svc, protocol)
        out.setdefault(number, _l4_listener(f"{bind}_{number}", number, chains, ip=bind))
    return out


def outbound_listeners(proxy: Proxy, routes: Mapping[str, dict], specs: Mapping[str, Any] | None = None) -> list[dict]:
    name = f"0.0.0.0_{OUTBOUND_PORT}"
    out = [_listener(name, OUTBOUND_PORT, "OUTBOUND", [{"filters": [
        http_connection_manager(proxy, "outbound", f"outbound_{name}", HTTP_PROXY_ROUTE, routes)]}])]
    tcp_ports: dict[int, tuple[Any, Protocol]] = {}
    http_ports: set[int] = set()
    for svc in proxy.visible_services():
        for sp in svc.ports:
            if sp.protocol.is_http:
                http_ports.add(sp.port)
            elif sp.protocol != Protocol.UDP:
                tcp_ports.setdefault(sp.port, (svc, sp.protocol))
    for port in sorted(http_ports):
        lname = f"0.0.0.0_{port}"
        out.append(_listener(lname, port, "OUTBOUND", [{"filters": [
            http_connection_manager(proxy, "outbound", f"outbound_{lname}", str(port), routes)]}],
            bind_to_port=False))
    bound = egress_port_listeners(proxy, specs or {})
    for port in sorted(set(tcp_ports) - http_ports):
        if port in bound:
            out.append(bound.pop(port))
            continue
        svc, protocol = tcp_ports[port]
        out.append(_l4_listener(f"0.0.0.0_{port}", port, _l4_port_chains(proxy, specs or {}, port, svc, protocol),
                                bind_to_port=False))
    out.extend(bound[p] for p in sorted(bound))
    return out


def inbound_route_configuration(proxy: Proxy, ip: InboundPort) -> dict:
    ctx = RouteContext(proxy, {}, ip.port)
    action: dict = {"cluster": ip.cluster, "timeout": "0s"}
    if not ip.service_port.protocol.is_http2:  # istiod: not on gRPC/HTTP2 ports
        action["retry_policy"] = retry_policy(ctx, None, "", INBOUND_RETRY, False)
    action["max_grpc_timeout"] = "0s"
    vhost = {"name": f"inbound|http|{ip.port}", "domains": ["*"],
             "routes": [{"name": "default", "match": {"prefix": "/"},  # istiod BuildDefaultHTTPInboundRoute
                         "decorator": {"operation": trace_operation(ip.service.hostname, ip.service_port.port)},
                         "route": action}]}
    return route_configuration(f"inbound|{ip.port}||", [vhost])


# filter_chain_match options per inbound port (istiod filterchain_options.go, listener.go ALPN lists): TLS chains
# carry the mesh mTLS context; PERMISSIVE adds plaintext (and, for TCP, a TLS-passthrough chain for apps that
# speak TLS themselves); DISABLE is plaintext only. Chains of one port share its name, `0.0.0.0_<port>`.
ALL_ISTIO_MTLS_ALPNS = ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")
TLS, RAW = "tls", "raw_buffer"


def inbound_chain_options(mode: authn.MtlsMode, http: bool) -> list[tuple[dict, bool]]:
    """(filter_chain_match without the port, terminates mesh mTLS) for each chain of one inbound port."""
    if mode == authn.MtlsMode.STRICT:
        return [({"transport_protocol": TLS}, True)]
    if mode == authn.MtlsMode.PERMISSIVE:
        mtls = ({"transport_protocol": TLS, "application_protocols": list(ALL_ISTIO_MTLS_ALPNS)}, True)
        if http:
            return [mtls, ({"transport_protocol": RAW}, False)]
        return [mtls, ({"transport_protocol": TLS}, False), ({"transport_protocol": RAW}, False)]
    return [({"transport_protocol": RAW}, False)]


def inbound_filter_chains(proxy: Proxy, ip: InboundPort) -> list[dict]:
    """The chains of one workload port under its PeerAuthentication mode (istiod buildInboundListeners)."""
    http = ip.service_port.protocol.is_http
    stat = f"inbound_0.0.0.0_{ip.port}"
    if http:
        rc = inbound_route_configuration(proxy, ip)
        filters = [http_connection_manager(proxy, "inbound", stat, rc["name"], {rc["name"]: rc}, inline=True)]
    else:
        filters = [*authz.network_filters(proxy, ip.port),
                   *tcp_stats(proxy, "inbound", [l4.tcp_proxy(proxy, ip.cluster)])]
    chains = []
    for match, terminates in inbound_chain_options(authn.effective_mtls(proxy.mesh, proxy.workload, ip.port), http):
        chain: dict = {"filter_chain_match": {"destination_port": ip.port, **match}, "filters": filters}
        if terminates:
            chain["transport_socket"] = authn.transport_socket(authn.inbound_tls_context(tcp=not http))
        chain["name"] = f"0.0.0.0_{ip.port}"
        chains.append(chain)
    return chains


def inbound_listener(proxy: Proxy) -> dict:
    chains = [chain for ip in inbound_ports(proxy) for chain in inbound_filter_chains(proxy, ip)]
    extra: dict = {}
    if any(c["filter_chain_match"].get("transport_protocol") == TLS for c in chains):
        extra["listener_filters"] = [TLS_INSPECTOR_FILTER]  # populateListenerFilters
    return _listener("virtualInbound", INBOUND_PORT, "INBOUND", chains, **extra)


def sidecar_listeners(proxy: Proxy, routes: Mapping[str, dict], specs: Mapping[str, Any] | None = None) -> list[dict]:
    """Outbound listeners, and `virtualInbound` when the workload serves some port (Envoy rejects a listener
    without filter chains; istiod's passthrough chain for unknown ports is not emitted: with explicit capture
    it would loop back into 15006)."""
    out = outbound_listeners(proxy, routes, specs)
    if inbound_ports(proxy):
        out.append(inbound_listener(proxy))
    else:
        authz.note_no_inbound(proxy)
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


def _credential_sds(name: str) -> dict:
    """security/model ConstructSdsSecretConfigForCredential: `kubernetes://<name>` over ADS (what istiod sends;
    used here only when the Secret is missing or unusable, so the chain fails closed)."""
    return {"name": f"kubernetes://{name}", "sds_config": {"ads": {}, "resource_api_version": "V3"}}


def _server_credential(proxy: Proxy, gw: Resource, path: str, tls: Mapping[str, Any], common: dict,
                       validate_client: bool) -> None:
    """A `credentialName` resolved to its Secret (in the gateway's namespace), inline in the context."""
    name = str(tls["credentialName"])
    sans = [str(s) for s in tls.get("subjectAltNames") or ()]
    try:
        cred = credentials.credential(proxy.mesh.resources, name, proxy.namespace, cert=True, ca=validate_client)
    except credentials.CredentialError as err:
        proxy.notes.add(gw, path, f"{err}; the server refers to SDS kubernetes://{name}, which no one serves "
                                  "(its TLS handshakes fail)")
        common["tls_certificate_sds_secret_configs"] = [_credential_sds(name)]
        if validate_client:
            common["combined_validation_context"] = {
                "default_validation_context": {"match_subject_alt_names": authn.exact_sans(sans)} if sans else {},
                "validation_context_sds_secret_config": _credential_sds(name + credentials.CA_SUFFIX)}
        return
    common["tls_certificates"] = [{"certificate_chain": credentials.inline(cred.cert),
                                   "private_key": credentials.inline(cred.key)}]
    if validate_client:
        validation: dict = {"trusted_ca": credentials.inline(cred.ca)}
        if sans:
            validation["match_subject_alt_names"] = authn.exact_sans(sans)
        common["validation_context"] = validation


def downstream_tls(proxy: Proxy, tls: Mapping[str, Any], gw: Resource, path: str) -> dict:
    """istiod's BuildListenerTLSContext for a Gateway server's `tls` (HTTP over TLS)."""
    mode = str(tls.get("mode") or "SIMPLE")
    require = mode in ("MUTUAL", "ISTIO_MUTUAL")
    validate_client = require or mode == "OPTIONAL_MUTUAL"
    common: dict = {"alpn_protocols": list(authn.ALPN_HTTP)}
    sans = [str(s) for s in tls.get("subjectAltNames") or ()]
    if mode == "ISTIO_MUTUAL":
        common["tls_certificate_sds_secret_configs"] = [authn.sds(authn.SDS_DEFAULT)]
        common["combined_validation_context"] = {
            "default_validation_context": {"match_subject_alt_names": authn.exact_sans(sans)} if sans else {},
            "validation_context_sds_secret_config": authn.sds(authn.SDS_ROOTCA)}
    elif tls.get("credentialName"):
        _server_credential(proxy, gw, f"{path}.credentialName", tls, common, validate_client)
    else:
        if tls.get("serverCertificate"):
            common["tls_certificates"] = [{"certificate_chain": {"filename": str(tls["serverCertificate"])},
                                           "private_key": {"filename": str(tls.get("privateKey", ""))}}]
        if tls.get("caCertificates") and validate_client:
            validation: dict = {"trusted_ca": {"filename": str(tls["caCertificates"])}}
            if sans:
                validation["match_subject_alt_names"] = authn.exact_sans(sans)
            common["validation_context"] = validation
    params: dict = {}
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):  # applyServerTLSSettings
        for src, dst in (("minProtocolVersion", "tls_minimum_protocol_version"),
                         ("maxProtocolVersion", "tls_maximum_protocol_version")):
            if tls.get(src) and tls[src] != "TLS_AUTO":
                params[dst] = str(tls[src]).replace("TLSV", "TLSv")
        if tls.get("cipherSuites"):
            params["cipher_suites"] = [str(c) for c in tls["cipherSuites"]]
    if params:
        common = {"tls_params": params, **common}
    context: dict = {"@type": DOWNSTREAM_TLS, "common_tls_context": common, "require_client_certificate": require}
    return authn.transport_socket(context)


def server_tls_mode(server: Mapping[str, Any]) -> str:
    """A Gateway server's `tls.mode`. On an HTTPS or TLS server, `tls` without a mode is PASSTHROUGH
    (ServerTLSSettings.TLSmode's zero value, so istiod's IsPassThroughServer says yes: an HTTPS server with only
    a credentialName passes TLS through); elsewhere (an HTTP server's `httpsRedirect`) it is "", as without
    `tls`: istiod classifies an HTTP-protocol server as HTTP before it looks at the mode."""
    tls = server.get("tls")
    if not isinstance(tls, Mapping):
        return ""
    protocol = str((server.get("port") or {}).get("protocol", "")).upper()
    return str(tls.get("mode") or ("PASSTHROUGH" if protocol in ("HTTPS", "TLS") else ""))


def gateway_servers(proxy: Proxy) -> dict[int, list[tuple[Resource, Mapping[str, Any]]]]:
    """Servers of the Gateways selecting this proxy, by port number."""
    by_port: dict[int, list[tuple[Resource, Mapping[str, Any]]]] = {}
    for gw in proxy.mesh.gateways_for(proxy.workload):
        for i, server in enumerate(gw.spec.get("servers") or ()):
            port = server["port"]  # number, protocol and name are required (schema)
            protocol = str(port["protocol"]).upper()
            mode = server_tls_mode(server)
            if protocol == "MONGO" or \
                    (protocol in ("HTTPS", "TLS") and mode not in ("PASSTHROUGH", "AUTO_PASSTHROUGH", *TERMINATING_TLS)):
                proxy.notes.add(gw, f"spec.servers[{i}]", f"{protocol} {mode or ''} servers are not translated "
                                                          "yet (HTTP, terminated HTTPS, TLS PASSTHROUGH/AUTO_PASSTHROUGH and TCP)"
                                .replace("  ", " "))
                continue
            bind = str(server.get("bind") or "")
            if bind.startswith("unix://"):  # port 0: istiod listens on the socket (listener `<bind>_0`)
                proxy.notes.add(gw, f"spec.servers[{i}].bind", "unix domain socket servers (port 0, a unix:// "
                                                               "bind) are not translated")
                continue
            if bind:
                proxy.notes.add(gw, f"spec.servers[{i}].bind", f"bind {bind} is not translated: the server's "
                                                               "listener binds 0.0.0.0")
            by_port.setdefault(int(port["number"]), []).append((gw, server))
    return by_port


def l4_server(server: Mapping[str, Any]) -> str | None:
    """"passthrough" (tls.mode PASSTHROUGH), "tcp" (protocol TCP, or TLS terminated into TCP is not
    translated), or None for an HTTP/HTTPS server."""
    mode = server_tls_mode(server)
    protocol = str((server.get("port") or {}).get("protocol", "")).upper()
    if mode == "PASSTHROUGH":
        return "passthrough"
    if mode == "AUTO_PASSTHROUGH":
        return "auto_passthrough"
    if protocol == "TCP":
        return "tcp"
    return None


def gateway_listeners(proxy: Proxy, servers: Mapping[int, list], routes: Mapping[str, dict],
                      specs: Mapping[str, Any] | None = None) -> list[dict]:
    out = []
    for port in sorted(servers):
        name = f"0.0.0.0_{port}"
        chains: list[dict] = []
        plain_done = False
        tls_chains = False
        for gw, server in servers[port]:
            index = list(gw.spec.get("servers") or ()).index(server)
            kind = l4_server(server)
            if kind == "auto_passthrough":
                chains.extend(l4.gateway_auto_passthrough_chains(proxy, server))
                tls_chains = True
                continue
            if kind is not None:
                build = l4.gateway_passthrough_chains if kind == "passthrough" else l4.gateway_tcp_chains
                found = [{**c, "filters": tcp_stats(proxy, "gateway", c["filters"])}
                         for c in build(proxy, specs or {}, port, gw, server)]
                if not found:
                    proxy.notes.add(gw, f"spec.servers[{index}]", f"no VirtualService {'tls' if kind == 'passthrough' else 'tcp'} "
                                                                  "route is bound to this server: no filter chain")
                chains.extend(found)
                tls_chains = tls_chains or kind == "passthrough"
                continue
            route = gateway_route_name(gw, server)
            tls = server.get("tls") or {}
            if route.startswith("https."):
                hosts = sorted({str(h).rpartition("/")[2] for h in server.get("hosts") or ()} - {"*"})
                chain: dict = {}
                if hosts:
                    chain["filter_chain_match"] = {"server_names": hosts}
                chain["filters"] = [http_connection_manager(proxy, "gateway", f"outbound_{name}", route, routes)]
                chain["transport_socket"] = downstream_tls(proxy, tls, gw, f"spec.servers[{index}].tls")
                chains.append(chain)
                tls_chains = True
            elif not plain_done:
                chains.append({"filters": [http_connection_manager(proxy, "gateway", f"outbound_{name}", route,
                                                                   routes)]})
                plain_done = True
        if not chains:
            continue  # Envoy rejects a listener without filter chains
        extra: dict = {}
        if tls_chains:
            extra["listener_filters"] = [TLS_INSPECTOR_FILTER]
        out.append(_listener(name, port, "OUTBOUND", chains, **extra))
    for contribute in proxy.options.extensions.listener_contributors:
        out = [contribute(proxy, listener) for listener in out]
    return out
