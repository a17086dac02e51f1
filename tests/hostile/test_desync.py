"""Request desync: one client must never be able to change what another client's request becomes.

Each test sends raw bytes to a real pyproxy listener on 127.0.0.1 and checks two views: what the client got,
and what the origin (`TestUpstream`, which records every request it parses) received. The shapes are the ones a
security test found on pyproxy; the rule each one pins down is Envoy's (the proxy frames what it forwards from
its own parse, and an upstream connection is reused only after a whole request and a whole response).
"""
from __future__ import annotations

import pytest

from tests.support.client import chunked, request_bytes
from tests.support.proxy import bootstrap

SMUGGLED = b"GET /slow/SMUGGLED HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # 48 bytes


@pytest.fixture
async def proxy(upstream, proxy_factory, tmp_path):
    return await proxy_factory(bootstrap({"backend": [upstream.port]}, access_log=tmp_path / "access.log"))


async def one_exchange(proxy, data: bytes):
    c = await proxy.connect()
    await c.send(data)
    return await c.read_response(method=data.split(b" ", 1)[0].decode()), c


@pytest.mark.parametrize("nominated", ["content-length", "Content-Length", "keep-alive, content-length"])
async def test_connection_nominated_content_length_keeps_the_body_a_body(proxy, upstream, nominated):
    """`Connection: content-length` must not drop the framing while the body is forwarded raw: the upstream
    sees one POST carrying the 48 bytes as its body, never a second (smuggled) request."""
    data = (f"POST /a HTTP/1.1\r\nHost: x\r\nConnection: {nominated}\r\nContent-Length: 48\r\n\r\n").encode()
    r, c = await one_exchange(proxy, data + SMUGGLED)
    assert r.status == 200 and r.body == b"ok"
    reqs = await upstream.wait_requests(1)
    assert [(q.method, q.path) for q in reqs] == [("POST", "/a")]
    assert reqs[0].header("content-length") == "48" and reqs[0].body_length == 48
    # a victim on another connection gets its own answer, not the smuggled request's
    victim = await proxy.fetch("GET", "/victim")
    assert victim.status == 200 and victim.body == b"ok"
    assert [(q.method, q.path) for q in upstream.requests] == [("POST", "/a"), ("GET", "/victim")]
    assert len(proxy.access_log()) == 2
    c.close()


async def test_connection_nominated_transfer_encoding_keeps_chunked_framing(proxy, upstream):
    body = chunked([SMUGGLED])
    data = b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
    r, c = await one_exchange(proxy, data + body)
    assert r.status == 200
    reqs = await upstream.wait_requests(1)
    assert [(q.method, q.path) for q in reqs] == [("POST", "/a")]
    assert reqs[0].header("transfer-encoding") == "chunked" and reqs[0].body_length == 48
    victim = await proxy.fetch("GET", "/victim")
    assert victim.status == 200 and [q.path for q in upstream.requests] == ["/a", "/victim"]
    c.close()


async def test_connection_nominated_host_keeps_host(proxy, upstream):
    r, c = await one_exchange(proxy, b"GET /h HTTP/1.1\r\nHost: kept.example\r\nConnection: host\r\n\r\n")
    assert r.status == 200
    (req,) = await upstream.wait_requests(1)
    assert req.header_values("host") == ["kept.example"]
    c.close()


async def test_connection_nominated_other_fields_are_still_removed(proxy, upstream):
    """The nomination rule still works for ordinary fields (RFC 9110 §7.6.1)."""
    r, c = await one_exchange(proxy, b"GET /h HTTP/1.1\r\nHost: x\r\nConnection: x-private\r\nx-private: s\r\n"
                                     b"x-kept: k\r\n\r\n")
    assert r.status == 200
    (req,) = await upstream.wait_requests(1)
    assert req.header("x-private") is None and req.header("x-kept") == "k"
    c.close()


async def test_upstream_connection_answered_before_body_end_is_not_reused(proxy, upstream):
    """The origin answers a POST before its 59-byte body arrives. That connection must not carry the next
    client's request (the origin would read it as the POST's body, and the victim would get someone
    else's 400): it is closed, and the victim's request goes out on a new connection."""
    attacker = await proxy.connect()
    await attacker.send(b"POST /early-answer HTTP/1.1\r\nHost: x\r\nContent-Length: 59\r\n\r\n")
    r = await attacker.read_response(method="POST")
    assert r.status == 200 and r.body == b"early"
    await attacker.assert_closed()  # the request never finished: the proxy cannot resync that connection
    victim = await proxy.fetch("GET", "/victim")
    assert victim.status == 200 and victim.body == b"ok"
    assert [(q.method, q.path) for q in upstream.requests] == [("POST", "/early-answer"), ("GET", "/victim")]
    assert upstream.requests[0].connection_id != upstream.requests[1].connection_id
    assert upstream.parse_errors == 0


async def test_whole_exchanges_still_reuse_the_upstream_connection(proxy, upstream):
    """The counterpart: a request sent whole with its response received whole keeps the connection pooled."""
    for i in range(3):
        r = await proxy.fetch("POST", f"/p{i}", body=b"x" * 59)
        assert r.status == 200
    assert len({q.connection_id for q in upstream.requests}) == 1


@pytest.mark.parametrize("te", ["gzip, chunked", "gzip,chunked", "chunked, gzip", "identity", "deflate",
                                "chunked, chunked"])
async def test_unsupported_transfer_coding_is_refused_and_never_forwarded(proxy, upstream, te):
    """Envoy's HTTP/1 codec accepts only `chunked` and answers any other transfer coding with 501
    (http1.invalid_transfer_encoding), checked against Envoy 1.40 in tests/oracle."""
    status, details = 501, "http1.invalid_transfer_encoding"
    data = f"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n".encode() + chunked([b"abc"])
    r, c = await one_exchange(proxy, data)
    assert r.status == status
    await c.assert_closed()
    assert upstream.requests == []
    (entry,) = proxy.access_log()
    assert entry["details"] == details


async def test_absolute_form_userinfo_is_not_part_of_the_host(proxy, upstream):
    r, c = await one_exchange(proxy, b"GET http://user:pw@other.example/p HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 200
    (req,) = await upstream.wait_requests(1)
    assert req.header_values("host") == ["other.example"] and req.path == "/p"
    c.close()


async def test_fragment_in_the_path_is_rejected(proxy, upstream):
    """Envoy 1.40: 400 path_normalization_failed, `connection: close` (checked in tests/oracle)."""
    r, c = await one_exchange(proxy, request_bytes("GET", "/a#frag"))
    assert r.status == 400 and r.header("connection") == "close"
    await c.assert_closed()
    assert upstream.requests == []
    assert proxy.access_log()[0]["details"] == "path_normalization_failed"
    c.close()


async def test_http09_request_line_is_answered_at_once(proxy, upstream):
    """`GET /x` + CRLF with no version: Envoy answers 426 at once instead of waiting for headers."""
    r, c = await one_exchange(proxy, b"GET /x\r\n")
    assert r.status == 426
    await c.assert_closed()
    assert upstream.requests == []


@pytest.mark.parametrize("pieces", [[b"GET /x\r\n"], [b"GET /x", b"\r\n"], [b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /x\r\n"]])
async def test_http09_detected_whatever_the_read_boundaries(proxy, upstream, pieces):
    c = await proxy.connect()
    for piece in pieces:
        await c.send(piece)
    if len(pieces[0]) > 20:
        assert (await c.read_response()).status == 200
    assert (await c.read_response()).status == 426
    await c.assert_closed()


async def test_request_line_split_before_the_version_is_not_http09(proxy, upstream):
    c = await proxy.connect()
    for piece in (b"GET /x HT", b"TP/1.1\r\nHost: x\r\n\r\n"):
        await c.send(piece)
    assert (await c.read_response()).status == 200
    c.close()


async def test_early_answer_says_connection_close(proxy, upstream):
    """Envoy marks an answer to an unfinished request `connection: close` (the connection cannot be resynced)."""
    c = await proxy.connect()
    await c.send(b"POST /early-answer HTTP/1.1\r\nHost: x\r\nContent-Length: 59\r\n\r\n")
    r = await c.read_response(method="POST")
    assert r.status == 200 and r.header("connection") == "close"
    await c.assert_closed()


async def test_h2c_upgrade_is_ignored_and_served_as_http11(proxy, upstream):
    """`curl --http2 http://...` asks for h2c; Envoy drops the upgrade headers and serves HTTP/1.1, and the
    requests pipelined behind it are parsed as usual."""
    c = await proxy.connect()
    await c.send(b"GET /one HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                 b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n" + request_bytes("GET", "/two"))
    assert (await c.read_response()).status == 200
    assert (await c.read_response()).status == 200
    one, two = await upstream.wait_requests(2)
    assert (one.path, two.path) == ("/one", "/two")
    assert one.header("upgrade") is None and one.header("http2-settings") is None
    c.close()
