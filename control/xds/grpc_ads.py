"""ADS over gRPC: `envoy.service.discovery.v3.AggregatedDiscoveryService`, `StreamAggregatedResources` (state of
the world) and `DeltaAggregatedResources` (incremental, control.xds.delta), what istiod serves on 15010/15012,
so that a real Envoy (whose `eds_config: {ads: {}}` needs an ADS stream) joins the mesh. grpcio's asyncio
server (`grpc.aio`) runs in the control plane's event loop.

One stream carries every type. Its first request's `node` (Envoy's config.core.v3.Node; with
`set_node_on_first_message_only` later ones may omit it) registers the proxy exactly as a REST request's does
(`control.xds.node.parse_node`, the same admission policy: control.xds.admission), and the registration is held
until the stream ends, as a long-poll holds it on the REST path. Each request is fed to the same
`XdsCache` (ACK, NACK, stale nonces, resume after a control-plane restart); after each request or push, every
type the stream subscribed to whose response is due is sent, in ADS order CDS -> EDS -> LDS -> RDS (the cache's
`ready` already waits for the earlier types' ACKs). Responses are converted to protobuf once per payload
(control.xds.protos.AnyCache).

Refusals are gRPC statuses with one-line messages: INVALID_ARGUMENT for a bad node, UNAUTHENTICATED /
PERMISSION_DENIED from the admission policy, INTERNAL when a resource does not convert (the message names it).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

import grpc

from control.ca.authority import Reason
from control.serve import ControlPlane
from control.xds.admission import Admission, PlaintextXds, admit
from control.xds.cache import BY_URL, ORDER, DiscoveryRequest, XdsType
from control.xds import delta
from control.xds.delta import DeltaRequest, DeltaSubscription
from control.xds.node import NodeError, ProxyNode, parse_node, without_vhds
from control.xds.protos import AnyCache, ConversionError, node_json, register_types
from control.ca.tokens import TokenVerifier
from control.xds.secure import XdsAuthError, XdsAuthMetrics, authorize_discovery

log = logging.getLogger("pyproxy.control")

register_types()
from envoy.config.core.v3 import base_pb2  # noqa: E402 - after the types are registered
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: E402

# who may use the port and whether its node registers (Admission), or XdsAuthError: (call context, node)
GrpcGate = Callable[[grpc.aio.ServicerContext, ProxyNode], Admission]

_AUTH_STATUS = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED}


def plaintext_grpc_gate(cp: ControlPlane, policy: PlaintextXds) -> GrpcGate:
    """The plaintext REST port's policy (control.xds.server.plaintext_gate), for gRPC streams."""
    def gate(_context: grpc.aio.ServicerContext, node: ProxyNode) -> Admission:
        admission = admit(node, None, anonymous_may_register=policy.anonymous_may_register)
        if not admission.register and node.id in cp.live.members():
            raise XdsAuthError(Reason.PERMISSION_DENIED,
                               f"{node.short} is registered by an authenticated proxy; the plaintext xDS port "
                               "(read-only) does not serve its node id")
        return admission
    return gate


def secure_grpc_gate(tokens: TokenVerifier, trust_domain: str, metrics: XdsAuthMetrics) -> GrpcGate:
    """The secure REST port's check (control.xds.secure.authorize_discovery), fed the stream's
    `authorization: Bearer` metadata and the verified client certificate's URI SANs (istiod authenticates
    each ADS stream the same way, once, at its first request)."""
    def gate(context: grpc.aio.ServicerContext, node: ProxyNode) -> Admission:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        try:
            return authorize_discovery(node, metadata.get("authorization"), peercert_of(context), tokens,
                                       trust_domain).admission
        except XdsAuthError as err:
            metrics.refused(err)
            log.warning("Unauthorized XDS (gRPC) from %s: %s", context.peer(), err.message)
            raise
    return gate


def peercert_of(context: grpc.aio.ServicerContext) -> dict | None:
    """The verified client certificate's SANs in the `ssl.getpeercert()` shape control.ca.authn reads; None
    without one. grpc only puts a certificate in the auth context after verifying it against the roots."""
    auth = context.auth_context() or {}
    sans = [v.decode() if isinstance(v, bytes) else str(v) for v in auth.get("x509_subject_alternative_name", ())]
    uris = tuple(("URI", v) for v in sans if v.lower().startswith("spiffe://"))
    return {"subjectAltName": uris} if uris else None


def error_detail(message) -> str | None:
    """A (Delta)DiscoveryRequest's NACK: its google.rpc.Status message; None for no error."""
    if not message.HasField("error_detail"):
        return None
    return message.error_detail.message or f"code {message.error_detail.code}"


def discovery_request(message) -> DiscoveryRequest:
    """A protobuf DiscoveryRequest as the cache reads it."""
    error = error_detail(message)
    return DiscoveryRequest(version_info=message.version_info, response_nonce=message.response_nonce,
                            error_detail=error, resource_names=tuple(message.resource_names))


class AdsStream:
    """One StreamAggregatedResources call: reads requests, writes what is due."""

    mode = "state of the world"

    def __init__(self, cp: ControlPlane, gate: GrpcGate, anys: AnyCache, context: grpc.aio.ServicerContext):
        self.cp, self.gate, self.anys, self.context = cp, gate, anys, context
        self.node: ProxyNode | None = None
        self.subscribed: dict[str, XdsType] = {}
        self.wake = asyncio.Event()
        self.failure: tuple[grpc.StatusCode, str] | None = None

    async def run(self, requests) -> None:
        reader = asyncio.create_task(self._read(requests))
        try:
            await self._write(reader)
        finally:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the stream is over either way
                pass
            if self.node is not None:
                self.cp.release(self.node.id)
                log.info("proxy %s: ADS stream ended", self.node.short)
        if self.failure is not None:
            await self.context.abort(*self.failure)

    def _first(self, message) -> bool:
        """Register the node of the stream's first request; False (and `failure` set) when refused."""
        try:
            node = without_vhds(parse_node(node_json(message.node) if message.HasField("node") else None))
            admission = self.gate(self.context, node)
        except NodeError as err:
            self.failure = (grpc.StatusCode.INVALID_ARGUMENT, str(err))
            return False
        except XdsAuthError as err:
            self.failure = (_AUTH_STATUS.get(err.http_status, grpc.StatusCode.PERMISSION_DENIED), err.message)
            return False
        self.cp.connect(node, admission)
        self.node = node
        log.info("proxy %s: ADS stream (gRPC, %s) from %s", node.short, self.mode, self.context.peer())
        return True

    async def _read(self, requests) -> None:
        async for message in requests:
            if self.node is None and not self._first(message):
                break
            assert self.node is not None
            xds_type = BY_URL.get(message.type_url)
            if xds_type is None:
                log.debug("proxy %s: ignoring a %s request for %s (not served)", self.node.short, self.mode,
                          message.type_url)
                continue
            self.subscribed[xds_type.short] = xds_type
            self._request(self.node, xds_type, message)
            self.wake.set()

    def _request(self, node: ProxyNode, xds_type: XdsType, message) -> None:
        self.cp.receive(node, xds_type, discovery_request(message))

    async def _write(self, reader: asyncio.Task) -> None:
        while not reader.done() or self.wake.is_set():
            self.wake.clear()
            if self.node is not None:
                change = self.cp.change_event(self.node.id)
                if not await self._send_due():
                    return
                waiters = [asyncio.ensure_future(change.wait())]
            else:
                waiters = []
            if self.cp.stopping:
                return
            waiters.append(asyncio.ensure_future(self.wake.wait()))
            done, pending = await asyncio.wait([*waiters, reader], return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        if self.failure is None and reader.done() and not reader.cancelled() and reader.exception() is not None:
            log.debug("ADS stream read ended: %s", reader.exception())


    async def _send_due(self) -> bool:
        """Send every response due, in ADS order; False when the stream must end (`failure` set)."""
        assert self.node is not None
        for xds_type in ORDER:  # one ordered stream: an earlier type sent is enough (cache.ready)
            due = self.cp.cache.ready(self.node.id, xds_type, ordered_stream=True)
            if xds_type.short in self.subscribed and due:
                response = self.cp.respond(self.node.id, xds_type)
                try:
                    message = self.anys.response(response)
                except ConversionError as err:
                    return self._conversion_failed(xds_type, err)
                await self.context.write(message)
        return True

    def _conversion_failed(self, xds_type: XdsType, err: ConversionError) -> bool:
        assert self.node is not None
        log.error("proxy %s: cannot send %s: %s", self.node.short, xds_type.short.upper(), err)
        self.failure = (grpc.StatusCode.INTERNAL, f"cannot convert {xds_type.short.upper()}: {err}")
        return False


class DeltaStream(AdsStream):
    """One DeltaAggregatedResources call (incremental xDS, control.xds.delta): per type, the resources added or
    changed since what the client holds, and the names removed; ACK/NACK and versions in the same XdsCache."""

    mode = "delta"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.subs: dict[str, DeltaSubscription] = {}

    def _request(self, node: ProxyNode, xds_type: XdsType, message) -> None:
        sub = self.subs.setdefault(xds_type.short, DeltaSubscription(xds_type.type_url))
        request = DeltaRequest(response_nonce=message.response_nonce, error_detail=error_detail(message),
                               subscribe=tuple(message.resource_names_subscribe),
                               unsubscribe=tuple(message.resource_names_unsubscribe),
                               initial_versions=dict(message.initial_resource_versions))
        delta.receive(self.cp.cache, lambda req: self.cp.receive(node, xds_type, req), node.id, xds_type, sub,
                      request)

    async def _send_due(self) -> bool:
        assert self.node is not None
        cache = self.cp.cache
        snapshot = cache.snapshot(self.node.id)
        if snapshot is None:
            return True
        for xds_type in ORDER:
            if xds_type.short not in self.subscribed:
                continue
            sub = self.subs[xds_type.short]
            payload = snapshot.payloads[xds_type.short]
            try:
                named = self.anys.named(xds_type.type_url, payload)
            except ConversionError as err:
                return self._conversion_failed(xds_type, err)
            current = {name: version for name, (version, _any) in named.items()}
            update = delta.due(cache, self.node.id, xds_type, sub, current, ordered_stream=True)
            if update is None:
                continue
            response = self.cp.respond(self.node.id, xds_type)
            message = discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=response.version_info, type_url=xds_type.type_url, nonce=response.nonce,
                removed_resources=list(update.removed),
                resources=[discovery_pb2.Resource(name=n, version=named[n][0], resource=named[n][1])
                           for n in update.send],
                control_plane=base_pb2.ControlPlane(identifier="pyproxy-control"))
            sub.sent(response.nonce, update, current)
            await self.context.write(message)
        return True


class AggregatedDiscovery(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The servicer: state of the world (AdsStream) and incremental (DeltaStream)."""

    def __init__(self, cp: ControlPlane, gate: GrpcGate):
        self.cp, self.gate = cp, gate
        self.anys = AnyCache()

    async def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802 - the gRPC method name
        await AdsStream(self.cp, self.gate, self.anys, context).run(request_iterator)

    async def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802
        await DeltaStream(self.cp, self.gate, self.anys, context).run(request_iterator)


async def start_grpc(cp: ControlPlane, gate: GrpcGate, host: str, port: int,
                     credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.aio.Server, int]:
    """Serve ADS on host:port (0 = any free port), in plaintext or over TLS with `credentials`
    (`tls_credentials`); (server, bound port). OSError when it cannot bind (grpcio raises RuntimeError or
    returns 0)."""
    server = grpc.aio.server(options=[("grpc.max_send_message_length", -1),
                                      ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                                      ("grpc.so_reuseport", 0)])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscovery(cp, gate), server)
    try:
        address = f"{host}:{port}"
        bound = server.add_secure_port(address, credentials) if credentials is not None else \
            server.add_insecure_port(address)
    except RuntimeError as err:
        raise OSError(f"address in use or not available ({err})") from None
    if not bound:
        raise OSError("address in use or not available")
    await server.start()
    return server, bound


def tls_credentials(chain_pem: bytes, key_pem: bytes, roots_pem: bytes) -> grpc.ServerCredentials:
    """TLS for gRPC ADS on the secure side: the CA's serving certificate (control.ca.server.serving_pems); a
    client certificate is optional (token callers have none) and verified against the mesh roots when sent."""
    return grpc.ssl_server_credentials([(key_pem, chain_pem)], root_certificates=roots_pem,
                                       require_client_auth=False)
