"""A throwaway CA for the unit tests: EC P-256 root and intermediate (fast to make), a fixed clock."""
from __future__ import annotations

import pytest

from control.ca.authority import CertificateAuthority, make_intermediate_certificate, make_root_certificate
from pyproxy.tls.pki import KeyType, generate_key

NOW = 1_800_000_000.0  # 2027-01-15: a fixed instant; every CA and token below is made at it


class FakeClock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def ca_material():
    """(root, root_key, intermediate, intermediate_key), made once at NOW."""
    root_key, key = generate_key(KeyType.EC_P256), generate_key(KeyType.EC_P256)
    root = make_root_certificate(root_key, "cluster.local", NOW)
    inter = make_intermediate_certificate(key.public_key(), root, root_key, "cluster.local", NOW, 730 * 86400)
    return root, root_key, inter, key


@pytest.fixture
def authority(ca_material, clock) -> CertificateAuthority:
    root, _, inter, key = ca_material
    return CertificateAuthority(inter, key, [inter, root], [root], clock=clock)
