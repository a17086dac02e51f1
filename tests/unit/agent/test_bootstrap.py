"""pyproxy.agent.bootstrap: a real Envoy sidecar's bootstrap, as istio-agent writes it, parses with Envoy's
protos and carries a node the control plane registers the workload from."""
from __future__ import annotations

import pytest

from control.xds.node import parse_node
from pyproxy.agent.bootstrap import Workload, envoy_bootstrap
from tests.envoy_protos import parse_envoy

W = Workload("productpage-v1", labels={"app": "productpage", "version": "v1"}, ports=(("http", 9080),),
             service_account="bookinfo-productpage", inbound_port=15206, outbound_port=15201, admin_port=15200)


def test_the_bootstrap_is_a_valid_envoy_bootstrap_with_ads_over_grpc():
    b = envoy_bootstrap(W, "127.0.0.1", 15011)
    msg = parse_envoy("envoy.config.bootstrap.v3.Bootstrap", b)
    ads = msg.dynamic_resources.ads_config
    assert ads.api_type == ads.GRPC and ads.grpc_services[0].envoy_grpc.cluster_name == "xds-grpc"
    assert msg.dynamic_resources.cds_config.HasField("ads") and msg.dynamic_resources.lds_config.HasField("ads")
    (xds,) = msg.static_resources.clusters
    assert xds.name == "xds-grpc" and "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in \
        xds.typed_extension_protocol_options
    assert msg.admin.address.socket_address.address == "127.0.0.1"
    assert msg.admin.address.socket_address.port_value == 15200


def test_the_node_registers_the_workload_with_its_ports_labels_and_service_account():
    node = parse_node(envoy_bootstrap(W, "127.0.0.1", 15011)["node"])
    assert node.id == "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local"
    assert (node.inbound_port, node.outbound_port, node.admin_port) == (15206, 15201, 15200)
    assert dict(node.labels) == {"app": "productpage", "version": "v1"}
    assert node.service_account == "bookinfo-productpage" and node.bind_address == "127.0.0.1"
    assert [(p.name, p.port) for p in node.pod_ports] == [("http", 9080)]
    assert node.cluster == "productpage.default"


def test_a_control_plane_named_by_host_is_resolved_and_a_bad_port_refused():
    b = envoy_bootstrap(W, "istiod.istio-system.svc", 15010)
    assert b["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"
    with pytest.raises(ValueError, match="out of range"):
        envoy_bootstrap(W, "127.0.0.1", 0)


def test_agent_arguments_become_the_bootstrap_and_bad_addresses_are_named():
    import argparse

    from pyproxy.agent.run import add_arguments, bootstrap_from_args, parse_address

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--control-grpc", "10.0.0.5:15011", "--name", "reviews-v2", "--labels",
                         "app=reviews,version=v2", "--app-port", "9080", "--outbound-port", "15301"])
    b = bootstrap_from_args(args)
    node = parse_node(b["node"])
    assert dict(node.labels) == {"app": "reviews", "version": "v2"} and node.outbound_port == 15301
    sa = b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert sa["endpoint"]["address"]["socket_address"] == {"address": "10.0.0.5", "port_value": 15011}
    assert parse_address("[::1]:15011") == ("::1", 15011)
    with pytest.raises(ValueError, match="--control-grpc: want HOST:PORT"):
        parse_address("istiod")


def test_ads_over_tls_verifies_the_control_plane_and_sends_the_token_as_bearer_metadata():
    from pyproxy.agent.bootstrap import XdsTls

    b = envoy_bootstrap(W, "127.0.0.1", 15012, XdsTls("/etc/mesh/root-cert.pem", "tok\n"))
    msg = parse_envoy("envoy.config.bootstrap.v3.Bootstrap", b)
    (meta,) = msg.dynamic_resources.ads_config.grpc_services[0].initial_metadata
    assert (meta.key, meta.value) == ("authorization", "Bearer tok")
    socket = msg.static_resources.clusters[0].transport_socket
    assert socket.name == "envoy.transport_sockets.tls"
    tls = b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {"filename": "/etc/mesh/root-cert.pem"}
    with pytest.raises(ValueError, match="needs a service-account token"):
        envoy_bootstrap(W, "127.0.0.1", 15012, XdsTls("/r.pem", " "))


def test_the_node_is_pyproxys_in_istio_agents_encoding_and_the_control_plane_reads_it_back():
    from control.xds.node import parse_node
    from pyproxy.agent.bootstrap import Workload, node

    w = Workload(name="reviews-v1", labels={"app": "reviews", "version": "v1"}, ports=(("http", 9080),),
                 inbound_port=16006, outbound_port=16001, admin_port=16000, service_account="bookinfo-reviews")
    n = node(w)
    meta = n["metadata"]
    assert (meta["INBOUND_PORT"], meta["OUTBOUND_PORT"], meta["ADMIN_PORT"]) == ("16006", "16001", "16000")
    assert meta["POD_PORTS"] == '[{"name": "http", "containerPort": 9080, "protocol": "TCP"}]'
    assert "ISTIO_VERSION" not in meta and "user_agent_name" not in n  # Envoy reports its own build
    assert n["id"] == "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local"
    parsed = parse_node(n)
    assert (parsed.name, parsed.service_account, parsed.inbound_port, parsed.bind_address, parsed.cluster) == (
        "reviews-v1", "bookinfo-reviews", 16006, "127.0.0.1", "reviews.default")
    assert [(p.name, p.port) for p in parsed.pod_ports] == [("http", 9080)]
    assert node(Workload(name="x", version="1.2"))["metadata"]["ISTIO_VERSION"] == "1.2"


def test_sds_cluster_is_a_pipe_and_health_and_stats_listeners_route_as_istios_bootstrap():
    from pyproxy.agent.bootstrap import Ports

    b = envoy_bootstrap(W, "127.0.0.1", 15011, sds_socket="./var/run/secrets/workload-spiffe-uds/socket",
                        ports=Ports(status=15020, health=15021, stats=15090))
    msg = parse_envoy("envoy.config.bootstrap.v3.Bootstrap", b)
    clusters = {c.name: c for c in msg.static_resources.clusters}
    sds = clusters["sds-grpc"]
    assert sds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe.path == \
        "./var/run/secrets/workload-spiffe-uds/socket"
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in sds.typed_extension_protocol_options
    admin = clusters["prometheus_stats"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert admin.socket_address.port_value == 15200  # Envoy's own admin
    agent = clusters["agent"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert agent.socket_address.port_value == 15020
    routes = {}
    for listener in b["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
        routes[listener["address"]["socket_address"]["port_value"]] = (route["match"]["prefix"],
                                                                      route["route"]["cluster"])
    assert routes == {15090: ("/stats/prometheus", "prometheus_stats"), 15021: ("/healthz/ready", "agent")}
    # the control plane's TLS contexts name this cluster for their SDS secrets
    from control.translate.authn import SDS_CLUSTER
    assert SDS_CLUSTER == "sds-grpc"


def test_no_sds_and_no_side_ports_by_default_and_bad_ports_named():
    from pyproxy.agent.bootstrap import Ports

    b = envoy_bootstrap(W, "127.0.0.1", 15011)
    assert [c["name"] for c in b["static_resources"]["clusters"]] == ["xds-grpc"]
    assert "listeners" not in b["static_resources"]
    with pytest.raises(ValueError, match="stats port 70000 out of range"):
        envoy_bootstrap(W, "127.0.0.1", 15011, ports=Ports(stats=70000))
    with pytest.raises(ValueError, match="routes to the agent's status port"):
        envoy_bootstrap(W, "127.0.0.1", 15011, ports=Ports(health=15021))


def test_ca_address_turns_on_sds_and_labels_the_node_for_auto_mtls(tmp_path):
    import argparse

    from pyproxy.agent.run import add_arguments, bootstrap_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    token = tmp_path / "token"
    token.write_text("tok\n")
    base = ["--name", "reviews-v2", "--labels", "app=reviews", "--ca-root", str(tmp_path / "root.pem"),
            "--token-file", str(token)]
    b = bootstrap_from_args(p.parse_args([*base, "--ca-address", "https://127.0.0.1:15012"]))
    assert "sds-grpc" in [c["name"] for c in b["static_resources"]["clusters"]]
    assert parse_node(b["node"]).labels["security.istio.io/tlsMode"] == "istio"
    plain = bootstrap_from_args(p.parse_args(base))
    assert "sds-grpc" not in [c["name"] for c in plain["static_resources"]["clusters"]]
    assert "security.istio.io/tlsMode" not in parse_node(plain["node"]).labels
    with pytest.raises(ValueError, match="--ca-address: want https://"):
        bootstrap_from_args(p.parse_args([*base, "--ca-address", "http://127.0.0.1:15012"]))
    with pytest.raises(ValueError, match="--secret-grace-ratio 1.5: want a fraction between 0 and 1"):
        bootstrap_from_args(p.parse_args([*base, "--secret-grace-ratio", "1.5"]))
    with pytest.raises(ValueError, match="--ca-address needs --ca-root and --token-file"):
        bootstrap_from_args(p.parse_args(["--name", "x", "--ca-address", "https://127.0.0.1:15012"]))
