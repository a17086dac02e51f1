"""Typed Istio/Kubernetes resources as loaded from YAML, each remembering where it came from.

This is the contract between loading (`control.istio.load`), validation/analysis (`control.istio.validate`,
`control.analyze`), the mesh snapshot (`control.mesh`) and translation (`control.translate`).
A `Resource` is immutable: `spec` is a read-only view produced by `freeze()` (mappings become
`types.MappingProxyType`, lists become tuples) so no stage can edit what another stage reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource (or one of its fields) was written: file and 1-based line."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class Resource:
    """One Kubernetes-style object: `apiVersion`, `kind`, `metadata`, `spec` (or the whole body for kinds
    without a spec, e.g. ServiceAccount)."""

    api_version: str  # e.g. "networking.istio.io/v1beta1"
    kind: str  # e.g. "VirtualService"
    name: str
    namespace: str  # "default" when the YAML leaves it out (kubectl apply's behaviour)
    spec: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    source: Source = Source("<unknown>")
    # field path ("spec.http[0].route[0].destination.host") -> line, for findings that point at a field
    lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def __repr__(self) -> str:
        # a Secret's body is key material: never in a log line, a finding or a traceback
        body = "<redacted>" if self.kind == "Secret" and self.group == "" else repr(self.spec)
        return (f"Resource({self.api_version} {self.key}, spec={body}, labels={dict(self.labels)}, "
                f"source={self.source})")

    @property
    def group(self) -> str:
        return self.api_version.split("/", 1)[0] if "/" in self.api_version else ""

    @property
    def key(self) -> str:
        """istioctl's way of naming a resource in messages: `VirtualService default/reviews`."""
        return f"{self.kind} {self.namespace}/{self.name}"

    def line_of(self, path: str) -> int:
        """Best line for a field path: the field itself, else its nearest parent, else the resource."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.source.line


def get(mapping: Any, *path: str, default: Any = None) -> Any:
    """Safe nested lookup in a (frozen or plain) spec: `default` when any step is missing or not a mapping."""
    for key in path:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def freeze(value: Any) -> Any:
    """Deep read-only copy of parsed YAML: dict -> MappingProxyType, list -> tuple."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain JSON-like copy of a frozen value (for output / json.dumps)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
