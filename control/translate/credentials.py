"""`credentialName` -> the TLS material of a Kubernetes Secret found in the config directory (pure).

istiod's credentials controller (pilot/pkg/credentials/kube/secrets.go `ExtractCertInfo`, `ExtractRoot`,
`GetCaCert`) reads the Secret named by a Gateway server's or DestinationRule's `credentialName`, in the
namespace of the proxy that uses it, and serves it to that proxy over SDS as `kubernetes://<name>`. This
control plane has no SDS server for such secrets: translation puts the bytes inline in the TLS context instead
(`inline_bytes`, base64, as Envoy's JSON carries bytes), which is what the proxy would receive over SDS.

Keys, as istiod reads them (first pair with non-empty values wins):
* certificate + key: `cert`/`key` (generic Secret), else `tls.crt`/`tls.key` (`kubernetes.io/tls`);
* CA (`ExtractRoot`): `cacert`, else `ca.crt`; for a server that validates clients the CA comes from the
  Secret `<name>-cacert` when it exists, else from `<name>` itself (`GetCaCert`).
`data` values are base64 (Kubernetes' encoding); `stringData` values are plain text. Secret contents never
appear in errors: only the Secret's name and which keys it has.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from control.istio.resources import Resource

CERT_KEYS = (("cert", "key"), ("tls.crt", "tls.key"))  # GenericScrtCert/Key, TLSSecretCert/Key
CA_KEYS = ("cacert", "ca.crt")  # GenericScrtCaCert, TLSSecretCaCert
CA_SUFFIX = "-cacert"  # securitymodel.SdsCaSuffix


class CredentialError(ValueError):
    """A credentialName that names no usable Secret; the message says which and why (never the data)."""


@dataclass(frozen=True, slots=True)
class Credential:
    """Decoded PEM material of one Secret (repr shows which parts exist, never their bytes)."""

    name: str
    cert: bytes = field(default=b"", repr=False)
    key: bytes = field(default=b"", repr=False)
    ca: bytes = field(default=b"", repr=False)

    def __repr__(self) -> str:
        parts = [p for p, v in (("cert", self.cert), ("key", self.key), ("ca", self.ca)) if v]
        return f"Credential({self.name!r}, has={'+'.join(parts) or 'nothing'})"


def secret_data(secret: Resource) -> dict[str, bytes]:
    """The Secret's keys -> bytes (`data` base64-decoded, `stringData` encoded; stringData wins, as in the
    API server). A value that is not valid base64 is left out."""
    out: dict[str, bytes] = {}
    data = secret.spec.get("data") or {}
    if isinstance(data, Mapping):
        for k, v in data.items():
            try:
                out[str(k)] = base64.b64decode(str(v or ""), validate=True)
            except (binascii.Error, ValueError):
                continue
    string_data = secret.spec.get("stringData") or {}
    if isinstance(string_data, Mapping):
        out.update({str(k): str(v or "").encode() for k, v in string_data.items()})
    return out


def find_secret(resources: Iterable[Resource], name: str, namespace: str) -> Resource | None:
    """The core/v1 Secret `namespace/name` (the last one read wins, as `kubectl apply` in order leaves it)."""
    found = None
    for r in resources:
        if r.kind == "Secret" and r.group == "" and r.name == name and r.namespace == namespace:
            found = r
    return found


def _keys_message(data: Mapping[str, Any]) -> str:
    keys = sorted(data)
    return ", ".join(keys) if keys else "none"


def extract_cert(secret: Resource) -> Credential:
    """istiod's ExtractCertInfo: certificate and key, or CredentialError."""
    data = secret_data(secret)
    for cert_key, key_key in CERT_KEYS:
        if data.get(cert_key) and data.get(key_key):
            return Credential(secret.name, cert=data[cert_key], key=data[key_key], ca=extract_root(data))
    for cert_key, key_key in CERT_KEYS:
        if cert_key in data and key_key in data:
            raise CredentialError(f"Secret {secret.namespace}/{secret.name}: found keys {cert_key!r} and "
                                  f"{key_key!r}, but they were empty")
    raise CredentialError(f"Secret {secret.namespace}/{secret.name}: found secret, but didn't have expected keys "
                          f"(cert and key) or (tls.crt and tls.key); found: {_keys_message(data)}")


def extract_root(data: Mapping[str, bytes]) -> bytes:
    """istiod's ExtractRoot: the CA bundle (`cacert`, else `ca.crt`), b"" when there is none."""
    for k in CA_KEYS:
        if data.get(k):
            return data[k]
    return b""


def ca_bundle(resources: Iterable[Resource], name: str, namespace: str) -> bytes:
    """istiod's GetCaCert for `credentialName`: the CA of the Secret `<name>-cacert` when it exists, else of
    `<name>` itself; CredentialError when neither has one."""
    resources = tuple(resources)
    ca_secret = find_secret(resources, name + CA_SUFFIX, namespace)
    secret = ca_secret if ca_secret is not None else find_secret(resources, name, namespace)
    if secret is None:
        raise CredentialError(f"Secret {namespace}/{name} not found (credentialName {name!r})")
    ca = extract_root(secret_data(secret))
    if not ca:
        raise CredentialError(f"Secret {secret.namespace}/{secret.name}: no CA certificate (key cacert or ca.crt); "
                              f"found: {_keys_message(secret_data(secret))}")
    return ca


def credential(resources: Iterable[Resource], name: str, namespace: str, *, cert: bool, ca: bool) -> Credential:
    """The material `credentialName` stands for: certificate and key (`cert`: servers, MUTUAL clients) and the
    CA (`ca`: MUTUAL servers, clients that verify the server)."""
    resources = tuple(resources)
    out = Credential(name)
    if cert:
        secret = find_secret(resources, name, namespace)
        if secret is None:
            raise CredentialError(f"Secret {namespace}/{name} not found (credentialName {name!r})")
        found = extract_cert(secret)
        out = Credential(name, found.cert, found.key)
    if ca:
        out = Credential(name, out.cert, out.key, ca_bundle(resources, name, namespace))
    return out


def inline(data: bytes) -> dict:
    """An Envoy DataSource carrying bytes inline (protobuf JSON: base64)."""
    return {"inline_bytes": base64.b64encode(data).decode("ascii")}
