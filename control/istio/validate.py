"""Schema validation of loaded resources (placeholder: accepts everything; the schema follows)."""
from __future__ import annotations

from dataclasses import dataclass

from control.istio.messages import Finding
from control.istio.resources import Resource


@dataclass(frozen=True, slots=True)
class Checked:
    resource: Resource | None  # None: rejected by a hard error
    findings: tuple[Finding, ...]


def validate_resource(resource: Resource, *, strict: bool = False) -> Checked:
    return Checked(resource, ())
