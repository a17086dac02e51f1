"""SDS for a real Envoy: `pyproxy agent` serves the workload's secrets to its Envoy as istio-agent does, over a unix
domain socket in its work directory (Istio: `./var/run/secrets/workload-spiffe-uds/socket`, the bootstrap's
`sds-grpc` cluster), with `envoy.service.secret.v3.SecretDiscoveryService.StreamSecrets` (state of the world).

The secrets are istiod's two names (security/pkg/nodeagent/sds, pkg/security `WorkloadKeyCertResourceName`,
`RootCertReqResourceName`): `default` (the workload's chain + private key, `tls_certificate`) and `ROOTCA` (the mesh
roots, `validation_context.trusted_ca`); the control plane's clusters and listeners name them with
`sds_config.api_config_source` -> `sds-grpc` (control/translate/authn.py `sds`). The certificate comes from
pyproxy.tls.agent.CertificateAgent (key made here, CSR to the control plane's CA with the token); each renewal is
pushed on every open stream that asked for the names, so Envoy's new connections use the new certificate.

Pure pieces, no I/O: `secret_messages` (WorkloadSecret -> Secret protos), `secret_versions`, `SdsStreamState` (what a
request means: a new subscription, an ACK, a NACK, a stale nonce). `SecretDiscovery` is the servicer,
`start_sds` binds it on the socket.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
from dataclasses import dataclass
from typing import Iterable

import grpc
from google.protobuf import any_pb2, json_format

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from pyproxy.tls.agent import WorkloadSecret
from pyproxy.tls.secrets import SDS_DEFAULT, SDS_ROOTCA

log = logging.getLogger("pyproxy.agent")

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SOCKET_PATH = os.path.join("var", "run", "secrets", "workload-spiffe-uds", "socket")  # under the work dir, as Istio
MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path is 108 bytes on Linux


def socket_path(work_dir: str) -> str | None:
    """Istio's socket path under the work dir, absolute; None when too long for a unix socket address (the caller
    then uses a short temporary directory)."""
    path = os.path.join(os.path.abspath(work_dir), SOCKET_PATH)
    return path if len(path.encode()) <= MAX_SOCKET_PATH else None


def secret_messages(secret: WorkloadSecret) -> dict[str, secret_pb2.Secret]:
    """`default` and `ROOTCA` as Envoy's `Secret` messages (inline bytes: the key never touches a file)."""
    return {doc["name"]: json_format.ParseDict(doc, secret_pb2.Secret()) for doc in secret.envoy_secrets()}


def secret_versions(secret: WorkloadSecret) -> dict[str, str]:
    """Per secret, a hash of its content: a renewal changes `default`; `ROOTCA` changes only with the roots, so a
    stream for `ROOTCA` is not pushed the same bundle at every renewal (istio-agent pushes a secret when it changes)."""
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:16]
    return {SDS_DEFAULT: digest(secret.cert_chain_pem), SDS_ROOTCA: digest(secret.root_bundle_pem)}


@dataclass(slots=True)
class SdsStreamState:
    """One StreamSecrets call's bookkeeping, as Envoy's state-of-the-world protocol reads (docs/xds.md "ACK, NACK"):
    a request without a nonce, or with the last nonce but other resource_names, asks for an answer now; the
    last nonce with the same names is an ACK (or, with error_detail, a NACK: the previous secret stays in use and
    the same one is not sent again); an older nonce is stale and ignored."""

    names: tuple[str, ...] = ()
    last_nonce: str = ""
    sent_version: str = ""
    nacked_version: str = ""

    def on_request(self, names: Iterable[str], nonce: str, error: str | None) -> bool:
        """Record a request; True when it must be answered with the current secrets now."""
        names = tuple(names)
        if nonce and nonce != self.last_nonce:
            return False  # stale: an answer to a response we have since replaced
        if nonce and error is not None:
            self.nacked_version = self.sent_version
            return False
        changed = names != self.names
        self.names = names
        if nonce and not changed:
            return False  # ACK
        self.sent_version = self.nacked_version = ""  # answer even with the version it already holds
        return True

    def due(self, version: str) -> bool:
        """A push: the stream asked for something and holds another version (not one it refused)."""
        return bool(self.names) and version not in (self.sent_version, self.nacked_version)

    def sent(self, version: str, nonce: str) -> None:
        self.sent_version, self.last_nonce = version, nonce


class SecretStore:
    """The current secrets (set by the certificate agent's subscription) and a change signal for the streams."""

    def __init__(self) -> None:
        self.messages: dict[str, secret_pb2.Secret] = {}
        self.versions: dict[str, str] = {}
        self.changed = asyncio.Event()
        self.pushes = 0

    def version(self, names: Iterable[str]) -> str:
        """The version of what a stream asking for `names` would get; "" while none of them exists."""
        return "/".join(self.versions[n] for n in names if n in self.versions)

    def install(self, secret: WorkloadSecret) -> None:
        self.messages = secret_messages(secret)
        self.versions = secret_versions(secret)
        self.changed.set()
        self.changed = asyncio.Event()  # streams waiting on the old event wake; later waits use the new one


def response(store: SecretStore, names: Iterable[str], nonce: str) -> discovery_pb2.DiscoveryResponse:
    """The secrets among `names` that exist (an unknown name is left out: Envoy keeps waiting for it)."""
    resources = []
    for name in names:
        message = store.messages.get(name)
        if message is not None:
            packed = any_pb2.Any()
            packed.Pack(message)
            resources.append(packed)
    return discovery_pb2.DiscoveryResponse(version_info=store.version(names), resources=resources,
                                           type_url=SECRET_TYPE, nonce=nonce)


class SecretDiscovery(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """StreamSecrets: answer each subscription once the first certificate exists, push each rotation.

    Each stream is one loop that takes one event at a time (opening, a request read, a renewal) and then decides
    whether to send: nothing that arrives while it writes is lost (the renewal signal it waits on is taken before
    it looks at the store), and the counters below say, without waiting a while, what a stream has done."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store
        self._nonces = itertools.count(1)
        self.streams = 0
        self.requests = 0  # requests read and taken into account (so a test can wait until its request was seen)
        self.decisions = 0  # decisions whether to send: one per stream opened, per request read, per renewal seen
        #                     (so a test can see a push NOT made: the decision happened and sent nothing)

    async def StreamSecrets(self, request_iterator, context):  # noqa: N802 - the gRPC method name
        state = SdsStreamState()
        self.streams += 1
        log.info("SDS stream opened (%d open)", self.streams)
        incoming = aiter(request_iterator)
        next_request = asyncio.ensure_future(anext(incoming, None))
        renewal = None
        try:
            while True:
                changed = self.store.changed  # a renewal from now on wakes this stream, even one made during write
                version = self.store.version(state.names)
                if version and state.due(version):
                    nonce = f"sds-{next(self._nonces)}"
                    await context.write(response(self.store, state.names, nonce))
                    state.sent(version, nonce)
                    self.store.pushes += 1
                    log.info("SDS: sent %s version %s", ",".join(state.names), version)
                self.decisions += 1
                renewal = asyncio.ensure_future(changed.wait())
                await asyncio.wait([next_request, renewal], return_when=asyncio.FIRST_COMPLETED)
                renewal.cancel()
                if not next_request.done():
                    continue
                if next_request.exception() is not None or (message := next_request.result()) is None:
                    return  # Envoy closed the stream (or it broke): nothing more to serve
                self._read(state, message)
                next_request = asyncio.ensure_future(anext(incoming, None))
        finally:
            for pending in (next_request, renewal):
                if pending is not None:
                    pending.cancel()
            await asyncio.gather(next_request, return_exceptions=True)
            self.streams -= 1

    def _read(self, state: SdsStreamState, message: discovery_pb2.DiscoveryRequest) -> None:
        """One request into the stream's state (the loop's next decision answers it if it asks for an answer)."""
        error = message.error_detail.message if message.HasField("error_detail") else None
        if error is not None:
            log.warning("Envoy rejected SDS %s version %s: %s", ",".join(message.resource_names),
                        message.version_info, error)
        state.on_request(message.resource_names, message.response_nonce, error)
        self.requests += 1

    async def FetchSecrets(self, request, context):  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "FetchSecrets: use StreamSecrets (as istio-agent)")

    async def DeltaSecrets(self, request_iterator, context):  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "DeltaSecrets: use StreamSecrets (as istio-agent)")


async def start_sds(store: SecretStore, socket_path: str) -> tuple[grpc.aio.Server, SecretDiscovery]:
    """Serve SDS on the unix socket `socket_path` (a stale socket file is replaced; the directory is 0700, as only
    the agent's Envoy may ask for the private key). OSError when it cannot bind."""
    directory = os.path.dirname(os.path.abspath(socket_path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    servicer = SecretDiscovery(store)
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(servicer, server)
    if not server.add_insecure_port(f"unix:{os.path.abspath(socket_path)}"):
        raise OSError(f"cannot bind the SDS socket {socket_path}")
    await server.start()
    return server, servicer
