"""VHDS on the proxy: a route configuration whose RDS says `vhds` gets its virtual hosts as resources of their
own (Envoy's Virtual Host Discovery Service, `envoy.config.route.v3.VirtualHost` over delta xDS). No I/O.

Envoy (configuration/http/http_conn_man/vhds): virtual host resources are named `<route configuration
name>/<host entry>`, read right to left (a host has no `/`); each received one is added to (or replaces one
in) the route configuration it names, `removed_resources` leave it, and the route configuration is updated as
a whole. Until VHDS has answered for a route configuration, Envoy keeps the listener warming (its VHDS init
target); so does pyproxy.

pyproxy (pyproxy.xds.client, delta mode, on by default) announces it with `FEATURE` in `node.client_features`
and subscribes, per route configuration whose RDS has `vhds`, to `<route configuration>/*` (xDS's glob
collections; control/xds/vhds.py serves it). The assembled route configuration is what the proxy applies and
what `/config_dump` shows: the RDS resource with its own virtual hosts followed by those received, in resource
name order (Envoy's virtual host selection does not depend on the order: domains are unique).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from ..config.decode import ConfigError, decode_any

VHDS = "type.googleapis.com/envoy.config.route.v3.VirtualHost"
FEATURE = "pyproxy.vhds"  # node.client_features entry (control/xds/node.py VHDS_FEATURE)


def route_config_of(name: str) -> str:
    """The route configuration a VHDS resource name belongs to (`8080/reviews:9080` -> `8080`)."""
    return name.rsplit("/", 1)[0]


def glob(route_config: str) -> str:
    """The subscription to every virtual host of `route_config`."""
    return f"{route_config}/*"


def covered(name: str, subscription: Iterable[str] | frozenset[str]) -> bool:
    """`name` is in a subscription by its own name, or by the glob collection it is in: a VHDS name
    (`8080/reviews:9080`) by its route configuration's `8080/*`, a LEDS name (`xdstp://.../<address>`) by its
    collection `xdstp://.../*` (pyproxy/xds/leds.py). Both read the name right to left up to its last `/`."""
    subs = subscription if isinstance(subscription, (set, frozenset)) else set(subscription)
    return name in subs or ("/" in name and glob(route_config_of(name)) in subs)


def wanted(route_configs: Mapping[str, Any]) -> list[str]:
    """The VHDS subscription for the RDS route configurations held: a glob per one that says `vhds`."""
    return sorted(glob(name) for name, rc in route_configs.items() if getattr(rc, "vhds", None) is not None)


def decode_virtual_hosts(resources: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """A VHDS DeltaDiscoveryResponse's `resources` -> ({resource name: VirtualHost}, {name: version}). Keyed by
    the Resource's name, not the virtual host's own (Istio names it `<host>:<port>`, and several route
    configurations hold one called `allow_any`). ConfigError names the resource and field: a name that is not
    `<route configuration>/<one of its domains>`, a duplicate, a virtual host that does not decode. A Resource
    without a body (VHDS's answer to an on-demand name the server does not know) holds nothing."""
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        raise ConfigError("resources", "expected a list of Resource objects {name, version, resource}")
    decoded: dict[str, Any] = {}
    versions: dict[str, str] = {}
    for i, r in enumerate(resources):
        name = r.get("name")
        if not isinstance(name, str) or "/" not in name or not route_config_of(name) or name.endswith("/"):
            raise ConfigError(f"resources[{i}].name", f"{name!r} is not <route configuration>/<host>")
        if name in decoded:
            raise ConfigError(f"resources[{i}].name", f"duplicate resource name {name!r}")
        raw = r.get("resource")
        if raw is None:
            continue
        if not isinstance(raw, dict) or raw.get("@type") != VHDS:
            got = raw.get("@type") if isinstance(raw, dict) else type(raw).__name__
            raise ConfigError(f"resources[{i}].resource.@type", f"{got!r} in a VHDS response (want {VHDS})")
        vh = decode_any(raw, f"resources[{i}] (VirtualHost {name!r})")
        host = name.rsplit("/", 1)[1]
        if host.lower() not in (d.lower() for d in vh.domains):
            raise ConfigError(f"resources[{i}].name", f"{name!r}: {host!r} is not one of the virtual host's "
                                                      f"domains {list(vh.domains)}")
        decoded[name] = vh
        versions[name] = str(r.get("version", ""))
    return decoded, versions


class Assembler:
    """RouteConfigurations with their VHDS virtual hosts put in (`__call__`). The result for a route
    configuration whose RDS resource and virtual hosts are the same objects as last time is the same object
    as last time, so the proxy keeps its compiled route table (ProxyServer reuses one by identity) when another
    type changes."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[Any, tuple[Any, ...], Any]] = {}  # name -> (rds resource, vhosts, result)

    def __call__(self, route_configs: Mapping[str, Any], virtual_hosts: Mapping[str, Any],
                 answered: Iterable[str]) -> dict[str, Any]:
        """The route configurations to apply. One without `vhds` is as RDS sent it. One with `vhds` gets the
        virtual hosts of its name (RDS's own first, then VHDS's by resource name); it is left out (its listener
        warms) until VHDS has answered a subscription to its glob (`answered`: the subscription the last VHDS
        response applied was an answer to). Virtual hosts of a route configuration not held wait for it."""
        answered = frozenset(answered)
        by_rc: dict[str, list[tuple[str, Any]]] = {}
        for name, vh in virtual_hosts.items():
            by_rc.setdefault(route_config_of(name), []).append((name, vh))
        out, last = {}, {}
        for name, rc in route_configs.items():
            if getattr(rc, "vhds", None) is None:
                out[name] = rc
                continue
            if glob(name) not in answered:
                continue
            hosts = tuple(vh for _n, vh in sorted(by_rc.get(name, ()), key=lambda item: item[0]))
            hit = self._last.get(name)
            if hit is not None and hit[0] is rc and len(hit[1]) == len(hosts) and \
                    all(a is b for a, b in zip(hit[1], hosts)):
                result = hit[2]
            else:
                result = dataclasses.replace(rc, virtual_hosts=rc.virtual_hosts + hosts)
            out[name] = result
            last[name] = (rc, hosts, result)
        self._last = last
        return out
