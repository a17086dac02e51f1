"""The gateway's TLS servers proven live: the control plane's real translator renders the Gateway (Secrets as
`kubernetes.io/tls` manifests in the config directory), and a pyproxy runs exactly those listeners (ports moved
to 127.0.0.1:0, clusters pointed at local test servers). Real handshakes everywhere:

* SIMPLE with credentialName: HTTPS through the gateway, the client trusting only the CA that signed the
  Secret's certificate -> 200;
* MUTUAL: without a client certificate the handshake is refused; with one the CA signed -> 200;
* httpsRedirect: plain HTTP -> 301 to https://;
* PASSTHROUGH by SNI: two SNI names reach two different TLS upstreams, each client sees its upstream's own
  certificate (the gateway terminates nothing).
"""
from __future__ import annotations

import asyncio
import base64
import copy
import ssl

import pytest
import yaml
from cryptography import x509

from control.istio.load import load_paths
from control.mesh import build_mesh
from control.translate import Options, render_gateway
from tests.support.client import PeerClosed, RawClient
from tests.support.pki import TestCA
from tests.support.proxy import cluster
from tests.support.tcp import EchoServer
from tests.support.tls import client_ctx, server_ctx

CLIENT_ID = "spiffe://cluster.local/ns/partners/sa/client"


def _b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode("ascii")


def _mesh_config(pki) -> list[dict]:
    shop, partner = pki["shop"], pki["partners"]
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "productpage", "namespace": "web"},
         "spec": {"selector": {"app": "productpage"}, "ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "alpha", "namespace": "web"},
         "spec": {"selector": {"app": "alpha"}, "ports": [{"name": "tls", "port": 8443}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "beta", "namespace": "web"},
         "spec": {"selector": {"app": "beta"}, "ports": [{"name": "tls", "port": 9443}]}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "shop-cert", "namespace": "istio-system"},
         "data": {"tls.crt": _b64(shop.chain_pem), "tls.key": _b64(shop.key_pem)}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "partner-cert", "namespace": "istio-system"},
         "data": {"tls.crt": _b64(partner.chain_pem), "tls.key": _b64(partner.key_pem),
                  "ca.crt": _b64(pki["ca"].cert_pem)}},
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "edge", "namespace": "istio-system"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
             {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["web/shop.example.com"],
              "tls": {"httpsRedirect": True}},
             {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["web/shop.example.com"],
              "tls": {"mode": "SIMPLE", "credentialName": "shop-cert"}},
             {"port": {"number": 8443, "name": "https-partners", "protocol": "HTTPS"},
              "hosts": ["web/partners.example.com"], "tls": {"mode": "MUTUAL", "credentialName": "partner-cert"}},
             {"port": {"number": 15443, "name": "tls", "protocol": "TLS"}, "hosts": ["*.example.org"],
              "tls": {"mode": "PASSTHROUGH"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "shop", "namespace": "web"},
         "spec": {"hosts": ["shop.example.com", "partners.example.com"], "gateways": ["istio-system/edge"],
                  "http": [{"route": [{"destination": {"host": "productpage", "port": {"number": 9080}}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "passthrough", "namespace": "web"},
         "spec": {"hosts": ["alpha.example.org", "beta.example.org"], "gateways": ["istio-system/edge"],
                  "tls": [{"match": [{"sniHosts": ["alpha.example.org"]}],
                           "route": [{"destination": {"host": "alpha", "port": {"number": 8443}}}]},
                          {"match": [{"sniHosts": ["beta.example.org"]}],
                           "route": [{"destination": {"host": "beta", "port": {"number": 9443}}}]}]}},
    ]


@pytest.fixture(scope="module")
def pki():
    ca = TestCA("gateway")
    return {"ca": ca, "shop": ca.issue(dns=["shop.example.com"]), "partners": ca.issue(dns=["partners.example.com"]),
            "client": ca.issue(uris=[CLIENT_ID]), "alpha": ca.issue(dns=["alpha.example.org"]),
            "beta": ca.issue(dns=["beta.example.org"]), "stranger": TestCA("other").issue(uris=[CLIENT_ID])}


@pytest.fixture
async def gateway(pki, tmp_path, upstream, proxy_factory):
    """(running proxy, {listener name: port}, {name: EchoServer}) for the rendered gateway."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "mesh.yaml").write_text(yaml.safe_dump_all(_mesh_config(pki)))
    loaded = load_paths([str(config_dir)])
    rendered = render_gateway(build_mesh(loaded.resources), "istio-ingressgateway", options=Options(inline_routes=True))
    alpha = await EchoServer("alpha", ssl=server_ctx(pki["alpha"])).start()
    beta = await EchoServer("beta", ssl=server_ctx(pki["beta"])).start()
    ports = {"outbound|9080||productpage.web.svc.cluster.local": upstream.port,
             "outbound|8443||alpha.web.svc.cluster.local": alpha.port,
             "outbound|9443||beta.web.svc.cluster.local": beta.port}
    listeners = []
    for lis in rendered.listeners:
        lis = copy.deepcopy(lis)
        lis["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
        listeners.append(lis)
    clusters = [cluster(name, [port]) for name, port in ports.items()]
    proxy = await proxy_factory({"static_resources": {"listeners": listeners, "clusters": clusters}})
    bound = {name: rt.port for name, rt in proxy.server.listeners.items()}
    yield proxy, bound, {"alpha": alpha, "beta": beta}
    await alpha.close()
    await beta.close()


async def test_simple_https_with_a_kubernetes_tls_secret_answers_200(pki, gateway, upstream):
    proxy, ports, _ = gateway
    c = await RawClient.connect(ports["0.0.0.0_443"], ssl=client_ctx(pki["ca"].cert_pem),
                                server_hostname="shop.example.com")
    r = await c.request("GET", "/products", host="shop.example.com")
    der = c.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    c.writer.close()
    assert (r.status, r.body) == (200, b"ok")
    assert x509.load_der_x509_certificate(der).serial_number == pki["shop"].cert.serial_number
    assert upstream.requests[0].header("x-forwarded-proto") == "https"


async def test_mutual_refuses_a_client_without_a_certificate_and_serves_one_with(pki, gateway, upstream):
    proxy, ports, _ = gateway
    port = ports["0.0.0.0_8443"]
    for leaf in (None, pki["stranger"]):
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError, PeerClosed)):
            c = await RawClient.connect(port, ssl=client_ctx(pki["ca"].cert_pem, leaf),
                                        server_hostname="partners.example.com")
            await c.request("GET", "/", host="partners.example.com")  # TLS 1.3: refused on the first read
    assert upstream.requests == []
    c = await RawClient.connect(port, ssl=client_ctx(pki["ca"].cert_pem, pki["client"]),
                                server_hostname="partners.example.com")
    r = await c.request("GET", "/", host="partners.example.com")
    c.writer.close()
    assert r.status == 200
    assert proxy.stat("listener.127.0.0.1_0.ssl.fail_verify_no_cert") == 1
    assert proxy.stat("listener.127.0.0.1_0.ssl.fail_verify_error") == 1


async def test_https_redirect_answers_plain_http_with_301_to_https(gateway, upstream):
    proxy, ports, _ = gateway
    c = await RawClient.connect(ports["0.0.0.0_80"])
    r = await c.request("GET", "/cart?x=1", host="shop.example.com")
    c.writer.close()
    assert (r.status, r.header("location")) == (301, "https://shop.example.com/cart?x=1")
    assert upstream.requests == []


async def test_passthrough_by_sni_reaches_each_upstream_with_its_own_certificate(pki, gateway):
    proxy, ports, servers = gateway
    for sni, name in (("alpha.example.org", "alpha"), ("beta.example.org", "beta")):
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["0.0.0.0_15443"],
                                                       ssl=client_ctx(pki["ca"].cert_pem), server_hostname=sni)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(der).serial_number == pki[name].cert.serial_number
        writer.write(b"hello " + name.encode())
        assert await reader.readexactly(6 + len(name)) == b"hello " + name.encode()
        writer.close()
        assert servers[name].last_sni == sni
    assert proxy.stat("tcp.outbound|8443||alpha.web.svc.cluster.local.downstream_cx_total") == 1
    assert proxy.stat("tcp.outbound|9443||beta.web.svc.cluster.local.downstream_cx_total") == 1
