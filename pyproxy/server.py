"""The proxy server: owns the current config snapshot, its listeners and clusters; start, apply, drain, stop.

A config (`Bootstrap`, or listeners + clusters from xDS) becomes a *runtime*: one `ListenerRuntime` per
listener (a bound socket whose `current` HTTP connection manager config can be replaced), and one
`ClusterManager`. `apply()` swaps both whole: new streams see the new config, streams in flight keep the
objects they started with (each `ActiveStream` holds its `HcmRuntime`, each router its `ClusterRuntime`).
Listeners whose address did not change keep their socket, so a swap drops no connection.

The CPU-heavy part of a build (compiling route tables, `compile_routes`) runs on a worker thread through
`self.offload` (`pyproxy.runtime.offload`), so a huge RDS update does not stall traffic; a route table whose
RouteConfiguration object did not change is reused, not recompiled. A replaced snapshot with a large route table
is freed a piece at a time off the loop (`release_retired`) once no stream runs on it any more.

Read next: `pyproxy.http.connection` (what happens on accept), then `pyproxy.filters.router`.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from .config import model
from .config.datasource import read_data_source
from .config.decode import ConfigError
from .filters.jwt_authn_logic import check_config as check_jwt_config
from .runtime.waits import wait_event
from .filters.registry import build_chain, builder_for, unsupported_message
from .filters.router import RouterFilter
from .http.connection import DownstreamConnection
from .http.headers import Headers
from .listener.accept import ChainAcceptor, ChainRuntime, ListenerChains
from .listener.chain_match import ChainMatchError, ChainSelector
from .http.path import PathPolicy
from .observe.access_log import AccessLogManager, build_access_loggers
from .observe.tap import TapHub
from .observe.stats import Stats
from .routing.retry import retry_state_for
from .routing.table import RouteMatchResult, RouteTable
from .tls.secrets import SecretManager
from .tls.transport_socket import SSL_STATS, TlsContextProvider, tls_context_of
from .runtime.offload import Offload, freeze_after_swap, sole_reference
from .tcp.proxy import TcpProxyRuntime
from .tcp.rbac import NetworkRbacConfig
from .tracing import TracingConfigError, build_http_tracer
from .upstream.cluster_manager import ClusterManager

if TYPE_CHECKING:  # pragma: no cover
    from .tracing.export import SpanExporters

log = logging.getLogger("pyproxy.server")

# A replaced route table with at least this many virtual hosts is freed gradually off the loop, and a new one
# that big is frozen out of the collector's view after the swap (pyproxy.runtime.offload). Below it the
# ordinary drop takes a few milliseconds at most.
LARGE_ROUTE_TABLE_VIRTUAL_HOSTS = 1000
# Libraries a proxy imports only when its config (or a scrape) asks for them, each several MiB of RSS
# (docs/performance.md, Memory): aiohttp (JWKS fetches), cryptography (an unverified peer's certificate, a subject
# without short names, JWT), PyJWT (jwt_authn), opentelemetry (HCM tracing), prometheus_client (Istio's metrics
# at a scrape), PyYAML (a bootstrap file). /server_info lists those this process holds.
OPTIONAL_LIBRARIES = ("aiohttp", "cryptography", "jwt", "opentelemetry", "prometheus_client", "yaml")
RELEASE_RETRY_S = 1.0  # how often to look again at a replaced snapshot that an in-flight stream still uses


PRE_TCP_FILTERS = frozenset({"envoy.filters.network.rbac", "istio.stats", "envoy.filters.network.sni_cluster"})


class ConfigRejected(Exception):
    """A config that cannot be applied; the previous one keeps serving (Envoy NACKs it)."""


class BindFailed(ConfigRejected):
    """A listener's address is taken. Unlike a bad config this can heal by itself (the other process exits),
    so a dynamic proxy tries the same config again later (pyproxy.xds.client)."""


def direct_response_bodies(rc: model.RouteConfiguration) -> dict[model.DirectResponseAction, str]:
    """Every `direct_response` body of a route table, read once at load time (Envoy reads DataSources then)."""
    out: dict[model.DirectResponseAction, str] = {}
    for i, vh in enumerate(rc.virtual_hosts):
        for j, route in enumerate(vh.routes):
            dr = route.direct_response
            if dr is not None and dr.body is not None and dr not in out:
                out[dr] = read_data_source(dr.body, f"virtual_hosts[{i}].routes[{j}].direct_response.body")
    return out


class CompiledRoutes:
    """A RouteConfiguration compiled for serving: its `RouteTable` and its direct_response bodies. Built by
    `compile_routes`, a pure function that `ProxyServer.apply` runs on a worker thread."""

    __slots__ = ("route_config", "route_table", "direct_bodies")

    def __init__(self, route_config: model.RouteConfiguration):
        self.route_config = route_config
        self.route_table = RouteTable(route_config)
        self.direct_bodies = direct_response_bodies(route_config)

    @property
    def large(self) -> bool:
        return len(self.route_config.virtual_hosts) >= LARGE_ROUTE_TABLE_VIRTUAL_HOSTS

    def __repr__(self) -> str:
        return f"CompiledRoutes({self.route_table!r})"


def effective_route_config(config: model.HttpConnectionManager,
                           route_config: model.RouteConfiguration | None = None) -> model.RouteConfiguration:
    """The routes an HCM serves: the RDS one when given, else its inline `route_config`, else an empty table."""
    return route_config or config.route_config or model.RouteConfiguration()


def compile_routes(route_config: model.RouteConfiguration) -> CompiledRoutes:
    """Compile a RouteConfiguration; ConfigError names the field. Pure: safe on a worker thread."""
    return CompiledRoutes(route_config)


class HcmRuntime:
    """An HttpConnectionManager config compiled for serving: route table, limits, loggers, counters.
    `routes` is the precompiled route table (built off the loop by `apply`); without it, it is compiled here."""

    def __init__(self, config: model.HttpConnectionManager, clusters: ClusterManager, stats: Stats,
                 rng: random.Random, route_config: model.RouteConfiguration | None = None,
                 access_logs: AccessLogManager | None = None, routes: CompiledRoutes | None = None,
                 node: Any = None, traffic_direction: str = "UNSPECIFIED",
                 tracers: SpanExporters | Callable[[], SpanExporters] | None = None,
                 tap: TapHub | None = None):
        self.config = config
        self.tap = tap if tap is not None else TapHub()  # the proxy's live tap (admin /tap), shared by its HCMs
        self.node = node  # the proxy's Envoy node (bootstrap `node` or the xDS node dict): istio.stats reads it
        self.traffic_direction = traffic_direction  # of the listener this HCM serves (istio.stats' reporter)
        self.clusters = clusters
        self.rng = rng
        if routes is None:
            routes = compile_routes(effective_route_config(config, route_config))
        self.routes = routes
        self.route_config = routes.route_config
        self.route_table = routes.route_table
        self.direct_bodies = routes.direct_bodies
        self.access_loggers = build_access_loggers(config.access_log, manager=access_logs)
        try:
            self.tracer = build_http_tracer(config.tracing, tracers, clusters, node,
                                            egress=traffic_direction == "OUTBOUND")
        except TracingConfigError as e:
            raise ConfigRejected(str(e)) from None
        self.header_limit = config.header_limit_bytes
        self.max_headers = config.max_headers_count
        h1 = config.http_protocol_options
        self.accept_http_10 = bool(h1 and h1.accept_http_10)
        self.default_host_for_http_10 = h1.default_host_for_http_10 if h1 else ""
        # absolute-form request targets (forward-proxy style); Envoy's default is to accept them
        self.allow_absolute_url = not (h1 and h1.allow_absolute_url is False)
        common = config.common_http_protocol_options
        self.underscore_action = common.headers_with_underscores_action if common else "ALLOW"
        self.idle_timeout = (common.idle_timeout if common and common.idle_timeout is not None else 3600.0)
        self.request_headers_timeout = config.request_headers_timeout or 0.0
        policy = PathPolicy(bool(config.normalize_path), config.merge_slashes,
                            config.path_with_escaped_slashes_action)
        self.path_policy = policy if policy.active else None  # None: Envoy's defaults, nothing to do per request
        self.router_factory = RouterFilter
        st = self.stats = stats.scope(f"http.{config.stat_prefix}.")
        try:
            self.filter_factories = build_chain(config.http_filters, st, rng)
        except ValueError as e:
            raise ConfigRejected(str(e)) from None
        self.stats_rq_total = st.counter("downstream_rq_total")
        self.stats_rq_active = st.gauge("downstream_rq_active")
        self.stats_header_timeout = st.counter("downstream_rq_header_timeout")
        self.stats_failed_path_normalization = st.counter("downstream_rq_failed_path_normalization")
        self.stats_redirected_with_normalized_path = st.counter("downstream_rq_redirected_with_normalized_path")
        self.stats_ws_on_non_ws_route = st.counter("downstream_rq_ws_on_non_ws_route")
        self.stats_upgrades_total = st.counter("downstream_cx_upgrades_total")
        self.stats_upgrades_active = st.gauge("downstream_cx_upgrades_active")
        self._rq_xx = {c: st.counter(f"downstream_rq_{c}xx") for c in range(1, 6)}

    def count_response(self, status: int) -> None:
        xx = self._rq_xx.get(status // 100)
        if xx is not None:
            xx.inc()

    # retries are wired by the traffic-management layer; without a policy there are none (Envoy's default)
    def make_retry_state(self, match: RouteMatchResult, headers: Headers, limits: Any, stream: Any) -> Any:
        if match.retry_policy is None and "x-envoy-retry-on" not in headers and "x-envoy-retry-grpc-on" not in headers:
            return None  # fast path: nothing could be retried, Envoy allocates no retry state either
        # the request line: retriable_request_headers may match :method, :authority, :path or :scheme
        return retry_state_for(match, headers, self.rng, method=stream.method, authority=stream.info.authority,
                               path=stream.path, scheme=stream.info.scheme, limits=limits)

    @staticmethod
    def attempt_count_header(match: RouteMatchResult) -> bool:
        return match.attempt_count_header  # the virtual host's include_request_attempt_count

    @staticmethod
    def attempt_count_in_response(match: RouteMatchResult) -> bool:
        return match.attempt_count_in_response  # the virtual host's include_attempt_count_in_response


class ListenerRuntime:
    """A bound listener. `current` is swapped on config change; open connections keep serving."""

    def __init__(self, config: model.Listener, hcm: HcmRuntime | None, stats: Stats, worker_id: int = 0,
                 chains: ListenerChains | None = None):
        self.config = config
        self.name = config.name or _address_key(config)
        self.current = hcm
        # None: one plaintext chain, connections go straight to the HCM (the fast path). Otherwise chain
        # selection / TLS happen per connection in pyproxy.listener.accept.
        self.chains = chains
        self.server: Any = None  # asyncio's or uvloop's Server (uvloop's `sockets` is a list, not the tuple typeshed says)
        # an HTTP DownstreamConnection or a pyproxy.tcp.proxy.TcpProxySession (both: `draining`, `close`, `abort`)
        self.connections: set[Any] = set()
        self.acceptors: set[ChainAcceptor] = set()  # connections whose chain or TLS handshake is not settled
        self.handshakes: set[asyncio.Task] = set()
        self.last_transport_failure: str | None = None  # %DOWNSTREAM_TRANSPORT_FAILURE_REASON% of the last one
        self._all_closed: asyncio.Event | None = None  # set when draining and the last connection closes
        self.draining = False
        st = stats.scope(f"listener.{_address_key(config)}.")
        self.stats_cx_total = st.counter("downstream_cx_total")
        self.stats_cx_active = st.gauge("downstream_cx_active")
        self.stats_worker_cx_total = st.counter(f"worker_{worker_id}.downstream_cx_total")  # Envoy's per-worker stat
        self.stats_no_chain = st.counter("no_filter_chain_match")
        self.stats_filters_timeout = st.counter("downstream_pre_cx_timeout")
        self._scope = st
        self.ssl_stats: dict[str, Any] = {}
        self.count_tls(config)
        self.port = 0

    def count_tls(self, config: model.Listener) -> None:
        """Create the listener's ssl.* stats once a filter chain terminates TLS (Envoy has them only then;
        an update that adds TLS, e.g. PeerAuthentication DISABLE -> STRICT, creates them; they then stay)."""
        if self.ssl_stats:
            return
        chains = (*config.filter_chains, *((config.default_filter_chain,) if config.default_filter_chain else ()))
        if any(fc.transport_socket is not None for fc in chains):
            self.ssl_stats = {name: self._scope.counter(f"ssl.{name}") for name in SSL_STATS}

    def hcms(self) -> list[HcmRuntime]:
        """Every HTTP connection manager this listener serves now (one per filter chain)."""
        if self.chains is None:
            return [self.current] if self.current is not None else []
        return [rt.hcm for rt in self.chains.by_key.values() if rt.hcm is not None]

    def make_protocol(self) -> asyncio.Protocol:
        if self.chains is None:
            return DownstreamConnection(self)
        return ChainAcceptor(self)

    # the accept path of multi-chain / TLS listeners (pyproxy.listener.accept) reports here
    def accepted(self, acceptor: ChainAcceptor) -> None:
        self.acceptors.add(acceptor)
        self.stats_cx_total.inc()
        self.stats_worker_cx_total.inc()
        self.stats_cx_active.inc()

    def rejected(self, acceptor: ChainAcceptor) -> None:
        self.acceptors.discard(acceptor)
        self.stats_cx_active.dec()

    def handed_over(self, acceptor: ChainAcceptor) -> None:
        self.acceptors.discard(acceptor)

    def track(self, conn: Any) -> None:
        conn.draining = self.draining
        self.connections.add(conn)

    def untrack(self, conn: Any) -> None:
        self.on_connection_close(conn)

    def on_connection_open(self, conn: Any) -> None:
        conn.draining = self.draining
        self.connections.add(conn)
        self.stats_cx_total.inc()
        self.stats_worker_cx_total.inc()
        self.stats_cx_active.inc()

    def on_connection_close(self, conn: Any) -> None:
        self.connections.discard(conn)
        self.stats_cx_active.dec()
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    async def start(self, reuse_port: bool = False) -> None:
        if self.config.bind_to_port is False:
            return  # a listener that only exists to be handed connections (Istio's per-port listeners)
        sa = _socket_address(self.config)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self.make_protocol, host=sa.address, port=sa.port_value,
            reuse_address=True, reuse_port=reuse_port or None, backlog=1024,
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def drain(self, timeout: float) -> None:
        """Stop accepting; let connections finish their current request, then close them."""
        if self.server is not None:
            self.server.close()
        for acceptor in list(self.acceptors):
            acceptor._close()
        for task in list(self.handshakes):
            task.cancel()
        for conn in list(self.connections):
            conn.draining = True
            if not conn.streams:
                conn.close()
        if self.connections and timeout > 0:
            self._all_closed = asyncio.Event()
            await wait_event(self._all_closed, timeout)
        for conn in list(self.connections):
            conn.abort()


def _socket_address(listener: model.Listener) -> Any:
    """The listener's `address.socket_address` (the decoder refuses a listener without one)."""
    return listener.address.socket_address  # type: ignore[union-attr]


def _address_key(listener: model.Listener) -> str:
    sa = _socket_address(listener)
    return f"{sa.address}_{sa.port_value}"


def chains_of(listener: model.Listener) -> list[tuple[str, model.FilterChain]]:
    """(key, chain) for each filter chain, `default_filter_chain` last. The key names the chain across config
    swaps: its `name`, else its position."""
    out = [(chain.name or f"filter_chains[{i}]", chain) for i, chain in enumerate(listener.filter_chains)]
    if listener.default_filter_chain is not None:
        out.append((listener.default_filter_chain.name or "default_filter_chain", listener.default_filter_chain))
    return out


def http_connection_manager_of(listener: model.Listener) -> model.HttpConnectionManager:
    """The first chain's HTTP connection manager (every chain must have one: see validate_snapshot)."""
    for _key, chain in chains_of(listener):
        hcm = chain.http_connection_manager
        if hcm is not None:
            return hcm
    raise ConfigRejected(f"listener {listener.name!r}: only HTTP listeners (an "
                         "envoy.filters.network.http_connection_manager filter) are supported")


def single_plaintext_chain(listener: model.Listener) -> bool:
    """One chain, no TLS, nothing to match: connections go straight to the HCM (no listener-filter work)."""
    chains = chains_of(listener)
    if len(chains) != 1:
        return False
    chain = chains[0][1]
    if chain.http_connection_manager is None:
        return False  # a tcp_proxy chain is served through the ChainAcceptor
    empty = chain.filter_chain_match is None or chain.filter_chain_match == model.FilterChainMatch()
    return empty and tls_context_of(chain.transport_socket) is None and not any(
        f.name == "envoy.filters.listener.http_inspector" for f in listener.listener_filters)


def validate_snapshot(listeners: Iterable[model.Listener], clusters: Iterable[model.Cluster]) -> None:
    """Checks Envoy makes when a config is loaded (beyond schema): unique names, known filters."""
    names = set()
    for c in clusters:
        if c.name in names:
            raise ConfigRejected(f"duplicate cluster name {c.name!r}")
        names.add(c.name)
        if c.type in ("STRICT_DNS", "LOGICAL_DNS") and c.load_assignment is None:
            raise ConfigRejected(f"cluster {c.name!r}: type {c.type} needs a load_assignment")
        for where, ts in ((f"cluster {c.name!r}: transport_socket", c.transport_socket),
                          *((f"cluster {c.name!r}: transport_socket_matches[{i}] ({m.name})", m.transport_socket)
                            for i, m in enumerate(c.transport_socket_matches))):
            try:
                tc = tls_context_of(ts)
            except ValueError as e:
                raise ConfigRejected(f"{where}: {e}") from None
            if tc is not None and not isinstance(tc, model.UpstreamTlsContext):
                raise ConfigRejected(f"{where}: a cluster's TLS context must be an UpstreamTlsContext")
    lnames = set()
    for lis in listeners:
        key = lis.name or _address_key(lis)
        if key in lnames:
            raise ConfigRejected(f"duplicate listener name {key!r}")
        lnames.add(key)
        chains = chains_of(lis)
        if not chains:
            raise ConfigRejected(f"listener {key!r}: no filter chains")
        for ckey, chain in chains:
            try:
                tc = tls_context_of(chain.transport_socket)
            except ValueError as e:
                raise ConfigRejected(f"listener {key!r} {ckey}: {e}") from None
            if tc is not None and not isinstance(tc, model.DownstreamTlsContext):
                raise ConfigRejected(f"listener {key!r} {ckey}: a filter chain's TLS context must be a "
                                     "DownstreamTlsContext")
            hcm = chain.http_connection_manager
            tcp = chain.tcp_proxy
            network = [f.name for f in chain.filters] or ["none"]
            # before a tcp_proxy: network RBAC filters, Istio's `istio.stats` (TCP metrics), an sni_cluster (run in
            # the config's order, as Envoy does); nothing else may come before the terminal filter
            pre = network[:-1]
            pre_ok = all(n in PRE_TCP_FILTERS for n in pre) and pre.count("envoy.filters.network.sni_cluster") <= 1
            if (hcm is None) == (tcp is None) or network[-1] not in (
                    "envoy.filters.network.http_connection_manager", "envoy.filters.network.tcp_proxy") \
                    or not pre_ok or (pre and hcm is not None):
                raise ConfigRejected(f"listener {key!r} {ckey}: a filter chain needs exactly one network filter, "
                                     "envoy.filters.network.http_connection_manager or "
                                     "envoy.filters.network.tcp_proxy (the latter may follow "
                                     "envoy.filters.network.rbac filters, istio.stats and an "
                                     "envoy.filters.network.sni_cluster), "
                                     f"got {', '.join(network)}")
            if hcm is None:  # (then tcp is set: exactly one of the two, checked above)
                continue
            filters = [f.name for f in hcm.http_filters]
            if not filters or filters[-1] != "envoy.filters.http.router":
                raise ConfigRejected(f"listener {key!r}: the last HTTP filter must be envoy.filters.http.router "
                                     f"(got {filters or 'none'})")
            for f in hcm.http_filters[:-1]:
                if builder_for(f) is None and not f.is_optional:
                    raise ConfigRejected(f"listener {key!r}: {unsupported_message(f)}")
                if isinstance(f.typed_config, model.JwtAuthentication):
                    try:
                        check_jwt_config(f.typed_config)
                    except ValueError as e:
                        raise ConfigRejected(f"listener {key!r} {ckey}: {f.name}: {e}") from None
        try:
            ChainSelector(lis.filter_chains, lis.default_filter_chain, key)
        except ChainMatchError as e:
            raise ConfigRejected(str(e)) from None


class ProxyServer:
    """Everything one pyproxy worker runs: listeners + clusters from the current config."""

    def __init__(self, *, stats: Stats | None = None, rng: random.Random | None = None, reuse_port: bool = False,
                 drain_time: float = 5.0, worker_id: int | None = None):
        self.worker_id = worker_id
        self.stats = stats or Stats()
        self.node: Any = None  # Envoy's node (bootstrap `node`, or the xDS node dict of `pyproxy sidecar`)
        self.secrets = SecretManager()  # SDS secrets by name (`default`, `ROOTCA`): filled by the certificate agent
        self.rng = rng or random.Random()
        self.reuse_port = reuse_port
        self.drain_time = drain_time
        self.listeners: dict[str, ListenerRuntime] = {}
        self.clusters: ClusterManager | None = None
        self.listener_configs: tuple[model.Listener, ...] = ()
        self.cluster_configs: tuple[model.Cluster, ...] = ()
        self.route_configs: dict[str, model.RouteConfiguration] = {}
        self.endpoint_configs: dict[str, model.ClusterLoadAssignment] = {}
        self.version = ""
        self.last_updated = 0.0
        self.started = time.time()
        self._lock = asyncio.Lock()
        self.access_logs: AccessLogManager | None = None
        self.span_exporters: SpanExporters | None = None  # trace export pipelines (pyproxy.tracing.export)
        self.tap = TapHub(self.stats)  # admin /tap subscribers (pyproxy.observe.tap); empty = no cost
        self.offload = Offload()  # where route tables are compiled and old ones freed (a worker thread)
        self._retired: list[HcmRuntime] = []  # replaced snapshots with a large route table, freed gradually
        self._release_timer: asyncio.TimerHandle | None = None
        self._release_tasks: set[asyncio.Task] = set()

    @property
    def ready(self) -> bool:
        return self.clusters is not None

    async def apply(self, listeners: Iterable[model.Listener], clusters: Iterable[model.Cluster],
                    version: str = "", *, routes: Mapping[str, model.RouteConfiguration] | None = None,
                    endpoints: Mapping[str, model.ClusterLoadAssignment] | None = None) -> None:
        """Build the new runtime completely, then swap it in; on any error the old one keeps serving.

        `routes` are the RDS route configurations by name (for listeners whose HCM uses `rds`), `endpoints` the
        EDS load assignments by service name (for clusters of type EDS). Static configs pass neither."""
        listeners = tuple(listeners)
        clusters = tuple(clusters)
        routes = dict(routes or {})
        endpoints = dict(endpoints or {})
        validate_snapshot(listeners, clusters)
        for lis in listeners:
            for _ckey, chain in chains_of(lis):
                hcm_cfg = chain.http_connection_manager
                if hcm_cfg is not None and hcm_cfg.rds is not None and hcm_cfg.rds.route_config_name not in routes:
                    raise ConfigRejected(f"listener {lis.name!r}: route configuration "
                                         f"{hcm_cfg.rds.route_config_name!r} (rds) was not provided")
        with self.offload.gc_paused():  # no collector pass over a half-built snapshot (pyproxy.runtime.offload)
            async with self._lock:
                await self._apply_locked(listeners, clusters, version, routes, endpoints)

    def _compiled_now(self) -> dict[int, CompiledRoutes]:
        """The route tables serving now, by id of their RouteConfiguration (an unchanged one is reused)."""
        return {id(h.route_config): h.routes for rt in self.listeners.values() for h in rt.hcms()}

    def _span_exporters(self) -> SpanExporters:
        """The proxy's trace pipelines, made when the first HCM that traces is built: opentelemetry-sdk is
        imported then, not by a proxy whose config traces nothing (benchmarks/memory_bench.py)."""
        if self.span_exporters is None:
            from .tracing.export import SpanExporters

            self.span_exporters = SpanExporters()
            self.span_exporters.clusters = self.clusters
        return self.span_exporters

    async def _apply_locked(self, listeners: tuple[model.Listener, ...], clusters: tuple[model.Cluster, ...],
                            version: str, routes: dict[str, model.RouteConfiguration],
                            endpoints: dict[str, model.ClusterLoadAssignment]) -> None:
        loop = asyncio.get_running_loop()
        if self.access_logs is None:
            self.access_logs = AccessLogManager(scheduler=loop.call_later)
        try:
            new_clusters = ClusterManager(clusters, self.stats, self.rng, previous=self.clusters,
                                          endpoints=endpoints, secrets=self.secrets)
        except ValueError as e:  # a transport socket's key material (unreadable file, refused by OpenSSL)
            raise ConfigRejected(str(e)) from None
        await new_clusters.start()
        new_hcms: dict[str, HcmRuntime | None] = {}  # None: a listener of tcp_proxy chains only
        new_chains: dict[str, ListenerChains | None] = {}
        all_hcms: list[HcmRuntime] = []
        serving = self._compiled_now()
        built_large = False
        for lis in listeners:
            key = lis.name or _address_key(lis)
            runtimes: dict[int, ChainRuntime] = {}
            for ckey, chain in chains_of(lis):
                hcm_cfg = chain.http_connection_manager
                if hcm_cfg is None:  # a tcp_proxy chain (validate_snapshot: exactly one of the two)
                    try:
                        tcp = TcpProxyRuntime(chain.tcp_proxy, new_clusters, self.stats, self.rng,
                                              access_logs=self.access_logs, sni_cluster=chain.sni_cluster,
                                              rbac=tuple(NetworkRbacConfig(r, self.stats) for r in chain.network_rbac),
                                              network_filters=chain.filters, node=self.node,
                                              traffic_direction=lis.traffic_direction)
                        tc = tls_context_of(chain.transport_socket)
                        tls = TlsContextProvider(tc, self.secrets, f"listener {key!r} {ckey}.transport_socket") \
                            if tc is not None else None
                    except (ConfigError, ValueError) as e:
                        raise ConfigRejected(f"listener {key!r}: {e}") from None
                    runtimes[id(chain)] = ChainRuntime(ckey, chain, None, tls, tcp)
                    continue
                rc = routes[hcm_cfg.rds.route_config_name] if hcm_cfg.rds is not None else None
                rc = effective_route_config(hcm_cfg, rc)
                try:
                    compiled = serving.get(id(rc))
                    if compiled is None or compiled.route_config is not rc:
                        compiled = await self.offload.run(compile_routes, rc)  # the heavy part, off the loop
                        built_large = built_large or compiled.large
                        serving[id(rc)] = compiled
                    hcm = HcmRuntime(hcm_cfg, new_clusters, self.stats, self.rng,
                                     access_logs=self.access_logs, routes=compiled, node=self.node,
                                     traffic_direction=lis.traffic_direction, tracers=self._span_exporters,
                                     tap=self.tap)
                    tc = tls_context_of(chain.transport_socket)
                    tls = TlsContextProvider(tc, self.secrets, f"listener {key!r} {ckey}.transport_socket") \
                        if tc is not None else None
                except (ConfigError, ValueError) as e:
                    raise ConfigRejected(f"listener {key!r}: {e}") from None
                runtimes[id(chain)] = ChainRuntime(ckey, chain, hcm, tls)
                all_hcms.append(hcm)
            new_hcms[key] = next((rt.hcm for rt in runtimes.values() if rt.hcm is not None), None)
            if single_plaintext_chain(lis):
                new_chains[key] = None
            else:
                selector = ChainSelector(lis.filter_chains, lis.default_filter_chain, key)
                new_chains[key] = ListenerChains(selector, runtimes, {f.name for f in lis.listener_filters},
                                                 lis.listener_filters_timeout,
                                                 lis.continue_on_listener_filters_timeout)
        # bind new listeners before touching old ones, so a bind failure leaves everything as it was
        started: list[ListenerRuntime] = []
        new_listeners: dict[str, ListenerRuntime] = {}
        try:
            for lis in listeners:
                key = lis.name or _address_key(lis)
                old = self.listeners.get(key)
                if old is not None and old.config.address == lis.address and \
                        old.config.bind_to_port == lis.bind_to_port:
                    new_listeners[key] = old
                    continue
                rt = ListenerRuntime(lis, new_hcms[key], self.stats, self.worker_id or 0, new_chains[key])
                await rt.start(self.reuse_port)
                started.append(rt)
                new_listeners[key] = rt
        except OSError as e:
            for rt in started:
                if rt.server is not None:
                    rt.server.close()
            raise BindFailed(f"cannot bind listener: {e}") from None
        # commit: swap everything
        replaced = [h for rt in self.listeners.values() for h in rt.hcms()]
        for key, rt in new_listeners.items():
            rt.current = new_hcms[key]
            rt.chains = new_chains[key]
            rt.config = next(lis for lis in listeners if (lis.name or _address_key(lis)) == key)
            rt.count_tls(rt.config)
        removed = [rt for key, rt in self.listeners.items() if new_listeners.get(key) is not rt]
        self.listeners = new_listeners
        self.clusters = new_clusters
        if self.span_exporters is not None:
            self.span_exporters.clusters = new_clusters  # span export posts to hosts of the clusters now serving
        self.listener_configs = listeners
        self.cluster_configs = clusters
        self.route_configs = routes
        self.endpoint_configs = endpoints
        self.version = version or str(int(time.time() * 1000))
        self.last_updated = time.time()
        for rt in removed:
            loop.create_task(rt.drain(self.drain_time))
        if built_large and self.offload.off_loop:
            freeze_after_swap()
        kept = {id(h.routes) for h in all_hcms}
        self._retired.extend(h for h in replaced if h.routes.large and id(h.routes) not in kept)
        del replaced
        if self._retired:
            self._schedule_release(0.0)
        log.info("config %s applied: %d listeners, %d clusters", self.version, len(listeners), len(clusters))

    # ---------------------------------------------------------------- freeing replaced snapshots

    def _schedule_release(self, delay: float) -> None:
        if self._release_timer is not None or not self._retired:
            return

        def fire() -> None:
            self._release_timer = None
            task = asyncio.get_running_loop().create_task(self.release_retired())
            self._release_tasks.add(task)
            task.add_done_callback(self._release_tasks.discard)

        self._release_timer = asyncio.get_running_loop().call_later(delay, fire)

    async def release_retired(self) -> int:
        """Free the replaced large route tables that nothing uses any more, a piece at a time off the loop
        (`release_gradually`); one that an in-flight stream (or an idle connection's last request) still holds
        is looked at again in RELEASE_RETRY_S. Returns the number of objects released."""
        released = 0
        still_used: list[HcmRuntime] = []
        while self._retired:
            holder: list[Any] = [self._retired.pop()]
            if not sole_reference(holder, 0):
                still_used.append(holder.pop())
                continue
            parts: list[Any] = [holder[0].routes]
            holder.clear()  # frees the small HcmRuntime itself; its route table lives on in `parts`
            if not sole_reference(parts, 0):
                continue  # shared with a snapshot still serving: nothing to free
            routes = parts.pop()
            parts = [routes.route_table, routes.route_config, routes.direct_bodies]
            del routes
            released += await self.offload.release(parts)
        self._retired.extend(still_used)
        if self._retired:
            self._schedule_release(RELEASE_RETRY_S)
        return released

    async def apply_bootstrap(self, bootstrap: model.Bootstrap) -> None:
        sr = bootstrap.static_resources or model.StaticResources()
        if bootstrap.node is not None:
            self.node = bootstrap.node
        await self.apply(sr.listeners, sr.clusters, version="static")

    def begin_drain(self) -> None:
        """Shutdown is coming: keep serving, but answer with `connection: close` so clients move elsewhere.
        Idle keep-alive connections are left open (closing them now races with a client that is just sending
        on one: its request would fail); each closes after its next response, the rest at the end of the drain."""
        for rt in self.listeners.values():
            rt.draining = True
            for conn in list(rt.connections):
                conn.draining = True

    async def stop(self) -> None:
        self.tap.close()
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        self._retired.clear()
        for rt in self.listeners.values():
            await rt.drain(0.0)
        if self.clusters is not None:
            self.clusters.close()
        if self.access_logs is not None:
            self.access_logs.close()
        if self.span_exporters is not None:  # flush queued spans; the posts block, so not on the loop
            exporters, self.span_exporters = self.span_exporters, None
            await asyncio.to_thread(exporters.close)

    def collect_stats(self) -> Stats:
        """Bring counts kept by pure modules (outlier detection, circuit breakers) into `self.stats`."""
        if self.clusters is not None:
            for rt in self.clusters.clusters.values():
                rt.collect_stats()
        return self.stats

    def listener_port(self, name: str) -> int:
        return self.listeners[name].port

    def server_info(self) -> dict[str, Any]:
        return {
            "version": "pyproxy/0.1.0",
            "state": "LIVE" if self.ready else "PRE_INITIALIZING",
            "uptime_current_epoch": f"{int(time.time() - self.started)}s",
            "pid": os.getpid(),
            "config_version": self.version,
            "worker_id": self.worker_id,
            "optional_libraries_loaded": loaded_optional_libraries(),
            "request_path_compiled": request_path_compiled(),
        }


def loaded_optional_libraries() -> list[str]:
    """Which of OPTIONAL_LIBRARIES this process has imported (sorted)."""
    return [name for name in OPTIONAL_LIBRARIES if name in sys.modules]


def request_path_compiled() -> bool:
    """Does this process run the mypyc build of the request path (`make compiled`)? A compiled module is an
    extension (.so); `python -m` from the repository imports the interpreted tree even with the build on
    PYTHONPATH, so this is the way to tell (docs/performance.md, *Compiled build*)."""
    from pyproxy.http import connection

    return not (connection.__file__ or "").endswith(".py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
