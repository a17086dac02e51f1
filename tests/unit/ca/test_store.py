"""CA files (control/ca/store.py) and the `meshctl ca init` / `meshctl token create` commands."""
from __future__ import annotations

import io
import stat

import pytest

from control.ca.store import (CAStoreError, create_ca_set, load_cacerts, open_authority, token_signing_key,
                              token_verifier)
from control.cli.meshctl import main
from pyproxy.tls.pki import KeyType, load_certificates

from .conftest import NOW

FILES = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_self_signed_root_is_made_once_and_reused(tmp_path, clock):
    first = open_authority(tmp_path, clock=clock, key_type=KeyType.EC_P256)
    ca_dir = tmp_path / "ca"
    assert sorted(p.name for p in ca_dir.iterdir()) == sorted(FILES)
    assert mode(ca_dir / "ca-key.pem") == 0o600 and mode(ca_dir) == 0o700
    assert first.signing_cert == first.chain_root  # self-signed: the root signs
    assert first.chain_root.not_valid_after_utc.timestamp() == NOW + 3650 * 86400
    again = open_authority(tmp_path, clock=clock, key_type=KeyType.EC_P256)
    assert again.chain_root == first.chain_root


def test_plugged_in_cacerts_are_loaded(tmp_path, clock):
    create_ca_set(tmp_path / "cacerts", trust_domain="cluster.local", clock=clock, key_type=KeyType.EC_P256)
    ca = open_authority(tmp_path / "state", cacerts_dir=tmp_path / "cacerts", clock=clock)
    assert ca.signing_cert != ca.chain_root and len(ca.roots) == 1
    assert not (tmp_path / "state" / "ca").exists()  # a plugged-in CA makes no self-signed root
    assert mode(tmp_path / "cacerts" / "root-key.pem") == 0o600


@pytest.mark.parametrize("damage, says", [
    (lambda d: (d / "ca-key.pem").unlink(), "ca-key.pem: missing"),
    (lambda d: (d / "root-cert.pem").write_text("junk"), "root-cert.pem holds no readable PEM certificate"),
    (lambda d: (d / "ca-key.pem").write_bytes((d / "root-key.pem").read_bytes()), "does not match"),
    (lambda d: (d / "root-cert.pem").write_bytes((d / "ca-cert.pem").read_bytes()), "not a self-signed root"),
    (lambda d: create_ca_set(d / "other", trust_domain="cluster.local", key_type=KeyType.EC_P256) and
     (d / "root-cert.pem").write_bytes((d / "other" / "root-cert.pem").read_bytes()), "does not chain"),
])
def test_broken_cacerts_are_one_line_naming_the_file(tmp_path, clock, damage, says):
    d = create_ca_set(tmp_path / "c", trust_domain="cluster.local", clock=clock, key_type=KeyType.EC_P256)
    damage(d)
    with pytest.raises(CAStoreError) as info:
        load_cacerts(d, clock=clock)
    assert says in str(info.value) and "\n" not in str(info.value)


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_meshctl_ca_init_writes_the_layout_and_never_prints_keys(tmp_path):
    code, out, err = run("ca", "init", "--out", str(tmp_path / "c"), "--key-type", "ec-p256")
    assert code == 0, err
    assert all((tmp_path / "c" / f).exists() for f in FILES)
    assert "PRIVATE KEY" not in out + err
    load_cacerts(tmp_path / "c")  # loads as a plugged-in CA
    code, _, err = run("ca", "init", "--out", str(tmp_path / "c"))
    assert code == 1 and "already holds" in err and "--force" in err


def test_meshctl_ca_init_also_trust_makes_a_two_root_bundle(tmp_path):
    assert run("ca", "init", "--out", str(tmp_path / "old"), "--key-type", "ec-p256")[0] == 0
    code, _, err = run("ca", "init", "--out", str(tmp_path / "new"), "--key-type", "ec-p256",
                       "--also-trust", str(tmp_path / "old" / "root-cert.pem"))
    assert code == 0, err
    bundle = load_certificates((tmp_path / "new" / "root-cert.pem").read_bytes())
    old_root = load_certificates((tmp_path / "old" / "root-cert.pem").read_bytes())[0]
    assert len(bundle) == 2 and bundle[1] == old_root


def test_meshctl_token_create_writes_a_token_the_control_plane_accepts(tmp_path):
    out_file = tmp_path / "istio-token"
    code, out, err = run("token", "create", "-n", "prod", "--service-account", "reviews", "--ttl", "2h",
                         "--ca-dir", str(tmp_path / "state"), "-o", str(out_file))
    assert code == 0, err
    assert mode(out_file) == 0o600 and mode(tmp_path / "state" / "sa-token-key.pem") == 0o600
    assert "expires in 2h0m0s" in out
    sa = token_verifier(tmp_path / "state").verify(out_file.read_text().strip())
    assert (sa.namespace, sa.name) == ("prod", "reviews")


@pytest.mark.parametrize("argv, says", [
    (("token", "create", "-n", "a:b", "--service-account", "s", "--ca-dir", "{d}"), "may not contain ':'"),
    (("token", "create", "-n", "a", "--service-account", "s"), "give --ca-dir"),
    (("token", "create", "-n", "a", "--service-account", "s", "--ca-dir", "{d}", "--ttl", "10"), "missing unit"),
    (("ca", "init", "--out", "{d}/x", "--key-type", "dsa"), "unknown key type"),
])
def test_meshctl_bad_input_is_one_line(tmp_path, monkeypatch, capsys, argv, says):
    monkeypatch.delenv("PYPROXY_CA_DIR", raising=False)
    code, _, err = run(*(a.format(d=tmp_path) for a in argv))
    err += capsys.readouterr().err  # argparse's usage errors go to sys.stderr
    assert code != 0 and says in err and "Traceback" not in err


def test_token_key_is_created_once(tmp_path):
    assert token_signing_key(tmp_path).private_numbers() == token_signing_key(tmp_path).private_numbers()
    with pytest.raises(CAStoreError, match="missing"):
        token_signing_key(tmp_path / "none", create=False)
