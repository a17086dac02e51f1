"""The in-process SDS store (pyproxy.tls.secrets): names, versions, change callbacks."""
from pyproxy.tls.secrets import SDS_DEFAULT, SDS_ROOTCA, SecretManager, TlsCertificate, ValidationContext


def test_set_get_and_change_callbacks():
    sm = SecretManager()
    seen: list[str] = []
    sm.subscribe(seen.append)
    sm.set(SDS_ROOTCA, ValidationContext(b"roots"))
    sm.set(SDS_DEFAULT, TlsCertificate(b"chain", b"key"))
    sm.set(SDS_DEFAULT, TlsCertificate(b"chain", b"key"))  # unchanged: no event, no new version
    assert seen == [SDS_ROOTCA, SDS_DEFAULT] and sm.version == 2
    assert sm.certificate(SDS_DEFAULT) == TlsCertificate(b"chain", b"key")
    assert sm.validation(SDS_ROOTCA).trusted_ca_pem == b"roots"
    assert sm.certificate(SDS_ROOTCA) is None and sm.validation("missing") is None
    assert "key" not in repr(sm.certificate(SDS_DEFAULT))  # private key never in a repr
