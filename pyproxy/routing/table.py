"""The route table: which virtual host and which route a request takes (Envoy's RDS `RouteConfiguration`).

Where it sits: the HTTP connection manager hands the router filter a request's `:authority`, path and headers;
`RouteTable.match()` returns a prebuilt `RouteMatchResult` (or None ⇒ 404, flag NR). Everything is compiled once
per config snapshot (regexes, lower-cased prefixes, cumulative weights, header-mutation layers) so the per-request
work is string comparisons only, and a match allocates one small object.

Envoy semantics implemented (envoy/config/route/v3/route.proto, route_components.proto; source/common/router/
config_impl.cc `RouteMatcher::findVirtualHost`, `RouteEntryImplBase::matchRoute`):

* Virtual host by `domains`: the Host header is lower-cased and matched **as is, port included**, unless the
  RouteConfiguration sets `ignore_port_in_host_matching` (then the port is stripped first). (Envoy's HCM options
  `strip_matching_host_port` / `strip_any_host_port` strip it earlier, in the connection manager.) Exact domains
  first, then suffix wildcards (`*.example.com`, also `*-bar.example.com`) longest first, then prefix wildcards
  (`foo.*`) longest first, then the single `*`. A wildcard never matches the empty string (`*.foo.com` does not
  match `.foo.com`). Duplicate domains, or two `*`, are config errors, as in Envoy.
* Routes in order, first match wins. Path matching uses the path without query and fragment: `prefix`, `path`,
  `safe_regex` (full match; Python `re` stands in for RE2), `path_separated_prefix` (`/api` matches `/api` and
  `/api/x`, not `/apix`); `case_sensitive: false` affects prefix/path/path_separated_prefix, never regex.
  Then every `headers` matcher (AND), every `query_parameters` matcher (AND) and `runtime_fraction`.
* HeaderMatcher: repeated headers are joined with "," before matching (Envoy `getAllOfHeaderAsString`); a missing
  header fails the matcher, even an inverted one, unless `treat_missing_header_as_empty`; `present_match` XOR
  `invert_match`; `range_match` is [start, end) over a base-10 integer. Pseudo headers `:method`, `:authority`,
  `:path`, `:scheme` are answered from the request line (Istio compiles `method:`/`authority:` matches into them).
* Query parameters: first value of the name, percent-decoded; `?key` has the value "".
* `VirtualHost.require_tls` (Istio Gateway `httpsRedirect`): a plain-http request gets a 301 to https.

Pure helpers the router uses after a match: `rewrite_path` (prefix_rewrite, regex_rewrite), `redirect_location`,
`choose_weighted_cluster`, `apply_header_mutations` (Envoy's `HeaderParser`: removals first, then additions per
`append_action`, honouring the deprecated `append`), `header_mutation_layers` (Envoy's order: weighted cluster,
then route, then virtual host, then route configuration; with `most_specific_header_mutations_wins` the three
route-level layers run least specific first so the route's own value wins).

TODO: `%DOWNSTREAM_REMOTE_ADDRESS%`-style substitution in header values is not implemented (values are literal).
"""
from __future__ import annotations

import bisect
import dataclasses
import random
import re
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence
from urllib.parse import unquote

from pyproxy.config.decode import ConfigError
from pyproxy.config.model import (
    ClusterWeight,
    HeaderMatcher,
    HeaderValueOption,
    QueryParameterMatcher,
    RedirectAction,
    RegexMatchAndSubstitute,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    StringMatcher,
    VirtualHost,
    WeightedCluster,
)
from pyproxy.http.headers import Headers

__all__ = [
    "RouteMatchResult",
    "RouteTable",
    "apply_header_mutations",
    "choose_weighted_cluster",
    "compile_header_matcher",
    "compile_string_matcher",
    "header_mutation_layers",
    "headers_match",
    "redirect_location",
    "rewrite_path",
    "split_host_port",
    "strip_query",
]

_FRACTION_DENOMINATOR = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
_PSEUDO = (":method", ":authority", ":path", ":scheme")


# ---------------------------------------------------------------- request view


class HeaderSource(Protocol):
    """What a header matcher reads: a request (`RequestView`) or, for retry_policy `retriable_headers`, a response
    (pyproxy.routing.retry)."""

    def header(self, name: str) -> str | None: ...


class RequestView:
    """The facts a matcher reads about one request. Built once per `match()` call; the query string is parsed
    only if some matcher asks for it."""

    __slots__ = ("headers", "authority", "path", "full_path", "method", "scheme", "metadata", "_query", "_lower_path")

    def __init__(self, headers: Headers, authority: str, full_path: str, method: str, scheme: str,
                 metadata: Mapping[str, Any] | None = None):
        self.headers = headers
        self.metadata = metadata  # the stream's dynamic metadata (route `dynamic_metadata` matchers read it)
        self.authority = authority
        self.full_path = full_path
        self.path = strip_query(full_path)
        self.method = method
        self.scheme = scheme
        self._query: dict[str, str] | None = None
        self._lower_path: str | None = None

    def header(self, name: str) -> str | None:
        """Header value with repeats joined by ","; pseudo headers from the request line."""
        if name[0] == ":":
            if name == ":method":
                return self.method
            if name == ":authority":
                return self.authority
            if name == ":path":
                return self.full_path
            if name == ":scheme":
                return self.scheme
            return None
        return self.headers.get(name)

    @property
    def lower_path(self) -> str:
        if self._lower_path is None:
            self._lower_path = self.path.lower()
        return self._lower_path

    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = parse_query(self.full_path)
        return self._query


def strip_query(path: str) -> str:
    """The path without `?query` and `#fragment` (Envoy `PathUtil::removeQueryAndFragment`)."""
    for sep in ("?", "#"):
        i = path.find(sep)
        if i >= 0:
            path = path[:i]
    return path


def parse_query(full_path: str) -> dict[str, str]:
    """Query parameters of a `:path`: first value per name wins, names and values percent-decoded."""
    i = full_path.find("?")
    if i < 0:
        return {}
    query = full_path[i + 1 :]
    j = query.find("#")
    if j >= 0:
        query = query[:j]
    out: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name = unquote(name)
        if name not in out:
            out[name] = unquote(value)
    return out


def split_host_port(authority: str) -> tuple[str, str | None]:
    """`host:port` → (host, "port"); IPv6 literals keep their brackets (Envoy `HeaderUtility::getPortStart`)."""
    colon = authority.rfind(":")
    if colon < 0:
        return authority, None
    bracket = authority.rfind("]")
    if bracket > colon:  # "[::1]" without a port
        return authority, None
    if authority.startswith("[") and bracket < 0:
        return authority, None
    if not authority.startswith("[") and authority.count(":") > 1:  # bare IPv6 address, no port
        return authority, None
    return authority[:colon], authority[colon + 1 :]


# ---------------------------------------------------------------- compiled matchers


def _compile_regex(pattern: str) -> re.Pattern[str]:
    """A RegexMatcher's pattern: cannot fail, decoding compiled it already (model.RegexMatcher refuses a bad
    one, naming the field)."""
    return re.compile(pattern)


def compile_string_matcher(m: StringMatcher, path: str = "") -> Callable[[str], bool]:
    """envoy.type.matcher.v3.StringMatcher → a predicate on a string. `ignore_case` has no effect on regex."""
    if m.safe_regex is not None:
        rx = _compile_regex(m.safe_regex.regex)
        return lambda v: rx.fullmatch(v) is not None
    for kind in ("exact", "prefix", "suffix", "contains"):
        expected = getattr(m, kind)
        if expected is not None:
            break
    else:  # the decoder enforces the oneof; a StringMatcher built in code may not
        raise ConfigError(path, "StringMatcher needs one of exact, prefix, suffix, contains, safe_regex")
    if m.ignore_case:
        e = expected.lower()
        if kind == "exact":
            return lambda v: v.lower() == e
        if kind == "prefix":
            return lambda v: v.lower().startswith(e)
        if kind == "suffix":
            return lambda v: v.lower().endswith(e)
        return lambda v: e in v.lower()
    if kind == "exact":
        return expected.__eq__
    if kind == "prefix":
        return lambda v: v.startswith(expected)
    if kind == "suffix":
        return lambda v: v.endswith(expected)
    return lambda v: expected in v


def _range_predicate(start: int, end: int) -> Callable[[str], bool]:
    def check(v: str) -> bool:
        v = v.strip()
        body = v[1:] if v[:1] in "+-" else v
        if not body.isascii() or not body.isdigit():
            return False
        return start <= int(v) < end

    return check


def compile_value_matcher(v: Any, path: str = "") -> Callable[[Any], bool]:
    """envoy.type.matcher.v3.ValueMatcher -> a predicate on a metadata value (a JSON-like Python value; None
    when absent). `list_match` needs a list value with some element matching `one_of`; `or_match` any of."""
    if v.string_match is not None:
        sm = compile_string_matcher(v.string_match, f"{path}.string_match")
        return lambda x: isinstance(x, str) and sm(x)
    if v.bool_match is not None:
        want = v.bool_match
        return lambda x: isinstance(x, bool) and x == want
    if v.list_match is not None:
        one = compile_value_matcher(v.list_match.one_of, f"{path}.list_match.one_of")

        def some_element(x: Any) -> bool:
            if isinstance(x, (list, tuple)):
                for e in x:
                    if one(e):
                        return True
            return False

        return some_element
    if v.or_match is not None:
        subs = tuple(compile_value_matcher(m, f"{path}.or_match.value_matchers[{i}]")
                     for i, m in enumerate(v.or_match.value_matchers))
        if len(subs) == 1:
            return subs[0]

        def any_matcher(x: Any) -> bool:  # loops, not generators: this runs per request per JWT condition
            for sub in subs:
                if sub(x):
                    return True
            return False

        return any_matcher
    present = bool(v.present_match)  # Envoy PresentMatcher: `present_match: false` never matches
    return lambda x: present and x is not None


def compile_metadata_matcher(m: Any, path: str = "") -> Callable[[Mapping[str, Any] | None], bool]:
    """envoy.type.matcher.v3.MetadataMatcher -> a predicate on dynamic metadata (`{filter: {key: value}}`):
    walk `filter` then the `path` keys, match the value, `invert` the answer (Envoy `Metadata::match`)."""
    keys = tuple(seg.key for seg in m.path)
    value_ok = compile_value_matcher(m.value, f"{path}.value")
    name = m.filter

    def check(metadata: Mapping[str, Any] | None) -> bool:
        node: Any = metadata.get(name) if metadata else None
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                node = None
                break
            node = node[key]
        return value_ok(node) != m.invert

    return check


def compile_header_matcher(hm: HeaderMatcher, path: str = "") -> Callable[[HeaderSource], bool]:
    """envoy.config.route.v3.HeaderMatcher → a predicate on a `HeaderSource` (Envoy `HeaderUtility::HeaderData`)."""
    name = hm.name.lower()
    if not name:
        raise ConfigError(f"{path}.name", "header matcher needs a name")
    invert = hm.invert_match
    if hm.present_match is not None:
        want = hm.present_match
        return lambda req: ((req.header(name) is not None) == want) != invert
    if hm.string_match is not None:
        pred = compile_string_matcher(hm.string_match, f"{path}.string_match")
    elif hm.exact_match is not None:
        if hm.exact_match == "":  # legacy: an empty exact_match is a presence match
            return lambda req: (req.header(name) is not None) != invert
        pred = hm.exact_match.__eq__
    elif hm.safe_regex_match is not None:
        rx = _compile_regex(hm.safe_regex_match.regex)
        pred = lambda v: rx.fullmatch(v) is not None  # noqa: E731
    elif hm.range_match is not None:
        pred = _range_predicate(hm.range_match.start, hm.range_match.end)
    elif hm.prefix_match is not None:
        p = hm.prefix_match
        pred = lambda v: v.startswith(p)  # noqa: E731
    elif hm.suffix_match is not None:
        s = hm.suffix_match
        pred = lambda v: v.endswith(s)  # noqa: E731
    elif hm.contains_match is not None:
        c = hm.contains_match
        pred = lambda v: c in v  # noqa: E731
    else:  # no match specifier: Envoy treats it as a presence match
        return lambda req: (req.header(name) is not None) != invert
    missing_as_empty = hm.treat_missing_header_as_empty

    def check(req: HeaderSource) -> bool:
        value = req.header(name)
        if value is None:
            if not missing_as_empty:
                return False
            value = ""
        return pred(value) != invert

    return check


def headers_match(matchers: Sequence[Callable[[RequestView], bool]], headers: Headers, **request: str) -> bool:
    """All compiled header matchers hold for `headers` (used by retry/fault code that matches bare headers)."""
    req = RequestView(headers, request.get("authority", ""), request.get("path", ""),
                      request.get("method", ""), request.get("scheme", ""))
    return all(m(req) for m in matchers)


def _compile_query_matcher(qm: QueryParameterMatcher, path: str) -> Callable[[RequestView], bool]:
    name = qm.name
    if qm.string_match is not None:
        pred = compile_string_matcher(qm.string_match, f"{path}.string_match")

        def check(req: RequestView) -> bool:
            value = req.query().get(name)
            return value is not None and pred(value)

        return check
    # present_match (or nothing set): the parameter must be there
    return lambda req: name in req.query()


def _compile_path(m: RouteMatch, path: str) -> tuple[Callable[[RequestView], bool], int | None]:
    """The path predicate and, for prefix-style matches, the length of the matched prefix."""
    sensitive = m.case_sensitive is not False
    if m.prefix is not None:
        p = m.prefix
        if sensitive:
            return (lambda req: req.path.startswith(p)), len(p)
        lp = p.lower()
        return (lambda req: req.lower_path.startswith(lp)), len(p)
    if m.path is not None:
        p = m.path
        if sensitive:
            return (lambda req: req.path == p), None
        lp = p.lower()
        return (lambda req: req.lower_path == lp), None
    if m.safe_regex is not None:
        rx = _compile_regex(m.safe_regex.regex)
        return (lambda req: rx.fullmatch(req.path) is not None), None
    if m.path_separated_prefix is not None:
        p = m.path_separated_prefix
        if not p.startswith("/") or p.endswith("/") or "?" in p or "#" in p:
            raise ConfigError(
                f"{path}.path_separated_prefix",
                f"{p!r} must start with '/', must not end with '/' and must not contain '?' or '#'",
            )
        if not sensitive:
            p = p.lower()
        ps = p + "/"

        def check(req: RequestView) -> bool:
            v = req.path if sensitive else req.lower_path
            return v == p or v.startswith(ps)

        return check, len(p)
    raise ConfigError(path, "route match needs one of prefix, path, safe_regex, path_separated_prefix")


# ---------------------------------------------------------------- path rewrite, redirect, weighted clusters


def _compile_substitution(sub: str, path: str) -> Callable[[re.Match[str]], str]:
    """An RE2 rewrite string (`\\1`, `\\0`, `\\\\`) → a function of the match (no Python-template surprises)."""
    parts: list[str | int] = []
    buf: list[str] = []
    i = 0
    while i < len(sub):
        ch = sub[i]
        if ch == "\\":
            if i + 1 >= len(sub):
                raise ConfigError(path, f"substitution {sub!r} ends with a lone backslash")
            nxt = sub[i + 1]
            if nxt.isdigit():
                if buf:
                    parts.append("".join(buf))
                    buf = []
                parts.append(int(nxt))
            elif nxt == "\\":
                buf.append("\\")
            else:
                raise ConfigError(path, f"substitution {sub!r}: invalid escape '\\{nxt}' (use \\0-\\9 or \\\\)")
            i += 2
            continue
        buf.append(ch)
        i += 1
    if buf:
        parts.append("".join(buf))
    frozen = tuple(parts)

    def render(m: re.Match[str]) -> str:
        return "".join(p if isinstance(p, str) else (m.group(p) or "") for p in frozen)

    return render


class _Rewrite:
    """A compiled `regex_rewrite` (RE2 GlobalReplace semantics: every non-overlapping match is replaced)."""

    __slots__ = ("rx", "render")

    def __init__(self, rr: RegexMatchAndSubstitute, path: str):
        assert rr.pattern is not None
        self.rx = _compile_regex(rr.pattern.regex)
        group_count = self.rx.groups
        self.render = _compile_substitution(rr.substitution, f"{path}.substitution")
        for ref in re.findall(r"\\(\d)", rr.substitution):
            if int(ref) > group_count:
                raise ConfigError(f"{path}.substitution", f"refers to group \\{ref} but the pattern has {group_count}")

    def apply(self, path: str) -> str:
        return self.rx.sub(self.render, path)


def _split_query(path: str) -> tuple[str, str]:
    i = path.find("?")
    return (path, "") if i < 0 else (path[:i], path[i:])


def _rewritten(path: str, prefix_len: int | None, prefix_rewrite: str | None, regex: _Rewrite | None) -> str:
    base, query = _split_query(path)
    if prefix_rewrite is not None and prefix_rewrite != "":
        if prefix_len is None:  # exact-path or regex route: the whole path is the matched part
            base = prefix_rewrite
        else:
            base = prefix_rewrite + base[prefix_len:]
    elif regex is not None:
        base = regex.apply(base)
    return base + query


def _matched_prefix_len(route: Route) -> int | None:
    m = route.match
    if m is None:
        return None
    if m.prefix is not None:
        return len(m.prefix)
    if m.path_separated_prefix is not None:
        return len(m.path_separated_prefix)
    return None


def rewrite_path(route_action: RouteAction, matched_route: Route, path: str) -> str:
    """The upstream `:path` after `prefix_rewrite` (replaces the matched prefix; for an exact/regex route the
    whole path) or `regex_rewrite` (on the path without query). The query string is kept. Unchanged if neither
    is set. (RouteMatchResult.rewrite_path does the same with the regex precompiled.)"""
    regex = _Rewrite(route_action.regex_rewrite, "regex_rewrite") if route_action.regex_rewrite else None
    return _rewritten(path, _matched_prefix_len(matched_route), route_action.prefix_rewrite, regex)


def redirect_location(
    redirect_action: RedirectAction,
    scheme: str,
    authority: str,
    path: str,
    *,
    matched_route: Route | None = None,
) -> str:
    """The `location` of a redirect (Envoy `RouteEntryImplBase::newUri`). The port is dropped from the request's
    host when `port_redirect` is set or when the scheme changes to https from :80 (or to http from :443);
    `path_redirect` replaces the path (its own `?query`, if any, replaces the request's); `prefix_rewrite` /
    `regex_rewrite` work as on a route; `strip_query` drops the request's query."""
    ra = redirect_action
    new_scheme = "https" if ra.https_redirect else (ra.scheme_redirect or scheme)
    if ra.host_redirect:
        host = ra.host_redirect
    else:
        host, port = split_host_port(authority)
        keep_port = port is not None and not (
            ra.port_redirect
            or (new_scheme == "https" and port == "80")
            or (new_scheme == "http" and port == "443")
        )
        if keep_port:
            host = authority
    if ra.port_redirect:
        host = f"{host}:{ra.port_redirect}"
    base, query = _split_query(path)
    if ra.path_redirect is not None and ra.path_redirect != "":
        if "?" in ra.path_redirect:
            return f"{new_scheme}://{host}{ra.path_redirect}"
        base = ra.path_redirect
    elif ra.prefix_rewrite is not None or ra.regex_rewrite is not None:
        prefix_len = _matched_prefix_len(matched_route) if matched_route is not None else None
        regex = _Rewrite(ra.regex_rewrite, "regex_rewrite") if ra.regex_rewrite else None
        base = _rewritten(base, prefix_len, ra.prefix_rewrite, regex)
    if ra.strip_query:
        query = ""
    return f"{new_scheme}://{host}{base}{query}"


class _WeightedChooser:
    """Cumulative weights of a `weighted_clusters` list; weight-0 entries are never chosen (Envoy picks
    `random % total_weight` and walks the ranges)."""

    __slots__ = ("clusters", "ends", "total")

    def __init__(self, wc: WeightedCluster, path: str = ""):
        self.clusters = tuple(wc.clusters)
        ends: list[int] = []
        total = 0
        for c in self.clusters:
            total += c.weight or 0
            ends.append(total)
        if not self.clusters or total <= 0:
            raise ConfigError(f"{path}.clusters", "weighted_clusters needs at least one cluster with weight > 0")
        self.ends = tuple(ends)
        self.total = total

    def choose(self, rng: random.Random) -> ClusterWeight:
        return self.clusters[bisect.bisect_right(self.ends, rng.randrange(self.total))]


def choose_weighted_cluster(weighted_clusters: WeightedCluster, rng: random.Random) -> ClusterWeight:
    """One cluster of `weighted_clusters`, with probability weight / sum(weights)."""
    return _WeightedChooser(weighted_clusters).choose(rng)


# ---------------------------------------------------------------- header mutations


def _check_mutable(name: str, path: str) -> None:
    lowered = name.lower()
    if lowered.startswith(":") or lowered == "host":
        raise ConfigError(path, f"header {name!r} may not be modified (':'-prefixed headers and host are reserved)")


HeaderLayer = tuple[tuple[HeaderValueOption, ...], tuple[str, ...]]


def apply_header_mutations(headers: Headers, to_add: Iterable[HeaderValueOption], to_remove: Iterable[str] = ()) -> None:
    """Envoy `HeaderParser::evaluateHeaders`: remove `to_remove`, then add each option per its `append_action`
    (the deprecated `append: false` means OVERWRITE_IF_EXISTS_OR_ADD). An empty value is skipped unless
    `keep_empty_value`."""
    for name in to_remove:
        headers.remove(name)
    for opt in to_add:
        hv = opt.header
        if hv is None:
            continue
        name, value = hv.key.lower(), hv.value
        if value == "" and not opt.keep_empty_value:
            continue
        action = opt.action
        if action == "APPEND_IF_EXISTS_OR_ADD":
            headers.add(name, value)
        elif action == "OVERWRITE_IF_EXISTS_OR_ADD":
            headers.set(name, value)
        elif action == "ADD_IF_ABSENT":
            if name not in headers:
                headers.add(name, value)
        elif action == "OVERWRITE_IF_EXISTS":
            if name in headers:
                headers.set(name, value)


def header_mutation_layers(
    route_config: RouteConfiguration,
    virtual_host: VirtualHost,
    route: Route,
    *,
    response: bool = False,
) -> tuple[HeaderLayer, ...]:
    """The (to_add, to_remove) layers in Envoy's evaluation order: route, virtual host, route configuration;
    reversed when `most_specific_header_mutations_wins`. Empty layers are left out. (The weighted-cluster layer,
    when a weighted cluster was chosen, always runs first: see RouteMatchResult.request_layers.)"""
    kind = "response" if response else "request"
    layers: list[HeaderLayer] = []
    for obj in (route, virtual_host, route_config):
        to_add = getattr(obj, f"{kind}_headers_to_add")
        to_remove = tuple(n.lower() for n in getattr(obj, f"{kind}_headers_to_remove"))
        if to_add or to_remove:
            layers.append((tuple(to_add), to_remove))
    if route_config.most_specific_header_mutations_wins:
        layers.reverse()
    return tuple(layers)


# ---------------------------------------------------------------- the result of a match


class RouteMatchResult:
    """A matched (virtual host, route) with everything the router needs precomputed. One instance per route,
    built with the table and shared by every request that matches it: treat it as read-only."""

    __slots__ = (
        "route_config",
        "virtual_host",
        "route",
        "name",
        "action",
        "redirect",
        "direct_response",
        "retry_policy",
        "retry_plan",
        "timeout",
        "rewrites_path",
        "host_rewrite",
        "mirror_policies",
        "attempt_count_header",
        "attempt_count_in_response",
        "hash_policies",
        "_prefix_len",
        "_rewrite",
        "_redirect_rewrite",
        "_chooser",
        "_request_layers",
        "_response_layers",
        "_cluster_layers",
    )

    def __init__(self, rc: RouteConfiguration, vh: VirtualHost, route: Route, path: str):
        self.route_config = rc
        self.virtual_host = vh
        self.route = route
        self.name = route.name
        self.action: RouteAction | None = route.route
        self.redirect: RedirectAction | None = route.redirect
        self.direct_response = route.direct_response
        act = route.route
        # route-level retry policy replaces the virtual host's entirely (route_components.proto)
        self.retry_policy = (act.retry_policy if act and act.retry_policy else None) or vh.retry_policy
        self.timeout = act.effective_timeout if act else 0.0
        from pyproxy.routing.retry import RetryPlan  # here: retry.py imports this module

        self.retry_plan = RetryPlan(self.retry_policy, self.timeout)  # the policy's per-request work, done once
        # what the router reads per request, as plain fields here: compiled, reading them off the config model's
        # dataclasses is a generic attribute lookup each (scripts/build_compiled.py)
        self.rewrites_path = bool(act and (act.prefix_rewrite or act.regex_rewrite is not None))
        self.host_rewrite = act.host_rewrite_literal if act and act.host_rewrite_literal else ""
        self.mirror_policies = tuple(act.request_mirror_policies) if act else ()
        self.attempt_count_header = bool(vh.include_request_attempt_count)
        self.attempt_count_in_response = bool(vh.include_attempt_count_in_response)
        self.hash_policies = tuple(act.hash_policy) if act else ()
        self._prefix_len = _matched_prefix_len(route)
        self._rewrite = _Rewrite(act.regex_rewrite, f"{path}.route.regex_rewrite") if act and act.regex_rewrite else None
        rd = route.redirect
        self._redirect_rewrite = (
            _Rewrite(rd.regex_rewrite, f"{path}.redirect.regex_rewrite") if rd and rd.regex_rewrite else None
        )
        self._chooser = (
            _WeightedChooser(act.weighted_clusters, f"{path}.route.weighted_clusters")
            if act and act.weighted_clusters
            else None
        )
        self._request_layers = header_mutation_layers(rc, vh, route)
        self._response_layers = header_mutation_layers(rc, vh, route, response=True)
        cluster_layers: dict[str, tuple[HeaderLayer | None, HeaderLayer | None]] = {}
        for c in act.weighted_clusters.clusters if act and act.weighted_clusters else ():
            req = (tuple(c.request_headers_to_add), tuple(n.lower() for n in c.request_headers_to_remove))
            resp = (tuple(c.response_headers_to_add), tuple(n.lower() for n in c.response_headers_to_remove))
            cluster_layers[c.name] = (req if req != ((), ()) else None, resp if resp != ((), ()) else None)
        self._cluster_layers = cluster_layers

    @property
    def kind(self) -> str:
        """"route", "redirect" or "direct_response"."""
        if self.action is not None:
            return "route"
        return "redirect" if self.redirect is not None else "direct_response"

    def choose_cluster(self, headers: Headers, rng: random.Random) -> tuple[str | None, ClusterWeight | None]:
        """The upstream cluster name (None ⇒ cluster not found: `cluster_header` absent) and, for
        weighted_clusters, the chosen entry (its header layers and per-filter config apply)."""
        act = self.action
        if act is None:
            return None, None
        if self._chooser is not None:
            cw = self._chooser.choose(rng)
            return cw.name, cw
        if act.cluster is not None:
            return act.cluster, None
        value = headers.get(act.cluster_header.lower()) if act.cluster_header else None
        return (value or None), None

    def rewrite_path(self, path: str) -> str:
        """`:path` after prefix_rewrite / regex_rewrite (the router then sets x-envoy-original-path)."""
        act = self.action
        if act is None or (not act.prefix_rewrite and self._rewrite is None):
            return path
        return _rewritten(path, self._prefix_len, act.prefix_rewrite, self._rewrite)

    def redirect_location(self, scheme: str, authority: str, path: str) -> str:
        assert self.redirect is not None
        ra = self.redirect
        if ra.regex_rewrite is None:
            return redirect_location(ra, scheme, authority, path, matched_route=self.route)
        # precompiled regex: do the path part here, the rest through the shared helper
        base, query = _split_query(path)
        new_path = _rewritten(base, None, None, self._redirect_rewrite) + query
        # regex_rewrite is in a oneof with path_redirect and prefix_rewrite: without it, nothing rewrites the path
        return redirect_location(dataclasses.replace(ra, regex_rewrite=None), scheme, authority, new_path)

    @property
    def redirect_status(self) -> int:
        return RedirectAction.STATUS[self.redirect.response_code] if self.redirect else 0

    def _layers(self, which: int, base: tuple[HeaderLayer, ...], cw: ClusterWeight | None) -> tuple[HeaderLayer, ...]:
        layer = self._cluster_layers[cw.name][which] if cw is not None else None  # cw: one of this route's
        return base if layer is None else (layer, *base)

    def request_layers(self, cluster_weight: ClusterWeight | None = None) -> tuple[HeaderLayer, ...]:
        """Request header layers in evaluation order (weighted cluster first, when one was chosen)."""
        return self._layers(0, self._request_layers, cluster_weight)

    def response_layers(self, cluster_weight: ClusterWeight | None = None) -> tuple[HeaderLayer, ...]:
        return self._layers(1, self._response_layers, cluster_weight)

    def apply_request_headers(self, headers: Headers, cluster_weight: ClusterWeight | None = None) -> None:
        if cluster_weight is None and not self._request_layers:
            return  # no header rules on this route (the common case): two calls fewer a request
        for to_add, to_remove in self.request_layers(cluster_weight):
            apply_header_mutations(headers, to_add, to_remove)

    def apply_response_headers(self, headers: Headers, cluster_weight: ClusterWeight | None = None) -> None:
        if cluster_weight is None and not self._response_layers:
            return
        for to_add, to_remove in self.response_layers(cluster_weight):
            apply_header_mutations(headers, to_add, to_remove)

    def per_filter_config(self, filter_name: str, cluster_weight: ClusterWeight | None = None) -> Any:
        """The most specific `typed_per_filter_config[filter_name]`: weighted cluster, route, virtual host."""
        for cfg in (
            cluster_weight.typed_per_filter_config if cluster_weight is not None else None,
            self.route.typed_per_filter_config,
            self.virtual_host.typed_per_filter_config,
        ):
            if cfg and filter_name in cfg:
                return cfg[filter_name]
        return None

    def __repr__(self) -> str:
        target = (
            (self.action.cluster or self.action.cluster_header or "weighted_clusters")
            if self.action
            else self.kind
        )
        return f"RouteMatchResult(vhost={self.virtual_host.name!r}, route={self.name!r}, -> {target})"


# ---------------------------------------------------------------- the table


class _CompiledRoute:
    __slots__ = ("path_match", "checks", "fraction", "result")

    def __init__(self, rc: RouteConfiguration, vh: VirtualHost, route: Route, path: str):
        m = route.match
        assert m is not None
        self.path_match, _ = _compile_path(m, f"{path}.match")
        checks: list[Callable[[RequestView], bool]] = []
        for i, hm in enumerate(m.headers):
            checks.append(compile_header_matcher(hm, f"{path}.match.headers[{i}]"))
        for i, qm in enumerate(m.query_parameters):
            checks.append(_compile_query_matcher(qm, f"{path}.match.query_parameters[{i}]"))
        for i, dm in enumerate(m.dynamic_metadata):
            checks.append(_on_metadata(compile_metadata_matcher(dm, f"{path}.match.dynamic_metadata[{i}]")))
        self.checks = tuple(checks)
        fraction = None
        if m.runtime_fraction is not None and m.runtime_fraction.default_value is not None:
            fp = m.runtime_fraction.default_value
            fraction = (fp.numerator, _FRACTION_DENOMINATOR[fp.denominator])
        self.fraction = fraction
        for i, opt in enumerate(route.request_headers_to_add):
            if opt.header is not None:
                _check_mutable(opt.header.key, f"{path}.request_headers_to_add[{i}].header.key")
        for i, name in enumerate(route.request_headers_to_remove):
            _check_mutable(name, f"{path}.request_headers_to_remove[{i}]")
        self.result = RouteMatchResult(rc, vh, route, path)

    def matches(self, req: RequestView, rng: random.Random | None) -> bool:
        if not self.path_match(req):
            return False
        for check in self.checks:
            if not check(req):
                return False
        if self.fraction is not None:
            numerator, denominator = self.fraction
            draw = rng.randrange(denominator) if rng is not None else 0
            if draw >= numerator:
                return False
        return True


def _on_metadata(ok: Callable[[Mapping[str, Any] | None], bool]) -> Callable[[RequestView], bool]:
    """A route check from a dynamic-metadata predicate (route `match.dynamic_metadata`)."""
    def check(req: RequestView) -> bool:
        return ok(req.metadata)
    return check


class _CompiledVirtualHost:
    __slots__ = ("vh", "routes", "tls_redirect")

    def __init__(self, rc: RouteConfiguration, vh: VirtualHost, path: str):
        self.vh = vh
        self.routes = tuple(
            _CompiledRoute(rc, vh, r, f"{path}.routes[{i}]") for i, r in enumerate(vh.routes)
        )
        tls_route = Route(
            name=f"{vh.name}/require_tls",
            match=RouteMatch(prefix="/"),
            redirect=RedirectAction(https_redirect=True),
        )
        self.tls_redirect = RouteMatchResult(rc, vh, tls_route, path) if vh.require_tls != "NONE" else None


class RouteTable:
    """A compiled RouteConfiguration. Build once per config snapshot; `match()` per request.
    Raises ConfigError (with a field path such as `virtual_hosts[1].domains[0]`) on an invalid config."""

    __slots__ = ("config", "_exact", "_suffixes", "_prefixes", "_default", "_ignore_port")

    def __init__(self, rc: RouteConfiguration):
        self.config = rc
        self._ignore_port = rc.ignore_port_in_host_matching
        exact: dict[str, _CompiledVirtualHost] = {}
        suffixes: dict[int, dict[str, _CompiledVirtualHost]] = {}
        prefixes: dict[int, dict[str, _CompiledVirtualHost]] = {}
        default: _CompiledVirtualHost | None = None
        prefix = f"route_config {rc.name!r}: " if rc.name else ""
        for i, vh in enumerate(rc.virtual_hosts):
            vpath = f"virtual_hosts[{i}]"
            try:
                cvh = _CompiledVirtualHost(rc, vh, vpath)
            except ConfigError as e:
                raise ConfigError(e.path, prefix + e.message) from None
            for j, raw in enumerate(vh.domains):
                domain = raw.lower()
                dpath = f"{vpath}.domains[{j}]"
                if domain == "*":
                    if default is not None:
                        raise ConfigError(dpath, f"{prefix}only a single wildcard domain '*' is permitted")
                    default = cvh
                    continue
                if not domain:
                    raise ConfigError(dpath, f"{prefix}empty domain")
                if domain[0] == "*":
                    bucket, key = suffixes.setdefault(len(domain) - 1, {}), domain[1:]
                elif domain[-1] == "*":
                    bucket, key = prefixes.setdefault(len(domain) - 1, {}), domain[:-1]
                else:
                    bucket, key = exact, domain
                if key in bucket:
                    raise ConfigError(dpath, f"{prefix}duplicate domain {raw!r} (domains must be unique)")
                bucket[key] = cvh
        self._exact = exact
        # longest wildcard first: (length, {fragment: vhost})
        self._suffixes = tuple(sorted(suffixes.items(), reverse=True))
        self._prefixes = tuple(sorted(prefixes.items(), reverse=True))
        self._default = default

    # -- virtual host selection
    def find_virtual_host(self, authority: str) -> VirtualHost | None:
        cvh = self._find(authority)
        return cvh.vh if cvh else None

    def _find(self, authority: str) -> _CompiledVirtualHost | None:
        if not self._exact and not self._suffixes and not self._prefixes:
            return self._default
        host = authority
        if self._ignore_port:
            host = split_host_port(host)[0]
        host = host.lower()
        found = self._exact.get(host)
        if found is not None:
            return found
        n = len(host)
        for length, bucket in self._suffixes:
            if length < n:
                found = bucket.get(host[n - length :])
                if found is not None:
                    return found
        for length, bucket in self._prefixes:
            if length < n:
                found = bucket.get(host[:length])
                if found is not None:
                    return found
        return self._default

    # -- the per-request entry point
    def match(
        self,
        authority: str,
        path: str,
        headers: Headers,
        *,
        method: str = "GET",
        scheme: str = "http",
        internal: bool = False,
        rng: random.Random | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RouteMatchResult | None:
        """The first matching route of the selected virtual host, or None (⇒ 404 NR).

        `path` is the request's `:path` (query included; matching ignores it). `scheme` is the downstream
        scheme ("https" on a TLS listener): with `require_tls` ALL (or EXTERNAL_ONLY and not `internal`) a
        plain-http request gets the virtual host's https redirect (kind "redirect", 301). `rng` draws
        `runtime_fraction` (without one, a fraction > 0 always matches)."""
        cvh = self._find(authority)
        if cvh is None:
            return None
        if cvh.tls_redirect is not None and scheme != "https":
            if cvh.vh.require_tls == "ALL" or not internal:
                return cvh.tls_redirect
        req = RequestView(headers, authority, path, method, scheme, metadata)
        for route in cvh.routes:
            if route.matches(req, rng):
                return route.result
        return None

    def __repr__(self) -> str:
        count = len(self.config.virtual_hosts)
        return f"RouteTable({self.config.name!r}, virtual_hosts={count})"
