"""Rules and matches of a VirtualService that can never be used because an earlier rule already takes the
traffic (first match wins): pure, over the spec, shared by validation (warnings, as Istio's webhook gives)
and analysis (IST0130 VirtualServiceUnreachableRule, IST0131 VirtualServiceIneffectiveMatch).

Istio's checks: pkg/config/validation/validation.go analyzeUnreachableHTTPRules / ...TCPRules / ...TLSRules:
* a rule after a rule with no `match` is unreachable: "only the last rule can have no matches" when it has no
  match either, else "route without matches defined before" once per match;
* a match equal to an earlier one (ignoring its `name`) is ineffective, and a rule whose every match is
  ineffective is unreachable ("all matches used by prior rules");
* HTTP only (genMatchHTTPRoutes / coveredValidation): a `uri.prefix` match covered by an earlier, different
  prefix with the same port, method (GET when unset), authority, headers, query params and withoutHeaders
  (equal, or the earlier value a prefix-string of the later) is ineffective too ("... of prefix /a on ..."),
  without making its rule unreachable.
Rules and matches are named `"name"` when they have one, else `#index`, as istioctl does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from control.istio.resources import get, thaw


@dataclass(frozen=True)
class Unused:
    """An unreachable rule (`reason` set) or an ineffective match (`match` and `earlier` set), at `path`
    (relative to the spec, e.g. `http[1]`)."""

    path: str
    rule: str
    reason: str = ""
    match: str = ""
    earlier: str = ""


def _label(entry: Mapping[str, Any], index: int) -> str:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    return f'"{name}"' if name else f"#{index}"


def _string_match(value: Any) -> str:
    """assignExactOrPrefix: `exact:<v>`, `prefix:<v>` or "" (a regex counts as unset, as in Istio)."""
    if not isinstance(value, Mapping):
        return ""
    if value.get("exact"):
        return f"exact:{value['exact']}"
    if value.get("prefix"):
        return f"prefix:{value['prefix']}"
    return ""


@dataclass(frozen=True)
class _PrefixMatch:
    """OverlappingMatchValidationForHTTPRoute: what a `uri.prefix` match is compared on."""

    rule: str
    match: str
    path: str
    prefix: str
    port: Any
    method: str
    authority: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    without: Mapping[str, str]


def _prefix_match(match: Mapping[str, Any], rule: str, label: str, path: str) -> _PrefixMatch | None:
    prefix = get(match, "uri", "prefix")
    if not prefix:
        return None

    def strings(field: str) -> dict[str, str]:
        return {k: _string_match(v) for k, v in (get(match, field, default={}) or {}).items()}
    return _PrefixMatch(rule, label, path, str(prefix), match.get("port"),
                        _string_match(match.get("method")) or "exact:GET", _string_match(match.get("authority")),
                        strings("headers"), strings("queryParams"), strings("withoutHeaders"))


def _same_or_wider(a: str, b: str) -> bool:
    return a == b or a.startswith(b)


def _covered(a: _PrefixMatch, b: _PrefixMatch) -> bool:
    """coveredValidation: every request `b` takes, the earlier `a` already takes."""
    if not b.prefix.startswith(a.prefix) or a.port != b.port:
        return False
    if not (_same_or_wider(a.method, b.method) and _same_or_wider(a.authority, b.authority)):
        return False
    for mine, theirs in ((a.headers, b.headers), (a.query, b.query), (a.without, b.without)):
        if len(mine) != len(theirs) or any(k not in theirs or not _same_or_wider(v, theirs[k])
                                           for k, v in mine.items()):
            return False
    return True


def unused_rules(spec: Mapping[str, Any]) -> Iterator[Unused]:
    """Every unreachable rule and ineffective match of a VirtualService spec, in Istio's order."""
    for section in ("http", "tcp", "tls"):
        yield from _section(spec, section)


def _section(spec: Mapping[str, Any], section: str) -> Iterator[Unused]:
    empty_seen = False
    seen: dict[str, str] = {}  # match (as JSON-ish repr, name left out) -> the rule that had it first
    prefixes: list[_PrefixMatch] = []
    for i, rule in enumerate(get(spec, section, default=()) or ()):
        label = _label(rule, i) if section == "http" else f"#{i}"
        path = f"{section}[{i}]"
        matches = get(rule, "match", default=())
        if not matches:
            if empty_seen:
                yield Unused(path, label, "only the last rule can have no matches")
            empty_seen = True
            continue
        duplicates = 0
        for j, match in enumerate(matches):
            if empty_seen:
                yield Unused(path, label, "route without matches defined before")
                continue
            plain = {k: v for k, v in thaw(match).items() if not (section == "http" and k == "name")}
            key = repr(sorted(plain.items()))
            match_label = _label(match, j) if section == "http" else f"#{j}"
            if key in seen:
                duplicates += 1
                yield Unused(f"{path}.match[{j}]", label, match=match_label, earlier=seen[key])
                continue
            seen[key] = label
            if section == "http":
                prefix = _prefix_match(match, label, match_label, f"{path}.match[{j}]")
                if prefix is not None:
                    prefixes.append(prefix)
        if duplicates == len(matches):
            yield Unused(path, label, "all matches used by prior rules")
    for n, a in enumerate(prefixes):
        for b in prefixes[n + 1:]:
            if b.prefix != a.prefix and _covered(a, b):
                yield Unused(b.path, b.rule, match=f"{b.match} of prefix {b.prefix}",
                             earlier=f"{a.match} of prefix {a.prefix} on {a.rule}")
