"""Per-proxy xDS bookkeeping: snapshots, versions, nonces, ACK/NACK, and when a response is due. No I/O.

This is the part of istiod's `pilot/pkg/xds` (`ads.go` `shouldRespond`, the per-connection `WatchedResource`
and `pkg/xds` `SyncStatus`) that decides, for one proxy and one xDS type, what a DiscoveryRequest means and
whether a DiscoveryResponse should be sent now. The aiohttp shell (`control.xds.server`) feeds it requests and
long-polls on `ready`; tests walk it without sockets (tests/unit/control/test_xds_cache.py).

Terms (Envoy's xDS protocol, docs/xds.md is this project's contract):

* A proxy's **snapshot** is its complete config at one moment: CDS, EDS, LDS and RDS resources cut from one
  mesh state. Its `version` is a content hash of all four, so it names the same config across control-plane
  restarts; every response cut from a snapshot carries that version.
* A request's `response_nonce` names the response it answers. Same nonce and no `error_detail` = **ACK** (the
  proxy applied it); `error_detail` set = **NACK** (it kept its previous config). A nonce that is not the last
  one sent for that type is **stale** and changes nothing (Envoy and istiod ignore stale nonces). A request
  without a nonce starts a subscription afresh (the proxy started or restarted): it holds nothing, unless
  its `version_info` is the current snapshot version. A nonce the cache never issued (the control plane
  restarted) whose `version_info` equals the current snapshot version **resumes**: the proxy already holds
  this config, so it is recorded as acknowledged and not re-sent.
* A response for type T is **due** when the proxy does not hold T's current content, has not rejected that
  exact content, and holds (has ACKed) the current content of every type before T in ADS order
  CDS -> EDS -> LDS -> RDS. So a proxy learns clusters before the endpoints and listeners/routes that use them,
  and never routes to a cluster it does not know; a NACK stops the chain until new content arrives. On one
  ordered stream (gRPC ADS) "sent" replaces "ACKed" there: see `ready(ordered_stream=True)`.
  A type whose content did not change is not re-sent: a proxy may hold CDS at an older version string whose
  content equals the current one.
* An **ACK** must echo the response's version: Envoy's `version_info` is the last version *applied*, so a
  request with the last nonce but an older version (a proxy polling again after its NACK) **holds**: it
  changes nothing, the NACK stands.
* **VHDS** (control.xds.vhds) is a fifth type, only in the snapshots of proxies that asked for it and only over
  delta xDS: after RDS in ADS order, held, sent and shown like the others (`ALL`); state of the world, gRPC and
  the convergence of other proxies read the four of `ORDER` as before.
* **Sync status** (istioctl proxy-status): NOT SENT (nothing sent for the type), SYNCED (the last nonce sent
  was ACKed, or the proxy holds the current content anyway: a rejected config was reverted), STALE
  otherwise; a NACK of the last nonce is STALE with the error kept for display.
"""
from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

from control.translate.common import CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, ROUTE_CONFIGURATION, T


@dataclass(frozen=True, slots=True)
class XdsType:
    short: str  # "cds": metrics labels, proxy-status columns
    path: str  # "clusters": the REST path `/v3/discovery:clusters`
    type_url: str


CDS = XdsType("cds", "clusters", CLUSTER)
EDS = XdsType("eds", "endpoints", CLUSTER_LOAD_ASSIGNMENT)
LDS = XdsType("lds", "listeners", LISTENER)
RDS = XdsType("rds", "routes", ROUTE_CONFIGURATION)
ORDER: tuple[XdsType, ...] = (CDS, EDS, LDS, RDS)  # ADS order (Envoy's xDS docs, "eventual consistency")
BY_SHORT = MappingProxyType({t.short: t for t in ORDER})
BY_PATH = MappingProxyType({t.path: t for t in ORDER})
BY_URL = MappingProxyType({t.type_url: t for t in ORDER})
# VHDS (control.xds.vhds): only in the snapshots of proxies that asked for it, only over delta xDS, after RDS
VHDS = XdsType("vhds", "virtual_hosts", T + "envoy.config.route.v3.VirtualHost")
ALL: tuple[XdsType, ...] = ORDER + (VHDS,)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces: equal content gives equal bytes (and hash)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def canonical_json_spliced(value: dict, key: str, items: list[bytes]) -> bytes:
    """canonical_json(value), where value[key] is a list whose items are already serialized as `items` (each
    with canonical_json): the same bytes, without serializing shared items again. `key` must sort after every
    other key (it is written last); otherwise the value is serialized whole."""
    rest = {k: v for k, v in value.items() if k != key}
    if key not in value or any(k > key for k in rest):
        return canonical_json(value)
    head = canonical_json(rest)[:-1] + (b"," if rest else b"")
    return head + json.dumps(key).encode() + b":[" + b",".join(items) + b"]}"


def content_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def resource_version(item: bytes | memoryview) -> str:
    """A resource's delta xDS version: the first 16 hex digits of the hash of its canonical JSON."""
    return hashlib.sha256(item).hexdigest()[:16]


def resource_name(resource: Mapping) -> str:
    """A resource's name as xDS keys it (ClusterLoadAssignment: `cluster_name`)."""
    return str(resource.get("name") or resource.get("cluster_name") or "")


@dataclass(frozen=True, slots=True)
class Payload:
    """One type's resources, each serialized once (`items`, canonical JSON), and the hash of the JSON array they
    make (a DiscoveryResponse's `resources`). Proxies with the same content share one Payload: memory and
    serialization scale with distinct configurations, not with proxies.

    Payloads also share their items: the array is not kept joined. The shapes of a mesh list mostly the same
    resources (every sidecar without a Sidecar resource sees the same ~1,700 outbound clusters, assignments and
    virtual hosts), whose bytes the renderer keeps once (control.xds.generate); a joined array per payload copied
    them once per shape. Measured with benchmarks/xds_bench.py --mode delta (10 shapes, 1,000 services): the
    joined arrays were 93 MiB of the control plane's 192 MiB of Python objects after the initial sync; with the
    items shared it holds 100 MiB, and its VmHWM after the sync went from 238-240 to 139-141 MiB (docs/xds.md).
    Responses are written from the items (`DiscoveryResponse.chunks`, control.xds.delta); `body` joins them
    where a whole copy is wanted (gRPC's conversion, once per payload; views; tests)."""

    items: tuple[bytes, ...]
    hash: str
    size: int = field(compare=False)  # len(body)
    names: tuple[str, ...] = field(default=(), compare=False)
    # each resource's `resource_version` when the pieces came with it (shared pieces are hashed once, not once
    # per payload holding them); empty: control.xds.delta.PayloadIndex hashes the items
    versions: tuple[str, ...] = field(default=(), compare=False)

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def body(self) -> bytes:
        """The JSON array of the resources (a copy, joined now)."""
        return b"[" + b",".join(self.items) + b"]"

    @classmethod
    def of(cls, resources: Iterable[dict]) -> "Payload":
        items = list(resources)
        return cls.join([canonical_json(i) for i in items], [resource_name(i) for i in items])

    @classmethod
    def join(cls, items: Iterable[bytes], names: Iterable[str] | None = None,
             versions: Iterable[str] | None = None) -> "Payload":
        """From resources already serialized one by one with `canonical_json` (and their names, else read back
        from the bytes; their `resource_version`s, if known): the same content and hash as `of`, the pieces
        shared, not copied. The hash is that of the joined array (`content_hash(body)`), fed piece by piece."""
        items = tuple(items)
        names = tuple(names) if names is not None else tuple(resource_name(json.loads(i)) for i in items)
        if len(names) != len(items):
            raise ValueError(f"{len(names)} names for {len(items)} resources")
        versions = tuple(versions) if versions is not None else ()
        if versions and len(versions) != len(items):
            raise ValueError(f"{len(versions)} versions for {len(items)} resources")
        digest, size = hashlib.sha256(b"["), 2 + max(0, len(items) - 1)
        for i, item in enumerate(items):
            if i:
                digest.update(b",")
            digest.update(item)
            size += len(item)
        digest.update(b"]")
        return cls(items, digest.hexdigest(), size, names, versions)


def joined(head: bytes, items: Iterable[bytes | memoryview], tail: bytes, chunk: int,
           separator: bytes = b",") -> Iterator[bytes | memoryview]:
    """`head`, the items separated by `separator`, `tail`, in pieces of about `chunk` bytes: small items are
    copied into a piece as it is written (one response never exists whole in memory), an item of `chunk` bytes or
    more goes out as it is (a shared object: not copied per proxy)."""
    buf = bytearray(head)
    for i, item in enumerate(items):
        if i:
            buf += separator
        if len(item) >= chunk:
            yield bytes(buf)
            buf.clear()
            yield item
        else:
            buf += item
            if len(buf) >= chunk:
                yield bytes(buf)
                buf.clear()
    buf += tail
    yield bytes(buf)


@dataclass(frozen=True, slots=True)
class ProxySnapshot:
    """One proxy's complete config: a Payload per type short name ("cds" ...) and one version."""

    version: str
    payloads: Mapping[str, Payload]
    changed_at: float = 0.0  # when the change that led to it happened (convergence time starts here)

    @property
    def hashes(self) -> Mapping[str, str]:
        return {short: p.hash for short, p in self.payloads.items()}

    def resources(self, short: str) -> list[dict]:
        """The decoded resources of one type (views and tests; responses use the payload bytes)."""
        return json.loads(self.payloads[short].body)

    @classmethod
    def build(cls, resources: Mapping[str, Iterable[dict] | Payload], changed_at: float = 0.0) -> "ProxySnapshot":
        """From resources per type, each a list of dicts or an already serialized Payload. VHDS only when given."""
        payloads = {}
        for t in ALL:
            if t in ORDER or t.short in resources:
                value = resources.get(t.short, ())
                payloads[t.short] = value if isinstance(value, Payload) else Payload.of(value)
        version = hashlib.sha256("".join(payloads[t.short].hash for t in ALL if t.short in payloads)
                                 .encode()).hexdigest()[:16]
        return cls(version, MappingProxyType(payloads), changed_at)


@dataclass(frozen=True, slots=True)
class DiscoveryResponse:
    """Envoy's DiscoveryResponse. `body()` / `chunks()` are its JSON: the envelope fields encoded here,
    `resources` spliced in from the shared payload items (no re-serialization per proxy)."""

    version_info: str
    type_url: str
    nonce: str
    payload: Payload

    def envelope(self) -> tuple[bytes, bytes]:
        """The JSON before and after the `resources` array."""
        def enc(value: Any) -> bytes:
            return json.dumps(value).encode()
        return (b'{"version_info":' + enc(self.version_info) + b',"resources":',
                b',"type_url":' + enc(self.type_url) + b',"nonce":' + enc(self.nonce)
                + b',"control_plane":{"identifier":"pyproxy-control"}}')

    def size(self) -> int:
        """len(body()), without building it (a Content-Length)."""
        head, tail = self.envelope()
        return len(head) + self.payload.size + len(tail)

    def chunks(self, chunk: int = 64 * 1024) -> Iterator[bytes | memoryview]:
        """The body in pieces of about `chunk` bytes, made from the payload's shared items as they are written,
        so a server writes it without a per-proxy copy of the whole (and waits for the socket between pieces)."""
        head, tail = self.envelope()
        return joined(head + b"[", self.payload.items, b"]" + tail, chunk)

    def body(self) -> bytes:
        return b"".join(self.chunks())

    def as_dict(self) -> dict:
        return json.loads(self.body())


class RequestKind(str, enum.Enum):
    INITIAL = "initial"  # no nonce: the first request of a subscription
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # answers a response that is no longer the latest: ignored
    RESUME = "resume"  # unknown nonce, but the version is the current one (control plane restarted)
    HOLD = "hold"  # answers the last response but still holds an older version: it did not apply it


class SyncStatus(str, enum.Enum):
    SYNCED = "SYNCED"
    STALE = "STALE"
    NOT_SENT = "NOT SENT"


@dataclass(frozen=True, slots=True)
class DiscoveryRequest:
    """The fields of Envoy's DiscoveryRequest the cache reads (the node is handled by the server)."""

    version_info: str = ""
    response_nonce: str = ""
    error_detail: str | None = None  # google.rpc.Status message; None = no error
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request meant. `converged_after` is set when this ACK completed the proxy's current snapshot
    (every type holds it): seconds since the change, for pilot_proxy_convergence_time."""

    kind: RequestKind
    converged_after: float | None = None


@dataclass(slots=True)
class TypeState:
    """One proxy's subscription to one type: what was sent, acknowledged and rejected last."""

    sent_version: str = ""
    sent_nonce: str = ""
    sent_hash: str = ""
    acked_version: str = ""
    acked_nonce: str = ""
    acked_hash: str = ""
    nack_version: str = ""
    nack_nonce: str = ""
    nack_hash: str = ""
    nack_error: str = ""
    resource_names: tuple[str, ...] = ()

    @property
    def status(self) -> SyncStatus:
        if not self.sent_nonce:
            return SyncStatus.NOT_SENT
        return SyncStatus.SYNCED if self.acked_nonce == self.sent_nonce else SyncStatus.STALE

    @property
    def nacked(self) -> bool:
        """The last response sent was rejected."""
        return bool(self.sent_nonce) and self.nack_nonce == self.sent_nonce

    def sync_status(self, current: str = "") -> SyncStatus:
        """The status to show: `status`, except that a proxy holding the current content is SYNCED even when
        the last response sent was rejected (the rejected config was reverted: nothing is owed)."""
        if self.sent_nonce and current and self.acked_hash == current:
            return SyncStatus.SYNCED
        return self.status

    def as_dict(self, current: str = "") -> dict:
        status = self.sync_status(current)
        return {
            "status": status.value,
            "sent": {"version": self.sent_version, "nonce": self.sent_nonce},
            "acked": {"version": self.acked_version, "nonce": self.acked_nonce},
            "nack": ({"version": self.nack_version, "nonce": self.nack_nonce, "error": self.nack_error}
                     if self.nack_nonce else None),
            "nacked": self.nacked and status is not SyncStatus.SYNCED,
            "resource_names": list(self.resource_names),
        }


@dataclass(slots=True)
class ProxyState:
    snapshot: ProxySnapshot | None = None
    types: dict[str, TypeState] = field(default_factory=lambda: {t.short: TypeState() for t in ALL})
    converged_version: str = ""

    def holds(self, short: str) -> bool:
        """The proxy has acknowledged the current content of this type (a type its snapshot lacks: VHDS for a
        proxy that did not ask for it, is held)."""
        if self.snapshot is None:
            return False
        payload = self.snapshot.payloads.get(short)
        return payload is None or self.types[short].acked_hash == payload.hash


class XdsCache:
    """Snapshots and subscription state of every proxy, keyed by node id. Nonces are `<prefix><counter>`; give
    each control-plane process its own prefix so nonces never repeat across restarts."""

    def __init__(self, nonce_prefix: str = ""):
        self._prefix = nonce_prefix
        self._counter = 0
        self._proxies: dict[str, ProxyState] = {}

    def __repr__(self) -> str:
        return f"XdsCache(proxies={len(self._proxies)}, nonces_issued={self._counter})"

    # --- snapshots --------------------------------------------------------------------------------------
    def proxy_ids(self) -> tuple[str, ...]:
        return tuple(self._proxies)

    def snapshot(self, proxy_id: str) -> ProxySnapshot | None:
        state = self._proxies.get(proxy_id)
        return state.snapshot if state else None

    def set_snapshot(self, proxy_id: str, snapshot: ProxySnapshot) -> bool:
        """Install a proxy's new snapshot; False (and nothing changes) when its content is the same."""
        state = self._proxies.setdefault(proxy_id, ProxyState())
        if state.snapshot is not None and state.snapshot.version == snapshot.version:
            return False
        state.snapshot = snapshot
        return True

    def remove(self, proxy_id: str) -> None:
        self._proxies.pop(proxy_id, None)

    # --- requests and responses -------------------------------------------------------------------------
    def receive(self, proxy_id: str, xds_type: XdsType, request: DiscoveryRequest, now: float = 0.0) -> Outcome:
        """Record what a request says about the last response (ACK, NACK, stale, resume)."""
        state = self._proxies.setdefault(proxy_id, ProxyState())
        ts = state.types[xds_type.short]
        ts.resource_names = request.resource_names
        nonce = request.response_nonce
        if nonce and nonce == ts.sent_nonce:
            if request.error_detail is not None:
                ts.nack_version, ts.nack_nonce, ts.nack_hash = ts.sent_version, nonce, ts.sent_hash
                ts.nack_error = request.error_detail
                return Outcome(RequestKind.NACK)
            if request.version_info != ts.sent_version:  # e.g. polling again after its NACK
                return Outcome(RequestKind.HOLD)
            ts.acked_version, ts.acked_nonce, ts.acked_hash = ts.sent_version, nonce, ts.sent_hash
            return Outcome(RequestKind.ACK, self._converged(state, now))
        if nonce and ts.sent_nonce:  # answers an older response than the last one sent
            return Outcome(RequestKind.STALE)
        if not nonce:  # a new subscription (the proxy started or restarted): it holds only what it says
            state.types[xds_type.short] = ts = TypeState(resource_names=request.resource_names)
        current = state.snapshot
        if current is not None and request.version_info == current.version and request.error_detail is None \
                and xds_type.short in current.payloads:
            h = current.payloads[xds_type.short].hash
            ts.sent_version = ts.acked_version = current.version
            ts.sent_nonce = ts.acked_nonce = nonce or "resumed"
            ts.sent_hash = ts.acked_hash = h
            return Outcome(RequestKind.RESUME, self._converged(state, now))
        return Outcome(RequestKind.STALE if nonce else RequestKind.INITIAL)

    def ready(self, proxy_id: str, xds_type: XdsType, *, ordered_stream: bool = False) -> bool:
        """A response for this type is due now (see the module docstring).

        `ordered_stream`: the proxy reads every type from one ordered stream (gRPC ADS), so an earlier type's
        current content having been *sent* (and not rejected) is enough: the proxy applies it before what
        follows on the stream. istiod pushes CDS then EDS without waiting for the CDS ACK, and Envoy needs it:
        it holds the CDS ACK back while new EDS clusters warm, i.e. until their EDS arrives.

        On an ordered stream, content already sent is not due again until the proxy answers it: its ACK or
        NACK is on the way, and a resend would make that answer stale (istiod's `shouldRespond` answers a
        request, it does not resend on other types' requests). Resending on every request livelocks a busy
        Envoy: each CDS it applies is superseded before its ACK lands, so it never reaches SYNCED. A REST
        client asks again only when it lost the response, so there the content is sent again."""
        state = self._proxies.get(proxy_id)
        if state is None or state.snapshot is None or xds_type.short not in state.snapshot.payloads:
            return False
        ts = state.types[xds_type.short]
        current = state.snapshot.payloads[xds_type.short].hash
        if ts.acked_hash == current or ts.nack_hash == current:
            return False
        if ordered_stream and ts.sent_hash == current:
            return False
        return self.order_open(proxy_id, xds_type, ordered_stream=ordered_stream)

    def order_open(self, proxy_id: str, xds_type: XdsType, *, ordered_stream: bool = False) -> bool:
        """Every type before this one in ADS order is held (or, on an ordered stream, sent and not rejected):
        a response of this type may go out (`ready` also asks that it carry something new)."""
        state = self._proxies.get(proxy_id)
        if state is None or state.snapshot is None:
            return False
        for earlier in ALL[:ALL.index(xds_type)]:
            if state.holds(earlier.short):
                continue
            sent = state.types[earlier.short]
            if not (ordered_stream and sent.sent_hash == state.snapshot.payloads[earlier.short].hash
                    and sent.nack_hash != sent.sent_hash):
                return False
        return True

    def respond(self, proxy_id: str, xds_type: XdsType) -> DiscoveryResponse:
        """The DiscoveryResponse for this type from the proxy's current snapshot; records it as sent."""
        state = self._proxies[proxy_id]
        snap = state.snapshot
        if snap is None:
            raise LookupError(f"no snapshot for proxy {proxy_id!r}")
        self._counter += 1
        nonce = f"{self._prefix}{self._counter}"
        payload = snap.payloads[xds_type.short]
        ts = state.types[xds_type.short]
        ts.sent_version, ts.sent_nonce, ts.sent_hash = snap.version, nonce, payload.hash
        return DiscoveryResponse(snap.version, xds_type.type_url, nonce, payload)

    def unchanged(self, proxy_id: str, xds_type: XdsType, now: float = 0.0) -> Outcome | None:
        """Delta: the type's new content changes nothing the proxy holds (a LEDS client's assignments when only
        endpoints moved, control.xds.leds): record it as holding the current content, without a response to
        ACK, as a delta server sends nothing then. Only when the last response was ACKed (None otherwise: a
        response is in flight, send as usual)."""
        state = self._proxies.get(proxy_id)
        if state is None or state.snapshot is None:
            return None
        ts = state.types[xds_type.short]
        if not ts.sent_nonce or ts.acked_nonce != ts.sent_nonce:
            return None
        ts.sent_version = ts.acked_version = state.snapshot.version
        ts.sent_hash = ts.acked_hash = state.snapshot.payloads[xds_type.short].hash
        return Outcome(RequestKind.ACK, self._converged(state, now))

    def _converged(self, state: ProxyState, now: float) -> float | None:
        snap = state.snapshot
        if snap is None or state.converged_version == snap.version:
            return None
        if all(state.holds(t.short) for t in ALL):
            state.converged_version = snap.version
            return max(0.0, now - snap.changed_at)
        return None

    # --- views ------------------------------------------------------------------------------------------
    def type_state(self, proxy_id: str, xds_type: XdsType) -> TypeState:
        return self._proxies[proxy_id].types[xds_type.short]

    def describe(self, proxy_id: str) -> dict:
        """Per type: status, last sent / acked version and nonce, last NACK (for /debug/syncz)."""
        state = self._proxies[proxy_id]
        return {
            "version": state.snapshot.version if state.snapshot else "",
            "types": {t.short: state.types[t.short].as_dict(state.snapshot.payloads[t.short].hash
                                                             if state.snapshot else "")
                      for t in ALL if t in ORDER or (state.snapshot and t.short in state.snapshot.payloads)},
        }
