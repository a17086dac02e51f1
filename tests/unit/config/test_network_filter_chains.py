"""Which network filters may come before the terminal one (pyproxy.server.validate_snapshot): network RBAC,
Istio's istio.stats and sni_cluster before a tcp_proxy, in any order; nothing before an HTTP connection manager;
nothing pyproxy does not run. Envoy would run such a chain; pyproxy refuses (NACKs) what it cannot run."""
from __future__ import annotations

import pytest

from pyproxy.config.decode import decode
from pyproxy.config.model import Cluster, Listener
from pyproxy.server import ConfigRejected, validate_snapshot

T = "type.googleapis.com/"
RBAC = {"name": "envoy.filters.network.rbac", "typed_config": {
    "@type": T + "envoy.extensions.filters.network.rbac.v3.RBAC", "stat_prefix": "tcp.",
    "rules": {"action": "ALLOW", "policies": {"any": {"permissions": [{"any": True}], "principals": [{"any": True}]}}}}}
STATS = {"name": "istio.stats", "typed_config": {"@type": T + "udpa.type.v1.TypedStruct",
                                                 "type_url": T + "stats.PluginConfig", "value": {}}}
SNI = {"name": "envoy.filters.network.sni_cluster", "typed_config": {
    "@type": T + "envoy.extensions.filters.network.sni_cluster.v3.SniCluster"}}
TCP = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
    "@type": T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "t", "cluster": "c"}}
HCM = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
    "@type": T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "h", "route_config": {"name": "r", "virtual_hosts": []},
    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
        "@type": T + "envoy.extensions.filters.http.router.v3.Router"}}]}}
CLUSTER = decode(Cluster, {"name": "c", "type": "STATIC", "load_assignment": {"cluster_name": "c", "endpoints": []}})


def check(filters: list[dict]) -> None:
    listener = decode(Listener, {"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                                 "filter_chains": [{"filters": filters}]})
    validate_snapshot([listener], [CLUSTER])


@pytest.mark.parametrize("filters", [[TCP], [HCM], [RBAC, TCP], [RBAC, RBAC, STATS, TCP], [SNI, STATS, TCP],
                                     [RBAC, STATS, SNI, TCP]])
def test_chains_pyproxy_runs(filters):
    check(filters)


@pytest.mark.parametrize("filters", [[RBAC, HCM], [STATS, HCM], [SNI, SNI, TCP], [TCP, RBAC], [HCM, TCP], []])
def test_chains_pyproxy_refuses_by_name(filters):
    with pytest.raises(ConfigRejected, match="a filter chain needs exactly one network filter"):
        check(filters)
