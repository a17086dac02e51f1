"""How a dynamic pyproxy proves who it is to the control plane's secure port (istiod's 15012).

istio-agent talks to istiod over TLS: it verifies istiod's serving certificate with the mesh root it was
given (the `istio-ca-root-cert` ConfigMap, `root-cert.pem`) and authenticates with the pod's service-account
token (`authorization: Bearer ...`, the projected token at /var/run/secrets/tokens/istio-token), and, once
the agent holds a workload certificate, may present it as its client certificate (istiod's certificate
authenticator accepts it as the same SPIFFE identity). `ControlPlaneCredentials` is that for the xDS
client (pyproxy.xds.client): per request, the Authorization header and the TLS context to use.

* The token file is read on every request (a projected token is rewritten in place when it rotates); when
  it is unreadable but a workload certificate is held, the request goes with the certificate alone.
* `use_secret(secret)` (the certificate agent's subscriber) swaps in a new context with the new workload
  certificate; requests already sent keep theirs, new requests (new connections) present the new one.
"""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from ..tls.contexts import TlsConfigError, client_context


class CredentialsError(Exception):
    """No usable credential for the control plane: one line naming the file."""


class ControlPlaneCredentials:
    def __init__(self, root_cert_path: str | Path, token_path: str | Path | None = None):
        self.root_cert_path = Path(root_cert_path)
        self.token_path = Path(token_path) if token_path is not None else None
        try:
            self._roots = self.root_cert_path.read_bytes()
        except OSError as err:
            raise CredentialsError(f"{self.root_cert_path}: cannot read the mesh root certificate "
                                   f"({err.strerror})") from None
        self._ssl = self._context(None)
        self.client_certificate = False

    def __repr__(self) -> str:
        return (f"ControlPlaneCredentials(roots={self.root_cert_path}, token={self.token_path}, "
                f"client_certificate={self.client_certificate})")

    def _context(self, secret: Any) -> ssl.SSLContext:
        chain, key = (secret.cert_chain_pem, secret.private_key_pem) if secret is not None else (None, None)
        try:
            return client_context(self._roots, chain, key, check_hostname=True)
        except TlsConfigError as err:
            raise CredentialsError(f"{self.root_cert_path}: {err}") from None

    def use_secret(self, secret: Any) -> None:
        """Present this `WorkloadSecret` (pyproxy.tls.agent) as the client certificate from now on."""
        self._ssl = self._context(secret)
        self.client_certificate = True

    def ssl_context(self) -> ssl.SSLContext:
        return self._ssl

    def headers(self) -> dict[str, str]:
        """`Authorization: Bearer <token>`, or nothing when the token is gone but a certificate is held."""
        if self.token_path is None:
            return {}
        try:
            token = self.token_path.read_text().strip()
        except OSError as err:
            if self.client_certificate:
                return {}
            raise CredentialsError(f"{self.token_path}: cannot read the service-account token "
                                   f"({err.strerror})") from None
        if not token and not self.client_certificate:
            raise CredentialsError(f"{self.token_path}: the service-account token file is empty")
        return {"Authorization": f"Bearer {token}"} if token else {}
