"""Port the table-driven cases of Istio's pkg/config/validation/validation_test.go into YAML test inputs:
one document per case, `{case, valid, warning: Istio's verdicts, message: the schema message, spec: the input}`,
written to tests/istio_corpus/testdata/validation/<TestName>.yaml with attribution (Apache-2.0).

The Go tables are protobuf struct literals; this reads the subset of Go they use (composite literals, `&T{}`,
slices, maps, strings, numbers, enums, oneof wrappers, wrapper types, durations) and turns each input into the
JSON form Istio's YAML would have. Cases whose input uses anything else are skipped and counted. Run from the
repo root with an istio/istio checkout (or `git show` of the file):

    .venv/bin/python scripts/port_istio_validation_tables.py path/to/validation_test.go COMMIT
"""
from __future__ import annotations

import pathlib
import re
import sys
from dataclasses import dataclass
from typing import Any

import yaml

# Test function -> (the schema message the input is, how the verdict is written: "valid" field or "out"
# position); GO_TYPES names the Go type where it differs from the message's name.
TABLES: dict[str, tuple[str, str]] = {
    "TestValidateGateway": ("Gateway", "out"),
    "TestValidateServer": ("Server", "out"),
    "TestValidateHTTPRetry": ("HTTPRetry", "valid"),
    "TestValidateHTTPRoute": ("HTTPRoute", "valid"),
    "TestValidateVirtualService": ("VirtualService", "valid"),
    "TestValidateDestinationRule": ("DestinationRule", "valid"),
    "TestValidateTrafficPolicy": ("TrafficPolicy", "valid"),
    "TestValidateConnectionPool": ("ConnectionPoolSettings", "valid"),
    "TestValidateLoadBalancer": ("LoadBalancerSettings", "valid"),
    "TestValidateOutlierDetection": ("OutlierDetection", "valid"),
    "TestValidateWorkloadEntry": ("WorkloadEntry", "valid"),
    "TestValidateTelemetry": ("Telemetry", "out"),
    "TestValidateWasmPlugin": ("WasmPlugin", "out"),
    "TestValidateRequestAuthentication": ("RequestAuthentication", "valid"),
    "TestValidateAuthorizationPolicy": ("AuthorizationPolicy", "valid"),
    "TestValidateServiceEntries": ("ServiceEntry", "valid"),
    "TestValidateSidecar": ("Sidecar", "valid"),
    "TestValidatePeerAuthentication": ("PeerAuthentication", "valid"),
    "TestValidateWorkloadGroup": ("WorkloadGroup", "valid"),
    "TestValidateProxyConfig": ("ProxyConfig", "out"),
    "TestValidateTlsOptions": ("ServerTLSSettings", "out"),
    "TestValidateCORSPolicy": ("CorsPolicy", "valid"),
    "TestValidateHTTPFaultInjectionAbort": ("FaultAbort", "valid"),
    "TestValidateHTTPFaultInjectionDelay": ("FaultDelay", "valid"),
    "TestValidateHTTPRewrite": ("HTTPRewrite", "valid"),
    "TestValidateUriRegexRewrite": ("RegexRewrite", "valid"),
    "TestValidateHTTPRedirect": ("HTTPRedirect", "valid"),
    "TestValidateHTTPDirectResponse": ("HTTPDirectResponse", "valid"),
    "TestValidateDestination": ("Destination", "valid"),
    "TestValidateTelemetryFilter": ("AccessLogFilter", "valid"),
}
GO_TYPES = {"FaultAbort": "HTTPFaultInjection_Abort", "FaultDelay": "HTTPFaultInjection_Delay",
            "AccessLogFilter": "AccessLogging_Filter"}
# The config metadata a table's test gives every case (`config.Meta{Name, Namespace}`): written as the case's
# `metadata` where a verdict can depend on it (a Sidecar egress host `./x` is in the config's namespace, the
# `istio.io/dry-run` annotation, a ServiceEntry's `istio.io/use-waypoint` label). A row's own fields
# (`META_KEYS`) set the name, labels and annotations.
TABLE_METADATA: dict[str, dict[str, str]] = {
    "TestValidateSidecar": {"name": "foo", "namespace": "bar"},
    "TestValidatePeerAuthentication": {"name": "foo", "namespace": "bar"},
    "TestValidateRequestAuthentication": {"name": "foo", "namespace": "bar"},
    "TestValidateAuthorizationPolicy": {"name": "name", "namespace": "namespace"},
    "TestValidateServiceEntries": {"name": "foo", "namespace": "bar"},
}
# Go constants the tables use as values.
CONSTANTS = {"constants.DefaultAuthenticationPolicyName": "default", "someName": "foo", "someNamespace": "bar",
             "gvk.KubernetesGateway.Group": "gateway.networking.k8s.io", "gvk.KubernetesGateway.Kind": "Gateway",
             "gvk.Service.Group": "", "gvk.Service.Kind": "Service"}
# Enum conversions from a number (`networking.OutboundTrafficPolicy_Mode(3)`): the name the value has in the
# enum the validation compares it with (MeshConfig's OutboundTrafficPolicy.Mode for 3).
ENUM_CASTS = {("networking.OutboundTrafficPolicy_Mode", 3): "ALLOW_ANY_DYNAMIC_DNS"}
INPUT_KEYS = ("in", "route", "redirect", "directResponse", "destination", "filter")
# Tables with a warning column (`warning`/`warn`, or the 4th positional field); the others assert no warnings
# either way (their `warning` is written as null).
WARNING_COLUMN = {"TestValidateGateway": True, "TestValidateVirtualService": True,
                  "TestValidateDestinationRule": True, "TestValidateOutlierDetection": True,
                  "TestValidateWorkloadEntry": True, "TestValidateTelemetry": True, "TestValidateWasmPlugin": True,
                  "TestValidatePeerAuthentication": True, "TestValidateRequestAuthentication": True,
                  "TestValidateAuthorizationPolicy": True, "TestValidateServiceEntries": True,
                  "TestValidateSidecar": True, "TestValidateWorkloadGroup": True, "TestValidateProxyConfig": True,
                  "TestValidateTlsOptions": True, "TestValidateHTTPDirectResponse": True}
# Row fields that are the config's metadata: field -> metadata key.
META_KEYS = {"configName": "name", "labels": "labels", "annotations": "annotations"}
DURATIONS = {"time.Nanosecond": 1, "time.Microsecond": 10**3, "time.Millisecond": 10**6, "time.Second": 10**9,
             "time.Minute": 60 * 10**9, "time.Hour": 3600 * 10**9}
JSON_NAMES = {"Consecutive_5XxErrors": "consecutive5xxErrors"}


class Unsupported(Exception):
    """The literal uses Go this reader does not evaluate; the case is skipped."""


_TOKEN = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\])*"|`[^`]*`|-?\d+\.\d+|-?\d+|[A-Za-z_][\w.]*|\[\]|[{}()\[\]:,&*+/]',
                    re.S)


def tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise Unsupported(f"cannot read {text[pos:pos + 20]!r}")
        tok = m.group(0)
        pos = m.end()
        if not tok.isspace() and not tok.startswith(("//", "/*")):
            out.append(tok)
    return out


@dataclass
class Msg:
    """A message literal: its Go type and fields (JSON names)."""

    type: str
    fields: dict[str, Any]


class Reader:
    def __init__(self, toks: list[str], local: dict[str, Any] | None = None) -> None:
        self.toks, self.i = toks, 0
        self.local = local or {}  # the test function's variables the table uses (`duration := ...`)

    def peek(self, k: int = 0) -> str:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else ""

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if want is not None and tok != want:
            raise Unsupported(f"expected {want!r}, found {tok!r}")
        self.i += 1
        return tok

    def value(self, typ: str = "") -> Any:
        tok = self.peek()
        if tok == "&":
            self.take()
            return self.value()
        if tok == "{":
            return self.composite(typ)
        if tok == "[]":
            self.take()
            if self.peek() == "*":
                self.take()
            elem = self.take()
            return self.composite("[]" + elem)
        if tok.startswith("map"):
            self.take()  # map (the tokenizer reads `map` then `[` ...)
            depth = 0
            while True:  # skip the key/value types
                t = self.take()
                depth += t == "["
                depth -= t == "]"
                if depth == 0 and self.peek() == "{":
                    break
                if self.peek() == "*":
                    self.take()
            return self.composite("map")
        if tok.startswith('"'):
            self.take()
            return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
        if tok.startswith("`"):
            self.take()
            return tok[1:-1]
        if re.fullmatch(r"-?\d+", tok) or re.fullmatch(r"-?\d+\.\d+", tok):
            return self.arith()
        if tok in ("true", "false"):
            self.take()
            return tok == "true"
        if tok == "nil":
            self.take()
            return None
        if tok == "durationpb.New":
            self.take()
            self.take("(")
            ns = self.arith()
            self.take(")")
            return _duration(ns)
        if tok in DURATIONS or (tok in ("int64", "uint32", "int32", "float64") and self.peek(1) == "("):
            return self.arith()
        if tok == "fmt.Sprintf":  # an expected error text: only whether it is empty matters
            self.take()
            depth = 0
            while True:
                t = self.take()
                depth += t == "("
                depth -= t == ")"
                if depth == 0:
                    return "<formatted message>"
        if tok in CONSTANTS:
            self.take()
            return CONSTANTS[tok]
        if tok in self.local:
            self.take()
            return self.local[tok]
        if self.peek(1) == "(" and re.fullmatch(r"\w+\.\w+", tok):  # an enum from a number: T(3)
            self.take()
            self.take("(")
            number = self.arith()
            self.take(")")
            if (tok, number) not in ENUM_CASTS:
                raise Unsupported(f"conversion {tok}({number})")
            return ENUM_CASTS[(tok, number)]
        if re.fullmatch(r"[A-Za-z_][\w.]*", tok) and self.peek(1) == "{":
            self.take()
            return self.composite(tok)
        if re.fullmatch(r"\w+\.\w+_\w+", tok):  # an enum constant: networking.ClientTLSSettings_ISTIO_MUTUAL
            self.take()
            return _enum_value(tok)
        raise Unsupported(f"value {tok!r}")

    def arith(self) -> Any:
        """Numbers and time constants joined by * (Go durations: 2 * time.Second)."""
        result = self.atom()
        while self.peek() in ("*", "/", "+"):
            op = self.take()
            rhs = self.atom()
            result = result * rhs if op == "*" else result // rhs if op == "/" else result + rhs
        return result

    def atom(self) -> Any:
        tok = self.take()
        if tok in DURATIONS:
            return DURATIONS[tok]
        if tok in ("int64", "uint32", "int32", "float64") and self.peek() == "(":
            self.take("(")
            v = self.arith()
            self.take(")")
            return v
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if re.fullmatch(r"-?\d+\.\d+", tok):
            return float(tok)
        raise Unsupported(f"number {tok!r}")

    def composite(self, typ: str) -> Any:
        self.take("{")
        items: list[Any] = []
        keyed: dict[str, Any] = {}
        while self.peek() != "}":
            if self.peek(1) == ":" and (re.fullmatch(r"[A-Za-z_]\w*|\d+", self.peek()) or self.peek().startswith('"')):
                key = self.take()  # a field, or a map key (a string or, in map[uint32]..., a number)
                self.take(":")
                elem_type = typ[2:] if typ.startswith("[]") else ""
                keyed[key.strip('"') if key.startswith('"') else key] = self.value(elem_type)
            else:
                items.append(self.value(typ[2:] if typ.startswith("[]") else ""))
            if self.peek() == ",":
                self.take()
        self.take("}")
        if typ.startswith("[]"):
            return [_json(v) for v in items]
        if typ == "map":
            return {k: _json(v) for k, v in keyed.items()}
        if items and not keyed:
            return items  # a positional struct (a table row)
        return Msg(typ, keyed)


def _enum_value(constant: str) -> str:
    """The value of a Go enum constant: the trailing upper-case segments after the (possibly nested) type,
    `MetricsOverrides_TagOverride_UPSERT` -> UPSERT, `ServerTLSSettings_TLSV1_2` -> TLSV1_2."""
    parts = constant.split(".", 1)[1].split("_")
    value: list[str] = []
    while len(parts) > 1 and re.fullmatch(r"[A-Z0-9]+", parts[-1]):
        value.insert(0, parts.pop())
    return "_".join(value) if value else parts[-1]


def _duration(ns: int) -> str:
    seconds, rest = divmod(int(ns), 10**9)
    return f"{seconds}s" if not rest else f"{seconds}.{rest:09d}".rstrip("0") + "s"


def _json_name(go: str) -> str:
    go = go.rstrip("_")  # String_ -> string
    return JSON_NAMES.get(go) or go[0].lower() + go[1:]


def _json(value: Any) -> Any:
    """A Go value as Istio's YAML would write it."""
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if not isinstance(value, Msg):
        return value
    short = value.type.rsplit(".", 1)[-1]
    if short in ("UInt32Value", "Int32Value", "BoolValue", "DoubleValue", "StringValue", "Int64Value",
                 "UInt64Value"):
        return _json(value.fields.get("Value", 0 if short != "BoolValue" else False))
    if short == "Duration":
        return _duration(value.fields.get("Seconds", 0) * 10**9 + value.fields.get("Nanos", 0))
    if value.type.split(".")[0] not in ("networking", "security_beta", "v1beta1", "type_beta", "", "telemetry",
                                         "extensions", "api", "networkingv1beta1"):
        raise Unsupported(f"type {value.type}")
    out: dict[str, Any] = {}
    for key, field in value.fields.items():
        converted = _json(field)
        if isinstance(field, Msg) and _is_oneof_wrapper(field):
            out.update(converted)  # a oneof wrapper: its one field goes to the parent
        else:
            out[_json_name(key)] = converted
    return out


def _is_oneof_wrapper(m: Msg) -> bool:
    """networking.LoadBalancerSettings_Simple{Simple: ...}: a oneof case, whose field is named after it."""
    short = m.type.rsplit(".", 1)[-1].rstrip("_")  # Go appends _ to a name it reserves: HTTPBody_String_
    return "_" in short and len(m.fields) == 1 and short.rsplit("_", 1)[1] == next(iter(m.fields)).rstrip("_")


def table_rows(source: str, test: str) -> str:
    """The text of the test's table literal (after `}{` that closes the struct type), braces included."""
    start = source.index(f"func {test}(")
    m = re.compile(r"\[\]struct\s*{.*?\n\t}", re.S).search(source, start)
    if not m:
        raise Unsupported(f"{test}: no table")
    open_at = source.index("{", m.end())
    depth = 0
    for i in range(open_at, len(source)):
        depth += source[i] == "{"
        depth -= source[i] == "}"
        if depth == 0:
            return source[open_at:i + 1]
    raise Unsupported(f"{test}: unterminated table")


def split_rows(table: str) -> list[str]:
    rows, depth, start = [], 0, None
    for i, ch in enumerate(table[1:-1], 1):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0 and start is not None:
                rows.append(table[start:i + 1])
    return rows


def local_values(source: str, test: str) -> dict[str, Any]:
    """The `name := <literal>` variables the test function sets before its table, those this reader reads."""
    start = source.index(f"func {test}(")
    body = source[start:source.index("[]struct", start)]
    out: dict[str, Any] = {}
    for m in re.finditer(r"^\t(\w+) := (.+)$", body, flags=re.M):
        try:
            out[m.group(1)] = Reader(tokens(m.group(2))).value()
        except (Unsupported, IndexError, ValueError):
            pass
    return out


def port(source: str, test: str, message: str, verdict: str) -> tuple[list[dict], int]:
    docs, skipped = [], 0
    local = local_values(source, test)
    for row in split_rows(table_rows(source, test)):
        try:
            value = Reader(tokens(row), local).value()
            if isinstance(value, list):  # positional: name, in, out[, warning]
                name, spec, out = value[0], value[1], value[2]
                valid = out if isinstance(out, bool) else out == ""
                flag = value[3] if len(value) > 3 else ""
                warning = (flag if isinstance(flag, bool) else flag != "") if WARNING_COLUMN.get(test) else None
            else:
                fields = value.fields
                name = fields.get("name", "")
                spec = next(fields[k] for k in INPUT_KEYS if k in fields)
                valid = bool(fields.get("valid", False)) if verdict == "valid" else fields.get("out", fields.get("err", "")) == ""
                flag = fields.get("warning", fields.get("warn", fields.get("Warning")))
                warning = (None if flag is None and not WARNING_COLUMN.get(test) else
                           bool(flag) if verdict == "valid" else (flag or "") != "")
            if not isinstance(spec, Msg) or spec.type.rsplit(".", 1)[-1] != GO_TYPES.get(message, message):
                raise Unsupported("input of another type")
            doc = {"case": name, "valid": valid, "warning": warning, "message": message}
            if test in TABLE_METADATA:
                meta = dict(TABLE_METADATA[test])
                if not isinstance(value, list):
                    meta.update({key: value.fields[f] for f, key in META_KEYS.items() if value.fields.get(f)})
                doc["metadata"] = meta
            docs.append({**doc, "spec": _json(spec)})
        except (Unsupported, StopIteration, IndexError, ValueError, KeyError):
            skipped += 1
    return docs, skipped


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 64
    source = pathlib.Path(argv[0]).read_text()
    out_dir = pathlib.Path("tests/istio_corpus/testdata/validation")
    out_dir.mkdir(parents=True, exist_ok=True)
    for test, (message, verdict) in TABLES.items():
        docs, skipped = port(source, test, message, verdict)
        header = (f"# Ported from istio/istio pkg/config/validation/validation_test.go {test} at commit {argv[1]}\n"
                  "# (inputs and Istio's verdicts, converted to YAML by scripts/port_istio_validation_tables.py)\n"
                  "# Copyright Istio Authors. Licensed under the Apache License, Version 2.0.\n")
        text = header + yaml.safe_dump_all(docs, sort_keys=False)
        (out_dir / f"{test}.yaml").write_text(text)
        print(f"{test}: {len(docs)} cases, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
