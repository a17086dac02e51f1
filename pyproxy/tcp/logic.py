"""The TCP proxy's decisions, without I/O (Envoy: `source/common/tcp_proxy/tcp_proxy.cc`).

* `ClusterPicker`: `TcpProxy.cluster`, or one of `TcpProxy.weighted_clusters` drawn per connection in
  proportion to its weight (Envoy: `Config::getRegularRouteFromEntries` / `WeightedClusterEntry`).
* `ConnectAttempts`: `TcpProxy.max_connect_attempts` (default 1). A failed connect (refused, timed out, TLS
  handshake or SAN check failed) is retried on a newly chosen host while attempts remain; when they are gone the
  downstream connection is closed with flags UF,URX and `tcp.<stat_prefix>.upstream_cx_connect_attempts_exceeded`
  (Envoy 1.40 sets URX even when the limit is 1: checked with the oracle).
* `HalfClose`: what a FIN or a close on one side does to the other. Envoy enables half-close on both
  connections of a tcp_proxy: a FIN from one side is passed on as a FIN (the other direction keeps flowing); the
  pair is closed once both sides have sent theirs, or as soon as either side closes or resets.
"""
from __future__ import annotations

import bisect
import enum
import itertools
import random
from typing import Any


class ClusterPicker:
    """Which cluster a new connection goes to."""

    __slots__ = ("names", "_cumulative", "_total")

    def __init__(self, config: Any):
        if config.cluster is not None:
            self.names: tuple[str, ...] = (config.cluster,)
            weights: tuple[int, ...] = (1,)
        else:
            entries = config.weighted_clusters.clusters
            self.names = tuple(w.name for w in entries)
            weights = tuple(w.weight for w in entries)
        self._cumulative = tuple(itertools.accumulate(weights))
        self._total = self._cumulative[-1] if self._cumulative else 0

    def pick(self, rng: random.Random) -> str | None:
        if len(self.names) == 1:
            return self.names[0]
        if not self._total:
            return None
        return self.names[bisect.bisect_right(self._cumulative, rng.randrange(self._total))]

    def __repr__(self) -> str:
        return f"ClusterPicker({dict(zip(self.names, self._cumulative))})"


class ConnectAttempts:
    """Connect attempts for one downstream connection."""

    __slots__ = ("limit", "made")

    def __init__(self, max_connect_attempts: int | None):
        self.limit = max_connect_attempts or 1
        self.made = 0

    def start(self) -> None:
        self.made += 1

    @property
    def exhausted(self) -> bool:
        return self.made >= self.limit

    def __repr__(self) -> str:
        return f"ConnectAttempts({self.made}/{self.limit})"


class Side(enum.Enum):
    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"


class State(enum.Enum):
    OPEN = "open"  # bytes flow both ways
    DOWNSTREAM_FIN = "downstream_fin"  # the client sent FIN (passed on upstream); upstream -> client still flows
    UPSTREAM_FIN = "upstream_fin"  # the server sent FIN (passed on downstream); client -> upstream still flows
    CLOSED = "closed"


class Action(enum.Enum):
    FIN_UPSTREAM = "fin_upstream"  # shut down the write side of the upstream connection (after its buffer)
    FIN_DOWNSTREAM = "fin_downstream"
    CLOSE = "close"  # close both connections (each after flushing what it holds)


class HalfClose:
    """The pair's close state; `fin(side)` and `closed(side)` return the actions to carry out, in order."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = State.OPEN

    def fin(self, side: Side) -> tuple[Action, ...]:
        """`side` sent FIN (end of its byte stream)."""
        s = self.state
        pass_on = Action.FIN_UPSTREAM if side is Side.DOWNSTREAM else Action.FIN_DOWNSTREAM
        if s is State.OPEN:
            self.state = State.DOWNSTREAM_FIN if side is Side.DOWNSTREAM else State.UPSTREAM_FIN
            return (pass_on,)
        if (s is State.DOWNSTREAM_FIN and side is Side.UPSTREAM) or (s is State.UPSTREAM_FIN and side is Side.DOWNSTREAM):
            self.state = State.CLOSED
            return (pass_on, Action.CLOSE)
        return ()  # a second FIN from the same side, or after close

    def closed(self, side: Side) -> tuple[Action, ...]:
        """`side`'s connection is gone (closed, reset, or it could not keep a half-open connection)."""
        if self.state is State.CLOSED:
            return ()
        self.state = State.CLOSED
        return (Action.CLOSE,)

    def __repr__(self) -> str:
        return f"HalfClose({self.state.value})"
