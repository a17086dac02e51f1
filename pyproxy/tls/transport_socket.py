"""Envoy's TLS transport socket (`envoy.transport_sockets.tls`): config + secrets -> `ssl.SSLContext`.

Where it sits: a listener filter chain's `transport_socket` (DownstreamTlsContext: termination) and a cluster's
`transport_socket` / `transport_socket_matches` (UpstreamTlsContext: origination) each become one
`TlsContextProvider` when the config is applied. The accept path (`pyproxy.listener.accept`) and the upstream
pool (`pyproxy.upstream.pool`) ask it for a context per new connection.

Key material comes from `common_tls_context` (envoy/extensions/transport_sockets/tls/v3/tls.proto):
* `tls_certificates[0]` (certificate_chain + private_key DataSources, read once when the config loads) or
  `tls_certificate_sds_secret_configs[0]` (a name in `ProxyServer.secrets`: `default` from istiod);
* `validation_context.trusted_ca` + SAN matchers, or `validation_context_sds_secret_config` (`ROOTCA`), or
  `combined_validation_context` (its `default_validation_context` + the SDS secret's trusted CA);
* `alpn_protocols`, less the names of protocols pyproxy does not speak (`NOT_SPOKEN_ALPN`: HTTP/2, and Istio's
  TCP metadata exchange; a peer that negotiated one would speak a protocol nobody here understands: curl against
  Istio's gateway config, which offers `h2,http/1.1`, got an empty reply), `tls_params` (min/max version:
  Envoy's defaults are TLS 1.2 .. 1.3 on both sides; `cipher_suites` for TLS <= 1.2; one `ecdh_curves` entry).

Secrets: a context is built once per (config, secret contents) and cached; `context()` compares the
SecretManager's version first, so the per-connection cost is an integer compare. After an SDS update the next
connection gets a context with the new material; established connections keep the handshake they made. A named
secret that is not there yet does not reject the config (Envoy's warming, minus the wait): `context()` raises
`SecretNotReady`, the handshake fails closed and is counted, and the first connection after the secret arrives
works.

Stats (Envoy's names, under `cluster.<name>.ssl.` or `listener.<addr>.ssl.`): `handshake`, `connection_error`,
`fail_verify_error`, `fail_verify_san`, `fail_verify_no_cert`, `no_certificate`; `classify_handshake_error`
picks the name and Envoy's failure-reason text for an `ssl.SSLError` (pure).
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any


from ..config import model
from ..config.datasource import read_data_source
from ..config.decode import ConfigError
from .contexts import TlsConfigError, load_cert_chain_pem
from .secrets import SecretManager
from .session import SanPredicate, leaf_sans_from_pem, san_matcher
from .sslobject import use_direct_sslobject

# ALPN names of protocols pyproxy does not speak, never offered or accepted (docs/envoy-differences.md): HTTP/2
# (RFC 9113's `h2`; Istio's `istio-h2` between sidecars): the HTTP connection manager and the upstream pool speak
# HTTP/1.1 only; and Istio's TCP metadata exchange (`istio-peer-exchange`, which istiod puts in every mesh TLS
# context): a peer that negotiated it, istio-proxy, would send its metadata frame into the proxied byte stream.
NOT_SPOKEN_ALPN = frozenset({"h2", "istio-h2", "istio-peer-exchange"})

SSL_STATS = ("handshake", "connection_error", "fail_verify_error", "fail_verify_san", "fail_verify_no_cert",
             "no_certificate", "session_reused")

_VERSIONS = {
    "TLSv1_0": ssl.TLSVersion.TLSv1, "TLSv1_1": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"


class SecretNotReady(Exception):
    """A transport socket names an SDS secret that has not arrived yet."""


@dataclass(frozen=True, slots=True)
class _Material:
    chain_pem: bytes | None
    key_pem: bytes | None
    trusted_ca_pem: bytes | None


def tls_context_of(socket: model.TypedExtensionConfig | None) -> Any:
    """The UpstreamTlsContext / DownstreamTlsContext of a transport_socket, or None for plaintext (no socket,
    or envoy.transport_sockets.raw_buffer). Anything else raises ValueError naming it."""
    if socket is None:
        return None
    tc = socket.typed_config
    if isinstance(tc, (model.UpstreamTlsContext, model.DownstreamTlsContext)):
        return tc
    if isinstance(tc, model.RawBuffer) or (tc is None and socket.name in ("envoy.transport_sockets.raw_buffer",
                                                                          "raw_buffer")):
        return None
    raise ValueError(f"transport_socket {socket.name or type(tc).__name__!r} is not supported "
                     "(envoy.transport_sockets.tls and raw_buffer are)")


def _read(source: model.DataSource | None, where: str) -> bytes | None:
    if source is None:
        return None
    return read_data_source(source, where).encode("utf-8")


class TlsContextProvider:
    """One Upstream/DownstreamTlsContext, ready to hand out `ssl.SSLContext`s. Config errors (unreadable files,
    unsupported fields) raise ValueError at construction: the config is rejected, by field."""

    def __init__(self, config: model.UpstreamTlsContext | model.DownstreamTlsContext, secrets: SecretManager,
                 where: str):
        self.config = config
        self.secrets = secrets
        self.where = where
        self.server_side = isinstance(config, model.DownstreamTlsContext)
        common = config.common_tls_context or model.CommonTlsContext()
        cw = f"{where}.common_tls_context"
        if len(common.tls_certificates) > 1 or len(common.tls_certificate_sds_secret_configs) > 1:
            raise ValueError(f"{cw}: more than one certificate (RSA + ECDSA selection) is not supported")
        if common.tls_certificates and common.tls_certificate_sds_secret_configs:
            raise ValueError(f"{cw}: tls_certificates and tls_certificate_sds_secret_configs are exclusive")
        try:
            self.static_chain = self.static_key = None
            if common.tls_certificates:
                tc = common.tls_certificates[0]
                self.static_chain = _read(tc.certificate_chain, f"{cw}.tls_certificates[0].certificate_chain")
                self.static_key = _read(tc.private_key, f"{cw}.tls_certificates[0].private_key")
                if not self.static_chain or not self.static_key:
                    raise ValueError(f"{cw}.tls_certificates[0]: certificate_chain and private_key are required")
            vc = common.validation_context
            self.validation_secret = None
            if common.validation_context_sds_secret_config is not None:
                self.validation_secret = common.validation_context_sds_secret_config.name
            elif common.combined_validation_context is not None:
                vc = common.combined_validation_context.default_validation_context
                self.validation_secret = common.combined_validation_context.validation_context_sds_secret_config.name
            self.static_ca = _read(vc.trusted_ca, f"{cw}.validation_context.trusted_ca") if vc else None
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if vc is not None:
            for name in ("verify_certificate_spki", "verify_certificate_hash", "crl"):
                if getattr(vc, name):
                    raise ValueError(f"{cw}.validation_context.{name} is not supported by pyproxy")
        self.cert_secret = common.tls_certificate_sds_secret_configs[0].name \
            if common.tls_certificate_sds_secret_configs else None
        self.san_check: SanPredicate | None = san_matcher(vc, f"{cw}.validation_context")
        self.alpn = tuple(p for p in common.alpn_protocols if p not in NOT_SPOKEN_ALPN)
        params = common.tls_params or model.TlsParameters()
        # Envoy's defaults (TLS_AUTO): TLS 1.2 minimum on both sides; maximum TLS 1.3 for a server, TLS 1.2 for
        # a client (checked against Envoy 1.40: its upstream handshakes are TLSv1.2 unless told otherwise)
        default_max = ssl.TLSVersion.TLSv1_3 if self.server_side else ssl.TLSVersion.TLSv1_2
        self.min_version = _VERSIONS.get(params.tls_minimum_protocol_version, ssl.TLSVersion.TLSv1_2)
        self.max_version = _VERSIONS.get(params.tls_maximum_protocol_version, default_max)
        self.cipher_suites = params.cipher_suites
        if len(params.ecdh_curves) > 1:
            raise ValueError(f"{cw}.tls_params.ecdh_curves: only one curve can be set with Python's ssl")
        self.ecdh_curve = params.ecdh_curves[0] if params.ecdh_curves else None
        if isinstance(config, model.DownstreamTlsContext):
            self.require_client_certificate = bool(config.require_client_certificate)
            self.require_sni = bool(config.require_sni)
            if config.session_timeout is not None:
                raise ValueError(f"{where}.session_timeout is not supported by pyproxy")
            if not self.static_chain and not self.cert_secret:
                raise ValueError(f"{cw}: a server needs a certificate (tls_certificates or an SDS secret)")
            if self.require_client_certificate and not self.static_ca and not self.validation_secret:
                raise ValueError(f"{where}: require_client_certificate needs a validation context (trusted CA)")
        else:
            self.require_client_certificate = False
            self.require_sni = False
            self.sni = config.sni
        self._version = -1
        self._material: _Material | None = None
        self._ctx: ssl.SSLContext | None = None
        self.local_uri_sans: tuple[str, ...] = ()
        self.builds = 0
        if not self.cert_secret and not self.validation_secret:
            self.context()  # all static: build now, so bad key material rejects the config (ValueError)

    # ------------------------------------------------------------------ secrets -> context
    def _material_now(self) -> _Material:
        chain, key, ca = self.static_chain, self.static_key, self.static_ca
        if self.cert_secret is not None:
            cert = self.secrets.certificate(self.cert_secret)
            if cert is None:
                raise SecretNotReady(f"SDS secret {self.cert_secret!r} (tls_certificate) is not available")
            chain, key = cert.chain_pem, cert.key_pem
        if self.validation_secret is not None:
            v = self.secrets.validation(self.validation_secret)
            if v is None:
                raise SecretNotReady(f"SDS secret {self.validation_secret!r} (validation_context) is not available")
            ca = v.trusted_ca_pem
        return _Material(chain, key, ca)

    def context(self) -> ssl.SSLContext:
        """The context for a new connection. Raises SecretNotReady (fail closed) or TlsConfigError."""
        version = self.secrets.version
        if version == self._version and self._ctx is not None:
            return self._ctx
        material = self._material_now()
        if material != self._material or self._ctx is None:
            self._ctx = self._build(material)
            self._material = material
            self.builds += 1
        self._version = version
        return self._ctx

    def _build(self, m: _Material) -> ssl.SSLContext:
        ctx = use_direct_sslobject(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if self.server_side
                                                  else ssl.PROTOCOL_TLS_CLIENT))
        ctx.minimum_version = self.min_version
        ctx.maximum_version = self.max_version
        if self.cipher_suites:
            try:
                ctx.set_ciphers(":".join(self.cipher_suites))
            except ssl.SSLError:
                raise TlsConfigError(f"{self.where}: tls_params.cipher_suites {list(self.cipher_suites)} "
                                     "were refused by OpenSSL") from None
        if self.ecdh_curve:
            try:
                ctx.set_ecdh_curve(self.ecdh_curve.replace("P-256", "prime256v1").replace("P-384", "secp384r1"))
            except (ValueError, ssl.SSLError):
                raise TlsConfigError(f"{self.where}: tls_params.ecdh_curves {self.ecdh_curve!r} unknown") from None
        if not self.server_side:
            ctx.check_hostname = False  # Envoy checks SANs with its matchers, never the SNI as a hostname
        if m.chain_pem and m.key_pem:
            load_cert_chain_pem(ctx, m.chain_pem, m.key_pem)
            try:
                self.local_uri_sans = tuple(v for t, v in leaf_sans_from_pem(m.chain_pem) if t == "URI")
            except ValueError:
                self.local_uri_sans = ()
        if m.trusted_ca_pem:
            try:
                ctx.load_verify_locations(cadata=m.trusted_ca_pem.decode("ascii"))
            except (ssl.SSLError, UnicodeDecodeError, ValueError) as err:
                raise TlsConfigError(f"{self.where}: trusted CA is not a PEM certificate list: {err}") from None
            if self.server_side:
                ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_certificate else ssl.CERT_OPTIONAL
            else:
                ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            # Envoy without a validation context: the peer's certificate is not verified (a server may still
            # require that one is presented, which Python's ssl cannot express without a CA: refused above)
            ctx.verify_mode = ssl.CERT_NONE
        if self.alpn:
            ctx.set_alpn_protocols(list(self.alpn))
        return ctx

    def __repr__(self) -> str:
        side = "server" if self.server_side else "client"
        return (f"<TlsContextProvider {side} {self.where} cert={self.cert_secret or 'static'} "
                f"ca={self.validation_secret or ('static' if self.static_ca else 'none')} builds={self.builds}>")


# ------------------------------------------------------------------ handshake failures (pure)

# BoringSSL's packed error codes for the reasons Envoy's failure strings show most (ERR_LIB_SSL = 16 << 24).
_BORINGSSL_CODES = {
    "CERTIFICATE_VERIFY_FAILED": 268435581,
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": 268435646,
    "WRONG_VERSION_NUMBER": 268435703,
    "HTTP_REQUEST": 268435612,
    "NO_SHARED_CIPHER": 268435640,
    "TLSV1_ALERT_UNKNOWN_CA": 268436536,
    "SSLV3_ALERT_BAD_CERTIFICATE": 268436498,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": 268436501,
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": 268436600,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": 268436628,
}


def failure_reason(reason: str, detail: str = "") -> str:
    """Envoy's transport failure reason text: `TLS_error:|<code>:SSL routines:OPENSSL_internal:<REASON>` +
    optional `:<detail>` + `:TLS_error_end`."""
    code = _BORINGSSL_CODES.get(reason, 268435456)
    extra = f":{detail}" if detail else ""
    return f"TLS_error:|{code}:SSL routines:OPENSSL_internal:{reason}{extra}:TLS_error_end"


def san_failure_reason(sans: tuple[str, ...]) -> str:
    """Envoy's text for a peer whose SANs match none of the matchers."""
    return failure_reason("CERTIFICATE_VERIFY_FAILED",
                          f"verify cert failed: SAN matcher, certificate SANs are [{', '.join(sans)}]")


def classify_handshake_error(exc: BaseException) -> tuple[str, str]:
    """(ssl stat name, failure reason) for a failed handshake."""
    if isinstance(exc, SecretNotReady):
        return "connection_error", f"TLS_error:|secret not ready: {exc}:TLS_error_end"
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Python does not say at which depth the chain failed; the leaf (0) is where it fails in practice
        detail = (f"verify cert failed: X509_verify_cert: certificate verification error at depth 0: "
                  f"{exc.verify_message}") if exc.verify_message else ""
        return "fail_verify_error", failure_reason("CERTIFICATE_VERIFY_FAILED", detail)
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        if reason == "CERTIFICATE_VERIFY_FAILED":
            return "fail_verify_error", failure_reason(reason)
        if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"):
            return "fail_verify_no_cert", failure_reason(reason)
        return "connection_error", failure_reason(reason)
    if isinstance(exc, (ConnectionError, EOFError)):
        return "connection_error", "TLS_error:|connection closed during handshake:TLS_error_end"
    return "connection_error", f"TLS_error:|{type(exc).__name__}:TLS_error_end"
