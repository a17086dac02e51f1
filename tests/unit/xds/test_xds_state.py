"""The proxy's side of xDS, without sockets: what each DiscoveryRequest says (first request, ACK, NACK) and
how a response's resources are decoded (errors name the resource)."""
from __future__ import annotations

import pytest

from pyproxy.config.decode import ConfigError
from pyproxy.xds.client import decode_resources, rds_name
from pyproxy.xds.state import CDS, EDS, LDS, XdsState

NODE = {"id": "sidecar~127.0.0.1~a.default~default.svc.cluster.local"}
CLUSTER = {"@type": CDS, "name": "c1", "type": "STATIC"}


def test_first_request_holds_nothing():
    st = XdsState(NODE)
    body = st.next_request(CDS)
    assert body["node"] is NODE and body["type_url"] == CDS
    assert (body["version_info"], body["response_nonce"]) == ("", "")
    assert "error_detail" not in body


def test_ack_echoes_the_applied_version_and_the_nonce():
    st = XdsState(NODE)
    st.received(CDS, "n1")
    st.accepted(CDS, "v1", {"c1": object()})
    body = st.next_request(CDS)
    assert (body["version_info"], body["response_nonce"]) == ("v1", "n1")
    assert "error_detail" not in body


def test_nack_keeps_the_last_good_version_and_sends_the_error_once():
    st = XdsState(NODE)
    st.received(CDS, "n1")
    st.accepted(CDS, "v1", {})
    st.received(CDS, "n2")
    st.rejected(CDS, "resources[0]: bad")
    body = st.next_request(CDS)
    assert (body["version_info"], body["response_nonce"]) == ("v1", "n2")
    assert body["error_detail"]["message"] == "resources[0]: bad"
    st.request_sent(CDS)
    assert "error_detail" not in st.next_request(CDS)
    assert st.describe()["cds"]["rejects"] == 1


def test_decode_resources_by_name():
    out = decode_resources(CDS, [CLUSTER, {**CLUSTER, "name": "c2"}])
    assert sorted(out) == ["c1", "c2"]


@pytest.mark.parametrize("resources, path", [
    ([{**CLUSTER, "foo": 1}], "resources[0] (Cluster 'c1').foo"),
    ([CLUSTER, CLUSTER], "resources[1]"),                            # duplicate name
    ([{"@type": LDS, "name": "l"}], "resources[0].@type"),          # wrong type in a CDS response
])
def test_decode_errors_name_the_resource(resources, path):
    with pytest.raises(ConfigError) as e:
        decode_resources(CDS, resources)
    assert e.value.path == path


def test_rds_name_of_listeners():
    from pyproxy.config.decode import decode
    from pyproxy.config.model import Listener

    def listener(hcm_extra):
        return decode(Listener, {"name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 1}},
                                 "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
                                     "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                              "http_connection_manager.v3.HttpConnectionManager",
                                     "stat_prefix": "s", **hcm_extra}}]}]})

    assert rds_name(listener({"rds": {"route_config_name": "9080"}})) == "9080"
    assert rds_name(listener({"route_config": {}})) is None


# --- delta (incremental) requests: pyproxy.xds.state.next_delta_request -------------------------------------

def test_delta_requests_start_with_the_whole_subscription_then_send_only_changes():
    state = XdsState({"id": "n"})
    first = state.next_delta_request(EDS, ["a", "b"])
    assert first["resource_names_subscribe"] == ["a", "b"] and first["initial_resource_versions"] == {}
    assert "response_nonce" not in first
    state.request_sent(EDS)
    state.received(EDS, "n1")
    state.accepted(EDS, "v1", {"a": 1, "b": 2}, {"a": "va", "b": "vb"})
    ack = state.next_delta_request(EDS, ["a", "b"])
    assert ack == {"node": {"id": "n"}, "type_url": EDS, "response_nonce": "n1"}
    change = state.next_delta_request(EDS, ["b", "c"])
    assert change["resource_names_subscribe"] == ["c"] and change["resource_names_unsubscribe"] == ["a"]
    state.request_sent(EDS)  # heard: "a" is no longer held
    assert state.resources(EDS) == {"b": 2} and state.types[EDS].versions == {"b": "vb"}


def test_a_delta_nack_rides_on_the_next_request_and_a_reset_declares_what_is_held():
    state = XdsState({"id": "n"})
    state.next_delta_request(CDS, None)
    state.request_sent(CDS)
    state.received(CDS, "n1")
    state.accepted(CDS, "v1", {"a": 1}, {"a": "va"})
    state.received(CDS, "n2")
    state.rejected(CDS, "cluster b: bad")
    nack = state.next_delta_request(CDS, None)
    assert nack["response_nonce"] == "n2" and nack["error_detail"]["message"] == "cluster b: bad"
    state.request_sent(CDS)
    state.reset(CDS)  # the control plane restarted: a new session
    again = state.next_delta_request(CDS, None)
    assert again["resource_names_subscribe"] == ["*"] and again["initial_resource_versions"] == {"a": "va"}
    assert "response_nonce" not in again and "error_detail" not in again


def test_a_delta_response_replaces_what_changed_and_drops_what_was_removed_without_touching_the_held_set():
    state = XdsState({"id": "n"})
    state.accepted(EDS, "v1", {"a": 1, "b": 2, "c": 3}, {"a": "va", "b": "vb", "c": "vc"})
    resources, versions = state.after_delta(EDS, {"b": 20, "d": 4}, {"b": "vb2", "d": "vd"}, ["c"])
    assert resources == {"a": 1, "b": 20, "d": 4} and versions == {"a": "va", "b": "vb2", "d": "vd"}
    assert state.resources(EDS) == {"a": 1, "b": 2, "c": 3}  # until applied (a NACK keeps it)
