"""pyproxy's TLS contexts wrap connections in DirectSSLObject (pyproxy/tls/sslobject.py): read, write and
pending are OpenSSL's C methods, with no Python frame in between, and TLS still works: a real handshake and
records both ways over memory BIOs, as uvloop's transport drives them, and WantRead still raised."""
from __future__ import annotations

import ssl

import pytest

from pyproxy.tls.contexts import client_context, server_context
from pyproxy.tls.sslobject import RESUME_ATTR, DirectSSLObject, remember_session
from tests.support.pki import TestCA


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


def _pair():
    ca = TestCA()
    leaf = ca.issue(uris=["spiffe://cluster.local/ns/default/sa/server"])
    server_ctx = server_context(leaf.chain_pem, leaf.key_pem, ca.cert_pem, require_client_cert=False)
    client_ctx = client_context(ca.cert_pem)
    bios = [ssl.MemoryBIO() for _ in range(4)]  # client in/out, server in/out
    client = client_ctx.wrap_bio(bios[0], bios[1])
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(10):  # the handshake, record by record
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        _pump(bios[1], bios[2])
        _pump(bios[3], bios[0])
    return client, server, bios


def test_the_hot_methods_are_openssls_own_and_records_still_flow_both_ways():
    client, server, bios = _pair()
    for obj in (client, server):
        assert isinstance(obj, DirectSSLObject)
        for name in ("read", "write", "pending"):
            assert type(getattr(obj, name)).__name__ == "builtin_function_or_method", name  # no Python frame
    assert client.write(b"GET / HTTP/1.1\r\n\r\n") == 18
    _pump(bios[1], bios[2])
    assert server.read(1024) == b"GET / HTTP/1.1\r\n\r\n"
    with pytest.raises(ssl.SSLWantReadError):  # the transport reads until this
        server.read(1024)
    server.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    _pump(bios[3], bios[0])
    buf = bytearray(64)
    n = client.read(64, buf)  # uvloop's buffered read: into its own buffer
    assert bytes(buf[:n]).endswith(b"\r\n\r\nok") and client.pending() == 0


def _handshake(client_ctx, server_ctx):
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1])  # no session given: DirectSSLObject offers the context's
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        _pump(bios[1], bios[2])
        _pump(bios[3], bios[0])
    return client, server


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_remembered_session_is_offered_by_the_next_client_object_of_its_context(version):
    """Upstream resumption (pyproxy.tls.sslobject): a session with a ticket is kept on the client context and the
    next object it wraps resumes it. TLS 1.3's ticket arrives after the handshake, with the first read."""
    ca = TestCA()
    leaf = ca.issue(uris=["spiffe://cluster.local/ns/default/sa/server"])
    server_ctx = server_context(leaf.chain_pem, leaf.key_pem, ca.cert_pem, require_client_cert=False)
    client_ctx = client_context(ca.cert_pem)
    client_ctx.maximum_version = version
    client, server = _handshake(client_ctx, server_ctx)
    assert not client.session_reused
    assert not remember_session(server)  # a server's sessions are OpenSSL's to keep
    assert getattr(server_ctx, RESUME_ATTR, None) is None
    if version is ssl.TLSVersion.TLSv1_3:
        assert not remember_session(client)  # no ticket yet: nothing worth keeping
        assert getattr(client_ctx, RESUME_ATTR, None) is None
        with pytest.raises(ssl.SSLWantReadError):
            client.read(1)  # processes the server's NewSessionTicket
    assert remember_session(client)
    assert getattr(client_ctx, RESUME_ATTR).id == client.session.id
    again, _ = _handshake(client_ctx, server_ctx)
    assert again.session_reused and again.version() == version.name.replace("v1_", "v1.")
    assert remember_session(None) is False
