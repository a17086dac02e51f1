"""L4 translation rules one at a time: meshConfig access logs on tcp_proxy filters, and which `tcp`/`tls`
match blocks apply to a sidecar (istiod matchTCP: port, gateways, sourceLabels, sourceNamespace)."""
from __future__ import annotations

import json

import pytest

from control.istio.load import load_text
from control.mesh import build_mesh
from control.translate import render_sidecar
from control.translate.accesslog import ISTIO_JSON_LABELS, ISTIO_TEXT_FORMAT, log_format
from tests.golden.envoy_schema import check_rendered

BASE = """
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {selector: {app: db}, ports: [{name: tcp-db, port: 5432}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client}
spec: {address: 10.0.0.9, labels: {app: client, version: v1}}
"""


def listeners(extra: str = "", notes: list[str] | None = None) -> dict[str, dict]:
    """The client's listeners by name (`notes`, when given, receives the rendering's notes)."""
    result = load_text(BASE + ("---\n" + extra if extra else ""), "config.yaml")
    assert not [f for f in result.findings if f.level.label == "Error"], [str(f) for f in result.findings]
    rendered = render_sidecar(build_mesh(result.resources), "client")
    check_rendered(rendered.as_dict())
    if notes is not None:
        notes.extend(rendered.notes)
    return {lis["name"]: lis for lis in rendered.as_dict()["listeners"]}


def tcp_proxies(lis: dict) -> list[dict]:
    return [f["typed_config"] for c in lis["filter_chains"] for f in c["filters"]
            if f["name"] == "envoy.filters.network.tcp_proxy"]


@pytest.mark.parametrize("encoding, fmt, want", [
    ("TEXT", "", {"text_format_source": {"inline_string": ISTIO_TEXT_FORMAT}}),
    ("TEXT", "%DOWNSTREAM_PEER_URI_SAN%", {"text_format_source": {"inline_string": "%DOWNSTREAM_PEER_URI_SAN%\n"}}),
    ("JSON", "", {"json_format": ISTIO_JSON_LABELS}),
    ("JSON", '{"peer": "%DOWNSTREAM_PEER_URI_SAN%"}', {"json_format": {"peer": "%DOWNSTREAM_PEER_URI_SAN%"}}),
    ("JSON", "not json", {"json_format": ISTIO_JSON_LABELS}),
])
def test_mesh_access_log_format_follows_encoding_and_format(encoding, fmt, want):
    assert log_format(encoding, fmt) == want


def test_access_log_file_puts_a_file_logger_on_every_tcp_proxy():
    operator = """
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: cp, namespace: istio-system}
spec: {meshConfig: {accessLogFile: /dev/stdout, accessLogFormat: "%UPSTREAM_CLUSTER% %DOWNSTREAM_PEER_URI_SAN%"}}
"""
    (proxy,) = tcp_proxies(listeners(operator)["0.0.0.0_5432"])
    assert proxy["access_log"] == [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": "/dev/stdout",
        "log_format": {"text_format_source": {"inline_string": "%UPSTREAM_CLUSTER% %DOWNSTREAM_PEER_URI_SAN%\n"}}}}]
    assert "access_log" not in tcp_proxies(listeners()["0.0.0.0_5432"])[0]  # off by default, as in Istio


def _vs(match: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db}}
spec:
  hosts: [db]
  tcp:
  - match: [{match}]
    route: [{{destination: {{host: db, subset: routed}}}}]
"""


@pytest.mark.parametrize("match, applies", [
    ("{port: 5432}", True),
    ("{port: 5433}", False),
    ("{sourceLabels: {app: client}}", True),
    ("{sourceLabels: {app: client, version: v2}}", False),
    ("{sourceNamespace: default}", True),
    ("{sourceNamespace: other}", False),
    ("{gateways: [mesh]}", True),
    ("{gateways: [some-gateway]}", False),
])
def test_a_tcp_match_applies_to_the_sidecar_as_istiod_matchtcp_says(match, applies):
    (proxy,) = tcp_proxies(listeners(_vs(match))["0.0.0.0_5432"])
    routed = proxy["cluster"] == "outbound|5432|routed|db.default.svc.cluster.local"
    assert routed is applies, proxy


def web_tls_vs(rules: str) -> str:
    """The TLS service `web` (port 8443) and a VirtualService with `tls` rules for it and `*.web.example`."""
    return ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
            "spec: {selector: {app: web}, ports: [{name: tls, port: 8443}]}\n---\n"
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\n"
            "spec:\n  hosts: [web, \"*.web.example\"]\n  tls:\n" + rules)


TLS_SERVICE = web_tls_vs("""  - match:
    - {sniHosts: [a.web.example], destinationSubnets: [10.1.0.0/16, 10.2.3.4]}
    - {sniHosts: [a.web.example], destinationSubnets: [10.1.0.0/16, 10.2.3.4], port: 8443}
    route: [{destination: {host: web}}]
""")


def test_a_sidecar_tls_match_with_destination_subnets_and_a_repeated_match_gives_one_chain():
    chains = [c for c in listeners(TLS_SERVICE)["0.0.0.0_8443"]["filter_chains"]
              if c.get("filter_chain_match", {}).get("server_names")]
    assert [c["filter_chain_match"] for c in chains] == [{
        "server_names": ["a.web.example"],
        "prefix_ranges": [{"address_prefix": "10.1.0.0", "prefix_len": 16},
                          {"address_prefix": "10.2.3.4", "prefix_len": 32}]}]


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.web.example"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 31401, name: tcp-unbound, protocol: TCP}
    hosts: ["nothing.example"]
"""


def gateway_vs(name: str, rules: str) -> str:
    return (f"---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\n"
            f"spec:\n  hosts: ['*.web.example']\n  gateways: [istio-system/edge]\n{rules}")


def test_gateway_l4_chains():
    from control.translate import render_gateway
    result = load_text(BASE + GATEWAY
                       + gateway_vs("first", "  tls: [{match: [{sniHosts: [a.web.example]}], route: [{destination: "
                                             "{host: db}}]}]\n"
                                             "  tcp:\n  - {match: [{port: 9999}], route: [{destination: {host: db, "
                                             "subset: skipped}}]}\n  - {route: [{destination: {host: db}}]}\n")
                       + gateway_vs("second", "  tls: [{match: [{sniHosts: [a.web.example]}], route: [{destination: "
                                              "{host: db, subset: later}}]}]\n"), "config.yaml")
    rendered = render_gateway(build_mesh(result.resources), "istio-ingressgateway").as_dict()
    check_rendered(rendered)
    by = {lis["name"]: lis for lis in rendered["listeners"]}
    passthrough = [c for c in by["0.0.0.0_15443"]["filter_chains"] if c.get("filter_chain_match")]
    assert [(c["filter_chain_match"]["server_names"], tcp_proxies({"filter_chains": [c]})[0]["cluster"])
            for c in passthrough] == [(["a.web.example"], "outbound|5432||db.default.svc.cluster.local")]  # 1st wins
    (tcp,) = tcp_proxies(by["0.0.0.0_31400"])
    assert tcp["cluster"] == "outbound|5432||db.default.svc.cluster.local"  # the rule for port 9999 is skipped
    assert "0.0.0.0_31401" not in by or tcp_proxies(by["0.0.0.0_31401"]) == []  # no bound rule: no chain


def test_an_https_server_with_a_credential_but_no_tls_mode_passes_tls_through_by_sni():
    """Gateway `tls` without `mode` is PASSTHROUGH (the enum's zero value): istiod routes such an HTTPS server by
    SNI to the bound `tls` routes and never uses the credential."""
    from control.translate import render_gateway
    gateway = GATEWAY.replace("{number: 15443, name: tls, protocol: TLS}", "{number: 443, name: https, protocol: HTTPS}"
                              ).replace("tls: {mode: PASSTHROUGH}", "tls: {credentialName: web-cert}")
    result = load_text(BASE + gateway + gateway_vs("first", "  tls: [{match: [{sniHosts: [a.web.example]}], route: "
                                                            "[{destination: {host: db}}]}]\n"), "config.yaml")
    rendered = render_gateway(build_mesh(result.resources), "istio-ingressgateway").as_dict()
    check_rendered(rendered)
    (listener,) = [lis for lis in rendered["listeners"] if lis["name"] == "0.0.0.0_443"]
    chains = [c for c in listener["filter_chains"] if c.get("filter_chain_match")]
    assert [(c["filter_chain_match"]["server_names"], tcp_proxies({"filter_chains": [c]})[0]["cluster"])
            for c in chains] == [(["a.web.example"], "outbound|5432||db.default.svc.cluster.local")]
    assert "web-cert" not in json.dumps(listener)  # nothing terminates TLS here


def chain_routes(lis: dict) -> list[tuple[dict | None, object]]:
    """(filter_chain_match, the tcp_proxy's cluster or weighted clusters) per chain."""
    out = []
    for chain in lis["filter_chains"]:
        (proxy,) = tcp_proxies({"filter_chains": [chain]})
        target = proxy.get("cluster") or [(c["name"].split("|")[2], c["weight"])
                                          for c in proxy["weighted_clusters"]["clusters"]]
        out.append((chain.get("filter_chain_match"), target.split("|")[2] if isinstance(target, str) else target))
    return out


def tcp_vs(rules: str, hosts: str = "[db]") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: db}}\n"
            f"spec:\n  hosts: {hosts}\n  tcp:\n{rules}")


def test_weighted_tcp_routes_leave_out_zero_weights_and_take_the_virtual_service_as_stat_prefix():
    """istiod buildOutboundNetworkFiltersWithWeightedClusters: stat_prefix `<vs name>.<vs namespace>`."""
    others = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: aaa}\nspec: "
              "{hosts: [web.example], http: [{route: [{destination: {host: db}}]}]}\n---\n"  # no tcp rules
              "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bbb}\nspec: "
              "{hosts: [web.example], tcp: [{route: [{destination: {host: db, subset: x}}]}]}\n---\n")  # not db
    lis = listeners(others + tcp_vs("  - route: [{destination: {host: db, subset: a}, weight: 99}, "
                           "{destination: {host: db, subset: b}, weight: 1}, {destination: {host: db, subset: c}, "
                           "weight: 0}, {destination: {host: db, subset: d}}]\n"))["0.0.0.0_5432"]
    (proxy,) = tcp_proxies(lis)
    assert proxy["stat_prefix"] == "db.default" and "cluster" not in proxy
    assert proxy["weighted_clusters"] == {"clusters": [
        {"name": "outbound|5432|a|db.default.svc.cluster.local", "weight": 99},
        {"name": "outbound|5432|b|db.default.svc.cluster.local", "weight": 1}]}


def test_of_two_tcp_destinations_one_without_weight_gets_nothing():
    (proxy,) = tcp_proxies(listeners(tcp_vs("  - route: [{destination: {host: db, subset: a}, weight: 100}, "
                                            "{destination: {host: db, subset: b}}]\n"))["0.0.0.0_5432"])
    assert proxy["stat_prefix"] == proxy["cluster"] == "outbound|5432|a|db.default.svc.cluster.local"


def test_one_tcp_destination_is_its_own_stat_prefix_whatever_its_weight():
    (proxy,) = tcp_proxies(listeners(tcp_vs("  - route: [{destination: {host: db, subset: a}, weight: 0}]\n"))
                           ["0.0.0.0_5432"])
    assert proxy["stat_prefix"] == proxy["cluster"] == "outbound|5432|a|db.default.svc.cluster.local"


def test_sidecar_tcp_rules_give_subnet_chains_until_the_first_catch_all():
    """buildSidecarOutboundTCPFilterChainOpts: a rule whose matches all name destinationSubnets gets a chain on
    them and reading goes on; a rule that does not apply is skipped; the first rule
    without subnets is the catch-all and the last chain."""
    notes: list[str] = []
    lis = listeners(tcp_vs("""  - match: [{destinationSubnets: [10.1.2.3/8]}, {destinationSubnets: [192.168.1.1, "fd00::1"]}]
    route: [{destination: {host: db, subset: a}}]
  - match: [{port: 9999}]
    route: [{destination: {host: db, subset: other-port}}]
  - match: [{destinationSubnets: [172.16.0.0/12]}, {sourceNamespace: default}]
    route: [{destination: {host: db, subset: b}}]
  - route: [{destination: {host: db, subset: never}}]
"""), notes)["0.0.0.0_5432"]
    assert chain_routes(lis) == [
        ({"prefix_ranges": [{"address_prefix": "10.1.2.3", "prefix_len": 8},  # as written, as istiod
                            {"address_prefix": "192.168.1.1", "prefix_len": 32},
                            {"address_prefix": "fd00::1", "prefix_len": 128}]}, "a"),
        (None, "b")]
    assert any(n.endswith("VirtualService default/db: spec.tcp[2].route[0].destination.subset: subset 'b' of "
                          "db.default.svc.cluster.local is not defined by a DestinationRule: Envoy answers 503 NC")
               for n in notes), notes


def test_tcp_rules_of_a_virtual_service_for_another_host_do_not_apply():
    lis = listeners(tcp_vs("  - route: [{destination: {host: db, subset: a}}]\n", hosts="[other]"))["0.0.0.0_5432"]
    assert chain_routes(lis) == [(None, "")]


def test_sidecar_tls_chains_one_per_applicable_sni_match_in_rule_order():
    notes: list[str] = []
    lis = listeners(web_tls_vs("""  - match: [{sniHosts: [c.web.example], port: 9999}, {sniHosts: [b.web.example, a.web.example], gateways: [mesh]}]
    route: [{destination: {host: web, subset: one}}]
  - match: [{sniHosts: [a.web.example, b.web.example]}, {sniHosts: [d.web.example]}]
    route: [{destination: {host: web, subset: two}}]
"""), notes)["0.0.0.0_8443"]
    assert [(m, target) for m, target in chain_routes(lis)] == [
        ({"server_names": ["a.web.example", "b.web.example"]}, "one"),
        ({"server_names": ["d.web.example"]}, "two")]
    assert lis["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    assert any(n.endswith("VirtualService default/web: spec.tls[1].route[0].destination.subset: subset 'two' of "
                          "web.default.svc.cluster.local is not defined by a DestinationRule: Envoy answers 503 NC")
               for n in notes), notes


def test_a_tls_port_without_applicable_tls_rules_is_opaque_tcp_to_the_service():
    lis = listeners(web_tls_vs("""  - match: [{sniHosts: [a.web.example], sourceNamespace: other}]
    route: [{destination: {host: web, subset: one}}]
"""))["0.0.0.0_8443"]
    assert chain_routes(lis) == [(None, "")] and "listener_filters" not in lis


AUTO = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: cross, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 15443, name: tls, protocol: TLS}}
    hosts: {hosts}
    tls: {{mode: AUTO_PASSTHROUGH}}
"""


@pytest.mark.parametrize("hosts, match", [
    ('["*"]', None),  # any SNI
    ('["*.local", "default/b.example", "*", "a.example"]', {"server_names": ["*.local", "a.example", "b.example"]}),
])
def test_an_auto_passthrough_server_routes_by_sni_to_the_sni_dnat_clusters(hosts, match):
    from control.translate import render_gateway
    result = load_text(BASE + AUTO.format(hosts=hosts), "config.yaml")
    rendered = render_gateway(build_mesh(result.resources), "istio-ingressgateway").as_dict()
    check_rendered(rendered)
    (chain,) = {lis["name"]: lis for lis in rendered["listeners"]}["0.0.0.0_15443"]["filter_chains"]
    assert chain.get("filter_chain_match") == match
    first, last = chain["filters"][0], chain["filters"][-1]
    assert first["name"] == "envoy.filters.network.sni_cluster"
    assert first["typed_config"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster"}
    assert last["name"] == "envoy.filters.network.tcp_proxy"
    assert last["typed_config"]["cluster"] == last["typed_config"]["stat_prefix"] == "BlackHoleCluster"


def test_sni_dnat_clusters_carry_the_clients_own_mtls_whatever_the_destination_rule_says():
    """istiod: an AUTO_PASSTHROUGH gateway's outbound_.<port>_.<subset>_.<host> clusters forward the client's TLS
    as it is, so a DestinationRule `tls` applies to the ordinary clusters only."""
    from control.translate import render_gateway
    rule = ("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: db}\n"
            "spec: {host: db, trafficPolicy: {tls: {mode: SIMPLE}}}\n")
    result = load_text(BASE + AUTO.format(hosts='["*"]') + rule, "config.yaml")
    rendered = render_gateway(build_mesh(result.resources), "istio-ingressgateway").as_dict()
    clusters = {c["name"]: c for c in rendered["clusters"]}
    assert "transport_socket" in clusters["outbound|5432||db.default.svc.cluster.local"]
    assert "transport_socket" not in clusters["outbound_.5432_._.db.default.svc.cluster.local"]


def test_a_gateway_tcp_rule_applies_when_its_match_names_this_gateway_and_notes_name_its_field():
    from control.translate import render_gateway
    result = load_text(BASE + GATEWAY + gateway_vs("edge", """  tcp:
  - match: [{gateways: [mesh]}]
    route: [{destination: {host: db, subset: mesh-only}}]
  - match: [{gateways: [istio-system/edge], port: 31400}]
    route: [{destination: {host: db, subset: edge}}]
"""), "config.yaml")
    rendered = render_gateway(build_mesh(result.resources), "istio-ingressgateway")
    by = {lis["name"]: lis for lis in rendered.as_dict()["listeners"]}
    (tcp,) = tcp_proxies(by["0.0.0.0_31400"])
    assert tcp["cluster"] == "outbound|5432|edge|db.default.svc.cluster.local"
    assert any(n.endswith("VirtualService default/edge: spec.tcp[1].route[0].destination.subset: subset 'edge' of "
                          "db.default.svc.cluster.local is not defined by a DestinationRule: Envoy answers 503 NC")
               for n in rendered.notes), rendered.notes


# the edge gateway with its PASSTHROUGH server for `default/db.default.svc.cluster.local`
GATEWAY_DB = GATEWAY.replace('hosts: ["*.web.example"]', 'hosts: ["default/db.default.svc.cluster.local"]') + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: elsewhere}
spec:
  hosts: [other.example]
  gateways: [istio-system/edge]
  tls: [{match: [{sniHosts: [other.example]}], route: [{destination: {host: db, subset: never}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db, "*.db.example"]
  gateways: [istio-system/edge, mesh]
  tls:
  - match: [{sniHosts: [db], gateways: [mesh]}]
    route: [{destination: {host: db, subset: mesh-only}}]
  - match: [{sniHosts: [db], gateways: [istio-system/edge]}]
    route: [{destination: {host: db, subset: first}}]
  - match: [{sniHosts: [db]}, {sniHosts: [a.db.example]}]
    route: [{destination: {host: db, subset: second}}]
"""


def test_gateway_passthrough_chains_per_sni_set_of_the_bound_virtual_services_whose_hosts_meet_the_server():
    """A short VirtualService host is resolved in its namespace to meet the server's `ns/host`; a match naming
    other gateways does not apply; a repeated SNI set keeps its first chain and the rule's other matches go on."""
    from control.translate import render_gateway
    result = load_text(BASE + GATEWAY_DB, "config.yaml")
    assert not [f for f in result.findings if f.level.label == "Error"], [str(f) for f in result.findings]
    rendered = render_gateway(build_mesh(result.resources), "istio-ingressgateway")
    lis = {x["name"]: x for x in rendered.as_dict()["listeners"]}["0.0.0.0_15443"]
    assert chain_routes(lis) == [({"server_names": ["db"]}, "first"), ({"server_names": ["a.db.example"]}, "second")]
    assert any(n.endswith("VirtualService default/db: spec.tls[1].route[0].destination.subset: subset 'first' of "
                          "db.default.svc.cluster.local is not defined by a DestinationRule: Envoy answers 503 NC")
               for n in rendered.notes), rendered.notes


@pytest.mark.parametrize("match, applies", [
    ({}, True),
    ({"port": 5432}, True), ({"port": 5433}, False),
    ({"gateways": ["edge"]}, True),  # a bare name is in the VirtualService's namespace
    ({"gateways": ["gateways/edge"]}, True), ({"gateways": ["other/edge", "mesh"]}, False),
    ({"sourceLabels": {"app": "client"}}, True), ({"sourceLabels": {"app": "client", "v": "2"}}, False),
    ({"sourceNamespace": "shop"}, True), ({"sourceNamespace": "other"}, False),
])
def test_l4_match_applies_as_istiod_match_tcp(match, applies):
    from types import SimpleNamespace

    from control.translate.tcp import l4_match_applies
    ctx = SimpleNamespace(port=5432, gateway="gateways/edge", proxy=SimpleNamespace(
        namespace="shop", workload=SimpleNamespace(labels={"app": "client", "v": "1"})))
    assert l4_match_applies(ctx, SimpleNamespace(namespace="gateways"), match) is applies
