"""`ssl.SSLContext`s for mesh mTLS, built from PEM held in memory (the SDS secrets `default` and `ROOTCA`).

Envoy's shape for ISTIO_MUTUAL (pilot/pkg/security/authn/utils/utils.go BuildInboundTLS, cluster_tls.go):
the server side requires a client certificate and validates it against ROOTCA; the client side validates the
server's chain against ROOTCA and then matches its URI SAN exactly. Python's hostname check does not do URI
SANs, so client contexts here turn it off and the caller runs `identity.check_peer_uri_san` on
`getpeercert()` after the handshake (a pure function). TLS 1.2 is the floor, as Istio's default.

`ssl` loads a certificate and key only from a file, so `load_cert_chain_pem` writes them to a private
temporary directory (mode 0700, file 0600) that is removed as soon as OpenSSL has read it.
"""
from __future__ import annotations

import ssl
from typing import Sequence

from .files import memory_file
from .sslobject import use_direct_sslobject


class TlsConfigError(ValueError):
    """Key material that OpenSSL refuses (key does not match the certificate, not PEM, ...)."""


def load_cert_chain_pem(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """Give `ctx` a certificate chain (leaf first) and its private key, both PEM bytes."""
    with memory_file(chain_pem.rstrip(b"\n") + b"\n" + key_pem, "credential") as path:  # the key stays off disk
        try:
            ctx.load_cert_chain(path)
        except ssl.SSLError as err:
            raise TlsConfigError(f"certificate chain and key were refused by OpenSSL: {err.reason or err}") from None


def _trust(ctx: ssl.SSLContext, roots_pem: bytes) -> None:
    try:
        ctx.load_verify_locations(cadata=roots_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as err:
        raise TlsConfigError(f"trust bundle (ROOTCA) is not a PEM certificate list: {err}") from None


def server_context(chain_pem: bytes, key_pem: bytes, roots_pem: bytes, *, require_client_cert: bool = True,
                   alpn_protocols: Sequence[str] = ()) -> ssl.SSLContext:
    """Inbound mTLS (Envoy's DownstreamTlsContext with require_client_certificate): present `chain_pem`,
    validate the client's chain against `roots_pem`. With require_client_cert=False a client may come
    without a certificate (CERT_OPTIONAL: one that is presented is still verified)."""
    ctx = use_direct_sslobject(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain_pem(ctx, chain_pem, key_pem)
    _trust(ctx, roots_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    if alpn_protocols:
        ctx.set_alpn_protocols(list(alpn_protocols))
    return ctx


def client_context(roots_pem: bytes, chain_pem: bytes | None = None, key_pem: bytes | None = None, *,
                   check_hostname: bool = False, alpn_protocols: Sequence[str] = ()) -> ssl.SSLContext:
    """Outbound TLS: verify the server's chain against `roots_pem`; present `chain_pem` when given (mTLS).
    `check_hostname=True` checks DNS/IP SANs against the server name (used for the control plane, whose
    serving certificate has DNS and IP SANs); mesh peers are checked by URI SAN after the handshake."""
    ctx = use_direct_sslobject(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    _trust(ctx, roots_pem)
    if chain_pem is not None and key_pem is not None:
        load_cert_chain_pem(ctx, chain_pem, key_pem)
    if alpn_protocols:
        ctx.set_alpn_protocols(list(alpn_protocols))
    return ctx
