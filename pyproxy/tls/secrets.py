"""Named TLS secrets held in this process: what Envoy gets over SDS (pure: no I/O).

A transport socket in Envoy's config names its material instead of carrying it:
`common_tls_context.tls_certificate_sds_secret_configs: [{name: default}]` and
`validation_context_sds_secret_config: {name: ROOTCA}` (istiod emits exactly these two names). In Envoy they
come from istio-agent over SDS; in pyproxy the certificate agent (`pyproxy.tls.agent`) runs in the same process
and puts them here with `install_workload_secret()`, and file- or inline-based material from a static bootstrap
can be registered under a name too. Transport sockets look secrets up by name when they build an
`ssl.SSLContext`, and subscribe to hear about rotation: a new certificate applies to new connections, while
connections already established keep the handshake they made (Envoy's behaviour on SDS updates).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

SDS_DEFAULT = "default"  # the workload's certificate chain and key (istiod's name)
SDS_ROOTCA = "ROOTCA"  # the mesh trust bundle (istiod's name)


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    """Envoy's `tls_certificate` secret: a PEM chain (leaf first) and its PEM private key."""

    chain_pem: bytes
    key_pem: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """Envoy's `validation_context` secret: the PEM roots a peer's chain must lead to."""

    trusted_ca_pem: bytes


Secret = TlsCertificate | ValidationContext
Listener = Callable[[str], None]


class SecretManager:
    """Secrets by name, with a version that moves on every change and callbacks per change."""

    def __init__(self) -> None:
        self._secrets: dict[str, Secret] = {}
        self._listeners: list[Listener] = []
        self.version = 0

    def set(self, name: str, secret: Secret) -> None:
        if self._secrets.get(name) == secret:
            return
        self._secrets[name] = secret
        self.version += 1
        for cb in list(self._listeners):
            cb(name)

    def certificate(self, name: str) -> TlsCertificate | None:
        s = self._secrets.get(name)
        return s if isinstance(s, TlsCertificate) else None

    def validation(self, name: str) -> ValidationContext | None:
        s = self._secrets.get(name)
        return s if isinstance(s, ValidationContext) else None

    def subscribe(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def unsubscribe(self, callback: Listener) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def install_workload_secret(self, secret: Any) -> None:
        """Put an agent's `WorkloadSecret` under istiod's names: `default` and `ROOTCA`."""
        self.set(SDS_ROOTCA, ValidationContext(secret.root_bundle_pem))
        self.set(SDS_DEFAULT, TlsCertificate(secret.cert_chain_pem, secret.private_key_pem))

    def names(self) -> list[str]:
        return sorted(self._secrets)

    def __repr__(self) -> str:
        return f"<SecretManager v{self.version} {self.names()}>"
