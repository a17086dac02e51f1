"""The mesh snapshot: every loaded resource plus the registry, indexed once and then read-only.

This is istiod's PushContext. Translation (`control.translate`) asks it questions (which services exist for
a host, which VirtualServices bind to the `mesh` gateway or to `istio-system/ingress`, the merged
DestinationRule a proxy in namespace N sees for host H, the Sidecar scoping a workload, the policies of a
kind selecting a workload) and never scans raw resources itself. Built by `build_mesh(resources)`; never
mutated; a config change builds a new snapshot.

Host names follow Istio (`pkg/config/host`, `ResolveShortnameToFQDN`): a name without a dot is a short name
resolved in the namespace of the *rule* that wrote it (`reviews` in a VirtualService in `default` ->
`reviews.default.svc.cluster.local`); a name with a dot is kept as written (`reviews.default` stays as is,
as in Istio); `*` and `*.foo.com` are wildcards (`*.foo.com` matches `a.foo.com` and `a.b.foo.com`, not
`foo.com`). IP addresses are kept.

MeshConfig comes from an `IstioOperator`'s `spec.meshConfig` (defaults: `pkg/config/mesh/mesh.go`
`DefaultMeshConfig`: root namespace istio-system, trust domain cluster.local, connectTimeout 10s,
outboundTrafficPolicy ALLOW_ANY, enableAutoMtls true).
"""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

from control.istio.resources import Resource
from control.registry.base import Registry
from control.registry.files import DEFAULT_DOMAIN, FileRegistry
from control.registry.model import Endpoint, Service, ServicePort, Workload

MESH_GATEWAY = "mesh"  # the reserved gateway name meaning "all sidecars"
ALLOW_ANY = "ALLOW_ANY"
REGISTRY_ONLY = "REGISTRY_ONLY"
POLICY_KINDS = ("PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication", "Telemetry")


# --- host names ------------------------------------------------------------------------------------------

def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def resolve_host(host: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """Istio's ResolveShortnameToFQDN: short names (no dot) get `.<namespace>.svc.<domain>` (namespace of the
    rule, not of the service); names with a dot, `*`, wildcards and IPs are kept."""
    host = host.strip().lower()
    if not host or host == "*" or "." in host or (":" in host and _is_ip(host)):  # no dot: an IP only if IPv6
        return host
    return f"{host}.{namespace}.svc.{domain}"


def host_matches(pattern: str, host: str) -> bool:
    """True if `pattern` (exact or wildcard) covers `host` (Istio host.Name.Matches, one direction).
    `*` covers all; `*.foo.com` covers `a.foo.com`, `*.a.foo.com`; an exact name covers only itself."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]  # ".foo.com"
        return host.endswith(suffix) and len(host) > len(suffix)
    return False


def hosts_intersect(a: str, b: str) -> bool:
    """Either host covers the other (Gateway server hosts vs VirtualService hosts, Sidecar egress hosts)."""
    return host_matches(a, b) or host_matches(b, a)


def export_visible(export_to: Sequence[str], owner_namespace: str, viewer_namespace: str) -> bool:
    """`exportTo` semantics: empty or `*` = every namespace, `.` = the owner's namespace, else the names."""
    if not export_to:
        return True
    for entry in export_to:
        if entry == "*" or entry == viewer_namespace or (entry == "." and viewer_namespace == owner_namespace):
            return True
    return False


def selector_labels(spec: Mapping[str, Any], key: str = "selector") -> Mapping[str, str] | None:
    """The label selector of a policy-like resource (`selector.matchLabels`, `workloadSelector.labels`,
    Gateway `selector`), or None when it has none (then it applies namespace-wide)."""
    sel = spec.get(key)
    if not isinstance(sel, Mapping):
        return None
    if key == "selector" and "matchLabels" in sel:
        sel = sel.get("matchLabels") or {}
    elif key == "workloadSelector":
        sel = sel.get("labels") or {}
    return MappingProxyType({str(k): str(v) for k, v in sel.items()}) if sel else None


# --- MeshConfig ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MeshConfig:
    """The slice of MeshConfig translation uses (names as in `mesh/v1alpha1/config.proto`)."""

    root_namespace: str = "istio-system"
    trust_domain: str = "cluster.local"
    domain: str = DEFAULT_DOMAIN
    outbound_traffic_policy: str = ALLOW_ANY
    connect_timeout: str = "10s"
    enable_auto_mtls: bool = True
    default_http_retry_policy: Mapping[str, Any] | None = None  # HTTPRetry shape; None = Istio's default
    # telemetry settings, carried for the telemetry issue (translation notes them as not applied yet)
    access_log_file: str = ""  # "" = no access log (Istio's default profile); "/dev/stdout" in demo
    access_log_encoding: str = "TEXT"
    access_log_format: str = ""  # "" = Istio's default format
    enable_tracing: bool = True
    default_providers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # tracing/metrics/accessLogging
    extension_providers: tuple[Mapping[str, Any], ...] = ()  # meshConfig.extensionProviders, as written
    default_config: Mapping[str, Any] = field(default_factory=dict)  # meshConfig.defaultConfig (ProxyConfig)
    source: str = "defaults (pkg/config/mesh/mesh.go)"

    @classmethod
    def from_resources(cls, resources: Iterable[Resource]) -> "MeshConfig":
        """From the first IstioOperator with `spec.meshConfig` (istioctl install's input)."""
        for res in resources:
            if res.kind != "IstioOperator":
                continue
            mc = res.spec.get("meshConfig")
            if not isinstance(mc, Mapping):
                continue
            otp = mc.get("outboundTrafficPolicy") or {}
            return cls(
                root_namespace=str(mc.get("rootNamespace") or "istio-system"),
                trust_domain=str(mc.get("trustDomain") or "cluster.local"),
                outbound_traffic_policy=str(otp.get("mode") or ALLOW_ANY),
                connect_timeout=str(mc.get("connectTimeout") or "10s"),
                enable_auto_mtls=bool(mc.get("enableAutoMtls", True)),
                default_http_retry_policy=mc.get("defaultHttpRetryPolicy"),
                access_log_file=str(mc.get("accessLogFile") or ""),
                access_log_encoding=str(mc.get("accessLogEncoding") or "TEXT"),
                access_log_format=str(mc.get("accessLogFormat") or ""),
                enable_tracing=bool(mc.get("enableTracing", True)),
                default_providers=MappingProxyType({str(k): tuple(str(p) for p in v or ())
                                                   for k, v in (mc.get("defaultProviders") or {}).items()}),
                extension_providers=tuple(p for p in mc.get("extensionProviders") or () if isinstance(p, Mapping)),
                default_config=mc.get("defaultConfig") or MappingProxyType({}),
                source=f"{res.key} ({res.source})",
            )
        return cls()


# --- merged DestinationRule ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DestinationRuleView:
    """All DestinationRules of one namespace for one host, merged as istiod does (`mergeDestinationRule`):
    subsets concatenated (a later duplicate subset name is dropped), the first rule's top-level
    `trafficPolicy` wins, a later rule's is used only if the earlier has none."""

    host: str
    namespace: str
    traffic_policy: Mapping[str, Any] | None
    subsets: tuple[Mapping[str, Any], ...]
    rules: tuple[Resource, ...]  # contributing resources, in merge order
    export_to: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """`name.namespace` of each contributing rule (istioctl's DESTINATION RULE column)."""
        return tuple(f"{r.name}.{r.namespace}" for r in self.rules)

    def subset(self, name: str) -> Mapping[str, Any] | None:
        for s in self.subsets:
            if s.get("name") == name:
                return s
        return None


def _merge_destination_rules(rules: Sequence[Resource], host: str) -> DestinationRuleView:
    policy = None
    subsets: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    for r in rules:
        if policy is None and r.spec.get("trafficPolicy"):
            policy = r.spec["trafficPolicy"]
        for s in r.spec.get("subsets") or ():
            name = str(s.get("name", ""))
            if name not in seen:
                seen.add(name)
                subsets.append(s)
    first = rules[0]
    return DestinationRuleView(host, first.namespace, policy, tuple(subsets), tuple(rules),
                               tuple(str(e) for e in first.spec.get("exportTo") or ()))


# --- the snapshot ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MeshSnapshot:
    """Read-only, indexed view of the whole mesh. Build with `build_mesh`."""

    config: MeshConfig
    registry: Registry
    resources: tuple[Resource, ...]
    services: tuple[Service, ...]
    services_by_host: Mapping[str, tuple[Service, ...]]
    workloads: tuple[Workload, ...]
    virtual_services: tuple[Resource, ...]
    # gateway key ("mesh" or "<ns>/<name>") -> VirtualServices bound to it, in input order
    virtual_services_by_gateway: Mapping[str, tuple[Resource, ...]]
    # host (resolved) -> merged rule per namespace that declares it
    destination_rules_by_host: Mapping[str, tuple[DestinationRuleView, ...]]
    gateways: tuple[Resource, ...]
    sidecars_by_namespace: Mapping[str, tuple[Resource, ...]]
    # kind -> namespace -> resources (PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry)
    policies_by_kind: Mapping[str, Mapping[str, tuple[Resource, ...]]]
    # exact-host keys of destination_rules_by_host that are wildcards, most specific (longest) first
    wildcard_rule_hosts: tuple[str, ...] = ()
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:
        return (f"MeshSnapshot(services={len(self.services)}, workloads={len(self.workloads)}, "
                f"virtual_services={len(self.virtual_services)}, gateways={len(self.gateways)})")

    # services and workloads
    def service(self, host: str, namespace: str | None = None) -> Service | None:
        """The service for an exact host; with several (ServiceEntries in different namespaces) the one in
        `namespace` if any, else the first."""
        found = self.services_by_host.get(host, ())
        for svc in found:
            if namespace is None or svc.namespace == namespace:
                return svc
        return found[0] if found else None

    def workload(self, name: str, namespace: str | None = None) -> Workload | None:
        """A workload by instance name (`reviews-v1-0`) or by its Deployment name (`reviews-v1`, first
        replica), optionally in one namespace."""
        for w in self.workloads:
            if namespace is not None and w.namespace != namespace:
                continue
            if w.name == name or (w.owner == name and w.name == f"{name}-0"):
                return w
        return None

    def endpoints(self, service: Service, port: ServicePort) -> tuple[Endpoint, ...]:
        return self.memo(("endpoints", service.hostname, service.namespace, port.port),
                         lambda: self.registry.endpoints(service, port))

    def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """A value derived from this snapshot only, computed once (istiod's PushContext caches): `key` starts
        with what it is (`("policy", ...)`) and holds every other input."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = compute()
            return value

    def with_virtual_services(self, resources: Iterable[Resource], keep: Callable[[tuple], bool]) -> "MeshSnapshot":
        """This snapshot for `resources`, which the caller knows differ from its own in VirtualServices only
        (same files otherwise, same registry): every index but the VirtualServices' is this one's (the same
        Service and DestinationRule objects), and the memo entries whose key `keep` accepts are carried over, so
        what a VirtualService edit does not touch is not computed again (istiod's incremental push keeps the
        caches the changed configs do not name). Ids in carried keys stay valid: the objects they name are
        held by both snapshots, and `keep` drops those of VirtualServices that are gone."""
        resources = tuple(resources)
        virtual_services, by_gateway = _virtual_service_index(resources)
        mesh = dataclasses.replace(self, resources=resources, virtual_services=virtual_services,
                                   virtual_services_by_gateway=by_gateway, _memo={})
        mesh._memo.update((k, v) for k, v in self._memo.items() if keep(k))
        return mesh

    def services_of_workload(self, workload: Workload) -> tuple[Service, ...]:
        """Services in the workload's namespace whose selector matches it (its inbound side)."""
        return tuple(s for s in self.services
                     if s.namespace == workload.namespace and s.selector and workload.matches(s.selector))

    # routing rules
    def virtual_services_for(self, gateway: str) -> tuple[Resource, ...]:
        return self.virtual_services_by_gateway.get(gateway, ())

    def destination_rule(self, host: str, proxy_namespace: str, service_namespace: str = "") \
            -> DestinationRuleView | None:
        """The rule a proxy in `proxy_namespace` uses for `host` (istiod's lookup order: the proxy's own
        namespace, then the service's namespace, then the root namespace, then any other exported to it).
        An exact-host rule wins over a wildcard one."""
        return self.memo(("destination_rule", host, proxy_namespace, service_namespace),
                         lambda: self._destination_rule(host, proxy_namespace, service_namespace))

    def _destination_rule(self, host: str, proxy_namespace: str, service_namespace: str) \
            -> DestinationRuleView | None:
        candidates = list(self.destination_rules_by_host.get(host, ()))
        if not candidates:
            for h in self.wildcard_rule_hosts:
                if host_matches(h, host):
                    candidates.extend(self.destination_rules_by_host[h])
        visible = [d for d in candidates if export_visible(d.export_to, d.namespace, proxy_namespace)]
        for ns in (proxy_namespace, service_namespace, self.config.root_namespace):
            for d in visible:
                if d.namespace == ns:
                    return d
        return visible[0] if visible else None

    def sidecar_for(self, workload: Workload) -> Resource | None:
        """The Sidecar scoping a workload: one in its namespace whose workloadSelector matches, else the one
        without selector in its namespace, else the root namespace's selector-less one."""
        own = self.sidecars_by_namespace.get(workload.namespace, ())
        for sc in own:
            sel = selector_labels(sc.spec, "workloadSelector")
            if sel is not None and workload.matches(sel):
                return sc
        for ns in (workload.namespace, self.config.root_namespace):
            for sc in self.sidecars_by_namespace.get(ns, ()):
                if selector_labels(sc.spec, "workloadSelector") is None:
                    return sc
        return None

    def gateways_for(self, workload: Workload) -> tuple[Resource, ...]:
        """Gateways whose `selector` matches the workload's labels (any namespace); no selector = all."""
        out = []
        for gw in self.gateways:
            sel = selector_labels(gw.spec)
            if sel is None or workload.matches(sel):
                out.append(gw)
        return tuple(out)

    # security / telemetry policies (translated in later issues; indexed here)
    def policies(self, kind: str, namespace: str) -> tuple[Resource, ...]:
        return self.policies_by_kind.get(kind, {}).get(namespace, ())

    def policies_for(self, kind: str, workload: Workload) -> tuple[Resource, ...]:
        """Policies of `kind` applying to a workload: root-namespace and own-namespace ones without selector,
        and own-namespace ones whose `selector.matchLabels` match."""
        out = []
        namespaces = [self.config.root_namespace]
        if workload.namespace != self.config.root_namespace:
            namespaces.append(workload.namespace)
        for ns in namespaces:
            for pol in self.policies(kind, ns):
                sel = selector_labels(pol.spec)
                if sel is None or (ns == workload.namespace and workload.matches(sel)):
                    out.append(pol)
        return tuple(out)


def gateway_key(name: str, vs_namespace: str) -> str:
    """A VirtualService `gateways` entry as `<ns>/<name>` (bare names are in the VS's namespace); `mesh` kept."""
    if name == MESH_GATEWAY:
        return name
    return name if "/" in name else f"{vs_namespace}/{name}"


def vs_gateways(vs: Resource) -> tuple[str, ...]:
    """Every gateway a VirtualService binds to, top-level and per-match (`http[].match[].gateways`)."""
    keys = [gateway_key(str(g), vs.namespace) for g in vs.spec.get("gateways") or (MESH_GATEWAY,)]
    for section in ("http", "tls", "tcp"):
        for rule in vs.spec.get(section) or ():
            for m in rule.get("match") or ():
                keys += [gateway_key(str(g), vs.namespace) for g in m.get("gateways") or ()]
    return tuple(dict.fromkeys(keys))


def _frozen(d: dict) -> Mapping:
    return MappingProxyType({k: tuple(v) for k, v in d.items()})


def _virtual_service_index(resources: tuple[Resource, ...]) -> tuple[tuple[Resource, ...], Mapping]:
    """The VirtualServices, and those bound to each gateway key, in input order."""
    virtual_services = tuple(r for r in resources if r.kind == "VirtualService")
    by_gateway: dict[str, list[Resource]] = {}
    for vs in virtual_services:
        for key in vs_gateways(vs):
            by_gateway.setdefault(key, []).append(vs)
    return virtual_services, _frozen(by_gateway)


def build_mesh(resources: Iterable[Resource], registry: Registry | None = None) -> MeshSnapshot:
    """Index loaded resources (and a registry, by default the file registry built from the same resources)."""
    resources = tuple(resources)
    config = MeshConfig.from_resources(resources)
    if registry is None:
        registry = FileRegistry.from_resources(resources, config.domain)
    services = registry.services()
    by_host: dict[str, list[Service]] = {}
    for svc in services:
        by_host.setdefault(svc.hostname, []).append(svc)

    virtual_services, by_gateway = _virtual_service_index(resources)

    dr_groups: dict[tuple[str, str], list[Resource]] = {}
    for r in resources:
        if r.kind == "DestinationRule" and r.spec.get("host"):
            host = resolve_host(str(r.spec["host"]), r.namespace, config.domain)
            dr_groups.setdefault((host, r.namespace), []).append(r)
    dr_by_host: dict[str, list[DestinationRuleView]] = {}
    for (host, _ns), rules in dr_groups.items():
        dr_by_host.setdefault(host, []).append(_merge_destination_rules(rules, host))

    sidecars: dict[str, list[Resource]] = {}
    policies: dict[str, dict[str, list[Resource]]] = {}
    for r in resources:
        if r.kind == "Sidecar":
            sidecars.setdefault(r.namespace, []).append(r)
        elif r.kind in POLICY_KINDS:
            policies.setdefault(r.kind, {}).setdefault(r.namespace, []).append(r)

    return MeshSnapshot(
        config=config,
        registry=registry,
        resources=resources,
        services=services,
        services_by_host=_frozen(by_host),
        workloads=registry.workloads(),
        virtual_services=virtual_services,
        virtual_services_by_gateway=by_gateway,
        destination_rules_by_host=_frozen(dr_by_host),
        wildcard_rule_hosts=tuple(sorted((h for h in dr_by_host if h.startswith("*")), key=len, reverse=True)),
        gateways=tuple(r for r in resources if r.kind == "Gateway" and r.group == "networking.istio.io"),
        sidecars_by_namespace=_frozen(sidecars),
        policies_by_kind=MappingProxyType({k: _frozen(v) for k, v in policies.items()}),
    )
