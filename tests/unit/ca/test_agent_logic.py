"""The agent's pure decisions (pyproxy/tls/agent.py): when to renew, and which CA answers to accept."""
from __future__ import annotations

import base64
import random

import pytest

from control.ca.authority import make_root_certificate
from pyproxy.tls.agent import AgentError, WorkloadSecret, check_issued_chain, rotate_time
from pyproxy.tls.identity import PeerIdentity
from pyproxy.tls.pki import build_csr, certificate_pem, generate_key

from .conftest import NOW

SLEEP = PeerIdentity("cluster.local", "default", "sleep")
DAY = 86400


class FixedRandom(random.Random):
    """random() answers from a script: (jitter draw, sign draw) pairs."""

    def __init__(self, *values: float):
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


@pytest.mark.parametrize("draws, at", [
    ((0.0, 0.9), 0.5 * DAY),             # no jitter: half-life
    ((1.0, 0.9), (1 - 0.51) * DAY),      # +1 % grace: renew earlier
    ((1.0, 0.1), (1 - 0.49) * DAY),      # -1 % grace: renew later
    ((0.5, 0.9), (1 - 0.505) * DAY),
])
def test_rotate_time_is_half_life_with_jitter(draws, at):
    assert rotate_time(NOW, NOW + DAY, FixedRandom(*draws)) == pytest.approx(NOW + at)


def test_rotate_time_ratio_is_clamped():
    assert rotate_time(NOW, NOW + DAY, FixedRandom(1.0, 0.9), grace_ratio=1.0, jitter=0.5) == NOW
    assert rotate_time(NOW, NOW + DAY, FixedRandom(1.0, 0.1), grace_ratio=0.0, jitter=0.5) == NOW + DAY


def test_rotate_time_stays_within_jitter_for_any_seed():
    times = [rotate_time(NOW, NOW + DAY, random.Random(seed)) - NOW for seed in range(200)]
    assert all(0.49 * DAY <= t <= 0.51 * DAY for t in times)
    assert min(times) < 0.5 * DAY < max(times)  # both signs occur


@pytest.fixture
def issued(authority):
    key = generate_key()
    return key, list(authority.sign_csr(build_csr(key, SLEEP.uri), SLEEP))


def test_good_answer_splits_into_chain_and_roots(issued, ca_material):
    key, chain = issued
    result = check_issued_chain(chain, key.public_key(), SLEEP)
    assert result.identity == SLEEP
    assert result.chain_pem.decode() == chain[0] + chain[1]
    assert result.roots_pem.decode() == chain[2] == certificate_pem(ca_material[0])


def test_answer_without_expected_identity_takes_the_leafs(issued):
    key, chain = issued
    assert check_issued_chain(chain, key.public_key(), None).identity == SLEEP


STRANGER_ROOT = certificate_pem(make_root_certificate(generate_key(), "cluster.local", NOW))


@pytest.mark.parametrize("name, mutate, key_of, expected, says", [
    ("not a list", lambda c: {"x": 1}, "ours", SLEEP, "no 'cert_chain'"),
    ("empty", lambda c: [], "ours", SLEEP, "no 'cert_chain'"),
    ("garbage", lambda c: ["nope"], "ours", SLEEP, "no readable PEM"),
    ("another key's leaf", lambda c: c, "other", SLEEP, "not for this agent's key"),
    ("another identity", lambda c: c, "ours", PeerIdentity("cluster.local", "default", "admin"), "expected"),
    ("no root", lambda c: c[:2], "ours", SLEEP, "no root"),
    ("wrong root", lambda c: c[:2] + [STRANGER_ROOT], "ours", SLEEP, "does not verify"),
    ("missing intermediate", lambda c: [c[0], c[2]], "ours", SLEEP, "does not verify"),
])
def test_unusable_answers_are_refused(issued, name, mutate, key_of, expected, says):
    key, chain = issued
    public = key.public_key() if key_of == "ours" else generate_key().public_key()
    with pytest.raises(AgentError, match=says):
        check_issued_chain(mutate(list(chain)), public, expected)


def test_envoy_secrets_are_sds_default_and_rootca():
    secret = WorkloadSecret(SLEEP, b"CHAIN", b"KEY", b"ROOTS", NOW, NOW + DAY, NOW, NOW + DAY / 2)
    default, rootca = secret.envoy_secrets()
    assert default["name"] == "default" and rootca["name"] == "ROOTCA"
    tls = default["tls_certificate"]
    assert base64.b64decode(tls["certificate_chain"]["inline_bytes"]) == b"CHAIN"
    assert base64.b64decode(tls["private_key"]["inline_bytes"]) == b"KEY"
    assert base64.b64decode(rootca["validation_context"]["trusted_ca"]["inline_bytes"]) == b"ROOTS"
    assert "KEY" not in repr(secret)
