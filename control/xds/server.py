"""The xDS server over REST-JSON (ARCHITECTURE.md decision 2), with long-polling, and the debug/metrics pages.

    POST /v3/discovery:clusters | :endpoints | :listeners | :routes    DiscoveryRequest -> DiscoveryResponse
    POST /v3/delta_discovery:clusters | ...    DeltaDiscoveryRequest -> DeltaDiscoveryResponse (incremental,
                           this project's REST extension: Envoy has delta only over gRPC; control.xds.delta)
    POST /v3/delta_discovery:virtual_hosts    VHDS, for a node whose client_features ask for it (control.xds.vhds)
    GET  /debug/syncz      per proxy and type: SYNCED/STALE/NOT SENT, sent/acked version+nonce, last NACK
    GET  /debug/configz    config directory, resources, current config errors
    GET  /ready            200 once the config is loaded
    GET  /metrics          (metrics port, 15014) Prometheus text: pilot_* series (control.metrics); the
                           metrics port serves /debug/* and /ready too (as istiod's 15014 does), so they
                           stay reachable when the plaintext xDS port is off

The secure port (istiod's 15012, `make_secure_app`, served over TLS by control.cli.control) has the same
four discovery paths plus the CA's `POST /istio.v1.auth.IstioCertificateService/CreateCertificate`
(control.ca.server) and /ready, and no /debug pages. There every request is authenticated and authorized
(control.xds.secure: a token or a mesh client certificate whose namespace/service account are the node's)
before its node is even connected; a refusal is 401/403 with `{"error", "code", "reason"}`.

The plaintext xDS port has a policy (`PlaintextXds`, control.xds.admission): `on` registers every caller's
node as an endpoint (the demo), `read-only` answers DiscoveryRequests but registers nobody (the node gets
the config for what it claims to be, and joins no service's EDS), `off` is not served at all (the caller,
control.cli.control, does not bind it).

Envoy's REST subscription (`api_type: REST`) POSTs a DiscoveryRequest in JSON and gets a DiscoveryResponse.
Plain REST is polling; this server long-polls (this project's extension, docs/xds.md): when nothing is due
for the proxy and type, the request waits until something is (a new snapshot, or the ACK that opens the
next type in ADS order), at most `?wait=SECONDS` (default and maximum: the server's long-poll timeout, 30s),
then answers `304 Not Modified` with no body. `?wait=0` is plain polling. Bad requests get 400 with
`{"error": "..."}` naming the field. A client that goes away cancels its long-poll (aiohttp
`handler_cancellation`), which is how the registry learns it stopped polling.

Thin: what a request means and what is due is control.xds.cache; config and registry are control.serve.
"""
from __future__ import annotations

import json
import logging
import ssl
from typing import Any, Awaitable, Callable, Iterable

from aiohttp import web

from control.ca.authority import Reason
from control.ca.server import CertificateService, ca_routes
from control.ca.tokens import TokenVerifier
from control.metrics import CONTENT_TYPE
from control.serve import ControlPlane
from control.xds.admission import Admission, PlaintextXds, admit
from control.xds import delta
from control.xds.cache import BY_PATH, VHDS, DiscoveryRequest, DiscoveryResponse, XdsType
from control.xds.delta import DeltaRequest, DeltaResponse
from control.xds import leds
from control.xds.node import VHDS_FEATURE, NodeError, ProxyNode, parse_node, without_vhds
from control.xds.secure import XdsAuthError, XdsAuthMetrics, authorize_discovery

log = logging.getLogger("pyproxy.control")

CONTROL_PLANE = web.AppKey("control_plane", ControlPlane)


class BadRequest(ValueError):
    pass


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _string(body: dict, key: str) -> str:
    value = body.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{key}: want a string, got {type(value).__name__}")
    return value


def parse_request(body: Any, xds_type: XdsType) -> DiscoveryRequest:
    """The DiscoveryRequest fields the server reads (Envoy's JSON names); BadRequest names the field."""
    if not isinstance(body, dict):
        raise BadRequest("body: want a DiscoveryRequest JSON object")
    _check_type(body, xds_type, "discovery")
    names = _names(body, "resource_names")
    error = _error_detail(body)
    return DiscoveryRequest(version_info=_string(body, "version_info"),
                            response_nonce=_string(body, "response_nonce"),
                            error_detail=error, resource_names=names)


def _names(body: dict, key: str) -> tuple[str, ...]:
    names = body.get(key) or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest(f"{key}: want a list of strings")
    return tuple(names)


def _error_detail(body: dict) -> str | None:
    detail = body.get("error_detail")
    if detail is None:
        return None
    if not isinstance(detail, dict):
        raise BadRequest("error_detail: want a google.rpc.Status object {code, message}")
    return str(detail.get("message") or json.dumps(detail, sort_keys=True))


def _check_type(body: dict, xds_type: XdsType, path: str) -> None:
    type_url = _string(body, "type_url")
    if type_url and type_url != xds_type.type_url:
        raise BadRequest(f"type_url: {type_url!r} does not match /v3/{path}:{xds_type.path} "
                         f"(want {xds_type.type_url})")


def parse_delta_request(body: Any, xds_type: XdsType) -> DeltaRequest:
    """Envoy's DeltaDiscoveryRequest in JSON (the fields the server reads); BadRequest names the field."""
    if not isinstance(body, dict):
        raise BadRequest("body: want a DeltaDiscoveryRequest JSON object")
    _check_type(body, xds_type, "delta_discovery")
    initial = body.get("initial_resource_versions") or {}
    if not isinstance(initial, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in initial.items()):
        raise BadRequest("initial_resource_versions: want a map of resource name to version string")
    return DeltaRequest(response_nonce=_string(body, "response_nonce"), error_detail=_error_detail(body),
                        subscribe=_names(body, "resource_names_subscribe"),
                        unsubscribe=_names(body, "resource_names_unsubscribe"), initial_versions=initial)


def _wait(request: web.Request, maximum: float) -> float:
    text = request.query.get("wait")
    if text is None:
        return maximum
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"wait: want seconds, got {text!r}") from None
    return max(0.0, min(value, maximum))


# Who may use a port, and whether the request's node registers: the Admission, or XdsAuthError (refused).
Gate = Callable[[web.Request, ProxyNode], Admission]


def plaintext_gate(policy: PlaintextXds) -> Gate:
    """Anonymous callers under the port's policy. A read-only caller may not use the node id of a proxy
    registered (through the secure port) right now: its request would replace that proxy's node and take
    it out of every service's endpoints until its next request."""
    def gate(request: web.Request, node: ProxyNode) -> Admission:
        admission = admit(node, None, anonymous_may_register=policy.anonymous_may_register)
        if not admission.register and node.id in request.app[CONTROL_PLANE].live.members():
            raise XdsAuthError(Reason.PERMISSION_DENIED,
                               f"{node.short} is registered by an authenticated proxy; the plaintext xDS port "
                               "(read-only) does not serve its node id")
        return admission
    return gate


def secure_gate(tokens: TokenVerifier, trust_domain: str, metrics: XdsAuthMetrics) -> Gate:
    """The secure port's check (control.xds.secure), fed the Authorization header and the TLS peer
    certificate (non-empty only when OpenSSL verified it against the mesh roots)."""
    def gate(request: web.Request, node: ProxyNode) -> Admission:
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        try:
            return authorize_discovery(node, request.headers.get("Authorization"), peercert, tokens,
                                       trust_domain).admission
        except XdsAuthError as err:
            metrics.refused(err)
            log.warning("Unauthorized XDS from %s: %s", request.remote, err.message)
            raise
    return gate


async def _admit(request: web.Request, xds_type: XdsType, gate: Gate, parse: Callable[[Any, XdsType], Any]
                 ) -> tuple[Any, ProxyNode, float] | web.Response:
    """A discovery request's parsed body, node and wait, with its node connected; or the error response."""
    cp = request.app[CONTROL_PLANE]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "body: not JSON (want a DiscoveryRequest)")
    try:
        req = parse(body, xds_type)
        node = parse_node(body.get("node"))
        if parse is parse_request:  # VHDS is delta only: state of the world keeps whole route configurations
            node = without_vhds(node)
        wait = _wait(request, cp.long_poll_timeout)
    except (BadRequest, NodeError) as err:
        return _error(400, str(err))
    try:
        admission = gate(request, node)
    except XdsAuthError as err:
        headers = {"WWW-Authenticate": "Bearer"} if err.http_status == 401 else None
        return web.json_response(err.body(), status=err.http_status, headers=headers)
    cp.connect(node, admission)
    return req, node, wait


async def _send(request: web.Request, parts: Iterable, *, length: int | None = None) -> web.StreamResponse:
    """Write `parts`, `length` bytes in all (Content-Length), or when None with HTTP/1.1 chunked transfer coding."""
    out = web.StreamResponse(headers={"Content-Type": "application/json"})
    if length is None:
        out.enable_chunked_encoding()
    else:
        out.content_length = length
    try:
        await out.prepare(request)
        for part in parts:  # write() waits for the socket to drain: no per-proxy copy of a large payload
            await out.write(part)
        await out.write_eof()
    except ConnectionResetError:  # the proxy went away meanwhile; its next request says what it holds
        log.debug("%s: the client left before its response was written", request.path)
    return out


# What a discovery path does with an admitted request: the response to send (DiscoveryResponse, DeltaResponse,
# LedsResponse), None (304), or an error response
Answer = Callable[[ControlPlane, ProxyNode, Any, float], Awaitable["Any | web.Response | None"]]


def _handler(xds_type: XdsType, gate: Gate, parse: Callable[[Any, XdsType], Any], answer: Answer):
    async def handler(request: web.Request) -> web.StreamResponse:
        cp = request.app[CONTROL_PLANE]
        admitted = await _admit(request, xds_type, gate, parse)
        if isinstance(admitted, web.Response):
            return admitted
        req, node, wait = admitted
        try:
            result = await answer(cp, node, req, wait)
        finally:
            cp.release(node.id)
        if result is None:
            return web.Response(status=304)
        if isinstance(result, web.Response):
            return result
        if isinstance(result, (DeltaResponse, leds.LedsResponse)):
            return await _send(request, result.chunks())
        return await _send(request, result.chunks(), length=result.size())
    return handler


def _discovery(xds_type: XdsType, gate: Gate):
    async def answer(cp: ControlPlane, node: ProxyNode, req: DiscoveryRequest, wait: float):
        cp.receive(node, xds_type, req)
        response = await cp.next_response(node.id, xds_type, wait)
        return response
    return _handler(xds_type, gate, parse_request, answer)


def _delta_discovery(xds_type: XdsType, gate: Gate):
    """Incremental xDS over REST: a request without `response_nonce` (re)starts the proxy's subscription to the
    type (with its `initial_resource_versions`); later ones carry the last nonce received (ACK/NACK) and
    subscription changes. A nonce with no subscription here (this control plane restarted, or the proxy
    expired meanwhile) is `409 Conflict`: start again without a nonce."""
    async def answer(cp: ControlPlane, node: ProxyNode, req: DeltaRequest, wait: float):
        if xds_type is VHDS and not node.vhds:
            return _error(400, f"node.client_features: {VHDS_FEATURE!r} is required for VHDS (without it, route "
                               "configurations carry their virtual hosts)")
        ticket = cp.delta.begin(node.id, xds_type.short)
        sub = cp.delta.get(node.id, xds_type.short)
        if not req.response_nonce:
            sub = cp.delta.start(node.id, xds_type)
        elif sub is None:
            return _error(409, f"response_nonce: {req.response_nonce!r} is not of a delta subscription to "
                               f"{xds_type.path} here; start again without a nonce, with initial_resource_versions")
        delta.receive(cp.cache, lambda r: cp.receive(node, xds_type, r), node.id, xds_type, sub, req,
                      one_at_a_time=True)
        return await cp.next_delta(node.id, xds_type, sub, ticket, wait)
    return _handler(xds_type, gate, parse_delta_request, answer)


def _leds_discovery(gate: Gate):
    """LEDS over REST (control.xds.leds): LbEndpoint resources of the glob collections subscribed, as the delta
    paths serve their types (a request without `response_nonce` starts the subscription; 409 for a nonce of no
    subscription here; a name that is not a collection of this control plane is 400)."""
    async def answer(cp: ControlPlane, node: ProxyNode, req: DeltaRequest, wait: float):
        try:
            leds.check_collections(req.subscribe)
        except leds.LedsError as err:
            return _error(400, str(err))
        ticket = cp.leds.begin(node.id)
        sub = cp.leds.get(node.id)
        if not req.response_nonce:
            sub = cp.leds.start(node.id)
        elif sub is None:
            return _error(409, f"response_nonce: {req.response_nonce!r} is not of a LEDS subscription here; "
                               "start again without a nonce, with initial_resource_versions")
        sub.request(req.subscribe, req.unsubscribe, req.initial_versions)
        if sub.receive(req.response_nonce, req.error_detail) == "nack":
            cp.metrics.rejected(leds.LEDS.short)
            log.warning("proxy %s rejected LEDS %s: %s", node.short, req.response_nonce, req.error_detail)
        return await leds.next_leds(cp, node.id, sub, ticket, wait)
    return _handler(leds.LEDS, gate, parse_delta_request, answer)


def make_app(cp: ControlPlane, plaintext: PlaintextXds = PlaintextXds.ON) -> web.Application:
    """The plaintext xDS port: discovery under `plaintext`'s registration policy, plus /debug and /ready."""
    if plaintext is PlaintextXds.OFF:
        raise ValueError("plaintext xDS is off: do not serve it")
    app = web.Application()
    app[CONTROL_PLANE] = cp
    _add_discovery(app, plaintext_gate(plaintext))
    _add_debug(app, cp)
    return app


def make_secure_app(cp: ControlPlane, ca: CertificateService, metrics: XdsAuthMetrics) -> web.Application:
    """The secure port (15012): CreateCertificate and authenticated discovery (serve it with the CA's
    `server_ssl_context`). Tokens and trust domain are the CA's, so both endpoints agree on who is who."""
    app = web.Application()
    app[CONTROL_PLANE] = cp
    _add_discovery(app, secure_gate(ca.tokens, ca.authority.policy.trust_domain, metrics))
    app.add_routes(ca_routes(ca))

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="LIVE\n")
    app.router.add_get("/ready", ready)
    return app


def _add_discovery(app: web.Application, gate: Gate) -> None:
    for xds_type in BY_PATH.values():
        app.router.add_post(f"/v3/discovery:{xds_type.path}", _discovery(xds_type, gate))
        app.router.add_post(f"/v3/delta_discovery:{xds_type.path}", _delta_discovery(xds_type, gate))
    # VHDS and LEDS are delta only (Envoy's too); control.xds.vhds, control.xds.leds
    app.router.add_post(f"/v3/delta_discovery:{VHDS.path}", _delta_discovery(VHDS, gate))
    app.router.add_post(f"/v3/delta_discovery:{leds.LEDS.path}", _leds_discovery(gate))


def _add_debug(app: web.Application, cp: ControlPlane) -> None:
    async def syncz(_: web.Request) -> web.Response:
        return web.json_response(cp.syncz(), dumps=lambda o: json.dumps(o, indent=2))

    async def configz(_: web.Request) -> web.Response:
        return web.json_response(cp.configz(), dumps=lambda o: json.dumps(o, indent=2))

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="LIVE\n")

    app.router.add_get("/debug/syncz", syncz)
    app.router.add_get("/debug/configz", configz)
    app.router.add_get("/ready", ready)


def make_metrics_app(cp: ControlPlane) -> web.Application:
    app = web.Application()
    _add_debug(app, cp)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=cp.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics)
    return app


async def start_site(app: web.Application, host: str, port: int, *,
                     ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0 = any free port), over TLS with `ssl_context`; returns the runner and the
    bound port."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    server = site._server  # aiohttp exposes the bound sockets only here
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    return runner, bound
