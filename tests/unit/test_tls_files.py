"""`memory_file` (pyproxy/tls/files.py): the path OpenSSL's file-only loaders read key material from, in memory
(memfd) where Linux offers it, else a private temporary file removed afterwards."""
from __future__ import annotations

import os
import ssl

import pytest

from pyproxy.tls.contexts import TlsConfigError, load_cert_chain_pem
from pyproxy.tls.files import memory_file
from tests.support.pki import TestCA


@pytest.mark.parametrize("memfd", [True, False], ids=["memfd", "temporary-file"])
def test_a_chain_and_key_load_from_memory_file_and_nothing_is_left(memfd, monkeypatch, tmp_path):
    if not memfd:
        monkeypatch.delattr(os, "memfd_create")
        monkeypatch.setenv("TMPDIR", str(tmp_path))
        import tempfile
        monkeypatch.setattr(tempfile, "tempdir", None)
    leaf = TestCA().issue(uris=["spiffe://cluster.local/ns/a/sa/b"])
    with memory_file(b"hello") as path:
        assert open(path, "rb").read() == b"hello"
        assert path.startswith("/proc/self/fd/") == memfd
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_cert_chain_pem(ctx, leaf.chain_pem, leaf.key_pem)
    with pytest.raises(TlsConfigError, match="refused by OpenSSL"):
        load_cert_chain_pem(ctx, leaf.chain_pem, TestCA().issue(uris=[]).key_pem)  # a key of another leaf
    assert list(tmp_path.iterdir()) == []  # the temporary files are gone (memfd: none were made)
