"""A plugged-in CA reloaded without a restart (control/ca/server.py ServingContext, control/ca/store.py
cacerts_fingerprint; the live four-step root rotation in place: tests/e2e/test_mesh_mtls.py `[reload]`).

The secure port keeps one listening SSLContext; after `replace`, a new connection is shown the new CA's serving
certificate and a connection made before keeps its handshake and keeps working."""
from __future__ import annotations

import asyncio
import ssl

from cryptography import x509

from control.ca.server import ServingContext
from control.ca.store import CA_KEY, ROOT_CERT, cacerts_fingerprint, create_ca_set, load_cacerts
from pyproxy.tls.pki import KeyType


def authority(path):
    create_ca_set(path, trust_domain="cluster.local", key_type=KeyType.EC_P256)
    return load_cacerts(path)


def trusting(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.trust_bundle_pem.decode())
    ctx.check_hostname = False  # 15012's serving certificate names 127.0.0.1 / istiod hosts; the chain is what counts
    return ctx


async def test_a_replaced_ca_serves_new_connections_while_old_ones_keep_their_handshake(tmp_path):
    old, new = authority(tmp_path / "old"), authority(tmp_path / "new")
    serving = ServingContext(old)

    async def echo(reader, writer):
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()
    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=serving.outer)
    port = server.sockets[0].getsockname()[1]

    async def connect(ca):
        return await asyncio.open_connection("127.0.0.1", port, ssl=trusting(ca), server_hostname="istiod")

    def issuer(writer) -> str:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).issuer.rfc4514_string()
    try:
        r1, w1 = await connect(old)
        assert issuer(w1) == old.signing_cert.subject.rfc4514_string()
        serving.replace(new)
        r2, w2 = await connect(new)
        assert issuer(w2) == new.signing_cert.subject.rfc4514_string()
        try:
            await connect(old)  # trusts the old root only: the new serving certificate does not verify
            raise AssertionError("a client trusting only the old root verified the new serving certificate")
        except ssl.SSLCertVerificationError:
            pass
        for reader, writer in ((r1, w1), (r2, w2)):
            writer.write(b"still here")
            assert await reader.readexactly(10) == b"still here"
            writer.close()
    finally:
        server.close()


def test_the_cacerts_fingerprint_changes_with_any_file_and_with_a_missing_one(tmp_path):
    create_ca_set(tmp_path / "ca", trust_domain="cluster.local", key_type=KeyType.EC_P256)
    files = {p.name: p.read_bytes() for p in (tmp_path / "ca").iterdir()}
    base = cacerts_fingerprint(files)
    assert cacerts_fingerprint(dict(files)) == base
    assert cacerts_fingerprint({**files, ROOT_CERT: files[ROOT_CERT] + files[ROOT_CERT]}) != base
    assert cacerts_fingerprint({**files, CA_KEY: None}) != base
    assert cacerts_fingerprint({**files, "root-key.pem": b"not read"}) == base  # only the four cacerts files
