"""What the proxy answers when it cannot forward, and what its access log says about it.

Each failure is provoked for real (a closed port, an upstream that hangs up, one that stalls, one
that speaks garbage) and checked three ways: the status the client gets, Envoy's response flag and
response code details in the access log (`%RESPONSE_FLAGS%`, `%RESPONSE_CODE_DETAILS%`), and that
the proxy keeps serving afterwards.
"""
from __future__ import annotations

import socket

import pytest

from tests.support.client import PeerClosed
from tests.support.proxy import bootstrap, cluster, route, virtual_host

RESET_BEFORE_HEADERS = b"upstream connect error or disconnect/reset before headers. reset reason: "


@pytest.fixture
def closed_port():
    """A 127.0.0.1 port nobody listens on (held bound, so no one else takes it during the test)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
async def proxy(upstream, proxy_factory, tmp_path):
    return await proxy_factory(bootstrap({"backend": [upstream.port]}, access_log=tmp_path / "access.log",
                                         route_timeout="2s"))


async def assert_serving(proxy):
    r = await proxy.fetch("GET", "/after")
    assert (r.status, r.body) == (200, b"ok")


def last_log(proxy) -> dict:
    entries = proxy.access_log()
    assert entries, "nothing was access-logged"
    return entries[-1]


async def test_no_route_is_404_nr(upstream, proxy_factory, tmp_path):
    """No virtual host matches the Host → 404, flag NR, details route_not_found."""
    vh = [virtual_host("api", ["api.example.com"], [route("/api", "backend")])]
    p = await proxy_factory(bootstrap({"backend": [upstream.port]}, virtual_hosts=vh,
                                      access_log=tmp_path / "a.log"))
    assert (await p.fetch("GET", "/api/x", host="www.example.com")).status == 404
    assert (await p.fetch("GET", "/other", host="api.example.com")).status == 404
    assert [(e["code"], e["flags"], e["details"]) for e in p.access_log()] == [(404, "NR", "route_not_found")] * 2
    assert upstream.requests == []


async def test_cluster_without_endpoints_is_503_uh(proxy_factory, tmp_path):
    """A cluster with zero endpoints → 503 `no healthy upstream`, flag UH."""
    p = await proxy_factory(bootstrap([cluster("empty", [])], access_log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/")
    assert r.status == 503
    assert r.body == b"no healthy upstream"
    e = last_log(p)
    assert (e["code"], e["flags"], e["details"]) == (503, "UH", "no_healthy_upstream")


async def test_connect_failure_is_503_uf(proxy_factory, tmp_path, closed_port):
    """The only endpoint refuses connections → 503 with Envoy's reset text, flag UF."""
    p = await proxy_factory(bootstrap({"dead": [closed_port]}, access_log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/")
    assert r.status == 503
    assert r.body.startswith(RESET_BEFORE_HEADERS) and b"connection failure" in r.body
    e = last_log(p)
    assert (e["code"], e["flags"]) == (503, "UF")
    assert e["upstream_host"] == f"127.0.0.1:{closed_port}"
    assert p.stat("cluster.dead.upstream_cx_connect_fail") == 1


async def test_upstream_closes_before_headers_is_503_uc(proxy):
    """The upstream accepts the request and hangs up → 503, Envoy's exact body, flag UC."""
    r = await proxy.fetch("GET", "/reset-before-headers")
    assert r.status == 503
    assert r.body == RESET_BEFORE_HEADERS + b"connection termination"
    e = last_log(proxy)
    assert (e["code"], e["flags"]) == (503, "UC")
    assert e["details"] == "upstream_reset_before_response_started{connection_termination}"
    await assert_serving(proxy)


async def test_upstream_closes_mid_body_resets_downstream(proxy, upstream):
    """Headers (content-length 1000) and 100 bytes, then the upstream closes: the client cannot get a
    whole response, so the proxy closes the downstream connection after what it had; logged 200 UC."""
    c = await proxy.connect()
    with pytest.raises(PeerClosed) as e:
        await c.request("GET", "/close-mid-body")
    assert len(e.value.partial) < 1000
    entry = last_log(proxy)
    assert entry["code"] == 200
    assert "UC" in entry["flags"].split(",")
    await assert_serving(proxy)


async def test_upstream_closes_mid_chunked_body_resets_downstream(proxy, upstream):
    """A chunked body cut by the upstream's close (no last chunk) is not a complete response either: the proxy must
    not end it with a last chunk of its own; it closes the downstream connection after what it had; 200 UC."""
    c = await proxy.connect()
    with pytest.raises(PeerClosed) as e:
        await c.request("GET", "/close-mid-chunked")
    assert b"a" * 100 in e.value.partial and not e.value.partial.endswith(b"0\r\n\r\n")
    entry = last_log(proxy)
    assert entry["code"] == 200
    assert "UC" in entry["flags"].split(",")
    await assert_serving(proxy)


async def test_upstream_timeout_is_504_ut(upstream, proxy_factory, tmp_path):
    """Route timeout 0.2 s, upstream answers after 1 s → 504 `upstream request timeout`, flag UT."""
    p = await proxy_factory(bootstrap({"backend": [upstream.port]}, route_timeout="0.2s",
                                      access_log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/delay/1")
    assert r.status == 504
    assert r.body == b"upstream request timeout"
    e = last_log(p)
    assert (e["code"], e["flags"], e["details"]) == (504, "UT", "response_timeout")
    assert p.stat("cluster.backend.upstream_rq_timeout") == 1
    assert (await p.fetch("GET", "/")).status == 200


async def test_upstream_garbage_is_502_upe(proxy):
    """The upstream answers with bytes that are not HTTP → 502 (Envoy 1.40, tests/oracle), flag UPE."""
    r = await proxy.fetch("GET", "/garbage")
    assert r.status == 502
    assert r.body.startswith(RESET_BEFORE_HEADERS)
    e = last_log(proxy)
    assert (e["code"], e["flags"]) == (502, "UPE")
    assert proxy.stat("cluster.backend.upstream_cx_protocol_error") == 1
    await assert_serving(proxy)


async def test_upstream_response_with_cl_and_te_is_502_upe(proxy):
    """Response smuggling: content-length together with transfer-encoding from the upstream is a
    protocol error (llhttp rejects it) → 502 UPE, the connection is not reused."""
    r = await proxy.fetch("GET", "/cl-and-te")
    assert r.status == 502
    assert last_log(proxy)["flags"] == "UPE"
    await assert_serving(proxy)


async def test_codec_errors_are_logged_dpe(proxy):
    """A request the codec rejects is logged with flag DPE and a 400 (smuggling shape here)."""
    c = await proxy.connect()
    await c.send(b"GET / HTTP/1.1\r\nHost: h\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n")
    assert (await c.read_response()).status == 400
    e = last_log(proxy)
    assert (e["code"], e["flags"]) == (400, "DPE")


async def test_oversized_headers_are_431_and_logged(proxy, upstream):
    """More than 60 KiB of request headers → 431; 101 headers → 431; nothing reaches the upstream."""
    big = await proxy.fetch("GET", "/", [("x-big", "b" * (61 * 1024))])
    many = await proxy.fetch("GET", "/", [(f"x-{i}", "v") for i in range(101)])
    assert (big.status, many.status) == (431, 431)
    assert [e["code"] for e in proxy.access_log()] == [431, 431]
    assert upstream.requests == []


@pytest.fixture
async def slow_headers_proxy(upstream, proxy_factory):
    return await proxy_factory(bootstrap({"backend": [upstream.port]}, hcm={"request_headers_timeout": "0.3s"}))


async def test_request_headers_timeout_closes_the_connection(slow_headers_proxy, upstream):
    """`request_headers_timeout`: a client that starts a request and never finishes its headers is cut
    off (connection closed, no response; Envoy counts downstream_rq_header_timeout)."""
    c = await slow_headers_proxy.connect()
    await c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: ")
    data = await c.read_until_close(timeout=3)
    assert b"200" not in data
    assert upstream.requests == []
    assert slow_headers_proxy.stat("http.ingress_http.downstream_rq_header_timeout") == 1


async def test_request_headers_timeout_does_not_cut_complete_requests(slow_headers_proxy):
    """The timer covers the headers only: a request whose body and response take longer is served."""
    c = await slow_headers_proxy.connect()
    r = await c.request("GET", "/delay/0.5")
    assert (r.status, r.body) == (200, b"delayed")
    again = await c.request("GET", "/")
    assert again.status == 200


async def test_downstream_status_classes_count_local_replies(upstream, proxy_factory):
    """downstream_rq_<N>xx count every answer the client got, the proxy's own included."""
    vh = [virtual_host("app", ["app.example.com"], [route("/", "backend")])]
    p = await proxy_factory(bootstrap({"backend": [upstream.port]}, virtual_hosts=vh))
    assert (await p.fetch("GET", "/", host="app.example.com")).status == 200
    assert (await p.fetch("GET", "/", host="nowhere.example.com")).status == 404
    assert (await p.fetch("GET", "/reset-before-headers", host="app.example.com")).status == 503
    assert (await p.fetch("GET", "/status/502", host="app.example.com")).status == 502
    counts = {c: p.stat(f"http.ingress_http.downstream_rq_{c}xx") for c in (2, 4, 5)}
    assert counts == {2: 1, 4: 1, 5: 2}
    assert p.stat("http.ingress_http.downstream_rq_total") == 4
    assert p.stat("http.ingress_http.downstream_rq_active") == 0
