"""A CEL subset for access-log filters (`envoy.access_loggers.extension_filters.cel`, ExpressionFilter), which is
what istiod emits for a Telemetry `accessLogging[].filter.expression`. Pure: compiled once, evaluated against a
StreamInfo.

Supported (enough for Istio's documented filters): literals (ints, 'strings' / "strings", true, false, null);
`&&`, `||`, `!`, parentheses; `==`, `!=`, `<`, `<=`, `>`, `>=`; `in` (a key in a header map); `has(x.y.z)`;
`size(x)`; `string(x)` and `int(x)` (metric dimensions only: Envoy refuses them in access-log filters); map
indexing `m['key']`. Attributes (Envoy's names): `response.code`,
`response.code_details`, `response.size`, `response.headers`, `response.flags` (Envoy's bitmask),
`request.method`, `request.path`, `request.url_path`, `request.host`, `request.scheme`, `request.protocol`,
`request.id`, `request.useragent`, `request.size`, `request.headers`, `connection.mtls`,
`connection.requested_server_name`, `source.address`, `source.port`, `destination.address`,
`destination.port`, `upstream.address`; in metric dimensions also Istio's peer metadata,
`filter_state.downstream_peer.<field>` / `filter_state.upstream_peer.<field>` (app, version, service, revision,
name, namespace, workload, cluster, labels['k']).
Header maps are looked up case-insensitively (Envoy lowers the key). Anything else is a ConfigError naming the
expression and the position, at config load. An evaluation error (a missing header read with `[]`, comparing a
string with an int) makes the filter say "do not log", as Envoy's CEL filter does.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from .istio_metrics import CANONICAL_NAME, CANONICAL_REVISION, UNKNOWN

Getter = Callable[[Any], Any]


class CelError(ValueError):
    """The expression is outside the supported subset (the message says where)."""


class _EvalError(Exception):
    pass


_TOKEN = re.compile(r"\s*(?:(?P<num>\d+)|(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|"
                    r"(?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\].,])|(?P<id>[A-Za-z_][A-Za-z0-9_]*))")


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise CelError(f"unexpected character {text[pos:].lstrip()[:1]!r} at position {pos}")
        kind = m.lastgroup
        value: Any = m.group(kind)
        if kind == "num":
            value = int(value)
        elif kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append((kind, value, m.start(kind)))
        pos = m.end()
    out.append(("end", None, len(text)))
    return out


def _headers(h: Any) -> dict[str, str] | None:
    if h is None:
        return {}
    return {k.lower(): v for k, v in h.items()}


def _port(address: str | None) -> int:
    """The port of `ip:port` / `[v6]:port` (Envoy's source.port / destination.port are ints)."""
    _, sep, port = (address or "").rpartition(":")
    if not sep or not port.isdigit():
        raise _EvalError("no port")
    return int(port)


def _tls_mtls(info: Any) -> bool:
    tls = info.downstream_tls
    return bool(tls is not None and tls.peer_presented)


ATTRIBUTES: dict[tuple[str, ...], Getter] = {
    ("response", "code"): lambda i: i.response_code or 0,
    ("response", "code_details"): lambda i: i.response_code_details or "",
    ("response", "size"): lambda i: i.bytes_sent,
    ("response", "flags"): lambda i: i.response_flags,
    ("response", "headers"): lambda i: _headers(i.response_headers),
    ("request", "method"): lambda i: i.method or "",
    ("request", "path"): lambda i: i.path or "",
    ("request", "url_path"): lambda i: (i.path or "").split("?", 1)[0],
    ("request", "host"): lambda i: i.authority or "",
    ("request", "scheme"): lambda i: i.scheme or "",
    ("request", "protocol"): lambda i: i.protocol or "",
    ("request", "id"): lambda i: (i.request_headers.get_first("x-request-id") if i.request_headers else None) or "",
    ("request", "useragent"): lambda i: (i.request_headers.get_first("user-agent") if i.request_headers else None) or "",
    ("request", "size"): lambda i: i.bytes_received,
    ("request", "headers"): lambda i: _headers(i.request_headers),
    ("connection", "mtls"): _tls_mtls,
    ("connection", "requested_server_name"): lambda i: i.requested_server_name or "",
    ("source", "address"): lambda i: i.downstream_remote_address or "",
    ("source", "port"): lambda i: _port(i.downstream_remote_address),
    ("destination", "address"): lambda i: i.downstream_local_address or "",
    ("destination", "port"): lambda i: _port(i.downstream_local_address),
    ("upstream", "address"): lambda i: i.upstream_host or "",
}
_MAPS = {("request", "headers"), ("response", "headers")}

# Istio's peer metadata (istio-proxy 1.24+: `filter_state.downstream_peer` / `upstream_peer`, the workload on the
# other side of the request as the metadata exchange told it): metric dimensions only, where the istio.stats filter
# evaluates with the peers beside the StreamInfo (pyproxy/filters/istio_stats.py `PeerAttributes`). The fields of
# Istio's table ("Classifying metrics ... peer metadata"); `name` is the workload here (no pod names), `type` is
# not carried.
PEER_FIELDS = {"app": "app", "version": "version", "service": "canonical_service",
               "revision": "canonical_revision", "name": "workload", "namespace": "namespace",
               "workload": "workload", "cluster": "cluster"}


def _peer(i: Any, side: str) -> Any:
    """The peer on `side` beside the StreamInfo; an evaluation error when the metadata exchange told none."""
    peer = getattr(i, side, None)
    if peer is None:
        raise _EvalError(f"no {side}")
    return peer


def _peer_labels(peer: Any) -> dict[str, str]:
    labels = {"app": peer.app, "version": peer.version, CANONICAL_NAME: peer.canonical_service,
              CANONICAL_REVISION: peer.canonical_revision}
    return {k: v for k, v in labels.items() if v != UNKNOWN}


PEER_ATTRIBUTES: dict[tuple[str, ...], Getter] = {}
for _side in ("downstream_peer", "upstream_peer"):  # closures over _peer, looked up when evaluated
    for _field, _attr in PEER_FIELDS.items():
        PEER_ATTRIBUTES[("filter_state", _side, _field)] = (lambda s, a: lambda i: getattr(_peer(i, s), a))(_side, _attr)
    PEER_ATTRIBUTES[("filter_state", _side, "labels")] = (lambda s: lambda i: _peer_labels(_peer(i, s)))(_side)
    PEER_ATTRIBUTES[("filter_state", _side)] = (lambda s: lambda i: _peer(i, s))(_side)
_PEER_MAPS = {("filter_state", "downstream_peer", "labels"), ("filter_state", "upstream_peer", "labels")}


def _cmp(op: str) -> Callable[[Any, Any], bool]:
    def ordered(a: Any, b: Any) -> bool:
        if type(a) is not type(b) or isinstance(a, bool):
            raise _EvalError(f"no ordering between {a!r} and {b!r}")
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]

    def equal(a: Any, b: Any) -> bool:
        if a is not None and b is not None and type(a) is not type(b):
            raise _EvalError(f"no equality between {a!r} and {b!r}")  # CEL: no implicit conversion
        return (a == b) if op == "==" else (a != b)
    return equal if op in ("==", "!=") else ordered


class _Parser:
    def __init__(self, text: str, conversions: bool = True):
        self.conversions = conversions  # string()/int(): Envoy's access-log CEL refuses them (no overload)
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any, int]:
        return self.toks[self.i]

    def take(self, value: str | None = None) -> tuple[str, Any, int]:
        tok = self.toks[self.i]
        if value is not None and tok[1] != value:
            raise CelError(f"expected {value!r} at position {tok[2]}, found {tok[1] or 'the end'!r}")
        self.i += 1
        return tok

    def parse(self) -> Getter:
        g = self.or_()
        if self.peek()[0] != "end":
            raise CelError(f"unexpected {self.peek()[1]!r} at position {self.peek()[2]}")
        return g

    def or_(self) -> Getter:
        left = self.and_()
        while self.peek()[1] == "||":
            self.take()
            right = self.and_()
            left = (lambda a, b: lambda i: bool(a(i)) or bool(b(i)))(left, right)
        return left

    def and_(self) -> Getter:
        left = self.unary()
        while self.peek()[1] == "&&":
            self.take()
            right = self.unary()
            left = (lambda a, b: lambda i: bool(a(i)) and bool(b(i)))(left, right)
        return left

    def unary(self) -> Getter:
        if self.peek()[1] == "!" and self.peek()[0] == "op":
            self.take()
            inner = self.unary()
            return lambda i: not inner(i)
        return self.comparison()

    def comparison(self) -> Getter:
        left = self.primary()
        kind, value, _ = self.peek()
        if kind == "op" and value in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            right, test = self.primary(), _cmp(value)
            return lambda i: test(left(i), right(i))
        if kind == "id" and value == "in":
            self.take()
            right = self.primary()

            def contains(i: Any) -> bool:
                key, m = left(i), right(i)
                if not isinstance(m, dict) or not isinstance(key, str):
                    raise _EvalError("`in` needs a string and a map")
                return key.lower() in m
            return contains
        return left

    def primary(self) -> Getter:
        kind, value, pos = self.take()
        if kind in ("num", "str"):
            return lambda i, v=value: v
        if kind == "op" and value == "(":
            g = self.or_()
            self.take(")")
            return g
        if kind != "id":
            raise CelError(f"unexpected {value or 'end of expression'!r} at position {pos}")
        if value in ("true", "false", "null"):
            return lambda i, v={"true": True, "false": False, "null": None}[value]: v
        if value in ("has", "size", "string", "int") and self.peek()[1] == "(":
            if value in ("string", "int") and not self.conversions:
                raise CelError(f"{value}() at position {pos}: no overload in an access-log filter (Envoy's CEL "
                               "refuses it too)")
            return self.call(value, pos)
        return self.path(value, pos)

    def call(self, name: str, pos: int) -> Getter:
        self.take("(")
        if name == "has":
            start = self.peek()
            ident = self.take()
            if ident[0] != "id":
                raise CelError(f"has() takes a field selection (a.b.c) at position {start[2]}")
            parts = [ident[1]]
            while self.peek()[1] == ".":
                self.take()
                parts.append(self.take()[1])
            self.take(")")
            if len(parts) == 3 and tuple(parts[:2]) in _MAPS:
                mget, key = ATTRIBUTES[tuple(parts[:2])], parts[2].lower()
                return lambda i: key in (mget(i) or {})
            if tuple(parts) in ATTRIBUTES:
                return lambda i: True
            if self.conversions and tuple(parts) in PEER_ATTRIBUTES:  # has(filter_state.downstream_peer[.app])
                side = parts[1]
                return lambda i: getattr(i, side, None) is not None
            raise CelError(f"has({'.'.join(parts)}) at position {pos}: unknown attribute")
        arg = self.or_()
        self.take(")")
        if name == "size":
            return lambda i: len(arg(i))
        if name == "string":
            return lambda i: str(arg(i)).lower() if isinstance(arg(i), bool) else str(arg(i))

        def to_int(i: Any) -> int:
            try:
                return int(arg(i))
            except (TypeError, ValueError):
                raise _EvalError("int() of a non-number") from None
        return to_int

    def path(self, first: str, pos: int) -> Getter:
        parts = [first]
        while self.peek()[1] == ".":
            self.take()
            tok = self.take()
            if tok[0] != "id":
                raise CelError(f"expected a field name at position {tok[2]}")
            parts.append(tok[1])
        getter = ATTRIBUTES.get(tuple(parts))
        if getter is None and self.conversions:
            getter = PEER_ATTRIBUTES.get(tuple(parts))
        if getter is None:
            known = ", ".join(".".join(k) for k in ATTRIBUTES)
            raise CelError(f"unknown attribute {'.'.join(parts)!r} at position {pos} (supported: {known})")
        while self.peek()[1] == "[":
            self.take()
            key = self.or_()
            self.take("]")

            def index(i: Any, m: Getter = getter, k: Getter = key) -> Any:
                mapping, name = m(i), k(i)
                if not isinstance(mapping, dict) or not isinstance(name, str):
                    raise _EvalError("indexing needs a map and a string key")
                try:
                    return mapping[name.lower()]
                except KeyError:
                    raise _EvalError(f"no key {name!r}") from None
            getter = index
        return getter


def compile_filter(expression: str) -> Callable[[Any], bool]:
    """`expression` -> predicate(StreamInfo) -> log or not. CelError when outside the subset (or when it uses
    string()/int(), which Envoy 1.40 refuses in access-log filters: tests/oracle/test_access_log_cel_differential.py)."""
    getter = _Parser(expression, conversions=False).parse()

    def predicate(info: Any) -> bool:
        try:
            return getter(info) is True
        except (_EvalError, TypeError):
            return False
    return predicate


def compile_value(expression: str, default: str = "unknown") -> Callable[[Any], str]:
    """`expression` -> value(StreamInfo) as a metric label: strings as they are, numbers in decimal, booleans
    `true`/`false`; `default` when evaluation fails (a missing header, an unknown name at run time). Used for
    Telemetry metric `tagOverrides` (istio.stats `dimensions`)."""
    getter = _Parser(expression).parse()

    def value(info: Any) -> str:
        try:
            v = getter(info)
        except (_EvalError, TypeError):
            return default
        if v is None:
            return default
        return str(v).lower() if isinstance(v, bool) else str(v)
    return value
