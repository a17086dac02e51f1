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
* The root file is checked on every request (`stat`: size and mtime) and re-read when it changed, as
  istio-agent follows the mounted ConfigMap: a root rotation (certs/README.md) publishes a two-root bundle
  there before the control plane restarts on the new intermediate. An unreadable or unusable new file keeps
  the roots already loaded (logged once per change).
"""
from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Any

from ..tls.contexts import TlsConfigError, client_context

log = logging.getLogger("pyproxy.xds")


class CredentialsError(Exception):
    """No usable credential for the control plane: one line naming the file."""


class ControlPlaneCredentials:
    def __init__(self, root_cert_path: str | Path, token_path: str | Path | None = None):
        self.root_cert_path = Path(root_cert_path)
        self.token_path = Path(token_path) if token_path is not None else None
        try:
            self._roots_stat = self._stat()
            self._roots = self.root_cert_path.read_bytes()
        except OSError as err:
            raise CredentialsError(f"{self.root_cert_path}: cannot read the mesh root certificate "
                                   f"({err.strerror})") from None
        self._secret: Any = None
        self._ssl = self._context(None)
        self.client_certificate = False
        self.root_reloads = 0

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.root_cert_path)
        return st.st_size, st.st_mtime_ns, st.st_ino

    def _follow_root_file(self) -> None:
        """Re-read the mesh root file if it changed since it was last read (one stat per request)."""
        try:
            seen = self._stat()
        except OSError:
            return
        if seen == self._roots_stat:
            return
        self._roots_stat = seen
        try:
            roots = self.root_cert_path.read_bytes()
            ctx = client_context(roots, *((self._secret.cert_chain_pem, self._secret.private_key_pem)
                                          if self._secret is not None else (None, None)), check_hostname=True)
        except (OSError, TlsConfigError) as err:
            log.warning("%s changed but cannot be used (%s); keeping the roots loaded before",
                        self.root_cert_path, err)
            return
        self._roots, self._ssl = roots, ctx
        self.root_reloads += 1
        log.info("mesh root file %s re-read (%d certificate(s))", self.root_cert_path,
                 roots.count(b"BEGIN CERTIFICATE"))

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
        self._secret = secret
        self.client_certificate = True

    def ssl_context(self) -> ssl.SSLContext:
        self._follow_root_file()
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
