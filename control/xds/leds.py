"""LEDS, Envoy's Locality Endpoint Discovery Service, for pyproxy's REST delta clients. No I/O.

A ClusterLoadAssignment lists every endpoint of its cluster, so a replica of a Deployment that 100 services
select changes ~300 assignments, each re-sent whole (11 endpoints) to every proxy. With LEDS
(`envoy.config.endpoint.v3.LocalityLbEndpoints.leds_cluster_locality_config`) a locality of an assignment
names a *collection* instead of listing its endpoints, and the endpoints are resources of their own
(`envoy.config.endpoint.v3.LbEndpoint`), subscribed to per collection over delta xDS.

Collections are **shared** by the clusters that list the same endpoints: the ~300 clusters selecting one
Deployment's pods (services, ports' target, subsets) name one collection per port and locality, so a
registration changes that handful of collections (one LbEndpoint each) and no assignment. A collection is named
after what its endpoints share apart from which replicas they are (`Endpoints.families`: each endpoint without
its address, weight and health, i.e. metadata such as tlsMode and istio.workload, without and with the port),
so a replica joining or leaving keeps the name. Clusters whose endpoints differ cannot share: where two localities of the
same family and locality list different endpoints in one EDS payload (`conflicts`), each of those clusters
names a collection of its own.

Names follow Envoy's xdstp:// scheme (xDS docs, "xDS URL": `xdstp://{authority}/{resource type}/{id}`, glob
collections `.../*`, LedsClusterLocalityConfig.leds_collection_name): shared collections are
`xdstp://pyproxy-control/envoy.config.endpoint.v3.LbEndpoint/shared/<family>/<locality>/*`, a cluster's own
`.../cluster/<cluster>/<locality>/*`, their members `<collection without the *><address>:<port>`. `<locality>`
is Istio's `region/zone/sub_zone` percent-encoded (`-` for none), with `~<priority>` when the priority is not 0.

Who gets it: a node whose `client_features` lists `pyproxy.xds.leds` (`FEATURE`), on the REST delta paths.
Everyone else (state of the world, gRPC ADS, real Envoy) keeps whole assignments: the LEDS form is a *view* of
the EDS payload the snapshot holds (`LedsViews`), so the snapshots, their versions and ADS order are the same for
every client.

The subscription (`LedsSubscription`) follows control.xds.delta's rules (ACK, NACK puts back what the client
held, a lost REST response is owed again) per collection: what a client holds of a collection is compared
by identity first, so after a registration only the collections that changed are walked.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Iterator, Mapping
from urllib.parse import quote

from control.translate.common import T
from control.xds.cache import DiscoveryResponse, Payload, XdsType, canonical_json, joined, resource_version
from control.xds.delta import Indexed, PayloadIndex
from pyproxy.runtime.waits import wait_event

FEATURE = "pyproxy.xds.leds"  # node.client_features entry: "send me ClusterLoadAssignments in the LEDS form"
AUTHORITY = "pyproxy-control"
LB_ENDPOINT = T + "envoy.config.endpoint.v3.LbEndpoint"
PREFIX = f"xdstp://{AUTHORITY}/envoy.config.endpoint.v3.LbEndpoint/"
LEDS = XdsType("leds", "lb_endpoints", LB_ENDPOINT)  # REST: POST /v3/delta_discovery:lb_endpoints
# LedsClusterLocalityConfig.leds_config: the same management server and transport as the assignment's
LEDS_CONFIG = {"ads": {}, "resource_api_version": "V3"}
SHARED = "shared"  # .../shared/<family>/<locality>/*: the collection of every cluster listing these endpoints
OWN = "cluster"  # .../cluster/<cluster>/<locality>/*: a cluster whose endpoints differ from its family's


class LedsError(ValueError):
    """A LEDS request the server cannot serve (the message names the field)."""


def wants_leds(client_features: Iterable[str]) -> bool:
    return FEATURE in client_features


def collection_of(name: str) -> str:
    """The glob collection an LbEndpoint resource name belongs to: `.../<locality>/<id>` -> `.../<locality>/*`."""
    return name.rsplit("/", 1)[0] + "/*"


def check_collections(names: Iterable[str]) -> None:
    """A LEDS subscription names glob collections of this authority (LedsError otherwise)."""
    for name in names:
        if not (name.startswith(PREFIX) and name.endswith("/*")):
            raise LedsError(f"resource_names_subscribe: {name!r} is not a LEDS collection "
                            f"({PREFIX}.../*)")


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


@lru_cache(maxsize=4096)
def shared_collection(family: str, segment: str) -> str:
    """(cached: one string for the ~300 assignments naming it, which keep it between pushes)"""
    return f"{PREFIX}{SHARED}/{family}/{segment}/*"


def own_collection(cluster: str, segment: str) -> str:
    return f"{PREFIX}{OWN}/{quote(cluster, safe='|')}/{segment}/*"


def family_of(lb: Mapping, with_port: bool) -> bytes:
    """What an endpoint has in common with the other replicas of its workload: the LbEndpoint without its
    address (and port, unless `with_port`), health and weight; what is left is its metadata (tlsMode,
    istio.workload) and the rest of `endpoint`."""
    endpoint = dict(lb.get("endpoint") or {})
    address = dict(endpoint.get("address") or {})
    if isinstance(address.get("socket_address"), Mapping):
        drop = ("address",) if with_port else ("address", "port_value")
        address["socket_address"] = {k: v for k, v in address["socket_address"].items() if k not in drop}
        endpoint["address"] = address
    rest = {k: v for k, v in lb.items() if k not in ("health_status", "load_balancing_weight")}
    return canonical_json({**rest, "endpoint": endpoint, "with_port": with_port})


@dataclass(frozen=True, slots=True, eq=False)
class Endpoints:
    """The endpoints of one locality, as a collection holds them: (id, version, LbEndpoint JSON with its @type),
    ordered by id. `content` is their hash. `families` name the collection the clusters listing them share: the
    hash of the set of their `family_of`, without the port and with it. Each is the same for every cluster that
    selects the same workloads (with the same metadata), and unchanged when a replica joins or leaves; the
    first also when replicas differ by port (sidecars sharing an address, as on one host), the second tells
    apart the clusters of two ports of the same workloads."""

    content: str
    families: tuple[str, str]
    members: tuple[tuple[str, str, bytes], ...]


def endpoints_of(lbs: list) -> Endpoints:
    members: list[tuple[str, str, bytes]] = []
    seen: set[str] = set()
    for lb in lbs:
        member = endpoint_id(lb)
        if member in seen:
            member = f"{member}~{len(seen)}"
        seen.add(member)
        body = canonical_json({"@type": LB_ENDPOINT, **lb})
        members.append((member, resource_version(body), body))
    members.sort()
    content = resource_version(b"\n".join(f"{m} {v}".encode() for m, v, _b in members))
    loose, strict = (resource_version(b"\n".join(sorted({family_of(lb, p) for lb in lbs}))) for p in (False, True))
    return Endpoints(content, (loose, strict), tuple(members))


@dataclass(frozen=True, slots=True)
class Split:
    """What names the collections of a ClusterLoadAssignment: its cluster and, per locality, the locality's
    segment and endpoints. Kept between pushes (1,700 of them), so not the assignment's other fields: `converted`
    reads those from the assignment itself."""

    cluster: str
    localities: tuple[tuple[str, Endpoints], ...]  # (locality_segment, its endpoints) per LocalityLbEndpoints


def split(assignment: Mapping, interned: dict[bytes, Endpoints] | None = None) -> Split:
    """A ClusterLoadAssignment (dict) -> Split. `interned` (by the endpoints' JSON) makes the ~300 localities that
    list the same endpoints one Endpoints object, computed once."""
    interned = {} if interned is None else interned
    localities = []
    for group in assignment.get("endpoints") or []:
        lbs = group.get("lb_endpoints") or []
        key = canonical_json(lbs)
        found = interned.get(key)
        if found is None:
            found = interned[key] = endpoints_of(lbs)
        localities.append((locality_segment(group), found))
    return Split(str(assignment.get("cluster_name", "")), tuple(localities))


def conflicts(splits: Iterable[Split]) -> frozenset[tuple[str, str]]:
    """The (family, locality) pairs whose localities do not all list the same endpoints (two ports of one
    workload, without the port; a subset by a label that some replicas lack; a departure seen by one cluster and
    not another): those clusters cannot share that collection."""
    seen: dict[tuple[str, str], str] = {}
    out = set()
    for s in splits:
        for segment, endpoints in s.localities:
            for family in endpoints.families:
                key = (family, segment)
                if seen.setdefault(key, endpoints.content) != endpoints.content:
                    out.add(key)
    return frozenset(out)


def collection_names(s: Split, conflicting: frozenset[tuple[str, str]] = frozenset()) -> tuple[str, ...]:
    """The collection each locality of `s` names: shared by its first family without a conflict, else the
    cluster's own."""
    names: list[str] = []
    for segment, endpoints in s.localities:
        family = next((f for f in endpoints.families if (f, segment) not in conflicting), None)
        if family is not None:
            names.append(shared_collection(family, segment))
            continue
        name = own_collection(s.cluster, segment)
        if name in names:  # two groups of one locality and priority: keep them apart
            name = f"{name[:-2]}~{len(names)}/*"
        names.append(name)
    return tuple(names)


@dataclass(frozen=True, slots=True, eq=False)
class Collection:
    """One LEDS collection's content: member name -> (version, its `Resource {name, version, resource}` as sent),
    and `whole`, every member's Resource comma-joined (what a client holding none of it gets). Compared by
    identity: a collection whose content did not change is the same object in every view (LedsViews caches them
    by name and content)."""

    name: str  # the glob
    members: Mapping[str, tuple[str, bytes]]
    whole: bytes = b""
    content: str = ""  # Endpoints.content


def _resource(name: str, version: str, body: bytes) -> bytes:
    plain = name.isascii() and name.isprintable() and '"' not in name and "\\" not in name
    quoted = f'"{name}"' if plain else json.dumps(name)
    return b'{"name":' + quoted.encode() + b',"version":"' + version.encode() + b'","resource":' + body + b"}"


def collection(glob: str, endpoints: Endpoints) -> Collection:
    members = {f"{glob[:-1]}{m}": (v, _resource(f"{glob[:-1]}{m}", v, body)) for m, v, body in endpoints.members}
    return Collection(glob, members, b",".join(r for _v, r in members.values()), endpoints.content)


@dataclass(frozen=True, slots=True)
class Converted:
    """One ClusterLoadAssignment in the LEDS form: its bytes and version, and its collections."""

    assignment: bytes
    version: str
    collections: tuple[Collection, ...]


def converted(assignment: Mapping, names: tuple[str, ...]) -> tuple[bytes, str]:
    """The assignment with each locality's `lb_endpoints` replaced by a `leds_cluster_locality_config` naming its
    collection (`names`, one per locality): its bytes and version."""
    groups = [{**{k: v for k, v in group.items() if k != "lb_endpoints"},
               "leds_cluster_locality_config": {"leds_config": LEDS_CONFIG, "leds_collection_name": n}}
              for group, n in zip(assignment.get("endpoints") or [], names)]
    body = canonical_json({**assignment, "endpoints": groups})
    return body, resource_version(body)


def convert(assignment: Mapping) -> Converted:
    """One assignment in the LEDS form on its own (shared collections: no other cluster to conflict with)."""
    s = split(assignment)
    names = collection_names(s)
    body, version = converted(assignment, names)
    return Converted(body, version, tuple(collection(n, e) for n, (_seg, e) in zip(names, s.localities)))


@dataclass(frozen=True, slots=True)
class LedsView:
    """The LEDS form of one EDS payload: the assignments (`eds`, a Payload delta responses are cut from as
    from the snapshot's) and every collection they name."""

    eds: Payload
    index: Indexed  # of `eds`: the same object while its content is the same, across pushes (below)
    collections: Mapping[str, Collection]
    key: str  # the EDS payload's hash: what a NACK of LEDS content is remembered by
    used: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (assignment version, its collections): for retain


class LedsViews:
    """`LedsView` per EDS payload hash. What the views are built from is kept across one push: the split
    assignments (by version), the Endpoints (interned by content, so 300 localities listing the same endpoints
    are one object), the LEDS forms of the assignments and the Collection objects (by name and content). After
    a registration the ~400 changed assignments are split again and find their Endpoints' families unchanged:
    their LEDS form is the same bytes, and only the few shared collections holding the new endpoint are new
    objects, which is what makes each client's difference a walk over a handful of identities. The LEDS form
    of the EDS payload is then the same bytes too, and the view takes the last one's Payload and its `Indexed`:
    the clients that hold it (their DeltaSubscription keeps the versions map it was sent) keep sharing one map,
    instead of one per push they last got EDS at (100 proxies x 1,700 names)."""

    def __init__(self, index: PayloadIndex):
        self.index = index
        self._views: dict[str, LedsView] = {}
        self._splits: dict[str, Split] = {}
        self._interned: dict[bytes, Endpoints] = {}
        self._converted: dict[tuple[str, tuple[str, ...]], tuple[bytes, str]] = {}
        self._collections: dict[tuple[str, str], Collection] = {}
        self._eds: dict[str, tuple[Payload, Indexed]] = {}  # by the LEDS form's hash
        self._conflicts: frozenset[tuple[str, str]] = frozenset()  # the last view's

    def __call__(self, payload: Payload) -> LedsView:
        view = self._views.get(payload.hash)
        if view is None:
            view = self._views[payload.hash] = self._build(payload)
        return view

    def _build(self, payload: Payload) -> LedsView:
        indexed = self.index(payload)
        splits = []
        for name, item in indexed.items.items():
            version = indexed.versions[name]
            s = self._splits.get(version)
            if s is None:  # converted at once, named as the last view's conflicts would (checked below)
                assignment = json.loads(item)
                s = self._splits[version] = split(assignment, self._interned)
                guess = collection_names(s, self._conflicts)
                self._converted[(version, guess)] = converted(assignment, guess)
            splits.append((name, version, s))
        conflicting = self._conflicts = conflicts(s for _n, _v, s in splits)
        items, names, versions, used, collections = [], [], [], [], {}
        for name, version, s in splits:
            globs = collection_names(s, conflicting)
            conv = self._converted.get((version, globs))
            if conv is None:  # its collections' names changed with the conflicts (rare): parsed again
                conv = self._converted[(version, globs)] = converted(json.loads(indexed.items[name]), globs)
            items.append(conv[0])
            names.append(name)
            versions.append(conv[1])
            used.append((version, globs))
            for glob, (_segment, endpoints) in zip(globs, s.localities):
                if glob not in collections:
                    key = (glob, endpoints.content)
                    c = self._collections.get(key)
                    if c is None:
                        c = self._collections[key] = collection(glob, endpoints)
                    collections[glob] = c
        eds = Payload.join(items, names, versions)
        eds, index = self._eds.get(eds.hash) or (eds, self.index(eds))
        self._eds[eds.hash] = (eds, index)
        return LedsView(eds, index, collections, payload.hash, tuple(used))

    def retain(self, hashes: Iterable[str]) -> None:
        """After a push: keep the views of these EDS payloads (those some snapshot holds), and what every view
        there was until now was built from: the new payloads' views are built later, at their first request,
        and find there the assignments that did not change (with their Collection objects). What no view used
        since the last push goes."""
        used: set[tuple[str, tuple[str, ...]]] = set()
        contents: set[tuple[str, str]] = set()
        for view in self._views.values():
            used.update(view.used)
            contents.update((c.name, c.content) for c in view.collections.values())
        versions = {v for v, _g in used}
        forms = {view.eds.hash for view in self._views.values()}
        keep = set(hashes)
        self._views = {h: v for h, v in self._views.items() if h in keep}
        self._splits = {v: s for v, s in self._splits.items() if v in versions}
        self._converted = {k: c for k, c in self._converted.items() if k in used}
        self._collections = {k: c for k, c in self._collections.items() if k in contents}
        self._eds = {h: e for h, e in self._eds.items() if h in forms}
        alive = {id(e) for s in self._splits.values() for _segment, e in s.localities}
        self._interned = {k: e for k, e in self._interned.items() if id(e) in alive}


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
        """Its /debug/syncz row (the keys of the other types' rows, control/xds/cache.py): SYNCED when the last
        response was ACKed, STALE while it is unanswered or was NACKed, NOT SENT before the first one."""
        status = "NOT SENT" if not self.sent_nonce else "SYNCED" if self.acked_nonce == self.sent_nonce else "STALE"
        nacked = bool(self.nack_error) and status != "SYNCED"
        return {"status": status, "sent": {"version": "", "nonce": self.sent_nonce},
                "acked": {"version": "", "nonce": self.acked_nonce},
                "nack": {"version": "", "nonce": self.sent_nonce, "error": self.nack_error} if nacked else None,
                "nacked": nacked, "collections": len(self.collections),
                "held": sum(len(c.members) for c in self.held.values())}


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

    def chunks(self, chunk: int = 16 * 1024) -> Iterator[bytes | memoryview]:
        """The body in pieces of about `chunk` bytes; a part of `chunk` bytes or more (a whole collection) is
        written as it is, uncopied."""
        head = b'{"system_version_info":' + json.dumps(self.version_info).encode() + b',"resources":['
        tail = (b'],"removed_resources":' + json.dumps(list(self.update.removed)).encode()
                + b',"type_url":"' + LB_ENDPOINT.encode() + b'","nonce":' + json.dumps(self.nonce).encode()
                + b',"control_plane":{"identifier":"pyproxy-control"}}')
        return joined(head, self.update.parts, tail, chunk)

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
        await wait_event(cp.change_event(node_id), remaining)  # not wait_for: pyproxy/runtime/waits.py
    return None
