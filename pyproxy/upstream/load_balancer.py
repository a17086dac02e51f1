"""Load balancers: which host of a cluster gets the next request (Envoy: `lb_policy`).

Hosts that are ejected (outlier detection) or unhealthy are skipped, unless fewer than
`healthy_panic_threshold` percent (default 50) are healthy: then Envoy "panics" and balances across all
hosts. `choose()` returns None only when the cluster has no host at all (the router answers 503 UH).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Container, Sequence

from .host import Host


@dataclass(frozen=True, slots=True)
class LbContext:
    hash_key: int | None = None
    excluded: Container[Host] = ()


def compute_hash(hash_policies: Sequence[Any], headers: Any, source_ip: str) -> int | None:
    """Route `hash_policy`: first policy that yields a value (a `terminal` one stops the walk)."""
    import zlib

    h: int | None = None
    for p in hash_policies:
        value = None
        if p.header is not None:
            value = headers.get(p.header.header_name.lower())
        elif p.connection_properties is not None and p.connection_properties.source_ip:
            value = source_ip
        if value is not None:
            v = zlib.crc32(value.encode())
            h = v if h is None else ((h << 1) ^ v) & 0xFFFFFFFF
            if p.terminal:
                break
    return h


class LoadBalancer:
    def __init__(self, cluster: Any, hosts: Sequence[Host], rng: random.Random):
        self.hosts = list(hosts)
        self.rng = rng
        threshold = cluster.common_lb_config.healthy_panic_threshold if cluster.common_lb_config else None
        self.panic_threshold = 50.0 if threshold is None else threshold.value
        self._rr = 0

    def candidates(self, ctx: LbContext) -> list[Host]:
        hosts = self.hosts
        healthy = [h for h in hosts if h.healthy]
        if hosts and len(healthy) * 100.0 / len(hosts) < self.panic_threshold:
            healthy = hosts  # panic mode
        if ctx.excluded:
            rest = [h for h in healthy if h not in ctx.excluded]
            if rest:
                healthy = rest
        return healthy

    def choose(self, ctx: LbContext) -> Host | None:
        hosts = self.candidates(ctx)
        if not hosts:
            return None
        self._rr += 1
        return hosts[self._rr % len(hosts)]


def build_load_balancer(cluster: Any, hosts: Sequence[Host], rng: random.Random) -> LoadBalancer:
    return LoadBalancer(cluster, hosts, rng)
