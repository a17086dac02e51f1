"""LEDS, Envoy's Locality Endpoint Discovery Service, for pyproxy's REST delta clients. No I/O.

A ClusterLoadAssignment lists every endpoint of its cluster, so a replica of a Deployment that 100 services
select changes ~300 assignments, each re-sent whole (11 endpoints) to every proxy. With LEDS
(`envoy.config.endpoint.v3.LocalityLbEndpoints.leds_cluster_locality_config`) a locality of an assignment
names a *collection* instead of listing its endpoints, and the endpoints are resources of their own
(`envoy.config.endpoint.v3.LbEndpoint`), subscribed to per collection over delta xDS: a registration changes
one LbEndpoint per collection that holds it, and the assignments stay as they are (unless a locality appears
or disappears).

Names follow Envoy's xdstp:// scheme (xDS docs, "xDS URL"; LedsClusterLocalityConfig.leds_collection_name):
a collection is a glob `xdstp://pyproxy-control/envoy.config.endpoint.v3.LbEndpoint/<cluster>/<locality>/*`,
its members `.../<cluster>/<locality>/<address>:<port>`. `<cluster>` is the assignment's cluster_name,
`<locality>` Istio's `region/zone/sub_zone` percent-encoded (`-` for none), with `~<priority>` when the
priority is not 0.

Who gets it: a node whose `client_features` lists `pyproxy.xds.leds` (`FEATURE`), on the REST delta paths
(pyproxy does by default). Everyone else (state of the world, gRPC ADS, real Envoy) keeps whole assignments:
the LEDS form is a *view* of the EDS payload the snapshot holds (`LedsViews`), computed once per payload and
per assignment, so the snapshots, their versions and ADS order are the same for every client.

The subscription (`LedsSubscription`) follows control.xds.delta's rules (ACK, NACK puts back what the client
held, a lost REST response is owed again) per collection: what a client holds of a collection is compared
by identity first, so after a registration only the collections that changed are walked.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping
from urllib.parse import quote

from control.translate.common import T
from control.xds.cache import DiscoveryResponse, Payload, XdsType, canonical_json, resource_version
from control.xds.delta import PayloadIndex

FEATURE = "pyproxy.xds.leds"  # node.client_features entry: "send me ClusterLoadAssignments in the LEDS form"
AUTHORITY = "pyproxy-control"
LB_ENDPOINT = T + "envoy.config.endpoint.v3.LbEndpoint"
PREFIX = f"xdstp://{AUTHORITY}/envoy.config.endpoint.v3.LbEndpoint/"
LEDS = XdsType("leds", "lb_endpoints", LB_ENDPOINT)  # REST: POST /v3/delta_discovery:lb_endpoints
# LedsClusterLocalityConfig.leds_config: the same management server and transport as the assignment's
LEDS_CONFIG = {"ads": {}, "resource_api_version": "V3"}


class LedsError(ValueError):
    """A LEDS request the server cannot serve (the message names the field)."""


def wants_leds(client_features: Iterable[str]) -> bool:
    return FEATURE in client_features


def collection_of(name: str) -> str:
    """The glob collection an LbEndpoint resource name belongs to: `.../<cluster>/<locality>/*`."""
    return name.rsplit("/", 1)[0] + "/*"


def check_collections(names: Iterable[str]) -> None:
    """A LEDS subscription names glob collections of this authority (LedsError otherwise)."""
    for name in names:
        if not (name.startswith(PREFIX) and name.endswith("/*")):
            raise LedsError(f"resource_names_subscribe: {name!r} is not a LEDS collection "
                            f"({PREFIX}<cluster>/<locality>/*)")


def locality_segment(group: Mapping) -> str:
    loc = group.get("locality") or {}
    text = "/".join(str(loc.get(k, "")) for k in ("region", "zone", "sub_zone")).rstrip("/")
    segment = quote(text, safe="") or "-"
    priority = group.get("priority") or 0
    return f"{segment}~{priority}" if priority else segment


def endpoint_id(lb: Mapping) -> str:
    sock = ((lb.get("endpoint") or {}).get("address") or {}).get("socket_address") or {}
    text = f"{sock.get('address', '')}:{sock.get('port_value', '')}"
    return text if _SAFE.issuperset(text) else quote(text, safe=":")


_SAFE = frozenset("0123456789abcdefABCDEF.:-_")  # what quote() leaves as is: IPv4, IPv6, ports


@dataclass(frozen=True, slots=True, eq=False)
class Collection:
    """One LEDS collection's content: member name -> (version, its `Resource {name, version, resource}` as sent),
    and `whole`, every member's Resource comma-joined (what a client holding none of it gets: 100 proxies syncing
    18,700 endpoints copy 1,700 such pieces each, not 18,700). Compared by identity: the same assignment gives
    the same object in every view (LedsViews caches them)."""

    name: str  # the glob
    members: Mapping[str, tuple[str, bytes]]
    whole: bytes = b""


def _resource(name: str, version: str, body: bytes) -> bytes:
    plain = name.isascii() and name.isprintable() and '"' not in name and "\\" not in name
    quoted = f'"{name}"' if plain else json.dumps(name)
    return b'{"name":' + quoted.encode() + b',"version":"' + version.encode() + b'","resource":' + body + b"}"


@dataclass(frozen=True, slots=True)
class Converted:
    """One ClusterLoadAssignment in the LEDS form: its bytes and version, and its collections."""

    assignment: bytes
    version: str
    collections: tuple[Collection, ...]


def convert(assignment: Mapping) -> Converted:
    """A ClusterLoadAssignment (dict) -> the same with each locality's `lb_endpoints` replaced by a
    `leds_cluster_locality_config` naming its collection, and the collections' LbEndpoint resources."""
    cluster = quote(str(assignment.get("cluster_name", "")), safe="|")
    groups, collections, seen = [], [], set()
    for group in assignment.get("endpoints") or []:
        base = f"{PREFIX}{cluster}/{locality_segment(group)}"
        glob = f"{base}/*"
        if glob in seen:  # two groups of one locality and priority: keep them apart
            glob = f"{base}~{len(seen)}/*"
        seen.add(glob)
        members: dict[str, tuple[str, bytes]] = {}
        for lb in group.get("lb_endpoints") or []:
            name = f"{glob[:-1]}{endpoint_id(lb)}"
            if name in members:
                name = f"{name}~{len(members)}"
            body = canonical_json({"@type": LB_ENDPOINT, **lb})
            version = resource_version(body)
            members[name] = (version, _resource(name, version, body))
        collections.append(Collection(glob, members, b",".join(r for _v, r in members.values())))
        out = {k: v for k, v in group.items() if k != "lb_endpoints"}
        out["leds_cluster_locality_config"] = {"leds_config": LEDS_CONFIG, "leds_collection_name": glob}
        groups.append(out)
    converted = dict(assignment)
    converted["endpoints"] = groups
    body = canonical_json(converted)
    return Converted(body, resource_version(body), tuple(collections))


@dataclass(frozen=True, slots=True)
class LedsView:
    """The LEDS form of one EDS payload: the assignments (`eds`, a Payload delta responses are cut from as
    from the snapshot's) and every collection they name."""

    eds: Payload
    collections: Mapping[str, Collection]
    key: str  # the EDS payload's hash: what a NACK of LEDS content is remembered by


class LedsViews:
    """`LedsView` per EDS payload hash, and `Converted` per assignment version: after a registration only the
    assignments that changed are converted again, the others (and their Collection objects) are the last
    push's."""

    def __init__(self, index: PayloadIndex):
        self.index = index
        self._views: dict[str, LedsView] = {}
        self._converted: dict[str, Converted] = {}

    def __call__(self, payload: Payload) -> LedsView:
        view = self._views.get(payload.hash)
        if view is None:
            view = self._views[payload.hash] = self._build(payload)
        return view

    def _build(self, payload: Payload) -> LedsView:
        indexed = self.index(payload)
        body = memoryview(payload.body)
        items, names, versions, collections = [], [], [], {}
        for name, (start, end) in indexed.spans.items():
            version = indexed.versions[name]
            conv = self._converted.get(version)
            if conv is None:
                conv = self._converted[version] = convert(json.loads(bytes(body[start:end])))
            items.append(conv.assignment)
            names.append(name)
            versions.append(conv.version)
            for c in conv.collections:
                collections[c.name] = c
        return LedsView(Payload.join(items, names, versions), collections, payload.hash)

    def retain(self, hashes: Iterable[str]) -> None:
        """After a push: keep the views of these EDS payloads (those some snapshot holds), and the conversions of
        every view there was until now: the new payloads' views are built later, at their first request, and
        they find there the assignments that did not change (with their Collection objects, which is what makes
        a client's difference a walk over identities). Conversions no view used since the last push go."""
        used = set()
        for view in self._views.values():
            used.update(self.index(view.eds).versions.values())
        keep = set(hashes)
        self._views = {h: v for h, v in self._views.items() if h in keep}
        self._converted = {v: c for v, c in self._converted.items() if c.version in used}


@dataclass(frozen=True, slots=True)
class LedsUpdate:
    """What one LEDS response carries: the names sent and their Resources (`parts`, each one or more
    comma-joined), the names removed, and the collections whose content the client then holds anew."""

    send: tuple[str, ...]
    parts: tuple[bytes, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.send or self.removed)


Held = dict[str, Collection]


def _diff(old: Collection | None, new: Collection | None, send: list, parts: list, removed: list) -> None:
    old_m = old.members if old is not None else {}
    new_m = new.members if new is not None else {}
    if not old_m and new_m:  # a client holding none of it: every member, in one piece
        send.extend(new_m)
        parts.append(new.whole)  # type: ignore[union-attr]
        return
    for name, (version, resource) in new_m.items():
        had = old_m.get(name)
        if had is None or had[0] != version:
            send.append(name)
            parts.append(resource)
    removed.extend(n for n in old_m if n not in new_m)


@dataclass(slots=True)
class LedsSubscription:
    """One client's LEDS subscription: the collections it subscribed to, and what it holds of each."""

    collections: frozenset[str] = frozenset()
    held: Held = field(default_factory=dict)
    started: bool = False
    changed: bool = False  # the subscription changed since the last response: answer it, even if empty
    sent_nonce: str = ""
    acked_nonce: str = ""
    nack_key: str = ""  # the view whose content was NACKed: not sent again until the view changes
    nack_error: str = ""
    sent_key: str = ""
    clean: str = ""  # the view whose every subscribed collection the client holds: nothing is due for it
    _before: tuple[str, dict[str, Collection | None]] | None = None

    def request(self, subscribe: Iterable[str], unsubscribe: Iterable[str],
                initial_versions: Mapping[str, str] | None = None) -> None:
        """A request's subscription changes (names checked by `check_collections` first)."""
        subscribe, unsubscribe = list(subscribe), list(unsubscribe)
        if not self.started:
            self.started, self.changed = True, True
            grouped: dict[str, dict[str, tuple[str, bytes]]] = {}
            for name, version in (initial_versions or {}).items():
                grouped.setdefault(collection_of(name), {})[name] = (version, b"")
            self.held = {glob: Collection(glob, members) for glob, members in grouped.items()}
        if subscribe or unsubscribe:
            self.changed = True
            self.collections = self.collections.union(subscribe).difference(unsubscribe)
        for glob in unsubscribe:
            self.held.pop(glob, None)  # the client forgets it; nothing is sent for it
        self.clean = ""
        for glob in [g for g in self.held if g not in self.collections]:
            del self.held[glob]  # declared held at a reconnect but not subscribed

    def update(self, view: LedsView) -> LedsUpdate:
        send: list[str] = []
        parts: list[bytes] = []
        removed: list[str] = []
        changed = []
        held, current = self.held, view.collections
        for glob in self.collections:
            new, old = current.get(glob), held.get(glob)
            if new is not old:
                _diff(old, new, send, parts, removed)
                changed.append(glob)
        return LedsUpdate(tuple(send), tuple(parts), tuple(removed), tuple(changed))

    def due(self, view: LedsView) -> LedsUpdate | None:
        """What to send now: the changes of the subscribed collections, unless this very content was NACKed;
        an answer (even empty) to a changed subscription, so the client knows those collections are complete."""
        if not self.started or (not self.changed and self.clean == view.key):
            return None
        update = self.update(view)
        if self.changed:
            return update
        if not update:
            self.clean = view.key
            return None
        return None if self.nack_key == view.key else update

    def sent(self, nonce: str, update: LedsUpdate, view: LedsView) -> None:
        self._before = (nonce, {glob: self.held.get(glob) for glob in update.changed})
        for glob in update.changed:
            new = view.collections.get(glob)
            if new is None:
                self.held.pop(glob, None)
            else:
                self.held[glob] = new
        self.changed = False
        self.sent_nonce, self.sent_key, self.clean = nonce, view.key, view.key

    def _undo(self) -> None:
        assert self._before is not None
        self.clean = ""
        for glob, old in self._before[1].items():
            if old is None:
                self.held.pop(glob, None)
            else:
                self.held[glob] = old
        self._before = None

    def receive(self, nonce: str, error: str | None) -> str:
        """A request's answer to the response `nonce` (REST: one request at a time, so a nonce other than the
        last sent means that response was lost). Returns what it was: ack, nack, lost or initial."""
        if not nonce:
            return "initial"
        if nonce != self.sent_nonce:
            if self._before is not None:
                self._undo()
                self.changed = True  # owed again
            return "lost"
        if error is not None:
            if self._before is not None:
                self._undo()
            self.nack_key, self.nack_error = self.sent_key, error
            return "nack"
        self._before = None
        self.acked_nonce = nonce
        return "ack"

    def describe(self) -> dict:
        return {"collections": len(self.collections), "held": sum(len(c.members) for c in self.held.values()),
                "sent_nonce": self.sent_nonce, "acked_nonce": self.acked_nonce,
                "nack": {"nonce": self.sent_nonce, "error": self.nack_error} if self.nack_error else None}


class LedsSessions:
    """REST LEDS subscriptions, one per proxy (`/v3/delta_discovery:lb_endpoints`), their nonces, and a request
    counter so a long-poll superseded by a newer request stops."""

    def __init__(self, nonce_prefix: str = ""):
        self._prefix = nonce_prefix
        self._counter = 0
        self._subs: dict[str, LedsSubscription] = {}
        self._latest: dict[str, int] = {}
        self._tickets = 0

    def __len__(self) -> int:
        return len(self._subs)

    def get(self, node_id: str) -> LedsSubscription | None:
        return self._subs.get(node_id)

    def start(self, node_id: str) -> LedsSubscription:
        sub = self._subs[node_id] = LedsSubscription()
        return sub

    def nonce(self) -> str:
        self._counter += 1
        return f"{self._prefix}leds-{self._counter}"

    def begin(self, node_id: str) -> int:
        self._tickets += 1
        self._latest[node_id] = self._tickets
        return self._tickets

    def current(self, node_id: str, ticket: int) -> bool:
        return self._latest.get(node_id) == ticket

    def remove(self, node_id: str) -> None:
        self._subs.pop(node_id, None)
        self._latest.pop(node_id, None)


@dataclass(frozen=True, slots=True)
class LedsResponse:
    """A DeltaDiscoveryResponse of LbEndpoint resources, in JSON: `system_version_info` is the proxy's snapshot
    version (as for the other types), the resources are the collections' serialized members."""

    version_info: str
    nonce: str
    update: LedsUpdate

    def chunks(self, chunk: int = 16 * 1024) -> Iterator[bytes]:
        """The body in pieces of about `chunk` bytes; a part of `chunk` bytes or more (a whole collection) is
        written as it is, uncopied."""
        buf = bytearray(b'{"system_version_info":' + json.dumps(self.version_info).encode() + b',"resources":[')
        for i, part in enumerate(self.update.parts):
            if i:
                buf += b","
            if len(part) >= chunk:
                yield bytes(buf)
                buf.clear()
                yield part
                continue
            buf += part
            if len(buf) >= chunk:
                yield bytes(buf)
                buf.clear()
        buf += (b'],"removed_resources":' + json.dumps(list(self.update.removed)).encode()
                + b',"type_url":"' + LB_ENDPOINT.encode() + b'","nonce":' + json.dumps(self.nonce).encode()
                + b',"control_plane":{"identifier":"pyproxy-control"}}')
        yield bytes(buf)

    def body(self) -> bytes:
        return b"".join(self.chunks())


def eds_response(response: DiscoveryResponse, view: LedsView) -> DiscoveryResponse:
    """The EDS response cut from the LEDS form of its payload (same version and nonce)."""
    return DiscoveryResponse(response.version_info, response.type_url, response.nonce, view.eds)



async def next_leds(cp, node_id: str, sub: LedsSubscription, ticket: int, wait: float) -> LedsResponse | None:
    """The LEDS response due for this proxy (`LedsSubscription.due` against the LEDS view of its snapshot's
    EDS), waiting up to `wait` seconds for a push; None (304) if nothing became due or a newer request
    superseded this one. `cp` is the control.serve.ControlPlane (cache, views, sessions, wake-ups)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while cp.leds.current(node_id, ticket):
        snapshot = cp.cache.snapshot(node_id)
        if snapshot is not None:
            view = cp.leds_views(snapshot.payloads["eds"])
            update = sub.due(view)
            if update is not None:
                nonce = cp.leds.nonce()
                sub.sent(nonce, update, view)
                cp.metrics.pushed(LEDS.short)
                return LedsResponse(snapshot.version, nonce, update)
        remaining = deadline - loop.time()
        if remaining <= 0 or cp.stopping:
            return None
        try:
            await asyncio.wait_for(cp.change_event(node_id).wait(), remaining)
        except asyncio.TimeoutError:
            pass
    return None
