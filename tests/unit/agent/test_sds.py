"""pyproxy.agent.sds: the secrets istio-agent serves Envoy (`default`, `ROOTCA`) as protobuf, the stream's
ACK/NACK bookkeeping, and the SDS server itself on a unix socket with a grpc.aio client driving it as Envoy does
(subscribe, ACK, a rotation pushed on the open stream, a NACK not re-sent)."""
from __future__ import annotations

import asyncio
import base64

import grpc
import pytest

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.rpc import status_pb2
from pyproxy.agent.sds import (SECRET_TYPE, SdsStreamState, SecretDiscovery, SecretStore, secret_messages,
                               secret_versions, socket_path, start_sds)
from pyproxy.tls.agent import WorkloadSecret
from pyproxy.tls.identity import PeerIdentity
from tests.support.pki import TestCA

ID = PeerIdentity("cluster.local", "default", "bookinfo-productpage")


def workload_secret(ca: TestCA) -> WorkloadSecret:
    leaf = ca.issue(uris=[ID.uri])
    return WorkloadSecret(ID, leaf.chain_pem, leaf.key_pem, ca.cert_pem, 0.0, 100.0, 0.0, 50.0)


def test_default_is_the_chain_and_key_and_rootca_the_roots_as_envoy_secret_messages():
    ca = TestCA()
    secret = workload_secret(ca)
    messages = secret_messages(secret)
    assert set(messages) == {"default", "ROOTCA"}
    default, root = messages["default"], messages["ROOTCA"]
    assert default.tls_certificate.certificate_chain.inline_bytes == secret.cert_chain_pem
    assert default.tls_certificate.private_key.inline_bytes == secret.private_key_pem
    assert root.validation_context.trusted_ca.inline_bytes == ca.cert_pem
    assert not root.HasField("tls_certificate") and not default.HasField("validation_context")


def test_default_changes_version_with_each_certificate_and_rootca_only_with_the_roots():
    ca = TestCA()
    a, b = secret_versions(workload_secret(ca)), secret_versions(workload_secret(ca))
    assert a["default"] != b["default"] and a["ROOTCA"] == b["ROOTCA"]
    first = workload_secret(ca)
    other_roots = WorkloadSecret(ID, first.cert_chain_pem, first.private_key_pem,
                                 first.root_bundle_pem + TestCA().cert_pem, 0.0, 100.0, 0.0, 50.0)
    assert secret_versions(other_roots)["ROOTCA"] != secret_versions(first)["ROOTCA"]
    assert secret_versions(other_roots)["default"] == secret_versions(first)["default"]


def test_stream_state_subscribe_ack_nack_stale_and_push():
    s = SdsStreamState()
    assert not s.due("v1")  # nothing asked yet
    assert s.on_request(["default"], "", None)  # a subscription: answer now
    assert s.due("v1")
    s.sent("v1", "n1")
    assert not s.due("v1")
    assert not s.on_request(["default"], "n1", None)  # ACK
    assert s.due("v2")  # a rotation: push
    s.sent("v2", "n2")
    assert not s.on_request(["default"], "n1", None)  # stale nonce: ignored
    assert not s.on_request(["default"], "n2", "bad key")  # NACK: the same version is not sent again
    assert not s.due("v2") and s.due("v3")
    assert s.on_request(["default", "ROOTCA"], "n2", None)  # names changed: answer now, even the same version
    assert s.due("v2")
    s.sent("v2", "n3")
    assert s.on_request(["default", "ROOTCA"], "", None)  # a reconnecting Envoy (no nonce) is answered
    assert s.due("v2")


def test_a_socket_path_too_long_for_sun_path_is_refused():
    assert socket_path("/run/agent") == "/run/agent/var/run/secrets/workload-spiffe-uds/socket"
    assert socket_path("/" + "x" * 90) is None


def request(names, nonce="", version="", error=None) -> discovery_pb2.DiscoveryRequest:
    msg = discovery_pb2.DiscoveryRequest(resource_names=names, response_nonce=nonce, version_info=version,
                                         type_url=SECRET_TYPE)
    if error:
        msg.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return msg


def secrets_of(response) -> dict[str, secret_pb2.Secret]:
    out = {}
    for any_ in response.resources:
        s = secret_pb2.Secret()
        any_.Unpack(s)
        out[s.name] = s
    return out


@pytest.mark.timeout(120)
async def test_the_server_answers_once_a_certificate_exists_pushes_a_rotation_and_keeps_a_nack(tmp_path):
    ca = TestCA()
    store = SecretStore()
    path = str(tmp_path / "sds.sock")
    server, servicer = await start_sds(store, path)
    channel = grpc.aio.insecure_channel(f"unix:{path}")
    stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)

    def open_stream():
        """A stream that stays open (Envoy never half-closes it); put requests in the queue, None ends it."""
        queue: asyncio.Queue = asyncio.Queue()

        async def requests():
            while (item := await queue.get()) is not None:
                yield item
        return stub.StreamSecrets(requests()), queue
    async def counted(requests: int, decisions: int) -> None:
        """Wait (bounded: a hang guard) until the server has read `requests` requests and made `decisions`
        decisions; a stream decides once when it opens, once per request it reads, once per renewal it sees."""
        async def poll() -> None:
            while (servicer.requests, servicer.decisions) < (requests, decisions):
                await asyncio.sleep(0.01)  # the poll interval of a bounded wait
        await asyncio.wait_for(poll(), 30)
        assert (servicer.requests, servicer.decisions) == (requests, decisions)

    call, queue = open_stream()
    roots, roots_queue = open_stream()  # Envoy's second stream: one per secret name
    await roots_queue.put(request(["ROOTCA"]))
    try:
        await queue.put(request(["default"]))
        read = asyncio.ensure_future(call.read())
        await counted(2, 4)  # both streams opened and read their subscription, with no certificate yet ...
        assert store.pushes == 0 and not read.done()  # ... so they wait (Envoy's initial_fetch_timeout 0)
        first = workload_secret(ca)
        store.install(first)
        r1 = await asyncio.wait_for(read, 30)
        assert r1.type_url == SECRET_TYPE and r1.version_info == secret_versions(first)["default"]
        assert secrets_of(r1)["default"].tls_certificate.certificate_chain.inline_bytes == first.cert_chain_pem
        assert set(secrets_of(r1)) == {"default"}  # only what the stream asked for
        await queue.put(request(["default"], r1.nonce, r1.version_info))  # ACK
        root = await asyncio.wait_for(roots.read(), 30)
        assert set(secrets_of(root)) == {"ROOTCA"} and root.version_info == secret_versions(first)["ROOTCA"]
        await counted(3, 7)  # the certificate woke both streams (+2, each sent), the ACK was read (+1, sent nothing)
        assert store.pushes == 2

        second = workload_secret(ca)
        store.install(second)  # a renewal: pushed on the same stream
        r2 = await asyncio.wait_for(call.read(), 30)
        assert r2.version_info == secret_versions(second)["default"] and r2.nonce != r1.nonce
        assert secrets_of(r2)["default"].tls_certificate.private_key.inline_bytes == second.private_key_pem
        await counted(3, 9)  # both streams woke on the renewal and decided: one sent, one did not
        assert store.pushes == 3 and servicer.streams == 2  # the same roots: ROOTCA is not pushed by a leaf renewal

        await queue.put(request(["default"], r2.nonce, r1.version_info, error="bad certificate"))  # NACK
        nothing = asyncio.ensure_future(call.read())
        await counted(4, 10)  # the NACK was read and decided on ...
        assert store.pushes == 3 and not nothing.done()  # ... and the refused version is not sent again
        third = workload_secret(ca)
        store.install(third)
        r3 = await asyncio.wait_for(nothing, 30)
        assert r3.version_info == secret_versions(third)["default"]
        await counted(4, 12)
        assert store.pushes == 4
    finally:
        await queue.put(None)
        await roots_queue.put(None)
        call.cancel()
        roots.cancel()
        await channel.close()
        await server.stop(grace=None)


async def test_a_renewal_made_while_a_stream_writes_is_pushed_after_it():
    """The certificate is renewed while the stream is writing its first answer: the stream sends the renewal
    next (the renewal signal it waits on was taken before it wrote, so the change is not lost)."""
    ca = TestCA()
    store = SecretStore()
    servicer = SecretDiscovery(store)
    first, renewed = workload_secret(ca), workload_secret(ca)
    store.install(first)
    sent: list[str] = []
    two = asyncio.Event()

    class Context:  # the gRPC context: only its write is used by StreamSecrets
        async def write(self, message) -> None:
            sent.append(message.version_info)
            if len(sent) == 1:
                store.install(renewed)  # lands while the first answer is being written
            if len(sent) == 2:
                two.set()

    queue: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (item := await queue.get()) is not None:
            yield item
    await queue.put(request(["default"]))
    stream = asyncio.ensure_future(servicer.StreamSecrets(requests(), Context()))
    try:
        await asyncio.wait_for(two.wait(), 30)  # a hang guard: without the fix the second push never comes
        assert sent == [secret_versions(first)["default"], secret_versions(renewed)["default"]]
    finally:
        await queue.put(None)
        await asyncio.wait_for(stream, 30)
    assert servicer.streams == 0 and store.pushes == 2
