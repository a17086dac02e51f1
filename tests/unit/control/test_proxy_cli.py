"""meshctl proxy-status / proxy-config tables (control.cli.proxy): istioctl's columns from /debug/syncz
entries and from an Envoy ConfigDump of real translated config."""
from __future__ import annotations

from pathlib import Path

import pytest

from control.cli import proxy as cli
from control.istio.load import load_paths
from control.mesh import build_mesh
from control.translate import render_gateway, render_sidecar

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "mesh"


def entry(name, statuses, version="v1", nack=None):
    types = {}
    for short, status in statuses.items():
        types[short] = {"status": status, "nacked": False, "nack": None}
    if nack:
        short, error = nack
        types[short] = {"status": "STALE", "nacked": True, "nack": {"version": version, "error": error}}
    return {"name": name, "proxy": f"sidecar~127.0.0.1~{name}~x", "version": version, "types": types}


def test_proxy_status_rows_in_istioctl_column_order_with_nack_detail():
    proxies = [
        entry("reviews-v1.default", {"cds": "SYNCED", "eds": "SYNCED", "lds": "SYNCED"},
              nack=("rds", "unknown cluster x")),
        entry("details-v1.default", {"cds": "SYNCED", "eds": "STALE"}, version=""),
    ]
    rows = cli.status_rows(proxies)
    assert rows == [
        ["details-v1.default", "SYNCED", "NOT SENT", "STALE", "NOT SENT", ""],
        ["reviews-v1.default", "SYNCED", "SYNCED", "SYNCED", "STALE (NACK)", "v1"],
    ]
    assert cli.nack_lines(proxies) == ["reviews-v1.default rejected RDS version v1: unknown cluster x"]
    text = cli.table(("NAME", "CDS", "LDS", "EDS", "RDS", "VERSION"), rows)
    assert text.splitlines()[0].split() == ["NAME", "CDS", "LDS", "EDS", "RDS", "VERSION"]


def test_vhds_and_leds_columns_appear_when_a_proxy_uses_them():
    four = {"cds": "SYNCED", "lds": "SYNCED", "eds": "SYNCED", "rds": "SYNCED"}
    proxies = [entry("productpage-v1.default", {**four, "vhds": "SYNCED"}, nack=("leds", "bad endpoint")),
               entry("gateway.istio-system", four)]
    assert [c for c, _s in cli.columns(proxies)] == ["CDS", "LDS", "EDS", "RDS", "VHDS", "LEDS"]
    assert cli.status_rows(proxies) == [
        ["gateway.istio-system", "SYNCED", "SYNCED", "SYNCED", "SYNCED", "-", "-", "v1"],
        ["productpage-v1.default", "SYNCED", "SYNCED", "SYNCED", "SYNCED", "SYNCED", "STALE (NACK)", "v1"],
    ]
    assert cli.nack_lines(proxies) == ["productpage-v1.default rejected LEDS version v1: bad endpoint"]
    assert [c for c, _s in cli.columns(proxies[1:])] == ["CDS", "LDS", "EDS", "RDS"]  # nobody uses them


@pytest.fixture(scope="module")
def dump():
    """A dynamic Envoy ConfigDump (pyproxy admin's shape) of reviews-v1's translated config."""
    mesh = build_mesh(load_paths([str(EXAMPLES)]).resources)
    r = render_sidecar(mesh, "reviews-v1")
    t = cli.T
    return {"configs": [
        {"@type": t + "ClustersConfigDump", "dynamic_active_clusters": [{"cluster": c} for c in r.clusters]},
        {"@type": t + "ListenersConfigDump",
         "dynamic_listeners": [{"name": lis["name"], "active_state": {"listener": lis}} for lis in r.listeners]},
        {"@type": t + "RoutesConfigDump", "dynamic_route_configs": [{"route_config": rc} for rc in r.routes]},
    ]}


def test_cluster_rows_split_istio_cluster_names_and_name_the_destination_rule(dump):
    rows = cli.cluster_rows(cli.dump_clusters(dump))
    assert ["reviews.default.svc.cluster.local", "9080", "v2", "outbound", "EDS", "reviews.default"] in rows
    assert ["reviews.default.svc.cluster.local", "9080", "-", "inbound", "STATIC", ""] in rows
    assert ["BlackHoleCluster", "-", "-", "-", "STATIC", ""] in rows
    only = cli.cluster_rows(cli.dump_clusters(dump), fqdn="ratings", subset="v1", direction="outbound")
    assert [r[0] for r in only] == ["ratings.default.svc.cluster.local"]


def test_listener_rows_show_match_and_destination(dump):
    rows = cli.listener_rows(cli.dump_listeners(dump))
    assert ["0.0.0.0", 15001, "ALL", "Route: http_proxy"] in [[r[0], r[1], r[2], r[3]] for r in rows]
    inbound = [r for r in rows if r[1] == 15006]
    # examples/mesh/security.yaml makes the mesh STRICT: one mTLS chain, no ALPN match (istiod's STRICT chain)
    assert [r[2] for r in inbound] == ["Trans: tls; Addr: *:9080"]
    assert inbound[0][3] == "Inline Route: /* -> inbound|9080||reviews.default.svc.cluster.local"
    assert [r[1] for r in cli.listener_rows(cli.dump_listeners(dump), port=9080)] == [9080]


def test_route_rows_with_domains_and_matches(dump):
    rows = cli.route_rows(cli.dump_routes(dump), name="9080")
    reviews = [r for r in rows if r[1] == "reviews.default.svc.cluster.local:9080"]
    assert [r[3] for r in reviews] == ["/* (+headers)", "/* (+headers)", "/*"]  # jason, tester, the split
    assert reviews[0][2] == "reviews +3 more..."  # .default, .default.svc, FQDN


def test_route_rows_name_the_virtual_service_of_each_route_and_default_routes_none(dump):
    rows = {(r[1].split(".")[0], r[3]): r[4] for r in cli.route_rows(cli.dump_routes(dump), name="9080")}
    assert rows[("reviews", "/* (+headers)")] == rows[("reviews", "/*")] == "reviews.default"
    assert rows[("ratings", "/*")] == "ratings.default"
    assert rows[("details", "/*")] == "-" and rows[("allow_any", "/*")] == "-"  # no VirtualService


def test_the_virtual_service_column_survives_pyproxys_config_dump(dump):
    """pyproxy decodes route and cluster metadata and encodes it back in /config_dump."""
    from pyproxy.config.decode import decode, encode
    from pyproxy.config.model import Cluster, RouteConfiguration
    t = cli.T
    routes = [encode(decode(RouteConfiguration, rc), as_any=True) for rc in cli.dump_routes(dump)]
    clusters = [encode(decode(Cluster, c), as_any=True) for c in cli.dump_clusters(dump)]
    redump = {"configs": [
        {"@type": t + "ClustersConfigDump", "dynamic_active_clusters": [{"cluster": c} for c in clusters]},
        {"@type": t + "RoutesConfigDump", "dynamic_route_configs": [{"route_config": rc} for rc in routes]}]}
    assert cli.route_rows(cli.dump_routes(redump)) == cli.route_rows(cli.dump_routes(dump))
    assert cli.cluster_rows(cli.dump_clusters(redump)) == cli.cluster_rows(cli.dump_clusters(dump))


def test_translated_routes_carry_istiods_config_path_of_their_virtual_service():
    mesh = build_mesh(load_paths([str(EXAMPLES)]).resources)
    gateway = render_gateway(mesh, "istio-ingressgateway")
    metadata = [r.get("metadata") for rc in gateway.routes for vh in rc["virtual_hosts"] for r in vh["routes"]]
    assert {"filter_metadata": {"istio": {
        "config": "/apis/networking.istio.io/v1/namespaces/default/virtual-service/bookinfo"}}} in metadata


@pytest.mark.parametrize("match, text", [
    ({"prefix": "/"}, "/*"), ({"prefix": "/api"}, "/api*"), ({"path": "/login"}, "/login"),
    ({"safe_regex": {"regex": "/u/.*"}}, "/u/.*"), ({"prefix": "/", "headers": [{}]}, "/* (+headers)"),
])
def test_match_text(match, text):
    assert cli.match_text(match) == text


def test_endpoint_rows_from_admin_clusters_json():
    statuses = {"cluster_statuses": [{"name": "outbound|9080||reviews.default.svc.cluster.local", "host_statuses": [
        {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15106}},
         "health_status": {"eds_health_status": "HEALTHY", "failed_outlier_check": True}}]}]}
    assert cli.endpoint_rows(statuses) == [
        ["127.0.0.1:15106", "HEALTHY", "FAILED", "outbound|9080||reviews.default.svc.cluster.local"]]


def test_find_proxy_by_pod_or_pod_dot_namespace():
    proxies = [entry("reviews-v1.default", {}), entry("reviews-v1.staging", {}), entry("details-v1.default", {})]
    assert cli.find_proxy(proxies, "details-v1")["name"] == "details-v1.default"
    assert cli.find_proxy(proxies, "reviews-v1.staging")["name"] == "reviews-v1.staging"
    with pytest.raises(cli.CommandError, match="ambiguous"):
        cli.find_proxy(proxies, "reviews-v1")
    with pytest.raises(cli.CommandError, match="no proxy named 'ratings'.*known: details-v1.default"):
        cli.find_proxy(proxies, "ratings")
