"""Envoy v3 JSON/YAML -> the frozen model in `pyproxy.config.model`, with errors by field path.

Envoy reads its config through protobuf's JSON mapping; so does this decoder, for the subset the model
declares: field names in snake_case or lowerCamelCase, Durations as "1.5s", wrappers as plain values, enums
by name, `typed_config` Any messages dispatched on "@type". What the model does not declare is an error
that names where it is (`static_resources.clusters[0].foo: unknown field 'foo' (did you mean ...)`),
never a silently ignored field: a user comparing pyproxy with Envoy must know what was not applied.

`encode()` is the inverse (model -> Envoy JSON), used by the admin `/config_dump`.
"""
from __future__ import annotations

import base64
import dataclasses
import difflib
import re
import typing
from types import MappingProxyType, NoneType, UnionType
from typing import Any, Mapping

from . import schema

__all__ = ["ConfigError", "decode", "decode_any", "encode", "parse_duration"]


class ConfigError(ValueError):
    """A config problem at a field path (`static_resources.listeners[0].address`)."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


_DURATION_RE = re.compile(r"^(-?\d+(?:\.\d{0,9})?)s$")


def parse_duration(value: Any, path: str = "") -> float:
    """google.protobuf.Duration in JSON ("1.5s") or YAML-object ({seconds, nanos}) form -> seconds."""
    if isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if not m:
            raise ConfigError(path, f"invalid duration {value!r} (expected e.g. \"0.25s\")")
        return float(m.group(1))
    if isinstance(value, Mapping):
        extra = set(value) - {"seconds", "nanos"}
        if extra:
            raise ConfigError(path, f"invalid duration: unknown field(s) {sorted(extra)}")
        return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ConfigError(path, f"invalid duration {value!r}: write it as a string with units, e.g. \"{value}s\"")
    raise ConfigError(path, f"invalid duration {value!r}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


class _Plan:
    """Per-class decoding plan: json names -> (field, type) computed once."""

    __slots__ = ("cls", "fields", "by_json", "oneofs", "required_oneofs")

    def __init__(self, cls: type):
        self.cls = cls
        hints = typing.get_type_hints(cls)
        self.fields = []
        self.by_json: dict[str, tuple[dataclasses.Field, Any]] = {}
        for f in dataclasses.fields(cls):
            entry = (f, hints[f.name])
            self.fields.append(entry)
            self.by_json[f.name] = entry
            self.by_json[_camel(f.name)] = entry
        self.oneofs = getattr(cls, "ONEOFS", ())
        self.required_oneofs = getattr(cls, "REQUIRED_ONEOFS", ())


_PLANS: dict[type, _Plan] = {}


def _plan(cls: type) -> _Plan:
    p = _PLANS.get(cls)
    if p is None:
        p = _PLANS[cls] = _Plan(cls)
    return p


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _freeze_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze_json(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_json(v) for v in value)
    return value


def decode(cls: type, data: Any, path: str = "") -> Any:
    """Decode `data` (parsed JSON/YAML) into the model class `cls`, or raise ConfigError at a path."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected an object for {cls.__name__}, got {type(data).__name__}")
    plan = _plan(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "@type" and hasattr(cls, "TYPE_URL"):
            continue
        entry = plan.by_json.get(key)
        if entry is None:
            names = [f.name for f, _ in plan.fields]
            hint = difflib.get_close_matches(str(key), names, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(_join(path, str(key)), f"unknown or unsupported field '{key}' in {cls.__name__}{extra}")
        f, tp = entry
        if f.name in kwargs:
            raise ConfigError(_join(path, str(key)), f"field '{f.name}' given twice")
        if raw is None:
            continue
        kwargs[f.name] = _decode_value(f, tp, raw, _join(path, f.name))
    for f, _ in plan.fields:
        if f.metadata.get("required") and kwargs.get(f.name) in (None, (), ""):
            raise ConfigError(_join(path, f.name), f"missing required field '{f.name}' in {cls.__name__}")
    for group in plan.oneofs:
        set_ = [n for n in group if n in kwargs]
        if len(set_) > 1:
            raise ConfigError(path, f"only one of {', '.join(group)} may be set (got {', '.join(set_)})")
    for group in plan.required_oneofs:
        set_ = [n for n in group if n in kwargs]
        if len(set_) != 1:
            what = "exactly one" if set_ else "one"
            raise ConfigError(path, f"{what} of {', '.join(group)} must be set in {cls.__name__}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError, re.error) as e:
        raise ConfigError(path, str(e)) from None


TYPED_STRUCT = "udpa.type.v1.TypedStruct"


def decode_any(data: Any, path: str) -> Any:
    """A google.protobuf.Any: look up the model class registered for its "@type" and decode into it."""
    if not isinstance(data, Mapping):
        raise ConfigError(path, "expected an object with an \"@type\"")
    type_url = data.get("@type")
    if not type_url:
        raise ConfigError(path, "typed_config needs an \"@type\"")
    cls = schema.typed_class(str(type_url))
    if cls is not None and str(type_url).endswith(TYPED_STRUCT):
        inner = schema.typed_class(str(data.get("type_url") or ""))
        if inner is not None:
            # Envoy reads a TypedStruct as the message its `type_url` names (Istio's docs write the local rate
            # limit filter this way); a type pyproxy does not model stays a TypedStruct (istio.stats)
            return decode(inner, data.get("value") or {}, _join(path, "value"))
    if cls is None:
        raise ConfigError(_join(path, "@type"), f"unsupported type {type_url!r} (pyproxy supports: "
                          + ", ".join(schema.supported_types()) + ")")
    return decode(cls, data, path)


def _decode_value(f: dataclasses.Field, tp: Any, raw: Any, path: str) -> Any:
    kind = f.metadata.get("kind")
    if kind == schema.DURATION:
        return parse_duration(raw, path)
    if kind == schema.ANY:
        return decode_any(raw, path)
    if kind == "any_map":
        if not isinstance(raw, Mapping):
            raise ConfigError(path, "expected a map of name -> typed config")
        return MappingProxyType({k: decode_any(v, f"{path}[{k!r}]") for k, v in raw.items()})
    if kind == "message_map":  # map<string, Message>: each value decoded as the Mapping's value type
        if not isinstance(raw, Mapping):
            raise ConfigError(path, "expected a map of name -> message")
        (mapping,) = [a for a in typing.get_args(tp) if a is not NoneType]
        item = typing.get_args(mapping)[1]
        return MappingProxyType({str(k): _decode_typed(item, v, f"{path}[{k!r}]") for k, v in raw.items()})
    if kind == schema.STRUCT:
        return _freeze_json(raw)
    if kind == schema.WRAPPED and isinstance(raw, Mapping) and set(raw) == {"value"}:
        raw = raw["value"]
    if kind == schema.ENUM:
        choices = f.metadata["choices"]
        if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(choices):
            return choices[raw]
        if raw not in choices:
            hint = difflib.get_close_matches(str(raw), choices, n=1)
            extra = f" (did you mean {hint[0]}?)" if hint else ""
            raise ConfigError(path, f"invalid value {raw!r}; expected one of {', '.join(choices)}{extra}")
        return raw
    return _decode_typed(tp, raw, path, signed=kind == schema.SIGNED)


def _decode_typed(tp: Any, raw: Any, path: str, signed: bool = False) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, UnionType):
        args = [a for a in typing.get_args(tp) if a is not NoneType]
        return _decode_typed(args[0], raw, path, signed)
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(raw).__name__}")
        return tuple(_decode_typed(item, v, f"{path}[{i}]") for i, v in enumerate(raw))
    if dataclasses.is_dataclass(tp):
        return decode(tp, raw, path)
    if tp is bool:
        if not isinstance(raw, bool):
            raise ConfigError(path, f"expected true/false, got {raw!r}")
        return raw
    if tp is int:
        # proto3 JSON writes 64-bit ints as strings; accept both
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ConfigError(path, f"expected an integer, got {raw!r}")
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(path, f"expected an integer, got {raw!r}") from None
        if value < 0 and not signed:
            raise ConfigError(path, f"expected a non-negative integer, got {value}")
        return value
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(path, f"expected a number, got {raw!r}")
        return float(raw)
    if tp is str:
        if not isinstance(raw, str):
            raise ConfigError(path, f"expected a string, got {raw!r}")
        return raw
    if tp is Any or tp is object:
        return _freeze_json(raw)
    if typing.get_origin(tp) in (Mapping, dict) or tp is Mapping:
        return _freeze_json(raw)
    raise ConfigError(path, f"cannot decode type {tp!r}")  # a model declaration bug


# ---------------------------------------------------------------- encode (model -> Envoy JSON)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _fmt_duration(seconds: float) -> str:
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def encode(obj: Any, *, as_any: bool = False) -> Any:
    """Envoy v3 JSON for a model object: only fields that differ from their default. With `as_any`
    (a google.protobuf.Any position, or a config_dump resource) the object carries its "@type"."""
    if not dataclasses.is_dataclass(obj):
        return _thaw(obj)
    out: dict[str, Any] = {}
    if as_any:
        out["@type"] = obj.TYPE_URL
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value is None or value == () or (value == default and not f.metadata.get("required")):
            continue
        kind = f.metadata.get("kind")
        if kind == schema.DURATION:
            out[f.name] = _fmt_duration(value)
        elif kind == "any_map":
            out[f.name] = {k: encode(v, as_any=True) for k, v in value.items()}
        elif kind == "message_map":
            out[f.name] = {k: encode(v) for k, v in value.items()}
        elif kind == schema.ANY:
            out[f.name] = encode(value, as_any=True)
        elif isinstance(value, tuple):
            out[f.name] = [encode(v) for v in value]
        else:
            out[f.name] = encode(value)
    return out


def b64decode(text: str) -> bytes:
    return base64.b64decode(text)
