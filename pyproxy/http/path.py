"""Request path normalisation, as the HTTP connection manager configures it (pure: strings in, a verdict out).

Where it sits: `DownstreamConnection.on_headers_complete` (pyproxy.http.connection) calls `normalize()` once per
request, before routing, so that the route table, RBAC and the upstream all see the same path. Envoy does the
same in `ConnectionManagerUtility::maybeNormalizePath`, in this order:

1. `path_with_escaped_slashes_action` (HCM): `%2F`/`%5C` in the path (not the query) are KEEP_UNCHANGED (Envoy's
   default), REJECT_REQUEST (400), UNESCAPE_AND_FORWARD, or UNESCAPE_AND_REDIRECT (307 to the unescaped path).
2. `normalize_path` (HCM; istiod sets it true): RFC 3986 §5.2.4 dot-segment removal, with the extras of Envoy's
   `PathUtil::canonicalPath` (Chromium's URL canonicaliser): `%2e`/`%2E` count as `.`, a backslash is a
   separator (`/a/..\\c` -> `/c`), escapes of unreserved characters are decoded (`%41` -> `A`), other escapes are
   kept as written (`%5c%25` stays), a relative path gains its leading `/`, and `%00` is refused.
3. `merge_slashes` (HCM): `//` -> `/` in the path (the query is left alone).

The cases are Envoy's own (test/common/http/path_utility_test.cc), reproduced in tests/unit/http/test_path.py.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9a-fA-F]{2})")
_ESCAPED_SLASH = re.compile(r"%(?:2([fF])|5[cC])")


class Verdict(enum.Enum):
    FORWARD = "forward"
    REJECT = "reject"  # 400, details path_normalization_failed
    REDIRECT = "redirect"  # 307 to the new path (UNESCAPE_AND_REDIRECT only)


@dataclass(frozen=True, slots=True)
class PathPolicy:
    """The three HCM fields, read once per config. `active` is False for Envoy's defaults (nothing to do)."""

    normalize_path: bool = False
    merge_slashes: bool = False
    escaped_slashes_action: str = "KEEP_UNCHANGED"

    @property
    def active(self) -> bool:
        return self.normalize_path or self.merge_slashes or self.escaped_slashes_action not in (
            "KEEP_UNCHANGED", "IMPLEMENTATION_SPECIFIC_DEFAULT")


def normalize(target: str, policy: PathPolicy) -> tuple[Verdict, str]:
    """Apply `policy` to a request target (path plus optional `?query`); return the verdict and the new target."""
    q = target.find("?")
    path, query = (target, "") if q < 0 else (target[:q], target[q:])
    verdict = Verdict.FORWARD
    action = policy.escaped_slashes_action
    if action not in ("KEEP_UNCHANGED", "IMPLEMENTATION_SPECIFIC_DEFAULT") and "%" in path:
        unescaped = unescape_slashes(path)
        if unescaped != path:
            if action == "REJECT_REQUEST":
                return Verdict.REJECT, target
            if action == "UNESCAPE_AND_REDIRECT":
                verdict = Verdict.REDIRECT
            path = unescaped
    if policy.normalize_path:
        canonical = canonical_path(path)
        if canonical is None:
            return Verdict.REJECT, target
        path = canonical
    if policy.merge_slashes:
        path = merge_slashes(path)
    return verdict, path + query


def unescape_slashes(path: str) -> str:
    """`%2F` -> `/` and `%5C` -> `\\`, either case (Envoy's PathUtil::unescapeSlashes)."""
    return _ESCAPED_SLASH.sub(lambda m: "\\" if m.group(1) is None else "/", path)


def _canonical_escapes(path: str) -> str | None:
    """Decode escapes of unreserved characters, keep the others as written; None for `%00`."""
    if "%" not in path:
        return path
    if "%00" in path:
        return None

    def one(m: "re.Match[str]") -> str:
        byte = int(m.group(1), 16)
        return chr(byte) if byte in _UNRESERVED else m.group(0)

    return _ESCAPE.sub(one, path)


def canonical_path(path: str) -> str | None:
    """RFC 3986 dot-segment removal with Envoy's canonicalPath extras (see the module docstring)."""
    decoded = _canonical_escapes(path)
    if decoded is None:
        return None
    segments = decoded.replace("\\", "/").split("/")
    if segments and segments[0] == "":
        segments = segments[1:]  # the leading "/" (added back below; a relative path gains one)
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")  # "/a/." -> "/a/"
            continue
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)


def merge_slashes(path: str) -> str:
    """Collapse runs of `/` in the path part (Envoy's PathUtil::mergeSlashes; the query is untouched)."""
    q = path.find("?")
    head, query = (path, "") if q < 0 else (path[:q], path[q:])
    if "//" not in head:
        return path
    parts = head.split("/")
    merged = "/".join(p for p in parts if p)
    if head.startswith("/"):
        merged = "/" + merged
    if head.endswith("/") and merged != "/":  # merged ends with "/" only when it is "/" (parts are non-empty)
        merged += "/"
    return merged + query
