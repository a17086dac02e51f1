"""Clusters at run time: their hosts, load balancer, circuit-breaker limits, pools and stats.

Envoy's ClusterManager turns each `Cluster` resource into a live object; so does this module. Config is
frozen and swapped whole, but live state must survive a swap when its identity is unchanged: a cluster
whose config did not change keeps its `ClusterRuntime` (pools, outlier state, counters); a changed one
gets a new runtime that adopts the old `Host` objects by (address, port), so an ejected host stays ejected
(while the new config still has outlier detection to bring it back; without one it returns at once).
In-flight requests keep the runtime they started with; an orphaned runtime's idle connections are closed
and its busy ones finish their request.

Endpoint discovery: STATIC takes `load_assignment` as written; STRICT_DNS resolves every endpoint's name
(all addresses, Envoy's behaviour) at start and every `dns_refresh_rate` (5 s); EDS endpoints are pushed
by the control plane (`update_endpoints`).

TLS origination: the cluster's `transport_socket` and `transport_socket_matches` become `TlsContextProvider`s
once per runtime (`pyproxy.tls.transport_socket`); `tls_for(host)` picks one per endpoint (Istio's auto-mTLS:
endpoints labelled `tlsMode: istio` get the mTLS socket, the others plaintext).
"""
from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from typing import Any, Iterable

from ..config import model
from ..observe.stats import Stats
from ..tls.secrets import SecretManager
from ..tls.transport_socket import SSL_STATS, TlsContextProvider, tls_context_of
from .circuit_breaker import ResourceLimits
from .host import Host
from .load_balancer import LbContext, build_load_balancer
from .outlier import OutlierDetector, detector_for
from .pool import ConnectionPool

_DEFAULT_RNG = random.Random()


def endpoints_of(cla: model.ClusterLoadAssignment | None) -> list[tuple[str, int, int, Any]]:
    """(address, port, weight, LbEndpoint) for each endpoint of a load assignment, priority 0 first."""
    out: list[tuple[str, int, int, Any]] = []
    if cla is None:
        return out
    for loc in sorted(cla.endpoints, key=lambda l: l.priority):
        for ep in loc.lb_endpoints:
            sa: Any = ep.endpoint.address.socket_address  # type: ignore[union-attr]  # decode requires all three
            out.append((sa.address, sa.port_value, ep.load_balancing_weight or 1, ep))
    return out

log = logging.getLogger("pyproxy.upstream")


def is_local(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "localhost")


def backend_hint(cluster: str, address: str, port: int) -> str:
    """Said once per host, at its first failed connect: `pyproxy run -c examples/static/front-proxy.yaml` alone
    answers 503 until a backend runs on :8080, which puzzles people. Only for hosts on this machine from static or
    DNS clusters (a backend started by hand); Envoy logs connect failures at debug level only."""
    return (f"cluster {cluster}: nothing accepted a connection to {address}:{port}; requests routed there get "
            f"503 (flag UF) until a backend listens there (a test backend: "
            f".venv/bin/python -m pyproxy.demo_app --port {port})")


class ClusterRuntime:
    """One live cluster (Envoy: ClusterImplBase + its host set + thread-local LB and pools)."""

    def __init__(self, config: model.Cluster, stats: Stats, rng: random.Random | None = None,
                 previous: "ClusterRuntime | None" = None, eds: model.ClusterLoadAssignment | None = None,
                 secrets: SecretManager | None = None):
        self.config = config
        self.name = config.name
        self.rng = rng or _DEFAULT_RNG
        self.stats = stats.scope(f"cluster.{config.alt_stat_name or config.name}.")
        st = self.stats
        self.stats_rq_total = st.counter("upstream_rq_total")
        self.stats_rq_completed = st.counter("upstream_rq_completed")
        self.stats_rq_active = st.gauge("upstream_rq_active")
        self.stats_rq_timeout = st.counter("upstream_rq_timeout")
        self.stats_rq_per_try_timeout = st.counter("upstream_rq_per_try_timeout")
        self.stats_rq_pending_total = st.counter("upstream_rq_pending_total")
        self.stats_rq_retry = st.counter("upstream_rq_retry")
        st.counter("upstream_rq_retry_success")  # shown from the start; counted by name (RetryDecision.stat)
        self.stats_rq_rx_reset = st.counter("upstream_rq_rx_reset")
        self.stats_rq_tx_reset = st.counter("upstream_rq_tx_reset")
        self.stats_cx_total = st.counter("upstream_cx_total")
        self.stats_cx_http1_total = st.counter("upstream_cx_http1_total")
        self.stats_cx_active = st.gauge("upstream_cx_active")
        self.stats_cx_connect_fail = st.counter("upstream_cx_connect_fail")
        self.stats_cx_connect_timeout = st.counter("upstream_cx_connect_timeout")
        self.stats_cx_destroy = st.counter("upstream_cx_destroy")
        self.stats_cx_max_requests = st.counter("upstream_cx_max_requests")
        self.stats_cx_none_healthy = st.counter("upstream_cx_none_healthy")
        self.stats_membership_total = st.gauge("membership_total")
        self.stats_membership_healthy = st.gauge("membership_healthy")
        self._rq_xx: dict[int, Any] = {}  # created on first use, as Envoy's upstream_rq_<N>xx
        self._rq_codes: dict[int, Any] = {}
        secrets = secrets if secrets is not None else SecretManager()
        self.tls = self._provider(config.transport_socket, secrets, "transport_socket")
        self.tls_matches = tuple(
            (dict(m.match or {}), self._provider(m.transport_socket, secrets, f"transport_socket_matches[{i}]"))
            for i, m in enumerate(config.transport_socket_matches))
        if self.tls is not None or any(p is not None for _, p in self.tls_matches):
            self.ssl_stats = {name: st.counter(f"ssl.{name}") for name in SSL_STATS}
        else:
            self.ssl_stats = {}
        self.connect_timeout = config.effective_connect_timeout
        http_opts = config.upstream_http_options
        self.idle_timeout = http_opts.idle_timeout if http_opts and http_opts.idle_timeout is not None else 3600.0
        self.max_requests_per_connection = config.effective_max_requests_per_connection
        thresholds = config.circuit_breakers.thresholds if config.circuit_breakers else ()
        self.limits = ResourceLimits(thresholds)
        self.pools: dict[Any, ConnectionPool] = {}
        self.hosts: list[Host] = []
        self._old_hosts = {(h.address, h.port): h for h in previous.hosts} if previous else {}
        self._dns_task: asyncio.Task | None = None
        self.eds = eds
        self.retired = False
        self.outlier: OutlierDetector | None = None  # made by set_endpoints when outlier_detection is configured
        self._outlier_timer: asyncio.TimerHandle | None = None
        self.set_endpoints(endpoints_of(eds) if config.type == "EDS" else self._static_endpoints())

    def _provider(self, socket: Any, secrets: SecretManager, where: str) -> TlsContextProvider | None:
        tc = tls_context_of(socket)
        if tc is None:
            return None
        return TlsContextProvider(tc, secrets, f"cluster {self.name!r} {where}")

    def tls_for(self, host: Host) -> TlsContextProvider | None:
        """The transport socket for `host`: the first `transport_socket_matches` entry whose `match` is a subset
        of the endpoint's `envoy.transport_socket_match` metadata, else the cluster's `transport_socket`."""
        if self.tls_matches:
            meta = ((host.metadata or {}).get("filter_metadata") or {}).get("envoy.transport_socket_match") or {}
            for match, provider in self.tls_matches:
                if all(meta.get(k) == v for k, v in match.items()):
                    return provider
        return self.tls

    # ------------------------------------------------------------ membership
    def _static_endpoints(self) -> list[tuple[str, int, int, Any]]:
        if self.config.type in ("STATIC", "ORIGINAL_DST"):
            return endpoints_of(self.config.load_assignment)
        return []  # DNS clusters fill in after resolution

    def set_endpoints(self, endpoints: Iterable[tuple[str, int, int, Any]]) -> None:
        """Replace the host set, keeping Host objects (and their live state) by (address, port)."""
        old = {(h.address, h.port): h for h in self.hosts} or self._old_hosts
        hosts: list[Host] = []
        for address, port, weight, ep in endpoints:
            h = old.get((address, port))
            if h is None:
                h = Host(address, port, weight=weight)
                h.metadata = getattr(ep, "metadata", None) if ep is not None else None
            else:
                h.weight = weight
                before = self.tls_for(h)
                h.metadata = getattr(ep, "metadata", None) if ep is not None else None
                if self.tls_for(h) is not before:
                    # the endpoint's tlsMode moved (auto-mTLS: its PeerAuthentication changed): the pool chose
                    # its transport socket once, so it drains and the next request gets a pool with the new one
                    pool = self.pools.pop(h, None)
                    if pool is not None:
                        pool.drain()
            if ep is not None and getattr(ep, "health_status", "UNKNOWN") in ("UNHEALTHY", "DRAINING", "TIMEOUT"):
                h.health_status = ep.health_status
            hosts.append(h)
        removed = set(old.values()) - set(hosts)
        for h in removed:
            pool = self.pools.pop(h, None)
            if pool is not None:
                pool.drain()  # requests in flight to a removed host finish; nothing new goes there
        self.hosts = hosts
        self.stats_membership_total.set(len(hosts))
        self.stats_membership_healthy.set(sum(1 for h in hosts if h.healthy))
        self.lb = build_load_balancer(self.config, hosts, self.rng)
        if self.outlier is not None:
            self.outlier.update_hosts(hosts)
        elif self.config.outlier_detection is not None:
            self.outlier = detector_for(self.config.outlier_detection, hosts, rng=self.rng, clock=time.monotonic)
        else:
            # a host adopted from a runtime whose config had outlier detection: with none here, no interval
            # timer would ever return it, so it would stay ejected for good. No detector, no ejection.
            for h in hosts:
                if h.ejected:
                    h.ejected_until = None
                    h.unejected_at = time.monotonic()

    def update_endpoints(self, cla: model.ClusterLoadAssignment) -> None:
        self.eds = cla
        self.set_endpoints(endpoints_of(cla))

    async def start(self) -> None:
        """Resolve DNS clusters once before serving (Envoy's cluster warming), then keep refreshing; start the
        outlier detector's interval sweep."""
        if self.outlier is not None and self._outlier_timer is None:
            self._outlier_timer = asyncio.get_running_loop().call_later(self.outlier.interval, self._outlier_tick)
        if self.config.type in ("STRICT_DNS", "LOGICAL_DNS"):
            await self._resolve()
            self._dns_task = asyncio.get_running_loop().create_task(self._dns_refresh())

    async def _resolve(self) -> None:
        loop = asyncio.get_running_loop()
        family = {"V4_ONLY": socket.AF_INET, "V6_ONLY": socket.AF_INET6}.get(self.config.dns_lookup_family,
                                                                              socket.AF_UNSPEC)
        resolved: list[tuple[str, int, int, Any]] = []
        for address, port, weight, ep in endpoints_of(self.config.load_assignment):
            try:
                infos = await loop.getaddrinfo(address, port, family=family, type=socket.SOCK_STREAM)
            except OSError:
                self.stats.counter("update_failure").inc()
                continue
            seen = set()
            for info in infos:
                ip = str(info[4][0])  # (typeshed: str | int; an address family's first field is the host)
                if ip not in seen:
                    seen.add(ip)
                    resolved.append((ip, port, weight, ep))
                if self.config.type == "LOGICAL_DNS":
                    break
        if resolved or not self.hosts:
            self.set_endpoints(resolved)

    async def _dns_refresh(self) -> None:
        interval = self.config.dns_refresh_rate or 5.0
        while True:
            await asyncio.sleep(interval)
            await self._resolve()

    # ------------------------------------------------------------ choosing a host and a pool
    def choose_host(self, ctx: LbContext) -> Host | None:
        return self.lb.choose(ctx)

    def pool_for(self, host: Host) -> ConnectionPool:
        pool = self.pools.get(host)
        if pool is None:
            pool = self.pools[host] = ConnectionPool(self, host)
        return pool

    # ------------------------------------------------------------ connection accounting (from pools)
    def on_connection_start(self, http1: bool = True) -> None:
        self.limits.inc_connections()
        self.stats_cx_total.inc()
        if http1:
            self.stats_cx_http1_total.inc()
        self.stats_cx_active.inc()

    def on_connect_failure(self, host: Host) -> None:
        self.limits.dec_connections()
        self.stats_cx_active.dec()
        self.stats_cx_connect_fail.inc()
        host.stats_cx_connect_fail += 1
        if host.stats_cx_connect_fail == 1 and self.config.type != "EDS" and is_local(host.address):
            log.warning("%s", backend_hint(self.name, host.address, host.port))

    def on_connection_established(self, conn: Any) -> None:
        conn.counted = True
        conn.pool.host.cx_active += 1
        conn.pool.host.cx_total += 1

    def on_connection_closed(self, conn: Any) -> None:
        if conn.counted:
            conn.counted = False
            self.limits.dec_connections()
            self.stats_cx_active.dec()
            self.stats_cx_destroy.inc()
            conn.pool.host.cx_active -= 1

    def apply_socket_options(self, sock: socket.socket) -> None:
        """`upstream_connection_options.tcp_keepalive` (Istio: connectionPool.tcp.tcpKeepalive)."""
        opts = self.config.upstream_connection_options
        if opts is None or opts.tcp_keepalive is None:
            return
        ka = opts.tcp_keepalive
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if ka.keepalive_time and hasattr(socket, "TCP_KEEPIDLE"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, ka.keepalive_time)
            if ka.keepalive_interval and hasattr(socket, "TCP_KEEPINTVL"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, ka.keepalive_interval)
            if ka.keepalive_probes and hasattr(socket, "TCP_KEEPCNT"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, ka.keepalive_probes)
        except OSError:
            pass

    # ------------------------------------------------------------ response accounting
    def count_response(self, status: int) -> None:
        self.stats_rq_completed.inc()
        cls = status // 100
        if 1 <= cls <= 5:
            xx = self._rq_xx.get(cls)
            if xx is None:
                xx = self._rq_xx[cls] = self.stats.counter(f"upstream_rq_{cls}xx")
            xx.inc()
        c = self._rq_codes.get(status)
        if c is None:
            c = self._rq_codes[status] = self.stats.counter(f"upstream_rq_{status}")
        c.inc()

    def _outlier_tick(self) -> None:
        """outlier_detection.interval: un-eject hosts whose ejection time is over, run success-rate checks."""
        detector = self.outlier
        if detector is None or self.retired:
            self._outlier_timer = None
            return
        detector.tick(time.monotonic())
        self.stats_membership_healthy.set(sum(1 for h in self.hosts if h.healthy))
        self._outlier_timer = asyncio.get_running_loop().call_later(detector.interval, self._outlier_tick)

    def collect_stats(self) -> None:
        """Publish the pure modules' counts (outlier detection, circuit breakers) into the stats store."""
        if self.outlier is not None:
            for name, value in self.outlier.stats.items():
                if name == "ejections_active":
                    self.stats.gauge(f"outlier_detection.{name}").set(value)
                else:
                    c = self.stats.counter(f"outlier_detection.{name}")
                    c.value = value
        for name, value in self.limits.gauges().items():
            self.stats.gauge(name).set(value)
        # overflow counts live in ResourceLimits.stats (upstream_cx_overflow, upstream_rq_pending_overflow,
        # upstream_rq_retry_overflow), whoever detected the overflow
        for name, value in self.limits.stats.items():
            self.stats.counter(name).value = value
        self.stats_membership_healthy.set(sum(1 for h in self.hosts if h.healthy))

    def record_outcome(self, host: Host, status: int | None, *, connect_failure: bool = False,
                       reset: bool = False, timeout: bool = False) -> None:
        """Per-host accounting after an attempt (and, with outlier detection, its input)."""
        if status is not None and status < 500:
            host.rq_success += 1
        else:
            host.rq_error += 1
            if timeout:
                host.rq_timeout += 1
        detector = self.outlier
        if detector is not None:
            if detector.record(host, status, connect_failure=connect_failure, reset=reset, timeout=timeout):
                self.stats_membership_healthy.set(sum(1 for h in self.hosts if h.healthy))

    def close_idle_later(self) -> None:
        """This runtime was replaced: close idle connections now; busy ones close when their request ends."""
        self.retired = True
        if self._dns_task is not None:
            self._dns_task.cancel()
        for pool in self.pools.values():
            for conn in list(pool.idle):
                conn.close()
            pool.idle.clear()

    def close(self) -> None:
        if self._dns_task is not None:
            self._dns_task.cancel()
        if self._outlier_timer is not None:
            self._outlier_timer.cancel()
            self._outlier_timer = None
        for pool in self.pools.values():
            pool.close()

    def __repr__(self) -> str:
        return f"<ClusterRuntime {self.name} hosts={len(self.hosts)} pools={len(self.pools)}>"


class ClusterManager:
    """All clusters of one config snapshot, by name."""

    def __init__(self, clusters: Iterable[model.Cluster], stats: Stats, rng: random.Random | None = None,
                 previous: "ClusterManager | None" = None,
                 endpoints: "dict[str, model.ClusterLoadAssignment] | None" = None,
                 secrets: SecretManager | None = None):
        self.clusters: dict[str, ClusterRuntime] = {}
        old = previous.clusters if previous else {}
        endpoints = endpoints or {}
        for cfg in clusters:
            prev = old.get(cfg.name)
            eds = None
            if cfg.type == "EDS":
                service = (cfg.eds_cluster_config.service_name if cfg.eds_cluster_config else "") or cfg.name
                eds = endpoints.get(service)
            if prev is not None and prev.config == cfg:
                self.clusters[cfg.name] = prev  # unchanged: keep pools, hosts, counters
                if eds is not None and eds != prev.eds:
                    prev.update_endpoints(eds)  # EDS update: same runtime, new host set (hosts reused)
            else:
                self.clusters[cfg.name] = ClusterRuntime(cfg, stats, rng, previous=prev, eds=eds, secrets=secrets)
        self._orphans = [rt for name, rt in old.items() if self.clusters.get(name) is not rt]

    def get(self, name: str) -> ClusterRuntime | None:
        return self.clusters.get(name)

    async def start(self) -> None:
        await asyncio.gather(*(rt.start() for rt in self.clusters.values()))
        for rt in self._orphans:
            rt.close_idle_later()
        self._orphans = []

    def close(self) -> None:
        for rt in self.clusters.values():
            rt.close()
