"""Validate one loaded resource the way Istio's admission webhook and `istioctl validate` do.

Two layers, both pure:
1. **Schema** (`control.istio.schema`, data): every field's type, required fields, oneofs, enum values,
   durations, ports, percentages, RE2 regexes, and unknown fields. An unknown field gets a "did you mean"
   for a misspelling (difflib over the message's fields) or for a misplacement (the same field name exists
   elsewhere in the resource's message tree, e.g. `consecutive5xxErrors` under
   `trafficPolicy.connectionPool.http` -> `trafficPolicy.outlierDetection.consecutive5xxErrors`; when
   several places have it, the one that also has most of the unknown field's siblings wins).
2. **Rules** (`RULES` below): Istio's semantic checks from `pkg/config/validation` (route/redirect
   conflicts, weights, retryOn tokens, TLS settings, ...), one small function per message.

Outcome per resource (`Checked`): hard errors (wrong type, invalid value) reject it; unknown fields are
dropped from the spec and reported (IST0106 error when `strict`, as `istioctl validate` does; a warning
otherwise, as the Kubernetes API server prunes them); deprecations are IST0002; fields this project does
not implement yet are PYM0004 warnings, by field.

Regexes: Istio uses RE2. Python's `re` is used as an approximation; RE2's missing features (lookaround,
backreferences, atomic groups, possessive quantifiers) are rejected explicitly.
"""
from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping

from control.istio import messages as msg
from control.istio import schema as S
from control.istio.cel_syntax import cel_syntax_error
from control.istio.messages import Finding, Level, finding
from control.istio.resources import Resource, freeze, get, thaw
from control.istio.route_reachability import unused_rules


@dataclass(frozen=True, slots=True)
class Checked:
    resource: Resource | None  # None: rejected by a hard error
    findings: tuple[Finding, ...]
    # what analysis still sees of a rejected resource: its well-typed fields (the invalid values left out).
    # Istio's analyzers run over a resource that fails schema validation too (IST0106 and the rest).
    rejected: Resource | None = None


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem at a field path (full path, e.g. "spec.http[0].timeout")."""

    path: str
    # "error" (rejects), "unknown", "warning", "info", "deprecated", "unsupported", and "unreachable" /
    # "ineffective" (Istio's webhook warnings that istioctl analyze reports as IST0130 / IST0131, with `args`)
    kind: str
    text: str
    args: tuple = ()


@dataclass(frozen=True, slots=True)
class Meta:
    """The config's metadata (Istio's config.Meta), for the checks that read it: a Sidecar's `./host` is in
    its namespace, a ServiceEntry's `istio.io/use-waypoint` label, the `istio.io/dry-run` annotation."""

    name: str = ""
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


_INVALID = object()  # a value that failed its type check


# --- scalar parsers ---------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)  # Go: ASCII digits only
_DURATION_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                     "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration (what gogo jsonpb uses for Istio durations): "1s", "0.5s", "100ms", "1h30m".
    Returns nanoseconds; raises ValueError."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0
    sign = -1 if s.startswith("-") else 1
    body = s.lstrip("+-")
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    pos, total = 0, Decimal(0)
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if not m:
            if re.fullmatch(r"\d+(\.\d*)?", body[pos:], re.ASCII):
                raise ValueError(f"missing unit in duration {text!r} (write e.g. \"{body}s\")")
            raise ValueError(f"invalid duration {text!r} (units are ns, us, ms, s, m, h; e.g. \"1.5s\", \"100ms\")")
        total += Decimal(m.group(1)) * _DURATION_UNIT_NS[m.group(2)]  # ASCII digits: always a Decimal
        pos = m.end()
    return sign * int(total)


def check_duration(value: Any, *, zero_ok: bool = False) -> str | None:
    """Istio's agent.ValidateDuration: a duration string, >= 1ms, to millisecond precision. With `zero_ok`,
    0 is accepted too (fields where 0s means "session" or "disabled"); negative durations never are."""
    if not isinstance(value, str):
        return f"must be a duration string such as \"5s\" or \"100ms\", not {_describe(value)}"
    try:
        ns = parse_duration(value)
    except ValueError as err:
        return str(err)
    if zero_ok and ns == 0:
        return None
    if ns < 0:
        return f"duration {value!r} must not be negative"
    if ns < 1_000_000:
        return f"duration {value!r} must be greater than 1ms"
    if ns % 1_000_000:
        return f"duration {value!r}: only durations to ms precision are supported"
    return None


_RE2_UNSUPPORTED = (
    (re.compile(r"\(\?<?[=!]"), "lookahead/lookbehind"),
    (re.compile(r"\\[1-9]|\(\?P="), "backreferences"),
    (re.compile(r"\(\?>"), "atomic groups"),
    (re.compile(r"[*+?}]\+"), "possessive quantifiers"),
)


def check_regex(value: Any) -> str | None:
    """An RE2 pattern: Python `re` must compile it and it must not use what RE2 lacks (an approximation)."""
    if not isinstance(value, str):
        return f"must be a regular expression string, not {_describe(value)}"
    unescaped = value.replace("\\\\", "_")  # an escaped backslash, as a plain character: `\\1` is no backreference
    for pattern, feature in _RE2_UNSUPPORTED:
        if pattern.search(unescaped):
            return f"regex {value!r} uses {feature}, which RE2 (Istio's regex engine) does not support"
    try:
        re.compile(value)
    except re.error as err:
        return f"error parsing regexp {value!r}: {err}; Istio uses RE2 style regex-based match"
    return None


_INT_RANGES = {"int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-2**63, 2**63 - 1),
               "uint64": (0, 2**64 - 1)}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _scalar(value: Any, typ: str) -> tuple[Any, str | None]:
    """Check one scalar against its type string; returns (clean value, error or None)."""
    if typ == "string":
        return (value, None) if isinstance(value, str) else (value, f"must be a string, not {_describe(value)}")
    if typ == "bool":
        return (value, None) if isinstance(value, bool) else (value, f"must be true or false, not {_describe(value)}")
    if typ in _INT_RANGES or typ == "port":
        lo, hi = (1, 65535) if typ == "port" else _INT_RANGES[typ]
        v = value
        if isinstance(v, str) and typ in ("int64", "uint64") and re.fullmatch(r"-?\d+", v):
            v = int(v)  # protobuf JSON writes 64-bit integers as strings
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            return value, f"must be an integer, not {_describe(value)}"
        if not lo <= v <= hi:
            if typ == "port":
                return value, f"port number {v} must be in the range 1..65535"
            return value, f"{v} is out of range for {typ} ({lo}..{hi})"
        return v, None
    if typ in ("double", "percent"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"must be a number, not {_describe(value)}"
        if typ == "percent" and not 0 <= value <= 100:
            return value, f"percentage {value} must be in the range 0..100"
        return value, None
    if typ == "duration":
        return value, check_duration(value)
    if typ == "duration0":
        return value, check_duration(value, zero_ok=True)
    if typ == "regex":
        return value, check_regex(value)
    if typ.startswith("enum:"):
        allowed = typ[5:].split("|")
        if isinstance(value, str) and value in allowed:
            return value, None
        close = difflib.get_close_matches(str(value).upper(), allowed, n=1, cutoff=0.6) if value is not None else []
        hint = f"; did you mean {close[0]}?" if close else ""
        return value, f"invalid value {value!r}; must be one of {', '.join(allowed)}{hint}"
    if typ in ("struct", "any"):
        if typ == "struct" and not isinstance(value, Mapping):
            return value, f"must be an object, not {_describe(value)}"
        return value, None
    raise KeyError(typ)  # a schema bug, not user input


# --- the schema walker ------------------------------------------------------------------------------------

def _base_type(typ: str) -> str:
    """A field's type without the `!` that marks it required."""
    return typ.removesuffix("!")


def _element_message(typ: str) -> str | None:
    """The message name a field type leads to (through [] and map:), or None for scalars."""
    t = _base_type(typ)
    while True:
        if t.startswith("[]"):
            t = t[2:]
        elif t.startswith("map:"):
            t = t[4:]
        else:
            break
    return t if t in S.MESSAGES else None


def _type_step(typ: str) -> str:
    """How a path goes through a field type: "[]" for repeated, "{}" for maps, "" for a message."""
    t = _base_type(typ)
    return "[]" if t.startswith("[]") else ".*" if t.startswith("map:") else ""


def _message_tree(root: str, max_depth: int = 6) -> Iterator[tuple[str, str]]:
    """(relative path, message) for every message reachable from `root`, breadth first, at most `max_depth`
    messages down (the schema has no cycles; the bound keeps one added later from looping)."""
    queue: list[tuple[str, str, int]] = [("", root, 0)]
    while queue:
        rel, name, depth = queue.pop(0)
        yield rel, name
        if depth >= max_depth:
            continue
        for field, typ in S.MESSAGES[name].items():
            if child := _element_message(typ):
                step = f"{field}{_type_step(typ)}"
                queue.append((f"{rel}.{step}" if rel else step, child, depth + 1))


def suggest_field(field: str, message: str, siblings: frozenset[str],
                  ancestors: list[tuple[str, str]]) -> str | None:
    """'did you mean' for an unknown field: a misplaced field elsewhere in the tree, else a misspelling."""
    best: tuple[int, int, int, str] | None = None
    for depth, (anc_path, anc_msg) in enumerate(reversed(ancestors)):
        for rel, name in _message_tree(anc_msg):
            if field not in S.MESSAGES[name]:
                continue
            where = ".".join(p for p in (anc_path, rel) if p)  # never the field's own place: it lacks the field
            score = len(siblings & S.MESSAGES[name].keys())
            key = (-score, depth, len(rel), where)
            if best is None or key < best:
                best = key
    if best is not None:
        where = best[3]
        where = where[len("spec."):] if where.startswith("spec.") else where
        return f"{where}.{field}" if where else field
    # compared lowercased: `MAXCONNECTIONS` and the snake_case `connect_timeout` are found too (lowered, a
    # snake_case name is its camelCase one but for the '_')
    lowered = {f.lower(): f for f in S.MESSAGES[message]}
    close = difflib.get_close_matches(field.lower(), list(lowered), cutoff=0.7)  # the closest first
    return lowered[close[0]] if close else None


class _Walker:
    """Walks a value against a message type, collecting issues and building the cleaned value."""

    def __init__(self, meta: Meta = Meta()) -> None:
        self.issues: list[Issue] = []
        self.meta = meta  # the config's metadata, for the rules that read it (`_WITH_META`)
        self.type_errors = 0  # values that failed their type: the rules above them do not run

    def add(self, path: str, kind: str, text: str, args: tuple = ()) -> None:
        self.issues.append(Issue(path, kind, text, args))

    def bad(self, path: str, text: str) -> None:
        """A value of the wrong type (or out of its type's range): Istio fails to unmarshal it, so no semantic
        rule ever sees it; ours do not either (they read the raw value and would misjudge or crash on it)."""
        self.type_errors += 1
        self.add(path, "error", text)

    def value(self, value: Any, typ: str, path: str, ancestors: list[tuple[str, str]]) -> Any:
        if typ.startswith("[]"):
            if not isinstance(value, (list, tuple)):
                self.bad(path, f"must be a list, not {_describe(value)}")
                return _INVALID
            out = []
            for i, item in enumerate(value):
                item_path = f"{path}[{i}]"
                if item is None:
                    self.bad(item_path, "list entries cannot be null")
                    continue
                out.append(self.value(item, typ[2:], item_path, ancestors))
            return out
        if typ.startswith("map:"):
            if not isinstance(value, Mapping):
                self.bad(path, f"must be an object (a map), not {_describe(value)}")
                return _INVALID
            return {str(k): (None if v is None and typ[4:] in S.MESSAGES else
                             self.value(v, typ[4:], f"{path}.{k}", ancestors))
                    for k, v in value.items()}
        if typ in S.MESSAGES:
            return self.message(value, typ, path, ancestors)
        clean, error = _scalar(value, typ)
        if error:
            self.bad(path, error)
            return _INVALID
        return clean

    def message(self, value: Any, name: str, path: str, ancestors: list[tuple[str, str]]) -> Any:
        if value is None:  # only a root (check_message(..., None)): null is "not set", so an empty message
            value = {}
        if not isinstance(value, Mapping):
            self.bad(path, f"must be an object ({name}), not {_describe(value)}")
            return _INVALID
        fields = S.MESSAGES[name]
        here = ancestors + [(path, name)]
        unknown = frozenset(k for k in value if str(k) not in fields)
        type_errors = self.type_errors
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)
            field_path = _join(path, key)
            if key not in fields:
                if (name, key) in S.OBSOLETE:
                    self.add(field_path, "deprecated", f"{key} is obsolete: {S.OBSOLETE[(name, key)]}; it is ignored")
                    continue
                if name in S.OPEN:
                    out[key] = item
                    continue
                hint = suggest_field(key, name, unknown - {key}, here)
                text = f'unknown field "{key}" in {name}'
                if hint:
                    text += f"; did you mean {hint}?"
                self.add(field_path, "unknown", text)
                continue
            typ = _base_type(fields[key])
            if item is None:  # protobuf JSON: null is "not set"
                continue
            cleaned = self.value(item, typ, field_path, here)
            if cleaned is _INVALID:
                continue
            out[key] = cleaned
            self._notes(name, key, item, field_path)
        for key, typ in fields.items():
            # a required message given as {} is set (Kubernetes: present; Istio's Go: not nil)
            if typ.endswith("!") and _is_unset(value.get(key)) and not (typ[:-1] in S.MESSAGES and value.get(key) == {}):
                self.add(_join(path, key), "error", f"{key} is required")
        for group in S.ONEOFS.get(name, ()):
            present = [f for f in group if not _is_unset(value.get(f))]
            if len(present) > 1:
                self.add(_join(path, present[1]), "error",
                         f"only one of {', '.join(group)} may be set (found {' and '.join(present)})")
        rule = RULES.get(name)
        if rule is not None and self.type_errors == type_errors:
            results = rule(value, self.meta) if name in _WITH_META else rule(value)
            for rel, kind, text, *args in results:
                self.add(_join(path, rel), kind, text, tuple(args))
        return out

    def _notes(self, message: str, field: str, value: Any, path: str) -> None:
        if (message, field) in S.DEPRECATED_FIELDS:
            self.add(path, "deprecated", f"{field} is deprecated: {S.DEPRECATED_FIELDS[(message, field)]}")
        if isinstance(value, str) and (message, field, value) in S.DEPRECATED_VALUES:
            self.add(path, "deprecated", S.DEPRECATED_VALUES[(message, field, value)])
        if (message, field) in S.UNSUPPORTED:
            self.add(path, "unsupported", f"{path.removeprefix('spec.')} ({S.UNSUPPORTED[(message, field)]})")


def _join(path: str, rel: str) -> str:
    return f"{path}.{rel}" if path and rel else path or rel


def _is_unset(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == () or value == {}


def _is_nil(value: Any) -> bool:
    """Go's `== nil` on an unmarshalled proto field: an empty message (`{}`) is set, an empty list is not."""
    return value is None or value == [] or value == ()


# --- Istio's semantic rules (pkg/config/validation), one function per message -----------------------------
# Each takes the raw message value and yields (relative path, kind, text).

RuleResult = Iterator[tuple[str, str, str]]
RULES: dict[str, Callable[..., RuleResult]] = {}
_WITH_META: set[str] = set()  # rules called with the config's metadata too (Istio's cfg.Meta)


def rule(name: str, *, with_meta: bool = False):
    def register(fn):
        if name in RULES:  # a second rule would silently replace the first
            raise ValueError(f"a rule for {name} is already registered ({RULES[name].__name__})")
        RULES[name] = fn
        if with_meta:
            _WITH_META.add(name)
        return fn
    return register


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _host_error(host: Any) -> str | None:
    """Istio's ValidateWildcardDomain (or an IP): labels of letters/digits/'-', an optional leading '*'."""
    if not isinstance(host, str) or not host:
        return "host must be a non-empty string"
    try:
        ipaddress.ip_network(host, strict=False)
        return None
    except ValueError:
        pass
    if host == "*":
        return None
    name = host[2:] if host.startswith("*.") else host[1:] if host.startswith("*") else host
    if len(host) > 255:
        return f"domain name {host!r} too long (max 255)"
    labels = name.split(".")
    if labels and labels[-1] == "":
        labels = labels[:-1]  # an FQDN's trailing dot
    for label in labels:
        if not _DNS_LABEL.match(label):
            return f"invalid host {host!r}: {label!r} is not a valid DNS label"
    return None


def _weights(routes: Any, key: str) -> RuleResult:
    if not isinstance(routes, (list, tuple)):
        return
    total = 0
    for i, dest in enumerate(routes):  # well-typed: rules only see a message whose fields passed their types
        weight = dest.get("weight") or 0
        if weight < 0:
            yield f"{key}[{i}].weight", "error", f"weight {weight} < 0"
        total += weight
    if len(routes) > 1 and total == 0:
        yield key, "error", "total destination weight = 0"
    elif len(routes) > 1 and total != 100:
        yield key, "info", (f"destination weights add up to {total}, not 100; Istio treats them as relative "
                            f"shares (each gets weight/{total})")


@rule("VirtualService")
def _virtual_service(vs: Mapping[str, Any]) -> RuleResult:
    hosts = vs.get("hosts") or ()
    gateways = vs.get("gateways") or ()
    if not hosts and gateways:
        yield "hosts", "error", "virtual service must have at least one host (a delegate VirtualService has no " \
                                "gateways)"
    if not any(vs.get(k) for k in ("http", "tcp", "tls")):
        yield "", "error", "http, tcp or tls must be provided in virtual service"
    bound_to_gateway = bool(gateways) and "mesh" not in gateways  # isGateway
    yield from _gateway_names(gateways)
    if not bound_to_gateway:
        yield from _jwt_claim_routes(vs, gateways)
    sni = any(get(match, "sniHosts") for tls in vs.get("tls") or ()  # isSniHost
              for match in (get(tls, "match") or ()))
    all_valid = True
    for i, host in enumerate(hosts):  # a []string (or unset: ())
        if host == "*" and not bound_to_gateway:
            all_valid = False
            yield f"hosts[{i}]", "error", "wildcard host * is not allowed for virtual services bound to the mesh gateway"
        elif host != "*" and (err := _vs_host_error(host, bound_to_gateway and sni)):
            all_valid = False
            yield f"hosts[{i}]", "error", err
    if all_valid:  # literal and wildcard duplicates (*.foo.com and *.com), as Istio's host.Name.Matches
        for i, a in enumerate(hosts):
            for b in hosts[i + 1:]:
                if isinstance(a, str) and isinstance(b, str) and _hosts_overlap(a, b):
                    yield f"hosts[{i}]", "error", f"duplicate hosts in virtual service: {a} & {b}"
    for i, tls in enumerate(vs.get("tls") or ()):
        for j, match in enumerate(tls.get("match") or () if isinstance(tls, Mapping) else ()):
            for k, sni_host in enumerate(match.get("sniHosts") or () if isinstance(match, Mapping) else ()):
                where = f"tls[{i}].match[{j}].sniHosts[{k}]"
                yield from _sni_host(sni_host, hosts, bound_to_gateway, where)
    for unused in unused_rules(vs):  # Istio's webhook warns about these; istioctl analyze says IST0130/IST0131
        if unused.reason:
            yield (unused.path, "unreachable", f"virtualService rule {unused.rule} not used ({unused.reason})",
                   unused.rule, unused.reason)
        else:
            yield (unused.path, "ineffective", f"virtualService rule {unused.rule} match {unused.match} is not "
                   f"used (duplicate/overlapping match in rule {unused.earlier})",
                   unused.rule, unused.match, unused.earlier)


def _hosts_overlap(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: equal, or a wildcard on either side covering the other."""
    if a.startswith("*") and b.startswith("*"):
        return a[1:].endswith(b[1:]) or b[1:].endswith(a[1:])
    if a.startswith("*"):
        return b.endswith(a[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b


def _host_subset(a: str, b: str) -> bool:
    """Istio's host.Name.SubsetOf: every name `a` matches, `b` matches too."""
    if b.startswith("*"):
        return a.endswith(b[1:]) if not a.startswith("*") else a[1:].endswith(b[1:])
    return a == b


_AUTO_SNI = re.compile(r"^outbound_\.\d+_\._\.[A-Za-z].*$")  # outbound_.<port>_._.<hostname>


def _vs_host_error(host: Any, sni_on_gateway: bool) -> str | None:
    """ValidateWildcardDomain, or for a gateway-bound VirtualService with SNI matches
    ValidateWildcardDomainForVirtualServiceBoundToGateway, which also takes `outbound_.<port>_._.<host>`."""
    if sni_on_gateway and isinstance(host, str) and host.startswith("outbound_"):
        return None if _AUTO_SNI.match(host) else f"domain name {host!r} invalid, should follow " \
                                                  "'outbound_.<port>_._.<hostname>' format"
    return _host_error(host)


def _sni_host(sni_host: Any, hosts: Any, bound_to_gateway: bool, where: str) -> RuleResult:
    """validateSniHost: a valid (wildcard) domain that is a subset of one of the VirtualService's hosts."""
    err = _vs_host_error(sni_host, bound_to_gateway)
    if err:
        yield where, "error", err
        return
    if isinstance(sni_host, str) and _is_ip(sni_host):
        yield where, "warning", f"using an IP address ({sni_host!r}) goes against SNI spec and most clients do not " \
                                "support this"
        return
    if not any(isinstance(h, str) and _host_subset(sni_host, h) for h in hosts or ()):
        yield where, "error", (f"SNI host {sni_host!r} is not a compatible subset of any of the virtual service "
                               f"hosts: [{', '.join(str(h) for h in hosts or ())}]")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _gateway_names(gateways: Any) -> RuleResult:
    """validateGatewayNames: `namespace/name` of two DNS labels (labels.IsDNS1123Label), or a name without a
    namespace (`mesh`, a legacy `name.namespace...` with a warning) that must be an FQDN (agent.ValidateFQDN).
    As in Istio, the first name without a namespace ends the check: the names after it are not validated."""
    for i, name in enumerate(gateways or ()):
        ns, slash, short = name.partition("/")
        if not slash:
            if "." in name:
                parts = name.split(".")
                yield f"gateways[{i}]", "warning", (f"using legacy gatewayName format {name!r}; prefer the "
                                                    f"<namespace>/<name> format: '{parts[1]}/{parts[0]}'")
            if err := fqdn_error(name):
                yield f"gateways[{i}]", "error", err
            return
        if not ns or not short:
            yield f"gateways[{i}]", "error", "config namespace and gateway name cannot be empty"
        if not _dns_label_ok(ns):
            yield f"gateways[{i}]", "error", f"invalid value for namespace: {ns!r}"
        if not _dns_label_ok(short):
            yield f"gateways[{i}]", "error", f"invalid value for gateway name: {short!r}"


def is_jwt_claim(header: str) -> bool:
    """jwt.ToRoutingClaim(...).Match: `@request.auth.claims.<name>` or `@request.auth.claims[<name>]`."""
    prefix = "@request.auth.claims"
    if not header.lower().startswith(prefix):
        return False
    rest = header[len(prefix):]
    return (rest.startswith(".") and len(rest) > 1) or (rest.startswith("[") and rest.endswith("]") and len(rest) > 2)


def _jwt_claim_routes(vs: Mapping[str, Any], gateways: Any) -> RuleResult:
    """JWT claim based routing needs a gateway (the claims come from its RequestAuthentication)."""
    for i, http in enumerate(vs.get("http") or ()):
        for j, match in enumerate(http.get("match") or ()):  # well-typed messages: rules run above no type error
            for field in ("headers", "withoutHeaders"):
                for key in match.get(field) or {}:
                    if is_jwt_claim(str(key)):
                        yield f"http[{i}].match[{j}].{field}", "error", (
                            f"JWT claim based routing (key: {key}) is only supported for gateway, found no "
                            f"gateways: [{' '.join(str(g) for g in gateways or ())}]")


@rule("HTTPRoute")
def _http_route(http: Mapping[str, Any]) -> RuleResult:
    has = {k for k in ("route", "redirect", "directResponse", "delegate", "fault", "rewrite") if http.get(k)}
    if "delegate" in has:
        for other in ("route", "redirect"):
            if other in has:
                yield other, "error", f"root HTTP route must not specify {other} together with delegate"
    elif "redirect" in has:
        for other in ("route", "fault", "rewrite", "directResponse"):
            if other in has:
                yield other, "error", f"HTTP route cannot contain both {other} and redirect"
    elif "directResponse" in has:
        for other in ("route", "fault", "rewrite"):
            if other in has:
                yield other, "error", f"HTTP route cannot contain both {other} and directResponse"
    elif "route" not in has:
        yield "", "error", "HTTP route, redirect or directResponse is required"
    yield from _weights(http.get("route"), "route")
    yield from _authority_rewrite(http)
    yield from _redirect_prefix_rewrite(http)


def _redirect_prefix_rewrite(http: Mapping[str, Any]) -> RuleResult:
    """validateHTTPRedirect: prefixRewrite needs prefix URI matches (uri with prefixRewrite: the HTTPRedirect rule)."""
    if not get(http, "redirect", "prefixRewrite"):
        return
    for i, match in enumerate(http.get("match") or ()):
        uri = get(match, "uri")
        if isinstance(uri, Mapping) and "prefix" not in uri:
            yield f"match[{i}].uri", "error", "redirect prefix_rewrite requires all URI matches to use prefix match type"


def _authority_rewrite(http: Mapping[str, Any]) -> RuleResult:
    """validateAuthorityRewrite: the authority is rewritten in one place only (rewrite.authority or a request
    header set/add of :authority / host)."""
    current = get(http, "rewrite", "authority") or ""
    for op in ("set", "add"):
        for key, value in (get(http, "headers", "request", op) or {}).items():
            if str(key).lower() not in (":authority", "host"):
                continue
            if current:
                yield f"headers.request.{op}", "error", (f"authority header cannot be set multiple times: have "
                                                        f"{current!r}, attempting to set {value!r}")
                return
            current = value



@rule("TCPRoute")
def _tcp_route(tcp: Mapping[str, Any]) -> RuleResult:
    if not tcp.get("route"):
        yield "route", "error", "TCP route is required"
    yield from _weights(tcp.get("route"), "route")


@rule("TLSRoute")
def _tls_route(tls: Mapping[str, Any]) -> RuleResult:
    if not tls.get("route"):
        yield "route", "error", "TLS route is required"
    yield from _weights(tls.get("route"), "route")


@rule("PortSelector")
def _port_selector(selector: Mapping[str, Any]) -> RuleResult:
    """validatePortSelector: a port selector set is a port number (unset is 0, out of range)."""
    if not selector.get("number"):
        yield "number", "error", "port number 0 must be in the range 1..65535"


@rule("Destination")
def _destination(dest: Mapping[str, Any]) -> RuleResult:
    host = dest.get("host")
    if host == "*":
        yield "host", "error", "invalid destination host *"
    elif host and (err := _host_error(host)):
        yield "host", "error", err
    subset = dest.get("subset")
    if isinstance(subset, str) and subset and not _DNS1123_LABEL.match(subset):
        yield "subset", "error", f"subset name is invalid: {subset}"


@rule("HTTPRetry")
def _http_retry(retry: Mapping[str, Any]) -> RuleResult:
    attempts = retry.get("attempts", 0) or 0
    if isinstance(attempts, int) and attempts < 0:
        yield "attempts", "error", "attempts cannot be negative"
    if attempts == 0 and (retry.get("perTryTimeout") is not None or retry.get("retryOn")
                          or retry.get("retryRemoteLocalities") is not None):
        yield "attempts", "error", "http retry policy configured when attempts are set to 0 (disabled)"
    retry_on = retry.get("retryOn")
    if isinstance(retry_on, str) and retry_on:
        for token in retry_on.split(","):
            if token.isdigit() and 100 <= int(token) <= 599:
                continue
            if token not in S.RETRY_ON:
                close = difflib.get_close_matches(token.strip(), sorted(S.RETRY_ON), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                yield "retryOn", "error", f"{token!r} is not a valid retryOn policy{hint}"


@rule("HTTPFaultInjection")
def _fault(fault: Mapping[str, Any]) -> RuleResult:
    if not fault.get("abort") and not fault.get("delay"):
        yield "", "error", "HTTP fault injection must have an abort and/or a delay"


@rule("FaultAbort")
def _abort(abort: Mapping[str, Any]) -> RuleResult:
    status = abort.get("httpStatus")
    if isinstance(status, int) and not isinstance(status, bool) and not 200 <= status <= 600:
        yield "httpStatus", "error", f"HTTP status {status} is not in range 200-599"
    grpc = abort.get("grpcStatus")
    if isinstance(grpc, str) and grpc and grpc not in S.GRPC_STATUSES:
        yield "grpcStatus", "error", f"gRPC status {grpc!r} is not supported (e.g. NOT_FOUND, UNAVAILABLE)"
    if abort.get("http2Error"):
        yield "http2Error", "error", "HTTP/2 abort fault injection not supported yet"
    if not any(abort.get(k) for k in ("httpStatus", "grpcStatus", "http2Error")):
        yield "", "warning", "abort configured, but error type not set"


@rule("FaultDelay")
def _delay(delay: Mapping[str, Any]) -> RuleResult:
    if delay.get("exponentialDelay"):
        yield "exponentialDelay", "error", "exponentialDelay not supported yet"


@rule("HTTPRedirect")
def _redirect(redirect: Mapping[str, Any]) -> RuleResult:
    if redirect.get("uri") and redirect.get("prefixRewrite"):
        yield "", "error", "redirect may only specify one of uri or prefix_rewrite"
    if not any(redirect.get(k) for k in ("uri", "prefixRewrite", "authority", "port", "derivePort", "scheme")):
        yield "", "error", "redirect must specify URI, authority, scheme, or port"
    code = redirect.get("redirectCode")
    if isinstance(code, int) and code and not 300 <= code <= 399:
        yield "redirectCode", "error", f"{code} is not a valid redirect code, must be 3xx"
    scheme = redirect.get("scheme")
    if scheme and scheme not in ("http", "https"):
        yield "scheme", "error", 'invalid redirect scheme, must be "http" or "https"'


@rule("HTTPRewrite")
def _rewrite(rewrite: Mapping[str, Any]) -> RuleResult:
    if not any(rewrite.get(k) for k in ("uri", "uriRegexRewrite", "authority")):
        yield "", "error", "rewrite must specify at least one of uri, uriRegexRewrite, or authority"


@rule("RegexRewrite")
def _regex_rewrite(rw: Mapping[str, Any]) -> RuleResult:
    if not rw.get("match") or not rw.get("rewrite"):
        yield "", "error", "uriRegexRewrite requires both rewrite and match fields to be specified"


@rule("HTTPDirectResponse")
def _direct_response(dr: Mapping[str, Any]) -> RuleResult:
    status = dr.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and not 200 <= status <= 600:
        yield "status", "error", f"HTTP status {status} is not in range 200-599"


# supportedCORSMethods (Go's net/http methods) and validHeaderNameRegex (RFC 7230 tchars)
_CORS_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"})
_TOKEN_HEADER = re.compile(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+$")


@rule("CorsPolicy")
def _cors(cors: Mapping[str, Any]) -> RuleResult:
    """validateCORSPolicy: known methods, header names that are HTTP tokens (or `*`), maxAge in seconds."""
    for i, method in enumerate(cors.get("allowMethods") or ()):
        if method not in _CORS_METHODS:
            yield f"allowMethods[{i}]", "error", f"{method!r} is not a supported HTTP method"
    for field in ("allowHeaders", "exposeHeaders"):
        for i, name in enumerate(cors.get(field) or ()):
            if name == "":
                yield f"{field}[{i}]", "error", "header name cannot be empty"
            elif isinstance(name, str) and name != "*" and not _TOKEN_HEADER.match(name):
                yield f"{field}[{i}]", "error", f"header name {name} is not a valid header name"
    max_age = cors.get("maxAge")
    if isinstance(max_age, str) and check_duration(max_age) is None and parse_duration(max_age) % 1_000_000_000:
        yield "maxAge", "error", "max_age duration is accurate only to seconds precision"


@rule("DestinationRule")
def _destination_rule(dr: Mapping[str, Any]) -> RuleResult:
    host = dr.get("host")
    if isinstance(host, str) and host and (err := _host_error(host)):
        yield "host", "error", err
    seen: set[str] = set()
    for i, subset in enumerate(dr.get("subsets") or ()):
        name = subset.get("name") if isinstance(subset, Mapping) else None
        if isinstance(name, str) and name:
            if name in seen:
                yield f"subsets[{i}].name", "error", f"duplicate subset names: {name}"
            seen.add(name)


@rule("Subset")
def _subset(subset: Mapping[str, Any]) -> RuleResult:
    name = subset.get("name")
    if isinstance(name, str) and name and not _DNS1123_LABEL.match(name):
        yield "name", "error", f"subset name is invalid: {name}"


_ENVOY_VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*(\(.*\))?(:\d+)?")


def header_value_error(value: str) -> str | None:
    """ValidateHTTPHeaderValue: no control characters, and every '%' either '%%' or around an Envoy variable
    (`%HOSTNAME%`, `%REQ(x-foo)%`); "abc%123" and "%START_TIME%%" are refused, as Envoy would."""
    if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
        return f"header value configuration {value!r} is invalid"
    i = 0
    while i < len(value):
        if value[i] != "%":
            i += 1
        elif value[i + 1:i + 2] == "%":
            i += 2
        else:
            end = value.find("%", i + 1)
            if end < 0 or not _ENVOY_VARIABLE.fullmatch(value[i + 1:end]):
                return f"header value configuration {value!r}: invalid or unescaped '%' (write %% for a literal)"
            i = end + 1
    return None


@rule("HeaderOperations")
def _header_operations(ops: Mapping[str, Any]) -> RuleResult:
    for op in ("set", "add"):
        for name, value in (ops.get(op) or {}).items():
            if name == "":
                yield op, "error", "header name cannot be empty"
            elif isinstance(value, str) and (err := header_value_error(value)):
                yield f"{op}.{name}", "error", err
    for i, name in enumerate(ops.get("remove") or ()):
        if name == "":
            yield f"remove[{i}]", "error", "header name cannot be empty"


@rule("HTTPMatchRequest")
def _http_match(match: Mapping[str, Any]) -> RuleResult:
    for name, value in (match.get("headers") or {}).items():
        if value is None:
            yield f"headers.{name}", "error", f"header match {name} cannot be null"


@rule("StringMatch")
def _string_match(sm: Mapping[str, Any]) -> RuleResult:
    if "prefix" in sm and sm["prefix"] == "":
        yield "prefix", "error", "prefix string match should not be empty"


@rule("PortTrafficPolicy")
def _port_traffic_policy(ptp: Mapping[str, Any]) -> RuleResult:
    """validatePortTrafficPolicies: a port, and at least one policy for it."""
    if _is_unset(ptp.get("port")):
        yield "port", "error", "portTrafficPolicy must have valid port"
    if all(_is_nil(ptp.get(k)) for k in ("outlierDetection", "connectionPool", "loadBalancer", "tls")):
        yield "", "error", "port traffic policy must have at least one field"


@rule("TrafficPolicy")
def _traffic_policy(tp: Mapping[str, Any]) -> RuleResult:
    if all(_is_nil(v) for v in tp.values()):
        yield "", "error", "traffic policy must have at least one field"


@rule("ConnectionPoolSettings")
def _connection_pool(cp: Mapping[str, Any]) -> RuleResult:
    if _is_nil(cp.get("tcp")) and _is_nil(cp.get("http")):
        yield "", "error", "connection pool must have at least one field (tcp or http)"


def _non_negative(fields: tuple[str, ...]) -> Callable[[Mapping[str, Any]], RuleResult]:
    def check(value: Mapping[str, Any]) -> RuleResult:
        for f in fields:
            v = value.get(f)
            if isinstance(v, int) and not isinstance(v, bool) and v < 0:
                yield f, "error", f"{f} must be non-negative"
    return check


RULES["TCPSettings"] = _non_negative(("maxConnections",))


@rule("OutlierDetection")
def _outlier(od: Mapping[str, Any]) -> RuleResult:
    yield from _non_negative(("consecutiveErrors",))(od)
    for i, code in enumerate(od.get("outlierDetectionHttpErrorCodes") or ()):
        if isinstance(code, int) and not 100 <= code <= 599:  # the CRD's minimum/maximum
            yield f"outlierDetectionHttpErrorCodes[{i}]", "error", f"{code} is not an HTTP status (100-599)"
    if od.get("consecutiveLocalOriginFailures") and not od.get("splitExternalLocalOriginErrors"):
        yield "consecutiveLocalOriginFailures", "error", (
            "consecutive local origin failures is specified, but split external local origin errors is set "
            "to false")


@rule("HTTPCookie")
def _http_cookie(cookie: Mapping[str, Any]) -> RuleResult:
    """validateLoadBalancer: cookie attribute names are unique."""
    seen: set[str] = set()
    for i, attr in enumerate(cookie.get("attributes") or ()):
        name = get(attr, "name")
        if isinstance(name, str) and name:
            if name in seen:
                yield f"attributes[{i}].name", "error", f"duplicate cookie attribute name: {name}"
            seen.add(name)


@rule("LoadBalancerSettings")
def _load_balancer(lb: Mapping[str, Any]) -> RuleResult:
    if lb.get("localityLbSetting") is not None and lb.get("zoneAwareLbSetting") is not None:  # even when empty
        yield "zoneAwareLbSetting", "error", "only one of localityLbSetting and zoneAwareLbSetting can be set"


@rule("MagLev")
def _maglev(maglev: Mapping[str, Any]) -> RuleResult:
    """validateLoadBalancer's maglev checks: a table size, below 5000011, and prime as Envoy's Primes::isPrime
    (which Istio copies) says. Istio runs the prime check on a size already refused as too large as well; here
    that second error is left out (trial division up to 2**32 would stall the validator)."""
    size = maglev.get("tableSize") or 0
    if isinstance(size, str):  # uint64: protobuf JSON may write it as a string (the schema checked its digits)
        size = int(size)
    if size == 0:
        yield "tableSize", "error", "tableSize must be set for maglev"
    if size >= 5000011:
        yield "tableSize", "error", "tableSize must be less than 5000011 for maglev"
    elif not _is_prime(size):
        yield "tableSize", "error", "tableSize must be a prime number for maglev"


def _is_prime(n: int) -> bool:
    """Envoy's Primes::isPrime, as Istio's isPrime copies it: 1, 2 and 3 are prime, 0 is not; odd trial
    division up to the square root."""
    if 0 < n < 4:
        return True
    if n % 2 == 0:
        return False
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


@rule("HTTPSettings")
def _http_settings(http: Mapping[str, Any]) -> RuleResult:
    yield from _non_negative(("http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection",
                              "maxRetries", "maxConcurrentStreams"))(http)
    if http.get("h2UpgradePolicy") == "UPGRADE" and http.get("useClientProtocol"):
        yield "useClientProtocol", "error", "use client protocol must not be true when H2UpgradePolicy is UPGRADE"


@rule("WarmupConfiguration")
def _warmup(warmup: Mapping[str, Any]) -> RuleResult:
    """validateWarmupConfiguration: aggression, when set, must be greater than 0."""
    aggression = warmup.get("aggression")
    if isinstance(aggression, (int, float)) and not isinstance(aggression, bool) and aggression <= 0:
        yield "aggression", "error", "aggression should be greater than 0"


@rule("ClientTLSSettings")
def _client_tls(tls: Mapping[str, Any]) -> RuleResult:
    mode = tls.get("mode")
    if tls.get("insecureSkipVerify") is True:  # agent.ValidateTLS: nothing to verify with, then
        named = ("caCertificates", "credentialName", "subjectAltNames") if mode == "SIMPLE" else \
            ("caCertificates", "subjectAltNames") if mode == "MUTUAL" else ()
        for f in named:
            if tls.get(f) is not None and tls.get(f) != "":
                yield f, "error", f"cannot specify {f} when insecureSkipVerify is set true"
    if mode == "MUTUAL" and not tls.get("credentialName"):
        if not tls.get("clientCertificate"):
            yield "clientCertificate", "error", "client certificate required for mutual tls"
        if not tls.get("privateKey"):
            yield "privateKey", "error", "private key required for mutual tls"
    if mode == "ISTIO_MUTUAL":
        for f in ("clientCertificate", "privateKey", "caCertificates", "credentialName", "subjectAltNames", "sni"):
            if tls.get(f):
                yield f, "error", f"cannot specify {f} with ISTIO_MUTUAL: Istio manages the certificates"


@rule("Gateway")
def _gateway(gw: Mapping[str, Any]) -> RuleResult:
    names: set[str] = set()
    port_names: set[str] = set()
    for i, server in enumerate(gw.get("servers") or ()):
        name = server.get("name") if isinstance(server, Mapping) else None
        if name:
            if name in names:
                yield f"servers[{i}].name", "error", f"server names must be unique: {name}"
            names.add(name)
        protocol = str(get(server, "port", "protocol") or "").upper()
        if get(server, "tls", "httpsRedirect") and protocol not in ("HTTP", "HTTP2", "GRPC", "GRPC-WEB", ""):
            yield f"servers[{i}].tls.httpsRedirect", "warning", "tls.httpsRedirect should only be used with http servers"
        port_name = get(server, "port", "name")
        if isinstance(port_name, str):
            if port_name in port_names:
                yield f"servers[{i}].port.name", "error", \
                    f"port names in servers must be unique: duplicate name {port_name}"
            port_names.add(port_name)


def _gateway_hosts(hosts: Any) -> RuleResult:
    """A gateway server's hosts: agent.ValidateNamespaceSlashWildcardHostname(host, isGateway=true)."""
    for i, host in enumerate(hosts or ()):
        for err in _slash_host_errors(host, gateway=True):
            yield f"hosts[{i}]", "error", err


@rule("Server")
def _server(server: Mapping[str, Any]) -> RuleResult:
    yield from _gateway_hosts(server.get("hosts"))
    port = server.get("port") if isinstance(server.get("port"), Mapping) else {}
    bind = server.get("bind")
    number = port.get("number")
    if isinstance(bind, str) and bind.startswith("unix://"):
        if number:
            yield "port.number", "error", "port number must be 0 for unix domain socket"
    elif isinstance(number, int) and not isinstance(number, bool) and not 1 <= number <= 65535:
        yield "port.number", "error", f"port number {number} must be in the range 1..65535"
    protocol = str(port.get("protocol") or "").upper()
    tls = server.get("tls") if isinstance(server.get("tls"), Mapping) else None
    if protocol in ("HTTPS", "TLS") and tls is None:
        yield "tls", "error", f"server must have TLS settings for HTTPS/TLS protocols (port {port.get('number')})"
    if protocol == "HTTP" and tls is not None and any(k != "httpsRedirect" and v for k, v in tls.items()):
        yield "tls", "error", "server cannot have TLS settings for plain text HTTP ports (only httpsRedirect)"


def _protocol(port: Mapping[str, Any]) -> RuleResult:
    protocol = port.get("protocol")
    if isinstance(protocol, str) and protocol and protocol.upper() not in S.PROTOCOLS:
        close = difflib.get_close_matches(protocol.upper(), sorted(S.PROTOCOLS), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        yield "protocol", "error", f"unrecognized protocol {protocol!r}{hint}"


RULES["GatewayPort"] = _protocol
RULES["SidecarPort"] = _protocol
RULES["ServicePort"] = _protocol


# security.ValidCipherSuites: what Envoy's BoringSSL takes by name
_CIPHER_SUITES = frozenset({
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA", "DES-CBC3-SHA"})


def _cipher_suite_ok(cs: str) -> bool:
    """security.IsValidCipherSuite: a known name, `ALL`, or an expression (`-X`, `+X`, `!X`) left to Envoy."""
    return cs in ("", "ALL") or not cs[0].isalnum() or cs in _CIPHER_SUITES


def _cipher_suites(suites: Any) -> RuleResult:
    names = [str(c) for c in suites or ()]
    invalid = sorted({c for c in names if not _cipher_suite_ok(c)})
    duplicate = sorted({c for i, c in enumerate(names) if _cipher_suite_ok(c) and c in names[:i]})
    if invalid:
        yield "cipherSuites", "warning", f"ignoring invalid cipher suites: {invalid}"
    if duplicate:
        yield "cipherSuites", "warning", f"ignoring duplicate cipher suites: {duplicate}"


@rule("ServerTLSSettings")
def _server_tls(tls: Mapping[str, Any]) -> RuleResult:
    """validateTLSOptions: ISTIO_MUTUAL takes no certificates; one certificate source (a certificate and key,
    credentialName, credentialNames or tlsCertificates); SIMPLE/MUTUAL/OPTIONAL_MUTUAL without a credential
    need each certificate with its key (MUTUAL a client CA bundle too); no CRL with SIMPLE or a credential."""
    mode = tls.get("mode") or "PASSTHROUGH"
    if tls.get("minProtocolVersion") in ("TLSV1_0", "TLSV1_1") and not tls.get("cipherSuites"):
        yield "minProtocolVersion", "warning", ("TLS version below TLSV1_2 require setting compatible ciphers as by "
                                                "default they no longer include compatible ciphers.")
    yield from _cipher_suites(tls.get("cipherSuites"))
    if mode == "ISTIO_MUTUAL":
        for f in ("serverCertificate", "privateKey", "caCertificates", "tlsCertificates", "credentialName",
                  "credentialNames"):
            if tls.get(f):
                yield f, "error", f"ISTIO_MUTUAL TLS cannot have associated {f}"
        return
    certificates = tls.get("tlsCertificates") or []
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") and any(tls.get(f) for f in (
            "caCrl", "serverCertificate", "privateKey", "caCertificates", "tlsCertificates", "credentialName",
            "credentialNames")):
        yield "", "warning", f"{mode} mode does not use certificates, they will be ignored"
    sources = sum((bool(tls.get("serverCertificate") and tls.get("privateKey")), bool(tls.get("credentialName")),
                   bool(tls.get("credentialNames")), bool(certificates)))
    if sources > 1:
        yield "", "error", ("only one of credential_name, credential_names, server_certificate/private_key, "
                            "tls_certificates should be specified")
    terminates = mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")
    if terminates and (tls.get("credentialName") or tls.get("credentialNames")):
        return  # the credential comes from a Secret: nothing else is required
    if terminates:
        prefix = "SIMPLE TLS" if mode == "SIMPLE" else "MUTUAL TLS"
        if mode != "SIMPLE" and not tls.get("caCertificates"):
            yield "caCertificates", "error", f"{prefix} requires a client CA bundle"
        if len(certificates) > 2:
            yield "tlsCertificates", "warning", f"{prefix} can support up to 2 server certificates"
        pairs = [(f"tlsCertificates[{i}].", c if isinstance(c, Mapping) else {}) for i, c in enumerate(certificates)] \
            or [("", tls)]
        for at, cert in pairs:
            if not cert.get("serverCertificate"):
                yield f"{at}serverCertificate", "error", f"{prefix} requires a server certificate"
            if not cert.get("privateKey"):
                yield f"{at}privateKey", "error", f"{prefix} requires a private key"
    if tls.get("caCrl"):
        if tls.get("credentialName"):
            yield "caCrl", "error", "CRL is not supported with credentialName. CRL has to be specified in the credential"
        if mode == "SIMPLE":
            yield "caCrl", "error", "CRL is not supported with SIMPLE TLS"


@rule("ServiceEntry", with_meta=True)
def _service_entry(se: Mapping[str, Any], meta: Meta) -> RuleResult:
    resolution = se.get("resolution") or "NONE"
    hosts = se.get("hosts") or ()
    for i, host in enumerate(hosts):
        if host == "*":
            yield f"hosts[{i}]", "error", "invalid host *"
        elif isinstance(host, str) and (err := _host_error(host)):
            yield f"hosts[{i}]", "error", err
        elif isinstance(host, str) and host.startswith("*") and resolution in ("DNS", "DNS_ROUND_ROBIN") \
                and not se.get("endpoints"):
            yield f"hosts[{i}]", "error", f"wildcard host {host} cannot be resolved with {resolution} resolution " \
                                          f"without endpoints"
    if resolution not in ("NONE", "STATIC") and any("/" in str(a) for a in se.get("addresses") or ()):
        yield "addresses", "error", "CIDR addresses are allowed only for NONE/STATIC resolution types"
    endpoints = se.get("endpoints") or ()
    if resolution == "NONE" and endpoints:
        yield "endpoints", "error", "no endpoints should be provided for resolution type none"
    if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
        yield "endpoints", "error", "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN"
    yield from _service_entry_endpoints(se, resolution, endpoints)
    yield from _service_entry_warnings(se, resolution)
    if resolution == "DYNAMIC_DNS":
        yield from _dynamic_dns(se, endpoints)
        if se.get("location") == "MESH_INTERNAL" and _uses_waypoint(meta):
            yield "location", "error", ("location MESH_INTERNAL with resolution type DYNAMIC_DNS is not supported "
                                        "when using waypoints")
    numbers: set[int] = set()
    names: set[str] = set()
    for i, port in enumerate(se.get("ports") or ()):
        number, name = port.get("number"), port.get("name")
        if number in numbers:
            yield f"ports[{i}].number", "error", f"service entry port {number} already defined"
        if name in names:
            yield f"ports[{i}].name", "error", f"service entry port name {name} already defined"
        numbers.add(number)
        names.add(name)


_PORT_NAME = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")


def _service_entry_endpoints(se: Mapping[str, Any], resolution: str, endpoints: Any) -> RuleResult:
    """ValidateServiceEntry's endpoint checks: STATIC endpoints are IPs or unix sockets (a unix one with exactly
    one service port), DNS ones IPs or FQDNs; an endpoint's port names are service port names."""
    if resolution not in ("STATIC", "DNS", "DNS_ROUND_ROBIN"):
        return
    port_names = {get(p, "name") for p in se.get("ports") or ()}
    for i, ep in enumerate(endpoints):
        address = get(ep, "address")
        where = f"endpoints[{i}]"
        if isinstance(address, str) and address:
            if resolution == "STATIC":
                if address.startswith("unix://"):
                    if len(port_names) != 1:
                        yield f"{where}.address", "error", "exactly 1 service port required for unix endpoints"
                elif not _is_ip(address):
                    yield f"{where}.address", "error", f"endpoint address {address!r} is not a valid IP address"
            elif address.startswith("*") or _host_error(address) or "/" in address:  # _host_error takes IPs (and CIDRs)
                yield f"{where}.address", "error", f"endpoint address {address!r} is not a valid FQDN or an IP address"
        for name in (get(ep, "ports") or {}):
            if name not in port_names:
                yield f"{where}.ports", "error", f"endpoint port {name} is not defined by the service entry"


_TCP_PROTOCOLS = ("TCP", "HTTPS", "TLS", "MONGO", "REDIS", "MYSQL")  # protocol.Instance.IsTCP()


def _service_entry_warnings(se: Mapping[str, Any], resolution: str) -> RuleResult:
    """The warnings ValidateServiceEntry gives (the entry is accepted)."""
    selector = se.get("workloadSelector")
    labels = get(selector, "labels") or {}
    if any(k == "" or "*" in str(k) or "*" in str(v) for k, v in labels.items()):
        return  # ValidateAlphaWorkloadSelector's error ends the validation before any warning
    if selector is not None and not labels:
        yield "workloadSelector", "warning", "service entry: workload selector specified without labels, will be " \
                                             "applied to all services in namespace"
    if selector is not None and resolution == "NONE":
        yield "workloadSelector", "warning", "workloadSelector should not be set when resolution mode is NONE"
    if resolution != "DYNAMIC_DNS":
        for i, host in enumerate(se.get("hosts") or ()):
            if isinstance(host, str) and "*" in host and host != "*" and not host.startswith("*."):
                yield f"hosts[{i}]", "warning", f"partial wildcard {host!r} not allowed"
    ports = [p for p in se.get("ports") or () if isinstance(p, Mapping)]
    # istiod auto-allocates addresses (ENABLE_IP_AUTOALLOCATE, on by default) except for resolution NONE
    if resolution == "NONE" and not se.get("addresses") and any(p.get("protocol") in (None, "", "TCP") for p in ports):
        yield "addresses", "warning", "addresses are required for ports serving TCP (or unset) protocol when IP " \
                                      "Autoallocation is not enabled"
    if resolution in ("DNS", "DNS_ROUND_ROBIN") and se.get("addresses") and len(se.get("hosts") or ()) > 1 \
            and any(str(p.get("protocol") or "").upper() in _TCP_PROTOCOLS for p in ports):
        yield "hosts", "warning", "service entry can not have more than one host specified simultaneously with " \
                                  "address and tcp port"


def _uses_waypoint(meta: Meta) -> bool:
    """usesWaypoint: the `istio.io/use-waypoint` label names a waypoint (set, not "none")."""
    value = str(meta.labels.get("istio.io/use-waypoint", ""))
    return value != "" and value.lower() != "none"


def _dynamic_dns(se: Mapping[str, Any], endpoints: Any) -> RuleResult:
    """ValidateServiceEntry for DYNAMIC_DNS: wildcard hosts only, no addresses or endpoints, HTTP-ish ports."""
    for i, host in enumerate(se.get("hosts") or ()):
        if isinstance(host, str) and not host.startswith("*"):
            yield f"hosts[{i}]", "error", "host must be wildcarded for resolution mode DYNAMIC_DNS"
    if se.get("addresses"):
        yield "addresses", "error", "addresses cannot be set for resolution type DYNAMIC_DNS"
    if endpoints:
        yield "endpoints", "error", "endpoints cannot be set for resolution type DYNAMIC_DNS"
    for i, port in enumerate(se.get("ports") or ()):
        if str(get(port, "protocol") or "").upper() not in ("HTTP", "TLS", "GRPC", "HTTP2"):
            yield f"ports[{i}].protocol", "error", \
                "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS"


@rule("WorkloadEntry")
def _workload_entry(we: Mapping[str, Any]) -> RuleResult:
    """The WorkloadEntry CRD's rules (x-kubernetes-validations) and ValidateWorkloadEntry's UDS checks; an
    address is an IP, a DNS name (no port) or a unix:// socket."""
    address = we.get("address")
    if not address and not we.get("network"):
        yield "address", "error", "address is required"
    elif not address:
        yield "address", "warning", f"address is unset with network {we.get('network')!r}"
    if isinstance(address, str) and address and not address.startswith("unix://") and not _is_ip(address) \
            and _host_error(address):
        yield "address", "error", f"invalid address {address!r}: not an IP, DNS name or unix:// socket"
    if isinstance(address, str) and address.startswith("unix://"):
        if address[7:8] not in ("/", "@"):
            yield "address", "error", "UDS must be an absolute path or abstract socket"
        elif address.endswith("/"):
            yield "address", "error", "UDS may not be a dir"
        if we.get("ports"):
            yield "ports", "error", "UDS may not include ports"
    for name in (we.get("ports") or {}):
        if len(str(name)) >= 63 or not _PORT_NAME.match(str(name)):
            yield "ports", "error", f"invalid port name {name!r}: letters, digits and '-' (not at either end)"


@rule("WorkloadGroupTemplate")
def _workload_group_template(template: Mapping[str, Any]) -> RuleResult:
    """The WorkloadGroup CRD's template rule: a unix socket address takes no ports."""
    if str(template.get("address") or "").startswith("unix://") and template.get("ports"):
        yield "ports", "error", "UDS may not include ports"


# labels.IsDNS1123Label / IsWildcardDNS1123Label (pkg/config/labels): letters of either case, at most 63
_ISTIO_DNS_LABEL = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_ISTIO_WILDCARD_LABEL = re.compile(r"^(\*|(\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)$")


def _dns_label_ok(label: str, pattern: re.Pattern = _ISTIO_DNS_LABEL) -> bool:
    return len(label) <= 63 and bool(pattern.match(label))


def _dns1123_labels_error(domain: str) -> str | None:
    """agent.ValidateDNS1123Labels: every label a DNS label (a trailing dot allowed), the last not a number."""
    parts = domain.split(".")
    if re.fullmatch(r"[+-]?\d+", parts[-1]):
        return f"domain name {domain!r} invalid (top level domain {parts[-1]!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None
        if not _dns_label_ok(label):
            return f"domain name {domain!r} invalid (label {label!r} invalid)"
    return None


def _domain_preconditions(domain: str) -> str | None:
    if len(domain) > 255:
        return f"domain name {domain!r} too long (max 255)"
    return "empty domain name not allowed" if not domain else None


def fqdn_error(fqdn: str) -> str | None:
    """agent.ValidateFQDN."""
    return _domain_preconditions(fqdn) or _dns1123_labels_error(fqdn)


def wildcard_domain_error(domain: str) -> str | None:
    """agent.ValidateWildcardDomain: an FQDN whose first label may be `*`, `*x` or `*-x` (no IPs)."""
    if err := _domain_preconditions(domain):
        return err
    first, dot, rest = domain.partition(".")
    if not _dns_label_ok(first, _ISTIO_WILDCARD_LABEL):
        return f"domain name {domain!r} invalid (label {first!r} invalid)"
    return _dns1123_labels_error(rest) if dot else None


def _slash_host_errors(host: str, gateway: bool) -> Iterator[str]:
    """agent.ValidateNamespaceSlashWildcardHostname: `namespace/dnsName`, the namespace `*`, `.` or a DNS label
    (a sidecar's also `~`-prefixed, an exclusion); then validateSidecarOrGatewayHostnamePart on the name: `*` or
    an FQDN, no partial wildcard. A gateway's host may leave out the namespace (the old style) and may be an IP."""
    ns, slash, name = host.partition("/")
    if not slash:
        if not gateway:
            yield "host must be of form namespace/dnsName"
            return
        name = host  # the old style
    else:
        if not ns or not name:
            yield "config namespace and dnsName in host entry cannot be empty"
        bare = ns if gateway else ns.removeprefix("~")  # a gateway's namespace may not be empty, a sidecar's may
        if (bare or gateway) and bare not in ("*", ".") and not _dns_label_ok(bare):
            yield f"invalid namespace value {ns!r} in {'gateway' if gateway else 'sidecar'}"
    if name != "*" and "." not in name:  # an IPv6 address without a dot too, as in Istio
        yield "short names (non FQDN) are not allowed"
    if (err := wildcard_domain_error(name)) and not (gateway and _is_ip(name)):
        yield err
    if "*" in name and len(name) != 1 and not name.startswith("*."):
        yield f"partial wildcard {name!r} not allowed"


def _egress_hosts(hosts: Any, namespace: str, where: str) -> RuleResult:
    """ValidateSidecar's egress hosts: each well formed; a host repeated (or covered by `ns/*`) in its
    namespace, or `*/*` next to other hosts, is a warning. `.` is the config's namespace."""
    by_ns: dict[str, set[str]] = {}
    for i, host in enumerate(hosts or ()):  # a []string: rules do not run above a type error
        ns, slash, name = host.partition("/")
        if slash and not ns.startswith("~"):
            seen = by_ns.setdefault(namespace if ns == "." else ns, set())
            if (name != "*" and (name in seen or "*" in seen)) or (name == "*" and seen):
                yield f"{where}.hosts[{i}]", "warning", f"duplicated egress host: {host}"
            seen.add(name)
        for err in _slash_host_errors(host, gateway=False):
            yield f"{where}.hosts[{i}]", "error", err
    if "*" in by_ns.get("*", ()) and len(by_ns) != 1:
        yield f"{where}.hosts", "warning", "`*/*` host select all resources, no other hosts can be added"


def _number(value: Any) -> int:
    """An integer field's raw value, 0 when unset. Rules see the raw spec, where the schema has accepted an
    integral float (`80.0`) as an integer too; booleans and other types never get here (a type error)."""
    return 0 if value is None else int(value)


def _sidecar_port(port: Mapping[str, Any], bind: Any, where: str, uds: bool = False) -> RuleResult:
    """The port checks shared by ingress and egress listeners (validateSidecar*PortAndBind): an optional
    name that is a DNS label, targetPort unused, and but for a unix socket egress listener (`uds`) a port in
    1..65535 and a `bind` that is an IP address."""
    name = port.get("name")
    if isinstance(name, str) and name and not _dns_label_ok(name):
        yield f"{where}.port.name", "error", f"invalid port name: {name}"
    if _number(port.get("targetPort")) > 0:
        yield f"{where}.port.targetPort", "error", "targetPort has no impact on Sidecars"
    number = _number(port.get("number"))
    if not uds:
        if not 1 <= number <= 65535:
            yield f"{where}.port.number", "error", f"port number {number} must be in the range 1..65535"
        if isinstance(bind, str) and bind and not _is_ip(bind):
            yield f"{where}.bind", "error", f"{bind} is not a valid IP"


def _unix_address_error(address: str) -> str | None:
    """ValidateUnixAddress: an abstract socket (`@name`) or an absolute path to a file."""
    if not address:
        return "unix address must not be empty"
    if address.startswith("@"):
        return None
    if not address.startswith("/") or address.endswith("/"):
        return f"{address} is not an absolute path to a file"
    return None


def _split_host_port(address: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort, for `host:port` and `[ipv6]:port` (None: not of that form)."""
    if address.startswith("["):
        host, close, rest = address[1:].partition("]")
        return (host, rest[1:]) if close and rest.startswith(":") and ":" not in rest[1:] else None
    host, colon, port = address.rpartition(":")
    return (host, port) if colon and ":" not in host else None


def _default_endpoint(endpoint: str, where: str) -> RuleResult:
    """An ingress listener's defaultEndpoint: `127.0.0.1:<port>`, `0.0.0.0:<port>`, `[::1]:<port>`,
    `[::]:<port>`, `:<port>` or `unix://<path>`."""
    if endpoint.startswith("unix://"):
        if err := _unix_address_error(endpoint[len("unix://"):]):
            yield where, "error", err
        return
    split = _split_host_port(endpoint)
    if split is None:
        yield where, "error", f"address {endpoint}: not of the form host:port"
        split = ("", "")
    host, port = split
    if host not in ("", "127.0.0.1", "0.0.0.0", "::1", "::"):
        yield where, "error", ("sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,"
                               "[::1]:port,[::]:port,unix://filepath or unset")
    if not re.fullmatch(r"[+-]?\d+", port):
        yield where, "error", f"sidecar: defaultEndpoint port ({port}) is not a number"
    elif not 1 <= int(port) <= 65535:
        yield where, "error", f"port number {int(port)} must be in the range 1..65535"


_HTTP_PROTOCOLS = ("HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB")  # protocol.Instance.IsHTTP()


def _ingress_tls(tls: Mapping[str, Any], protocol: str, where: str) -> RuleResult:
    """ValidateSidecar on `ingress[].tls`: no SANs, redirect, credentials (the sidecar's own certificate is
    files), nor Istio's own modes; only on HTTPS/TLS ports. The rest is validateTLSOptions (ServerTLSSettings)."""
    for field, text in (("subjectAltNames", "subjectAltNames is not supported in ingress tls"),
                        ("httpsRedirect", "httpsRedirect is not supported"),
                        ("credentialName", "credentialName is not currently supported"),
                        ("credentialNames", "credentialNames is not currently supported"),
                        ("tlsCertificates", "tls_certificates is not currently supported")):
        if not _is_unset(tls.get(field)) and tls.get(field) is not False:
            yield f"{where}.{field}", "error", f"sidecar: {text}"
    mode = tls.get("mode")
    if mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
        yield f"{where}.mode", "error", f"configuration is invalid: cannot set mode to {mode} in sidecar ingress tls"
    if protocol not in ("HTTPS", "TLS"):
        yield where, "error", "server cannot have TLS settings for non HTTPS/TLS ports"


def _sidecar_ingress(listeners: list, where: str = "ingress") -> RuleResult:
    numbers: set[int] = set()
    for i, lis in enumerate(listeners):
        port = lis.get("port")  # a listener is a well-typed message: rules do not run above a type error
        if not isinstance(port, Mapping):
            continue  # the schema reports the missing port
        at = f"{where}[{i}]"
        yield from _sidecar_port(port, lis.get("bind"), at)
        number = _number(port.get("number"))
        if number in numbers:
            yield f"{at}.port.number", "error", "sidecar: ports on IP bound listeners must be unique"
        numbers.add(number)
        if isinstance(lis.get("defaultEndpoint"), str) and lis["defaultEndpoint"]:
            yield from _default_endpoint(lis["defaultEndpoint"], f"{at}.defaultEndpoint")
        protocol = str(port.get("protocol") or "").upper()
        if isinstance(lis.get("tls"), Mapping):
            yield from _ingress_tls(lis["tls"], protocol, f"{at}.tls")
        pool = lis.get("connectionPool")
        if isinstance(pool, Mapping) and pool.get("http") and protocol not in _HTTP_PROTOCOLS:
            yield f"{at}.connectionPool.http", "warning", (
                f"sidecar: HTTP connection pool settings are configured for port {number} ({json.dumps(str(port.get('name') or ''))}) "
                f"but its protocol is not HTTP ({port.get('protocol') or ''}); only TCP settings will apply")


def _sidecar_egress(listeners: list, namespace: str, where: str = "egress") -> RuleResult:
    numbers: set[int] = set()
    sockets: set[str] = set()
    for i, lis in enumerate(listeners):
        at = f"{where}[{i}]"  # a listener is a well-typed message: rules do not run above a type error
        port = lis.get("port")
        if not isinstance(port, Mapping):  # the one catch-all listener, last
            # (Istio's "egress can have only one listener with empty port" can never fire: a catch-all is only
            # counted at the last index, so no listener comes after it)
            if i != len(listeners) - 1:
                yield at, "error", "sidecar: the egress listener with empty port should be the last listener in the list"
        else:
            bind = lis.get("bind")
            number = _number(port.get("number"))
            yield from _sidecar_port(port, bind, at, uds=number == 0)
            if number == 0:  # a unix domain socket listener
                if not (isinstance(bind, str) and bind.startswith("unix://")):
                    yield f"{at}.bind", "error", "sidecar: ports with 0 value must have a unix domain socket bind address"
                elif err := _unix_address_error(bind[len("unix://"):]):
                    yield f"{at}.bind", "error", err
                if lis.get("captureMode") not in (None, "DEFAULT", "NONE"):
                    yield f"{at}.captureMode", "error", \
                        "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners"
                if bind in sockets:
                    yield f"{at}.bind", "error", "sidecar: unix domain socket values for listeners must be unique"
                sockets.add(str(bind))
            else:
                if number in numbers:
                    yield f"{at}.port.number", "error", "sidecar: ports on IP bound listeners must be unique"
                numbers.add(number)
        yield from _egress_hosts(lis.get("hosts"), namespace, at)


def _outbound_traffic_policy(otp: Mapping[str, Any], where: str = "outboundTrafficPolicy") -> RuleResult:
    """validateSidecarOutboundTrafficPolicy: an egressProxy only with ALLOW_ANY, an FQDN host, and a port."""
    proxy = otp.get("egressProxy")
    if not isinstance(proxy, Mapping):
        return
    if otp.get("mode") != "ALLOW_ANY":
        yield f"{where}.egressProxy", "error", \
            "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode"
        return
    host = proxy.get("host")
    # the Destination rule already names a host that is no DNS name: ValidateFQDN adds only "no wildcard"
    if isinstance(host, str) and not _host_error(host) and (err := fqdn_error(host)):
        yield f"{where}.egressProxy.host", "error", err
    if not isinstance(proxy.get("port"), Mapping):
        yield f"{where}.egressProxy.port", "error", "sidecar: egress_proxy port must be non-nil"


@rule("Sidecar", with_meta=True)
def _sidecar(sc: Mapping[str, Any], meta: Meta) -> RuleResult:
    """ValidateSidecar: some configuration; unique ports; egress host forms; the catch-all egress listener
    last; UDS egress listeners; ingress default endpoints and TLS; the egress proxy."""
    selector = sc.get("workloadSelector")
    if isinstance(selector, Mapping) and not selector.get("labels"):
        yield "workloadSelector", "warning", ("sidecar: workload selector specified without labels, will be "
                                              "applied to all services in namespace")
    if not sc.get("egress") and not sc.get("ingress") and sc.get("outboundTrafficPolicy") is None \
            and sc.get("inboundConnectionPool") is None:
        yield "", "error", "sidecar: empty configuration provided"
        return
    if isinstance(sc.get("ingress"), list):
        yield from _sidecar_ingress(sc["ingress"])
    if isinstance(sc.get("egress"), list):
        yield from _sidecar_egress(sc["egress"], meta.namespace)
    if isinstance(sc.get("outboundTrafficPolicy"), Mapping):
        yield from _outbound_traffic_policy(sc["outboundTrafficPolicy"])


@rule("NetworkingWorkloadSelector")
def _networking_workload_selector(selector: Mapping[str, Any]) -> RuleResult:
    labels = selector.get("labels")
    for key, value in labels.items() if isinstance(labels, Mapping) else ():
        if not key:
            yield "labels", "error", f"empty key is not supported in selector: \"={value}\""
        elif "*" in str(key) or "*" in str(value):
            yield f"labels.{key}", "error", f"wildcard is not supported in selector: \"{key}={value}\""


@rule("PeerAuthentication")
def _peer_authentication(pa: Mapping[str, Any]) -> RuleResult:
    port_level = pa.get("portLevelMtls")
    if port_level is not None:
        selector = pa.get("selector") or {}
        if not (isinstance(selector, Mapping) and selector.get("matchLabels")):
            yield "portLevelMtls", "error", "portLevelMtls requires selector"
        if not port_level:  # a map (rules do not run above a type error)
            yield "portLevelMtls", "error", "port level mtls must have at least one entry"
        for port in port_level:
            if not (str(port).isdigit() and 1 <= int(port) <= 65535):
                yield f"portLevelMtls.{port}", "error", f"port {port!r} must be a number in 1..65535"


@rule("AuthorizationPolicy")
def _authorization_policy(ap: Mapping[str, Any]) -> RuleResult:
    """ValidateAuthorizationPolicy: what CUSTOM and DENY need, where `from`/`to` may not be empty, and the
    targetRefs' kinds."""
    yield from _target_ref_kinds(ap)
    action = ap.get("action") or "ALLOW"
    has_rules = ap.get("rules") is not None
    if action in ("CUSTOM", "DENY") and not has_rules:
        yield "rules", "error", (f"{action} action without `rules` is meaningless as it will never be triggered, "
                                 "add an empty rule `{}` if you want it be triggered for every request")
    elif action == "CUSTOM" and not get(ap, "provider", "name"):
        yield "provider", "error", "`provider.name` must not be empty"
    if action != "CUSTOM" and ap.get("provider") is not None:
        yield "provider", "error", f"`provider` must not be with non CUSTOM action, found {action}"
    for i, rule in enumerate(ap.get("rules") or ()):
        if action == "CUSTOM":
            yield from _custom_rule(rule, f"rules[{i}]")
        for field, inner in (("from", "source"), ("to", "operation")):
            entries = rule.get(field)
            if entries is not None and len(entries) == 0:
                yield f"rules[{i}].{field}", "error", f"`{field}` must not be empty, found at rule {i}"
            for j, entry in enumerate(entries or ()):
                value = get(entry, inner)
                if value is None:
                    yield f"rules[{i}].{field}[{j}]", "error", f"`{field}.{inner}` must not be nil, found at rule {i}"
                elif isinstance(value, Mapping) and not any(value.get(k) for k in value):
                    yield f"rules[{i}].{field}[{j}].{inner}", "error", \
                        f"`{field}.{inner}` must not be empty, found at rule {i}"
        if action == "DENY" and _http_only_deny(rule):
            yield f"rules[{i}]", "warning", ("configured AuthorizationPolicy will deny all traffic to TCP ports under "
                                             "its scope due to the use of only HTTP attributes in a DENY rule; it is "
                                             "recommended to explicitly specify the port")


# Source / Operation fields a TCP connection has (the rest are HTTP-only attributes)
_TCP_SOURCE = ("principals", "notPrincipals", "ipBlocks", "notIpBlocks", "namespaces", "notNamespaces",
               "remoteIpBlocks", "notRemoteIpBlocks", "serviceAccounts", "notServiceAccounts")


def _http_only_deny(rule: Mapping[str, Any]) -> bool:
    """ValidateAuthorizationPolicy's warning: a DENY rule whose `from` has only HTTP attributes (and no `to`),
    or whose `to` names no port, denies all TCP traffic under its scope."""
    sources = [get(f, "source") for f in rule.get("from") or ()]
    sources = [src for src in sources if isinstance(src, Mapping)]
    operations = [get(t, "operation") for t in rule.get("to") or ()]
    operations = [op for op in operations if isinstance(op, Mapping)]
    tcp_from = any(src.get(k) is not None for src in sources for k in _TCP_SOURCE)
    tcp_to = any(op.get(k) is not None for op in operations for k in ("ports", "notPorts"))
    return bool((sources and not operations and not tcp_from) or (operations and not tcp_to))


_CUSTOM_UNSUPPORTED_SOURCE = ("namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts", "trustDomains",
                              "notTrustDomains", "principals", "notPrincipals", "requestPrincipals",
                              "notRequestPrincipals")
_CUSTOM_UNSUPPORTED_KEYS = ("source.namespace", "source.serviceAccount", "source.trustDomain", "source.principal")


def _custom_rule(rule: Mapping[str, Any], path: str) -> RuleResult:
    """What the CUSTOM action (ext_authz) cannot match on."""
    for j, entry in enumerate(rule.get("from") or ()):
        for f in _CUSTOM_UNSUPPORTED_SOURCE:
            if get(entry, "source", f):
                yield f"{path}.from[{j}].source.{f}", "error", f"From.{f[0].upper() + f[1:]} is currently not " \
                                                              "supported with CUSTOM action"
    for j, cond in enumerate(rule.get("when") or ()):
        key = get(cond, "key")
        if isinstance(key, str) and (key in _CUSTOM_UNSUPPORTED_KEYS or key.startswith("request.auth.")):
            yield f"{path}.when[{j}].key", "error", f"{key} is currently not supported with CUSTOM action"


def _empty_value(field: str, values: Any) -> str | None:
    """security.CheckEmptyValues."""
    return f"empty value not allowed, found in {field}" if any(v == "" for v in values or ()) else None


def _ips_error(values: Any) -> str | None:
    """security.ValidateIPs: addresses or CIDR ranges."""
    for v in values or ():
        try:
            if "/" in str(v):
                ipaddress.ip_network(str(v), strict=False)
            else:
                ipaddress.ip_address(str(v))
        except ValueError:
            return f"bad IP address or CIDR range ({v})"
    return None


def _service_accounts_error(field: str, values: Any) -> str | None:
    """security.CheckServiceAccount: `sa` or `namespace/sa`, no wildcards, at most 16."""
    values = list(values or ())
    if len(values) > 16:
        return "may not have more than 16 values"
    for v in values:
        ns, slash, sa = str(v).partition("/")
        if v == "" or "*" in str(v) or str(v).count("/") > 1 or (slash and (not ns or not sa)) or len(str(v)) > 320:
            return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found {v!r} in {field}"
    return None


def _wildcards_error(field: str, values: Any) -> str | None:
    """security.CheckWildcardValues: one `*`, at the start or the end."""
    for v in values or ():
        v = str(v)
        if v.count("*") > 1 or (v.count("*") == 1 and v != "*" and not v.startswith("*") and not v.endswith("*")):
            return f"wildcard is only allowed once, at the start or end, found in {field}: {v!r}"
    return None


@rule("Source")
def _source(src: Mapping[str, Any]) -> RuleResult:
    if (src.get("serviceAccounts") or src.get("notServiceAccounts")) and (
            src.get("principals") or src.get("notPrincipals") or src.get("namespaces") or src.get("notNamespaces")):
        yield "serviceAccounts", "error", "cannot set serviceAccounts with namespaces or principals"
    for f in ("principals", "notPrincipals"):
        for i, p in enumerate(src.get(f) or ()):
            if isinstance(p, str) and p.startswith("spiffe://"):
                yield f"{f}[{i}]", "error", f"{f} must not include the spiffe:// prefix: {p}"
    for f in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"):
        if err := _ips_error(src.get(f)):
            yield f, "error", err
    for f in ("serviceAccounts", "notServiceAccounts"):
        if err := _service_accounts_error(f, src.get(f)):
            yield f, "error", err
    for f in ("trustDomains", "notTrustDomains"):
        err = _wildcards_error(f, src.get(f)) or next(
            (f"trust domain must not contain '/', found in {f}" for v in src.get(f) or () if "/" in str(v)), None)
        if err:
            yield f, "error", err
    for f, values in src.items():
        if err := _empty_value(f, values):
            yield f, "error", err


@rule("Operation")
def _operation(op: Mapping[str, Any]) -> RuleResult:
    for f in ("ports", "notPorts"):
        for i, p in enumerate(op.get(f) or ()):
            if not (isinstance(p, str) and p.isdigit() and 1 <= int(p) <= 65535):
                yield f"{f}[{i}]", "error", f"invalid port {p!r}: ports are strings of a number in 1..65535"
    for f, values in op.items():
        if err := _empty_value(f, values):
            yield f, "error", err


def _map_key_error(key: str) -> str | None:
    """security validateMapKey: `a[b]`."""
    opening = key.find("[")
    return None if key.endswith("]") and 0 < opening < len(key) - 2 else f"bad key ({key}): should have format a[b]"


def attribute_error(key: str, values: Any) -> str | None:
    """security.ValidateAttribute: a known condition key, and values of its kind."""
    if err := _empty_value(key, values):
        return err
    if key.startswith(("request.headers", "request.auth.claims", "experimental.envoy.filters.")):
        return _map_key_error(key)
    if key in ("source.ip", "remote.ip", "destination.ip"):
        return _ips_error(values)
    if key == "source.serviceAccount":
        return _service_accounts_error(key, values)
    if key == "source.trustDomain":
        return _wildcards_error(key, values)
    if key == "destination.port":
        return next((f"bad port ({v})" for v in values or () if not str(v).isdigit() or int(v) > 65535), None)
    if key in ("source.namespace", "source.principal", "request.auth.principal", "request.auth.audiences",
               "request.auth.presenter", "connection.sni"):
        return None
    if key == "destination.namespace":
        return f"attribute {key} is replaced by the metadata.namespace"
    if key.startswith("destination.labels"):
        return f"attribute {key} is replaced by the workload selector"
    if key in ("destination.name", "destination.user"):
        return f"deprecated attribute {key}: only supported in v1alpha1"
    return f"unknown attribute: {key}"


@rule("Condition")
def _condition(cond: Mapping[str, Any]) -> RuleResult:
    key = cond.get("key")
    if not cond.get("values") and not cond.get("notValues"):
        yield "", "error", f"at least one of values or notValues must be set for key {key}"
        return
    if isinstance(key, str) and key:
        for f in ("values", "notValues"):
            if err := attribute_error(key, cond.get(f)):
                yield f, "error", f"invalid `{f}` for `key` {key}: {err}"


def _jwks(text: str) -> tuple[str | None, list[int]]:
    """jwk.Parse (lestrrat-go/jwx v1) of an inline JWKS: a JSON key set (`keys`, possibly empty) or else one key,
    each of a known `kty` (`{}` is "failed to parse sole key in key set"); and the indexes of keys with private
    material (a `d`, or a symmetric `oct` key: warnPrivateJwksKeys)."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        return f"jwks parse error: {e}", []
    keys = doc.get("keys", [doc]) if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) and k.get("kty") in ("RSA", "EC", "OKP", "oct")
                                             for k in keys):
        return "jwks parse error: not a JSON Web Key set (keys of kty RSA, EC, OKP or oct)", []
    return None, [i for i, k in enumerate(keys) if k["kty"] == "oct" or "d" in k]


@rule("JWTRule")
def _jwt_rule(jwt: Mapping[str, Any]) -> RuleResult:
    if isinstance(jwt.get("jwks"), str) and jwt["jwks"]:
        error, private = _jwks(jwt["jwks"])
        if error:
            yield "jwks", "error", error
        for i in private:
            yield "jwks", "warning", (f"jwks key at index {i} contains private key material; only public keys are "
                                      "used for verification")
    for field in ("jwksUri", "jwks_uri"):
        uri = jwt.get(field)
        if isinstance(uri, str) and uri and not re.match(r"^https?://[^/\s:]+(:\d+)?(/|$)", uri):
            yield field, "error", f"{field} {uri!r} is not a valid http(s) URL (host, optional numeric port)"
    for field in ("audiences", "fromParams", "fromCookies", "spaceDelimitedClaims"):  # the CRD's minLength: 1
        for i, item in enumerate(jwt.get(field) or ()):
            if item == "":
                yield f"{field}[{i}]", "error", "must not be empty"


_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")


@rule("ClaimToHeader")
def _claim_to_header(c: Mapping[str, Any]) -> RuleResult:
    """The CRD's pattern: a plain header name (no pseudo-headers such as :authority)."""
    header = c.get("header")
    if isinstance(header, str) and header and not _HEADER_NAME.match(header):
        yield "header", "error", f"invalid header name {header!r}: letters, digits, '-' and '_' only"


_TARGET_GROUP = re.compile(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_TARGET_KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")


# allowedTargetRefs: what a policy's targetRef(s) may name, (canonical group, kind); the version is not read
_TARGET_KINDS = frozenset({("core", "Service"), ("networking.istio.io", "ServiceEntry"),
                           ("gateway.networking.k8s.io", "Gateway"), ("gateway.networking.k8s.io", "GatewayClass")})


def _target_ref_kinds(spec: Mapping[str, Any]) -> RuleResult:
    """validatePolicyTargetReference(s) of AuthorizationPolicy, RequestAuthentication, Telemetry and
    WasmPlugin: each names a Service, ServiceEntry, Gateway or GatewayClass."""
    refs = [("targetRef", spec.get("targetRef"))] + [(f"targetRefs[{i}]", r)
                                                    for i, r in enumerate(spec.get("targetRefs") or ())]
    for at, ref in refs:
        if not isinstance(ref, Mapping):
            continue
        group, kind = str(ref.get("group") or ""), str(ref.get("kind") or "")
        if (group or "core", kind) not in _TARGET_KINDS:
            yield at, "error", (f"targetRef must be to one of {', '.join(sorted(f'{g}/{k}' for g, k in _TARGET_KINDS))} "
                                f"but was {group}/{kind}")


RULES["RequestAuthentication"] = _target_ref_kinds


@rule("PolicyTargetReference")
def _target_ref(ref: Mapping[str, Any]) -> RuleResult:
    """istio.type.v1beta1.PolicyTargetReference's CRD rules: group and kind patterns, no namespace."""
    group, kind = ref.get("group"), ref.get("kind")
    if isinstance(group, str) and not _TARGET_GROUP.match(group):
        yield "group", "error", f"invalid group {group!r}"
    if isinstance(kind, str) and kind and not _TARGET_KIND.match(kind):
        yield "kind", "error", f"invalid kind {kind!r}"
    if ref.get("namespace"):
        yield "namespace", "error", "cross namespace referencing is not currently supported"


@rule("WorkloadSelector")
def _workload_selector(selector: Mapping[str, Any]) -> RuleResult:
    """istio.type.v1beta1.WorkloadSelector's CRD rules: no empty keys, no wildcards in keys or values; and
    validateWorkloadSelector's warning when it has no labels (it then selects every workload in scope)."""
    if not selector.get("matchLabels"):
        yield "", "warning", "workload selector specified without labels"
    for key, value in (selector.get("matchLabels") or {}).items():
        if key == "":
            yield "matchLabels", "error", "key must not be empty"
        elif "*" in str(key):
            yield "matchLabels", "error", "wildcard not allowed in label key match"
        elif "*" in str(value):
            yield f"matchLabels.{key}", "error", "wildcard not allowed in label value match"


@rule("EnvoyConfigObjectMatch")
def _envoy_filter_match(match: Mapping[str, Any]) -> RuleResult:
    """The EnvoyFilter CRD: `waypoint` goes with context WAYPOINT, and context WAYPOINT needs it."""
    if (match.get("context") == "WAYPOINT") != ("waypoint" in match):  # present, even if empty
        yield "", "error", "only support waypointMatch when context is WAYPOINT"


@rule("ProxyConfig")
def _proxy_config(pc: Mapping[str, Any]) -> RuleResult:
    concurrency = pc.get("concurrency")
    if isinstance(concurrency, int) and concurrency < 0:
        yield "concurrency", "error", "concurrency must be greater than or equal to 0"


_WASM_SCHEMES = ("", "http", "https", "oci", "file")


@rule("WasmPlugin")
def _wasm_plugin(wp: Mapping[str, Any]) -> RuleResult:
    """The WasmPlugin CRD's rules (x-kubernetes-validations, minLength, patterns), and its targetRefs' kinds."""
    yield from _target_ref_kinds(wp)
    url = wp.get("url")
    if isinstance(url, str) and url:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        # Go's url.Parse refuses a '%' that is not an escape, and whitespace
        if scheme not in _WASM_SCHEMES or re.search(r"%(?![0-9A-Fa-f]{2})|\s", url):
            yield "url", "error", "url must have schema one of [http, https, file, oci]"
    sha = wp.get("sha256")
    if isinstance(sha, str) and sha and not re.fullmatch(r"[a-f0-9]{64}", sha):
        yield "sha256", "error", "sha256 must be 64 lowercase hex digits"
    for field in ("imagePullSecret", "pluginName"):
        if wp.get(field) == "":
            yield field, "error", f"{field} must not be empty"
    seen: set[str] = set()
    for i, env in enumerate(get(wp, "vmConfig", "env") or ()):
        name = get(env, "name")
        if name in seen:
            yield f"vmConfig.env[{i}].name", "error", f"duplicate env name {name!r}"
        seen.add(name)
        if get(env, "valueFrom") == "HOST" and get(env, "value") is not None:
            yield f"vmConfig.env[{i}].value", "error", "value may only be set when valueFrom is INLINE"


# labels.Instance.Validate: a Kubernetes label key (an optional DNS prefix and `/`, a qualified name) and value
_QUALIFIED_NAME = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY = re.compile(r"^((?:[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)*/)?"
                        rf"({_QUALIFIED_NAME})$")
_LABEL_VALUE = re.compile(rf"^({_QUALIFIED_NAME})?$")


def label_errors(labels: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(key, error) for each label Istio's labels.Instance.Validate refuses."""
    for key, value in labels.items():
        m = _LABEL_KEY.match(str(key))
        if not m or len(m.group(1) or "") - 1 > 253 or len(m.group(2)) > 63:
            yield str(key), f"invalid tag key: {key!r}"
        if not _LABEL_VALUE.match(str(value)):
            yield str(key), f"invalid tag value: {value!r}"


@rule("WorkloadGroupObjectMeta")
def _workload_group_meta(meta: Mapping[str, Any]) -> RuleResult:
    """ValidateWorkloadGroup: the template metadata's labels are valid labels."""
    for key, error in label_errors(meta.get("labels") or {}):
        yield f"labels.{key}", "error", f"invalid labels: {error}"


@rule("ReadinessProbe")
def _readiness_probe(probe: Mapping[str, Any]) -> RuleResult:
    """validateReadinessProbe: non-negative timings, and an httpGet, tcpSocket or exec check (Istio's
    validation knows no other method; a grpc check is refused as an unknown one)."""
    for field in ("periodSeconds", "initialDelaySeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
        if _number(probe.get(field)) < 0:
            yield field, "error", f"{field} must be non-negative"
    if not any(probe.get(k) is not None for k in ("httpGet", "tcpSocket", "exec")):
        yield "", "error", "unknown health check method: one of httpGet, tcpSocket or exec is required"


@rule("AccessLogFilter")
def _access_log_filter(f: Mapping[str, Any]) -> RuleResult:
    """validateTelemetryFilter: the expression parses as CEL (cel.NewEnv().Parse: syntax only)."""
    expression = f.get("expression")
    if isinstance(expression, str) and (err := cel_syntax_error(expression)):
        yield "expression", "error", f"must be a valid CEL expression, {err}"


@rule("HTTPHealthCheckHeader")
def _probe_header(header: Mapping[str, Any]) -> RuleResult:
    name = header.get("name")
    if isinstance(name, str) and not _HEADER_NAME.match(name):
        yield "name", "error", f"invalid header name {name!r}: letters, digits, '-' and '_' only"


@rule("HTTPHealthCheckConfig")
def _probe_http(check: Mapping[str, Any]) -> RuleResult:
    if check.get("scheme") not in (None, "", "HTTP", "HTTPS"):
        yield "scheme", "error", "scheme must be one of [HTTP, HTTPS]"


@rule("MetricSelector")
def _metric_selector(selector: Mapping[str, Any]) -> RuleResult:
    if selector.get("customMetric") == "":
        yield "customMetric", "error", "customMetric must not be empty"


@rule("Telemetry")
def _telemetry(telemetry: Mapping[str, Any]) -> RuleResult:
    yield from _target_ref_kinds(telemetry)
    if len(telemetry.get("tracing") or ()) > 1:  # validateTelemetryTracing warns
        yield "tracing", "warning", "multiple tracing is not currently supported"


@rule("Tracing")
def _tracing(tracing: Mapping[str, Any]) -> RuleResult:
    providers = tracing.get("providers") or ()
    if isinstance(providers, (list, tuple)) and len(providers) > 1:  # Istio warns (validateTelemetryTracing)
        yield "providers", "warning", "multiple providers is not currently supported"
    for name, tag in (tracing.get("customTags") or {}).items():
        if tag is None:
            yield f"customTags.{name}", "error", f"tag {name!r} may not have a nil value"


_CEL_ROOTS = ("request", "response", "source", "destination", "connection", "upstream", "xds", "node",
              "filter_state", "metadata")


@rule("TagOverride")
def _tag_override(tag: Mapping[str, Any]) -> RuleResult:
    operation = tag.get("operation") or "UPSERT"
    value = tag.get("value")
    if operation == "UPSERT" and not value:
        yield "value", "error", "value must be set when operation is UPSERT"
    if operation == "REMOVE" and value:
        yield "value", "error", "value must only be set when operation is UPSERT"
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) \
            and value not in _CEL_ROOTS and value not in ("true", "false", "null"):
        yield "value", "cel", (  # this project's own warning (PYM0010); Istio gives none
            f"value is a CEL expression: {value} is read as an attribute name, not a string; "
            f"to set the literal write \"'{value}'\"")
    elif isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w-]*-[\w-]*", value):
        yield "value", "cel", (
            f"value is a CEL expression: {value} parses as a subtraction of attribute names; "
            f"to set the literal write \"'{value}'\"")


@rule("IstioOperator")
def _istio_operator(iop: Mapping[str, Any]) -> RuleResult:
    profile = iop.get("profile")
    if isinstance(profile, str) and profile and profile not in S.PROFILES and "/" not in profile:
        close = difflib.get_close_matches(profile, sorted(S.PROFILES), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        yield "profile", "error", (f'profile "{profile}" is not a built-in Istio profile '
                                   f"({', '.join(sorted(S.PROFILES))}){hint}")


# --- resource entry point ---------------------------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

_KIND_TO_FINDING = {
    "error": (msg.SCHEMA_VALIDATION_ERROR, None),
    "warning": (msg.SCHEMA_WARNING, None),
    "info": (msg.SCHEMA_WARNING, Level.INFO),
    "deprecated": (msg.DEPRECATED, None),
    "unsupported": (msg.UNSUPPORTED_FIELD, None),
    "cel": (msg.CEL_VALUE_NOTE, None),
    "unreachable": (msg.VS_UNREACHABLE_RULE, None),
    "ineffective": (msg.VS_INEFFECTIVE_MATCH, None),
}


def check_spec(kind: str, spec: Any, root: str = "spec", meta: Meta = Meta()) -> tuple[Any, list[Issue]]:
    """Validate a kind's spec (pure, no Resource needed). Returns (cleaned spec, issues)."""
    return check_message(S.KIND_MESSAGE[kind], spec, root, meta)


def check_message(message: str, value: Any, root: str = "spec", meta: Meta = Meta()) -> tuple[Any, list[Issue]]:
    """Validate a value as one of the schema's messages (`HTTPRetry`, `OutlierDetection`, ...), as Istio's
    validation functions for a message part do; `meta` is the config's metadata (a Sidecar's `./host` is in
    its namespace). Returns (cleaned value, issues)."""
    walker = _Walker(meta)
    cleaned = walker.message(value, message, root, [])
    return cleaned, walker.issues


_PARSE_BOOL = ("1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False")  # strconv.ParseBool
DRY_RUN = "istio.io/dry-run"
# annotations Istio's webhook always rejects (internal to istiod: they would escalate privileges)
_REJECTED_ANNOTATIONS = {
    "internal.istio.io/webhook-always-reject": "annotation found, rejecting",
    "internal.istio.io/parent-namespace": "annotation found, this may not be set by users",
    "internal.istio.io/parents": "annotation found, this may not be set by users",
}


def metadata_issues(kind: str, spec: Mapping[str, Any], meta: Meta) -> list[Issue]:
    """validateMetadata, which wraps every Istio validation function: `istio.io/dry-run` only on an
    AuthorizationPolicy (ALLOW or DENY, a boolean value), and none of istiod's internal annotations."""
    found = []
    if DRY_RUN in meta.annotations:
        value = str(meta.annotations[DRY_RUN])
        path = f"metadata.annotations.{DRY_RUN}"
        action = str(spec.get("action") or "ALLOW") if isinstance(spec, Mapping) else "ALLOW"
        if kind != "AuthorizationPolicy":
            found.append(Issue(path, "error", f"{meta.namespace}/{meta.name} has unsupported annotation {DRY_RUN}, "
                                              "please remove the annotation"))
        elif action not in ("ALLOW", "DENY"):
            found.append(Issue(path, "error", f"the annotation {DRY_RUN} currently only supports action ALLOW/DENY, "
                                              f"found action {action}"))
        elif value not in _PARSE_BOOL:
            found.append(Issue(path, "error", f"{DRY_RUN} has an invalid value ({value}): not a boolean"))
    for key, text in _REJECTED_ANNOTATIONS.items():
        if key in meta.annotations:
            found.append(Issue(f"metadata.annotations.{key}", "error", f"{key!r} {text}"))
    return found


def validate_resource(resource: Resource, *, strict: bool = False) -> Checked:
    """Validate one resource; return it (unknown fields dropped) or None if a hard error rejects it."""
    message = S.KIND_MESSAGE.get(resource.kind)
    if message is None:
        return Checked(resource, ())
    root = "spec" if "spec" in resource.lines or resource.kind not in ("ServiceAccount", "Namespace", "Secret") else ""
    meta = Meta(resource.name, resource.namespace, resource.labels, resource.annotations)
    cleaned, issues = check_spec(resource.kind, thaw(resource.spec), root, meta)
    issues += metadata_issues(resource.kind, resource.spec, meta)
    if not _NAME.match(resource.name) or len(resource.name) > 253:
        issues.append(Issue("metadata.name", "error",
                            f"invalid name {resource.name!r}: must be a lowercase RFC 1123 subdomain"))
    if resource.namespace and not _DNS1123_LABEL.match(resource.namespace):
        issues.append(Issue("metadata.namespace", "error", f"invalid namespace {resource.namespace!r}"))
    findings = []
    rejected = False
    for issue in issues:
        where = dict(file=resource.source.file, line=resource.line_of(issue.path), resource=resource.key,
                     path=issue.path)
        if issue.kind == "unknown":
            if strict:
                findings.append(finding(msg.SCHEMA_VALIDATION_ERROR, f"{issue.path}: {issue.text}", **where))
            else:
                findings.append(finding(msg.UNKNOWN_FIELD_DROPPED, f"{issue.path}: {issue.text} (ignored)", **where))
            continue
        type_, level = _KIND_TO_FINDING[issue.kind]
        if issue.args:  # a message with its own template (IST0130/IST0131)
            findings.append(finding(type_, *issue.args, level=level, **where))
            continue
        text = issue.text if issue.kind == "unsupported" else f"{issue.path}: {issue.text}"
        findings.append(finding(type_, text, level=level, **where))
        rejected = rejected or issue.kind == "error"
    kept = replace(resource, spec=freeze(cleaned if isinstance(cleaned, dict) else {}))
    if rejected:
        return Checked(None, tuple(findings), rejected=kept)
    return Checked(kept, tuple(findings))
