"""More rows of shared/docs/http_conformance.md: #30 headers with underscores, #32 require_tls."""
from __future__ import annotations

import pytest

from tests.support.proxy import INTERNAL_LOOPBACK, bootstrap, route, virtual_host


async def _exchange(proxy, data: bytes):
    c = await proxy.connect()
    await c.send(data)
    return await c.read_response()


REQUEST = b"GET / HTTP/1.1\r\nHost: host\r\nfoo_bar: baz\r\n\r\n"


@pytest.mark.parametrize("action, status, reaches_upstream, kept", [
    (None, 200, True, True),                 # default ALLOW: kept
    ("ALLOW", 200, True, True),
    ("DROP_HEADER", 200, True, False),       # removed before it goes upstream
    ("REJECT_REQUEST", 400, False, False),   # refused at the edge
])
async def test_30_headers_with_underscores(upstream, proxy_factory, action, status, reaches_upstream, kept):
    """Envoy: integration_test.cc HeadersWithUnderscoresDropped / ...RemainHeadersWithUnderscores /
    ...CauseRequestRejectedByDefault (with REJECT_REQUEST): `headers_with_underscores_action`."""
    hcm = {"common_http_protocol_options": {"headers_with_underscores_action": action}} if action else None
    proxy = await proxy_factory(bootstrap({"backend": [upstream.port]}, hcm=hcm))
    r = await _exchange(proxy, REQUEST)
    assert r.status == status
    assert bool(upstream.requests) == reaches_upstream
    if reaches_upstream:
        names = [k.lower() for k, _ in upstream.requests[-1].headers]
        assert ("foo_bar" in names) == kept


async def test_32_require_tls_all_redirects_plaintext_to_https(upstream, proxy_factory):
    """Envoy: integration_test.cc RouterRedirect: a virtual host with `require_tls: ALL` answers a plaintext
    request with 301 and `location: https://<host><path>`; nothing reaches the upstream."""
    vh = virtual_host("secure", ["www.redirect.com"], [route("/", "backend")])
    vh["require_tls"] = "ALL"
    proxy = await proxy_factory(bootstrap({"backend": [upstream.port]}, virtual_hosts=[vh]))
    r = await _exchange(proxy, b"GET /foo HTTP/1.1\r\nHost: www.redirect.com\r\n\r\n")
    assert r.status == 301
    assert r.header("location") == "https://www.redirect.com/foo"
    assert not upstream.requests


async def test_28_body_larger_than_the_retry_buffer_is_not_retried(upstream, proxy_factory):
    """Envoy: integration_test.cc RetryHittingBufferLimit: a request body over the retry buffer (here Envoy's
    default per-connection buffer, 1 MiB) cannot be replayed, so a retriable 503 goes to the client as is,
    after a single upstream try; a small body is retried. The client is internal (`INTERNAL_LOOPBACK`): Envoy 1.40
    honours `x-envoy-retry-on` only from an internal client."""
    proxy = await proxy_factory(bootstrap({"backend": [upstream.port]}, hcm=INTERNAL_LOOPBACK))
    big = b"x" * (1536 * 1024)
    c = await proxy.connect()
    await c.send(b"POST /status/503 HTTP/1.1\r\nHost: host\r\nx-envoy-retry-on: 5xx\r\n"
                 b"content-length: %d\r\n\r\n" % len(big) + big)
    r = await c.read_response()
    assert r.status == 503
    assert len([q for q in upstream.requests if q.path.startswith("/status/503")]) == 1

    small = b"y" * 1024
    c = await proxy.connect()
    await c.send(b"POST /status/503 HTTP/1.1\r\nHost: host\r\nx-envoy-retry-on: 5xx\r\n"
                 b"content-length: %d\r\n\r\n" % len(small) + small)
    r = await c.read_response()
    assert r.status == 503
    assert len([q for q in upstream.requests if q.path.startswith("/status/503")]) == 3  # 1 + (1 try + 1 retry)


@pytest.mark.parametrize("body_source", ["inline_string", "inline_bytes", "filename"])
async def test_direct_response_body_from_any_data_source(upstream, proxy_factory, tmp_path, body_source):
    """route `direct_response.body` is an Envoy DataSource: inline text, base64 bytes or a file, read at load."""
    import base64

    path = tmp_path / "body.txt"
    path.write_text("hello from a file")
    source, expected = {
        "inline_string": ({"inline_string": "hello inline"}, b"hello inline"),
        "inline_bytes": ({"inline_bytes": base64.b64encode(b"hello bytes").decode()}, b"hello bytes"),
        "filename": ({"filename": str(path)}, b"hello from a file"),
    }[body_source]
    vh = virtual_host("direct", ["*"], [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": source}}])
    proxy = await proxy_factory(bootstrap({"backend": [upstream.port]}, virtual_hosts=[vh]))
    r = await _exchange(proxy, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (r.status, r.body) == (200, expected)
    assert not upstream.requests


async def test_unreadable_direct_response_file_rejects_the_config(upstream, proxy_factory, tmp_path):
    from pyproxy.server import ConfigRejected

    vh = virtual_host("direct", ["*"], [{"match": {"prefix": "/"},
                                         "direct_response": {"status": 200,
                                                             "body": {"filename": str(tmp_path / "missing")}}}])
    with pytest.raises(ConfigRejected, match=r"direct_response\.body\.filename: cannot read"):
        await proxy_factory(bootstrap({"backend": [upstream.port]}, virtual_hosts=[vh]))
