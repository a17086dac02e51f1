"""RDS: RouteConfigurations from VirtualServices (and default routes for services without one).

istiod's httproute.go + route/route.go:

* Sidecar outbound: one RouteConfiguration per HTTP service port, named by the port (`"9080"`). Each
  visible service on that port gets a virtual host `<fqdn>:<port>` whose `domains` are what a client may put in
  Host (`generateVirtualHostDomains`): the FQDN, and for Kubernetes services the short forms the proxy's
  namespace allows (same namespace: `reviews`, `reviews.default.svc`, `reviews.default`; other namespace:
  `reviews.default`, `reviews.default.svc`), each also with `:<port>`, then the cluster IP. A VirtualService
  bound to `mesh` whose host names the service replaces its default route (`name: default`, prefix `/`, to
  `outbound|<port>||<fqdn>`); its hosts that are no service become their own virtual host (port 80 only, as
  istiod). The first VirtualService for a host wins. Virtual hosts are sorted by name and a catch-all is
  appended: `allow_any` -> PassthroughCluster (outboundTrafficPolicy ALLOW_ANY) or `block_all` -> direct 502
  (REGISTRY_ONLY).
* `"http_proxy"`: the same virtual hosts for all ports merged (istiod's RDSHttpProxy, for a Sidecar egress
  listener of protocol HTTP_PROXY): port-80 hosts keep every domain, other ports only their `host:port` forms.
  The explicit outbound listener 15001 uses it (see listeners.py).
* Gateways: `http.<port>` for plain HTTP servers, `https.<port>.<portName>.<gateway>.<ns>` per terminating
  HTTPS server; virtual hosts from the VirtualServices bound to the gateway whose hosts intersect the server's
  `hosts` (`ns/host`); `httpsRedirect` -> `require_tls: ALL`; nothing bound -> `blackhole:<port>` (404).

Each HTTPRoute becomes one Envoy route per `match` block (OR), in order, stopping after a catch-all, carrying
istiod's `metadata.filter_metadata.istio.config` naming its VirtualService (istioctl's VIRTUAL SERVICE column;
default routes have none). Matches:
uri exact/prefix/regex -> path/prefix/safe_regex (`ignoreUriCase` -> case_sensitive false), headers /
withoutHeaders (invert_match) / method / authority / scheme -> header matchers sorted by name (empty or regex
`*` = presence), queryParams -> query_parameters; `port`, `sourceLabels`, `sourceNamespace`, `gateways` are
compile-time filters. Actions: one destination -> `cluster`, several -> `weighted_clusters` (weight 0 dropped);
`rewrite` -> prefix_rewrite / regex_rewrite / host_rewrite_literal; `redirect`; `directResponse`; `headers` ->
*_headers_to_add (set = OVERWRITE_IF_EXISTS_OR_ADD, add = APPEND_IF_EXISTS_OR_ADD) / *_to_remove; `timeout`
(Istio default 0s = disabled; max_grpc_timeout the same); `retries` (Istio's default policy when unset:
2 attempts, connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes, previous_hosts,
host_selection_retry_max_attempts 5); `fault` -> typed_per_filter_config envoy.filters.http.fault; `mirror(s)`
-> request_mirror_policies; `corsPolicy` -> typed_per_filter_config envoy.filters.http.cors; consistent-hash
DestinationRules -> hash_policy.
"""
from __future__ import annotations

import dataclasses
from collections import abc
from typing import Any, Callable, Mapping

from control.istio.resources import Resource
from control.mesh import MESH_GATEWAY, REGISTRY_ONLY, gateway_key, host_matches, hosts_intersect, resolve_host
from control.registry.model import Service
from control.translate import request_authn
from control.translate.clusters import ClusterSpec
from control.translate.common import (CORS_POLICY, FAULT, PASSTHROUGH_CLUSTER, PREVIOUS_HOSTS, PREVIOUS_PRIORITIES,
                                      ROUTE_CONFIGURATION, Notes, Proxy, cluster_name, config_metadata, duration,
                                      envoy_duration, fail, fractional_percent, parse_seconds, percent_of)

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRY_ATTEMPTS = 2
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
HTTP_PROXY_ROUTE = "http_proxy"
REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT",
                  308: "PERMANENT_REDIRECT"}
GRPC_CODES = {"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
              "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
              "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
              "DATA_LOSS": 15, "UNAUTHENTICATED": 16}
PSEUDO_MATCH_HEADERS = {"method": ":method", "authority": ":authority", "scheme": ":scheme"}


class RouteContext:
    """What route translation needs besides the rule: the proxy, the clusters it has (for consistent-hash
    policies), the listener port, the gateway the routes are for (`mesh` for sidecars) and whether its
    server terminates TLS (istiod RouteOptions.IsTLS: a redirect's default scheme)."""

    __slots__ = ("proxy", "specs", "port", "gateway", "tls")

    def __init__(self, proxy: Proxy, specs: Mapping[str, ClusterSpec], port: int, gateway: str = MESH_GATEWAY,
                 tls: bool = False):
        self.proxy, self.specs, self.port, self.gateway, self.tls = proxy, specs, port, gateway, tls


# --- matches ---------------------------------------------------------------------------------------------

def string_match(sm: Mapping[str, Any] | None) -> dict | None:
    """Istio StringMatch -> Envoy StringMatcher; None for a presence-only match (empty, or regex `*`)."""
    if not sm:
        return None
    if "exact" in sm:
        return {"exact": str(sm["exact"])}
    if "prefix" in sm:
        return {"prefix": str(sm["prefix"])}
    if "regex" in sm:
        if sm["regex"] == "*":
            return None
        return {"safe_regex": {"regex": str(sm["regex"])}}
    return None


def header_matcher(name: str, sm: Mapping[str, Any] | None, invert: bool = False) -> dict:
    out: dict = {"name": name}
    matcher = string_match(sm)
    if matcher is None:
        out["present_match"] = True
    else:
        out["string_match"] = matcher
        if invert:
            out["treat_missing_header_as_empty"] = True
    if invert:
        out["invert_match"] = True
    return out


def route_match(m: Mapping[str, Any]) -> dict:
    """istiod TranslateRouteMatch: one HTTPMatchRequest -> an Envoy RouteMatch."""
    out: dict = {}
    uri = m.get("uri") or {}
    if "exact" in uri:
        out["path"] = str(uri["exact"])
    elif "prefix" in uri:
        out["prefix"] = str(uri["prefix"])
    elif "regex" in uri:
        out["safe_regex"] = {"regex": str(uri["regex"])}
    else:
        out["prefix"] = "/"
    if m.get("ignoreUriCase"):
        out["case_sensitive"] = False
    headers: list[dict] = []
    claims: list[tuple[str, dict]] = []  # JWT claim routing: route dynamic_metadata (request_authn.py)
    for key, invert in (("headers", False), ("withoutHeaders", True)):
        for name, sm in (m.get(key) or {}).items():
            name = str(name)
            rc = request_authn.routing_claims(name)
            if rc is not None:
                claims.append((name, request_authn.claim_route_matcher(rc, string_match(sm), invert)))
                continue
            name = name.lower()
            if not invert and name in ("uri", "scheme", "method", "authority"):
                continue  # ignored by Istio
            headers.append(header_matcher(name, sm, invert=invert))
    for key, pseudo in PSEUDO_MATCH_HEADERS.items():
        if m.get(key):
            headers.append(header_matcher(pseudo, m[key]))
    if headers:
        out["headers"] = sorted(headers, key=lambda h: h["name"])
    params = []
    for name in sorted(m.get("queryParams") or {}):
        sm = m["queryParams"][name]
        matcher = string_match(sm)
        params.append({"name": str(name), "present_match": True} if matcher is None
                      else {"name": str(name), "string_match": matcher})
    if params:
        out["query_parameters"] = params
    if claims:
        out["dynamic_metadata"] = [c for _, c in sorted(claims, key=lambda t: t[0])]
    return out


def trace_operation(host: str, port: int) -> str:
    """A route's `decorator.operation` (the span name) when it sends everything to one service (istiod
    telemetry.TraceOperation): `<host>:<port>/*`."""
    return f"{host}:{port}/*"


def route_operation(route: Mapping[str, Any], vs_name: str, port: int) -> str:
    """istiod getRouteOperation: the decorator of a VirtualService route. `<host>:<port><path>` when the route has
    one `outbound|port|subset|host` cluster, else `<VirtualService name>:<listener port><path>`; the path is the
    match's prefix + `*`, exact path or regex, `/*` without one."""
    match = route.get("match") or {}
    if "prefix" in match:
        path = f"{match['prefix']}*"
    elif "path" in match:
        path = str(match["path"])
    elif "safe_regex" in match:
        path = str(match["safe_regex"]["regex"])
    else:
        path = "/*"
    parts = str((route.get("route") or {}).get("cluster")).split("|")  # "None" without one: 1 part
    if len(parts) == 4 and parts[1].isdigit():  # model.IsValidSubsetKey
        return f"{parts[3]}:{parts[1]}{path}"
    return f"{vs_name}:{port}{path}"


def _is_catch_all(match: Mapping[str, Any]) -> bool:
    """istiod IsCatchAllRoute: prefix `/` with no header, query or metadata match (`case_sensitive` is not
    consulted: `/` matches every path either way)."""
    return match.get("prefix") == "/" and not match.get("headers") and not match.get("query_parameters") \
        and not match.get("dynamic_metadata")


def _match_applies(ctx: RouteContext, vs: Resource, m: Mapping[str, Any]) -> bool:
    """Compile-time filters: `port`, per-match `gateways` (when set, source filters are not consulted),
    else `sourceLabels` / `sourceNamespace` against the client proxy."""
    if m.get("port") and int(m["port"]) != ctx.port:
        return False
    if m.get("gateways"):
        return ctx.gateway in {gateway_key(str(g), vs.namespace) for g in m["gateways"]}
    if m.get("sourceLabels") and not ctx.proxy.workload.matches(
            {str(k): str(v) for k, v in m["sourceLabels"].items()}):
        return False
    if m.get("sourceNamespace") and str(m["sourceNamespace"]) != ctx.proxy.namespace:
        return False
    return True


# --- actions ---------------------------------------------------------------------------------------------

def header_operations(ops: Mapping[str, Any] | None) -> tuple[list[dict], list[str], str | None]:
    """(headers_to_add, headers_to_remove, authority) for one `headers.request|response` block. `set` ->
    OVERWRITE_IF_EXISTS_OR_ADD, `add` -> APPEND_IF_EXISTS_OR_ADD; pseudo-headers are dropped and `host` /
    `:authority` in set/add becomes the authority rewrite (istiod translateAppendHeaders)."""
    if not ops:
        return [], [], None
    add: list[dict] = []
    authority = None
    for key, action in (("set", "OVERWRITE_IF_EXISTS_OR_ADD"), ("add", "APPEND_IF_EXISTS_OR_ADD")):
        for name in sorted(ops.get(key) or {}):
            value = str(ops[key][name])
            lowered = str(name).lower()
            if lowered in ("host", ":authority"):
                authority = value
                continue
            if lowered.startswith(":"):
                continue
            add.append({"header": {"key": str(name), "value": value}, "append_action": action})
    remove = [str(n) for n in ops.get("remove") or () if not str(n).startswith(":") and str(n).lower() != "host"]
    return add, remove, authority


def _apply_headers(target: dict, headers: Mapping[str, Any] | None) -> str | None:
    """Add request/response header operations to a route or weighted cluster; returns an authority rewrite."""
    headers = headers or {}
    req_add, req_remove, authority = header_operations(headers.get("request"))
    resp_add, resp_remove, _ = header_operations(headers.get("response"))
    for key, value in (("request_headers_to_add", req_add), ("request_headers_to_remove", req_remove),
                       ("response_headers_to_add", resp_add), ("response_headers_to_remove", resp_remove)):
        if value:
            target.setdefault(key, []).extend(value)
    return authority


def destination_cluster(ctx: RouteContext, vs: Resource, path: str, dest: Mapping[str, Any]) -> str:
    """`outbound|<port>|<subset>|<fqdn>` for a Destination: short host resolved in the VirtualService's
    namespace; port from `port.number`, else the service's only port, else the listener port."""
    mesh = ctx.proxy.mesh
    host = resolve_host(str(dest.get("host", "")), vs.namespace, mesh.config.domain)
    svc = mesh.service(host, vs.namespace)
    number = (dest.get("port") or {}).get("number")
    if number:
        port = int(number)
    elif svc is not None and len(svc.ports) == 1:
        port = svc.ports[0].port
    else:
        port = ctx.port
    subset = str(dest.get("subset") or "")
    name = cluster_name("outbound", port, subset, host)
    if svc is None:
        ctx.proxy.notes.add(vs, f"{path}.host", f"destination {host} is not in the registry: Envoy answers 503 NC")
    elif name not in ctx.specs and subset:
        ctx.proxy.notes.add(vs, f"{path}.subset",
                            f"subset {subset!r} of {host} is not defined by a DestinationRule: Envoy answers 503 NC")
    return name


def hash_policy(spec: ClusterSpec | None) -> list[dict]:
    """DestinationRule consistentHash key -> route hash_policy (istiod's consistentHashToHashPolicy)."""
    ch = spec.consistent_hash if spec is not None else None
    if not ch:
        return []
    if ch.get("httpHeaderName"):
        return [{"header": {"header_name": str(ch["httpHeaderName"])}}]
    if ch.get("httpCookie"):
        cookie = ch["httpCookie"]
        out: dict = {"name": str(cookie.get("name", ""))}
        if cookie.get("path"):
            out["path"] = str(cookie["path"])
        if cookie.get("ttl") is not None:
            out["ttl"] = envoy_duration(parse_seconds(str(cookie["ttl"])) or 0.0)
        return [{"cookie": out}]
    if ch.get("useSourceIp"):
        return [{"connection_properties": {"source_ip": True}}]
    if ch.get("httpQueryParameterName"):
        return [{"query_parameter": {"name": str(ch["httpQueryParameterName"])}}]
    return []


def retry_policy(ctx: RouteContext, vs: Resource | None, path: str, retries: Mapping[str, Any] | None,
                 consistent_hash: bool) -> dict | None:
    """istiod's retry.ConvertPolicy. None (no `retries`) -> meshConfig.defaultHttpRetryPolicy or Istio's
    default; attempts 0 -> no retry policy."""
    if retries is None:
        retries = ctx.proxy.mesh.config.default_http_retry_policy
    policy: dict = {"retry_on": DEFAULT_RETRY_ON, "num_retries": DEFAULT_RETRY_ATTEMPTS,
                    "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                              "typed_config": {"@type": PREVIOUS_HOSTS}}],
                    "host_selection_retry_max_attempts": HOST_SELECTION_RETRY_MAX_ATTEMPTS}
    if retries is not None:
        attempts = int(retries.get("attempts") or 0)
        if attempts <= 0:
            return None
        policy["num_retries"] = attempts
        if retries.get("retryOn"):
            tokens, codes = [], []
            for token in str(retries["retryOn"]).split(","):
                token = token.strip()
                if token.isdigit():
                    codes.append(int(token))
                elif token:
                    tokens.append(token)
            if codes:
                policy["retriable_status_codes"] = codes
                if "retriable-status-codes" not in tokens:
                    tokens.append("retriable-status-codes")
            policy["retry_on"] = ",".join(tokens)
        if retries.get("perTryTimeout") and vs is not None:
            policy["per_try_timeout"] = duration(vs, f"{path}.perTryTimeout", retries["perTryTimeout"])
        if retries.get("retryRemoteLocalities"):
            policy["retry_priority"] = {"name": "envoy.retry_priorities.previous_priorities",
                                        "typed_config": {"@type": PREVIOUS_PRIORITIES, "update_frequency": 2}}
        if retries.get("retryIgnorePreviousHosts") is False:
            del policy["retry_host_predicate"]
        if retries.get("backoff") and vs is not None:
            base = parse_seconds(duration(vs, f"{path}.backoff", retries["backoff"])) or 0.0
            policy["retry_back_off"] = {"base_interval": envoy_duration(base),
                                        "max_interval": envoy_duration(base * 10)}
    if consistent_hash:
        policy.pop("retry_host_predicate", None)
    return policy


def fault_config(vs: Resource, path: str, fault: Mapping[str, Any]) -> dict:
    out: dict = {"@type": FAULT}
    delay = fault.get("delay")
    if delay:
        if not delay.get("fixedDelay"):
            raise fail(vs, f"{path}.delay", "only fixedDelay is supported (exponentialDelay is not, as in Istio)")
        out["delay"] = {"fixed_delay": duration(vs, f"{path}.delay.fixedDelay", delay["fixedDelay"]),
                        "percentage": fractional_percent(percent_of(delay))}
    abort = fault.get("abort")
    if abort:
        body: dict = {"percentage": fractional_percent(percent_of(abort, legacy_key=None))}
        if abort.get("httpStatus") is not None:
            body["http_status"] = int(abort["httpStatus"])
        elif abort.get("grpcStatus") is not None:
            # istiod: grpc.SupportedGRPCStatus[name], 0 for a name it lacks (validation refuses those)
            body["grpc_status"] = GRPC_CODES.get(str(abort["grpcStatus"]), 0)
        else:
            raise fail(vs, f"{path}.abort", "abort needs httpStatus or grpcStatus (http2Error is not supported)")
        out["abort"] = body
    return out


def cors_config(vs: Resource, path: str, cors: Mapping[str, Any]) -> dict:
    out: dict = {"@type": CORS_POLICY}
    origins = [string_match(o) for o in cors.get("allowOrigins") or ()]
    origins += [{"exact": str(o)} for o in cors.get("allowOrigin") or ()]  # deprecated exact list
    origins = [o for o in origins if o is not None]
    if origins:
        out["allow_origin_string_match"] = origins
    for src, dst in (("allowMethods", "allow_methods"), ("allowHeaders", "allow_headers"),
                     ("exposeHeaders", "expose_headers")):
        if cors.get(src):
            out[dst] = ",".join(str(v) for v in cors[src])
    if cors.get("maxAge"):
        seconds = parse_seconds(duration(vs, f"{path}.maxAge", cors["maxAge"])) or 0
        out["max_age"] = str(int(seconds))
    if cors.get("allowCredentials") is not None:
        out["allow_credentials"] = bool(cors["allowCredentials"])
    out["forward_not_matching_preflights"] = str(cors.get("unmatchedPreflights")) != "IGNORE"  # unset: FORWARD
    out["filter_enabled"] = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return out


def mirror_policies(ctx: RouteContext, vs: Resource, path: str, rule: Mapping[str, Any]) -> list[dict]:
    entries: list[tuple[Mapping[str, Any], float, str]] = []
    if rule.get("mirror"):
        pct = rule.get("mirrorPercentage")
        value = float(pct.get("value", 0)) if isinstance(pct, Mapping) else \
            float(rule["mirrorPercent"]) if rule.get("mirrorPercent") is not None else 100.0
        entries.append((rule["mirror"], value, f"{path}.mirror"))
    for i, m in enumerate(rule.get("mirrors") or ()):
        pct = m.get("percentage")
        value = float(pct.get("value", 0)) if isinstance(pct, Mapping) else 100.0
        entries.append((m.get("destination") or {}, value, f"{path}.mirrors[{i}].destination"))
    out = []
    for dest, value, dpath in entries:
        if value <= 0:
            continue
        out.append({"cluster": destination_cluster(ctx, vs, dpath, dest),
                    "runtime_fraction": {"default_value": fractional_percent(value)},
                    "trace_sampled": False})
    return out


def _redirect(ctx: RouteContext, vs: Resource, path: str, redirect: Mapping[str, Any]) -> dict | None:
    out: dict = {}
    if redirect.get("uri"):
        out["path_redirect"] = str(redirect["uri"])
    if redirect.get("authority"):
        out["host_redirect"] = str(redirect["authority"])
    if redirect.get("scheme"):
        out["scheme_redirect"] = str(redirect["scheme"])
    # istiod ApplyRedirect: FROM_PROTOCOL_DEFAULT sets no port (Envoy's default); a port that is the default
    # of the scheme (the request's when unset: https on a TLS server) is left out too
    port = int(redirect["port"]) if redirect.get("port") else \
        ctx.port if redirect.get("derivePort") == "FROM_REQUEST_PORT" else None
    scheme = str(redirect.get("scheme") or ("https" if ctx.tls else "http"))
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        out["port_redirect"] = port
    code = int(redirect.get("redirectCode") or 301)
    if code not in REDIRECT_CODES:
        ctx.proxy.notes.add(vs, f"{path}.redirectCode", f"redirect code {code} is not one of 301, 302, 303, 307, "
                                                         "308; the route is dropped (as istiod does)")
        return None
    out["response_code"] = REDIRECT_CODES[code]
    return out


def _route_action(ctx: RouteContext, vs: Resource, path: str, rule: Mapping[str, Any], route: dict,
                  authority: str | None) -> bool:
    """Fill `route` with the action of one HTTPRoute (istiod applyHTTPRouteDestination); False when the route
    must be dropped. `authority` is the rule's own `headers` host: it and `rewrite.authority` win over a
    destination's. Each destination's DestinationRule adds its hash policy; only a single destination's makes
    the retry policy keep the host (istiod's consistentHash flag)."""
    dests = list(rule.get("route") or ())
    action: dict = {}
    hashes: list[dict] = []
    dest_authority = ""
    if len(dests) == 1:
        action["cluster"] = destination_cluster(ctx, vs, f"{path}.route[0].destination",
                                                dests[0].get("destination") or {})
        dest_authority = _apply_headers(route, dests[0].get("headers"))
        hashes = hash_policy(ctx.specs.get(action["cluster"]))
    else:
        clusters = []
        for i, d in enumerate(dests):
            weight = int(d.get("weight") or 0)
            if weight <= 0:
                continue  # istiod: a weight-0 destination is not translated at all
            name = destination_cluster(ctx, vs, f"{path}.route[{i}].destination", d.get("destination") or {})
            entry: dict = {"name": name, "weight": weight}
            # istiod sets it on the cluster weight; pyproxy's ClusterWeight has no host_rewrite_literal yet
            dest_authority = _apply_headers(entry, d.get("headers")) or dest_authority
            hashes += hash_policy(ctx.specs.get(name))
            clusters.append(entry)
        if not clusters:
            ctx.proxy.notes.add(vs, f"{path}.route", "total destination weight is 0; the route is dropped")
            return False
        action["weighted_clusters"] = {"clusters": clusters}
    timeout = duration(vs, f"{path}.timeout", rule["timeout"]) if rule.get("timeout") else "0s"
    action["timeout"] = timeout
    policy = retry_policy(ctx, vs, f"{path}.retries", rule.get("retries"), "cluster" in action and bool(hashes))
    if policy is not None:
        action["retry_policy"] = policy
    action["max_grpc_timeout"] = timeout
    rewrite = rule.get("rewrite") or {}
    if rewrite.get("uriRegexRewrite"):
        rr = rewrite["uriRegexRewrite"]
        action["regex_rewrite"] = {"pattern": {"regex": str(rr.get("match", ""))},
                                   "substitution": str(rr.get("rewrite", ""))}
    elif rewrite.get("uri"):
        action["prefix_rewrite"] = str(rewrite["uri"])
    authority = rewrite.get("authority") or authority or dest_authority
    if authority:
        action["host_rewrite_literal"] = str(authority)
    mirrors = mirror_policies(ctx, vs, path, rule)
    if mirrors:
        action["request_mirror_policies"] = mirrors
    if hashes:
        action["hash_policy"] = hashes
    route["route"] = action
    return True


def http_routes(ctx: RouteContext, vs: Resource) -> list[dict]:
    """Envoy routes for one VirtualService on one listener port (istiod BuildHTTPRoutesForVirtualService)."""
    out: list[dict] = []
    notes = ctx.proxy.notes
    if vs.spec.get("tls") and ctx.gateway == MESH_GATEWAY:  # `tcp` rules: control/translate/tcp.py
        notes.add(vs, "spec.tls", "tls routes are translated for gateway PASSTHROUGH servers only, not on sidecars")
    for i, rule in enumerate(vs.spec.get("http") or ()):
        path = f"spec.http[{i}]"
        if rule.get("delegate"):
            notes.add(vs, f"{path}.delegate", "delegate VirtualServices are not translated yet")
            continue
        matches = list(rule.get("match") or ())
        blocks = [(j, m) for j, m in enumerate(matches) if _match_applies(ctx, vs, m)]
        if matches and not blocks:
            continue
        for j, m in (blocks or [(None, None)]):
            route: dict = {}
            names = [str(n) for n in (rule.get("name"), m.get("name") if m else None) if n]
            if names:
                route["name"] = ".".join(names)
            route["match"] = route_match(m) if m else {"prefix": "/"}
            route["metadata"] = config_metadata(vs)  # istiod TranslateRoute: the VirtualService it came from
            authority = _apply_headers(route, rule.get("headers"))
            if rule.get("redirect"):
                redirect = _redirect(ctx, vs, f"{path}.redirect", rule["redirect"])
                if redirect is None:
                    continue
                route["redirect"] = redirect
            elif rule.get("directResponse"):
                dr = rule["directResponse"]
                direct: dict = {"status": int(dr["status"])}  # required: Istio's schema refuses a rule without it
                body = dr.get("body") or {}
                if "string" in body:
                    direct["body"] = {"inline_string": str(body["string"])}
                elif "bytes" in body:
                    direct["body"] = {"inline_bytes": str(body["bytes"])}
                route["direct_response"] = direct
            elif not _route_action(ctx, vs, path, rule, route, authority):
                continue
            route["decorator"] = {"operation": route_operation(route, vs.name, ctx.port)}  # istiod TranslateRoute
            per_filter: dict = {}
            if rule.get("fault"):
                per_filter["envoy.filters.http.fault"] = fault_config(vs, f"{path}.fault", rule["fault"])
            if rule.get("corsPolicy"):
                per_filter["envoy.filters.http.cors"] = cors_config(vs, f"{path}.corsPolicy", rule["corsPolicy"])
            if per_filter:
                route["typed_per_filter_config"] = per_filter
            out.append(route)
            if _is_catch_all(route["match"]):
                return out  # later rules are unreachable; istiod stops here too
    return out


class _RecordedSpecs(abc.Mapping):
    """ctx.specs as one rendering reads it: every cluster name looked up, with what it found (None = absent)."""

    def __init__(self, specs: Mapping[str, ClusterSpec]):
        self._specs = specs
        self.read: dict[str, ClusterSpec | None] = {}
        self.complete = True  # False once iterated: then the result depends on every spec

    def __getitem__(self, name: str) -> ClusterSpec:
        found = self.read[name] = self._specs.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self):
        self.complete = False
        return iter(self._specs)

    def __len__(self) -> int:
        self.complete = False
        return len(self._specs)


def shared_http_routes(ctx: RouteContext, vs: Resource) -> list[dict]:
    """`http_routes`, shared by every proxy for which it comes out the same (istiod caches routes per config
    the same way): memoized on the mesh snapshot per VirtualService, port and gateway, with the proxy facts it
    read (source labels/namespace when a match names them; each cluster it looked up, by identity: proxies that
    see a service under the same DestinationRule share ClusterSpec objects). The routes are read-only; the
    notes they raised are added to each proxy's."""
    source = any(m.get("sourceLabels") or m.get("sourceNamespace")
                 for rule in vs.spec.get("http") or () for m in rule.get("match") or ())
    proxy = ctx.proxy
    key = ("http_routes", id(vs), ctx.port, ctx.gateway, ctx.tls,
           (tuple(sorted(proxy.workload.labels.items())), proxy.namespace) if source else None)
    variants: list = proxy.mesh.memo(key, list)
    for read, routes, notes in variants:
        if all(ctx.specs.get(name) is spec for name, spec in read.items()):
            break
    else:
        specs = _RecordedSpecs(ctx.specs)
        collected = Notes()
        routes = http_routes(RouteContext(dataclasses.replace(proxy, notes=collected), specs, ctx.port, ctx.gateway, ctx.tls),
                             vs)
        notes = tuple(collected.items)
        if specs.complete:
            variants.append((specs.read, routes, notes))
    for text in notes:
        proxy.notes.text(text)
    return routes


def default_route(ctx: RouteContext, cluster: str) -> dict:
    """istiod's BuildDefaultHTTPOutboundRoute: everything to the service's default cluster."""
    spec = ctx.specs.get(cluster)
    hp = hash_policy(spec)
    action: dict = {"cluster": cluster, "timeout": "0s"}
    policy = retry_policy(ctx, None, "", None, bool(hp))
    if policy is not None:
        action["retry_policy"] = policy
    action["max_grpc_timeout"] = "0s"
    if hp:
        action["hash_policy"] = hp
    _, port, _, host = cluster.split("|")
    return {"name": "default", "match": {"prefix": "/"}, "decorator": {"operation": trace_operation(host, int(port))},
            "route": action}


# --- virtual hosts ---------------------------------------------------------------------------------------

def _domain(host: str, port: int) -> str:
    return f"{host}:{port}"


def service_domains(proxy: Proxy, svc: Service, port: int) -> list[str]:
    """istiod generateVirtualHostDomains + GenerateAltVirtualHosts (with port variants). Read-only: the lists
    are memoized on the mesh snapshot (they depend on the proxy only through whether it is in the service's
    DNS namespace)."""
    namespace, own, other = proxy.mesh.memo(("service_domains", id(svc), port),
                                            lambda: _domain_forms(svc, port, proxy.mesh.config.domain))
    return own if namespace == proxy.namespace else other


def _domain_forms(svc: Service, port: int, dns_domain: str) -> tuple[str | None, list[str], list[str]]:
    """(the namespace in the host name or None, domains for a proxy in that namespace, for any other)."""
    host = svc.hostname
    head = [host, _domain(host, port)]
    tail = []
    for address in svc.addresses:
        if "/" not in address and address != "0.0.0.0":
            tail += [address, _domain(address, port)]
    svc_cut = host.find(".svc.")
    name_cut = host.find(".")
    # istiod generateAltVirtualHostsForKubernetesService: short forms only for `<name>.<ns>.svc.<domain>` whose
    # first ".svc." follows the namespace ("invalid domain" otherwise, e.g. in a namespace named `svc`)
    if not (name_cut < svc_cut and host.endswith(f".svc.{dns_domain}")):
        return None, head + tail, head + tail
    name, name_ns = host[:name_cut], host[:svc_cut]
    forms = {}
    for own, alts in ((True, [name, name_ns + ".svc", name_ns]), (False, [name_ns, name_ns + ".svc"])):
        forms[own] = head + [d for alt in alts for d in (alt, _domain(alt, port))] + tail
    return host[name_cut + 1:svc_cut], forms[True], forms[False]


def _vhost(name: str, domains: list[str], routes: list[dict]) -> dict:
    return {"name": name, "domains": domains, "routes": routes, "include_request_attempt_count": True}


def _shared(proxy: Proxy, key: tuple, owner: object, build: Callable[[], Any]) -> Any:
    """`build()`, memoized on the mesh snapshot under `key` (which holds `id(owner)`) and trusted only when the
    entry was made for this very `owner`: an id can be reused once its object is freed."""
    held, value = proxy.mesh.memo(key, lambda: (owner, build()))
    return value if held is owner else build()


def _shared_vhost(proxy: Proxy, name: str, domains: list[str], routes: list[dict]) -> dict:
    """`_vhost`, one read-only dict per mesh snapshot for equal domains and the same (shared) routes list, so
    proxies in other namespaces share most virtual hosts (and serializers their bytes)."""
    return _shared(proxy, ("vhost", name, tuple(domains), id(routes)), routes, lambda: _vhost(name, domains, routes))


def shared_default_routes(ctx: RouteContext, cluster: str) -> list[dict]:
    """[default_route], shared by proxies that see the cluster under the same rule (the route reads only its
    ClusterSpec and the mesh config)."""
    spec = ctx.specs.get(cluster)
    return _shared(ctx.proxy, ("default_routes", cluster, id(spec)), spec, lambda: [default_route(ctx, cluster)])


def catch_all_vhost(proxy: Proxy) -> dict:
    if proxy.outbound_policy == REGISTRY_ONLY:
        return _vhost("block_all", ["*"], [{"name": "block_all", "match": {"prefix": "/"},
                                            "direct_response": {"status": 502}}])
    return _vhost("allow_any", ["*"], [{"name": "allow_any", "match": {"prefix": "/"},
                                        "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s",
                                                  "max_grpc_timeout": "0s"}}])


def sidecar_virtual_hosts(proxy: Proxy, specs: Mapping[str, ClusterSpec], port: int) -> list[dict]:
    """The virtual hosts of route configuration `"<port>"` (without the catch-all), sorted by name."""
    ctx = RouteContext(proxy, specs, port)
    domain = proxy.mesh.config.domain
    services = {}
    for svc in proxy.visible_services():
        sp = svc.port(port)
        if sp is not None and sp.protocol.is_http and svc.hostname not in services:
            services[svc.hostname] = svc
    vhosts: dict[str, dict] = {}
    seen_domains: set[str] = set()

    def add(name: str, domains: list[str], routes: list[dict]) -> None:
        if name in vhosts:
            return  # the first VirtualService for a host wins (istiod: duplicate domain metric)
        fresh = [d for d in domains if d not in seen_domains]
        seen_domains.update(fresh)
        if fresh:
            vhosts[name] = _shared_vhost(proxy, name, fresh, routes)

    for vs in proxy.mesh_virtual_services():
        hosts = [resolve_host(str(h), vs.namespace, domain) for h in vs.spec.get("hosts") or ()]
        matched: dict[str, Service] = {}
        for h in hosts:
            if h.startswith("*"):
                matched.update((n, s) for n, s in services.items() if host_matches(h, n))
            elif h in services:
                matched[h] = services[h]
        if port != 80 and not matched:
            continue  # istiod: on ports other than 80 only VirtualServices that match a service
        if not vs.spec.get("http"):
            continue
        routes = shared_http_routes(ctx, vs)
        for svc in matched.values():
            add(_domain(svc.hostname, port), service_domains(proxy, svc, port), routes)
        if port == 80:
            for h in hosts:
                if h not in services and not any(host_matches(h, s) for s in services):
                    add(_domain(h, port), [h, _domain(h, port)], routes)
    for host, svc in services.items():
        if _domain(host, port) not in vhosts:  # (else a VirtualService's routes: it came first)
            add(_domain(host, port), service_domains(proxy, svc, port),
                shared_default_routes(ctx, cluster_name("outbound", port, "", host)))
    return [vhosts[n] for n in sorted(vhosts)]


def route_configuration(name: str, virtual_hosts: list[dict]) -> dict:
    return {"@type": ROUTE_CONFIGURATION, "name": name, "virtual_hosts": virtual_hosts, "validate_clusters": False}


def sidecar_http_ports(proxy: Proxy) -> list[int]:
    return sorted({p.port for s in proxy.visible_services() for p in s.ports if p.protocol.is_http})


def _http_proxy_vhost(vh: dict, port: int) -> dict | None:
    """A port's virtual host as `http_proxy` lists it: port-80 hosts with every domain, others by `host:port`
    (None when nothing is left); routes shared with `"<port>"`: read-only."""
    domains = vh["domains"] if port == 80 else [d for d in vh["domains"] if ":" in d]
    return {**vh, "domains": domains} if domains else None


def sidecar_route_configs(proxy: Proxy, specs: Mapping[str, ClusterSpec]) -> list[dict]:
    """Per-port route configurations plus `http_proxy` (all ports merged) for the explicit outbound listener."""
    per_port = {port: sidecar_virtual_hosts(proxy, specs, port) for port in sidecar_http_ports(proxy)}
    out = [route_configuration(str(port), vhosts + [catch_all_vhost(proxy)]) for port, vhosts in per_port.items()]
    merged: list[dict] = []
    for port, vhosts in per_port.items():
        for vh in vhosts:
            proxy_vh = _shared(proxy, ("http_proxy_vhost", id(vh), port), vh,
                               lambda vh=vh, port=port: _http_proxy_vhost(vh, port))
            if proxy_vh is not None:
                merged.append(proxy_vh)
    merged.sort(key=lambda v: v["name"])
    out.append(route_configuration(HTTP_PROXY_ROUTE, merged + [catch_all_vhost(proxy)]))
    return sorted(out, key=lambda r: r["name"])


# --- gateways --------------------------------------------------------------------------------------------

def _server_hosts(server: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for h in server.get("hosts") or ():
        ns, _, host = str(h).rpartition("/")
        out.append((ns or "*", host.lower()))
    return out


def gateway_virtual_hosts(proxy: Proxy, specs: Mapping[str, ClusterSpec], port: int,
                          servers: list[tuple[Resource, Mapping[str, Any]]]) -> list[dict]:
    """Virtual hosts for gateway servers sharing one route configuration (istiod buildGatewayHTTPRouteConfig)."""
    domain = proxy.mesh.config.domain
    vhosts: dict[str, dict] = {}
    for gw, server in servers:
        key = f"{gw.namespace}/{gw.name}"
        tls = str((server.get("port") or {}).get("protocol", "")).upper() == "HTTPS"
        ctx = RouteContext(proxy, specs, port, key, tls)
        redirect = bool((server.get("tls") or {}).get("httpsRedirect"))
        for vs in proxy.mesh.virtual_services_for(key):
            if not vs.spec.get("http"):
                continue
            routes = None
            for raw in vs.spec.get("hosts") or ():
                vh = resolve_host(str(raw), vs.namespace, domain)
                for ns, sh in _server_hosts(server):
                    if ns not in ("*", vs.namespace) and not (ns == "." and vs.namespace == gw.namespace):
                        continue
                    if not hosts_intersect(sh, vh):
                        continue
                    host = vh if host_matches(sh, vh) else sh  # the more specific of the two
                    if routes is None:
                        routes = shared_http_routes(ctx, vs)
                    name = _domain(host, port)
                    if name in vhosts:
                        vhosts[name]["routes"].extend(r for r in routes if r not in vhosts[name]["routes"])
                    else:
                        domains = ["*"] if host == "*" else [host, _domain(host, port)]
                        vhosts[name] = _vhost(name, domains, list(routes))
                    if redirect:
                        vhosts[name]["require_tls"] = "ALL"
                    break
        if redirect:  # istiod: every server host redirects, with or without a VirtualService for it
            for ns, sh in _server_hosts(server):
                name = _domain(sh, port)
                vhosts.setdefault(name, _vhost(name, ["*"] if sh == "*" else [sh, _domain(sh, port)],
                                               [{"name": "default", "match": {"prefix": "/"},
                                                 "direct_response": {"status": 404}}]))["require_tls"] = "ALL"
    if not vhosts:
        return [_vhost(f"blackhole:{port}", ["*"], [{"name": "default", "match": {"prefix": "/"},
                                                      "direct_response": {"status": 404}}])]
    return [vhosts[n] for n in sorted(vhosts)]

