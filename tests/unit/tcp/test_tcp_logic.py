"""The TCP proxy's decisions (pyproxy.tcp.logic), table-tested: cluster choice, connect attempts, and what a
FIN or a close on one side does to the pair (Envoy's half-close)."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from pyproxy.config.decode import ConfigError, decode
from pyproxy.config.model import TcpProxy
from pyproxy.tcp.logic import Action, ClusterPicker, ConnectAttempts, HalfClose, Side, State

T = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
D, U = Side.DOWNSTREAM, Side.UPSTREAM


def _cfg(**kw) -> TcpProxy:
    return decode(TcpProxy, {"@type": T, "stat_prefix": "s", **kw})


def test_a_single_cluster_is_always_picked():
    assert {ClusterPicker(_cfg(cluster="db")).pick(random.Random(i)) for i in range(20)} == {"db"}


def test_weighted_clusters_are_drawn_in_proportion_to_weight():
    picker = ClusterPicker(_cfg(weighted_clusters={"clusters": [{"name": "v1", "weight": 1},
                                                                {"name": "v2", "weight": 3}]}))
    rng = random.Random(1)
    counts = Counter(picker.pick(rng) for _ in range(4000))
    assert set(counts) == {"v1", "v2"}
    assert 900 <= counts["v1"] <= 1100  # 1/4 of 4000, within a deterministic seed's spread


@pytest.mark.parametrize("raw, error", [
    ({}, "one of cluster, weighted_clusters must be set"),
    ({"cluster": "a", "weighted_clusters": {"clusters": [{"name": "b", "weight": 1}]}}, "exactly one of"),
    ({"cluster": "a", "max_connect_attempts": 0}, "max_connect_attempts must be at least 1"),
    ({"weighted_clusters": {"clusters": [{"name": "b", "weight": 0}]}}, "every weight must be at least 1"),
    ({"cluster": "a", "tunneling_config": {}}, "unknown or unsupported field 'tunneling_config'"),
])
def test_invalid_tcp_proxy_configs_are_refused_by_field(raw, error):
    with pytest.raises(ConfigError) as err:
        _cfg(**raw)
    assert error in str(err.value)


@pytest.mark.parametrize("raw, idle", [({}, 3600.0), ({"idle_timeout": "0s"}, 0.0), ({"idle_timeout": "2.5s"}, 2.5)])
def test_idle_timeout_defaults_to_one_hour_and_zero_disables_it(raw, idle):
    assert _cfg(cluster="a", **raw).effective_idle_timeout == idle


@pytest.mark.parametrize("limit, failures_allowed", [(None, 1), (1, 1), (3, 3)])
def test_connect_attempts_stop_at_max_connect_attempts(limit, failures_allowed):
    attempts = ConnectAttempts(limit)
    made = 0
    while True:
        attempts.start()
        made += 1
        if attempts.exhausted:
            break
    assert made == failures_allowed


# (events in order, the actions of the last event, the final state)
HALF_CLOSE = [
    ([("fin", D)], (Action.FIN_UPSTREAM,), State.DOWNSTREAM_FIN),
    ([("fin", U)], (Action.FIN_DOWNSTREAM,), State.UPSTREAM_FIN),
    ([("fin", D), ("fin", U)], (Action.FIN_DOWNSTREAM, Action.CLOSE), State.CLOSED),
    ([("fin", U), ("fin", D)], (Action.FIN_UPSTREAM, Action.CLOSE), State.CLOSED),
    ([("fin", D), ("fin", D)], (), State.DOWNSTREAM_FIN),
    ([("closed", U)], (Action.CLOSE,), State.CLOSED),
    ([("fin", D), ("closed", D)], (Action.CLOSE,), State.CLOSED),
    ([("closed", D), ("closed", U)], (), State.CLOSED),
    ([("closed", D), ("fin", U)], (), State.CLOSED),
]


@pytest.mark.parametrize("events, last_actions, final", HALF_CLOSE)
def test_half_close_walks_envoys_states(events, last_actions, final):
    hc = HalfClose()
    actions = ()
    for kind, side in events:
        actions = hc.fin(side) if kind == "fin" else hc.closed(side)
    assert (actions, hc.state) == (last_actions, final)
