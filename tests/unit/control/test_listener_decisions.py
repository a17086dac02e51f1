"""Listener decisions (control/translate/listeners.py) checked value by value on the Envoy config they emit:
gateway server TLS contexts (istiod BuildListenerTLSContext), route names, L4 server kinds, and the inbound
filter-chain options per PeerAuthentication mode (istiod filterchain_options.go)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from control.translate import authn
from control.translate.common import DOWNSTREAM_TLS
from control.translate.listeners import (ALL_ISTIO_MTLS_ALPNS, downstream_tls, gateway_route_name,
                                         inbound_chain_options, l4_server)
from tests.unit.control.test_translate import by_name, render
from tests.unit.control.test_translate_decisions import render_gw, servers
from tests.unit.control.test_translate_l4 import chain_routes, listeners, web_tls_vs

GW = SimpleNamespace(name="gw", namespace="ns")


def _context(tls: dict) -> dict:
    socket = downstream_tls(None, tls, GW, "spec.servers[0].tls")  # no credentialName: no proxy, no notes
    assert socket["name"] == "envoy.transport_sockets.tls"
    context = socket["typed_config"]
    assert context["@type"] == DOWNSTREAM_TLS
    return context


ALPN = ["h2", "http/1.1"]
CERT = {"certificate_chain": {"filename": "/c.pem"}, "private_key": {"filename": "/k.pem"}}


@pytest.mark.parametrize("tls, require, common", [
    ({}, False, {"alpn_protocols": ALPN}),  # mode defaults to SIMPLE
    ({"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem", "caCertificates": "/ca.pem"}, False,
     {"alpn_protocols": ALPN, "tls_certificates": [CERT]}),  # SIMPLE does not check clients: no CA
    ({"serverCertificate": "/c.pem"}, False,
     {"alpn_protocols": ALPN, "tls_certificates": [
         {"certificate_chain": {"filename": "/c.pem"}, "private_key": {"filename": ""}}]}),
    ({"mode": "MUTUAL", "serverCertificate": "/c.pem", "privateKey": "/k.pem", "caCertificates": "/ca.pem"}, True,
     {"alpn_protocols": ALPN, "tls_certificates": [CERT], "validation_context": {"trusted_ca": {"filename": "/ca.pem"}}}),
    ({"mode": "OPTIONAL_MUTUAL", "caCertificates": "/ca.pem", "subjectAltNames": ["a", "b"]}, False,
     {"alpn_protocols": ALPN, "validation_context": {
         "trusted_ca": {"filename": "/ca.pem"}, "match_subject_alt_names": [{"exact": "a"}, {"exact": "b"}]}}),
    ({"mode": "MUTUAL"}, True, {"alpn_protocols": ALPN}),
    ({"mode": "ISTIO_MUTUAL", "serverCertificate": "/c.pem", "minProtocolVersion": "TLSV1_3",
      "cipherSuites": ["X"]}, True,  # mesh certificates over SDS; the tls_params settings are not applied
     {"alpn_protocols": ALPN, "tls_certificate_sds_secret_configs": [authn.sds(authn.SDS_DEFAULT)],
      "combined_validation_context": {"default_validation_context": {},
                                      "validation_context_sds_secret_config": authn.sds(authn.SDS_ROOTCA)}}),
    ({"mode": "ISTIO_MUTUAL", "subjectAltNames": ["spiffe://x"]}, True,
     {"alpn_protocols": ALPN, "tls_certificate_sds_secret_configs": [authn.sds(authn.SDS_DEFAULT)],
      "combined_validation_context": {
          "default_validation_context": {"match_subject_alt_names": [{"exact": "spiffe://x"}]},
          "validation_context_sds_secret_config": authn.sds(authn.SDS_ROOTCA)}}),
])
def test_gateway_server_tls_context_per_mode(tls, require, common):
    context = _context(tls)
    assert context["require_client_certificate"] is require
    assert context["common_tls_context"] == common


@pytest.mark.parametrize("mode", ["SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", None])
@pytest.mark.parametrize("tls, params", [
    ({"minProtocolVersion": "TLSV1_2", "maxProtocolVersion": "TLSV1_3"},
     {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}),
    ({"minProtocolVersion": "TLS_AUTO", "maxProtocolVersion": "TLSV1_2"}, {"tls_maximum_protocol_version": "TLSv1_2"}),
    ({"maxProtocolVersion": "TLS_AUTO", "minProtocolVersion": "TLSV1_1"}, {"tls_minimum_protocol_version": "TLSv1_1"}),
    ({"cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256", "AES256-SHA"]},
     {"cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256", "AES256-SHA"]}),
    ({"minProtocolVersion": "", "cipherSuites": []}, None),
])
def test_gateway_server_tls_params_from_versions_and_ciphers(mode, tls, params):
    """applyServerTLSSettings: TLS_AUTO leaves Envoy's default; tls_params come first in the common context."""
    common = _context({**tls, **({"mode": mode} if mode else {})})["common_tls_context"]
    if params is None:
        assert "tls_params" not in common
    else:
        assert common["tls_params"] == params
        assert list(common)[0] == "tls_params"


@pytest.mark.parametrize("server, route", [
    ({"port": {"number": 443, "name": "https", "protocol": "HTTPS"}}, "https.443.https.gw.ns"),
    ({"port": {"number": 443, "name": "https", "protocol": "https"}}, "https.443.https.gw.ns"),
    ({"port": {"number": 8443, "protocol": "HTTP"}, "tls": {"mode": "MUTUAL"}}, "https.8443..gw.ns"),
    ({"port": {"number": 8443, "name": "p", "protocol": "TLS"}, "tls": {"mode": "ISTIO_MUTUAL"}}, "https.8443.p.gw.ns"),
    ({"port": {"number": 8443, "name": "p", "protocol": "TLS"}, "tls": {"mode": "SIMPLE"}}, "https.8443.p.gw.ns"),
    ({"port": {"number": 8443, "name": "p", "protocol": "TLS"}, "tls": {"mode": "OPTIONAL_MUTUAL"}},
     "https.8443.p.gw.ns"),
    ({"port": {"number": 8443, "name": "p", "protocol": "TLS"}, "tls": {"mode": "PASSTHROUGH"}}, "http.8443"),
    ({"port": {"number": 80, "name": "http", "protocol": "HTTP"}}, "http.80"),
    ({"port": {"number": 80, "name": "http"}}, "http.80"),
    ({}, "http.None"),
])
def test_gateway_route_names(server, route):
    """istiod gateway.go: `https.<port>.<portName>.<gateway>.<namespace>` for terminated TLS, else `http.<port>`."""
    assert gateway_route_name(GW, server) == route


@pytest.mark.parametrize("server, kind", [
    ({"port": {"protocol": "TLS"}, "tls": {"mode": "PASSTHROUGH"}}, "passthrough"),
    ({"port": {"protocol": "TLS"}, "tls": {"mode": "AUTO_PASSTHROUGH"}}, "auto_passthrough"),
    ({"port": {"protocol": "TCP"}}, "tcp"),
    ({"port": {"protocol": "tcp"}, "tls": {}}, "tcp"),
    ({"port": {"protocol": "TCP"}, "tls": {"mode": "PASSTHROUGH"}}, "passthrough"),
    ({"port": {"protocol": "HTTPS"}, "tls": {"mode": "SIMPLE"}}, None),
    # `tls` without a mode is PASSTHROUGH (the enum's zero value) on HTTPS and TLS servers, not on HTTP ones
    ({"port": {"protocol": "HTTPS"}, "tls": {"credentialName": "x"}}, "passthrough"),
    ({"port": {"protocol": "tls"}, "tls": {}}, "passthrough"),
    ({"port": {"protocol": "HTTP"}, "tls": {"httpsRedirect": True}}, None),
    ({"port": {"protocol": "HTTP"}}, None),
    ({}, None),
])
def test_gateway_server_l4_kind(server, kind):
    assert l4_server(server) == kind


MTLS = {"transport_protocol": "tls", "application_protocols": list(ALL_ISTIO_MTLS_ALPNS)}


@pytest.mark.parametrize("mode, http, options", [
    (authn.MtlsMode.STRICT, True, [({"transport_protocol": "tls"}, True)]),
    (authn.MtlsMode.STRICT, False, [({"transport_protocol": "tls"}, True)]),
    (authn.MtlsMode.PERMISSIVE, True, [(MTLS, True), ({"transport_protocol": "raw_buffer"}, False)]),
    (authn.MtlsMode.PERMISSIVE, False, [(MTLS, True), ({"transport_protocol": "tls"}, False),
                                        ({"transport_protocol": "raw_buffer"}, False)]),
    (authn.MtlsMode.DISABLE, True, [({"transport_protocol": "raw_buffer"}, False)]),
    (authn.MtlsMode.DISABLE, False, [({"transport_protocol": "raw_buffer"}, False)]),
])
def test_inbound_chain_options_per_peer_authentication_mode(mode, http, options):
    assert inbound_chain_options(mode, http) == options
    assert ALL_ISTIO_MTLS_ALPNS == ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")


def _egress(*listeners: str) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec:\n  egress:\n"
            + "".join(f"  - {item}\n" for item in listeners))


DB = "outbound|5432||db.default.svc.cluster.local"


@pytest.mark.parametrize("egress, name, address", [
    ("{port: {number: 5432, name: tcp-db}, captureMode: NONE, hosts: ['./*']}", "127.0.0.1_5432", "127.0.0.1"),
    ("{port: {number: 5432, protocol: TLS, name: http-x}, captureMode: NONE, bind: 10.0.0.9, hosts: ['./*']}",
     "10.0.0.9_5432", "10.0.0.9"),
    ("{port: {number: 5432, protocol: tcp}, captureMode: NONE, hosts: ['*/db.default.svc.cluster.local']}",
     "127.0.0.1_5432", "127.0.0.1"),
])
def test_a_sidecar_egress_port_with_capture_none_is_bound_and_named_by_its_bind(egress, name, address):
    """istiod: a Sidecar egress listener with a port and captureMode NONE binds `<bind>_<port>` (default
    127.0.0.1); the TCP port's listener is replaced by it, with the stats filter before the tcp_proxy."""
    notes: list[str] = []
    got = listeners(_egress(egress), notes)
    assert sorted(got) == sorted(["0.0.0.0_15001", name])
    lis = got[name]
    assert lis["address"] == {"socket_address": {"address": address, "port_value": 5432}}
    assert lis["traffic_direction"] == "OUTBOUND"
    assert "bind_to_port" not in lis and "listener_filters" not in lis
    (chain,) = lis["filter_chains"]
    assert [f["name"] for f in chain["filters"]] == ["istio.stats", "envoy.filters.network.tcp_proxy"]
    assert chain["filters"][1]["typed_config"]["cluster"] == DB
    assert not [n for n in notes if "egress" in n]


@pytest.mark.parametrize("egress, note", [
    ("{port: {number: 5432, name: tcp-db}, hosts: ['./*']}",
     "spec.egress[0].port: only egress listeners with captureMode NONE and a TCP/TLS port are translated; this one "
     "is not"),
    ("{port: {number: 5432, name: tcp-db}, captureMode: IPTABLES, hosts: ['./*']}",
     "spec.egress[0].port: only egress listeners with captureMode NONE"),
    ("{port: {number: 5432, name: http-db}, captureMode: NONE, hosts: ['./*']}",
     "spec.egress[0].port: only egress listeners with captureMode NONE"),
    ("{port: {number: 5432, protocol: UDP, name: tcp-db}, captureMode: NONE, hosts: ['./*']}",
     "spec.egress[0].port: only egress listeners with captureMode NONE"),
    ("{port: {number: 5433, name: tcp-db}, captureMode: NONE, hosts: ['./*']}",
     "spec.egress[0].port: no service its hosts admit has port 5433"),
    ("{port: {number: 5432, name: tcp-db}, captureMode: NONE, hosts: ['other/*']}",
     "spec.egress[0].port: no service its hosts admit has port 5432"),
])
def test_sidecar_egress_ports_not_bound_are_noted_and_keep_the_port_listener(egress, note):
    notes: list[str] = []
    got = listeners(_egress(egress, "{hosts: ['./*']}"), notes)
    assert not any(n.startswith("127.0.0.1_") for n in got)
    assert any(note in n for n in notes), notes


def test_gateway_listeners_per_port_with_sni_chains_for_terminated_tls():
    """istiod gateway.go: one listener per server port, sorted; a terminating HTTPS server's chain matches its
    hosts (namespace dropped, `*` left out, sorted) by SNI, read by the tls_inspector; plain HTTP servers of a
    port share one chain on `http.<port>`; gateways use the remote address and send `server: istio-envoy`."""
    rendered = render_gw(gateway=servers(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['ns/b.example.com', '*', 'a.example.com'], "
        "tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}}",
        "{port: {number: 443, name: https2, protocol: HTTPS}, hosts: ['*'], "
        "tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}}",
        "{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}",
        "{port: {number: 80, name: http2, protocol: HTTP}, hosts: ['x.example.com']}",
        "{port: {number: 27017, name: mongo, protocol: MONGO}, hosts: ['*']}",
        "{port: {number: 8443, name: tls, protocol: TLS}, hosts: ['*'], tls: {mode: PASSTHROUGH}}",
        "{port: {number: 31400, name: tcp, protocol: TCP}, hosts: ['*']}"))
    assert [lis["name"] for lis in rendered.listeners] == ["0.0.0.0_80", "0.0.0.0_443"]
    plain, tls = rendered.listeners
    for lis, port in ((plain, 80), (tls, 443)):
        assert lis["address"] == {"socket_address": {"address": "0.0.0.0", "port_value": port}}
        assert lis["traffic_direction"] == "OUTBOUND"
        assert "bind_to_port" not in lis
    assert "listener_filters" not in plain
    assert tls["listener_filters"] == [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]
    (chain,) = plain["filter_chains"]
    assert set(chain) == {"filters"}
    (hcm,) = chain["filters"]
    assert hcm["name"] == "envoy.filters.network.http_connection_manager"
    config = hcm["typed_config"]
    assert config["stat_prefix"] == "outbound_0.0.0.0_80"
    assert config["rds"]["route_config_name"] == "http.80"
    assert config["use_remote_address"] is True and config["server_name"] == "istio-envoy"
    assert "forward_client_cert_details" not in config and "set_current_client_cert_details" not in config
    assert (config["stream_idle_timeout"], config["normalize_path"], config["upgrade_configs"],
            config["http_protocol_options"]) == ("0s", True, [{"upgrade_type": "websocket"}], {"accept_http_10": True})
    assert [f["name"] for f in config["http_filters"]] == [
        "envoy.filters.http.fault", "envoy.filters.http.cors", "istio.stats", "envoy.filters.http.router"]
    sni, catch_all = tls["filter_chains"]
    assert sni["filter_chain_match"] == {"server_names": ["a.example.com", "b.example.com"]}
    assert "filter_chain_match" not in catch_all
    assert [c["filters"][0]["typed_config"]["rds"]["route_config_name"] for c in (sni, catch_all)] == [
        "https.443.https.tls.istio-system", "https.443.https2.tls.istio-system"]
    assert [c["filters"][0]["typed_config"]["stat_prefix"] for c in (sni, catch_all)] == ["outbound_0.0.0.0_443"] * 2
    for c in (sni, catch_all):
        assert c["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"] == [CERT]
    assert [n.split(": ", 1)[1] for n in rendered.notes] == [
        "Gateway istio-system/tls: spec.servers[4]: MONGO servers are not translated yet (HTTP, "
        "terminated HTTPS, TLS PASSTHROUGH/AUTO_PASSTHROUGH and TCP)",
        "Gateway istio-system/tls: spec.servers[5]: no VirtualService tls route is bound to this "
        "server: no filter chain",
        "Gateway istio-system/tls: spec.servers[6]: no VirtualService tcp route is bound to this "
        "server: no filter chain"]


MULTI = """apiVersion: v1
kind: Service
metadata: {name: multi}
spec: {selector: {app: multi}, ports: [{name: http, port: 8000}, {name: grpc, port: 7070}, {name: tcp, port: 5432}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: multi}
spec:
  selector: {matchLabels: {app: multi}}
  template:
    metadata: {labels: {app: multi}}
    spec: {containers: [{name: r, image: r, ports: [{containerPort: 8000}]}]}
"""


def _inbound(extra: str = "") -> dict:
    return by_name(render(MULTI + extra, workload="multi").listeners, "virtualInbound")


def test_inbound_chains_per_port_under_permissive_mtls():
    """istiod buildInboundListeners: per workload port an mTLS chain (Istio ALPNs, mesh context: HTTP ALPNs, TCP
    with peer exchange) and a plaintext one (TCP also a TLS passthrough chain), all named `0.0.0.0_<port>`;
    HTTP ports an inline `inbound|<port>||` route to the inbound cluster, retried on reset except HTTP/2."""
    lis = _inbound()
    assert lis["address"] == {"socket_address": {"address": "0.0.0.0", "port_value": 15006}}
    assert lis["traffic_direction"] == "INBOUND"
    assert [f["name"] for f in lis["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
    chains = lis["filter_chains"]
    assert [(c["name"], c["filter_chain_match"].get("transport_protocol"), "transport_socket" in c) for c in chains] \
        == [("0.0.0.0_5432", "tls", True), ("0.0.0.0_5432", "tls", False), ("0.0.0.0_5432", "raw_buffer", False),
            ("0.0.0.0_7070", "tls", True), ("0.0.0.0_7070", "raw_buffer", False),
            ("0.0.0.0_8000", "tls", True), ("0.0.0.0_8000", "raw_buffer", False)]
    assert [c["filter_chain_match"]["destination_port"] for c in chains] == [5432] * 3 + [7070] * 2 + [8000] * 2
    alpns = [c["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] for c in chains
             if "transport_socket" in c]
    assert alpns == [["istio-peer-exchange", "h2", "http/1.1"], ["h2", "http/1.1"], ["h2", "http/1.1"]]
    tcp = chains[0]["filters"]
    assert [f["name"] for f in tcp] == ["istio.stats", "envoy.filters.network.tcp_proxy"]
    assert tcp[1]["typed_config"]["cluster"] == "inbound|5432||multi.default.svc.cluster.local"
    for chain, port, retried in ((chains[3], 7070, False), (chains[5], 8000, True)):
        (hcm,) = chain["filters"]
        config = hcm["typed_config"]
        assert config["stat_prefix"] == f"inbound_0.0.0.0_{port}"
        assert "rds" not in config
        assert config["use_remote_address"] is False and config["server_name"] == "istio-envoy"
        assert config["forward_client_cert_details"] == "APPEND_FORWARD"
        assert config["set_current_client_cert_details"] == {"subject": True, "dns": True, "uri": True}
        rc = config["route_config"]
        assert rc["name"] == f"inbound|{port}||" and "@type" not in rc
        (vhost,) = rc["virtual_hosts"]
        assert (vhost["name"], vhost["domains"]) == (f"inbound|http|{port}", ["*"])
        (route,) = vhost["routes"]
        assert (route["name"], route["match"]) == ("default", {"prefix": "/"})
        assert route["decorator"] == {"operation": f"multi.default.svc.cluster.local:{port}/*"}
        action = route["route"]
        assert action["cluster"] == f"inbound|{port}||multi.default.svc.cluster.local"
        assert (action["timeout"], action["max_grpc_timeout"]) == ("0s", "0s")
        assert ("retry_policy" in action) is retried
    retry = chains[5]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"][
        "retry_policy"]
    assert (retry["retry_on"], retry["num_retries"]) == ("reset-before-request", 2)


def test_inbound_plaintext_only_under_disabled_mtls_needs_no_tls_inspector():
    lis = _inbound("---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default}\n"
                   "spec: {mtls: {mode: DISABLE}}\n")
    assert "listener_filters" not in lis
    assert [c["filter_chain_match"] for c in lis["filter_chains"]] == [
        {"destination_port": p, "transport_protocol": "raw_buffer"} for p in (5432, 7070, 8000)]
    assert not any("transport_socket" in c for c in lis["filter_chains"])


SECRET = ("apiVersion: v1\nkind: Secret\nmetadata: {name: cred, namespace: istio-system}\n"
          "type: kubernetes.io/tls\ndata: {tls.crt: Y2VydA==, tls.key: a2V5, ca.crt: Y2E=}\n")


@pytest.mark.parametrize("tls, common", [
    ("{mode: SIMPLE, credentialName: cred}",
     {"alpn_protocols": ALPN, "tls_certificates": [{"certificate_chain": {"inline_bytes": "Y2VydA=="},
                                                    "private_key": {"inline_bytes": "a2V5"}}]}),
    ("{mode: OPTIONAL_MUTUAL, credentialName: cred, subjectAltNames: [c.example]}",
     {"alpn_protocols": ALPN, "tls_certificates": [{"certificate_chain": {"inline_bytes": "Y2VydA=="},
                                                    "private_key": {"inline_bytes": "a2V5"}}],
      "validation_context": {"trusted_ca": {"inline_bytes": "Y2E="},
                             "match_subject_alt_names": [{"exact": "c.example"}]}}),
    ("{mode: SIMPLE, credentialName: gone}",
     {"alpn_protocols": ALPN, "tls_certificate_sds_secret_configs": [
         {"name": "kubernetes://gone", "sds_config": {"ads": {}, "resource_api_version": "V3"}}]}),
    ("{mode: OPTIONAL_MUTUAL, credentialName: gone, subjectAltNames: [c.example]}",
     {"alpn_protocols": ALPN, "tls_certificate_sds_secret_configs": [
         {"name": "kubernetes://gone", "sds_config": {"ads": {}, "resource_api_version": "V3"}}],
      "combined_validation_context": {
          "default_validation_context": {"match_subject_alt_names": [{"exact": "c.example"}]},
          "validation_context_sds_secret_config": {"name": "kubernetes://gone-cacert",
                                                   "sds_config": {"ads": {}, "resource_api_version": "V3"}}}}),
    ("{mode: MUTUAL, credentialName: gone}",
     {"alpn_protocols": ALPN, "tls_certificate_sds_secret_configs": [
         {"name": "kubernetes://gone", "sds_config": {"ads": {}, "resource_api_version": "V3"}}],
      "combined_validation_context": {
          "default_validation_context": {},
          "validation_context_sds_secret_config": {"name": "kubernetes://gone-cacert",
                                                   "sds_config": {"ads": {}, "resource_api_version": "V3"}}}}),
])
def test_gateway_credential_inline_when_found_else_sds_that_fails_closed(tls, common):
    """credentialName: the Secret in the gateway's namespace inline; a missing one is the SDS reference istiod
    sends (`kubernetes://<name>`, `-cacert` for the client CA), which nothing serves, with a note."""
    rendered = render_gw(SECRET, gateway=servers(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: " + tls + "}"))
    (chain,) = rendered.listeners[0]["filter_chains"]
    assert chain["transport_socket"]["typed_config"]["common_tls_context"] == common
    notes = [n.split(": ", 1)[1] for n in rendered.notes]
    if "gone" in tls:
        (note,) = notes
        assert note.startswith("Gateway istio-system/tls: spec.servers[0].tls.credentialName: ")
        assert note.endswith("; the server refers to SDS kubernetes://gone, which no one serves (its TLS handshakes "
                             "fail)")
    else:
        assert not notes


DB_PORTS = """apiVersion: v1
kind: Service
metadata: {name: db}
spec: {selector: {app: db}, ports: [{name: tcp-db, port: 5432}, {name: udp-dns, port: 53, protocol: UDP},
                                    {name: tcp-x, port: 9080}, {name: tls-web, port: 8443}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [db.default.svc.cluster.local]
  tls:
  - match: [{port: 8443, sniHosts: [db.default.svc.cluster.local]}]
    route: [{destination: {host: db}}]
"""


def test_sidecar_outbound_listeners_per_port_kind():
    """Explicit capture: 15001 bound, HTTP proxy over `http_proxy`; per HTTP port an unbound HCM on RDS `<port>`
    (a port some service serves as HTTP stays HTTP); per TCP port an unbound tcp_proxy with Istio's TCP stats; a
    TLS port with `tls` rules SNI chains and the tls_inspector; UDP ports get nothing."""
    got = {lis["name"]: lis for lis in render(DB_PORTS).listeners}
    assert sorted(got) == ["0.0.0.0_15001", "0.0.0.0_5432", "0.0.0.0_8443", "0.0.0.0_9080"]
    proxy = got["0.0.0.0_15001"]
    assert "bind_to_port" not in proxy and "listener_filters" not in proxy
    assert proxy["address"] == {"socket_address": {"address": "0.0.0.0", "port_value": 15001}}
    for name, route in (("0.0.0.0_15001", "http_proxy"), ("0.0.0.0_9080", "9080")):
        lis = got[name]
        assert lis["traffic_direction"] == "OUTBOUND"
        (chain,) = lis["filter_chains"]
        (hcm,) = chain["filters"]
        config = hcm["typed_config"]
        assert (config["stat_prefix"], config["rds"]["route_config_name"]) == (f"outbound_{name}", route)
        assert config["use_remote_address"] is False
        assert "server_name" not in config and "forward_client_cert_details" not in config
    for name in ("0.0.0.0_9080", "0.0.0.0_5432", "0.0.0.0_8443"):
        assert got[name]["bind_to_port"] is False
        assert got[name]["traffic_direction"] == "OUTBOUND"
    assert "listener_filters" not in got["0.0.0.0_5432"]
    assert [f["name"] for f in got["0.0.0.0_8443"]["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
    for port in (5432, 8443):
        (chain,) = got[f"0.0.0.0_{port}"]["filter_chains"]
        assert [f["name"] for f in chain["filters"]] == ["istio.stats", "envoy.filters.network.tcp_proxy"]
        assert chain["filters"][1]["typed_config"]["cluster"] == f"outbound|{port}||db.default.svc.cluster.local"
    assert got["0.0.0.0_8443"]["filter_chains"][0]["filter_chain_match"] == {
        "server_names": ["db.default.svc.cluster.local"]}


def _filter_names(lis: dict) -> list[list[str]]:
    return [[f["name"] for f in c["filters"]] for c in lis["filter_chains"]]


def test_a_telemetry_disabling_all_metrics_server_side_drops_the_inbound_stats_filters_only():
    """Telemetry `metrics.overrides` ALL_METRICS `disabled` in SERVER mode: no `istio.stats` on the inbound HTTP
    or TCP chains; the outbound (CLIENT) side keeps them."""
    off = ("---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: quiet}\nspec:\n"
           "  selector: {matchLabels: {app: multi}}\n"
           "  metrics: [{overrides: [{match: {metric: ALL_METRICS, mode: SERVER}, disabled: true}]}]\n")
    got = {lis["name"]: lis for lis in render(MULTI + off, workload="multi").listeners}
    inbound = _filter_names(got["virtualInbound"])
    assert inbound[0] == ["envoy.filters.network.tcp_proxy"]
    hcm = got["virtualInbound"]["filter_chains"][-1]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"]
    assert _filter_names(got["0.0.0.0_5432"]) == [["istio.stats", "envoy.filters.network.tcp_proxy"]]
    outbound = got["0.0.0.0_8000"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in outbound["http_filters"]][-2:] == ["istio.stats", "envoy.filters.http.router"]


@pytest.mark.parametrize("server, kind", [
    ("{port: {number: 27017, name: mongo, protocol: mongo}, hosts: ['*']}", "MONGO"),
    ("{port: {number: 27017, name: mongo, protocol: MONGO}, hosts: ['*'], tls: {mode: PASSTHROUGH}}",
     "MONGO PASSTHROUGH"),
])
def test_gateway_servers_not_translated_are_noted_and_get_no_listener(server, kind):
    rendered = render_gw(gateway=servers(server))
    assert not rendered.listeners
    assert rendered.notes[0].split(": ", 1)[1] == (
        f"Gateway istio-system/tls: spec.servers[0]: {kind} servers are not translated yet (HTTP, terminated HTTPS, "
        "TLS PASSTHROUGH/AUTO_PASSTHROUGH and TCP)")


@pytest.mark.parametrize("server", [
    "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {httpsRedirect: true}}",
    "{port: {number: 443, name: tls, protocol: tls}, hosts: ['*'], tls: {credentialName: x}}",
])
def test_an_https_or_tls_server_whose_tls_has_no_mode_passes_tls_through(server):
    """ServerTLSSettings.mode unset is PASSTHROUGH (istiod's IsPassThroughServer): the server routes by SNI to
    VirtualService `tls` routes and never terminates, whatever credentialName says."""
    rendered = render_gw(gateway=servers(server))
    assert not rendered.listeners
    assert rendered.notes[0].split(": ", 1)[1] == (
        "Gateway istio-system/tls: spec.servers[0]: no VirtualService tls route is bound to this server: no filter chain")


def test_inline_routes_put_the_route_configuration_without_its_type_in_the_connection_manager():
    """Options.inline_routes (static rendering): `route_config` is the RouteConfiguration the RDS name names."""
    from control.translate import Options
    routes = {rc["name"]: rc for rc in render().routes}
    got = {lis["name"]: lis for lis in render(options=Options(inline_routes=True)).listeners}
    for name, route in (("0.0.0.0_15001", "http_proxy"), ("0.0.0.0_9080", "9080")):
        config = got[name]["filter_chains"][0]["filters"][0]["typed_config"]
        assert "rds" not in config
        assert config["route_config"] == {k: v for k, v in routes[route].items() if k != "@type"}
        assert "@type" in routes[route]


def test_mesh_access_log_file_puts_access_logs_on_every_connection_manager():
    mesh = ("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: cp, namespace: "
            "istio-system}\nspec: {meshConfig: {accessLogFile: /dev/stdout}}\n")
    plain = {lis["name"]: lis for lis in render().listeners}
    logged = {lis["name"]: lis for lis in render(mesh).listeners}
    for name in ("0.0.0.0_15001", "0.0.0.0_9080"):
        assert "access_log" not in plain[name]["filter_chains"][0]["filters"][0]["typed_config"]
        (log,) = logged[name]["filter_chains"][0]["filters"][0]["typed_config"]["access_log"]
        assert log["typed_config"]["path"] == "/dev/stdout"


def test_skipped_sidecar_egress_listeners_do_not_stop_the_ones_after_them():
    """A port without a number is 0 (proto default): a unix domain socket listener."""
    notes: list[str] = []
    got = listeners(_egress("{port: {name: tcp-sock}, bind: 'unix:///var/run/out.sock', hosts: ['./*']}",
                            "{port: {number: 5433, name: tcp-db}, hosts: ['./*']}",
                            "{port: {number: 5434, name: tcp-db}, captureMode: NONE, hosts: ['./*']}",
                            "{port: {number: 5432, name: tcp-db}, captureMode: NONE, hosts: ['./*']}"), notes)
    assert "127.0.0.1_5432" in got
    assert [n.split("Sidecar default/default: ", 1)[1] for n in notes if "spec.egress[" in n] == [
        "spec.egress[0].port: unix domain socket egress listeners (port 0, a unix:// bind) are not translated",
        "spec.egress[1].port: only egress listeners with captureMode NONE and a TCP/TLS port are translated; this "
        "one is not",
        "spec.egress[2].port: no service its hosts admit has port 5434"]


def test_a_bound_tls_egress_port_routes_by_sni_as_the_port_listener_would():
    """A TLS egress port gets the SNI chains of the `tls` rules (read by the tls_inspector), as 0.0.0.0_<port>."""
    lis = listeners(web_tls_vs("""  - match: [{sniHosts: [a.web.example]}]
    route: [{destination: {host: web, subset: one}}]
""") + "---\n" + _egress("{port: {number: 8443, protocol: TLS, name: tls}, captureMode: NONE, hosts: ['./*']}"))[
        "127.0.0.1_8443"]
    assert [m for m, _ in chain_routes(lis)] == [{"server_names": ["a.web.example"]}]
    assert lis["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"


def test_servers_of_every_l4_kind_share_their_port_listener():
    """A PASSTHROUGH, an AUTO_PASSTHROUGH and a terminating HTTPS server on one port: a chain each, in order."""
    vs = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n"
          "  hosts: ['*.web.example']\n  gateways: [istio-system/tls]\n"
          "  tls: [{match: [{sniHosts: [a.web.example]}], route: [{destination: {host: reviews}}]}]\n")
    rendered = render_gw(vs, gateway=servers(
        "{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*.web.example'], tls: {mode: PASSTHROUGH}}",
        "{port: {number: 443, name: tls-auto, protocol: TLS}, hosts: [b.local], tls: {mode: AUTO_PASSTHROUGH}}",
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: [c.example.com], "
        "tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}}"))
    (lis,) = rendered.listeners
    assert [(c["filter_chain_match"]["server_names"], c["filters"][-1]["name"]) for c in lis["filter_chains"]] == [
        (["a.web.example"], "envoy.filters.network.tcp_proxy"),
        (["b.local"], "envoy.filters.network.tcp_proxy"),
        (["c.example.com"], "envoy.filters.network.http_connection_manager")]


@pytest.mark.parametrize("server, listener, note", [
    ("{port: {number: 0, name: http, protocol: HTTP}, bind: 'unix:///var/run/gw.sock', hosts: ['*']}", None,
     "spec.servers[0].bind: unix domain socket servers (port 0, a unix:// bind) are not translated"),
    ("{port: {number: 8080, name: http, protocol: HTTP}, bind: 10.0.0.7, hosts: ['*']}", "0.0.0.0_8080",
     "spec.servers[0].bind: bind 10.0.0.7 is not translated: the server's listener binds 0.0.0.0"),
])
def test_a_gateway_server_bind_is_noted(server, listener, note):
    """The server after it is translated as usual."""
    rendered = render_gw(gateway=servers(server, "{port: {number: 80, name: http2, protocol: HTTP}, hosts: ['*']}"))
    assert [lis["name"] for lis in rendered.listeners] == ["0.0.0.0_80"] + ([listener] if listener else [])
    assert [n.split("Gateway istio-system/tls: ", 1)[1] for n in rendered.notes if "spec.servers" in n] == [note]


def test_gateway_inline_routes():
    from control.translate import Options, render_gateway
    from control.istio.load import load_text
    from control.mesh import build_mesh
    from tests.unit.control.test_translate_decisions import BASE
    gateway = servers("{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}",
                      "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], "
                      "tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}}")
    mesh = build_mesh(load_text(BASE + "---\n" + gateway, "g.yaml").resources)
    rds = {rc["name"]: rc for rc in render_gateway(mesh, "istio-ingressgateway").routes}
    inline = render_gateway(mesh, "istio-ingressgateway", options=Options(inline_routes=True)).listeners
    got = [lis["filter_chains"][0]["filters"][0]["typed_config"]["route_config"] for lis in inline]
    assert got == [{k: v for k, v in rds[n].items() if k != "@type"} for n in ("http.80", "https.443.https.tls.istio-system")]


def test_a_bound_egress_port_sees_the_subsets_of_destination_rules():
    """The bound listener's `tcp` route to a subset a DestinationRule defines is routed there, with no note."""
    notes: list[str] = []
    lis = listeners(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: db}\n"
        "spec: {host: db, subsets: [{name: v1, labels: {version: v1}}]}\n---\n"
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: db}\n"
        "spec: {hosts: [db], tcp: [{route: [{destination: {host: db, subset: v1}}]}]}\n---\n"
        + _egress("{port: {number: 5432, name: tcp-db}, captureMode: NONE, hosts: ['./*']}"), notes)["127.0.0.1_5432"]
    (chain,) = lis["filter_chains"]
    assert chain["filters"][-1]["typed_config"]["cluster"] == "outbound|5432|v1|db.default.svc.cluster.local"
    assert not [n for n in notes if "DestinationRule" in n], notes
