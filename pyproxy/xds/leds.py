"""LEDS on the proxy side: ClusterLoadAssignments whose localities name endpoint collections, assembled with the
LbEndpoint resources of those collections. No I/O; pyproxy.xds.client runs the subscription.

Envoy's LEDS (`LocalityLbEndpoints.leds_cluster_locality_config`): a locality carries, instead of its
`lb_endpoints`, a `leds_collection_name`, an xdstp:// glob (`xdstp://<authority>/envoy.config.endpoint.v3.
LbEndpoint/<path>/*`); the client subscribes to it over delta xDS and receives each endpoint as a
resource of its own (`.../<path>/<id>`), so an endpoint joining a service is one small resource
instead of every assignment listing it (control/xds/leds.py is the server's side). pyproxy asks for it with the
node's `client_features` entry `pyproxy.xds.leds` (`FEATURE`); a control plane that does not know it sends
whole assignments, which go through here unchanged.

The assignment applied is rebuilt whole from the assignment and the endpoints held (`assemble`), so the runtime
still receives complete, immutable ClusterLoadAssignments (and /config_dump, /clusters show the endpoints).
Envoy warms a cluster until its LEDS collections have arrived; here an assignment naming a collection the
control plane has not answered yet keeps its last assembled form (`complete`), and a new one starts with what
has arrived.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..config.decode import ConfigError, decode, decode_any
from ..config.model import ClusterLoadAssignment, LbEndpoint

FEATURE = "pyproxy.xds.leds"
LB_ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.LbEndpoint"
CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
PATH = "lb_endpoints"  # POST /v3/delta_discovery:lb_endpoints


def collection_of(name: str) -> str:
    """`xdstp://a/T/<path>/<id>` -> its glob collection `xdstp://a/T/<path>/*`."""
    return name.rsplit("/", 1)[0] + "/*"


def is_collection(name: str) -> bool:
    return name.startswith("xdstp://") and name.endswith("/*")


@dataclass(frozen=True, slots=True)
class LedsAssignment:
    """A ClusterLoadAssignment as received: `assignment` with the LEDS localities' lb_endpoints empty, and per
    locality its collection (None: its endpoints are inline)."""

    assignment: ClusterLoadAssignment
    collections: tuple[str | None, ...]

    @property
    def cluster_name(self) -> str:
        return self.assignment.cluster_name


def split_assignment(raw: Any, path: str) -> LedsAssignment:
    """A ClusterLoadAssignment JSON -> LedsAssignment; ConfigError names the field."""
    if not isinstance(raw, Mapping):
        raise ConfigError(path, "expected a ClusterLoadAssignment object")
    groups = raw.get("endpoints") or []
    if not isinstance(groups, list):
        raise ConfigError(f"{path}.endpoints", "expected a list")
    plain, named = [], []
    for i, group in enumerate(groups):
        if not isinstance(group, Mapping) or "leds_cluster_locality_config" not in group:
            plain.append(group)
            named.append(None)
            continue
        where = f"{path}.endpoints[{i}].leds_cluster_locality_config"
        config = group["leds_cluster_locality_config"]
        name = config.get("leds_collection_name") if isinstance(config, Mapping) else None
        if not isinstance(name, str) or not is_collection(name):
            raise ConfigError(f"{where}.leds_collection_name", f"want an xdstp:// glob collection "
                                                               f"(.../*), got {name!r}")
        if group.get("lb_endpoints"):
            raise ConfigError(f"{path}.endpoints[{i}]", "lb_endpoints and leds_cluster_locality_config are one of")
        plain.append({k: v for k, v in group.items() if k != "leds_cluster_locality_config"})
        named.append(name)
    cla = decode_any({**raw, "endpoints": plain}, path)
    if not isinstance(cla, ClusterLoadAssignment):
        raise ConfigError(f"{path}.@type", f"want {CLA}")
    return LedsAssignment(cla, tuple(named))


def _resources(resources: Any) -> list[Mapping]:
    if not isinstance(resources, list) or not all(isinstance(r, Mapping) for r in resources):
        raise ConfigError("resources", "expected a list of Resource objects {name, version, resource}")
    return resources


def decode_assignments(resources: Any) -> tuple[dict[str, LedsAssignment], dict[str, str]]:
    """A delta EDS response's `resources` -> ({name: LedsAssignment}, {name: version})."""
    out, versions = {}, {}
    for i, r in enumerate(_resources(resources)):
        raw = r.get("resource")
        if isinstance(raw, Mapping) and raw.get("@type") != CLA:
            raise ConfigError(f"resources[{i}].@type", f"{raw.get('@type')!r} in an EDS response (want {CLA})")
        label = raw.get("cluster_name") if isinstance(raw, Mapping) else None
        a = split_assignment(raw, f"resources[{i}] (ClusterLoadAssignment {label!r})")
        if r.get("name") != a.cluster_name:
            raise ConfigError(f"resources[{i}].name", f"{r.get('name')!r} is not the name of its resource")
        if a.cluster_name in out:
            raise ConfigError(f"resources[{i}]", f"duplicate resource name {a.cluster_name!r}")
        out[a.cluster_name] = a
        versions[a.cluster_name] = str(r.get("version", ""))
    return out, versions


def decode_lb_endpoints(resources: Any) -> tuple[dict[str, LbEndpoint], dict[str, str]]:
    """A LEDS response's `resources` -> ({name: LbEndpoint}, {name: version}); a bad one is a ConfigError
    naming it (the response is NACKed whole, as any delta response)."""
    out, versions = {}, {}
    for i, r in enumerate(_resources(resources)):
        name = r.get("name")
        if not isinstance(name, str) or not name.startswith("xdstp://") or "/" not in name[8:]:
            raise ConfigError(f"resources[{i}].name", f"want an xdstp:// LbEndpoint name, got {name!r}")
        raw = r.get("resource")
        if not isinstance(raw, Mapping) or raw.get("@type") != LB_ENDPOINT:
            got = raw.get("@type") if isinstance(raw, Mapping) else raw
            raise ConfigError(f"resources[{i}].resource.@type", f"{got!r} in a LEDS response (want {LB_ENDPOINT})")
        out[name] = decode(LbEndpoint, {k: v for k, v in raw.items() if k != "@type"},
                           f"resources[{i}] (LbEndpoint {name!r})")
        versions[name] = str(r.get("version", ""))
    return out, versions


def collections(assignments: Iterable[Any]) -> frozenset[str]:
    """Every collection the assignments name (what the LEDS subscription must hold)."""
    return frozenset(c for a in assignments if isinstance(a, LedsAssignment) for c in a.collections if c)


def assemble(assignments: Mapping[str, Any], endpoints: Mapping[str, LbEndpoint], complete: Iterable[str],
             previous: Mapping[str, ClusterLoadAssignment]) -> dict[str, ClusterLoadAssignment]:
    """The ClusterLoadAssignments to apply: each LEDS locality filled with its collection's endpoints (ordered by
    name). An assignment naming a collection not `complete` yet (the control plane has not answered its
    subscription) keeps its `previous` assembled form if it has one. Whole assignments pass through."""
    done = frozenset(complete)
    members: dict[str, list[LbEndpoint]] = {}
    for name in sorted(endpoints):
        members.setdefault(collection_of(name), []).append(endpoints[name])
    out: dict[str, ClusterLoadAssignment] = {}
    for name, a in assignments.items():
        if not isinstance(a, LedsAssignment):
            out[name] = a
            continue
        wanted = [c for c in a.collections if c]
        if not wanted:
            out[name] = a.assignment
        elif name in previous and not done.issuperset(wanted):
            out[name] = previous[name]
        else:
            groups = tuple(g if c is None else dataclasses.replace(g, lb_endpoints=tuple(members.get(c, ())))
                           for g, c in zip(a.assignment.endpoints, a.collections))
            out[name] = dataclasses.replace(a.assignment, endpoints=groups)
    return out
