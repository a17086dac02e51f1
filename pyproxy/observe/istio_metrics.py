"""Istio's standard HTTP metrics: the label set, the peer metadata, the per-series counts, the exposition.

Where it sits: the `istio.stats` HTTP filter (`pyproxy.filters.istio_stats`) builds one label tuple per finished
request and calls `IstioMetrics.record(labels, duration_ms, request_bytes, response_bytes)`; the admin
`/stats/prometheus` asks the store's collector (`IstioCollector`, shaped as a prometheus_client collector) for
the families at scrape time, beside Envoy's own stats. Nothing here does I/O or reads a clock.

What it implements (Istio `istio_stats.cc`, docs reference/config/metrics):
- `istio_requests_total` (counter), `istio_request_duration_milliseconds`, `istio_request_bytes`,
  `istio_response_bytes` (histograms with Envoy's default buckets, `DEFAULT_BUCKETS`), labelled with
  `LABELS` in Istio's emission order. Missing values are `unknown`, `*_canonical_revision` defaults to `latest`.
- Peer metadata (`PeerMetadata`): the workload facts a proxy learns from its node (NAME, NAMESPACE, CLUSTER_ID,
  SERVICE_ACCOUNT, LABELS app/version/canonical name+revision) and exchanges with its peer in
  `x-envoy-peer-metadata` + `x-envoy-peer-metadata-id`. Istio's wire form is base64 of a serialized
  `google.protobuf.Struct` (istio/proxy extensions/common/metadata_object.cc). pyproxy *reads* that form (a
  header from istio-proxy) and base64 JSON with the same keys; it *writes* JSON. Deviation, for memory: the
  protobuf Struct runtime (upb and the descriptor pool) costs 4.3 MiB in each process that loads it, and writing
  the Struct took the demo's sidecars from 37-38 MiB to 40.3 MiB, over the 40 MB budget
  (benchmarks/memory_bench.py); reading loads it only when a peer actually sends a Struct. Two pyproxies
  understand each other; an istio-proxy reads pyproxy's header as no peer.

Hot path: a series is a plain `__slots__` object found by one dict lookup on the label tuple; a record is a few
integer adds and one `bisect`. No locks, no prometheus_client objects per request. Cardinality is bounded:
labels never carry paths or ids, and past `max_series` distinct tuples new ones are dropped and counted
(`dropped`), as a guard against a client-controlled value (the Host fallback of destination_service).
"""
from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from .stats import DEFAULT_BUCKETS, MetricFamily

__all__ = ["LABELS", "IstioCollector", "IstioMetrics", "PeerMetadata", "Series", "UNKNOWN",
           "PEER_METADATA_HEADER", "PEER_METADATA_ID_HEADER"]

PEER_METADATA_HEADER = "x-envoy-peer-metadata"
PEER_METADATA_ID_HEADER = "x-envoy-peer-metadata-id"
UNKNOWN = "unknown"

# Istio's label order (istio_stats.cc all_tags_; testdata/metric/server_request_total.yaml.tmpl).
LABELS: tuple[str, ...] = (
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_canonical_service",
    "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
    "destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
)
DEFAULT_MAX_SERIES = 10000

CANONICAL_NAME = "service.istio.io/canonical-name"
CANONICAL_REVISION = "service.istio.io/canonical-revision"


@dataclass(frozen=True, slots=True)
class PeerMetadata:
    """One side's workload facts, as the metric labels need them (values already defaulted to `unknown`)."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = "latest"
    cluster: str = UNKNOWN
    service_account: str = ""
    node_id: str = ""

    @classmethod
    def from_node(cls, node_id: str, metadata: Mapping[str, Any] | None) -> "PeerMetadata":
        """From an Envoy node's metadata (Istio NodeMetadata keys). The workload name is WORKLOAD_NAME, else
        the pod NAME (pyproxy's node carries the workload's name there), canonical service defaults to app."""
        md = metadata or {}
        labels = md.get("LABELS") or {}
        app = str(labels.get("app") or labels.get("app.kubernetes.io/name") or UNKNOWN)
        version = str(labels.get("version") or labels.get("app.kubernetes.io/version") or UNKNOWN)
        workload = str(md.get("WORKLOAD_NAME") or md.get("NAME") or UNKNOWN)
        return cls(
            workload=workload,
            namespace=str(md.get("NAMESPACE") or UNKNOWN),
            app=app,
            version=version,
            canonical_service=str(labels.get(CANONICAL_NAME) or (app if app != UNKNOWN else workload)),
            canonical_revision=str(labels.get(CANONICAL_REVISION) or (version if version != UNKNOWN else "latest")),
            cluster=str(md.get("CLUSTER_ID") or "Kubernetes"),
            service_account=str(md.get("SERVICE_ACCOUNT") or ""),
            node_id=node_id,
        )

    def encode(self) -> str:
        """The `x-envoy-peer-metadata` value: base64 of Istio's NodeMetadata keys as JSON (see the module doc for
        why not the Struct), keys sorted so the value is the same every time (computed once per config)."""
        labels = {"app": self.app, "version": self.version, CANONICAL_NAME: self.canonical_service,
                  CANONICAL_REVISION: self.canonical_revision}
        md = {"WORKLOAD_NAME": self.workload, "NAMESPACE": self.namespace, "CLUSTER_ID": self.cluster,
              "SERVICE_ACCOUNT": self.service_account,
              "LABELS": {k: v for k, v in labels.items() if v != UNKNOWN}}
        return base64.b64encode(json.dumps(md, separators=(",", ":"), sort_keys=True).encode()).decode("ascii")

    @classmethod
    def decode(cls, value: str | None, node_id: str = "") -> "PeerMetadata | None":
        """The peer's metadata from its header; None when absent or not valid (then the peer is unknown).
        A sidecar reads the same few peers' headers on every request: decoded answers are kept (immutable,
        so shared) by value: 0.16 µs against 5-10 µs to decode and parse one (JSON / Struct) and build it
        (interpreted, timeit)."""
        if not value or len(value) > 8192:
            return None
        key = (value, node_id)
        peer = _DECODED.get(key, _NOT_KEPT)  # one lookup: None (an invalid value) is kept too
        if peer is not _NOT_KEPT:
            return peer
        peer = _decode_peer(cls, value, node_id)
        if len(_DECODED) >= _DECODED_MAX:  # a peer inventing values: start again rather than grow
            _DECODED.clear()
        _DECODED[key] = peer
        return peer


def _decode_peer(cls: type[PeerMetadata], value: str, node_id: str) -> PeerMetadata | None:
    """Base64 with optional padding (Istio's Base64::decodeWithoutPadding), then JSON (a pyproxy peer: it starts
    with `{`) or a protobuf Struct (an istio-proxy peer; a serialized Struct never starts with `{`). A value that
    is neither is no peer at all."""
    text = value.rstrip("=")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if raw[:1] == b"{":
        try:
            md = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep, from a hostile peer
            return None
        if not isinstance(md, dict) or not isinstance(md.get("LABELS", {}), dict):
            return None
        return cls.from_node(node_id, md)
    return _decode_struct(cls, raw, node_id)


def _decode_struct(cls: type[PeerMetadata], raw: bytes, node_id: str) -> PeerMetadata | None:
    """Istio's own form, read as its peer_metadata filter does (`Struct.ParseFromString`, `string_value()`).
    protobuf is imported here, on the first Struct a peer sends, not with the module (see the module doc)."""
    from google.protobuf import message, struct_pb2

    try:
        struct = struct_pb2.Struct.FromString(raw)
    except (message.DecodeError, RecursionError):  # protobuf refuses messages nested deeper than 100
        return None
    # `string_value()` is "" for any other kind, which from_node treats as absent; LABELS is a nested Struct
    fields = struct.fields
    md: dict[str, Any] = {k: v.string_value for k, v in fields.items()}
    if "LABELS" in fields:
        labels = fields["LABELS"]
        if labels.WhichOneof("kind") != "struct_value":
            return None
        md["LABELS"] = {k: v.string_value for k, v in labels.struct_value.fields.items()}
    return cls.from_node(node_id, md)


_DECODED: dict[tuple[str, str], Any] = {}
_NOT_KEPT = object()
_DECODED_MAX = 256


class Series:
    """The counts of one label tuple: a counter and three histograms (per-bucket counts, sum)."""

    __slots__ = ("requests", "duration", "duration_sum", "request_bytes", "request_bytes_sum",
                 "response_bytes", "response_bytes_sum")

    def __init__(self, n_buckets: int):
        self.requests = 0
        self.duration = [0] * (n_buckets + 1)  # the last slot is +Inf
        self.duration_sum = 0.0
        self.request_bytes = [0] * (n_buckets + 1)
        self.request_bytes_sum = 0
        self.response_bytes = [0] * (n_buckets + 1)
        self.response_bytes_sum = 0


# Istio's TCP label set: the HTTP one without response_code and grpc_response_status (request_protocol `tcp`)
TCP_LABELS: tuple[str, ...] = tuple(n for n in LABELS if n not in ("response_code", "grpc_response_status"))


class TcpSeries:
    """istio_tcp_* counts of one label tuple."""

    __slots__ = ("opened", "closed", "sent", "received")

    def __init__(self) -> None:
        self.opened = self.closed = self.sent = self.received = 0


# Istio's metric names inside stats.PluginConfig `metrics[].name` -> the family pyproxy exposes
HTTP_METRICS = {"requests_total": "istio_requests", "request_duration_milliseconds": "istio_request_duration_milliseconds",
                "request_bytes": "istio_request_bytes", "response_bytes": "istio_response_bytes"}


class CustomSeries:
    """One metric's counts for one custom label set (Telemetry tagOverrides): a count, or a histogram."""

    __slots__ = ("count", "buckets", "total")

    def __init__(self, n_buckets: int):
        self.count = 0
        self.buckets = [0] * (n_buckets + 1)
        self.total = 0.0


class IstioMetrics:
    """The store of one proxy (one per `Stats` store, so one per worker process), kept across config swaps.
    `series`: the standard label set, all four metrics together (the fast path). `custom`: one metric under a
    label set changed by Telemetry `tagOverrides` (istio.stats `metrics[].dimensions` / `tags_to_remove`)."""

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BUCKETS, max_series: int = DEFAULT_MAX_SERIES):
        self.bounds = tuple(bounds)
        self.max_series = max_series
        self.series: dict[tuple[str, ...], Series] = {}
        self.custom: dict[tuple[str, tuple[str, ...], tuple[str, ...]], CustomSeries] = {}
        self.tcp: dict[tuple[str, ...], TcpSeries] = {}
        self.dropped = 0

    def record_tcp(self, labels: tuple[str, ...], *, opened: int = 0, closed: int = 0, sent: int = 0,
                   received: int = 0) -> None:
        """TCP counts (labels in TCP_LABELS order): connections opened/closed, bytes sent to / received from the
        downstream peer."""
        s = self.tcp.get(labels)
        if s is None:
            if len(self.series) + len(self.custom) + len(self.tcp) >= self.max_series:
                self.dropped += 1
                return
            s = self.tcp[labels] = TcpSeries()
        s.opened += opened
        s.closed += closed
        s.sent += sent
        s.received += received

    def record_one(self, metric: str, names: tuple[str, ...], values: tuple[str, ...], amount: float) -> None:
        """One metric (`requests_total`, a histogram name) under a custom label set."""
        key = (metric, names, values)
        s = self.custom.get(key)
        if s is None:
            if len(self.series) + len(self.custom) >= self.max_series:
                self.dropped += 1
                return
            s = self.custom[key] = CustomSeries(len(self.bounds))
        s.count += 1
        if metric != "requests_total":
            s.buckets[bisect_left(self.bounds, amount)] += 1
            s.total += amount

    def record(self, labels: tuple[str, ...], duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        s = self.series.get(labels)
        if s is None:
            if len(self.series) >= self.max_series:
                self.dropped += 1
                return
            s = self.series[labels] = Series(len(self.bounds))
        bounds = self.bounds
        s.requests += 1
        s.duration[bisect_left(bounds, duration_ms)] += 1  # Envoy's buckets are upper-inclusive (le)
        s.duration_sum += duration_ms
        s.request_bytes[bisect_left(bounds, request_bytes)] += 1
        s.request_bytes_sum += request_bytes
        s.response_bytes[bisect_left(bounds, response_bytes)] += 1
        s.response_bytes_sum += response_bytes

    def collector(self) -> "IstioCollector":
        return IstioCollector(self)

    def __repr__(self) -> str:
        total = sum(s.requests for s in self.series.values())
        return f"IstioMetrics({len(self.series)} series, {total} requests, {self.dropped} dropped)"


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


class IstioCollector:
    """The store's series as Istio's families (pyproxy.observe.stats.MetricFamily, prometheus_client's shape),
    built at scrape time."""

    def __init__(self, store: IstioMetrics):
        self.store = store

    def collect(self) -> Iterator[MetricFamily]:
        store = self.store
        items = sorted(store.series.items())
        les = [*map(_le, store.bounds), "+Inf"]
        requests = MetricFamily("istio_requests", "", "counter")
        hists = {name: MetricFamily(name, "", "histogram") for name in (
            "istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes")}
        for key, s in items:
            labels = dict(zip(LABELS, key))
            requests.add_sample("istio_requests_total", labels, s.requests)
            for name, counts, total in (("istio_request_duration_milliseconds", s.duration, s.duration_sum),
                                        ("istio_request_bytes", s.request_bytes, s.request_bytes_sum),
                                        ("istio_response_bytes", s.response_bytes, s.response_bytes_sum)):
                m = hists[name]
                cumulative = 0
                for le, c in zip(les, counts):
                    cumulative += c
                    m.add_sample(name + "_bucket", {**labels, "le": le}, cumulative)
                m.add_sample(name + "_sum", labels, total)
                m.add_sample(name + "_count", labels, cumulative)
        for (metric, names, values), series in sorted(store.custom.items()):
            labels = dict(zip(names, values))
            if metric == "requests_total":
                requests.add_sample("istio_requests_total", labels, series.count)
                continue
            name = HTTP_METRICS[metric]
            m = hists[name]
            cumulative = 0
            for le, n in zip(les, series.buckets):
                cumulative += n
                m.add_sample(name + "_bucket", {**labels, "le": le}, cumulative)
            m.add_sample(name + "_sum", labels, series.total)
            m.add_sample(name + "_count", labels, cumulative)
        if items or store.custom:
            yield requests
            yield from (m for m in hists.values() if m.samples)
        if store.tcp:
            tcp = {name: MetricFamily(name, "", "counter") for name in (
                "istio_tcp_connections_opened", "istio_tcp_connections_closed", "istio_tcp_sent_bytes",
                "istio_tcp_received_bytes")}
            for key, t in sorted(store.tcp.items()):
                labels = dict(zip(TCP_LABELS, key))
                for name, value in (("istio_tcp_connections_opened", t.opened),
                                    ("istio_tcp_connections_closed", t.closed),
                                    ("istio_tcp_sent_bytes", t.sent), ("istio_tcp_received_bytes", t.received)):
                    tcp[name].add_sample(name + "_total", labels, value)
            yield from tcp.values()
