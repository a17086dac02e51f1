"""VHDS, Envoy's Virtual Host Discovery Service, on the control plane: a route configuration's virtual hosts as
resources of their own, over delta xDS. No I/O.

Envoy (configuration/http/http_conn_man/vhds; `RouteConfiguration.vhds`): a RouteConfiguration whose `vhds`
names a config source receives its virtual hosts from there, as `envoy.config.route.v3.VirtualHost` resources
named `<route configuration name>/<host entry>` (matched right to left: a host has no `/`, a route
configuration name may), over delta xDS only. The management server may send a "base configuration" of virtual
hosts unsolicited, and answers on-demand subscriptions of single names; an update of the route configuration
itself does not carry them.

Here, for a proxy that asks for it (`pyproxy.vhds` in its node's `client_features`, control.xds.node, as Envoy
announces what it supports; pyproxy does in delta mode), its snapshot's RDS holds each route configuration
without its virtual hosts and with `vhds` (`split`), and a fifth payload, VHDS, holds every virtual host of those
route configurations, named `<route configuration>/<its first domain>` (domains are unique within a route
configuration, so names are). A virtual host is serialized once per push (control.xds.generate), so an edit of
one VirtualService changes the version of the virtual hosts holding its routes and of nothing else, and delta
sends those alone: a few KB per proxy instead of the whole route configuration (~2 MB for 1,000 services).
The virtual host inside the resource is byte for byte the one the whole RouteConfiguration carries (its own
`name` is Istio's `<host>:<port>`), so a client's assembled route configuration equals the whole one.

Subscriptions: `<route configuration>/*` stands for every virtual host of that route configuration (xDS's glob
collections, xdstp `.../*`), which is what pyproxy subscribes to per route configuration whose RDS says `vhds`;
single names are accepted too (on-demand), but a name the control plane does not know is not answered (Envoy
wants an empty resource with `aliases` back: on-demand VHDS is not built). A virtual host whose only domain is
`*` is named `<route configuration>/*` too, and a glob subscription includes it.

State of the world and gRPC (real Envoy) never see any of this: only the node's feature turns it on, and
neither the state-of-the-world paths (control.xds.server) nor the gRPC shell (control.xds.grpc_ads) honour it.
"""
from __future__ import annotations

from typing import ClassVar, Iterable, Mapping

from control.translate.common import ADS
from control.xds.cache import VHDS, Payload, canonical_json, resource_version
from control.xds.delta import DeltaSubscription
SOURCE = {"config_source": dict(ADS)}  # RouteConfiguration.vhds: from the same control plane (Vhds.config_source)
_TYPE_FIELD = b'{"@type":"' + VHDS.type_url.encode() + b'"'


def resource_name(route_config: str, virtual_host: Mapping) -> str:
    """`<route configuration name>/<host entry>`: the virtual host's first domain (its name if it has none,
    which validation refuses anyway)."""
    domains = virtual_host.get("domains") or ()
    return f"{route_config}/{domains[0] if domains else virtual_host.get('name', '')}"


def names_of(route_config: Mapping) -> tuple[str, ...]:
    """The VHDS resource names of a rendered RouteConfiguration's virtual hosts, in its order."""
    return tuple(resource_name(route_config["name"], vh) for vh in route_config.get("virtual_hosts", ()))


def route_config_of(name: str) -> str:
    """The route configuration a VHDS resource name belongs to (right to left: hosts have no `/`)."""
    return name.rsplit("/", 1)[0]


def glob(route_config: str) -> str:
    """The subscription to every virtual host of `route_config`."""
    return f"{route_config}/*"


def as_resource(part: bytes) -> bytes:
    """A virtual host's canonical JSON as a VirtualHost `Any`: `@type` sorts before every field, so this is
    canonical_json of the virtual host with its `@type`, without serializing it again."""
    return _TYPE_FIELD + (b"," + part[1:] if part != b"{}" else b"}")


class ResourceMemo:
    """Each virtual host's VHDS resource (`as_resource`) and its `resource_version`, by the identity of the virtual
    host's serialized bytes: the shapes of a push share most virtual hosts (control.xds.generate serializes a
    shared one once), so their VHDS payloads share the resource bytes too (one copy, not one per shape: 2.4 MB
    each for 1,000 services), and a push keeps the bytes of every virtual host it did not rebuild (generate's
    fragments), so those are not hashed again. `retain` after a push drops the entries of bytes no longer used."""

    def __init__(self) -> None:
        self._resources: dict[int, tuple[bytes, bytes, str]] = {}
        self._used: set[int] = set()

    def __call__(self, part: bytes) -> tuple[bytes, str]:
        """(resource, version) of the virtual host serialized as `part`."""
        key = id(part)
        self._used.add(key)
        hit = self._resources.get(key)
        if hit is None or hit[0] is not part:
            resource = as_resource(part)
            hit = self._resources[key] = (part, resource, resource_version(resource))
        return hit[1], hit[2]

    def __len__(self) -> int:
        return len(self._resources)

    def retain(self) -> None:
        """Keep only what was asked for since the last `retain`."""
        self._resources = {k: v for k, v in self._resources.items() if k in self._used}
        self._used = set()


def split(route_pieces: Iterable[tuple[dict, tuple[bytes, ...], tuple[str, ...]]],
          resources: ResourceMemo | None = None) -> tuple[Payload, Payload]:
    """(RDS, VHDS) of a shape's route configurations, each piece (its fields but virtual_hosts, its virtual
    hosts serialized, their VHDS names): RDS with `vhds` instead of virtual hosts, VHDS every virtual host."""
    rds_items, rds_names, items, names, hashes = [], [], [], [], []
    memo = resources if resources is not None else ResourceMemo()
    for rest, parts, vh_names in route_pieces:
        rds_items.append(canonical_json({**rest, "virtual_hosts": [], "vhds": SOURCE}))
        rds_names.append(rest["name"])
        for part, name in zip(parts, vh_names):
            resource, version = memo(part)
            items.append(resource)
            names.append(name)
            hashes.append(version)
    return Payload.join(rds_items, rds_names), Payload.join(items, names, hashes)


class VhdsSubscription(DeltaSubscription):
    """A delta subscription to virtual hosts: a name is wanted when subscribed itself or through its route
    configuration's glob (`<route configuration>/*`). A subscription change is answered even when nothing is
    to be sent (a route configuration without virtual hosts), so the client knows its virtual hosts are all
    there (pyproxy warms a listener until then, as Envoy's VHDS init target does)."""

    __slots__ = ()
    answers_changes: ClassVar[bool] = True

    def wanted(self, name: str) -> bool:
        return self.wildcard or name in self.names or glob(route_config_of(name)) in self.names

    def request(self, subscribe: Iterable[str], unsubscribe: Iterable[str],
                initial_versions: Mapping[str, str] | None = None) -> None:
        """As DeltaSubscription's; a glob unsubscribed also forgets the virtual hosts it covered (the client
        drops them), unless they are still subscribed by name."""
        unsubscribe = list(unsubscribe)
        super().request(subscribe, unsubscribe, initial_versions)
        gone = {n for n in unsubscribe if n.endswith("/*")}
        if gone and not self.wildcard:
            for name in [n for n in self.held if glob(route_config_of(n)) in gone and not self.wanted(n)]:
                self._own().pop(name, None)

    def covers(self, names: Mapping[str, str]) -> bool:
        globs = _globs(names)
        return globs is not None and self.names.issuperset(globs)


_GLOBS: dict[int, tuple[Mapping, frozenset[str] | None]] = {}  # id(version map) -> (the map, its globs)


def _globs(names: Mapping[str, str]) -> frozenset[str] | None:
    """The globs covering the names of `names`, a PayloadIndex version map (never changed once made, shared by
    every client of a payload, which is all `DeltaSubscription.covers` is asked about): computed once per map.
    None if some name is not of a route configuration."""
    hit = _GLOBS.get(id(names))
    if hit is not None and hit[0] is names:
        return hit[1]
    found = None if any("/" not in n for n in names) else frozenset(glob(route_config_of(n)) for n in names)
    if len(_GLOBS) >= 64:
        _GLOBS.clear()
    _GLOBS[id(names)] = (names, found)
    return found
