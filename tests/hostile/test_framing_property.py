"""Property: the proxy never accepts a request that two readings could frame differently.

Hypothesis builds requests out of the framing headers attackers play with (Content-Length and
Transfer-Encoding, repeated, with odd values, odd case and whitespace, and Connection nominating them) around a body that is itself a whole
request (`GET /smuggled`), followed on the same connection by `GET /second`. Whatever the combination, a
real pyproxy in front of a recording origin must either

* forward the requests that the strict reading of RFC 9112 §6 finds on the connection, with exactly the
  body that reading frames, or
* stop early (refuse with a 4xx/5xx and close),

and never forward anything else: `/smuggled` reaches the origin only where the strict reading itself sees
it as the next request (no framing header at all), never because two readings disagreed about where a
body ends. The strict reading (`strict_framing`, `strict_requests`) is written here from the RFC,
independently of llhttp's. A proxy may be stricter than the RFC (stop earlier); it may never be looser.
"""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.client import PeerClosed, chunked
from tests.support.proxy import bootstrap

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
SECOND = b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"

CL_VALUES = ["{n}", " {n}", "{n} ", "+{n}", "0{n}", "-1", "{n}, {n}", "{n},{m}", "", "0x{n}", "{n}\t", "{m}"]
TE_VALUES = ["chunked", "Chunked", " chunked", "chunked, chunked", "gzip, chunked", "chunked, gzip", "identity",
             "chunked\t", "xchunked", "chunked;q=1"]
CONNECTION_VALUES = ["content-length", "Content-Length", "transfer-encoding", "keep-alive, content-length", "close",
                     "host"]
NAMES = {"cl": ["Content-Length", "content-length", "CONTENT-LENGTH", "Content-Length "],
         "te": ["Transfer-Encoding", "transfer-encoding", "Transfer-Encoding "],
         "conn": ["Connection"]}


def strict_framing(lines: list[tuple[str, str, str]], n: int, m: int) -> str | int | None:
    """RFC 9112 §6.1-6.3 read strictly: "chunked", a body length, or None (must be refused).

    `lines` are (kind, name, value template). A field name with whitespace before the colon is invalid
    (§5.1); Transfer-Encoding must be exactly one `chunked` (anything else is a coding we do not know, and
    with Content-Length it is refused outright, §6.1); Content-Length must be one 1*DIGIT value, repeated
    identically at most (§8.6)."""
    if any(name != name.rstrip() for _, name, _ in lines):
        return None
    te = [v for kind, _, v in lines if kind == "te"]
    cl = [v.format(n=n, m=m) for kind, _, v in lines if kind == "cl"]
    if te:
        if cl or len(te) != 1 or te[0].strip(" \t").lower() != "chunked":
            return None
        return "chunked"
    if not cl:
        return 0
    values = {item.strip(" \t") for v in cl for item in v.split(",")}
    if len(values) != 1:
        return None
    value = values.pop()
    return int(value) if value.isdigit() else None


def strict_requests(framing: str | int | None, wire_body: bytes, chunk_body: bool) -> tuple[bytes | None, list[str]]:
    """(the POST's framed body, the paths of the complete requests the strict reading finds, in order)."""
    if framing is None:
        return None, []
    if framing == "chunked":
        if not chunk_body:
            return None, []  # `GET /smuggled...` is not a chunk size: the body is malformed, refused
        body, rest = SMUGGLED, SECOND
    else:
        stream = wire_body + SECOND
        if framing > len(stream):
            return None, []  # the body never completes
        body, rest = stream[:framing], stream[framing:]
    paths = ["/framed"]
    for request, path in ((SMUGGLED, "/smuggled"), (SECOND, "/second")):
        if rest.startswith(request):
            paths.append(path)
            rest = rest[len(request):]
    return body, paths


header_line = st.one_of(
    st.tuples(st.just("cl"), st.sampled_from(NAMES["cl"]), st.sampled_from(CL_VALUES)),
    st.tuples(st.just("te"), st.sampled_from(NAMES["te"]), st.sampled_from(TE_VALUES)),
    # a hop-by-hop nomination must never change the framing of what is forwarded (codec.NEVER_NOMINATED)
    st.tuples(st.just("conn"), st.sampled_from(NAMES["conn"]), st.sampled_from(CONNECTION_VALUES)),
)


@pytest.fixture
async def proxy(upstream, proxy_factory):
    return await proxy_factory(bootstrap({"backend": [upstream.port]}))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(header_line, min_size=0, max_size=3), chunk_body=st.booleans())
async def test_a_request_is_refused_or_framed_exactly_as_the_strict_reading_frames_it(proxy, upstream, lines,
                                                                                      chunk_body):
    payload = SMUGGLED
    n, m = len(payload), len(payload) - 7
    wire_body = chunked([payload]) if chunk_body else payload
    head = "POST /framed HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"{name}: {value.format(n=n, m=m)}\r\n" for _, name, value in lines) + "\r\n"
    expected = strict_framing(lines, n, m)
    seen_before = len(upstream.requests)

    c = await proxy.connect()
    try:
        await c.send(head.encode("latin-1") + wire_body + SECOND)
        try:
            first = await c.read_response(method="POST", timeout=5)
            if first.status < 400 and first.header("connection") != "close":
                # whatever follows the framed body is the next request: once it is answered (or refused),
                # the origin has seen everything this connection will ever send it
                await c.read_response(timeout=5)
        except PeerClosed:
            first = first if "first" in locals() else None
    finally:
        c.close()
    got = [q.path for q in upstream.requests[seen_before:] if q.complete]
    framed, allowed = strict_requests(expected, wire_body, chunk_body)

    assert got == allowed[:len(got)], f"{head!r}: the origin saw {got}, the strict reading allows {allowed}"
    if "/framed" in got:
        post = next(q for q in upstream.requests[seen_before:] if q.path == "/framed")
        assert post.body_sha256 == hashlib.sha256(framed).hexdigest(), f"{head!r}: framed another body"
        assert first is not None and first.status == 200
