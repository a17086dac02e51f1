"""tcp_proxy (envoy.filters.network.tcp_proxy) on real sockets: bytes both ways, FIN passed on, the failure
flags (UF, UH, UO, NC) with their stats, idle timeout, back-pressure, TLS terminated in front of a tcp_proxy,
TLS passed through by SNI (the upstream's own certificate reaches the client), and mTLS origination."""
from __future__ import annotations

import asyncio
import json
import ssl

import pytest
from cryptography import x509

from tests.support.pki import TestCA
from tests.support.proxy import cluster
from tests.support.tcp import EchoServer, exchange, tcp_bootstrap, tcp_proxy, tls_half_close_exchange
from tests.support.tls import TLS_INSPECTOR, client_ctx, downstream_tls, server_ctx, upstream_tls
from tests.support.loops import both_event_loops


event_loop_policy = both_event_loops  # every test runs on asyncio and on uvloop


@pytest.fixture
async def echo():
    servers: list[EchoServer] = []

    async def make(name: str = "echo", **kw) -> EchoServer:
        s = await EchoServer(name, **kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        await s.close()


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _refused(port: int, payload: bytes) -> bytes:
    """What a client reads from a connection the proxy closes without proxying it (a reset counts as nothing:
    the bytes it sent were never read)."""
    try:
        return (await exchange(port, payload))[0]
    except ConnectionResetError:
        return b""


async def _until(predicate, what: str, timeout: float = 30.0):
    """Poll `predicate` until it holds; `timeout` only stops a hang (generous: `make test` runs files in
    parallel, and a 5 s bound once expired on a busy 2-core machine before 32 MiB had filled the buffers)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)  # poll interval of a bounded wait


async def test_bytes_flow_both_ways_and_a_fin_is_passed_on(echo, proxy_factory, tmp_path):
    up = await echo("a")
    log = tmp_path / "tcp.log"
    proxy = await proxy_factory(tcp_bootstrap([cluster("a", [up.port])],
                                              [{"filters": [tcp_proxy("a", access_log=log)]}]))
    data, _ = await exchange(proxy.port, b"ping" * 1000)
    # the echo came back, then the upstream saw our FIN (while still able to write) and said bye
    assert data == b"ping" * 1000 + b"a:bye:4000"
    await _until(lambda: _log(log), "access log line")
    (entry,) = _log(log)
    assert entry == {"flags": "-", "rx": 4000, "tx": 4010, "host": f"127.0.0.1:{up.port}", "cluster": "a",
                     "sni": None, "code": 0}
    assert [proxy.stat(f"tcp.tcp.{n}") for n in ("downstream_cx_total", "downstream_cx_rx_bytes_total",
                                                 "downstream_cx_tx_bytes_total")] == [1, 4000, 4010]
    assert proxy.stat("cluster.a.upstream_cx_total") == 1
    await _until(lambda: proxy.stat("cluster.a.upstream_cx_destroy") == 1, "upstream closed")
    assert proxy.stat("cluster.a.upstream_cx_active") == 0
    assert proxy.stat("cluster.a.upstream_cx_rx_bytes_total") == 4010


async def test_an_upstream_close_closes_the_client(echo, proxy_factory):
    up = await echo("a")
    proxy = await proxy_factory(tcp_bootstrap([cluster("a", [up.port])], [{"filters": [tcp_proxy("a")]}]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    up.conns[0].transport.close()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # EOF: the close was propagated
    writer.close()


async def test_weighted_clusters_send_connections_to_each(echo, proxy_factory):
    a, b = await echo("a"), await echo("b")
    proxy = await proxy_factory(tcp_bootstrap([cluster("a", [a.port]), cluster("b", [b.port])],
                                              [{"filters": [tcp_proxy({"a": 1, "b": 1})]}]), seed=7)
    seen = set()
    for i in range(20):
        data, _ = await exchange(proxy.port, b"x")
        seen.add(data[1:2])
    assert seen == {b"a", b"b"}


@pytest.mark.parametrize("case, flag", [("refused", "UF,URX"), ("no_hosts", "UH"), ("no_cluster", "NC")])
async def test_a_connection_that_cannot_be_proxied_is_closed_with_its_flag(case, flag, proxy_factory, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    ports = {"refused": [dead], "no_hosts": [], "no_cluster": [dead]}[case]
    name = "missing" if case == "no_cluster" else "a"
    log = tmp_path / "tcp.log"
    proxy = await proxy_factory(tcp_bootstrap([cluster("a", ports)], [{"filters": [tcp_proxy(name, access_log=log)]}]))
    assert await _refused(proxy.port, b"hello") == b""
    await _until(lambda: _log(log), "access log line")
    assert _log(log)[0]["flags"] == flag
    stat = {"UF,URX": "cluster.a.upstream_cx_connect_fail", "UH": "cluster.a.upstream_cx_none_healthy",
            "NC": "tcp.tcp.downstream_cx_no_route"}[flag]
    assert proxy.stat(stat) == 1


async def test_max_connect_attempts_tries_another_host(echo, proxy_factory, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    up = await echo("a")
    log = tmp_path / "tcp.log"
    proxy = await proxy_factory(tcp_bootstrap([cluster("a", [dead, up.port])],
                                              [{"filters": [tcp_proxy("a", access_log=log,
                                                                      max_connect_attempts=2)]}]))
    results = [(await exchange(proxy.port, b"x"))[0] for _ in range(2)]
    assert results == [b"xa:bye:1", b"xa:bye:1"]  # round robin starts on either host; the dead one is skipped
    # round robin over [dead, up] puts at least one of the two first attempts on the dead host
    assert proxy.stat("cluster.a.upstream_cx_connect_fail") in (1, 2)
    await _until(lambda: len(_log(log)) == 2, "two log lines")
    assert {e["host"] for e in _log(log)} == {f"127.0.0.1:{up.port}"}


async def test_circuit_breaker_max_connections_overflows_with_uo(echo, proxy_factory, tmp_path):
    up = await echo("a")
    log = tmp_path / "tcp.log"
    c = cluster("a", [up.port], circuit_breakers={"thresholds": [{"max_connections": 1}]})
    proxy = await proxy_factory(tcp_bootstrap([c], [{"filters": [tcp_proxy("a", access_log=log)]}]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"one")
    assert await reader.readexactly(3) == b"one"  # the first connection holds the only upstream connection
    assert await _refused(proxy.port, b"two") == b""
    await _until(lambda: _log(log), "overflow logged")
    assert _log(log)[0]["flags"] == "UO"
    proxy.server.collect_stats()
    assert proxy.stat("cluster.a.upstream_cx_overflow") == 1
    writer.close()


async def test_idle_timeout_closes_both_sides(echo, proxy_factory):
    up = await echo("a")
    proxy = await proxy_factory(tcp_bootstrap([cluster("a", [up.port])],
                                              [{"filters": [tcp_proxy("a", idle_timeout="0.2s")]}]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"hi")
    assert await reader.readexactly(2) == b"hi"
    assert await asyncio.wait_for(reader.read(), 10) == b""  # nothing moved: the proxy closed us
    assert proxy.stat("tcp.tcp.idle_timeout") == 1
    await asyncio.wait_for(up.conns[0].closed, 5)
    writer.close()


async def test_a_slow_upstream_pauses_reading_from_the_client(echo, proxy_factory):
    up = await echo("a", echo=False)
    up.hold()  # the upstream reads nothing for now
    proxy = await proxy_factory(tcp_bootstrap([cluster("a", [up.port])], [{"filters": [tcp_proxy("a")]}]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    total = 32 * 1024 * 1024
    chunk = b"z" * 65536
    sent = 0

    async def send_all():
        nonlocal sent
        while sent < total:
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()
        writer.write_eof()

    task = asyncio.ensure_future(send_all())
    await _until(lambda: proxy.stat("tcp.tcp.downstream_flow_control_paused_reading_total") >= 1,
                 "the proxy paused reading the client")
    assert not task.done()  # the client is blocked too: nothing piles up without bound in the proxy
    up.release()
    await asyncio.wait_for(task, 30)
    data = await asyncio.wait_for(reader.read(), 30)
    assert data == f"a:bye:{total}".encode()
    assert proxy.stat("tcp.tcp.downstream_flow_control_resumed_reading_total") >= 1
    writer.close()


@pytest.fixture(scope="module")
def pki():
    ca = TestCA("tcp")
    return {"ca": ca, "a": ca.issue(dns=["a.example.com"]), "b": ca.issue(dns=["b.example.com"]),
            "client": ca.issue(uris=["spiffe://cluster.local/ns/default/sa/client"]),
            "front": ca.issue(dns=["front.example.com"])}


async def test_the_client_is_not_read_while_the_upstream_connects(proxy_factory):
    """Envoy's tcp_proxy stops reading the client until its upstream connection is up (TcpProxy::Filter
    readDisable(true) in onNewConnection), so nothing piles up in the proxy meanwhile. Under uvloop an accepted
    transport starts reading after connection_made returns, whatever the protocol asked in it (the asyncio bug
    CPython gh-103607, still in uvloop 0.23): the session pauses again once it has."""
    import socket

    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    filler = socket.create_connection(full.getsockname())  # takes the accept queue's one place: later SYNs wait
    try:
        proxy = await proxy_factory(tcp_bootstrap([cluster("slow", [full.getsockname()[1]], connect_timeout="5s")],
                                                  [{"filters": [tcp_proxy("slow")]}]))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"z" * 65536)
        await writer.drain()
        for _ in range(20):  # loop passes in which a reading proxy would have read it
            await asyncio.sleep(0.01)
        assert proxy.stat("tcp.tcp.downstream_cx_rx_bytes_total") == 0
        assert proxy.stat("cluster.slow.upstream_cx_total") == 1  # still connecting
        writer.close()
    finally:
        filler.close()
        full.close()


async def test_tls_terminated_in_front_of_a_tcp_proxy(pki, echo, proxy_factory, tmp_path):
    up = await echo("plain")
    log = tmp_path / "tcp.log"
    chain = {"filters": [tcp_proxy("a", access_log=log)], "transport_socket": downstream_tls(pki["front"])}
    proxy = await proxy_factory(tcp_bootstrap([cluster("a", [up.port])], [chain]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, ssl=client_ctx(pki["ca"].cert_pem),
                                                   server_hostname="front.example.com")
    writer.write(b"secret")
    assert await reader.readexactly(6) == b"secret"  # decrypted on the way in, encrypted on the way back
    writer.close()
    await asyncio.wait_for(up.conns[0].closed, 5)
    await _until(lambda: _log(log), "access log line")
    assert _log(log)[0]["sni"] == "front.example.com"


async def test_tls_passthrough_by_sni_reaches_each_upstream_with_its_own_certificate(pki, echo, proxy_factory,
                                                                                     tmp_path):
    a = await echo("a", ssl=server_ctx(pki["a"]))
    b = await echo("b", ssl=server_ctx(pki["b"]))
    log = tmp_path / "tcp.log"
    chains = [{"filter_chain_match": {"server_names": ["a.example.com"]},
               "filters": [tcp_proxy("a", stat_prefix="a", access_log=log)]},
              {"filter_chain_match": {"server_names": ["b.example.com"]},
               "filters": [tcp_proxy("b", stat_prefix="b", access_log=log)]}]
    proxy = await proxy_factory(tcp_bootstrap([cluster("a", [a.port]), cluster("b", [b.port])], chains,
                                              listener_filters=[TLS_INSPECTOR]))
    for sni, leaf, server in (("a.example.com", pki["a"], a), ("b.example.com", pki["b"], b)):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, ssl=client_ctx(pki["ca"].cert_pem),
                                                       server_hostname=sni)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(der).serial_number == leaf.cert.serial_number
        writer.write(b"through")
        assert await reader.readexactly(7) == b"through"
        assert server.last_sni == sni  # the upstream itself terminated the TLS the client started
        writer.close()
    await _until(lambda: len(_log(log)) == 2, "two log lines")
    assert sorted((e["sni"], e["cluster"]) for e in _log(log)) == [("a.example.com", "a"), ("b.example.com", "b")]
    # the proxy terminated nothing: a passthrough listener has no ssl.* stats at all (as in Envoy, which creates
    # them with a TLS transport socket; tests/differential/test_admin_stats_differential.py)
    assert proxy.stat_or_absent("listener.127.0.0.1_0.ssl.handshake") is None
    with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
        r, w = await asyncio.open_connection("127.0.0.1", proxy.port, ssl=client_ctx(pki["ca"].cert_pem),
                                             server_hostname="c.example.com")
        await r.read()
    assert proxy.stat("listener.127.0.0.1_0.no_filter_chain_match") == 1


async def test_mtls_origination_presents_the_cluster_certificate(pki, echo, proxy_factory):
    up = await echo("secure", ssl=server_ctx(pki["a"], pki["ca"].cert_pem, require_client=True))
    c = cluster("a", [up.port], transport_socket=upstream_tls(pki["client"], pki["ca"].cert_pem, sni="a.example.com"))
    proxy = await proxy_factory(tcp_bootstrap([c], [{"filters": [tcp_proxy("a")]}]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"plain in")
    assert await reader.readexactly(8) == b"plain in"  # encrypted between the proxy and the upstream
    writer.close()
    cert = x509.load_der_x509_certificate(up.conns[0].peer_cert)
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == ["spiffe://cluster.local/ns/default/sa/client"]
    assert up.last_sni == "a.example.com"
    assert proxy.stat("cluster.a.ssl.handshake") == 1


# --- half-close over TLS (tls/half_close.py): close_notify + FIN is a FIN; the other direction keeps flowing ---

async def test_a_tls_client_that_half_closes_still_reads_the_answer(pki, echo, proxy_factory):
    """The client sends close_notify and its FIN; the proxy passes the FIN to the upstream (which then answers
    `bye` and closes) and keeps the TLS session up to carry that answer back, then closes it."""
    up = await echo("plain")
    chain = {"filters": [tcp_proxy("a")], "transport_socket": downstream_tls(pki["front"])}
    proxy = await proxy_factory(tcp_bootstrap([cluster("a", [up.port])], [chain]))
    payload = b"x" * 100_000
    got = await tls_half_close_exchange(proxy.port, payload, client_ctx(pki["ca"].cert_pem), "front.example.com")
    assert got == payload + b"plain:bye:100000"
    assert up.conns[0].eof  # the upstream saw a FIN, not a close


async def test_a_fin_is_passed_to_a_tls_upstream_as_close_notify_and_its_answer_comes_back(pki, echo,
                                                                                         proxy_factory):
    up = await echo("secure", ssl=server_ctx(pki["a"], pki["ca"].cert_pem, require_client=True))
    c = cluster("a", [up.port], transport_socket=upstream_tls(pki["client"], pki["ca"].cert_pem, sni="a.example.com"))
    proxy = await proxy_factory(tcp_bootstrap([c], [{"filters": [tcp_proxy("a")]}]))
    data, _ = await exchange(proxy.port, b"half closed")
    assert data == b"half closed" + b"secure:bye:11"  # the upstream read our close_notify as EOF, then answered
    assert up.conns[0].eof


# --- envoy.filters.network.sni_cluster (Istio AUTO_PASSTHROUGH gateways) -----------------------------------------

SNI_CLUSTER = {"name": "envoy.filters.network.sni_cluster",
               "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster"}}


async def test_sni_cluster_sends_each_connection_to_the_cluster_its_sni_names(pki, echo, proxy_factory, tmp_path):
    """One chain [sni_cluster, tcp_proxy(BlackHoleCluster)]: the SNI is the cluster's name, so each client's own
    TLS reaches the upstream that name stands for; an SNI naming no cluster is closed (NC)."""
    a = await echo("a", ssl=server_ctx(pki["a"]))
    b = await echo("b", ssl=server_ctx(pki["b"]))
    log = tmp_path / "tcp.log"
    names = {"outbound_.9000_._.a.example.com": a, "outbound_.9000_.v2_.b.example.com": b}
    chain = {"filters": [SNI_CLUSTER, tcp_proxy("BlackHoleCluster", stat_prefix="BlackHoleCluster", access_log=log)]}
    clusters = [cluster(name, [server.port]) for name, server in names.items()]
    clusters.append({"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"})
    proxy = await proxy_factory(tcp_bootstrap(clusters, [chain], listener_filters=[TLS_INSPECTOR]))
    for sni, server in names.items():
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, ssl=client_ctx(pki["ca"].cert_pem),
                                                       server_hostname=sni)
        writer.write(b"routed")
        assert await reader.readexactly(6) == b"routed"
        assert server.last_sni == sni  # passed through untouched to the cluster the SNI names
        writer.close()
    with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
        r, _ = await asyncio.open_connection("127.0.0.1", proxy.port, ssl=client_ctx(pki["ca"].cert_pem),
                                             server_hostname="outbound_.9000_._.c.example.com")
        await r.read()
    await _until(lambda: len(_log(log)) == 3, "three log lines")
    assert sorted((e["cluster"] or "-", e["flags"]) for e in _log(log)) == [
        ("-", "NC"), ("outbound_.9000_._.a.example.com", "-"), ("outbound_.9000_.v2_.b.example.com", "-")]
    assert proxy.stat("tcp.BlackHoleCluster.downstream_cx_no_route") == 1
