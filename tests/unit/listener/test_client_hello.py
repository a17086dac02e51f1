"""tls_inspector / http_inspector on peeked bytes (pyproxy.listener.client_hello): a real ClientHello made by
Python's ssl (through memory BIOs, no socket), fed whole and one byte at a time."""
from __future__ import annotations

import ssl

import pytest

from pyproxy.listener.client_hello import NEED_MORE, TlsHello, inspect_http, inspect_tls


def client_hello(sni: str | None, alpn: list[str] | None = None) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_sni_and_alpn_are_read():
    hello = client_hello("Outbound_.80_._.svc.cluster.local", ["istio-http/1.1", "istio", "h2"])
    assert inspect_tls(hello) == TlsHello("outbound_.80_._.svc.cluster.local", ("istio-http/1.1", "istio", "h2"))


def test_no_sni_no_alpn():
    assert inspect_tls(client_hello(None)) == TlsHello("", ())


def test_byte_at_a_time_needs_more_until_the_hello_is_whole():
    hello = client_hello("a.example.com", ["h2"])
    for i in range(1, len(hello)):
        assert inspect_tls(hello[:i]) is NEED_MORE, i
    assert inspect_tls(hello) == TlsHello("a.example.com", ("h2",))


def test_hello_split_over_two_records_is_reassembled():
    hello = client_hello("split.example.com")
    body = hello[5:]
    half = len(body) // 2
    two = b"\x16\x03\x01" + half.to_bytes(2, "big") + body[:half] + \
        b"\x16\x03\x01" + (len(body) - half).to_bytes(2, "big") + body[half:]
    assert inspect_tls(two) == TlsHello("split.example.com", ())


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"\x00\x01", b"\x16\x04\x00", b"PRI * HTTP/2.0\r\n"])
def test_plaintext_is_not_tls(data):
    assert inspect_tls(data) is None


@pytest.mark.parametrize("data, expected", [
    (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", "http/1.1"),
    (b"POST /x HTTP/1.0\r\n", "http/1.0"),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "h2c"),
    (b"GET / HTTP/1.1", NEED_MORE),
    (b"PRI * HTT", NEED_MORE),
    (b"\x16\x03\x01\x00", None),
    (b"SSH-2.0-OpenSSH\r\n", None),
])
def test_http_inspector(data, expected):
    assert inspect_http(data) == expected
