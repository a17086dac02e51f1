"""control.xds.protos: the translator's JSON as Envoy protobuf for gRPC ADS, converted once per payload."""
from __future__ import annotations

import pytest

from control.xds.cache import CDS, LDS, DiscoveryResponse, Payload
from control.xds.protos import AnyCache, ConversionError, for_upstream_envoy, register_types, to_any
from envoy.config.cluster.v3 import cluster_pb2

register_types()  # what control.xds.grpc_ads does on import: without it this file passed only after another one

CLUSTER = {"@type": CDS.type_url, "name": "outbound|9080||reviews.default.svc.cluster.local", "type": "EDS",
           "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
           "connect_timeout": "10s"}
STATS = {"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
                                                 "type_url": "type.googleapis.com/stats.PluginConfig", "value": {}}}
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def listener(http_filters: list[dict]) -> dict:
    return {"@type": LDS.type_url, "name": "0.0.0.0_15001",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15001}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": HCM, "stat_prefix": "out", "http_filters": http_filters,
                "route_config": {"name": "r"}}}]}]}


def test_a_cluster_converts_to_an_any_of_its_type_with_its_fields():
    any_ = to_any(CDS.type_url, CLUSTER)
    assert any_.type_url == CDS.type_url
    cluster = cluster_pb2.Cluster()
    assert any_.Unpack(cluster)
    assert cluster.name == CLUSTER["name"] and cluster.connect_timeout.seconds == 10
    assert cluster.eds_cluster_config.eds_config.HasField("ads")


def test_an_unregistered_typed_config_names_the_type_and_the_resource():
    bad = listener([{"name": "x", "typed_config": {"@type": "type.googleapis.com/no.such.v3.Filter"}}, ROUTER])
    with pytest.raises(ConversionError) as err:
        to_any(LDS.type_url, bad)
    assert "no.such.v3.Filter" in str(err.value) and "0.0.0.0_15001" in str(err.value)


def test_an_unknown_field_is_a_one_line_error_naming_the_resource():
    with pytest.raises(ConversionError, match="Cluster 'outbound.*no_such_field"):
        to_any(CDS.type_url, {**CLUSTER, "no_such_field": 1})


def test_istio_stats_filter_is_dropped_for_upstream_envoy_and_nothing_else():
    out = for_upstream_envoy(LDS.type_url, listener([STATS, ROUTER]))
    names = [h["name"] for h in out["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]]
    assert names == ["envoy.filters.http.router"]
    plain = listener([ROUTER])
    assert for_upstream_envoy(LDS.type_url, plain) is plain
    assert to_any(LDS.type_url, listener([STATS, ROUTER])).type_url == LDS.type_url


def test_a_payload_is_converted_once_whatever_the_number_of_responses():
    cache = AnyCache(size=2)
    payload = Payload.of([CLUSTER])
    first = cache.response(DiscoveryResponse("v1", CDS.type_url, "n-1", payload))
    second = cache.response(DiscoveryResponse("v1", CDS.type_url, "n-2", payload))
    assert cache.conversions == 1
    assert (first.nonce, second.nonce, second.version_info) == ("n-1", "n-2", "v1")
    assert list(first.resources) == list(second.resources) and len(first.resources) == 1
    for i in range(3):  # bounded: the oldest entries leave
        cache.resources(CDS.type_url, Payload.of([{**CLUSTER, "name": f"c{i}"}]))
    cache.resources(CDS.type_url, payload)
    assert cache.conversions == 5


def test_an_envoy_node_without_istio_version_shows_envoys_build_version():
    from control.xds.node import parse_node
    from control.xds.protos import node_json
    from envoy.config.core.v3 import base_pb2

    msg = base_pb2.Node(id="sidecar~127.0.0.1~p.default~default.svc.cluster.local", user_agent_name="envoy")
    msg.user_agent_build_version.version.major_number, msg.user_agent_build_version.version.minor_number = 1, 40
    msg.metadata.update({"INBOUND_PORT": 15206.0, "LABELS": {"app": "p"}})  # Struct numbers arrive as floats
    node = parse_node(node_json(msg))
    assert node.version == "envoy-1.40.0" and node.inbound_port == 15206 and dict(node.labels) == {"app": "p"}
    msg.metadata.update({"ISTIO_VERSION": "1.24.0"})
    assert parse_node(node_json(msg)).version == "1.24.0"


def test_envoy_filter_output_converts_for_an_envoy_sidecar():
    """What the EnvoyFilter golden (Istio's local rate limit example: a TypedStruct in the chain and per route,
    a LocalRateLimit on the outbound chain) gives an Envoy sidecar over gRPC: every type is registered."""
    import json
    from pathlib import Path

    from envoy.config.listener.v3 import listener_pb2
    golden = json.loads((Path(__file__).resolve().parents[2] / "golden" / "local-ratelimit" / "expected.json")
                        .read_text())
    for resource in golden["listeners"]:
        out = listener_pb2.Listener()
        assert to_any(LDS.type_url, resource).Unpack(out)
    assert "local_ratelimit" in json.dumps(golden["listeners"])
