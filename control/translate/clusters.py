"""CDS: Envoy clusters for one proxy, carrying the DestinationRule traffic policy.

istiod's ClusterBuilder (pilot/pkg/networking/core/cluster_builder.go, cluster_traffic_policy.go):

* outbound: per visible service and port `outbound|<port>||<fqdn>`, plus `outbound|<port>|<subset>|<fqdn>` per
  DestinationRule subset. Discovery type from the service: Kubernetes Service and STATIC ServiceEntry -> EDS
  (`eds_config: {ads: {}}`); DNS -> STRICT_DNS, DNS_ROUND_ROBIN -> LOGICAL_DNS (inline `load_assignment`);
  NONE / headless -> ORIGINAL_DST. `connect_timeout` = meshConfig.connectTimeout (10s) unless
  `connectionPool.tcp.connectTimeout`.
* policy (see policy.py for which one applies):
  - loadBalancer.simple -> `lb_policy` (unset/LEAST_CONN -> LEAST_REQUEST, Istio's default); PASSTHROUGH ->
    ORIGINAL_DST + CLUSTER_PROVIDED; consistentHash -> RING_HASH (minimum_ring_size 1024 unless set) or MAGLEV
    (the hash key goes on the routes); warmup -> slow_start_config.
  - connectionPool -> `circuit_breakers.thresholds` (always written, unset = 2^32-1, `track_remaining`),
    HTTP settings in `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`
    (`common_http_protocol_options.max_requests_per_connection`, `idle_timeout`, `max_connection_duration`;
    HTTP/2 upstream for http2/grpc ports and h2UpgradePolicy UPGRADE; `use_downstream_protocol_config` for
    useClientProtocol), tcpKeepalive -> `upstream_connection_options.tcp_keepalive`.
  - outlierDetection -> `outlier_detection` (consecutive_5xx / gateway errors with enforcing 100 when > 0,
    interval, base_ejection_time, max_ejection_percent, enforcing_success_rate 0, split local-origin) and
    `common_lb_config.healthy_panic_threshold` = minHealthPercent (default 0).
  - tls -> `transport_socket` UpstreamTlsContext (istiod cluster_tls.go `buildUpstreamClusterTLSContext`):
    ISTIO_MUTUAL: SDS `default` + `ROOTCA` from `sds-grpc` (authn.py), SNI `outbound_.<port>_.<subset>_.<fqdn>`,
    `match_subject_alt_names` = the DR's subjectAltNames or the service's SPIFFE ids (every workload behind
    it, PushContext.ServiceAccounts), ALPN istio-peer-exchange/istio (+h2); SIMPLE/MUTUAL: TLS 1.2-1.3,
    client cert/key and CA from files (CA default: the OS bundle, istio-agent's `system`) or from the Secret
    `credentialName` names (inline bytes, credentials.py; sidecars ignore it on selector-less rules, as
    istiod), `insecureSkipVerify` = no validation, cluster metadata `alpn_override: "false"`; DISABLE: none.
  - auto-mTLS (no DR tls, meshConfig enableAutoMtls): `transport_socket_matches` tlsMode-istio (ISTIO_MUTUAL)
    then tlsMode-disabled (raw_buffer), unless the service is mesh-external, its namespace/mesh
    PeerAuthentication is DISABLE, or the cluster is ORIGINAL_DST; EDS marks the endpoints (endpoints.py).
* `BlackHoleCluster` (STATIC, no endpoints) and `PassthroughCluster` (ORIGINAL_DST) always exist.
* inbound (sidecars): `inbound|<targetPort>||<fqdn>` STATIC to 127.0.0.1:<targetPort>, the local app.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from control.istio.resources import Resource
from control.mesh import DestinationRuleView, MeshSnapshot
from control.registry.base import workload_port
from control.registry.model import Protocol, Resolution, Service, ServicePort
from control.translate import authn, credentials
from control.translate import endpoints as eds
from control.translate.common import (ADS, BLACKHOLE_CLUSTER, CLUSTER, HTTP_PROTOCOL_OPTIONS, MAX_UINT32,
                                      PASSTHROUGH_CLUSTER, UPSTREAM_TLS, Notes, Proxy, T, cluster_name, config_path,
                                      connect_timeout, duration, parse_seconds, sni_name)
from control.translate.policy import effective_policy

SIMPLE_LB = {"ROUND_ROBIN": "ROUND_ROBIN", "LEAST_REQUEST": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST",
             "RANDOM": "RANDOM", "UNSPECIFIED": "LEAST_REQUEST"}
DEFAULT_RING_SIZE = 1024


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """One outbound cluster to build: which service port and subset, under which rule and policy."""

    name: str
    service: Service
    port: ServicePort
    subset: str
    subset_labels: Mapping[str, str] | None
    rule: DestinationRuleView | None
    policy: Mapping[str, Any] | None
    sni_dnat: bool = False  # an AUTO_PASSTHROUGH gateway's SNI-DNAT copy (named by its SNI, no TLS of its own)

    @property
    def rule_resource(self) -> Resource | None:
        return self.rule.rules[0] if self.rule else None

    @property
    def uses_eds(self) -> bool:
        lb = (self.policy or {}).get("loadBalancer") or {}
        return self.service.resolution == Resolution.STATIC and lb.get("simple") != "PASSTHROUGH"

    @property
    def consistent_hash(self) -> Mapping[str, Any] | None:
        return ((self.policy or {}).get("loadBalancer") or {}).get("consistentHash")


def service_specs(svc: Service, rule: DestinationRuleView | None) -> list[ClusterSpec]:
    """The clusters of one service under one rule (or none): per port, the default one, then one per subset."""
    specs = []
    for port in svc.ports:
        if port.protocol == Protocol.UDP:
            continue
        specs.append(ClusterSpec(cluster_name("outbound", port.port, "", svc.hostname), svc, port, "", None,
                                 rule, effective_policy(rule, port.port)))
        for sub in (rule.subsets if rule else ()):
            name = str(sub["name"])  # validation refuses a subset without a name
            labels = {str(k): str(v) for k, v in (sub.get("labels") or {}).items()}
            specs.append(ClusterSpec(cluster_name("outbound", port.port, name, svc.hostname), svc, port, name,
                                     labels, rule, effective_policy(rule, port.port, name)))
    return specs


def outbound_specs(proxy: Proxy) -> list[ClusterSpec]:
    """Every outbound cluster the proxy needs, in a stable order (service host, port, subset). Proxies that see
    a service under the same rule share its ClusterSpec objects (memoized on the mesh snapshot), so what is
    derived from a spec can be shared too (`shared_outbound_cluster`, routes.shared_http_routes)."""
    specs: list[ClusterSpec] = []
    mesh = proxy.mesh
    for svc in proxy.visible_services():
        if svc.hostname.startswith("*") and svc.resolution != Resolution.NONE:
            continue  # wildcard ServiceEntry hosts only make sense as passthrough
        rule = mesh.destination_rule(svc.hostname, proxy.namespace, svc.namespace)
        specs += mesh.memo(("cluster_specs", id(svc), id(rule)), lambda: service_specs(svc, rule))
    return specs


def sni_dnat_specs(specs: list[ClusterSpec]) -> list[ClusterSpec]:
    """istiod buildOutboundSniDnatClusters (a gateway with an AUTO_PASSTHROUGH server): each outbound cluster
    again, named `outbound_.<port>_.<subset>_.<host>` (the SNI a sidecar's ISTIO_MUTUAL sends), so the
    gateway's sni_cluster filter finds it; the client's mTLS passes through to the destination's sidecar, so
    the copy originates no TLS (SniDnatClusterMode skips the upstream TLS settings)."""
    return [dataclasses.replace(s, name=sni_name(s.port.port, s.subset, s.service.hostname), sni_dnat=True)
            for s in specs]


def spec_index(specs: list[ClusterSpec]) -> dict[str, ClusterSpec]:
    return {s.name: s for s in specs}


# --- building --------------------------------------------------------------------------------------------

def unlimited_thresholds() -> dict:
    return {"max_connections": MAX_UINT32, "max_pending_requests": MAX_UINT32, "max_requests": MAX_UINT32,
            "max_retries": MAX_UINT32, "track_remaining": True}


def _metadata(spec_service: Service, port: int, subset: str, rule: DestinationRuleView | None) -> dict:
    istio: dict = {"services": [{"host": spec_service.hostname, "name": spec_service.name,
                                 "namespace": spec_service.namespace}],
                   "default_original_port": port}
    if subset:
        istio["subset"] = subset
    if rule is not None:
        istio["config"] = config_path(rule.rules[0])
    return {"filter_metadata": {"istio": istio}}


def build_outbound_cluster(proxy: Proxy, spec: ClusterSpec) -> dict:
    svc, port = spec.service, spec.port
    cluster: dict = {"@type": CLUSTER, "name": spec.name}
    if svc.resolution == Resolution.STATIC:
        cluster["type"] = "EDS"
        cluster["eds_cluster_config"] = {"service_name": spec.name, "eds_config": dict(ADS)}
    elif svc.resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        cluster["type"] = "STRICT_DNS" if svc.resolution == Resolution.DNS else "LOGICAL_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
        cluster["dns_refresh_rate"] = "60s"  # meshConfig.dnsRefreshRate default
        cluster["respect_dns_ttl"] = True
        cluster["load_assignment"] = _dns_load_assignment(spec)
    else:
        cluster["type"] = "ORIGINAL_DST"
    cluster["connect_timeout"] = connect_timeout(proxy)
    policy = spec.policy or {}
    res = spec.rule_resource
    _apply_load_balancer(proxy, cluster, policy.get("loadBalancer"), res)
    _apply_connection_pool(cluster, policy.get("connectionPool"), port, res)
    _apply_outlier_detection(cluster, policy.get("outlierDetection"), res)
    tls = None if spec.sni_dnat else policy.get("tls")  # SNI-DNAT: the client's own mTLS is carried as it is
    if tls is not None:
        socket = _upstream_tls(proxy, spec, tls)
        if socket is not None:
            cluster["transport_socket"] = socket
    elif not spec.sni_dnat and auto_mtls_applies(proxy, spec, cluster["type"]):
        cluster["transport_socket_matches"] = auto_mtls_matches(proxy, spec)
    for key in ("tunnel", "proxyProtocol", "retryBudget"):
        if policy.get(key) and res is not None:
            proxy.notes.add(res, f"spec.trafficPolicy.{key}", f"{key} is not translated yet")
    cluster["metadata"] = _metadata(svc, port.port, spec.subset, spec.rule)
    if isinstance(tls, Mapping) and tls.get("mode") in ("SIMPLE", "MUTUAL"):
        cluster["metadata"]["filter_metadata"]["istio"]["alpn_override"] = "false"  # util.AddALPNOverrideToMetadata
    return cluster


def _dns_load_assignment(spec: ClusterSpec) -> dict:
    svc, port = spec.service, spec.port
    lb_endpoints = []
    if svc.static_endpoints:
        for w in svc.static_endpoints:
            if spec.subset_labels and not all(w.labels.get(k) == v for k, v in spec.subset_labels.items()):
                continue
            number = workload_port(port, w)
            if number is not None:
                lb_endpoints.append(eds.lb_endpoint(w.address, number))
    else:  # no endpoints: Envoy resolves the host itself
        target = port.target_port if isinstance(port.target_port, int) else port.port
        lb_endpoints.append(eds.lb_endpoint(svc.hostname, target))
    return {"cluster_name": spec.name, "endpoints": [{"lb_endpoints": lb_endpoints}]}


def _apply_load_balancer(proxy: Proxy, cluster: dict, lb: Mapping[str, Any] | None, res: Resource | None) -> None:
    lb = lb or {}
    consistent = lb.get("consistentHash")
    simple = str(lb.get("simple") or "UNSPECIFIED")
    if consistent:
        if consistent.get("maglev") is not None:
            cluster["lb_policy"] = "MAGLEV"
            table = (consistent.get("maglev") or {}).get("tableSize")
            if table:
                cluster["maglev_lb_config"] = {"table_size": int(table)}
        else:
            ring = consistent.get("ringHash") or {}
            size = ring.get("minimumRingSize") or consistent.get("minimumRingSize") or DEFAULT_RING_SIZE
            cluster["lb_policy"] = "RING_HASH"
            cluster["ring_hash_lb_config"] = {"minimum_ring_size": int(size)}
    elif simple == "PASSTHROUGH":
        cluster["type"] = "ORIGINAL_DST"
        cluster["lb_policy"] = "CLUSTER_PROVIDED"
        cluster.pop("eds_cluster_config", None)
        cluster.pop("load_assignment", None)
        return
    elif simple in SIMPLE_LB:
        cluster["lb_policy"] = SIMPLE_LB[simple]
    if cluster.get("type") == "ORIGINAL_DST":
        cluster["lb_policy"] = "CLUSTER_PROVIDED"
    warmup = lb.get("warmup") or ({"duration": lb["warmupDurationSecs"]} if lb.get("warmupDurationSecs") else None)
    if warmup and cluster.get("lb_policy") in ("ROUND_ROBIN", "LEAST_REQUEST") and res is not None:
        slow: dict = {"slow_start_window": duration(res, "spec.trafficPolicy.loadBalancer.warmup.duration",
                                                    warmup.get("duration"))}
        if warmup.get("aggression") is not None:
            slow["aggression"] = {"default_value": float(warmup["aggression"]),
                                  "runtime_key": "upstream.slow_start.aggression"}
        if warmup.get("minimumPercent") is not None:
            slow["min_weight_percent"] = {"value": float(warmup["minimumPercent"])}
        key = "round_robin_lb_config" if cluster["lb_policy"] == "ROUND_ROBIN" else "least_request_lb_config"
        cluster[key] = {"slow_start_config": slow}
    if lb.get("localityLbSetting") and res is not None:
        proxy.notes.add(res, "spec.trafficPolicy.loadBalancer.localityLbSetting",
                        "locality load balancing is not translated yet")


def _positive(value: Any) -> bool:
    """A limit Istio applies: a number above 0 (0 and unset keep Envoy's default)."""
    try:
        return int(value) > 0
    except (TypeError, ValueError):
        return False


def _apply_connection_pool(cluster: dict, pool: Mapping[str, Any] | None, port: ServicePort,
                           res: Resource | None) -> None:
    thresholds = unlimited_thresholds()
    common: dict = {}
    protocol: dict = {}
    pool = pool or {}
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    base = "spec.trafficPolicy.connectionPool"
    if _positive(tcp.get("maxConnections")):
        thresholds["max_connections"] = int(tcp["maxConnections"])
    if tcp.get("connectTimeout") and res is not None:
        cluster["connect_timeout"] = duration(res, f"{base}.tcp.connectTimeout", tcp["connectTimeout"])
    keepalive = tcp.get("tcpKeepalive")
    if isinstance(keepalive, Mapping):
        ka: dict = {}
        if keepalive.get("probes"):
            ka["keepalive_probes"] = int(keepalive["probes"])
        for src, dst in (("time", "keepalive_time"), ("interval", "keepalive_interval")):
            if keepalive.get(src):
                ka[dst] = int(parse_seconds(str(keepalive[src])) or 0)
        cluster["upstream_connection_options"] = {"tcp_keepalive": ka}
    if tcp.get("maxConnectionDuration") and res is not None:
        common["max_connection_duration"] = duration(res, f"{base}.tcp.maxConnectionDuration",
                                                     tcp["maxConnectionDuration"])
    for src, dst in (("http1MaxPendingRequests", "max_pending_requests"), ("http2MaxRequests", "max_requests"),
                     ("maxRetries", "max_retries")):
        if _positive(http.get(src)):
            thresholds[dst] = int(http[src])
    if _positive(http.get("maxRequestsPerConnection")):
        common["max_requests_per_connection"] = int(http["maxRequestsPerConnection"])
    idle_field = "http.idleTimeout" if http.get("idleTimeout") else "tcp.idleTimeout"
    idle = http.get("idleTimeout") or tcp.get("idleTimeout")
    if idle and res is not None:
        common["idle_timeout"] = duration(res, f"{base}.{idle_field}", idle)
    h2 = port.protocol.is_http2 or (http.get("h2UpgradePolicy") == "UPGRADE" and port.protocol.is_http)
    if http.get("useClientProtocol"):
        protocol["use_downstream_protocol_config"] = {"http_protocol_options": {}, "http2_protocol_options": {}}
    elif h2:
        h2_options: dict = {}
        if _positive(http.get("maxConcurrentStreams")):
            h2_options["max_concurrent_streams"] = int(http["maxConcurrentStreams"])
        protocol["explicit_http_config"] = {"http2_protocol_options": h2_options}
    cluster["circuit_breakers"] = {"thresholds": [thresholds]}
    if common or protocol:
        options: dict = {"@type": HTTP_PROTOCOL_OPTIONS}
        if common:
            options["common_http_protocol_options"] = common
        if not protocol:
            protocol["explicit_http_config"] = {"http_protocol_options": {}}
        options.update(protocol)
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":
                                                       options}


def _apply_outlier_detection(cluster: dict, od: Mapping[str, Any] | None, res: Resource | None) -> None:
    if not od or res is None:
        return
    base = "spec.trafficPolicy.outlierDetection"
    out: dict = {}
    five = od.get("consecutive5xxErrors", od.get("consecutiveErrors"))
    if five is not None:
        out["consecutive_5xx"] = int(five)
        out["enforcing_consecutive_5xx"] = 100 if int(five) > 0 else 0
    gateway = od.get("consecutiveGatewayErrors")
    if gateway is not None:
        out["consecutive_gateway_failure"] = int(gateway)
        out["enforcing_consecutive_gateway_failure"] = 100 if int(gateway) > 0 else 0
    for src, dst in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
        if od.get(src):
            out[dst] = duration(res, f"{base}.{src}", od[src])
    if od.get("maxEjectionPercent") is not None:
        out["max_ejection_percent"] = int(od["maxEjectionPercent"])
    if od.get("splitExternalLocalOriginErrors"):
        out["split_external_local_origin_errors"] = True
        if od.get("consecutiveLocalOriginFailures") is not None:
            out["consecutive_local_origin_failure"] = int(od["consecutiveLocalOriginFailures"])
            out["enforcing_consecutive_local_origin_failure"] = 100
    out["enforcing_success_rate"] = 0
    cluster["outlier_detection"] = out
    cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": float(od.get("minHealthPercent", 0))}}


SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"  # istio-agent's `system` root: the OS bundle (Debian path)
RAW_BUFFER = {"name": "envoy.transport_sockets.raw_buffer",
              "typed_config": {"@type": T + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}


def service_accounts(proxy: Proxy, service: Service) -> list[str]:
    """PushContext.ServiceAccounts(host, namespace): the SPIFFE ids of every workload behind the service (any
    port, any subset), plus a ServiceEntry's `subjectAltNames`, sorted."""
    def compute() -> list[str]:
        td = proxy.mesh.config.trust_domain
        accounts = set(service.subject_alt_names)
        for port in service.ports:
            accounts.update(authn.spiffe_id(td, ep.workload.namespace, ep.workload.service_account)
                            for ep in proxy.mesh.endpoints(service, port))
        return sorted(accounts)
    return proxy.mesh.memo(("service_accounts", service.hostname, service.namespace), compute)


def _dr_has_selector(spec: ClusterSpec) -> bool:
    """Whether the cluster's DestinationRule (there is one: a `credentialName` comes from it) has a selector."""
    assert spec.rule is not None
    return any(r.spec.get("workloadSelector") for r in spec.rule.rules)


def credential_scope(proxy: Proxy, spec: ClusterSpec) -> tuple:
    """What a cluster's TLS reads from the proxy besides the spec: with a `credentialName`, its kind (sidecars
    ignore credentials of selector-less rules) and namespace (where the Secret is looked up)."""
    tls = (spec.policy or {}).get("tls") or {}
    return (proxy.kind, proxy.namespace) if tls.get("credentialName") else ()


def _validation(spec: ClusterSpec, tls: Mapping[str, Any]) -> dict | None:
    """The `validation_context` of a SIMPLE/MUTUAL client (None: verify nothing, insecureSkipVerify)."""
    if tls.get("insecureSkipVerify"):
        return None
    sans = [str(s) for s in tls.get("subjectAltNames") or ()]
    if not sans and spec.service.kind == "ServiceEntry":
        sans = list(spec.service.subject_alt_names)  # provider.External: the ServiceEntry's SANs
    out: dict = {"trusted_ca": {"filename": str(tls.get("caCertificates") or SYSTEM_CA)}}
    if sans:
        out["match_subject_alt_names"] = authn.exact_sans(sans)
    elif not tls.get("sni"):  # istiod's auto_san_validation: the server must be the host it was asked for
        out["match_typed_subject_alt_names"] = [{"san_type": "DNS", "matcher": {"exact": spec.service.hostname}}]
    if tls.get("caCrl"):
        out["crl"] = {"filename": str(tls["caCrl"])}
    return out


def _credential_tls(proxy: Proxy, spec: ClusterSpec, tls: Mapping[str, Any], common: dict,
                    validation: dict | None, res: Resource | None) -> bool:
    """SIMPLE/MUTUAL with `credentialName`: the Secret's bytes inline (False: no TLS context, as istiod for a
    sidecar and a selector-less rule)."""
    name, mutual = str(tls["credentialName"]), tls.get("mode") == "MUTUAL"
    if proxy.kind == "sidecar" and not _dr_has_selector(spec):
        if res is not None:
            proxy.notes.add(res, "spec.trafficPolicy.tls.credentialName",
                            f"{spec.name}: credentialName is only used by gateways and by DestinationRules with a "
                            "workloadSelector (istiod); this sidecar gets no TLS context for it")
        return False
    try:
        cred = credentials.credential(proxy.mesh.resources, name, proxy.namespace, cert=mutual,
                                      ca=validation is not None)
    except credentials.CredentialError as err:
        if res is not None:
            proxy.notes.add(res, "spec.trafficPolicy.tls.credentialName",
                            f"{spec.name}: {err}; the cluster refers to SDS kubernetes://{name}, which no one "
                            "serves (it fails closed)")
        if mutual:
            common["tls_certificate_sds_secret_configs"] = [_ads_sds(f"kubernetes://{name}")]
        common["combined_validation_context"] = {"default_validation_context": {},
                                                 "validation_context_sds_secret_config":
                                                     _ads_sds(f"kubernetes://{name}{credentials.CA_SUFFIX}")}
        return True
    if mutual:
        common["tls_certificates"] = [{"certificate_chain": credentials.inline(cred.cert),
                                       "private_key": credentials.inline(cred.key)}]
    if validation is not None:
        validation["trusted_ca"] = credentials.inline(cred.ca)
        common["validation_context"] = validation
    else:
        common["validation_context"] = {}
    return True


def _ads_sds(name: str) -> dict:
    """security/model ConstructSdsSecretConfigForCredential: a credential over ADS from istiod."""
    return {"name": name, "sds_config": {"ads": {}, "resource_api_version": "V3"}}


def _upstream_tls(proxy: Proxy, spec: ClusterSpec, tls: Mapping[str, Any]) -> dict | None:
    """istiod's buildUpstreamClusterTLSContext for a DestinationRule's (user-supplied) `tls`."""
    mode = str(tls.get("mode") or "DISABLE")
    if mode == "DISABLE":
        return None
    http2 = spec.port.protocol.is_http2
    if mode == "ISTIO_MUTUAL":  # sni and subjectAltNames are refused with it (validation): Istio sets both
        return authn.transport_socket(authn.istio_mutual_upstream(
            sni_name(spec.port.port, spec.subset, spec.service.hostname), service_accounts(proxy, spec.service), http2))
    res = spec.rule_resource
    common: dict = {"tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                                   "tls_maximum_protocol_version": "TLSv1_3"}}
    validation = _validation(spec, tls)
    if tls.get("credentialName"):
        if not _credential_tls(proxy, spec, tls, common, validation, res):
            return None
    else:
        if mode == "MUTUAL":  # validation refuses MUTUAL without both files when there is no credentialName
            common["tls_certificates"] = [{"certificate_chain": {"filename": str(tls["clientCertificate"])},
                                           "private_key": {"filename": str(tls["privateKey"])}}]
        common["validation_context"] = validation or {}
    if http2:
        common["alpn_protocols"] = ["h2"]  # util.ALPNH2Only
    context: dict = {"@type": UPSTREAM_TLS, "common_tls_context": common}
    context["sni"] = str(tls.get("sni") or spec.service.hostname)  # istiod: auto_sni (the request's host)
    return authn.transport_socket(context)


def auto_mtls_applies(proxy: Proxy, spec: ClusterSpec, cluster_type: str) -> bool:
    """buildUpstreamTLSSettings with no DestinationRule `tls`: auto-mTLS unless it is off in meshConfig, the
    service is mesh-external, its namespace/mesh PeerAuthentication is DISABLE, or the cluster is
    ORIGINAL_DST (headless / passthrough)."""
    if not proxy.mesh.config.enable_auto_mtls or cluster_type == "ORIGINAL_DST":
        return False
    return authn.service_mtls_mode(proxy.mesh, spec.service) not in (authn.MtlsMode.UNKNOWN, authn.MtlsMode.DISABLE)


def auto_mtls_matches(proxy: Proxy, spec: ClusterSpec) -> list[dict]:
    """Istio's transport_socket_matches: endpoints whose metadata says `tlsMode: istio` get ISTIO_MUTUAL, the
    others plaintext (`tlsMode-disabled` matches every endpoint)."""
    sni = sni_name(spec.port.port, spec.subset, spec.service.hostname)
    context = authn.istio_mutual_upstream(sni, service_accounts(proxy, spec.service), spec.port.protocol.is_http2)
    return [{"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": authn.transport_socket(context)},
            {"name": "tlsMode-disabled", "match": {}, "transport_socket": RAW_BUFFER}]


def blackhole_cluster(proxy: Proxy) -> dict:
    return {"@type": CLUSTER, "name": BLACKHOLE_CLUSTER, "type": "STATIC",
            "connect_timeout": connect_timeout(proxy)}


def passthrough_cluster(proxy: Proxy) -> dict:
    return {"@type": CLUSTER, "name": PASSTHROUGH_CLUSTER, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": connect_timeout(proxy),
            "circuit_breakers": {"thresholds": [unlimited_thresholds()]}}


@dataclass(frozen=True, slots=True)
class InboundPort:
    """One port the local app serves: the workload (target) port, the service that exposes it."""

    port: int
    service: Service
    service_port: ServicePort

    @property
    def cluster(self) -> str:
        return cluster_name("inbound", self.port, "", self.service.hostname)


def inbound_ports(proxy: Proxy) -> list[InboundPort]:
    """Workload ports exposed by the services selecting this workload; the first service wins a port."""
    seen: dict[int, InboundPort] = {}
    for svc in proxy.mesh.services_of_workload(proxy.workload):
        for sp in svc.ports:
            number = workload_port(sp, proxy.workload)
            if number is not None and number not in seen:
                seen[number] = InboundPort(number, svc, sp)
    return [seen[p] for p in sorted(seen)]


def inbound_cluster(proxy: Proxy, ip: InboundPort) -> dict:
    cluster = {
        "@type": CLUSTER, "name": ip.cluster, "type": "STATIC",
        "connect_timeout": connect_timeout(proxy),
        "load_assignment": {"cluster_name": ip.cluster,
                            "endpoints": [{"lb_endpoints": [eds.lb_endpoint("127.0.0.1", ip.port)]}]},
        "circuit_breakers": {"thresholds": [unlimited_thresholds()]},
        "metadata": _metadata(ip.service, ip.service_port.port, "", None),
    }
    if ip.service_port.protocol.is_http2:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_PROTOCOL_OPTIONS, "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def shared_outbound_cluster(proxy: Proxy, spec: ClusterSpec) -> dict:
    """`build_outbound_cluster`, once per mesh snapshot: an outbound cluster depends on its spec (service,
    port, subset, rule) and the mesh alone, so every proxy that sees the service under the same rule gets the
    same dict (read-only; serializers may share its bytes too). The notes it raised are added to each proxy's."""
    def build() -> tuple[dict, tuple[str, ...]]:
        notes = Notes()
        return build_outbound_cluster(dataclasses.replace(proxy, notes=notes), spec), tuple(notes.items)
    cluster, notes = proxy.mesh.memo(("outbound_cluster", spec.name, id(spec.service), id(spec.rule))
                                     + credential_scope(proxy, spec), build)
    for text in notes:
        proxy.notes.text(text)
    return cluster


def build_clusters(proxy: Proxy, specs: list[ClusterSpec]) -> list[dict]:
    """All clusters for the proxy, sorted by name, passed through the cluster contributors (which may edit a
    cluster: then each proxy builds its own)."""
    build = build_outbound_cluster if proxy.options.extensions.cluster_contributors else shared_outbound_cluster
    out = [build(proxy, s) for s in specs]
    out += [blackhole_cluster(proxy), passthrough_cluster(proxy)]
    if proxy.kind == "sidecar":
        out += [inbound_cluster(proxy, ip) for ip in inbound_ports(proxy)]
    for contribute in proxy.options.extensions.cluster_contributors:
        out = [contribute(proxy, c) for c in out]
    return sorted(out, key=lambda c: c["name"])


def eds_clusters(specs: list[ClusterSpec]) -> tuple[ClusterSpec, ...]:
    """The clusters EDS serves (type EDS), sorted by name."""
    return tuple(sorted((s for s in specs if s.uses_eds), key=lambda s: s.name))


def mtls_checker(mesh: MeshSnapshot, spec: ClusterSpec) -> eds.MtlsCheck:
    """istiod's mtlsChecker for one cluster: the DestinationRule's tls mode decides when it sets one
    (ISTIO_MUTUAL: mTLS, any other: plaintext); else the endpoint workload's PeerAuthentication on the
    endpoint port (DISABLE: plaintext)."""
    tls = (spec.policy or {}).get("tls")
    if tls is not None:
        enabled = tls.get("mode") == "ISTIO_MUTUAL"
        return lambda ep: enabled
    return lambda ep: authn.effective_mtls(mesh, ep.workload, ep.port) != authn.MtlsMode.DISABLE


def build_endpoints(mesh: MeshSnapshot, specs: Iterable[ClusterSpec]) -> list[dict]:
    """One ClusterLoadAssignment per EDS cluster (`eds_clusters`), its endpoints from `mesh`."""
    return [eds.cluster_load_assignment(s.name, mesh.endpoints(s.service, s.port), s.subset_labels,
                                        mtls_checker(mesh, s)) for s in specs]
