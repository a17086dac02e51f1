"""Opening one connection to an upstream host: TCP connect, and with a TLS transport socket the handshake and
the SAN check (the I/O shell both users share: the HTTP pool `pyproxy.upstream.pool` and the TCP proxy
`pyproxy.tcp.proxy`).

Envoy: `ClusterInfo::createNetworkConnection` + the cluster's transport socket (`envoy.transport_sockets.tls`,
`UpstreamTlsContext`). SNI is `UpstreamTlsContext.sni` (Python sends none for an IP literal when unset). A failed
handshake or SAN check raises `UpstreamTlsFailure` with Envoy's failure text (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`),
counted under `cluster.<name>.ssl.<reason>`; a refused or unreachable TCP connect raises OSError. The caller
bounds the whole thing with the cluster's `connect_timeout`.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Callable


from ..tls.half_close import connect_half_close_tls
from ..tls.session import ssl_peer_sans
from ..tls.sslobject import remember_session
from ..tls.transport_socket import SecretNotReady, classify_handshake_error, san_failure_reason


class UpstreamTlsFailure(Exception):
    """The upstream TLS handshake or its SAN check failed (a connect failure, flag UF)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def tune_upstream_socket(transport: asyncio.BaseTransport, cluster: Any) -> None:
    """TCP_NODELAY (as Envoy sets on every upstream connection) and the cluster's
    `upstream_connection_options` (tcp_keepalive)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    cluster.apply_socket_options(sock)


def _failed(cluster: Any, stat: str, reason: str) -> UpstreamTlsFailure:
    cluster.ssl_stats[stat].inc()
    return UpstreamTlsFailure(reason)


async def open_upstream(loop: asyncio.AbstractEventLoop, cluster: Any, host: Any, tls: Any,
                        factory: Callable[[], asyncio.Protocol], half_close: bool = False
                        ) -> tuple[asyncio.Transport, Any]:
    """(transport, protocol) connected to `host`, TLS-wrapped and SAN-checked when `tls` (a TlsContextProvider)
    is given. `half_close`: the tcp_proxy's TLS layer, whose transport can `write_eof` (tls/half_close.py).
    Raises UpstreamTlsFailure or OSError."""
    if tls is None:
        return await loop.create_connection(factory, host.address, host.port)
    try:
        ctx = tls.context()
    except SecretNotReady as e:
        raise _failed(cluster, *classify_handshake_error(e)) from None
    address = host.address
    try:
        if half_close:
            transport, proto = await connect_half_close_tls(loop, factory, address, host.port, ctx,
                                                            tls.sni or address)
        else:
            transport, proto = await loop.create_connection(factory, address, host.port, ssl=ctx,
                                                            server_hostname=tls.sni or address)
    except (ssl.SSLError, ConnectionResetError, EOFError) as e:
        raise _failed(cluster, *classify_handshake_error(e)) from None
    sslobj = transport.get_extra_info("ssl_object")
    if tls.san_check is not None:
        _der, sans = ssl_peer_sans(sslobj)
        if not tls.san_check(sans):
            transport.abort()
            raise _failed(cluster, "fail_verify_san", san_failure_reason(tuple(v for _, v in sans)))
    cluster.ssl_stats["handshake"].inc()
    if sslobj is not None:
        if sslobj.session_reused:  # it offered the cluster's last session (pyproxy.tls.sslobject) and was taken
            cluster.ssl_stats["session_reused"].inc()
        remember_session(sslobj)  # TLS 1.2: the ticket came in the handshake (1.3: see UpstreamConnection)
    return transport, proto
