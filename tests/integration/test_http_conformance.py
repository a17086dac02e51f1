"""HTTP/1.1 edge behaviours that Envoy's own integration tests pin down, checked on real sockets.

Each test is one row of /work/shared/docs/http_conformance.md (the number in its name), sent as raw
bytes to a pyproxy listener with a `TestUpstream` behind it; the docstring names Envoy's test. What a
test asserts is what a client of Envoy can rely on: the status, the framing, what reached the origin,
and whether the connection stays usable.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.support.client import chunked, request_bytes
from tests.support.proxy import bootstrap, route, virtual_host
from tests.support.upstream import pattern

SMUGGLED = b"GET / HTTP/1.1\r\nHost: disallowed\r\n\r\n"  # 36 bytes


@pytest.fixture
async def proxy(upstream, proxy_factory, tmp_path):
    return await proxy_factory(bootstrap({"backend": [upstream.port]}, access_log=tmp_path / "access.log"))


async def raw_exchange(proxy, data: bytes, *, method: str = "GET"):
    """Send `data` on a new connection; return (first response, client)."""
    c = await proxy.connect()
    await c.send(data)
    return await c.read_response(method=method), c


async def assert_rejected(proxy, upstream, data: bytes, status: int):
    """`data` gets `status`, the connection is closed, and nothing reaches the upstream."""
    r, c = await raw_exchange(proxy, data)
    assert r.status == status
    await c.assert_closed()
    assert upstream.requests == []


async def assert_serving(proxy):
    """The proxy still answers a normal request on a new connection."""
    r = await proxy.fetch("GET", "/after")
    assert r.status == 200 and r.body == b"ok"


# ---------------------------------------------------------------- #1 request smuggling

@pytest.mark.parametrize("framing", [
    b"content-length: 36\r\ntransfer-encoding: chunked\r\n",
    b"transfer-encoding: chunked\r\ncontent-length: 36\r\n",
    b"content-length: 36\r\ntransfer-encoding: identity,chunked \r\n",
], ids=["cl-then-te", "te-then-cl", "identity-chunked"])
async def test_1_smuggling_content_length_with_transfer_encoding_is_400(proxy, upstream, framing):
    """Envoy: integration_test.cc TestSmuggling. CL together with TE is rejected; the smuggled
    request inside the body never reaches the upstream."""
    await assert_rejected(proxy, upstream, b"GET / HTTP/1.1\r\nHost: host\r\n" + framing + b"\r\n" + SMUGGLED, 400)
    await assert_serving(proxy)
    assert [rq.header("host") for rq in upstream.requests] == ["example.com"]


# ---------------------------------------------------------------- #2-#7 malformed requests

@pytest.mark.parametrize("raw", [
    pytest.param(b"hello", id="2-bad-first-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: host\r\nfoo bar\r\n\r\n", id="3-missing-delimiter"),
    pytest.param(b"GE(T / HTTP/1.1\r\nHost: host\r\n\r\n", id="4-invalid-method-char"),
    pytest.param(b"GET / HTTP/1.01\r\nHost: host\r\n\r\n", id="5-invalid-version"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: host\r\ntransfer-encoding: chunked\r\n\r\n"
                 b"4\r\nbody\r\n0\r\nbadtrailer\r\n\r\n", id="6-bad-trailer"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: host\r\ntransfer-encoding: chunked\r\nbadHeader\r\n\r\n"
                 b"4\r\nbody\r\n0\r\n\r\n", id="7-bad-header"),
])
async def test_2_to_7_malformed_request_is_400(proxy, raw):
    """Envoy: integration_test.cc BadFirstline, MissingDelimiter, InvalidCharacterInFirstline,
    InvalidVersion, BadTrailer, BadHeader. A request llhttp cannot parse gets `400 Bad Request` and the
    connection is closed (the codec cannot resync)."""
    r, c = await raw_exchange(proxy, raw)
    assert (r.version, r.status, r.reason) == ("HTTP/1.1", 400, "Bad Request")
    await c.assert_closed()
    await assert_serving(proxy)


@pytest.mark.parametrize("raw", [
    pytest.param(b"GET / HTTP/1.1\r\nHost: host\r\nFoo : bar\r\n\r\n", id="space-before-colon"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: host\r\nX-Bad: a\x00b\r\n\r\n", id="nul-in-value"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: host\r\ntransfer-encoding: chunked\r\n\r\n"
                 b"fffffffffffffffffff\r\n", id="chunk-size-overflow"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: host\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", id="chunk-size-not-hex"),
])
async def test_rfc9112_malformed_request_is_400_and_not_forwarded(proxy, upstream, raw):
    """Not in Envoy's table but required by RFC 9112 (§5.1, §6.3, §7.1) and enforced by Envoy's codecs:
    whitespace before the colon, a NUL in a value, a bad chunk size, or a request whose last transfer
    coding is not chunked → 400, connection closed, nothing (or no smuggled remainder) forwarded."""
    r, c = await raw_exchange(proxy, raw)
    assert r.status == 400
    await c.assert_closed()
    assert all(rq.body_length == 0 for rq in upstream.requests)


async def test_3_missing_delimiter_logs_dpe_and_codec_error(proxy):
    """Envoy: integration_test.cc MissingDelimiter: the access log shows flag DPE and details
    http1.codec_error."""
    r, c = await raw_exchange(proxy, b"GET / HTTP/1.1\r\nHost: host\r\nfoo bar\r\n\r\n")
    assert r.status == 400
    await c.assert_closed()
    entries = proxy.access_log()
    assert len(entries) == 1
    assert entries[0]["code"] == 400
    assert entries[0]["flags"] == "DPE"
    assert entries[0]["details"] == "http1.codec_error"


# ---------------------------------------------------------------- #8 / #9 HTTP/1.0

@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: host\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
], ids=["plain", "with-upgrade"])
async def test_8_http10_disabled_by_default_is_426(proxy, upstream, raw):
    """Envoy: integration_test.cc Http10Disabled, Http10DisabledWithUpgrade: without accept_http_10 the
    response starts with `HTTP/1.1 426 Upgrade Required` and nothing is forwarded."""
    c = await proxy.connect()
    await c.send(raw)
    data = await c.read_until_close()
    assert data.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert upstream.requests == []


@pytest.fixture
async def http10_proxy(upstream, proxy_factory):
    opts = {"http_protocol_options": {"accept_http_10": True, "default_host_for_http_10": "default.com"}}
    return await proxy_factory(bootstrap({"backend": [upstream.port]}, hcm=opts))


async def test_9_http10_enabled_uses_default_host_and_closes(http10_proxy, upstream):
    """Envoy: integration_test.cc Http10Enabled: the upstream sees `Host: default.com`; the response is
    `HTTP/1.0 200 OK` with `connection: close`, delimited by close (no chunked encoding)."""
    c = await http10_proxy.connect()
    await c.send(b"GET /download/100 HTTP/1.0\r\n\r\n")
    data = await c.read_until_close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    lower = head.lower()
    assert b"\r\nconnection: close" in lower
    assert b"transfer-encoding" not in lower
    assert body == pattern(100)
    assert upstream.requests[0].header("host") == "default.com"


async def test_9_http10_keep_alive_with_host_trailing_lws(http10_proxy, upstream):
    """Envoy: integration_test.cc Http10WithHostandKeepAliveAndLwsNoContentLength: `Host: foo.com `
    reaches the upstream trimmed; an HTTP/1.0 keep-alive request without content-length in the
    response still gets `connection: close` and no `connection: keep-alive`."""
    c = await http10_proxy.connect()
    await c.send(b"GET /download/10 HTTP/1.0\r\nHost: foo.com \r\nConnection:Keep-alive\r\n\r\n")
    data = await c.read_until_close()
    head = data.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"connection: close" in head.lower()
    assert b"connection: keep-alive" not in head.lower()
    assert b"content-length:" not in head.lower()
    assert b"transfer-encoding: chunked" not in head.lower()
    assert upstream.requests[0].header("host") == "foo.com"


async def test_9_http10_keep_alive_with_content_length_stays_open(http10_proxy, upstream):
    """Envoy: integration_test.cc Http10WithHostandKeepAliveAndContentLengthAndLws: an HTTP/1.0
    keep-alive request whose response has a content-length gets `connection: keep-alive` (not close),
    the length, no chunking, and the connection serves a second request."""
    c = await http10_proxy.connect()
    ka = b"GET /download/10?framing=length HTTP/1.0\r\nHost: foo.com \r\nConnection:Keep-alive\r\n\r\n"
    await c.send(ka)
    r = await c.read_response()
    assert (r.version, r.status) == ("HTTP/1.0", 200)
    assert r.header("connection") == "keep-alive"
    assert r.header("content-length") == "10" and not r.has("transfer-encoding")
    assert r.body == pattern(10)
    await c.send(ka)
    assert (await c.read_response()).body == pattern(10)
    assert upstream.requests[0].header("host") == "foo.com"


# ---------------------------------------------------------------- #10 / #11 pipelining

async def test_10_pipelined_request_without_host_is_400_after_the_good_one(proxy, upstream):
    """Envoy: integration_test.cc Pipeline, NoHost: two pipelined requests, the second without Host:
    200 then 400 on the same connection."""
    c = await proxy.connect()
    await c.send(b"GET / HTTP/1.1\r\nHost: host\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    first = await c.read_response()
    second = await c.read_response()
    assert (first.status, first.body) == (200, b"ok")
    assert second.status == 400
    assert len(upstream.requests) == 1


async def test_10_missing_host_is_400(proxy, upstream):
    """Envoy: integration_test.cc NoHost."""
    r, _ = await raw_exchange(proxy, b"GET / HTTP/1.1\r\n\r\n")
    assert r.status == 400
    assert upstream.requests == []


async def test_11_pipelined_chunked_posts_with_trailers(proxy, upstream):
    """Envoy: integration_test.cc PipelineWithTrailers: two good chunked POSTs with trailers get 200,
    200; a third whose trailer has no colon gets 400."""
    good = (b"POST / HTTP/1.1\r\nHost: host\r\ntransfer-encoding: chunked\r\n\r\n"
            b"4\r\nbody\r\n0\r\ntrailer1:t2\r\nAnother-trailer:t3\r\n\r\n")
    bad = (b"POST / HTTP/1.1\r\nHost: host\r\ntransfer-encoding: chunked\r\n\r\n"
           b"4\r\nbody\r\n0\r\ntrailer1\r\nAnother-trailer:t3\r\n\r\n")
    c = await proxy.connect()
    await c.send(good + good + bad)
    statuses = [(await c.read_response()).status for _ in range(3)]
    assert statuses == [200, 200, 400]
    done = [r for r in upstream.requests if r.complete]
    assert len(done) == 2 and all(r.body_length == 4 for r in done)


# ---------------------------------------------------------------- #12 absolute-form request target

@pytest.fixture
async def authority_proxy(upstream_factory, proxy_factory):
    api = await upstream_factory("api")
    web = await upstream_factory("web")
    vhosts = [virtual_host("api", ["api.example.com"], [route("/", "api")]),
              virtual_host("ported", ["ported.example.com:1234"], [route("/", "api")]),
              virtual_host("web", ["*"], [route("/", "web")])]
    return await proxy_factory(bootstrap({"api": [api.port], "web": [web.port]}, virtual_hosts=vhosts))


async def test_12_absolute_url_routes_by_its_authority(authority_proxy):
    """Envoy: integration_test.cc AbsolutePath: `GET http://api.example.com/x` is routed by the URI's
    authority, not the Host header, and the origin sees the origin-form path."""
    r, _ = await raw_exchange(authority_proxy, b"GET http://api.example.com/x HTTP/1.1\r\nHost: other\r\n\r\n")
    assert r.status == 200
    assert r.header("x-upstream") == "api"


async def test_12_absolute_url_port_must_match_the_domain(authority_proxy):
    """Envoy: integration_test.cc AbsolutePathWithPort / AbsolutePathWithoutPort: a vhost domain with a
    port matches only an authority with that port (the catch-all is `*`, so no port → web)."""
    r, _ = await raw_exchange(authority_proxy,
                              b"GET http://ported.example.com:1234/ HTTP/1.1\r\nHost: ported.example.com\r\n\r\n")
    assert r.header("x-upstream") == "api"
    r, _ = await raw_exchange(authority_proxy,
                              b"GET http://ported.example.com/ HTTP/1.1\r\nHost: ported.example.com\r\n\r\n")
    assert r.header("x-upstream") == "web"


async def test_12_absolute_url_disallowed_is_404(upstream, proxy_factory):
    """Envoy: integration_test.cc BadPath: with `allow_absolute_url: false` an absolute-form target
    matches no route → 404, and nothing reaches the upstream."""
    p = await proxy_factory(bootstrap({"backend": [upstream.port]},
                                      hcm={"http_protocol_options": {"allow_absolute_url": False}}))
    r, _ = await raw_exchange(p, b"GET http://api.lyft.com HTTP/1.1\r\nHost: host\r\n\r\n")
    assert r.status == 404
    assert upstream.requests == []


# ---------------------------------------------------------------- #13-#18 upstream misbehaviour

async def test_13_upstream_protocol_error_is_502(proxy):
    """Envoy: integration_test.cc UpstreamProtocolError: garbage instead of a status line → UPE. The table
    says 503; Envoy 1.40 answers 502 (checked in tests/oracle), and so does pyproxy."""
    r = await proxy.fetch("GET", "/garbage")
    assert r.status == 502
    entry = proxy.access_log()[-1]
    assert entry["flags"] == "UPE"
    await assert_serving(proxy)


async def test_14_pipelined_responses_only_first_forwarded(proxy, upstream):
    """Envoy: integration_test.cc TestPipelinedResponses: three responses to one request → the client
    gets the first; the upstream connection is a protocol error and is not reused."""
    c = await proxy.connect()
    r = await c.request("GET", "/three-responses")
    assert (r.status, r.body) == (200, b"first")
    again = await c.request("GET", "/next")
    assert (again.status, again.body) == (200, b"ok")
    assert upstream.connections == 2  # the polluted connection was dropped
    assert proxy.stat("cluster.backend.upstream_cx_protocol_error") >= 1


async def test_15_head_without_content_length_gets_chunked_and_no_body(proxy):
    """Envoy: integration_test.cc TestHead: a HEAD response without content-length is announced as
    `transfer-encoding: chunked` (what a GET would get) and has no body."""
    c = await proxy.connect()
    await c.send(request_bytes("HEAD", "/no-length"))
    r = await c.read_response(method="HEAD")
    assert r.status == 200
    assert r.header("transfer-encoding") == "chunked"
    assert not r.has("content-length")
    await c.assert_open()  # no body bytes follow
    assert (await c.request("GET", "/")).body == b"ok"


async def test_15_head_with_content_length_is_preserved(proxy):
    """Envoy: integration_test.cc TestHeadWithExplicitTE / TestHead: upstream `content-length: 12` on a
    HEAD response is preserved, no transfer-encoding, no body."""
    c = await proxy.connect()
    await c.send(request_bytes("HEAD", "/download/12?framing=length"))
    r = await c.read_response(method="HEAD")
    assert r.status == 200
    assert r.header("content-length") == "12"
    assert not r.has("transfer-encoding")
    await c.assert_open()
    assert (await c.request("GET", "/")).body == b"ok"


async def test_16_204_with_body_is_an_upstream_protocol_error(proxy):
    """Envoy: integration_test.cc Response204WithBody. The table says the 204 is forwarded bare; Envoy 1.40
    treats a 204 announcing a body as an upstream protocol error: 502 UPE (checked in tests/oracle). The
    client's connection stays usable."""
    c = await proxy.connect()
    r = await c.request("GET", "/204-with-body")
    assert r.status == 502
    assert proxy.access_log()[-1]["flags"] == "UPE"
    again = await c.request("GET", "/")
    assert (again.status, again.body) == (200, b"ok")


async def test_17_304_with_content_length_is_header_only(proxy):
    """Envoy: protocol_integration_test.cc 304WithBody: a 304 with `content-length: 2` is forwarded as
    a complete header-only response."""
    c = await proxy.connect()
    r = await c.request("GET", "/304-with-cl")
    assert r.status == 304
    assert not r.has("transfer-encoding")
    again = await c.request("GET", "/")
    assert (again.status, again.body) == (200, b"ok")


async def test_18_unsolicited_upgrade_in_response_is_stripped(proxy):
    """Envoy: integration_test.cc TestUpgradeHeaderInResponse: `connection: upgrade` / `upgrade: h2`
    from the upstream are removed; the body is intact."""
    r = await proxy.fetch("GET", "/upgrade-header")
    assert r.status == 200 and r.body == b"Hello World"
    assert not r.has("upgrade")
    assert "upgrade" not in (r.header("connection") or "").lower()


# ---------------------------------------------------------------- #19 / #20 header merging, via

async def test_19_duplicate_request_headers_are_combined(proxy, upstream):
    """Envoy: integration_test.cc TestInlineHeaders: `User-Agent: public` + `User-Agent: 123` reach the
    upstream as the list `public,123`; other headers pass unchanged."""
    r = await proxy.fetch("GET", "/", [("User-Agent", "public"), ("User-Agent", "123"), ("Foo", "bar"),
                                       ("Eep", "baz")], host="foo.com")
    assert r.status == 200
    rq = upstream.requests[0]
    assert [v.strip() for v in rq.header("user-agent").split(",")] == ["public", "123"]
    assert rq.header("host") == "foo.com"
    assert rq.header("foo") == "bar" and rq.header("eep") == "baz"


async def test_19_set_cookie_headers_are_not_merged(proxy):
    """Envoy: integration_test.cc MultipleSetCookies: two set-cookie fields stay two fields."""
    r = await proxy.fetch("GET", "/set-cookies")
    assert r.header_values("set-cookie") == ["foo=1", "bar=2"]


async def test_20_via_is_appended_upstream_and_set_downstream(upstream, proxy_factory):
    """Envoy: integration_test.cc ViaAppendHeaderOnly: with HCM `via: bar`, a request `via: foo` reaches
    the upstream as `foo, bar` and the response carries `via: bar`."""
    p = await proxy_factory(bootstrap({"backend": [upstream.port]}, hcm={"via": "bar"}))
    r = await p.fetch("GET", "/", [("via", "foo")])
    assert upstream.requests[0].header_values("via") == ["foo, bar"]
    assert r.header_values("via") == ["bar"]


# ---------------------------------------------------------------- #21 content-length abuse

@pytest.mark.parametrize("cl", [
    b"content-length: -1\r\n",
    b"content-length: 3,2\r\n",
    b"content-length: 3\r\ncontent-length: 2\r\n",
], ids=["negative", "list", "duplicate-conflicting"])
async def test_21_invalid_content_length_is_400_and_closes(proxy, upstream, cl):
    """Envoy: integration_test.cc InvalidContentLength, MultipleContentLengths: → 400, connection
    closed, nothing forwarded."""
    await assert_rejected(proxy, upstream, b"POST / HTTP/1.1\r\nHost: host\r\n" + cl + b"\r\nabc", 400)


# ---------------------------------------------------------------- #22 / #23 limits

def _headers(n: int) -> list[tuple[str, str]]:
    return [(f"x-h{i}", "v") for i in range(n)]


@pytest.mark.parametrize("what", ["header", "url"])
async def test_22_request_headers_over_60_kib_are_431(proxy, upstream, what):
    """Envoy: integration_test.cc LargeRequestHeadersRejected, LargeRequestUrlRejected: a 95 KiB header
    or URL over the default 60 KiB `max_request_headers_kb` → 431 and the connection is closed."""
    big = "a" * (95 * 1024)
    raw = (request_bytes("GET", "/", [("x-big", big)]) if what == "header"
           else request_bytes("GET", "/" + big))
    await assert_rejected(proxy, upstream, raw, 431)


@pytest.mark.parametrize("what", ["header", "url"])
async def test_22_raised_max_request_headers_kb_accepts_95_kib(upstream, proxy_factory, what):
    """Envoy: integration_test.cc LargeRequestHeadersAccepted, LargeRequestUrlAccepted: with
    max_request_headers_kb 96 the same request gets 200 and reaches the upstream whole."""
    p = await proxy_factory(bootstrap({"backend": [upstream.port]}, hcm={"max_request_headers_kb": 96}))
    big = "a" * (95 * 1024)
    r = await p.fetch("GET", "/", [("x-big", big)]) if what == "header" else await p.fetch("GET", "/" + big)
    assert r.status == 200
    rq = upstream.requests[0]
    assert rq.header("x-big") == big if what == "header" else rq.path == "/" + big


async def test_22_more_than_100_headers_is_431(proxy, upstream):
    """Envoy: integration_test.cc ManyRequestHeadersRejected: max_headers_count defaults to 100; Host +
    100 more is one too many → 431."""
    await assert_rejected(proxy, upstream, request_bytes("GET", "/", _headers(100)), 431)


async def test_22_exactly_100_headers_is_accepted(proxy, upstream):
    """The default limit is inclusive: Host + 99 headers = 100 → 200."""
    r = await proxy.fetch("GET", "/", _headers(99))
    assert r.status == 200
    assert upstream.requests[0].header("x-h98") == "v"


async def test_22_raised_max_headers_count_accepts_more(upstream, proxy_factory):
    """Envoy: integration_test.cc ManyRequestHeadersAccepted: with max_headers_count 150, 140 headers
    pass."""
    p = await proxy_factory(bootstrap({"backend": [upstream.port]},
                                      hcm={"common_http_protocol_options": {"max_headers_count": 150}}))
    r = await p.fetch("GET", "/", _headers(139))
    assert r.status == 200


async def test_22_many_request_trailers_are_431(proxy):
    """Envoy: integration_test.cc ManyRequestTrailersRejected: 150 trailers → 431."""
    body = chunked([b"body"], trailers=_headers(150))
    r, _ = await raw_exchange(proxy, request_bytes("POST", "/", [("transfer-encoding", "chunked")], body))
    assert r.status == 431


async def test_23_48_kib_method_is_400(proxy, upstream):
    """Envoy: integration_test.cc LargeRequestMethod: a 48 KiB method token over HTTP/1 → 400."""
    r, _ = await raw_exchange(proxy, b"a" * (48 * 1024) + b" / HTTP/1.1\r\nHost: host\r\n\r\n")
    assert r.status == 400
    assert upstream.requests == []


# ---------------------------------------------------------------- #24 / #25 big but legal headers

async def test_24_cookie_with_7000_pairs_is_200(proxy, upstream):
    """Envoy: integration_test.cc LargeCookieParsingConcatenated: one cookie header with 7000 `aN=b`
    pairs (under 60 KiB) → 200, forwarded unchanged."""
    cookie = "; ".join(f"a{i:x}=b" for i in range(7000))
    r = await proxy.fetch("GET", "/", [("cookie", cookie)])
    assert r.status == 200
    assert upstream.requests[0].header("cookie") == cookie


async def test_25_long_header_value_with_inner_spaces_passes_both_ways(proxy, upstream):
    """Envoy: integration_test.cc LongHeaderValueWithSpaces: "v" + 32 KiB of spaces + "v" is forwarded
    unchanged to the upstream and back to the client."""
    value = "v" + " " * (32 * 1024) + "v"
    r = await proxy.fetch("GET", "/reflect", [("x-reflect-long", value)])
    assert r.status == 200
    assert upstream.requests[0].header("x-reflect-long") == value
    assert r.header("x-reflect-long") == value


# ---------------------------------------------------------------- #31 / #34 router errors

async def test_31_no_matching_route_is_404_nr(upstream, proxy_factory, tmp_path):
    """Envoy: integration_test.cc RouterNotFound: no route matches → 404 with flag NR."""
    vh = [virtual_host("only", ["only.example.com"], [route("/", "backend")])]
    p = await proxy_factory(bootstrap({"backend": [upstream.port]}, virtual_hosts=vh,
                                      access_log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/", host="elsewhere.example.com")
    assert r.status == 404
    assert upstream.requests == []
    assert (p.access_log()[-1]["flags"], p.access_log()[-1]["details"]) == ("NR", "route_not_found")


@pytest.mark.parametrize("code_name,status", [(None, 503), ("SERVICE_UNAVAILABLE", 503), ("NOT_FOUND", 404)])
async def test_31_route_to_unknown_cluster(upstream, proxy_factory, tmp_path, code_name, status):
    """Envoy: integration_test.cc RouterClusterNotFound404 / RouterClusterNotFound503: the route names a
    cluster that does not exist → `cluster_not_found_response_code` (default 503), flag NC."""
    extra = {"cluster_not_found_response_code": code_name} if code_name else {}
    p = await proxy_factory(bootstrap({"backend": [upstream.port]}, routes=[route("/", "missing", **extra)],
                                      access_log=tmp_path / "a.log"))
    r = await p.fetch("GET", "/")
    assert r.status == status
    assert p.access_log()[-1]["flags"] == "NC"
    assert upstream.requests == []


async def test_34_upstream_disconnect_before_headers_is_503_uc(proxy):
    """Envoy: http_integration.cc RouterUpstreamDisconnectBeforeResponseComplete: the upstream closes
    before any response → 503, text/plain body naming the reset reason, flag UC."""
    r = await proxy.fetch("GET", "/reset-before-headers")
    assert r.status == 503
    assert r.header("content-type") == "text/plain"
    assert r.body == (b"upstream connect error or disconnect/reset before headers. "
                      b"reset reason: connection termination")
    assert proxy.access_log()[-1]["flags"] == "UC"
    await assert_serving(proxy)


# ---------------------------------------------------------------- the proxy survives all of the above

HOSTILE = [
    b"GET / HTTP/1.1\r\nHost: host\r\ncontent-length: 36\r\ntransfer-encoding: chunked\r\n\r\n" + SMUGGLED,
    b"hello",
    b"GET / HTTP/1.1\r\nHost: host\r\nfoo bar\r\n\r\n",
    b"GE(T / HTTP/1.1\r\nHost: host\r\n\r\n",
    b"GET / HTTP/1.01\r\nHost: host\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: host\r\ncontent-length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: host\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    request_bytes("GET", "/", [("x-big", "a" * (95 * 1024))]),
    request_bytes("GET", "/", _headers(200)),
    b"a" * (48 * 1024) + b" / HTTP/1.1\r\n",
    request_bytes("GET", "/garbage") + request_bytes("GET", "/three-responses"),
    request_bytes("GET", "/reset-before-headers"),
    request_bytes("GET", "/close-mid-body"),
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # a TLS ClientHello
    b"\r\n\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: host\r\n",  # then the client goes away
]


async def test_proxy_never_dies_of_a_request(proxy):
    """After every hostile input above (each on its own connection, the client leaving without
    reading), a normal request on a new connection still gets 200."""
    for raw in HOSTILE:
        c = await proxy.connect()
        await c.send(raw)
        await c.aclose()
    for raw in HOSTILE:  # and once more, half-closing and reading what the proxy answers
        c = await proxy.connect()
        await c.send(raw)
        c.writer.write_eof()
        try:
            await c.read_until_close(timeout=2)
        except asyncio.TimeoutError:  # a connection left hanging is its own bug (see test_14); survival is the point
            pass
        await c.aclose()
    await assert_serving(proxy)
