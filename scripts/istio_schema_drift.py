"""List where control/istio/schema.py has drifted from Istio's CRD schemas: fields Istio's OpenAPI schema has
that the table lacks (meshctl would reject them as unknown) and fields the table has that Istio's lacks.

Istio generates its CRDs from the istio/api protos, so `manifests/charts/base/files/crd-all.gen.yaml` of an
istio/istio checkout is the protos' field list. Run from the repo root:

    .venv/bin/python scripts/istio_schema_drift.py path/to/crd-all.gen.yaml
"""
from __future__ import annotations

import pathlib
import sys
from typing import Any, Iterator

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from control.istio import schema as S  # noqa: E402


def _element(typ: str) -> tuple[str, str]:
    """(how the CRD nests it: "items" / "additionalProperties" / "", the inner type)."""
    typ = typ.rstrip("!")
    if typ.startswith("[]"):
        return "items", typ[2:]
    if typ.startswith("map:"):
        return "additionalProperties", typ[4:]
    return "", typ


def drift(message: str, crd: dict[str, Any], path: str, seen: set[tuple[str, str]]) -> Iterator[str]:
    if (message, path) in seen:
        return
    seen.add((message, path))
    ours = S.MESSAGES.get(message, {})
    props = crd.get("properties") or {}
    for field, sub in sorted(props.items()):
        if field not in ours:
            if (message, field) not in S.OBSOLETE:
                yield f"missing  {path}.{field}  ({message}; Istio: {sub.get('type', 'object')})"
            continue
        nest, inner = _element(ours[field])
        sub = sub.get(nest, {}) if nest else sub
        if inner in S.MESSAGES and isinstance(sub, dict):
            yield from drift(inner, sub, f"{path}.{field}", seen)
    if props and message not in S.OPEN:
        for field in sorted(set(ours) - set(props)):
            yield f"extra    {path}.{field}  ({message}: not in Istio's schema)"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 64
    seen: set[tuple[str, str]] = set()
    for doc in yaml.safe_load_all(pathlib.Path(argv[0]).read_text()):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        kind = doc["spec"]["names"]["kind"]
        message = S.KIND_MESSAGE.get(kind)
        if message is None or not doc["spec"]["group"].endswith("istio.io"):
            continue
        version = doc["spec"]["versions"][0]
        spec = version["schema"]["openAPIV3Schema"]["properties"].get("spec", {})
        for line in drift(message, spec, kind, seen):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
