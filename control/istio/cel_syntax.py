"""Whether a text parses as a CEL expression (syntax only, no type checking): what Istio's validation asks of a
Telemetry `accessLogging[].filter.expression` (`cel.NewEnv().Parse`, validateTelemetryFilter). The grammar is
cel-spec's (doc/langdef.md, "Syntax"); evaluating a supported subset is pyproxy/observe/cel.py's job.

Pure: `cel_syntax_error(text)` returns None or what is wrong and where.
"""
from __future__ import annotations

import re

# cel-spec's lexis: comments, strings (raw r'', bytes b'', triple-quoted), numbers, identifiers, operators
_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"
                                       |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
  | (?P<number>(?:\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)|0[xX][0-9a-fA-F]+[uU]?|\d+[uU]?)
  | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<op>\|\||&&|==|!=|<=|>=|[<>!?:+\-*/%.,()\[\]{}])
""", re.X | re.S)
# reserved words that may not name anything; `in` is an operator
_RESERVED = frozenset({"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let",
                       "loop", "package", "namespace", "return", "var", "void", "while"})
_RELATIONS = frozenset({"<", "<=", ">=", ">", "==", "!=", "in"})


class _Error(Exception):
    pass


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise _Error(f"unexpected character {text[pos]!r} at {pos}")
        if m.lastgroup != "space":
            kind = m.lastgroup
            if kind == "ident" and m.group() in ("true", "false", "null"):
                kind = "literal"
            elif kind == "ident" and m.group() == "in":
                kind = "op"
            out.append((kind, m.group(), pos))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over cel-spec's grammar; each method consumes one production."""

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str:
        return self.toks[self.i][1] if self.i < len(self.toks) else ""

    def kind(self) -> str:
        return self.toks[self.i][0] if self.i < len(self.toks) else "end"

    def take(self, want: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise _Error(f"unexpected end of expression{f', expected {want!r}' if want else ''}")
        kind, tok, pos = self.toks[self.i]
        if want is not None and (tok != want or kind in ("string", "literal")):
            raise _Error(f"expected {want!r} at {pos}, found {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> None:
        if not self.toks:
            raise _Error("empty expression")
        self.expr()
        if self.i < len(self.toks):
            _, tok, pos = self.toks[self.i]
            raise _Error(f"unexpected {tok!r} at {pos}")

    def expr(self) -> None:
        self.binary(0)
        if self.peek() == "?" and self.kind() == "op":
            self.take()
            self.binary(0)
            self.take(":")
            self.expr()

    _LEVELS = (("||",), ("&&",), tuple(_RELATIONS), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> None:
        if level == len(self._LEVELS):
            self.unary()
            return
        self.binary(level + 1)
        while self.kind() == "op" and self.peek() in self._LEVELS[level]:
            self.take()
            self.binary(level + 1)

    def unary(self) -> None:
        while self.kind() == "op" and self.peek() in ("!", "-"):
            self.take()
        self.member()

    def member(self) -> None:
        self.primary()
        while self.kind() == "op" and self.peek() in (".", "["):
            if self.take() == ".":
                self.identifier()
                if self.peek() == "(":
                    self.call_args()
                elif self.peek() == "{":  # a qualified message name: google.protobuf.Int64Value{value: 1}
                    self.take()
                    self.inits(map_keys=False)
                    self.take("}")
            else:
                self.expr()
                self.take("]")

    def identifier(self) -> str:
        kind, tok, pos = self.toks[self.i] if self.i < len(self.toks) else ("end", "", -1)
        if kind != "ident" or tok in _RESERVED:
            raise _Error(f"expected an identifier at {pos}, found {tok!r}" if tok else "unexpected end of expression")
        self.i += 1
        return tok

    def call_args(self) -> None:
        self.take("(")
        if self.peek() != ")":
            self.expr_list(")")
        self.take(")")

    def expr_list(self, close: str) -> None:
        self.expr()
        while self.peek() == ",":
            self.take()
            if self.peek() == close:  # a trailing comma
                return
            self.expr()

    def primary(self) -> None:
        kind, tok = self.kind(), self.peek()
        if kind in ("string", "number", "literal"):
            self.i += 1
        elif tok == "(":
            self.take()
            self.expr()
            self.take(")")
        elif tok == "[":
            self.take()
            if self.peek() != "]":
                self.expr_list("]")
            self.take("]")
        elif tok == "{":
            self.take()
            self.inits(map_keys=True)
            self.take("}")
        else:
            if tok == ".":
                self.take()
            self.identifier()
            if self.peek() == "(":
                self.call_args()
            elif self.peek() == "{":  # a message construction: Name{field: value}
                self.take()
                self.inits(map_keys=False)
                self.take("}")

    def inits(self, map_keys: bool) -> None:
        while self.peek() != "}":
            self.expr() if map_keys else self.identifier()
            self.take(":")
            self.expr()
            if self.peek() != ",":
                return
            self.take()


def cel_syntax_error(text: str) -> str | None:
    """None when `text` is a syntactically valid CEL expression, else why not."""
    try:
        _Parser(text).parse()
    except _Error as e:
        return str(e)
    except RecursionError:
        return "expression nested too deeply"
    return None
