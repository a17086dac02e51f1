"""Incremental (delta) xDS for one stream and one type: what the client holds, what it asked for, what to send.
No I/O; the gRPC shell is control.xds.grpc_ads (DeltaAggregatedResources).

Envoy's delta protocol (xDS docs, "Incremental xDS"): a DeltaDiscoveryRequest subscribes and unsubscribes
resource names (`resource_names_subscribe` / `_unsubscribe`; CDS and LDS start as **wildcard**, "everything",
when the first request names nothing or names `*`), and on a reconnect says which versions it already holds
(`initial_resource_versions`). A DeltaDiscoveryResponse carries only the resources added or changed since what
the client holds (each with its own `version`) and the names removed (`removed_resources`). A request with the
last response's nonce ACKs it, or NACKs it with `error_detail`: then the client keeps what it held before, so
`held` goes back to what it was (`reject`).

Resource versions are content hashes of each resource (canonical JSON), so they are the same across control
plane restarts and a reconnecting client that holds the current content is sent nothing new.

Snapshots, nonces and sync status stay the XdsCache's (control.xds.cache), as in state of the world: a delta
response is cut from the same snapshot and recorded as sent with the same nonce; its ACK is recorded as the ACK
of that snapshot version. So /debug/syncz and proxy-status read the same for both modes.

Shared by both transports: gRPC (control.xds.grpc_ads, one stream = one session) and REST-JSON long-polls
(control.xds.server `/v3/delta_discovery:<type>`, this project's extension: a session per proxy and type,
started by a request without `response_nonce`, kept in `DeltaSessions`). `receive` and `due` are the
protocol steps both run against the XdsCache.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Iterator, Mapping

from control.xds.cache import (CLUSTER, LISTENER, DiscoveryRequest, DiscoveryResponse, Outcome, Payload,
                               XdsCache, XdsType, canonical_json, joined, resource_name, resource_version)

WILDCARD_TYPES = (CLUSTER, LISTENER)  # Envoy subscribes to these as wildcard by default


def resource_versions(resources: Iterable[Mapping]) -> dict[str, str]:
    """name -> content hash (16 hex digits) of each resource."""
    return {resource_name(r): hashlib.sha256(canonical_json(r)).hexdigest()[:16] for r in resources}


def versions_of_payload(body: bytes) -> dict[str, str]:
    return resource_versions(json.loads(body))


@dataclass(frozen=True, slots=True)
class Indexed:
    """One payload's resources: name -> version (what `DeltaSubscription.update` compares) and name -> its
    serialized resource (the payload's own item: shared, not copied)."""

    versions: Mapping[str, str]
    items: Mapping[str, bytes]

    def head(self, name: str) -> bytes:
        """`{"name":...,"version":...,"resource":` of a Resource (encoded per response, not kept: memory)."""
        quoted = b'"' + name.encode() + b'"' if _plain(name) else _enc(name)
        return b'{"name":' + quoted + b',"version":"' + self.versions[name].encode() + b'","resource":'


def _enc(value) -> bytes:
    return json.dumps(value).encode()


def _plain(name: str) -> bool:
    """A name JSON writes as is between quotes (cluster and route names are)."""
    return name.isascii() and name.isprintable() and '"' not in name and "\\" not in name


class PayloadIndex:
    """`Indexed` of a Payload, by payload hash, the most recent `size` kept: proxies that share a payload share its
    index, and a version is a hash of the resource's bytes as `resource_versions` computes it, without decoding
    anything."""

    def __init__(self, size: int = 256):
        self.size = size
        self._index: OrderedDict[str, Indexed] = OrderedDict()

    def __call__(self, payload: Payload) -> Indexed:
        found = self._index.get(payload.hash)
        if found is None:
            versions = dict(zip(payload.names, payload.versions or map(resource_version, payload.items)))
            found = self._index[payload.hash] = Indexed(versions, dict(zip(payload.names, payload.items)))
            while len(self._index) > self.size:
                self._index.popitem(last=False)
        else:
            self._index.move_to_end(payload.hash)
        return found

    def retain(self, hashes: Iterable[str]) -> None:
        """Forget the payloads not in `hashes` (after a push: those no snapshot holds any more)."""
        keep = set(hashes)
        for key in [k for k in self._index if k not in keep]:
            del self._index[key]


def _difference(held: Mapping[str, str], current: Mapping[str, str],
                wanted: Callable[[str], bool] = lambda _name: True) -> "DeltaUpdate":
    send = tuple(sorted(n for n, v in current.items() if wanted(n) and held.get(n) != v))
    removed = tuple(sorted(n for n in held if n not in current and wanted(n)))
    return DeltaUpdate(send, removed)


class DiffCache:
    """The DeltaUpdate between two version maps (PayloadIndex's, shared by the clients that hold a payload
    exactly), computed once per pair: after a push, the clients of one shape all move from the same old map
    to the same new one. The `size` most recent pairs are kept, each holding both maps (so their ids stay
    theirs)."""

    def __init__(self, size: int = 64):
        self.size = size
        self._pairs: OrderedDict[tuple[int, int], tuple[Mapping, Mapping, "DeltaUpdate"]] = OrderedDict()

    def __call__(self, held: Mapping[str, str], current: Mapping[str, str]) -> "DeltaUpdate":
        key = (id(held), id(current))
        hit = self._pairs.get(key)
        if hit is None or hit[0] is not held or hit[1] is not current:
            hit = self._pairs[key] = (held, current, _difference(held, current))
            while len(self._pairs) > self.size:
                self._pairs.popitem(last=False)
        else:
            self._pairs.move_to_end(key)
        return hit[2]


@dataclass(frozen=True, slots=True)
class DeltaUpdate:
    """What one response carries: names to send (added or changed) and names removed."""

    send: tuple[str, ...]
    removed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.send or self.removed)


@dataclass(slots=True)
class DeltaSubscription:
    """One type on one delta stream."""

    answers_changes: ClassVar[bool] = False  # a subscription change is answered even with nothing to send

    type_url: str
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    # identical name sets shared between subscriptions (DeltaSessions.pool): 100 proxies subscribing to the same
    # 1,700 clusters hold one set, not 100
    pool: Callable[[frozenset[str]], frozenset[str]] | None = None
    # name -> version the client holds; while it holds exactly a payload's resources, the PayloadIndex's own
    # (read-only) map is shared instead of a copy per proxy (`_shared`: copied before any change)
    held: Mapping[str, str] = field(default_factory=dict)
    _shared: bool = False
    started: bool = False
    changed: bool = False  # the subscription changed since the last response: names may be owed
    # (nonce, what that response changed in `held`: name -> version before, None = absent): undone by a NACK
    _before: tuple[str, dict[str, str | None]] | None = None

    def request(self, subscribe: Iterable[str], unsubscribe: Iterable[str],
                initial_versions: Mapping[str, str] | None = None) -> None:
        """A request's subscription changes (its ACK/NACK part goes to `ack` / `reject`)."""
        subscribe, unsubscribe = list(subscribe), list(unsubscribe)
        if subscribe or unsubscribe or not self.started:
            self.changed = True
        if not self.started:
            self.started = True
            self.wildcard = "*" in subscribe or (not subscribe and self.type_url in WILDCARD_TYPES)
            self._own().update(initial_versions or {})
        if "*" in subscribe:
            self.wildcard = True
        if "*" in unsubscribe:
            self.wildcard = False
        if subscribe or unsubscribe:
            names = self.names.union(sys.intern(n) for n in subscribe if n != "*").difference(unsubscribe)
            if names != self.names:
                self.names = self.pool(names) if self.pool is not None else names
        for name in unsubscribe:
            if not self.wildcard:
                self._own().pop(name, None)  # the client forgets it; nothing is sent for it

    def wanted(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def covers(self, versions: Mapping[str, str]) -> bool:
        """Every name of `versions` (a PayloadIndex version map) is subscribed by name (VHDS: or by glob)."""
        return self.names.issuperset(versions)

    def update(self, current: Mapping[str, str], diffs: "DiffCache | None" = None) -> DeltaUpdate:
        """What to send so the client holds `current` (name -> version) for what it subscribed to. With
        `diffs`, a client holding a shared version map (that of an earlier payload) and subscribed to every
        name of both gets the difference computed once for all such clients."""
        if diffs is not None and self._shared and (self.wildcard or (self.covers(current) and self.covers(self.held))):
            return diffs(self.held, current)
        return _difference(self.held, current, self.wanted)

    def sent(self, nonce: str, update: DeltaUpdate, current: Mapping[str, str]) -> None:
        """Record a response as held (the client applies it unless it NACKs)."""
        self._before = (nonce, {n: self.held.get(n) for n in (*update.send, *update.removed)})
        self.changed = False
        if (self.wildcard or self.covers(current)) and \
                self.held.keys() - set(update.removed) <= current.keys():
            self.held, self._shared = current, True  # it now holds exactly `current`
            return
        held = self._own()
        for name in update.send:
            held[name] = current[name]
        for name in update.removed:
            held.pop(name, None)

    def _own(self) -> dict[str, str]:
        if self._shared:
            self.held, self._shared = dict(self.held), False
        return self.held  # type: ignore[return-value]

    def reject(self, nonce: str) -> None:
        """The response `nonce` was NACKed: the client kept what it held before it."""
        if self._before is not None and self._before[0] == nonce:
            self._undo()

    def _undo(self) -> None:
        assert self._before is not None
        held = self._own()
        for name, version in self._before[1].items():
            if version is None:
                held.pop(name, None)
            else:
                held[name] = version
        self._before = None
        self.changed = True  # what the client holds moved back: names may be owed again

    def ack(self, nonce: str) -> None:
        """The response `nonce` was applied: what it carried is held for good."""
        if self._before is not None and self._before[0] == nonce:
            self._before = None

    def unanswered(self, nonce: str) -> None:
        """A REST request answered `nonce`, not the last response sent: with one request at a time per type,
        that response never reached the client (its long-poll was abandoned), so it holds what it held before."""
        if self._before is not None and self._before[0] != nonce:
            self._undo()


@dataclass(frozen=True, slots=True)
class DeltaResponse:
    """Envoy's DeltaDiscoveryResponse in JSON (REST): `system_version_info` and `nonce` are the XdsCache
    response's, `resources` the `Resource {name, version, resource}` of each name in `update.send`, spliced
    from the payload bytes (`index`: PayloadIndex), and `removed_resources`."""

    response: DiscoveryResponse
    update: DeltaUpdate
    index: Indexed

    def _envelope(self) -> tuple[bytes, bytes]:
        r = self.response
        return (b'{"system_version_info":' + _enc(r.version_info) + b',"resources":[',
                b'],"removed_resources":' + _enc(list(self.update.removed)) + b',"type_url":' + _enc(r.type_url)
                + b',"nonce":' + _enc(r.nonce) + b',"control_plane":{"identifier":"pyproxy-control"}}')

    def chunks(self, chunk: int = 16 * 1024) -> Iterator[bytes | memoryview]:
        """The body in pieces of about `chunk` bytes, copied from the shared payload items as they are written (a
        proxy's initial response, every resource, never exists whole in memory), and resources of `chunk` bytes
        or more as the payload's own objects (a 2 MB route configuration is not copied per proxy)."""
        head, tail = self._envelope()
        return joined(head, self._resources(), tail, chunk, separator=b"")

    def _resources(self) -> Iterator[bytes]:
        """Each `Resource {name, version, resource}` of `update.send` in three pieces, the resource's the
        payload's own bytes."""
        items = self.index.items
        for i, name in enumerate(self.update.send):
            yield (b"," if i else b"") + self.index.head(name)
            yield items[name]
            yield b"}"

    def body(self) -> bytes:
        return b"".join(bytes(c) for c in self.chunks())


@dataclass(frozen=True, slots=True)
class DeltaRequest:
    """The fields of Envoy's DeltaDiscoveryRequest the server reads (the node is handled by the shell)."""

    response_nonce: str = ""
    error_detail: str | None = None  # google.rpc.Status message; None = no error
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    initial_versions: Mapping[str, str] = field(default_factory=dict)


def receive(cache: XdsCache, record: Callable[[DiscoveryRequest], Outcome], node_id: str, xds_type: XdsType,
            sub: DeltaSubscription, request: DeltaRequest, *, one_at_a_time: bool = False) -> None:
    """One delta request: its subscription changes into `sub`, its ACK/NACK into `sub` and, through `record`
    (the control plane's `receive`: cache, metrics, log), into the XdsCache as the ACK/NACK of the snapshot
    version the response was cut from. `one_at_a_time` (REST): a nonce other than the last sent means that
    response was lost (`unanswered`)."""
    first = not sub.started
    sub.request(request.subscribe, request.unsubscribe, request.initial_versions)
    nonce = request.response_nonce
    if nonce:
        state = cache.type_state(node_id, xds_type)
        if request.error_detail is not None:
            sub.reject(nonce)
        elif nonce == state.sent_nonce:
            sub.ack(nonce)
        if one_at_a_time:
            sub.unanswered(nonce)
        version = state.sent_version if nonce == state.sent_nonce and request.error_detail is None else ""
        record(DiscoveryRequest(version_info=version, response_nonce=nonce, error_detail=request.error_detail))
    elif first:  # a new subscription: the client holds only its initial_resource_versions
        record(DiscoveryRequest())


def due(cache: XdsCache, node_id: str, xds_type: XdsType, sub: DeltaSubscription, current: Mapping[str, str],
        *, ordered_stream: bool, diffs: DiffCache | None = None) -> DeltaUpdate | None:
    """The update to send now for `current` (name -> version), or None. Due when the cache says the type's
    content is (a new snapshot, ADS order open), or when names newly subscribed hold content the client lacks
    (the snapshot did not change: only the subscription did), unless that content was NACKed."""
    if cache.ready(node_id, xds_type, ordered_stream=ordered_stream):
        return sub.update(current, diffs)
    snapshot = cache.snapshot(node_id)
    if not sub.changed or snapshot is None:  # same content, same subscription: nothing new is owed
        return None
    update = sub.update(current)
    if not update and not sub.answers_changes:
        return None
    state = cache.type_state(node_id, xds_type)
    if state.nack_hash == snapshot.payloads[xds_type.short].hash:
        return None
    return update if cache.order_open(node_id, xds_type, ordered_stream=ordered_stream) else None


class DeltaSessions:
    """REST delta sessions: a DeltaSubscription per proxy and type, plus a request counter so that a long-poll
    superseded by a newer request of the same type stops (its client has moved on)."""

    def __init__(self, kinds: Mapping[str, type[DeltaSubscription]] | None = None) -> None:
        self._kinds = dict(kinds or {})  # type short name -> its subscription class (VHDS: globs)
        self._subs: dict[tuple[str, str], DeltaSubscription] = {}
        self._latest: dict[tuple[str, str], int] = {}
        self._counter = 0
        self._pool: dict[frozenset[str], frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._subs)

    def get(self, node_id: str, short: str) -> DeltaSubscription | None:
        return self._subs.get((node_id, short))

    def start(self, node_id: str, xds_type: XdsType) -> DeltaSubscription:
        """A request without a nonce: the client (re)starts its subscription, holding only what it declares."""
        kind = self._kinds.get(xds_type.short, DeltaSubscription)
        sub = self._subs[(node_id, xds_type.short)] = kind(xds_type.type_url, pool=self.pool)
        return sub

    def pool(self, names: frozenset[str]) -> frozenset[str]:
        """The one shared copy of `names`; sets no subscription uses any more are dropped as the pool grows."""
        found = self._pool.setdefault(names, names)
        if len(self._pool) > 2 * len(self._subs) + 16:
            used = {id(sub.names) for sub in self._subs.values()} | {id(found)}
            self._pool = {k: v for k, v in self._pool.items() if id(v) in used}
        return found

    def begin(self, node_id: str, short: str) -> int:
        """A request arrived: its ticket; `current(ticket)` turns False once a newer one arrives."""
        self._counter += 1
        self._latest[(node_id, short)] = self._counter
        return self._counter

    def current(self, node_id: str, short: str, ticket: int) -> bool:
        return self._latest.get((node_id, short)) == ticket

    def remove(self, node_id: str) -> None:
        for key in [k for k in self._subs if k[0] == node_id]:
            del self._subs[key]
        for key in [k for k in self._latest if k[0] == node_id]:
            del self._latest[key]
