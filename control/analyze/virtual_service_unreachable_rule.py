"""IST0130 VirtualServiceUnreachableRule and IST0131 VirtualServiceIneffectiveMatch: rules and matches that
can never be used because an earlier rule already takes the traffic (first match wins).

Istio's analyzer: virtualservice/... analyzeUnreachableHTTPRules / analyzeUnreachableTCPRules:
* a rule after a rule with no `match` is unreachable ("only the last rule can have no matches");
* a match equal to an earlier one (ignoring its name) is ineffective (IST0131, Info), and a rule whose
  every match is ineffective is unreachable ("all matches used by prior rules").
This project also treats a match as overlapping when an earlier match is identical except that its `uri`
prefix covers this one's `uri` exact/prefix (e.g. `prefix: /api` before `prefix: /api/v1`).
Rules are named `"name"` when they have one, else `#index`, as istioctl does.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding
from control.istio.resources import thaw

_IGNORED = ("name", "statPrefix")


def _label(entry: Mapping[str, Any], index: int) -> str:
    name = entry.get("name")
    return f'"{name}"' if name else f"#{index}"


def _key(match: Mapping[str, Any]) -> dict:
    return {k: v for k, v in thaw(match).items() if k not in _IGNORED}


def _covers(earlier: dict, later: dict) -> bool:
    """An earlier match takes every request a later one would: equal, or a wider uri prefix."""
    if earlier == later:
        return True
    e_uri, l_uri = earlier.get("uri"), later.get("uri")
    if not (isinstance(e_uri, dict) and "prefix" in e_uri and isinstance(l_uri, dict)):
        return False
    rest_e = {k: v for k, v in earlier.items() if k != "uri"}
    rest_l = {k: v for k, v in later.items() if k != "uri"}
    target = l_uri.get("prefix", l_uri.get("exact"))
    return rest_e == rest_l and isinstance(target, str) and target.startswith(e_uri["prefix"]) \
        and earlier.get("ignoreUriCase") == later.get("ignoreUriCase")


def analyze(index: Index) -> Iterator[Finding]:
    for vs in index.of("VirtualService"):
        for section in ("http", "tcp", "tls"):
            yield from _section(vs, section)


def _section(vs, section: str) -> Iterator[Finding]:
    catch_all: int | None = None
    seen: list[tuple[dict, str]] = []  # (match, rule label)
    for i, rule in enumerate(get(vs.spec, section, default=())):
        label = _label(rule, i)
        path = f"spec.{section}[{i}]"
        if catch_all is not None:
            yield report(msg.VS_UNREACHABLE_RULE, vs, path, label, "only the last rule can have no matches")
            continue
        matches = get(rule, "match", default=())
        if not matches:
            catch_all = i
            continue
        ineffective = 0
        for j, match in enumerate(matches):
            key = _key(match)
            earlier = next((rule_label for match_key, rule_label in seen if _covers(match_key, key)), None)
            if earlier is not None:
                ineffective += 1
                yield report(msg.VS_INEFFECTIVE_MATCH, vs, f"{path}.match[{j}]", label, _label(match, j), earlier)
            seen.append((key, label))
        if ineffective == len(matches):
            yield report(msg.VS_UNREACHABLE_RULE, vs, path, label, "all matches used by prior rules")


