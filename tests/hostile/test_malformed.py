"""Malformed and hostile requests: each gets the right 4xx/5xx, nothing reaches the upstream, and the proxy
keeps serving. Raw bytes in; the client's status and the origin's view checked. Where Envoy 1.40 has an answer
for the same bytes, tests/oracle/ compares the two (docs/oracle.md)."""
from __future__ import annotations

import pytest

from tests.support.proxy import bootstrap

H = b"Host: x\r\n"
CASES = [
    # (id, bytes, status)
    ("no-version-no-host", b"GET\r\n\r\n", 400),
    ("missing-host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("empty-host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    ("bad-version", b"GET / HTTP/9.9\r\n" + H + b"\r\n", 400),
    ("http2-version-line", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 426),
    ("http09", b"GET /x\r\n", 426),
    ("negative-cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("float-cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1e3\r\n\r\n", 400),
    ("two-different-cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("cl-list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("cl-overflow", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999\r\n\r\n", 400),
    ("cl-and-te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-gzip-chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-chunked-chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-space-before-colon", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", 400),
    ("bare-lf", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("bad-method-char", b"G@T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space-in-url", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("control-char-in-url", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("del-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("empty-header-name", b"GET / HTTP/1.1\r\n" + H + b": empty\r\n\r\n", 400),
    ("bad-chunk-size", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ("chunk-without-crlf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    ("absolute-url-empty-host", b"GET http:/// HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("fragment", b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("header-too-large", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * (61 * 1024) + b"\r\n\r\n", 431),
    ("too-many-headers", b"GET / HTTP/1.1\r\n" + H + b"".join(b"x-%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
    ("url-too-long", b"GET /" + b"a" * (61 * 1024) + b" HTTP/1.1\r\n" + H + b"\r\n", 431),
    ("connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 404),  # Envoy 1.40: no connect_matcher route
    ("asterisk-not-options", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),  # Envoy 1.40: 400
    ("websocket-not-enabled", b"GET / HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 403),
]


@pytest.fixture
async def proxy(upstream, proxy_factory):
    return await proxy_factory(bootstrap({"backend": [upstream.port]}))


@pytest.mark.parametrize("data, status", [pytest.param(d, s, id=i) for i, d, s in CASES])
async def test_malformed_request_is_refused_and_never_forwarded(proxy, upstream, data, status):
    c = await proxy.connect()
    await c.send(data)
    r = await c.read_response()
    assert r.status == status
    await c.assert_closed()  # a codec cannot resync after a malformed message: the connection is closed
    assert upstream.requests == []
    after = await proxy.fetch("GET", "/after")  # the proxy is unharmed
    assert after.status == 200 and [q.path for q in upstream.requests] == ["/after"]


async def test_garbage_and_binary_never_crash_the_proxy(proxy, upstream):
    """Random-looking bytes on many connections: each connection is answered 400 or closed; then a normal
    request is served."""
    import random

    rng = random.Random(7)
    for _ in range(30):
        c = await proxy.connect()
        await c.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) + b"\r\n\r\n")
        tail = await c.read_until_close()
        assert tail == b"" or tail.startswith(b"HTTP/1.1 4")
    assert upstream.requests == []
    assert (await proxy.fetch("GET", "/after")).status == 200
