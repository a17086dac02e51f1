"""Oracle: envoy.filters.network.sni_cluster before a tcp_proxy (Istio's AUTO_PASSTHROUGH gateway chain), real
Envoy against pyproxy (`pyproxy run`, a real subprocess).

One listener with tls_inspector and the chain [sni_cluster, tcp_proxy(BlackHoleCluster)]; two clusters named by
the SNI a sidecar sends (`outbound_.<port>_.<subset>_.<host>`), each a TLS echo server with its own certificate.
Each client reaches the server its SNI names (it is shown that server's certificate: nothing terminated on the
way); an SNI naming no cluster is closed. The access-log lines (cluster, flags, SNI) must match too.
"""
from __future__ import annotations

import asyncio
import json
import ssl

from cryptography import x509

from tests.support.envoy import require_envoy, start_either
from tests.support.pki import TestCA
from tests.support.proxy import FILE_LOG_TYPE, cluster, socket_address
from tests.support.tcp import EchoServer, tcp_proxy
from tests.support.tls import TLS_INSPECTOR, client_ctx, server_ctx

SNI_CLUSTER = {"name": "envoy.filters.network.sni_cluster",
               "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster"}}
LOG = {"cluster": "%UPSTREAM_CLUSTER%", "flags": "%RESPONSE_FLAGS%", "sni": "%REQUESTED_SERVER_NAME%"}
NAMES = ("outbound_.9000_._.a.example.com", "outbound_.9000_.v2_.b.example.com")


def bootstrap(ports: dict[str, int], log_path) -> dict:
    proxy = tcp_proxy("BlackHoleCluster", stat_prefix="BlackHoleCluster")
    proxy["typed_config"]["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": FILE_LOG_TYPE, "path": str(log_path), "log_format": {"json_format": LOG}}}]
    clusters = [cluster(name, [port]) for name, port in ports.items()]
    clusters.append({"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"})
    return {"static_resources": {
        "listeners": [{"name": "auto", "address": socket_address(0), "listener_filters": [TLS_INSPECTOR],
                       "filter_chains": [{"filters": [SNI_CLUSTER, proxy]}]}],
        "clusters": clusters}}


async def observe(port: int, ca: TestCA, log_path) -> tuple:
    seen = []
    for sni in (*NAMES, "outbound_.9000_._.nowhere.example.com"):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=client_ctx(ca.cert_pem), server_hostname=sni), 10)
        except (ssl.SSLError, ConnectionError, EOFError):
            seen.append((sni, "closed"))
            continue
        leaf = x509.load_der_x509_certificate(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
        writer.write(b"ping")
        seen.append((sni, await asyncio.wait_for(reader.readexactly(4), 10), leaf.subject.rfc4514_string()))
        writer.close()
    for _ in range(500):
        lines = [json.loads(x) for x in log_path.read_text().splitlines()] if log_path.exists() else []
        if len(lines) == 3:
            return seen, sorted(lines, key=lambda e: e["sni"])
        await asyncio.sleep(0.01)  # poll interval of a bounded wait
    raise AssertionError(f"{log_path}: not three access-log lines")


async def test_sni_cluster_routes_by_sni_as_envoy_does(tmp_path):
    require_envoy()
    ca = TestCA("sni-cluster")
    leaves = {NAMES[0]: ca.issue(dns=["a.example.com"]), NAMES[1]: ca.issue(dns=["b.example.com"])}
    views = []
    for who in ("envoy", "pyproxy"):
        d = tmp_path / who
        d.mkdir()
        servers = {name: await EchoServer(name, ssl=server_ctx(leaf)).start() for name, leaf in leaves.items()}
        log_path = d / "tcp.log"
        proc, (port,) = await start_either(who, bootstrap({n: s.port for n, s in servers.items()}, log_path), d)
        try:
            views.append(await observe(port, ca, log_path))
        finally:
            proc.stop()
            for s in servers.values():
                await s.close()
    envoy, pyproxy = views
    assert pyproxy == envoy
    seen, log = envoy
    assert [s[1] for s in seen] == [b"ping", b"ping", "closed"]
    assert {e["sni"]: (e["cluster"], e["flags"]) for e in log} == {
        NAMES[0]: (NAMES[0], "-"), NAMES[1]: (NAMES[1], "-"), "outbound_.9000_._.nowhere.example.com": (None, "NC")}
