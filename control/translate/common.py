"""Shared vocabulary of the translators: the proxy being configured, names, durations, errors, seams.

`Proxy` is istiod's `model.Proxy` + `SidecarScope` for one workload: which services and VirtualServices it
sees (exportTo, Sidecar egress hosts), its outbound traffic policy, its namespace. Names follow istiod:
clusters `outbound|<port>|<subset>|<fqdn>` / `inbound|<port>||<fqdn>` (`model.BuildSubsetKey`), SNI
`outbound_.<port>_.<subset>_.<fqdn>` (`BuildDNSSrvSubsetKey`), listeners `<ip>_<port>`.

Seams for later issues (security, telemetry): `Extensions` carries contributor callables. Each HTTP filter
contributor is called with (proxy, direction) and returns Envoy HTTP filter dicts inserted before the fault
filter (authn/authz position: jwt_authn, rbac, ext_authz), or before the router (stats, rate limit); each
listener contributor may return a replacement listener dict (e.g. to add a transport socket or listener
filters); each cluster contributor may return a replacement cluster dict (e.g. auto-mTLS transport sockets).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from control.istio.resources import Resource
from control.mesh import (ALLOW_ANY, MESH_GATEWAY, MeshSnapshot, export_visible, host_matches, hosts_intersect,
                          resolve_host)
from control.registry.files import where
from control.registry.model import Service, Workload

# Envoy type URLs (type.googleapis.com/<proto full name>)
T = "type.googleapis.com/"
LISTENER = T + "envoy.config.listener.v3.Listener"
ROUTE_CONFIGURATION = T + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = T + "envoy.config.cluster.v3.Cluster"
CLUSTER_LOAD_ASSIGNMENT = T + "envoy.config.endpoint.v3.ClusterLoadAssignment"
HCM = T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY = T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER = T + "envoy.extensions.filters.http.router.v3.Router"
FAULT = T + "envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS = T + "envoy.extensions.filters.http.cors.v3.Cors"
TYPED_STRUCT = T + "udpa.type.v1.TypedStruct"
STATS_PLUGIN_CONFIG = T + "stats.PluginConfig"  # Istio's stats filter config (istio/proxy, not in Envoy's protos)
CORS_POLICY = T + "envoy.extensions.filters.http.cors.v3.CorsPolicy"
UPSTREAM_TLS = T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HTTP_PROTOCOL_OPTIONS = T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
PREVIOUS_HOSTS = T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
PREVIOUS_PRIORITIES = T + "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"
TLS_INSPECTOR = T + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"

PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
MAX_UINT32 = 4294967295  # istiod's "unlimited" circuit-breaker thresholds (math.MaxUint32)
ADS = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}

OUTBOUND_PORT = 15001  # ARCHITECTURE.md decision 4
INBOUND_PORT = 15006


class TranslateError(ValueError):
    """Config that cannot be translated. The message names file:line, resource and field."""



def fail(res: Resource, path: str, message: str) -> TranslateError:
    return TranslateError(f"{where(res, path)}: {message}")


# --- names -----------------------------------------------------------------------------------------------

def cluster_name(direction: str, port: int, subset: str, host: str) -> str:
    """istiod's BuildSubsetKey: `outbound|9080|v1|reviews.default.svc.cluster.local`."""
    return f"{direction}|{port}|{subset}|{host}"


def sni_name(port: int, subset: str, host: str) -> str:
    """istiod's BuildDNSSrvSubsetKey: `outbound_.9080_.v1_.reviews.default.svc.cluster.local`."""
    return f"outbound_.{port}_.{subset}_.{host}"


def config_path(res: Resource) -> str:
    """istiod's reference to the config an Envoy resource came from (util.AddConfigInfoMetadata), set as
    `metadata.filter_metadata.istio.config` on clusters (DestinationRule) and routes (VirtualService):
    `/apis/networking.istio.io/v1/namespaces/<ns>/<kind in kebab case>/<name>`, the internal version istiod
    stores networking config at. istioctl's DESTINATION RULE and VIRTUAL SERVICE columns read it."""
    kind = re.sub(r"(?<!^)(?=[A-Z])", "-", res.kind).lower()
    return f"/apis/{res.group or 'networking.istio.io'}/v1/namespaces/{res.namespace}/{kind}/{res.name}"


def config_metadata(res: Resource) -> dict:
    """Envoy `metadata` naming the config (see config_path)."""
    return {"filter_metadata": {"istio": {"config": config_path(res)}}}


# --- values ----------------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_seconds(text: Any) -> float | None:
    """Seconds in an Istio duration (`10s`, `0.5s`, `500ms`, `1m30s`, `1h`: protobuf JSON and Go forms, which
    Istio's CRDs accept). None if malformed."""
    if not isinstance(text, str) or not text:
        return None
    return _parse_seconds(text)


@functools.lru_cache(maxsize=4096)  # a config repeats a few durations thousands of times
def _parse_seconds(text: str) -> float | None:
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


@functools.lru_cache(maxsize=4096)
def envoy_duration(seconds: float) -> str:
    """Protobuf JSON duration: `10s`, `0.500s`, `0s` (nanosecond precision, trailing zeros trimmed)."""
    nanos = round(seconds * 1e9)
    whole, frac = divmod(nanos, 1_000_000_000)
    if not frac:
        return f"{whole}s"
    return f"{whole}.{frac:09d}".rstrip("0") + "s"


def duration(res: Resource, path: str, value: Any) -> str:
    seconds = parse_seconds(value)
    if seconds is None:
        raise fail(res, path, f"invalid duration {value!r} (use e.g. 10s, 0.5s, 500ms, 1m)")
    return envoy_duration(seconds)


def connect_timeout(proxy: "Proxy") -> str:
    """meshConfig.connectTimeout (default 10s) as an Envoy duration."""
    seconds = parse_seconds(proxy.mesh.config.connect_timeout)
    return envoy_duration(10.0 if seconds is None else seconds)


def fractional_percent(value: float) -> dict:
    """Istio's translatePercentToFractionalPercent: percent (0-100, may be fractional) per million."""
    return {"numerator": int(round(float(value) * 10000)), "denominator": "MILLION"}


def percent_of(spec: Mapping[str, Any], legacy_key: str | None = "percent") -> float:
    """`percentage.value` (double), else the deprecated int `percent`; unset = 0% (Istio's rule for faults)."""
    pct = spec.get("percentage")
    if isinstance(pct, Mapping) and "value" in pct:
        return float(pct["value"])
    if legacy_key and legacy_key in spec:
        return float(spec[legacy_key])
    return 0.0


# --- diagnostics -----------------------------------------------------------------------------------------

@dataclass(slots=True)
class Notes:
    """What translation skipped or could not honour (ARCHITECTURE decision 1: unsupported fields are reported,
    never silently dropped). Collected per render; printed by `meshctl render` on stderr."""

    items: list[str] = field(default_factory=list)

    def add(self, res: Resource | None, path: str, message: str) -> None:
        """A note about field `path` of `res` (file:line, resource and field first); without a resource, the
        message alone (see `text`)."""
        self.text(f"{where(res, path)}: {message}" if res is not None else message)

    def text(self, message: str) -> None:
        """A note naming no resource (meshConfig, or a note collected before and re-added)."""
        if message not in self.items:
            self.items.append(message)


# --- seams -----------------------------------------------------------------------------------------------

HttpFilterContributor = Callable[["Proxy", str], list[dict]]
ResourceContributor = Callable[["Proxy", dict], dict]


@dataclass(frozen=True, slots=True)
class Extensions:
    """Hooks for the security and telemetry issues. Directions: "outbound", "inbound", "gateway"."""

    http_filters_authn: tuple[HttpFilterContributor, ...] = ()  # before fault (jwt_authn, rbac, ext_authz)
    http_filters_before_router: tuple[HttpFilterContributor, ...] = ()  # stats, local rate limit
    listener_contributors: tuple[ResourceContributor, ...] = ()  # may rewrite a listener dict
    cluster_contributors: tuple[ResourceContributor, ...] = ()  # may rewrite a cluster dict


@dataclass(frozen=True, slots=True)
class Options:
    inline_routes: bool = False  # HCM carries `route_config` instead of `rds` (static rendering)
    extensions: Extensions = Extensions()


# --- the proxy being configured --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EgressHost:
    """One Sidecar `egress[].hosts` entry `namespace/dnsName` (`*` any ns, `.` own ns) of egress listener
    `listener`. A `~`-prefixed namespace excludes instead (`~ns/host`; `~/host` in any namespace, so `~/*`
    imports nothing): istiod's hostClassification.excludedHosts, which apply within their listener."""

    namespace: str
    host: str
    listener: int = 0
    excluded: bool = False

    @classmethod
    def parse(cls, entry: str, listener: int, sidecar_ns: str, domain: str) -> "EgressHost":
        ns, _, name = entry.partition("/")
        excluded = ns.startswith("~")
        if excluded:
            ns = ns[1:] or "*"
        return cls(ns, resolve_host(name, sidecar_ns, domain), listener, excluded)

    def _in_scope(self, sidecar_ns: str, obj_ns: str) -> bool:
        return self.namespace in ("*", obj_ns) or (self.namespace == "." and obj_ns == sidecar_ns)

    def admits(self, sidecar_ns: str, obj_ns: str, host: str, virtual_service: bool = False) -> bool:
        """istiod's hostClassification: a service host must fall within the entry's host (Matches, SubsetOf);
        a VirtualService host need only overlap it, either way (VSMatches without gateway semantics, so
        `*.default.svc.cluster.local` is imported by `./reviews.default.svc.cluster.local`)."""
        if self.excluded or not self._in_scope(sidecar_ns, obj_ns):
            return False
        return hosts_intersect(self.host, host) if virtual_service else host_matches(self.host, host)

    def excludes(self, sidecar_ns: str, obj_ns: str, host: str) -> bool:
        """Excluded(h): the host is a subset of this `~` entry's host, in its namespace (or any)."""
        return self.excluded and self._in_scope(sidecar_ns, obj_ns) and host_matches(self.host, host)


def egress_admits(hosts: tuple[EgressHost, ...], sidecar_ns: str, obj_ns: str, host: str,
                  virtual_service: bool = False) -> bool:
    """Some egress listener imports the host (of a service or VirtualService in `obj_ns`): one of its entries
    admits it and none of its `~` entries excludes it (istiod's selectServices / SelectVirtualServices)."""
    for listener in {h.listener for h in hosts}:
        entries = [h for h in hosts if h.listener == listener]
        if not any(e.excludes(sidecar_ns, obj_ns, host) for e in entries) and \
                any(e.admits(sidecar_ns, obj_ns, host, virtual_service) for e in entries):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Proxy:
    """One proxy's view of the mesh (istiod's Proxy + SidecarScope)."""

    mesh: MeshSnapshot
    workload: Workload
    kind: str  # "sidecar" | "router"
    sidecar: Resource | None
    egress: tuple[EgressHost, ...]  # () = no Sidecar scoping: everything exported to the namespace
    outbound_policy: str
    notes: Notes
    options: Options = Options()

    @property
    def namespace(self) -> str:
        return self.workload.namespace

    def sees_service(self, svc: Service) -> bool:
        if self.kind == "sidecar" and not export_visible(svc.export_to, svc.namespace, self.namespace):
            return False
        if not self.egress:
            return True
        return egress_admits(self.egress, self.sidecar.namespace, svc.namespace, svc.hostname)

    def sees_virtual_service(self, vs: Resource) -> bool:
        export = tuple(str(e) for e in vs.spec.get("exportTo") or ())
        if self.kind == "sidecar" and not export_visible(export, vs.namespace, self.namespace):
            return False
        if not self.egress:
            return True
        hosts = [resolve_host(str(h), vs.namespace, self.mesh.config.domain) for h in vs.spec.get("hosts") or ()]
        return any(egress_admits(self.egress, self.sidecar.namespace, vs.namespace, h, virtual_service=True)
                   for h in hosts)

    @property
    def _scope(self) -> tuple:
        """Everything visibility depends on (proxies with the same scope see the same things)."""
        return self.kind, self.namespace, self.egress, self.sidecar.namespace if self.sidecar else ""

    def visible_services(self) -> tuple[Service, ...]:
        return self.mesh.memo(("visible_services",) + self._scope,
                              lambda: tuple(s for s in self.mesh.services if self.sees_service(s)))

    def mesh_virtual_services(self) -> tuple[Resource, ...]:
        return self.mesh.memo(("mesh_virtual_services",) + self._scope, lambda: tuple(
            vs for vs in self.mesh.virtual_services_for(MESH_GATEWAY) if self.sees_virtual_service(vs)))


def make_proxy(mesh: MeshSnapshot, workload: Workload, kind: str = "sidecar", options: Options = Options()) -> Proxy:
    """Resolve the Sidecar scope and outbound policy for a workload."""
    notes = Notes()
    sidecar = mesh.sidecar_for(workload) if kind == "sidecar" else None
    egress: list[EgressHost] = []
    policy = mesh.config.outbound_traffic_policy
    if sidecar is not None:
        for i, listener in enumerate(sidecar.spec.get("egress") or ()):
            if not listener.get("port") and (listener.get("bind") or listener.get("captureMode")):
                notes.add(sidecar, f"spec.egress[{i}]", "`bind`/`captureMode` without a `port` are not translated; "
                                                        "only `hosts` scoping is applied")
            egress += [EgressHost.parse(str(h), i, sidecar.namespace, mesh.config.domain)
                       for h in listener.get("hosts") or ()]
        if sidecar.spec.get("ingress"):
            notes.add(sidecar, "spec.ingress", "Sidecar ingress listeners are not translated")
        otp = sidecar.spec.get("outboundTrafficPolicy")
        if isinstance(otp, Mapping) and otp.get("mode"):
            policy = str(otp["mode"])
    return Proxy(mesh, workload, kind, sidecar, tuple(egress), policy or ALLOW_ANY, notes, options)
