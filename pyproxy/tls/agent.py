"""The sidecar's certificate agent: what istio-agent (pilot-agent's SDS server and secret cache) does beside
Envoy. It makes the workload's private key (it never leaves this process), sends a CSR to the control plane's
CA with the workload's service-account token, keeps the answer as Envoy's two SDS secrets, and renews it at
about half its lifetime.

    key (ECDSA P-256 default, RSA-2048 option)  ->  CSR with URI SAN spiffe://<td>/ns/<ns>/sa/<sa>
    POST https://<ca>/istio.v1.auth.IstioCertificateService/CreateCertificate
         {"csr", "validity_duration"}, Authorization: Bearer <token file>, server verified with the mesh root
         file (Istio mounts it as istio-ca-root-cert/root-cert.pem)
    <- {"cert_chain": [leaf, intermediates..., root(s)]}
    SDS `default` = leaf + intermediates + key;  SDS `ROOTCA` = the root(s)   (pkg/security/security.go)

Renewal time (security/pkg/nodeagent/cache/secretcache.go `rotateTime`): ratio = 0.5 +/- U(0, 0.01) (random
sign), clamped to [0, 1]; rotate at `expiry - ratio * (expiry - issued)`: about 12 h +/- 15 min into a 24 h
certificate. `rotate_time` is that decision, pure, with the random source injected; `CertificateAgent.run`
only sleeps until it. Renewals may authenticate with the current certificate (mTLS to the CA) instead of the
token, as Istio's VM workloads do once they have one (`renew_with_certificate=True`).

Subscribers (callbacks) are told of each new secret; with `output_dir`, the files Istio's agent writes
(`OUTPUT_CERTS`: cert-chain.pem, key.pem 0600, root-cert.pem) are replaced atomically.

This module must not import `control`: the sidecar and the control plane share only wire formats.

`isolated=True` (what `pyproxy sidecar` uses) makes each key and CSR round trip in a short-lived child process
(`python -m pyproxy.tls.agent`, the request as JSON on stdin, the issued chain and key as JSON on stdout), as
Istio keeps it in pilot-agent beside Envoy: `cryptography` and aiohttp (about 18 MiB of a sidecar's RSS
together, measured) are then never loaded by the long-running proxy process; the child lives for one request
(about 12 h apart). A sidecar asking for certificates shorter than `ISOLATE_MIN_TTL` issues them in-process.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from pyproxy.tls.contexts import client_context
from pyproxy.tls.files import make_private_dir, write_file_atomic
from pyproxy.tls.identity import IdentityError, PeerIdentity, identity_from_uri_sans, parse_spiffe_uri
from pyproxy.tls.secrets import SDS_DEFAULT, SDS_ROOTCA

if TYPE_CHECKING:  # pragma: no cover
    from cryptography import x509

    from pyproxy.tls.pki import KeyType

log = logging.getLogger("pyproxy.tls.agent")

CREATE_CERTIFICATE_PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
SECRET_TTL = 24 * 3600      # SECRET_TTL: what the agent asks for
GRACE_PERIOD_RATIO = 0.5    # SECRET_GRACE_PERIOD_RATIO
GRACE_PERIOD_JITTER = 0.01  # SECRET_GRACE_PERIOD_RATIO_JITTER
RETRY_INITIAL, RETRY_MAX = 1.0, 60.0  # backoff after a failed request (seconds)
CHILD_STARTUP = 30.0  # seconds a child process (`isolated`) may take beyond the request timeout to start
# The shortest TTL `pyproxy sidecar` isolates: a child's start-up (an interpreter with aiohttp and cryptography,
# ~0.3 s, seconds on a loaded machine) must stay small beside the time to renewal (half the TTL). With 6 s
# certificates, children under CI load let certificates expire (tests/e2e/test_mesh_mtls.py root rotation: 503s).
ISOLATE_MIN_TTL = 300.0
OUTPUT_FILES = ("cert-chain.pem", "key.pem", "root-cert.pem")


class AgentError(Exception):
    """The CA could not be reached, refused the CSR, or answered with something unusable: one line."""


def rotate_time(issued_at: float, expires_at: float, rng: random.Random, *, grace_ratio: float = GRACE_PERIOD_RATIO,
                jitter: float = GRACE_PERIOD_JITTER) -> float:
    """When to renew a certificate valid from `issued_at` to `expires_at` (Istio's rotateTime)."""
    delta = rng.random() * jitter
    if rng.random() < 0.5:
        delta = -delta
    ratio = min(max(grace_ratio + delta, 0.0), 1.0)
    return expires_at - ratio * (expires_at - issued_at)


@dataclass(frozen=True, slots=True)
class WorkloadSecret:
    """One issued identity: Envoy's SDS `default` (chain + key) and `ROOTCA` (bundle), and its times."""

    identity: PeerIdentity
    cert_chain_pem: bytes           # leaf first, then intermediates (no roots)
    private_key_pem: bytes = field(repr=False)
    root_bundle_pem: bytes          # every root the CA trusts now (two during a root rotation)
    not_before: float
    not_after: float
    issued_at: float                # agent clock when received (Istio's CreatedTime)
    rotate_at: float
    serial_hex: str = ""            # the leaf's serial number and issuer (RFC 4514), for the admin /server_info
    issuer: str = ""

    def envoy_secrets(self) -> list[dict[str, Any]]:
        """The two SDS resources as Envoy v3 `Secret` JSON (inline_bytes, base64)."""
        def b64(data: bytes) -> dict[str, str]:
            return {"inline_bytes": base64.b64encode(data).decode("ascii")}
        return [
            {"name": SDS_DEFAULT, "tls_certificate": {"certificate_chain": b64(self.cert_chain_pem),
                                                      "private_key": b64(self.private_key_pem)}},
            {"name": SDS_ROOTCA, "validation_context": {"trusted_ca": b64(self.root_bundle_pem)}},
        ]


@dataclass(frozen=True, slots=True)
class IssuedChain:
    leaf: x509.Certificate
    chain_pem: bytes
    roots_pem: bytes
    identity: PeerIdentity


def check_issued_chain(cert_chain: Any, key_public: Any, expected: PeerIdentity | None) -> IssuedChain:
    """Validate the CA's `cert_chain` for our key and identity (pure): the leaf carries our public key and our
    SPIFFE URI SAN, and leaf -> intermediates -> one of the returned roots verifies."""
    from pyproxy.tls.identity import uri_sans_from_certificate
    from pyproxy.tls.pki import certificates_pem, is_self_signed, issued_by, load_certificates, same_public_key

    if not isinstance(cert_chain, list) or not cert_chain or not all(isinstance(c, str) for c in cert_chain):
        raise AgentError("CA answer has no 'cert_chain' list of PEM strings")
    try:
        certs = [c for pem in cert_chain for c in load_certificates(pem, "CA answer")]
    except ValueError as err:
        raise AgentError(str(err)) from None
    leaf, rest = certs[0], certs[1:]
    if not same_public_key(leaf.public_key(), key_public):
        raise AgentError("CA answer's leaf certificate is not for this agent's key")
    identity = identity_from_uri_sans(uri_sans_from_certificate(leaf))
    if identity is None or (expected is not None and identity != expected):
        raise AgentError(f"CA answer's leaf is for {identity.uri if identity else 'no SPIFFE id'}, "
                         f"expected {expected.uri if expected else 'a SPIFFE id'}")
    roots = [c for c in rest if is_self_signed(c)]
    intermediates = [c for c in rest if not is_self_signed(c)]
    if not roots:
        raise AgentError("CA answer carries no root certificate")
    path = [leaf, *intermediates]
    if not all(issued_by(child, parent) for child, parent in zip(path, path[1:])) or \
            not any(issued_by(path[-1], root) for root in roots):
        raise AgentError("CA answer's chain does not verify up to its root")
    return IssuedChain(leaf, certificates_pem(path), certificates_pem(roots), identity)


Subscriber = Callable[[WorkloadSecret], None]


class CertificateAgent:
    """Gets and keeps the workload certificate. `await agent.fetch()` once, or `await agent.run()` to keep it
    fresh; `agent.secret` is the current `WorkloadSecret`; `agent.subscribe(cb)` hears every rotation."""

    def __init__(self, ca_url: str, *, root_cert_path: str | Path, token_path: str | Path | None = None,
                 identity: PeerIdentity | None = None, key_type: "KeyType | str" = "ec-p256",
                 ttl: float = SECRET_TTL, output_dir: str | Path | None = None, renew_with_certificate: bool = False,
                 server_hostname: str | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, request_timeout: float = 30.0,
                 grace_ratio: float = GRACE_PERIOD_RATIO, isolated: bool = False):
        self.ca_url = ca_url.rstrip("/")
        self.root_cert_path = Path(root_cert_path)
        self.token_path = Path(token_path) if token_path is not None else None
        self.identity = identity
        self.key_type = key_type
        self.ttl = ttl
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.renew_with_certificate = renew_with_certificate
        if not 0.0 < grace_ratio < 1.0:
            raise ValueError(f"grace period ratio {grace_ratio} must be between 0 and 1 (SECRET_GRACE_PERIOD_RATIO)")
        self.grace_ratio = grace_ratio
        self.server_hostname = server_hostname
        self._clock = clock
        self._rng = rng or random.Random()
        self.request_timeout = request_timeout
        self.isolated = isolated  # each CSR round trip in a child process (see the module docstring)
        self._subscribers: list[Subscriber] = []
        self.secret: WorkloadSecret | None = None
        self.rotations = 0
        self.failures = 0

    def __repr__(self) -> str:
        s = self.secret
        state = f"{s.identity.uri} until {s.not_after:.0f}, renew at {s.rotate_at:.0f}" if s else "no certificate"
        return f"CertificateAgent({self.ca_url}, {state}, rotations={self.rotations}, failures={self.failures})"

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)
        if self.secret is not None:
            callback(self.secret)

    def due(self, now: float) -> bool:
        """Renew now? (no certificate yet, or the rotation time has come)."""
        return self.secret is None or now >= self.secret.rotate_at

    # ------------------------------------------------------------------ I/O
    def _credentials(self) -> tuple[str | None, tuple[bytes, bytes] | None]:
        """(Authorization header, client cert+key) for the next request."""
        current = self.secret
        if self.renew_with_certificate and current is not None and self._clock() < current.not_after:
            return None, (current.cert_chain_pem, current.private_key_pem)
        if self.token_path is None:
            raise AgentError("no token file configured and no current certificate to renew with")
        try:
            token = self.token_path.read_text().strip()
        except OSError as err:
            raise AgentError(f"{self.token_path}: cannot read token ({err.strerror})") from None
        if not token:
            raise AgentError(f"{self.token_path}: token file is empty")
        return f"Bearer {token}", None

    def _client_ssl(self, client_cert: tuple[bytes, bytes] | None) -> Any:
        try:
            roots = self.root_cert_path.read_bytes()
        except OSError as err:
            raise AgentError(f"{self.root_cert_path}: cannot read mesh root certificate ({err.strerror})") from None
        try:
            return client_context(roots, *(client_cert or (None, None)), check_hostname=True)
        except ValueError as err:
            raise AgentError(f"{self.root_cert_path}: {err}") from None

    async def _post(self, body: dict[str, Any], authorization: str | None, client_cert: Any) -> Any:
        import aiohttp

        headers = {"Authorization": authorization} if authorization else {}
        ssl_ctx = self._client_ssl(client_cert)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout)) as session:
                async with session.post(self.ca_url + CREATE_CERTIFICATE_PATH, json=body, headers=headers,
                                        ssl=ssl_ctx, server_hostname=self.server_hostname) as resp:
                    try:
                        doc = await resp.json(content_type=None)
                    except ValueError:
                        doc = None
                    if resp.status != 200:
                        detail = doc.get("message") if isinstance(doc, dict) else None
                        reason = doc.get("reason", "") if isinstance(doc, dict) else ""
                        raise AgentError(f"CA refused the CSR: HTTP {resp.status} {reason}: {detail or resp.reason}")
                    return doc
        except aiohttp.ClientError as err:
            raise AgentError(f"cannot reach the CA at {self.ca_url}: {err}") from None
        except asyncio.TimeoutError:
            raise AgentError(f"CA at {self.ca_url} did not answer in {self.request_timeout}s") from None

    async def _issue(self, authorization: str | None, client_cert: Any) -> dict[str, Any]:
        """A new key, its CSR, the CA's answer checked: the issued material as JSON-able fields."""
        from pyproxy.tls.pki import KeyType, build_csr, generate_key, private_key_pem

        key = generate_key(KeyType(self.key_type))
        csr = build_csr(key, self.identity.uri if self.identity else None)
        doc = await self._post({"csr": csr.decode("ascii"), "validity_duration": int(self.ttl)},
                               authorization, client_cert)
        issued = check_issued_chain(doc.get("cert_chain") if isinstance(doc, dict) else None,
                                    key.public_key(), self.identity)
        return {"identity": issued.identity.uri, "chain_pem": issued.chain_pem.decode("ascii"),
                "key_pem": private_key_pem(key).decode("ascii"), "roots_pem": issued.roots_pem.decode("ascii"),
                "not_before": issued.leaf.not_valid_before_utc.timestamp(),
                "not_after": issued.leaf.not_valid_after_utc.timestamp(),
                "serial_hex": format(issued.leaf.serial_number, "x"), "issuer": issued.leaf.issuer.rfc4514_string()}

    def _child_request(self, authorization: str | None, client_cert: Any) -> dict[str, Any]:
        """What the child process needs to do `_issue` (JSON on its stdin)."""
        return {"ca_url": self.ca_url, "root_cert_path": str(self.root_cert_path),
                "identity": self.identity.uri if self.identity else None, "key_type": _key_type_name(self.key_type),
                "ttl": self.ttl, "server_hostname": self.server_hostname, "request_timeout": self.request_timeout,
                "authorization": authorization,
                "client_cert": [c.decode("ascii") for c in client_cert] if client_cert else None}

    async def _issue_in_child(self, authorization: str | None, client_cert: Any) -> dict[str, Any]:
        """`_issue` in `python -m pyproxy.tls.agent`; its one-line error comes back as AgentError. The child is
        killed when this is cancelled or it outlives the request timeout (plus its start-up)."""
        request = json.dumps(self._child_request(authorization, client_cert)).encode()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pyproxy.tls.agent", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as err:  # no process could be started (fork refused, descriptors exhausted)
            raise AgentError(f"cannot start the certificate helper: {err}") from None
        try:
            async with asyncio.timeout(self.request_timeout + CHILD_STARTUP):
                out, err = await proc.communicate(request)
        except asyncio.TimeoutError:
            raise AgentError(f"certificate helper did not finish in {self.request_timeout + CHILD_STARTUP:.0f}s "
                             f"(CA at {self.ca_url})") from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        try:
            doc = json.loads(out)
        except ValueError:
            last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise AgentError(f"certificate helper exited with status {proc.returncode}: {last}") from None
        if not isinstance(doc, dict) or "error" in doc:
            raise AgentError(str(doc.get("error") if isinstance(doc, dict) else doc))
        return doc

    async def fetch(self) -> WorkloadSecret:
        """One CSR round trip: a new key, a new certificate; subscribers and files are updated."""
        authorization, client_cert = self._credentials()
        if self.isolated:
            issued = await self._issue_in_child(authorization, client_cert)
        else:
            issued = await self._issue(authorization, client_cert)
        try:
            identity = parse_spiffe_uri(issued["identity"])
            now = self._clock()
            not_after = float(issued["not_after"])
            rotate_at = rotate_time(now, not_after, self._rng, grace_ratio=self.grace_ratio)
            secret = WorkloadSecret(identity, issued["chain_pem"].encode("ascii"), issued["key_pem"].encode("ascii"),
                                    issued["roots_pem"].encode("ascii"), float(issued["not_before"]), not_after,
                                    now, rotate_at, str(issued["serial_hex"]), str(issued["issuer"]))
        except (KeyError, TypeError, ValueError, AttributeError, IdentityError) as err:
            raise AgentError(f"certificate helper answered something unusable: {type(err).__name__}: {err}") from None
        self._install(secret)
        return secret

    def _install(self, secret: WorkloadSecret) -> None:
        self.secret = secret
        self.rotations += 1
        if self.output_dir is not None:
            write_secret_files(secret, self.output_dir)
        for callback in list(self._subscribers):
            callback(secret)

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Keep a valid certificate until cancelled: fetch when due, else sleep until the rotation time.
        A failed request is retried with exponential backoff (the current certificate stays in use)."""
        backoff = RETRY_INITIAL
        while True:
            now = self._clock()
            if self.due(now):
                try:
                    await self.fetch()
                    backoff = RETRY_INITIAL
                except AgentError as err:
                    self.failures += 1
                    log.warning("certificate request failed (retrying in %.0fs): %s", backoff, err)
                    await sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                    continue
            assert self.secret is not None
            await sleep(max(0.0, self.secret.rotate_at - self._clock()))


def write_secret_files(secret: WorkloadSecret, directory: str | Path) -> None:
    """Istio's OUTPUT_CERTS files: cert-chain.pem, key.pem (0600), root-cert.pem; each replaced atomically."""
    directory = make_private_dir(directory)
    chain_name, key_name, root_name = OUTPUT_FILES
    write_file_atomic(directory / key_name, secret.private_key_pem, 0o600)
    write_file_atomic(directory / chain_name, secret.cert_chain_pem, 0o644)
    write_file_atomic(directory / root_name, secret.root_bundle_pem, 0o644)


def _key_type_name(key_type: Any) -> str:
    """The value of a KeyType ("ec-p256"), or the string given, without importing pyproxy.tls.pki."""
    return str(getattr(key_type, "value", key_type))


def _child_agent(request: dict[str, Any]) -> tuple[CertificateAgent, str | None, tuple[bytes, bytes] | None]:
    """The in-process agent and credentials an isolated parent asked this child to use."""
    identity = parse_spiffe_uri(request["identity"]) if request.get("identity") else None
    agent = CertificateAgent(request["ca_url"], root_cert_path=request["root_cert_path"], identity=identity,
                             key_type=request["key_type"], ttl=request["ttl"],
                             server_hostname=request.get("server_hostname"),
                             request_timeout=request["request_timeout"])
    cert = request.get("client_cert")
    return agent, request.get("authorization"), (cert[0].encode("ascii"), cert[1].encode("ascii")) if cert else None


def child_main() -> int:
    """`python -m pyproxy.tls.agent`: one `_issue` for an isolated agent; JSON in on stdin, JSON out on stdout
    (`{"error": "..."}` with status 1 for an AgentError, 2 for a request it cannot read)."""
    try:
        agent, authorization, client_cert = _child_agent(json.loads(sys.stdin.read()))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:  # IdentityError is a ValueError
        print(json.dumps({"error": f"certificate helper: unusable request: {type(err).__name__}: {err}"}))
        return 2
    try:
        out = asyncio.run(agent._issue(authorization, client_cert))
    except AgentError as err:
        print(json.dumps({"error": str(err)}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
