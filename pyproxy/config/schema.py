"""Field declarations for the Envoy v3 model: how a dataclass field maps to Envoy's JSON.

The model (`pyproxy.config.model`) is plain frozen dataclasses whose field names are Envoy's proto field
names (snake_case). These helpers attach the few facts the generic decoder (`pyproxy.config.decode`) cannot
read from the type hint: "this float is a protobuf Duration", "this str is one of these enum values",
"this field is required", "this is a `google.protobuf.Any` (typed_config)".

Nothing here does I/O; the decoder and the encoder are driven entirely by these declarations, so adding an
Envoy field to the model is one line.
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING
from typing import Any, Callable

# field kinds the decoder treats specially
DURATION = "duration"  # google.protobuf.Duration: "1.5s" or {seconds, nanos} -> float seconds
ENUM = "enum"  # proto enum: its name as a string (ints accepted as proto3 JSON allows)
ANY = "any"  # google.protobuf.Any: {"@type": ..., ...} -> a registered typed config
STRUCT = "struct"  # google.protobuf.Struct / Value: kept as frozen JSON
WRAPPED = "wrapped"  # google.protobuf.*Value wrapper: plain JSON value, or {"value": x}
SIGNED = "signed"  # int32/int64 that may be negative (plain `int` fields are Envoy's uint32/uint64 counts)


def fld(
    default: Any = MISSING,
    *,
    kind: str | None = None,
    choices: tuple[str, ...] | None = None,
    required: bool = False,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A model field. `default=()` for repeated fields; None for unset messages and wrappers."""
    meta = {"kind": kind, "choices": choices, "required": required}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if default is MISSING and not required:
        default = None
    if default is MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def duration(default: float | None = None, *, required: bool = False) -> Any:
    return fld(default, kind=DURATION, required=required)


def enum(default: str, *choices: str) -> Any:
    return fld(default, kind=ENUM, choices=(default, *choices) if default not in choices else choices)


def any_config(required: bool = False) -> Any:
    return fld(None, kind=ANY, required=required)


def struct(default: Any = None) -> Any:
    return fld(default, kind=STRUCT)


def wrapped(default: Any = None) -> Any:
    return fld(default, kind=WRAPPED)


# --- typed_config registry: Envoy type URL <-> model class ------------------------------------------
TYPE_PREFIX = "type.googleapis.com/"
_TYPED: dict[str, type] = {}


def typed(type_name: str) -> Callable[[type], type]:
    """Class decorator: this model class is the decoded form of the Any whose @type is `type_name`."""

    def register(cls: type) -> type:
        cls.TYPE_URL = TYPE_PREFIX + type_name  # type: ignore[attr-defined]
        _TYPED[type_name] = cls
        return cls

    return register


def typed_class(type_url: str) -> type | None:
    return _TYPED.get(type_url.removeprefix(TYPE_PREFIX))


def supported_types() -> list[str]:
    return sorted(_TYPED)
