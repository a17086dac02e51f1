"""The CA over real HTTPS (control/ca/server.py on 127.0.0.1:0) and the sidecar agent that uses it
(pyproxy/tls/agent.py): a token gets a certificate; two workloads' certificates do a real mutual TLS
handshake that verifies each other's URI SAN; every refusal is an HTTP error with Istio's reason, counted,
and signs nothing; renewal authenticates with the current certificate; renewal times follow the injected
clock."""
from __future__ import annotations

import asyncio
import dataclasses
import ssl
import stat
import time

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from control.ca.server import CREATE_CERTIFICATE_PATH, CAMetrics, CertificateService, ca_app, server_ssl_context
from control.ca.store import create_ca_set, load_cacerts, token_signer, token_verifier
from pyproxy.tls.agent import AgentError, CertificateAgent, WorkloadSecret
from pyproxy.tls.identity import IdentityError, PeerIdentity
from pyproxy.tls.pki import KeyType, load_certificates
from tests.support.ca import BOUND, CAServer, mtls_exchange

SLEEP = PeerIdentity("cluster.local", "default", "sleep")
HTTPBIN = PeerIdentity("cluster.local", "prod", "httpbin")
DAY = 86400


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Mesh:
    """A CA (plugged-in cacerts, EC keys), its 15012-style server, the mesh root file, token files."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.clock = Clock()
        self.state = tmp_path / "state"
        create_ca_set(tmp_path / "cacerts", trust_domain="cluster.local", clock=self.clock, key_type=KeyType.EC_P256)
        self.authority = load_cacerts(tmp_path / "cacerts", clock=self.clock)
        self.metrics = CAMetrics(CollectorRegistry(auto_describe=False))
        self.service = CertificateService(self.authority, token_verifier(self.state, clock=self.clock), self.metrics)
        self.server = CAServer(ca_app(self.service), server_ssl_context(self.authority))
        self.root_file = tmp_path / "istio-ca-root-cert" / "root-cert.pem"
        self.root_file.parent.mkdir()
        self.root_file.write_bytes(self.authority.trust_bundle_pem)

    def token_file(self, ident: PeerIdentity, ttl: float = 30 * DAY, clock=None):
        path = self.tmp / f"token-{ident.namespace}-{ident.service_account}"
        path.write_text(token_signer(self.state, clock=clock or self.clock).create(ident.namespace,
                                                                                   ident.service_account, ttl))
        return path

    def agent(self, ident: PeerIdentity, token_for: PeerIdentity | None = None, **kw) -> CertificateAgent:
        if "token_path" not in kw:
            kw["token_path"] = self.token_file(token_for or ident)
        return CertificateAgent(self.server.url, root_cert_path=self.root_file, identity=ident,
                                clock=self.clock, **kw)

    def count(self, name: str, *labels: str) -> float:
        return self.metrics.value(name, *labels)


@pytest.fixture
async def mesh(tmp_path):
    m = Mesh(tmp_path)
    await m.server.start()
    yield m
    await m.server.close()


async def test_agent_gets_a_certificate_for_its_token_over_https(mesh, tmp_path):
    seen: list[WorkloadSecret] = []
    agent = mesh.agent(SLEEP, output_dir=tmp_path / "out")
    agent.subscribe(seen.append)
    secret = await agent.fetch()
    assert seen == [secret] and agent.secret is secret
    assert secret.identity == SLEEP
    leaf, inter = load_certificates(secret.cert_chain_pem)
    assert leaf.not_valid_after_utc.timestamp() - mesh.clock.now == pytest.approx(DAY, abs=1)  # SECRET_TTL
    assert secret.root_bundle_pem == mesh.authority.trust_bundle_pem
    assert 0.49 * DAY <= secret.rotate_at - secret.issued_at <= 0.51 * DAY
    out = tmp_path / "out"
    assert (out / "cert-chain.pem").read_bytes() == secret.cert_chain_pem
    assert (out / "root-cert.pem").read_bytes() == secret.root_bundle_pem
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert mesh.count("citadel_server_csr_count") == mesh.count("citadel_server_success_cert_issuance_count") == 1


async def test_the_grace_ratio_moves_the_renewal_and_a_ratio_outside_0_1_is_refused(mesh):
    """SECRET_GRACE_PERIOD_RATIO (pyproxy agent --secret-grace-ratio): renew when that fraction is left."""
    secret = await mesh.agent(SLEEP, grace_ratio=0.2).fetch()
    assert 0.79 * DAY <= secret.rotate_at - secret.issued_at <= 0.81 * DAY
    with pytest.raises(ValueError, match="between 0 and 1"):
        mesh.agent(SLEEP, grace_ratio=1.0)


async def test_rsa_2048_agent_key(mesh):
    secret = await mesh.agent(HTTPBIN, key_type=KeyType.RSA_2048).fetch()
    assert load_certificates(secret.cert_chain_pem)[0].public_key().key_size == 2048


async def test_two_workloads_do_mutual_tls_and_see_each_others_spiffe_id(mesh):
    sleep, httpbin = await mesh.agent(SLEEP).fetch(), await mesh.agent(HTTPBIN).fetch()
    server_uri, client_uri = await mtls_exchange(httpbin, sleep, client_expects=[HTTPBIN.uri])
    assert (server_uri, client_uri) == (HTTPBIN.uri, SLEEP.uri)
    # the client expecting another service account refuses the server (Envoy's match_subject_alt_names)
    with pytest.raises(IdentityError, match="does not match"):
        await mtls_exchange(httpbin, sleep, client_expects=["spiffe://cluster.local/ns/prod/sa/reviews"])


async def test_a_certificate_from_another_mesh_fails_the_handshake(mesh, tmp_path):
    sleep = await mesh.agent(SLEEP).fetch()
    other = Mesh(tmp_path / "other")  # another root, same names
    await other.server.start()
    try:
        stranger = await other.agent(HTTPBIN).fetch()
    finally:
        await other.server.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        await mtls_exchange(stranger, sleep)          # client does not trust the server's root
    # even a client that trusts our root is refused by our server: its certificate chains to another root
    with pytest.raises((ConnectionError, ssl.SSLError)):
        await mtls_exchange(sleep, dataclasses.replace(stranger, root_bundle_pem=sleep.root_bundle_pem))


REFUSALS = [
    # name, agent kwargs maker, expected status/reason in the error, counter that moves
    ("CSR for another identity", lambda m: m.agent(HTTPBIN, token_for=SLEEP), "403 PermissionDenied",
     ("citadel_server_csr_sign_err_count", "CSRError")),
    ("expired token", lambda m: m.agent(SLEEP, token_path=m.token_file(SLEEP, ttl=60, clock=lambda: m.clock.now - 3600)),
     "401 Unauthenticated", ("citadel_server_authentication_failure_count",)),
    ("token from another signer", lambda m: m.agent(SLEEP, token_path=_foreign_token(m)), "401 Unauthenticated",
     ("citadel_server_authentication_failure_count",)),
    ("TTL over the maximum", lambda m: m.agent(SLEEP, ttl=91 * DAY), "400 InvalidArgument",
     ("citadel_server_csr_sign_err_count", "TTLError")),
]


def _foreign_token(m: Mesh):
    path = m.tmp / "foreign-token"
    path.write_text(token_signer(m.tmp / "elsewhere").create("default", "sleep"))
    return path


@pytest.mark.parametrize("name, make, says, counter", REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_refusals_over_https_are_clear_counted_and_sign_nothing(mesh, name, make, says, counter):
    agent = make(mesh)
    with pytest.raises(AgentError) as info:
        await agent.fetch()
    assert says in str(info.value) and "\n" not in str(info.value)
    assert agent.secret is None
    assert mesh.count(*counter) == 1
    assert mesh.count("citadel_server_csr_count") == 1
    assert mesh.count("citadel_server_success_cert_issuance_count") == 0


async def test_error_body_has_grpc_gateway_shape(mesh):
    ctx = ssl.create_default_context(cadata=mesh.authority.trust_bundle_pem.decode())
    async with aiohttp.ClientSession() as session:
        async with session.post(mesh.server.url + CREATE_CERTIFICATE_PATH, data=b"{not json", ssl=ctx) as resp:
            assert resp.status == 400
            doc = await resp.json()
        async with session.get(mesh.server.url + CREATE_CERTIFICATE_PATH, ssl=ctx) as resp:
            assert resp.status == 405
    assert doc["code"] == 3 and doc["reason"] == "InvalidArgument" and "not JSON" in doc["message"]
    assert mesh.count("citadel_server_csr_parsing_err_count") == 1


async def test_agent_refuses_a_ca_it_does_not_trust(mesh, tmp_path):
    stranger = tmp_path / "stranger-root.pem"
    create_ca_set(tmp_path / "s", trust_domain="cluster.local", key_type=KeyType.EC_P256)
    stranger.write_bytes((tmp_path / "s" / "root-cert.pem").read_bytes())
    agent = CertificateAgent(mesh.server.url, root_cert_path=stranger, token_path=mesh.token_file(SLEEP),
                             identity=SLEEP)
    with pytest.raises(AgentError, match="cannot reach the CA"):
        await agent.fetch()
    assert mesh.count("citadel_server_csr_count") == 0  # the token never left the agent


async def test_renewal_authenticates_with_the_current_certificate(mesh):
    agent = mesh.agent(SLEEP, renew_with_certificate=True)
    first = await agent.fetch()
    agent.token_path.unlink()  # the bootstrap token is gone: only the certificate can renew
    second = await agent.fetch()
    assert second.identity == SLEEP and second.cert_chain_pem != first.cert_chain_pem
    assert mesh.count("citadel_server_success_cert_issuance_count") == 2
    plain = mesh.agent(SLEEP)
    plain.token_path.unlink()
    with pytest.raises(AgentError, match="cannot read token"):
        await plain.fetch()


async def test_an_isolated_agent_does_each_csr_in_a_child_process_with_the_same_results(mesh):
    """`isolated=True` (pyproxy sidecar): key, CSR and the CA's answer are handled by `python -m
    pyproxy.tls.agent`; the secret, its serial and issuer, a renewal with the certificate and the CA's
    refusal (one line) are what the in-process agent gets."""
    agent = mesh.agent(SLEEP, renew_with_certificate=True, isolated=True)
    first = await agent.fetch()
    leaf, _inter = load_certificates(first.cert_chain_pem)
    assert first.identity == SLEEP and first.root_bundle_pem == mesh.authority.trust_bundle_pem
    assert (first.serial_hex, first.issuer) == (format(leaf.serial_number, "x"), leaf.issuer.rfc4514_string())
    assert first.not_after == leaf.not_valid_after_utc.timestamp()
    assert 0.49 * DAY <= first.rotate_at - first.issued_at <= 0.51 * DAY
    agent.token_path.unlink()
    second = await agent.fetch()
    assert second.identity == SLEEP and second.private_key_pem != first.private_key_pem
    assert mesh.count("citadel_server_success_cert_issuance_count") == 2
    refused = mesh.agent(SLEEP, token_for=HTTPBIN, isolated=True)
    with pytest.raises(AgentError) as info:
        await refused.fetch()
    in_process = mesh.agent(SLEEP, token_for=HTTPBIN)
    with pytest.raises(AgentError) as same:
        await in_process.fetch()
    assert str(info.value) == str(same.value) and "HTTP 403" in str(info.value) and "\n" not in str(info.value)


async def run_until(agent: CertificateAgent, sleep, event: asyncio.Event) -> None:
    """Run the agent's loop with `sleep` until `event` is set (bounded), then stop it."""
    task = asyncio.create_task(agent.run(sleep=sleep))
    try:
        await asyncio.wait_for(event.wait(), BOUND)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_renewal_follows_the_injected_clock(mesh):
    """run() sleeps until rotate_at (half-life +/- 1 %); the fake sleep advances the shared clock, so three
    rotations happen at 12 h intervals of *clock* time, with no real waiting."""
    slept: list[float] = []
    secrets: list[WorkloadSecret] = []
    three = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:  # injected into run(): the agent waits on the test's clock
        slept.append(seconds)
        mesh.clock.now += seconds
        await asyncio.sleep(0)  # the injected sleep: one loop turn, no real wait

    agent = mesh.agent(SLEEP)
    agent.subscribe(lambda s: (secrets.append(s), len(secrets) >= 3 and three.set()))
    await run_until(agent, fake_sleep, three)
    for before, after in zip(secrets, secrets[1:]):
        assert after.issued_at == before.rotate_at                 # renewed exactly when due
        assert after.not_after - before.not_after == pytest.approx(before.rotate_at - before.issued_at, abs=1)
    assert all(0.49 * DAY <= s <= 0.51 * DAY for s in slept[:2])
    assert agent.failures == 0 and agent.rotations == 3
    assert len({s.cert_chain_pem for s in secrets}) == 3


async def test_run_retries_after_a_failure_with_backoff(mesh):
    slept: list[float] = []
    agent = mesh.agent(SLEEP)
    token = agent.token_path.read_text()
    agent.token_path.unlink()
    got = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:  # injected into run(): records the back-off asked for
        slept.append(seconds)
        if len(slept) == 3:
            agent.token_path.write_text(token)  # the token appears after three failures
        await asyncio.sleep(0)  # the injected sleep: one loop turn, no real wait

    agent.subscribe(lambda s: got.set())
    await run_until(agent, fake_sleep, got)
    assert slept[:3] == [1.0, 2.0, 4.0] and agent.failures == 3
