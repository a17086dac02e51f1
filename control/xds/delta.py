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
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from control.xds.cache import CLUSTER, LISTENER, canonical_json

WILDCARD_TYPES = (CLUSTER, LISTENER)  # Envoy subscribes to these as wildcard by default


def resource_name(resource: Mapping) -> str:
    """A resource's name as xDS keys it (ClusterLoadAssignment: `cluster_name`)."""
    return str(resource.get("name") or resource.get("cluster_name") or "")


def resource_versions(resources: Iterable[Mapping]) -> dict[str, str]:
    """name -> content hash (16 hex digits) of each resource."""
    return {resource_name(r): hashlib.sha256(canonical_json(r)).hexdigest()[:16] for r in resources}


def versions_of_payload(body: bytes) -> dict[str, str]:
    return resource_versions(json.loads(body))


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

    type_url: str
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)  # name -> version the client holds
    started: bool = False
    _before: tuple[str, dict[str, str]] | None = None  # (nonce, held before that response): undone by a NACK

    def request(self, subscribe: Iterable[str], unsubscribe: Iterable[str],
                initial_versions: Mapping[str, str] | None = None) -> None:
        """A request's subscription changes (its ACK/NACK part goes to `ack` / `reject`)."""
        subscribe, unsubscribe = list(subscribe), list(unsubscribe)
        if not self.started:
            self.started = True
            self.wildcard = "*" in subscribe or (not subscribe and self.type_url in WILDCARD_TYPES)
            self.held.update(initial_versions or {})
        if "*" in subscribe:
            self.wildcard = True
        if "*" in unsubscribe:
            self.wildcard = False
        self.names.update(n for n in subscribe if n != "*")
        for name in unsubscribe:
            self.names.discard(name)
            if not self.wildcard:
                self.held.pop(name, None)  # the client forgets it; nothing is sent for it

    def wanted(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def update(self, current: Mapping[str, str]) -> DeltaUpdate:
        """What to send so the client holds `current` (name -> version) for what it subscribed to."""
        send = tuple(sorted(n for n, v in current.items() if self.wanted(n) and self.held.get(n) != v))
        removed = tuple(sorted(n for n in self.held if n not in current and self.wanted(n)))
        return DeltaUpdate(send, removed)

    def sent(self, nonce: str, update: DeltaUpdate, current: Mapping[str, str]) -> None:
        """Record a response as held (the client applies it unless it NACKs)."""
        self._before = (nonce, dict(self.held))
        for name in update.send:
            self.held[name] = current[name]
        for name in update.removed:
            self.held.pop(name, None)

    def reject(self, nonce: str) -> None:
        """The response `nonce` was NACKed: the client kept what it held before it."""
        if self._before is not None and self._before[0] == nonce:
            self.held = self._before[1]
            self._before = None
