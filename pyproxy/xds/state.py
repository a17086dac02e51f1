"""The proxy's side of xDS bookkeeping: what it holds per type, and what its next request says. No I/O.

Envoy's protocol: a DiscoveryRequest carries the `version_info` the proxy *holds* for the type and the
`response_nonce` of the response it is answering. Same nonce with no `error_detail` = ACK (applied);
with `error_detail` = NACK (rejected; `version_info` stays the last version applied). The first request
has neither. The control plane decides from this what to send next (control/xds/cache.py).

`XdsState` keeps, per type: the accepted resources (decoded model objects), the version held, the last
nonce seen, and a pending NACK message. `next_request(type)` builds the JSON body; `accepted`/`rejected`
record the outcome of applying a response.

Delta (incremental) xDS, `next_delta_request`: a DeltaDiscoveryRequest carries no version, but the
`response_nonce` answered (ACK, or NACK with `error_detail`) and subscription *changes*
(`resource_names_subscribe` / `_unsubscribe`) against what the control plane last heard. Until the first
response of a subscription (no nonce yet) every request is the initial form: the whole subscription, and the
per-resource versions held (`initial_resource_versions`, so a reconnect is sent only what changed); `reset`
goes back to it (a new session: the control plane restarted or forgot us). Subscription changes count as
heard once the control plane answered the request (`request_sent`); resending one is harmless (idempotent).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .vhds import VHDS, covered

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# ADS order: the control plane answers in this order; the REST paths are /v3/discovery:<path>
TYPES = (("clusters", CDS), ("endpoints", EDS), ("listeners", LDS), ("routes", RDS))
LEDS = "type.googleapis.com/envoy.config.endpoint.v3.LbEndpoint"  # delta only, /v3/delta_discovery:lb_endpoints
SHORT = {CDS: "cds", EDS: "eds", LDS: "lds", RDS: "rds", VHDS: "vhds", LEDS: "leds"}  # VHDS, LEDS: delta only


@dataclass
class TypeState:
    version: str = ""  # the version applied (held)
    nonce: str = ""  # the nonce of the last response received
    error: str | None = None  # set after a NACK, sent with the next request, then cleared
    resources: dict[str, Any] = field(default_factory=dict)  # name -> decoded model object
    responses: int = 0
    rejects: int = 0
    versions: dict[str, str] = field(default_factory=dict)  # delta: name -> per-resource version held
    subscribed: frozenset[str] = frozenset()  # delta: the subscription the control plane has heard
    requested: frozenset[str] | None = None  # delta: the subscription of the request in flight
    answered: frozenset[str] = frozenset()  # delta: the subscription the last response applied answered


class XdsState:
    def __init__(self, node: dict[str, Any], *, vhds: bool = False, leds: bool = False):
        """The four types of ADS, then VHDS and LEDS when the client uses them (delta only)."""
        self.node = node
        extra = (*((VHDS,) if vhds else ()), *((LEDS,) if leds else ()))
        self.types = {url: TypeState() for url in (*(u for _, u in TYPES), *extra)}

    def next_request(self, type_url: str, resource_names: list[str] | None = None) -> dict[str, Any]:
        st = self.types[type_url]
        body: dict[str, Any] = {"node": self.node, "type_url": type_url, "version_info": st.version,
                                "response_nonce": st.nonce, "resource_names": resource_names or []}
        if st.error is not None:
            body["error_detail"] = {"code": 3, "message": st.error}  # 3 = INVALID_ARGUMENT
        return body

    def next_delta_request(self, type_url: str, wanted: list[str] | None) -> dict[str, Any]:
        """The next DeltaDiscoveryRequest; `wanted` is the names to hold, None for wildcard (`*`)."""
        st = self.types[type_url]
        want = frozenset(["*"] if wanted is None else wanted)
        body: dict[str, Any] = {"node": self.node, "type_url": type_url}
        if not st.nonce:  # the initial form: the whole subscription and what is held
            body["resource_names_subscribe"] = sorted(want)
            body["initial_resource_versions"] = {n: v for n, v in st.versions.items()
                                                 if wanted is None or covered(n, want)}
        else:
            body["response_nonce"] = st.nonce
            if want - st.subscribed:
                body["resource_names_subscribe"] = sorted(want - st.subscribed)
            if st.subscribed - want:
                body["resource_names_unsubscribe"] = sorted(st.subscribed - want)
        if st.error is not None:
            body["error_detail"] = {"code": 3, "message": st.error}  # 3 = INVALID_ARGUMENT
        st.requested = want
        return body

    def after_delta(self, type_url: str, added: dict[str, Any], versions: dict[str, str],
                    removed: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
        """(resources, per-resource versions) the type would hold after a DeltaDiscoveryResponse: what is held,
        minus `removed_resources`, with the resources `added` (new or changed) replacing those of their name.
        Nothing changes here: the caller applies the result, then `accepted` records it."""
        st = self.types[type_url]
        gone = set(removed)
        resources = {n: r for n, r in st.resources.items() if n not in gone}
        resources.update(added)
        held = {n: v for n, v in st.versions.items() if n not in gone}
        held.update(versions)
        return resources, held

    def reset(self, type_url: str) -> None:
        """Delta: start a new session at the next request (initial form, no nonce)."""
        st = self.types[type_url]
        st.nonce, st.subscribed, st.requested = "", frozenset(), None

    def received(self, type_url: str, nonce: str) -> None:
        st = self.types[type_url]
        st.nonce = nonce
        st.responses += 1

    def accepted(self, type_url: str, version: str, resources: dict[str, Any],
                 versions: dict[str, str] | None = None) -> None:
        st = self.types[type_url]
        st.version = version
        st.resources = resources
        if versions is not None:
            st.versions = versions
            st.answered = st.subscribed
        st.error = None

    def rejected(self, type_url: str, message: str) -> None:
        st = self.types[type_url]
        st.error = message
        st.rejects += 1

    def request_sent(self, type_url: str) -> None:
        """The control plane answered the request: the NACK (if any) went out with it, do not repeat it; a
        delta subscription change was heard (names unsubscribed are no longer held)."""
        st = self.types[type_url]
        st.error = None
        if st.requested is not None:
            st.subscribed, st.requested = st.requested, None
            st.answered &= st.subscribed
            if "*" not in st.subscribed:
                gone = [n for n in st.versions if not covered(n, st.subscribed)]
                for name in gone:
                    st.versions.pop(name, None)
                if gone:
                    st.resources = {n: r for n, r in st.resources.items() if covered(n, st.subscribed)}

    def resources(self, type_url: str) -> dict[str, Any]:
        return self.types[type_url].resources

    def describe(self) -> dict[str, Any]:
        return {SHORT[url]: {"version": st.version, "nonce": st.nonce, "responses": st.responses,
                             "rejects": st.rejects} for url, st in self.types.items()}
