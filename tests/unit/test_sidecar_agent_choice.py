"""Which way `pyproxy sidecar` issues its certificates: in a child process for the usual TTLs (the proxy never
loads cryptography), in-process for certificates so short that a child's start-up would eat their renewal
window (pyproxy.tls.agent ISOLATE_MIN_TTL)."""
from __future__ import annotations

import argparse

import pytest
import trustme

from pyproxy.cli import _secure_control
from pyproxy.tls.agent import ISOLATE_MIN_TTL


def _args(tmp_path, ttl: float) -> argparse.Namespace:
    root, token = tmp_path / "root.pem", tmp_path / "token"
    trustme.CA().cert_pem.write_to_path(str(root))
    token.write_text("token")
    return argparse.Namespace(ca_root=str(root), token_file=str(token), trust_domain="cluster.local",
                              control="https://127.0.0.1:15012", secret_ttl=ttl)


NODE = {"metadata": {"NAMESPACE": "default", "SERVICE_ACCOUNT": "bookinfo-reviews"}}


@pytest.mark.parametrize("ttl, isolated", [(86400.0, True), (ISOLATE_MIN_TTL, True), (ISOLATE_MIN_TTL - 1, False),
                                           (6.0, False)])
def test_a_child_process_issues_the_usual_certificates_and_short_ones_are_issued_in_process(tmp_path, ttl, isolated):
    secure = _secure_control(_args(tmp_path, ttl), NODE, server=None)
    assert secure.agent.isolated is isolated
    assert secure.agent.ttl == ttl
