"""AuthorizationPolicy on a TCP port: istiod's network RBAC filter (`envoy.filters.network.rbac`, translated by
control.translate.authz with `for_tcp`) in front of a tcp_proxy in a real pyproxy, over mTLS.

The policy allows one service account and, in a second rule, `GET` from anyone: on TCP the method cannot be
seen, so istiod drops that ALLOW rule (and says so) rather than letting everyone in. A denied connection is
closed before anything is proxied; stats `tcp.rbac.allowed|denied` (Istio's stat prefix `tcp.`).
"""
from __future__ import annotations

import asyncio
import ssl

import pytest

from control.istio.load import load_text
from control.translate.authz import build_filters
from tests.support.pki import TestCA
from tests.support.proxy import cluster
from tests.support.tcp import EchoServer, tcp_bootstrap, tcp_proxy
from tests.support.tls import client_ctx, downstream_tls

POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db, namespace: default}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/api"]}}]
  - to: [{operation: {methods: ["GET"]}}]
"""
IDS = {"api": "spiffe://cluster.local/ns/default/sa/api", "web": "spiffe://cluster.local/ns/default/sa/web"}


class Notes(list):
    def add(self, pol, path, message):
        self.append(f"{pol.name}: {path}: {message}")


@pytest.fixture(scope="module")
def pki():
    ca = TestCA("mesh")
    return {"ca": ca, "server": ca.issue(uris=["spiffe://cluster.local/ns/default/sa/db"]),
            **{who: ca.issue(uris=[uri]) for who, uri in IDS.items()}}


@pytest.fixture
async def echo():
    server = await EchoServer("db").start()
    yield server
    await server.close()


async def _echoed(port: int, pki, who: str) -> bytes:
    """Send a line over mTLS and read its echo (TLS cannot half-close: read what comes until the echo or EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx(pki["ca"].cert_pem, pki[who]),
                                                   server_hostname="db")
    writer.write(b"select 1")
    data = b""
    try:
        while len(data) < 8:
            chunk = await asyncio.wait_for(reader.read(64), 10)  # hang guard only
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    writer.close()
    return data


async def test_network_rbac_allows_the_principal_and_closes_the_rest(pki, echo, proxy_factory):
    notes = Notes()
    filters = build_filters([r for r in load_text(POLICY, "p.yaml").resources], notes, for_tcp=True)
    assert [f["name"] for f in filters] == ["envoy.filters.network.rbac"]
    assert notes == ['db: spec.rules[1]: skipped rule ns[default]-policy[db]-rule[1]: "methods" is HTTP only']
    chain = {"filters": [*filters, tcp_proxy("db")],
             "transport_socket": downstream_tls(pki["server"], pki["ca"].cert_pem, require_client=True)}
    proxy = await proxy_factory(tcp_bootstrap([cluster("db", [echo.port])], [chain]))
    got = {}
    for who in ("api", "web", "api"):
        got.setdefault(who, []).append(await _echoed(proxy.port, pki, who))
    assert got == {"api": [b"select 1"] * 2, "web": [b""]}
    assert (proxy.stat("tcp.rbac.allowed"), proxy.stat("tcp.rbac.denied")) == (2, 1)
    assert len(echo.conns) == 2  # the denied connection never reached the upstream
