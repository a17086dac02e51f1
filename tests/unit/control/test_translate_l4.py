"""L4 translation rules one at a time: meshConfig access logs on tcp_proxy filters, and which `tcp`/`tls`
match blocks apply to a sidecar (istiod matchTCP: port, gateways, sourceLabels, sourceNamespace)."""
from __future__ import annotations

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


def listeners(extra: str = "") -> dict[str, dict]:
    result = load_text(BASE + ("---\n" + extra if extra else ""), "config.yaml")
    rendered = render_sidecar(build_mesh(result.resources), "client")
    check_rendered(rendered.as_dict())
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


TLS_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: tls, port: 8443}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web, "*.web.example"]
  tls:
  - match:
    - {sniHosts: [a.web.example], destinationSubnets: [10.1.0.0/16, 10.2.3.4]}
    - {sniHosts: [a.web.example], destinationSubnets: [10.1.0.0/16, 10.2.3.4], port: 8443}
    route: [{destination: {host: web}}]
"""


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
