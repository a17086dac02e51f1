"""Load balancers: which host of a cluster gets the next request (Envoy `lb_policy`).

Where it sits: after the router picked a cluster, `ClusterRuntime.choose_host(LbContext)` asks the cluster's
balancer; None means no host at all (503, flag UH). Built with the host list whenever membership changes;
health/ejection changes are noticed on the next `choose()` (the candidate list is recomputed and compared, so
per-request work is one pass over the hosts; schedules and rings are rebuilt only when it changed).

Envoy semantics (arch_overview/upstream/load_balancing/{load_balancers,panic_threshold}.rst, cluster.proto):

* Candidates: healthy hosts (EDS-healthy and not outlier-ejected). If fewer than
  `common_lb_config.healthy_panic_threshold` percent (default 50 %; Istio sets it from minHealthPercent) are
  healthy, Envoy *panics* and balances over all hosts; a threshold of 0 never panics (then no healthy host ⇒
  None ⇒ 503 UH).
* ROUND_ROBIN: plain rotation when all weights are equal; otherwise Envoy's earliest-deadline-first schedule
  (each pick of a host of weight w moves its deadline by 1/w), which interleaves hosts in weight proportion.
* LEAST_REQUEST: equal weights ⇒ "power of `choice_count` choices" (default 2): draw that many hosts at random
  (with replacement) and take the one with the fewest active requests (the first on a tie). Unequal weights ⇒
  EDF with effective weight `weight / (active_requests + 1) ^ active_request_bias` (bias default 1.0).
* RANDOM: a uniformly random candidate (weights ignored, as in Envoy).
* RING_HASH: each host gets hash points in proportion to its weight, at least `minimum_ring_size` (1024) points in
  all, at most `maximum_ring_size` (8M); a request goes to the first point clockwise of its hash. Envoy hashes with
  xxHash64; pyproxy uses the first 8 bytes of BLAKE2b (hashlib) for points and keys, so ring positions differ
  from Envoy's but the properties (stability, ~1/N movement) are the same. Ring hash and Maglev (below) hash a
  host by its `ip:port`, never by its EDS `hostname` (Envoy does only with `consistent_hashing_lb_config.
  use_hostname_for_hashing`, which pyproxy does not support): endpoints sharing a DNS name would share every point.
* MAGLEV: Maglev lookup table (`table_size` 65537, must be prime) filled from per-host permutations
  (offset, skip) in weight proportion; hash mod table size picks the entry.
* Hash policies (route `hash_policy`): `compute_hash()` over header, cookie, source IP and query parameter, with
  Envoy's combination (rotate-left-1 then XOR; a `terminal` policy that produced a hash stops the walk). No key ⇒
  a random one (Envoy does the same).
* Retries with `previous_hosts`: `LbContext.excluded` hosts are re-picked up to `host_selection_retries` times
  (Envoy `host_selection_retry_max_attempts`, default 1), after which the last pick is taken.
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import math
import random
from typing import Any, Container, Mapping, Sequence

from pyproxy.config.decode import ConfigError
from pyproxy.routing.table import parse_query

from .host import Host, health_epoch

__all__ = ["LbContext", "LoadBalancer", "build_load_balancer", "compute_hash", "hash_key"]

DEFAULT_PANIC_THRESHOLD = 50.0
DEFAULT_MIN_RING_SIZE = 1024
DEFAULT_MAX_RING_SIZE = 8 * 1024 * 1024
DEFAULT_MAGLEV_TABLE_SIZE = 65537
_MASK64 = (1 << 64) - 1


class LbContext:
    """Per-pick facts: the request's hash (consistent-hash policies) and hosts a retry should avoid. Read-only;
    a plain class rather than a frozen dataclass because one is built per pick (see routing.retry.Outcome)."""

    __slots__ = ("hash_key", "excluded", "host_selection_retries")

    def __init__(self, hash_key: int | None = None, excluded: Container[Host] = (), host_selection_retries: int = 1):
        self.hash_key = hash_key
        self.excluded = excluded
        self.host_selection_retries = host_selection_retries

    def __repr__(self) -> str:
        return (f"LbContext(hash_key={self.hash_key!r}, excluded={self.excluded!r}, "
                f"host_selection_retries={self.host_selection_retries!r})")


# ---------------------------------------------------------------- hashing


def hash_key(text: str) -> int:
    """A stable 64-bit hash of a string (BLAKE2b, first 8 bytes, big-endian)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")


def _cookie(headers: Any, name: str) -> str | None:
    for line in headers.get_all("cookie"):
        for part in line.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
    return None


def compute_hash(hash_policies: Sequence[Any], headers: Any, source_ip: str | None, *, path: str = "") -> int | None:
    """Envoy `HashPolicyImpl::generateHash` for a route's `hash_policy` list; None when no policy applied.

    Header: all values of the header, sorted (so order does not matter). Cookie: its value (a missing cookie
    yields nothing; Envoy would generate one when `ttl` is set: TODO). Source IP: the downstream address.
    Query parameter: the first value (needs `path`)."""
    result: int | None = None
    for p in hash_policies:
        value: str | None = None
        if p.header is not None:
            values = headers.get_all(p.header.header_name.lower())
            if values:
                value = "\x00".join(sorted(values))
        elif p.cookie is not None:
            value = _cookie(headers, p.cookie.name)
        elif p.connection_properties is not None:
            if p.connection_properties.source_ip and source_ip:
                value = source_ip
        else:  # query_parameter: HashPolicy requires exactly one of the four
            value = parse_query(path).get(p.query_parameter.name)
        if value is not None:
            new = hash_key(value)
            old = (((result << 1) | (result >> 63)) & _MASK64) if result is not None else 0
            result = old ^ new
        if p.terminal and result is not None:
            break
    return result


# ---------------------------------------------------------------- the balancers


class LoadBalancer:
    """Common part: candidate selection (health, panic), exclusion re-picks. Subclasses pick from a list."""

    policy = "ROUND_ROBIN"

    def __init__(self, cluster: Any, hosts: Sequence[Host], rng: random.Random):
        self.hosts = list(hosts)
        self.rng = rng
        common = getattr(cluster, "common_lb_config", None)
        threshold = common.healthy_panic_threshold if common is not None else None
        self.panic_threshold = DEFAULT_PANIC_THRESHOLD if threshold is None else min(100.0, threshold.value)
        self._pool: list[Host] = []
        self._epoch = -1  # host.health_epoch() when _pool was computed (-1: never)
        self.panic = False

    def candidates(self) -> list[Host]:
        """Healthy hosts, or all of them in panic mode (healthy share below the threshold)."""
        hosts = self.hosts
        healthy = [h for h in hosts if h.healthy]
        if hosts and len(healthy) * 100.0 / len(hosts) < self.panic_threshold:
            self.panic = True
            return hosts
        self.panic = False
        return healthy

    def _current(self) -> list[Host]:
        epoch = health_epoch()
        if epoch == self._epoch:
            return self._pool  # no host's health moved since the last pick
        self._epoch = epoch
        pool = self.candidates()
        if pool != self._pool:  # element identity: Host has no __eq__
            self._pool = pool
            if pool:  # no ring/table/schedule over no hosts: choose() answers None (503 UH) before using one
                self._rebuild(pool)
        return pool

    def _rebuild(self, pool: list[Host]) -> None:
        """The candidate set changed: rebuild schedules / rings."""

    def _pick(self, pool: list[Host]) -> Host:
        raise NotImplementedError

    def choose(self, ctx: LbContext = LbContext()) -> Host | None:
        pool = self._current()
        if not pool:
            return None
        host = self._pick(pool)
        for _ in range(ctx.host_selection_retries):
            if host not in ctx.excluded:
                break
            host = self._pick(pool)
        return host

    def __repr__(self) -> str:
        healthy = sum(1 for h in self.hosts if h.healthy)
        return f"<{type(self).__name__} hosts={len(self.hosts)} healthy={healthy} panic={self.panic}>"


class _Edf:
    """Earliest-deadline-first schedule (Envoy `EdfScheduler`): weight w ⇒ picked every 1/w time units."""

    __slots__ = ("heap", "now", "seq")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Host]] = []
        self.now = 0.0
        self.seq = 0

    def add(self, host: Host, weight: float) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (self.now + 1.0 / weight, self.seq, host))

    def pick(self) -> Host:
        deadline, _, host = heapq.heappop(self.heap)
        self.now = deadline
        return host


def _setting(cluster: Any, section: str, field: str, default: int) -> int:
    """`cluster.<section>.<field>`, or `default` when the section or the field is unset (or 0)."""
    cfg = getattr(cluster, section, None)
    return (getattr(cfg, field) if cfg is not None else None) or default


class _EdfLoadBalancer(LoadBalancer):
    """Picks from an EDF schedule when the pool's weights differ; `_edf is None` means all weights are equal."""

    _edf: _Edf | None = None

    def _edf_weight(self, h: Host) -> float:
        return h.weight

    def _rebuild(self, pool: list[Host]) -> None:
        self._edf = None
        if len({h.weight for h in pool}) > 1:
            edf = _Edf()
            for h in pool:
                edf.add(h, self._edf_weight(h))
            self._edf = edf


class RoundRobinLoadBalancer(_EdfLoadBalancer):
    policy = "ROUND_ROBIN"

    def __init__(self, cluster: Any, hosts: Sequence[Host], rng: random.Random):
        super().__init__(cluster, hosts, rng)
        self._rr = rng.randrange(1 << 30)  # Envoy seeds the index randomly so workers do not move in lockstep

    def _pick(self, pool: list[Host]) -> Host:
        edf = self._edf
        if edf is None:
            self._rr += 1
            return pool[self._rr % len(pool)]
        host = edf.pick()
        edf.add(host, host.weight)
        return host


class LeastRequestLoadBalancer(_EdfLoadBalancer):
    policy = "LEAST_REQUEST"

    def __init__(self, cluster: Any, hosts: Sequence[Host], rng: random.Random):
        super().__init__(cluster, hosts, rng)
        self.choice_count = _setting(cluster, "least_request_lb_config", "choice_count", 2)
        cfg = getattr(cluster, "least_request_lb_config", None)
        bias = 1.0
        if cfg is not None and isinstance(cfg.active_request_bias, Mapping):
            raw = cfg.active_request_bias.get("default_value")
            bias = float(raw) if isinstance(raw, (int, float)) else 1.0
        self.active_request_bias = bias

    def _edf_weight(self, h: Host) -> float:
        bias = self.active_request_bias
        if bias == 0.0:
            return float(h.weight)
        return h.weight / math.pow(h.active_requests + 1, bias)

    def _pick(self, pool: list[Host]) -> Host:
        edf = self._edf
        if edf is not None:
            host = edf.pick()
            edf.add(host, self._edf_weight(host))  # re-scheduled with its load at this moment
            return host
        rng = self.rng
        n = len(pool)
        best = pool[rng.randrange(n)]
        for _ in range(self.choice_count - 1):
            other = pool[rng.randrange(n)]
            if other.active_requests < best.active_requests:
                best = other
        return best


class RandomLoadBalancer(LoadBalancer):
    policy = "RANDOM"

    def _pick(self, pool: list[Host]) -> Host:
        return pool[self.rng.randrange(len(pool))]


class _HashingLoadBalancer(LoadBalancer):
    def _key(self, ctx: LbContext) -> int:
        return ctx.hash_key if ctx.hash_key is not None else self.rng.getrandbits(64)

    def choose(self, ctx: LbContext = LbContext()) -> Host | None:
        pool = self._current()
        if not pool:
            return None
        key = self._key(ctx)
        host = self._lookup(key)
        excluded = ctx.excluded
        if excluded and host in excluded:
            # Envoy re-picks with a fresh draw; for a fixed key that is another point of the ring/table
            for attempt in range(1, ctx.host_selection_retries + 1):
                host = self._lookup((key + attempt * 0x9E3779B97F4A7C15) & _MASK64)
                if host not in excluded:
                    break
        return host

    def _lookup(self, key: int) -> Host:
        raise NotImplementedError


class RingHashLoadBalancer(_HashingLoadBalancer):
    policy = "RING_HASH"

    def __init__(self, cluster: Any, hosts: Sequence[Host], rng: random.Random):
        super().__init__(cluster, hosts, rng)
        self.min_ring_size = _setting(cluster, "ring_hash_lb_config", "minimum_ring_size", DEFAULT_MIN_RING_SIZE)
        self.max_ring_size = _setting(cluster, "ring_hash_lb_config", "maximum_ring_size", DEFAULT_MAX_RING_SIZE)
        if self.min_ring_size > self.max_ring_size:
            raise ConfigError("ring_hash_lb_config.minimum_ring_size",
                              f"minimum_ring_size {self.min_ring_size} exceeds maximum_ring_size {self.max_ring_size}")
        self._points: list[int] = []
        self._owners: list[Host] = []

    def _rebuild(self, pool: list[Host]) -> None:
        """Envoy `RingHashLoadBalancer::Ring`: scale so the lightest host gets whole points, then walk the hosts
        adding points while running sums lag the targets (`address_N` hashed for the N-th point)."""
        total = sum(h.weight for h in pool)
        normalized = [(h, h.weight / total) for h in pool]
        min_w = min(w for _, w in normalized)
        scale = min(math.ceil(min_w * self.min_ring_size) / min_w, float(self.max_ring_size))
        ring: list[tuple[int, int, Host]] = []
        current = 0.0
        target = 0.0
        for order, (h, w) in enumerate(normalized):
            name = h.address_string  # not the hostname: see the module docstring
            target += scale * w
            i = 0
            while current < target:
                ring.append((hash_key(f"{name}_{i}"), order, h))
                i += 1
                current += 1
        ring.sort(key=lambda e: (e[0], e[1]))
        self._points = [p for p, _, _ in ring]
        self._owners = [h for _, _, h in ring]

    @property
    def ring_size(self) -> int:
        self._current()
        return len(self._points)

    def _lookup(self, key: int) -> Host:
        i = bisect.bisect_left(self._points, key)
        return self._owners[i if i < len(self._owners) else 0]


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, int(n**0.5) + 1, 2))


class MaglevLoadBalancer(_HashingLoadBalancer):
    policy = "MAGLEV"

    def __init__(self, cluster: Any, hosts: Sequence[Host], rng: random.Random):
        super().__init__(cluster, hosts, rng)
        size = _setting(cluster, "maglev_lb_config", "table_size", DEFAULT_MAGLEV_TABLE_SIZE)
        if not _is_prime(size) or size >= 5_000_011:
            raise ConfigError("maglev_lb_config.table_size", f"table_size {size} must be a prime number below 5000011")
        self.table_size = size
        self._table: list[Host] = []

    def _rebuild(self, pool: list[Host]) -> None:
        """Maglev (Eisenbud et al. 2016) with Envoy's weighting: in each round a host claims its next preferred
        free slot only while its claimed share lags its weight share."""
        m = self.table_size
        table: list[Host | None] = [None] * m
        max_w = max(h.weight for h in pool)
        entries: list[list[Any]] = []
        for h in pool:
            name = h.address_string  # not the hostname: see the module docstring
            offset = hash_key(name) % m
            skip = hash_key(name + "#skip") % (m - 1) + 1
            entries.append([h, offset, skip, 0, h.weight / max_w, 0.0])  # host, offset, skip, next, weight, target
        filled = 0
        iteration = 1
        while filled < m:
            for e in entries:
                if e[4] * iteration < e[5]:
                    continue
                e[5] += 1.0
                slot = (e[1] + e[3] * e[2]) % m
                while table[slot] is not None:
                    e[3] += 1
                    slot = (e[1] + e[3] * e[2]) % m
                table[slot] = e[0]
                e[3] += 1
                filled += 1
                if filled == m:
                    break
            iteration += 1
        self._table = table  # type: ignore[assignment]

    def _lookup(self, key: int) -> Host:
        return self._table[key % self.table_size]


_BALANCERS: dict[str, type[LoadBalancer]] = {
    "ROUND_ROBIN": RoundRobinLoadBalancer,
    "LEAST_REQUEST": LeastRequestLoadBalancer,
    "RANDOM": RandomLoadBalancer,
    "RING_HASH": RingHashLoadBalancer,
    "MAGLEV": MaglevLoadBalancer,
    "CLUSTER_PROVIDED": RoundRobinLoadBalancer,  # ORIGINAL_DST: the engine connects to the original destination
}


def build_load_balancer(cluster: Any, hosts: Sequence[Host], rng: random.Random) -> LoadBalancer:
    """The balancer for `cluster.lb_policy` (Envoy default ROUND_ROBIN) over `hosts`."""
    policy = getattr(cluster, "lb_policy", None) or "ROUND_ROBIN"
    cls = _BALANCERS.get(policy)
    if cls is None:
        raise ConfigError("lb_policy", f"unsupported lb_policy {policy!r}")
    return cls(cluster, hosts, rng)
