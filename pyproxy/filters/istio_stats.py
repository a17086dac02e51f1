"""`istio.stats`: Istio's standard HTTP metrics, and the peer-metadata exchange that names the other side.

Where it sits: an HTTP filter just before the router on every sidecar and gateway connection manager (istiod
puts `istio.stats` there, config `type.googleapis.com/stats.PluginConfig`; pyproxy's control plane sends it in a
`udpa.type.v1.TypedStruct`, which Envoy's protos parse). The reporter follows Istio's rule (istio_stats.cc):
`destination` on a listener with `traffic_direction: INBOUND`, `source` otherwise (outbound listeners and
gateways), `waypoint` with `reporter: SERVER_GATEWAY`.

Per request:
- request headers: the source side adds its own metadata (`x-envoy-peer-metadata-id`, `x-envoy-peer-metadata`)
  to the upstream request; the destination side reads the client's and strips them before the app sees them;
- response headers: the destination side answers with its own metadata (only to a client that sent its own,
  as Istio's metadata exchange does); the source side reads it and strips it before the app sees it. The source
  side also reads the upstream mTLS identities (local and peer URI SAN of the connection the router used);
- stream end (`on_destroy`, Istio records at access-log time): one label tuple and one `IstioMetrics.record`.
Deviation: Istio does the header exchange in a separate filter (`istio.metadata_exchange`); pyproxy does it here.
A stream that ends before this filter saw it (a client gone during a fault delay) is not counted.
The label logic (`request_labels`) is pure: facts in, tuple out.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping

from ..config.model import TypedStruct
from ..observe.cel import CelError, compile_value
from ..observe.istio_metrics import (HTTP_METRICS, LABELS, PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER, UNKNOWN,
                                     IstioMetrics, PeerMetadata)
from ..observe.stream_info import response_flags_short
from ..tls.session import peer_sans
from .base import FilterFactory, FilterStatus, HttpFilter

if TYPE_CHECKING:  # pragma: no cover
    from ..http.connection import ActiveStream
    from ..http.headers import Headers

NAME = "istio.stats"
PLUGIN_CONFIG = "type.googleapis.com/stats.PluginConfig"
SUPPORTED_FIELDS = frozenset({"reporter", "disable_host_header_fallback", "metrics"})
METRIC_FIELDS = frozenset({"name", "dimensions", "tags_to_remove", "drop"})
NO_PEER = PeerMetadata()
EXTENSION_KEY = "istio"


class LocalSide:
    """This proxy as the metrics see it: its metadata, the header values it sends, its reporter."""

    __slots__ = ("peer", "node_id", "encoded", "reporter")

    def __init__(self, node: Any, reporter: str):
        node_id, metadata = _node_parts(node)
        self.peer = PeerMetadata.from_node(node_id, metadata)
        self.node_id = node_id or "unknown"
        self.encoded = self.peer.encode()
        self.reporter = reporter


def _node_parts(node: Any) -> tuple[str, Mapping[str, Any] | None]:
    """(id, metadata) of a bootstrap `Node` model or an xDS node dict (`pyproxy.xds.node.build_node`)."""
    if node is None:
        return "", None
    if isinstance(node, Mapping):
        return str(node.get("id") or ""), node.get("metadata")
    return str(getattr(node, "id", "") or ""), getattr(node, "metadata", None)


def _first_uri(sans: tuple[str, ...]) -> str:
    return sans[0] if sans else UNKNOWN


def _ns_from_principal(principal: str) -> str | None:
    """`spiffe://td/ns/<ns>/sa/<sa>` -> ns (Istio prefers the SAN's namespace to the peer's claim)."""
    i = principal.find("/ns/")
    if i < 0:
        return None
    rest = principal[i + 4:]
    return rest.split("/", 1)[0] or None


def header_bytes(headers: Headers | None) -> int:
    """Envoy's HeaderMap::byteSize: the lengths of every name and value."""
    return headers.byte_size() if headers is not None else 0


def request_labels(*, reporter: str, source: PeerMetadata, destination: PeerMetadata, source_principal: str,
                   destination_principal: str, service: tuple[str, str, str], protocol: str, response_code: int,
                   grpc_status: str, flags: int, security: str) -> tuple[str, ...]:
    """The label tuple in `istio_metrics.LABELS` order."""
    host, name, namespace = service
    return (
        reporter, source.workload, source.canonical_service, source.canonical_revision, source.namespace,
        source_principal, source.app, source.version, source.cluster,
        destination.workload, destination.namespace, destination_principal, destination.app, destination.version,
        host, destination.canonical_service, destination.canonical_revision, name, namespace, destination.cluster,
        protocol, str(response_code or 0), grpc_status, response_flags_short(flags), security,
    )


MetricShape = tuple[tuple[str, ...], tuple[Any, ...]]  # label names, and per label a LABELS index or a getter


def metric_shapes(entries: Any) -> dict[str, MetricShape | None] | None:
    """stats.PluginConfig `metrics` -> per HTTP metric its label shape (None: dropped); None when nothing is
    overridden. Istio's semantics (proxy extensions/stats config.proto): entries apply in order; an empty `name`
    means every metric; `tags_to_remove` removes standard or added tags; `dimensions` set a tag to a CEL
    expression, replacing a standard one in place or adding a new one at the end; `drop` stops the metric."""
    if not entries:
        return None
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"HTTP filter {NAME!r}: stats.PluginConfig.metrics must be a list")
    shapes: dict[str, list[tuple[str, Any]] | None] = {m: [(n, i) for i, n in enumerate(LABELS)] for m in HTTP_METRICS}
    for k, entry in enumerate(entries):
        where = f"HTTP filter {NAME!r}: stats.PluginConfig.metrics[{k}]"
        if not isinstance(entry, Mapping) or set(entry) - METRIC_FIELDS:
            raise ValueError(f"{where}: supported fields are {sorted(METRIC_FIELDS)}")
        name = str(entry.get("name") or "")
        if name and name not in HTTP_METRICS:
            raise ValueError(f"{where}.name: {name!r} is not an HTTP metric pyproxy reports ({sorted(HTTP_METRICS)})")
        for metric in [name] if name else list(HTTP_METRICS):
            shape = shapes[metric]
            if shape is None:
                continue
            if entry.get("drop"):
                shapes[metric] = None
                continue
            removed = {str(t) for t in entry.get("tags_to_remove") or ()}
            shape = [(n, g) for n, g in shape if n not in removed]
            for tag, expr in (entry.get("dimensions") or {}).items():
                try:
                    getter = compile_value(str(expr))
                except CelError as e:
                    raise ValueError(f"{where}.dimensions.{tag}: {expr!r}: {e}") from None
                at = next((j for j, (n, _) in enumerate(shape) if n == tag), None)
                if at is None:
                    shape.append((str(tag), getter))
                else:
                    shape[at] = (str(tag), getter)
            shapes[metric] = shape
    return {m: (tuple(n for n, _ in sh), tuple(g for _, g in sh)) if sh is not None else None
            for m, sh in shapes.items()}


class IstioStatsFilterConfig:
    """Parsed once per snapshot: the reporter override, the store (kept by the `Stats` store, so it survives
    config swaps), and small caches keyed by identity (local side, cluster services, upstream certificates)."""

    def __init__(self, typed_config: Any, stats: Any):
        value: Mapping[str, Any] = {}
        if isinstance(typed_config, TypedStruct):
            if typed_config.type_url != PLUGIN_CONFIG:
                raise ValueError(f"HTTP filter {NAME!r}: TypedStruct type_url {typed_config.type_url!r}, "
                                 f"expected {PLUGIN_CONFIG!r}")
            value = typed_config.value or {}
        elif typed_config is not None:
            raise ValueError(f"HTTP filter {NAME!r}: typed_config must be a TypedStruct of {PLUGIN_CONFIG}")
        unknown = sorted(set(value) - SUPPORTED_FIELDS)
        if unknown:
            raise ValueError(f"HTTP filter {NAME!r}: stats.PluginConfig fields {unknown} are not supported by "
                             f"pyproxy (supported: {sorted(SUPPORTED_FIELDS)})")
        reporter = value.get("reporter", "UNSPECIFIED")
        if reporter not in ("UNSPECIFIED", "SERVER_GATEWAY"):
            raise ValueError(f"HTTP filter {NAME!r}: reporter {reporter!r}, expected UNSPECIFIED or SERVER_GATEWAY")
        self.waypoint = reporter == "SERVER_GATEWAY"
        self.host_fallback = not value.get("disable_host_header_fallback", False)
        self.shapes = metric_shapes(value.get("metrics"))  # Telemetry tagOverrides / disabled metrics
        store = getattr(stats, "store", stats)
        self.metrics: IstioMetrics = store.extension(EXTENSION_KEY, IstioMetrics)
        self._local_key: tuple[int, str] | None = None
        self._local: LocalSide | None = None
        self._services: dict[str, tuple[Any, tuple[str, str, str] | None]] = {}
        self._principals: dict[bytes, str] = {}

    def local_for(self, hcm: Any) -> LocalSide:
        node = getattr(hcm, "node", None)
        direction = getattr(hcm, "traffic_direction", "UNSPECIFIED")
        key = (id(node), direction)
        if key != self._local_key or self._local is None:
            reporter = "waypoint" if self.waypoint else ("destination" if direction == "INBOUND" else "source")
            self._local = LocalSide(node, reporter)
            self._local_key = key
        return self._local

    def service_of(self, hcm: Any, cluster_name: str | None) -> tuple[str, str, str] | None:
        """(host, name, namespace) of the first service in the cluster's `istio.services` metadata."""
        if not cluster_name:
            return None
        rt = hcm.clusters.clusters.get(cluster_name) if hcm.clusters is not None else None
        cfg = rt.config if rt is not None else None
        entry = self._services.get(cluster_name)
        if entry is not None and entry[0] is cfg:
            return entry[1]
        found = None
        md = (getattr(cfg, "metadata", None) or {}).get("filter_metadata") or {}
        services = (md.get("istio") or {}).get("services") or ()
        if services and isinstance(services[0], Mapping) and services[0].get("host"):
            s = services[0]
            host = str(s["host"])
            found = (host, str(s.get("name") or host.split(".", 1)[0]), str(s.get("namespace") or UNKNOWN))
        if len(self._services) > 4096:
            self._services.clear()
        self._services[cluster_name] = (cfg, found)
        return found

    def principal_of(self, ssl_object: Any) -> str | None:
        """The first URI SAN of the verified peer certificate of a TLS connection (`ssl.SSLObject`), None without
        one. Cached by the certificate's DER: the parsed form (`getpeercert()`, ~4 µs of dict building) is read
        only for a certificate not seen before, not on every request of a pooled connection."""
        der = ssl_object.getpeercert(True)
        if not der:
            return None
        p = self._principals.get(der)
        if p is None:
            uris = tuple(v for t, v in peer_sans(der, ssl_object.getpeercert()) if t == "URI")
            p = _first_uri(uris)
            if len(self._principals) > 1024:
                self._principals.clear()
            self._principals[der] = p
        return p


class IstioStatsFilter(HttpFilter):
    __slots__ = ("config", "stream", "local", "peer", "upstream_local", "upstream_peer", "answered_peer")

    def __init__(self, config: IstioStatsFilterConfig):
        self.config = config
        self.stream: Any = None
        self.local: LocalSide | None = None
        self.peer: PeerMetadata | None = None
        self.upstream_local = UNKNOWN
        self.upstream_peer = UNKNOWN
        self.answered_peer = False

    def _begin(self, stream: "ActiveStream") -> LocalSide:
        self.stream = stream
        local = self.local = self.config.local_for(stream.hcm)
        h = stream.headers
        if local.reporter == "source":
            h.set(PEER_METADATA_ID_HEADER, local.node_id)
            h.set(PEER_METADATA_HEADER, local.encoded)
        else:
            value = h.get_first(PEER_METADATA_HEADER)
            if value is not None:
                self.peer = PeerMetadata.decode(value, h.get_first(PEER_METADATA_ID_HEADER) or "")
                self.answered_peer = True
            h.remove(PEER_METADATA_HEADER)
            h.remove(PEER_METADATA_ID_HEADER)
        return local

    def decode_headers(self, stream: "ActiveStream") -> FilterStatus:
        self._begin(stream)
        return FilterStatus.CONTINUE

    def encode_headers(self, stream: "ActiveStream", headers: Any) -> None:
        local = self.local if self.stream is not None else self._begin(stream)
        assert local is not None
        if local.reporter == "source":
            value = headers.get_first(PEER_METADATA_HEADER)
            if value is not None:
                self.peer = PeerMetadata.decode(value, headers.get_first(PEER_METADATA_ID_HEADER) or "")
                headers.remove(PEER_METADATA_HEADER)
                headers.remove(PEER_METADATA_ID_HEADER)
            self._upstream_identities(stream)
        elif self.answered_peer:
            headers.set(PEER_METADATA_ID_HEADER, local.node_id)
            headers.set(PEER_METADATA_HEADER, local.encoded)

    def _upstream_identities(self, stream: "ActiveStream") -> None:
        """The mTLS identities of the upstream connection that carried the response (client side)."""
        router = stream.router
        conn = getattr(router, "conn", None) if router is not None else None
        if conn is None:
            return
        identity = conn.peer_identity
        if identity is None:  # once per connection, not per request: its peer certificate cannot change
            transport = conn.transport
            if transport is None:
                return
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None:
                identity = conn.peer_identity = (False, None, UNKNOWN)
            else:
                local_sans = getattr(getattr(conn.pool, "tls", None), "local_uri_sans", ())
                identity = conn.peer_identity = (True, self.config.principal_of(ssl_object), _first_uri(local_sans))
        is_tls, principal, local_principal = identity
        if not is_tls:
            return
        if principal is not None:
            self.upstream_peer = principal
        self.upstream_local = local_principal

    def on_destroy(self) -> None:
        stream, local = self.stream, self.local
        self.stream = None
        if stream is None or local is None:
            return
        config = self.config
        info = stream.info
        peer = self.peer or NO_PEER
        tls = info.downstream_tls
        if local.reporter == "source":
            source, destination = local.peer, peer
            source_principal, destination_principal = self.upstream_local, self.upstream_peer
            security = UNKNOWN
        else:
            source, destination = peer, local.peer
            mtls = tls is not None and tls.peer_presented and bool(tls.local_uri_sans)
            source_principal = _first_uri(tls.peer_uri_sans) if tls is not None else UNKNOWN
            destination_principal = _first_uri(tls.local_uri_sans) if tls is not None else UNKNOWN
            security = "mutual_tls" if mtls else "none"
            ns = _ns_from_principal(source_principal)
            if ns is not None and ns != source.namespace:
                source = _with_namespace(source, ns)
        service = config.service_of(stream.hcm, stream.cluster_name)
        if service is None:
            host = _host_of(info.authority or "") if config.host_fallback else ""
            service = (host, host.split(".", 1)[0], destination.namespace) if host else (UNKNOWN, UNKNOWN, UNKNOWN)
        h = stream.headers
        grpc = (h.get_first("content-type") or "").startswith("application/grpc")
        grpc_status = ""
        if grpc:
            rh = info.response_headers
            grpc_status = (rh.get_first("grpc-status") if rh is not None else None) or ""
            if not grpc_status and info.response_trailers is not None:
                grpc_status = info.response_trailers.get_first("grpc-status") or ""
        labels = request_labels(
            reporter=local.reporter, source=source, destination=destination, source_principal=source_principal,
            destination_principal=destination_principal, service=service, protocol="grpc" if grpc else "http",
            response_code=info.response_code or 0, grpc_status=grpc_status, flags=info.response_flags,
            security=security)
        end = info.last_downstream_tx if info.last_downstream_tx is not None else info.start_monotonic
        duration_ms = (end - info.start_monotonic) * 1000.0
        request_bytes = info.bytes_received + header_bytes(h) + _pseudo_request_bytes(info)
        response_bytes = info.bytes_sent
        if info.response_code:
            response_bytes += header_bytes(info.response_headers) + len(":status") + 3
        if config.shapes is None:
            config.metrics.record(labels, duration_ms, request_bytes, response_bytes)
            return
        amounts = {"requests_total": 1, "request_duration_milliseconds": duration_ms,
                   "request_bytes": request_bytes, "response_bytes": response_bytes}
        view = PeerAttributes(info, self.peer if local.reporter == "destination" else None,
                              self.peer if local.reporter == "source" else None)
        for metric, shape in config.shapes.items():
            if shape is not None:
                names, getters = shape
                values = tuple(labels[g] if type(g) is int else g(view) for g in getters)
                config.metrics.record_one(metric, names, values, amounts[metric])


class PeerAttributes:
    """What a dimension's CEL expression reads: the StreamInfo's attributes, plus Istio's peer metadata as
    `filter_state.downstream_peer` (server side: the client workload, from its request headers) and
    `filter_state.upstream_peer` (client side: the server workload, from its response headers). Built only
    when a Telemetry override adds or replaces a dimension."""

    __slots__ = ("info", "downstream_peer", "upstream_peer")

    def __init__(self, info: Any, downstream_peer: Any, upstream_peer: Any):
        self.info, self.downstream_peer, self.upstream_peer = info, downstream_peer, upstream_peer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.info, name)


def _host_of(authority: str) -> str:
    """The Host header without its port (`reviews:9080` -> `reviews`, `[::1]:80` -> `[::1]`)."""
    host, sep, port = authority.rpartition(":")
    return host if sep and port.isdigit() and not host.endswith(":") else authority


def _pseudo_request_bytes(info: Any) -> int:
    """:method, :path and :scheme as Envoy counts them (HTTP/1's Host is already a header here)."""
    return (7 + len(info.method or "")) + (5 + len(info.path or "")) + (7 + len(info.scheme or ""))


def _with_namespace(peer: PeerMetadata, namespace: str) -> PeerMetadata:
    return replace(peer, namespace=namespace)


def build_factory(typed_config: Any, stats: Any, rng: Any) -> FilterFactory:
    config = IstioStatsFilterConfig(typed_config, stats)
    return lambda: IstioStatsFilter(config)


# --------------------------------------------------------------------------- TCP (the `istio.stats` network filter)

_TCP_INDEXES = tuple(i for i, n in enumerate(LABELS) if n not in ("response_code", "grpc_response_status"))


def tcp_labels(*, reporter: str, source: PeerMetadata, destination: PeerMetadata, source_principal: str,
               destination_principal: str, service: tuple[str, str, str], flags: int, security: str) -> tuple[str, ...]:
    """The TCP label tuple in `istio_metrics.TCP_LABELS` order: the HTTP one, request_protocol `tcp`, without
    response_code and grpc_response_status."""
    full = request_labels(reporter=reporter, source=source, destination=destination,
                          source_principal=source_principal, destination_principal=destination_principal,
                          service=service, protocol="tcp", response_code=0, grpc_status="", flags=flags,
                          security=security)
    return tuple(full[i] for i in _TCP_INDEXES)


def peer_from_endpoint(metadata: Any) -> PeerMetadata | None:
    """The upstream workload from its endpoint's `istio.workload` metadata (`name;ns;canonical;revision;cluster`,
    what istiod puts on EDS endpoints): how Istio's client side names a TCP peer without a header exchange."""
    md = (metadata or {}).get("filter_metadata", metadata or {}) if isinstance(metadata, Mapping) else {}
    value = ((md.get("istio") or {}) if isinstance(md, Mapping) else {}).get("workload")
    if not isinstance(value, str) or value.count(";") != 4:
        return None
    name, ns, canonical, revision, cluster = value.split(";")
    return PeerMetadata(workload=name or UNKNOWN, namespace=ns or UNKNOWN, app=canonical or UNKNOWN,
                        version=revision or UNKNOWN, canonical_service=canonical or UNKNOWN,
                        canonical_revision=revision or "latest", cluster=cluster or UNKNOWN)


class IstioTcpStats:
    """`istio.stats` in front of a tcp_proxy (Istio puts it there for TCP chains): istio_tcp_connections_opened /
    closed and istio_tcp_sent / received_bytes. Opened is counted when the upstream connection is up (or at
    close for a connection that never got one); bytes and closed when the connection ends. Deviation: Istio
    also reports open connections' bytes every 15 s (`tcp_reporting_duration`); pyproxy reports at close."""

    def __init__(self, typed_config: Any, stats: Any, runtime: Any):
        self.config = IstioStatsFilterConfig(typed_config, stats)
        self.runtime = runtime  # has .node, .traffic_direction, .clusters (what local_for / service_of read)

    def labels(self, session: Any) -> tuple[str, ...]:
        config, info = self.config, session.info
        local = config.local_for(self.runtime)
        service = config.service_of(self.runtime, info.upstream_cluster) or (UNKNOWN, UNKNOWN, UNKNOWN)
        tls = info.downstream_tls
        if local.reporter == "source":
            up = session.upstream
            peer = peer_from_endpoint(getattr(getattr(up, "host", None), "metadata", None)) if up else None
            transport = getattr(up, "transport", None) if up is not None else None
            ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
            principal = (config.principal_of(ssl_object) if ssl_object is not None else None) or UNKNOWN
            return tcp_labels(reporter="source", source=local.peer, destination=peer or NO_PEER,
                              source_principal=UNKNOWN, destination_principal=principal, service=service,
                              flags=info.response_flags, security=UNKNOWN)
        mtls = tls is not None and tls.peer_presented and bool(tls.local_uri_sans)
        source_principal = _first_uri(tls.peer_uri_sans) if tls is not None else UNKNOWN
        source = NO_PEER
        ns = _ns_from_principal(source_principal)
        if ns is not None:
            source = _with_namespace(source, ns)
        return tcp_labels(reporter=local.reporter, source=source, destination=local.peer,
                          source_principal=source_principal,
                          destination_principal=_first_uri(tls.local_uri_sans) if tls is not None else UNKNOWN,
                          service=service, flags=info.response_flags, security="mutual_tls" if mtls else "none")

    def opened(self, session: Any) -> tuple[str, ...]:
        labels = self.labels(session)
        self.config.metrics.record_tcp(labels, opened=1)
        return labels

    def closed(self, session: Any, opened_labels: tuple[str, ...] | None) -> None:
        info = session.info
        labels = self.labels(session)
        if opened_labels is None:
            self.config.metrics.record_tcp(labels, opened=1)
        self.config.metrics.record_tcp(labels, closed=1, sent=info.bytes_sent, received=info.bytes_received)
