"""The benchmark's configs: pyproxy's bootstrap is a real Envoy v3 Bootstrap; nginx configs are valid nginx."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml
from google.protobuf import json_format

from benchmarks import configs


def test_the_pyproxy_bootstrap_parses_as_an_envoy_v3_bootstrap():
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers the Any type)
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2

    bootstrap = configs.pyproxy_bootstrap(listen_port=10000, admin_port=9901, backend_port=8080)
    # Through YAML and back, as the file pyproxy (or Envoy) would read.
    message = json_format.ParseDict(yaml.safe_load(yaml.safe_dump(bootstrap)), bootstrap_pb2.Bootstrap())

    assert message.admin.address.socket_address.port_value == 9901
    (listener,) = message.static_resources.listeners
    assert listener.address.socket_address.address == "127.0.0.1"
    assert listener.address.socket_address.port_value == 10000
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert not hcm.access_log
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]
    (vhost,) = hcm.route_config.virtual_hosts
    assert list(vhost.domains) == ["*"]
    assert (vhost.routes[0].match.prefix, vhost.routes[0].route.cluster) == ("/", "backend")
    (cluster,) = message.static_resources.clusters
    assert cluster.name == "backend" and cluster.connect_timeout.seconds == 1
    endpoint = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (endpoint.address, endpoint.port_value) == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    "arg, rendered",
    [
        ("1", "1"),
        ("/tmp/x.pid", "/tmp/x.pid"),
        ("", '""'),
        ("hello world\n", '"hello world\\n"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a;b", '"a;b"'),
        ("$host", '"$host"'),
        ("back\\slash", '"back\\\\slash"'),
    ],
)
def test_nginx_arguments_are_quoted_only_when_needed(arg, rendered):
    assert configs.quote_nginx(arg) == rendered


def test_nginx_blocks_nest_and_end_each_directive_with_a_semicolon():
    tree = [configs.directive("events", block=[configs.directive("worker_connections", 10)]),
            configs.directive("daemon", "off")]  # fmt: skip
    assert configs.render_nginx(tree) == "events {\n    worker_connections 10;\n}\ndaemon off;"


def test_the_nginx_proxy_pools_keepalive_connections_to_the_backend():
    text = configs.render_nginx(configs.nginx_proxy_config(workdir="/w", port=8000, backend_port=8001))
    for line in ("worker_processes 1;", "access_log off;", "server 127.0.0.1:8001;", "keepalive 64;",
                 "proxy_http_version 1.1;", 'proxy_set_header Connection "";', "proxy_pass http://backend;",
                 "listen 127.0.0.1:8000;"):  # fmt: skip
        assert line in text


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (benchmarks/run.py installs it)")
@pytest.mark.parametrize("role", ["origin", "proxy"])
def test_nginx_accepts_both_configs(tmp_path, role):
    nginx = NGINX
    if role == "origin":
        tree = configs.nginx_origin_config(workdir=str(tmp_path), port=1)
    else:
        tree = configs.nginx_proxy_config(workdir=str(tmp_path), port=1, backend_port=2)
    conf = tmp_path / f"{role}.conf"
    conf.write_text(configs.render_nginx(tree) + "\n")
    done = subprocess.run([nginx, "-t", "-q", "-p", str(tmp_path), "-e", str(tmp_path / "e.log"), "-c", str(conf)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr


# --- TLS (benchmarks/tls_bench.py) -----------------------------------------------------------------------------

def test_the_tls_bootstrap_terminates_tls_and_originates_mtls_as_envoy_reads_it():
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    server = configs.TlsFiles("/pki/server.crt", "/pki/server.key")
    client = configs.TlsFiles("/pki/client.crt", "/pki/client.key", trusted_ca="/pki/root.pem")
    bootstrap = configs.pyproxy_bootstrap(listen_port=10000, admin_port=9901, backend_port=8443,
                                          downstream_tls=server, upstream_tls=client,
                                          upstream_peer_uri="spiffe://cluster.local/ns/bench/sa/origin")
    message = json_format.ParseDict(yaml.safe_load(yaml.safe_dump(bootstrap)), bootstrap_pb2.Bootstrap())
    (chain,) = message.static_resources.listeners[0].filter_chains
    downstream = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"
    chain.transport_socket.typed_config.Unpack(downstream)
    (cert,) = downstream.common_tls_context.tls_certificates
    assert (cert.certificate_chain.filename, cert.private_key.filename) == ("/pki/server.crt", "/pki/server.key")
    assert not downstream.require_client_certificate.value  # wrk presents no certificate
    assert not downstream.common_tls_context.HasField("validation_context")
    upstream = tls_pb2.UpstreamTlsContext()
    message.static_resources.clusters[0].transport_socket.typed_config.Unpack(upstream)
    common = upstream.common_tls_context
    assert common.tls_certificates[0].certificate_chain.filename == "/pki/client.crt"
    assert common.validation_context.trusted_ca.filename == "/pki/root.pem"
    (san,) = common.validation_context.match_typed_subject_alt_names
    assert (san.san_type, san.matcher.exact) == (san.URI, "spiffe://cluster.local/ns/bench/sa/origin")


def test_the_plaintext_bootstrap_has_no_transport_socket():
    bootstrap = configs.pyproxy_bootstrap(listen_port=1, admin_port=2, backend_port=3)
    assert "transport_socket" not in bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
    assert "transport_socket" not in bootstrap["static_resources"]["clusters"][0]


def test_the_nginx_tls_configs_say_what_they_do():
    server = configs.TlsFiles("/p/s.crt", "/p/s.key")
    client = configs.TlsFiles("/p/c.crt", "/p/c.key", trusted_ca="/p/root.pem")
    proxy = configs.render_nginx(configs.nginx_proxy_config(workdir="/w", port=8000, backend_port=8001,
                                                            downstream_tls=server, upstream_tls=client))
    for line in ("listen 127.0.0.1:8000 ssl;", "ssl_certificate /p/s.crt;", "proxy_pass https://backend;",
                 "proxy_ssl_certificate /p/c.crt;", "proxy_ssl_trusted_certificate /p/root.pem;",
                 "proxy_ssl_verify on;", "keepalive 64;"):
        assert line in proxy
    assert "ssl_verify_client" not in proxy
    origin = configs.render_nginx(configs.nginx_origin_config(workdir="/w", port=8001, mtls_port=8443,
                                                              mtls=client))
    for line in ("listen 127.0.0.1:8001;", "listen 127.0.0.1:8443 ssl;", "ssl_client_certificate /p/root.pem;",
                 "ssl_verify_client on;"):
        assert line in origin


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (benchmarks/run.py installs it)")
def test_nginx_accepts_the_tls_configs_with_certificates_from_the_project_ca(tmp_path):
    from benchmarks.tls_bench import make_pki

    pki = make_pki(tmp_path / "pki")
    trees = {"origin": configs.nginx_origin_config(workdir=str(tmp_path), port=1, mtls_port=2, mtls=pki.origin),
             "proxy": configs.nginx_proxy_config(workdir=str(tmp_path), port=3, backend_port=2,
                                                 downstream_tls=pki.server_p256, upstream_tls=pki.proxy_client)}
    for role, tree in trees.items():
        conf = tmp_path / f"{role}.conf"
        conf.write_text(configs.render_nginx(tree) + "\n")
        done = subprocess.run([NGINX, "-t", "-q", "-p", str(tmp_path), "-e", str(tmp_path / "e.log"), "-c",
                               str(conf)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (role, done.stderr)


def test_memory_bench_bootstrap_routes_each_virtual_host_to_its_own_cluster():
    from benchmarks.memory_bench import clusters_bootstrap
    from tests.support.proxy import decode_bootstrap

    config = clusters_bootstrap(3, listen_port=1001, admin_port=1002, backend_port=1003)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {vh["domains"][0]: vh["routes"][0]["route"]["cluster"] for vh in hcm["route_config"]["virtual_hosts"]}
    assert routes == {"svc-0.bench.local": "svc-0", "svc-1.bench.local": "svc-1", "svc-2.bench.local": "svc-2"}
    assert [c["name"] for c in config["static_resources"]["clusters"]] == ["svc-0", "svc-1", "svc-2"]
    endpoint = config["static_resources"]["clusters"][2]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == 1003
    decode_bootstrap(config)  # pyproxy accepts it as it will run it


def test_telemetry_bench_configs_turn_on_only_what_each_row_names():
    from benchmarks.telemetry_bench import CONFIGS
    from tests.support.proxy import decode_bootstrap

    seen = {}
    for name, (_, build) in CONFIGS.items():
        config = build(listen_port=1001, admin_port=1002, backend_port=1003)
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        seen[name] = ([f["name"] for f in hcm["http_filters"]],
                      hcm.get("tracing", {}).get("random_sampling", {}).get("value"), "access_log" in hcm)
        decode_bootstrap(config)  # pyproxy accepts it as it will run it
    router = "envoy.filters.http.router"
    assert seen == {"plain": ([router], None, False), "metrics": (["istio.stats", router], None, False),
                    "metrics+trace-1%": (["istio.stats", router], 1.0, False),
                    "metrics+trace-100%": (["istio.stats", router], 100.0, False),
                    "access-log": ([router], None, True)}


def test_the_sidecar_bootstrap_runs_a_client_sidecars_features_and_envoys_leaves_out_istio_stats():
    from control.translate.routes import DEFAULT_RETRY_ON
    from tests.support.proxy import decode_bootstrap

    client = configs.TlsFiles("/pki/client.crt", "/pki/client.key", trusted_ca="/pki/root.pem")
    for stats in (True, False):
        config = configs.sidecar_bootstrap(listen_port=1001, admin_port=1002, backend_port=1443,
                                           access_log_path="/tmp/x.log", upstream_tls=client,
                                           upstream_peer_uri="spiffe://cluster.local/ns/bench/sa/origin",
                                           istio_stats=stats)
        listener = config["static_resources"]["listeners"][0]
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
        assert listener["traffic_direction"] == "OUTBOUND" and config["node"]["metadata"]["NAME"] == "bench-v1"
        assert [f["name"] for f in hcm["http_filters"]] == [*(["istio.stats"] if stats else []),
                                                            "envoy.filters.http.router"]
        assert route["retry_policy"]["retry_on"] == DEFAULT_RETRY_ON and route["retry_policy"]["num_retries"] == 2
        assert hcm["access_log"][0]["typed_config"]["path"] == "/tmp/x.log"
        cluster = config["static_resources"]["clusters"][0]
        assert cluster["transport_socket"]["name"] == "envoy.transport_sockets.tls"
        decode_bootstrap(config)  # pyproxy accepts it as it will run it
