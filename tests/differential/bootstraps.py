"""The bootstrap fragments of the differential table (tests/differential/test_differential.py).

Each entry of `BUILDERS` is `build(upstream_port, access_log) -> bootstrap dict`, built on
`tests.support.proxy.bootstrap` (one listener, one STATIC cluster `backend` of one host: the capturing origin).
Envoy and pyproxy run the same dict; only the upstream port and the access log path differ. A fragment
holds many routes, told apart by the request's `x-route` header (so the origin still sees plain paths such
as `/status/503`), or by path where the path is what a feature acts on (rewrites, redirects).
"""
from __future__ import annotations

import pathlib
from typing import Any

from tests.support.proxy import INTERNAL_LOOPBACK, bootstrap, cluster, virtual_host

FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def by_header(value: str, action: dict[str, Any], **extra: Any) -> dict:
    """A route chosen by `x-route: <value>`, forwarding to `backend` with a 5 s timeout unless said."""
    route = {"cluster": "backend", "timeout": "5s", **action}
    return {"match": {"prefix": "/", "headers": [{"name": "x-route", "string_match": {"exact": value}}]},
            "route": route, **extra}


def hv(key: str, value: str, append: str = "APPEND_IF_EXISTS_OR_ADD") -> dict:
    return {"header": {"key": key, "value": value}, "append_action": append}


def routing(port: int, log: pathlib.Path) -> dict:
    """Matches, rewrites, redirects, direct responses and header mutations at route, vhost and config level."""
    fwd = {"cluster": "backend", "timeout": "5s"}
    routes = [
        {"match": {"path": "/exact"}, "route": fwd, "response_headers_to_add": [hv("x-matched", "exact")]},
        {"match": {"prefix": "/prefix/"}, "route": {**fwd, "prefix_rewrite": "/rewritten/"}},
        {"match": {"safe_regex": {"regex": "/re/[0-9]+"}},
         "route": {**fwd, "regex_rewrite": {"pattern": {"regex": "^/re/([0-9]+)$"}, "substitution": "/num/\\1"}}},
        {"match": {"prefix": "/hdr", "headers": [{"name": "x-variant", "string_match": {"exact": "b"}}]},
         "route": fwd, "response_headers_to_add": [hv("x-matched", "variant-b")]},
        {"match": {"prefix": "/hdr", "headers": [{"name": "x-variant", "present_match": True}]},
         "route": fwd, "response_headers_to_add": [hv("x-matched", "variant-any")]},
        {"match": {"prefix": "/range", "headers": [{"name": "x-n", "range_match": {"start": -10, "end": 0}}]},
         "route": fwd, "response_headers_to_add": [hv("x-matched", "negative-range")]},
        {"match": {"prefix": "/empty-ring"}, "route": {"cluster": "empty-ring", "timeout": "5s",
                                                        "hash_policy": [{"header": {"header_name": "x-user"}}]}},
        {"match": {"prefix": "/host-rewrite"}, "route": {**fwd, "host_rewrite_literal": "rewritten.example"}},
        {"match": {"prefix": "/redir-https"}, "redirect": {"https_redirect": True}},
        {"match": {"prefix": "/redir-host"}, "redirect": {"host_redirect": "other.example",
                                                          "response_code": "PERMANENT_REDIRECT"}},
        {"match": {"prefix": "/redir-path"}, "redirect": {"path_redirect": "/new?x=1", "response_code": "FOUND"}},
        {"match": {"prefix": "/redir-scheme"}, "redirect": {"scheme_redirect": "https", "port_redirect": 8443,
                                                            "response_code": "SEE_OTHER"}},
        {"match": {"prefix": "/redir-prefix/"}, "redirect": {"prefix_rewrite": "/moved/",
                                                             "response_code": "TEMPORARY_REDIRECT"}},
        {"match": {"prefix": "/redir-strip"}, "redirect": {"path_redirect": "/plain", "strip_query": True}},
        {"match": {"prefix": "/direct-body"}, "direct_response": {"status": 418, "body": {"inline_string": "teapot"}}},
        {"match": {"prefix": "/direct-empty"}, "direct_response": {"status": 204}},
        {"match": {"prefix": "/direct-503"}, "direct_response": {"status": 503, "body": {"inline_string": "down"}}},
        {"match": {"prefix": "/headers-route"}, "route": fwd,
         "request_headers_to_add": [hv("x-added", "route"), hv("x-client", "overwritten", "OVERWRITE_IF_EXISTS_OR_ADD")],
         "request_headers_to_remove": ["x-remove-me"],
         "response_headers_to_add": [hv("x-resp-added", "route")],
         "response_headers_to_remove": ["x-upstream"]},
        {"match": {"prefix": "/"}, "route": fwd},
    ]
    vh = {**virtual_host("api", ["api.example"], routes),
          "request_headers_to_add": [hv("x-vhost", "api")], "response_headers_to_add": [hv("x-vhost-resp", "api")]}
    b = bootstrap([cluster("backend", [port]), cluster("empty-ring", [], lb_policy="RING_HASH")],
                  virtual_hosts=[vh], access_log=log)
    rc = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    rc["request_headers_to_add"] = [hv("x-config", "local_route")]
    rc["response_headers_to_add"] = [hv("x-config-resp", "local_route")]
    return b


def resilience(port: int, log: pathlib.Path) -> dict:
    """Retries (each retry_on kind), attempt-count headers, per-try and route timeouts, faults per route."""
    def retry(on: str, **kw: Any) -> dict:
        return {"retry_policy": {"retry_on": on, "num_retries": 2, **kw}}

    def fault(cfg: dict) -> dict:
        return {"typed_per_filter_config": {"envoy.filters.http.fault": {"@type": FAULT_TYPE, **cfg}}}

    hundred = {"numerator": 100, "denominator": "HUNDRED"}
    routes = [
        by_header("5xx", retry("5xx")),
        by_header("gateway-error", retry("gateway-error")),
        by_header("reset", retry("reset")),
        by_header("codes", retry("retriable-status-codes", retriable_status_codes=[409])),
        by_header("per-try", retry("5xx", per_try_timeout="0.2s", num_retries=1)),
        by_header("route-timeout", {"timeout": "0.2s"}),
        by_header("no-retry", {}),
        by_header("abort", {}, **fault({"abort": {"http_status": 418, "percentage": hundred}})),
        by_header("delay", {}, **fault({"delay": {"fixed_delay": "0.05s", "percentage": hundred}})),
        by_header("header-fault", {}, **fault({"abort": {"header_abort": {}, "percentage": hundred}})),
        {"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "5s"}},
    ]
    vh = {**virtual_host("default", ["*"], routes), "include_request_attempt_count": True,
          "include_attempt_count_in_response": True}
    hcm = {"http_filters": [{"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT_TYPE}}, ROUTER]}
    return bootstrap([cluster("backend", [port])], virtual_hosts=[vh], access_log=log, hcm=hcm)


def breakers(port: int, log: pathlib.Path) -> dict:
    """Circuit breakers at zero: every request (or every pending request) overflows."""
    thresholds = {"thresholds": [{"max_requests": 0, "max_pending_requests": 0, "max_retries": 0}]}
    return bootstrap([cluster("backend", [port], circuit_breakers=thresholds)], access_log=log)


def pending_breaker(port: int, log: pathlib.Path) -> dict:
    thresholds = {"thresholds": [{"max_pending_requests": 0}]}
    return bootstrap([cluster("backend", [port], circuit_breakers=thresholds)], access_log=log)


def outlier(port: int, log: pathlib.Path) -> dict:
    """One host, ejected by one 5xx (consecutive_5xx 1, every host may be ejected), for 300 s; panic
    threshold 0, else Envoy, with no healthy host left, would route to all hosts (panic mode)."""
    od = {"consecutive_5xx": 1, "interval": "1s", "base_ejection_time": "300s", "max_ejection_percent": 100,
          "enforcing_consecutive_5xx": 100}
    return bootstrap([cluster("backend", [port], outlier_detection=od,
                              common_lb_config={"healthy_panic_threshold": {"value": 0}})], access_log=log)


def edge(port: int, log: pathlib.Path) -> dict:
    """An edge proxy: `use_remote_address: true` (the client's address is the peer's, appended to XFF)."""
    return bootstrap({"backend": [port]}, access_log=log, hcm={"use_remote_address": True})


def edge_skip_xff(port: int, log: pathlib.Path) -> dict:
    return bootstrap({"backend": [port]}, access_log=log, hcm={"use_remote_address": True, "skip_xff_append": True})


def sidecar(port: int, log: pathlib.Path) -> dict:
    """The default: `use_remote_address` unset, as istiod's outbound listeners."""
    return bootstrap({"backend": [port]}, access_log=log)


def trusted_hop(port: int, log: pathlib.Path) -> dict:
    return bootstrap({"backend": [port]}, access_log=log, hcm={"use_remote_address": True, "xff_num_trusted_hops": 1})


def edge_internal(port: int, log: pathlib.Path) -> dict:
    """An edge proxy that trusts loopback: `internal_address_config` lists 127.0.0.0/8, so the test client is
    internal (Envoy 1.40's default lists nothing)."""
    internal = {"cidr_ranges": [{"address_prefix": "127.0.0.0", "prefix_len": 8}]}
    return bootstrap({"backend": [port]}, access_log=log,
                     hcm={"use_remote_address": True, "internal_address_config": internal})


def sidecar_internal(port: int, log: pathlib.Path) -> dict:
    internal = {"cidr_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]}
    return bootstrap({"backend": [port]}, access_log=log, hcm={"internal_address_config": internal})


def conformance(port: int, log: pathlib.Path) -> dict:
    """Rows 26-28 and 31-32 of the HTTP/1.1 conformance table: header-asked retries from an internal client,
    attempt counts, the retry buffer, unknown clusters, no route, require_tls."""
    fwd = {"cluster": "backend", "timeout": "5s"}
    default = {**virtual_host("default", ["*"], [
        {"match": {"prefix": "/unknown-cluster-404"},
         "route": {"cluster": "nope", "cluster_not_found_response_code": "NOT_FOUND"}},
        {"match": {"prefix": "/unknown-cluster"}, "route": {"cluster": "nope"}},
        {"match": {"prefix": "/app"}, "route": fwd},
        {"match": {"prefix": "/flaky"}, "route": fwd},
        {"match": {"prefix": "/status"}, "route": fwd},
    ]), "include_request_attempt_count": True, "include_attempt_count_in_response": True}
    secure = {**virtual_host("redirect", ["www.redirect.com"], [{"match": {"prefix": "/"}, "route": fwd}]),
              "require_tls": "ALL"}
    b = bootstrap([cluster("backend", [port])], virtual_hosts=[secure, default], access_log=log,
                  hcm=INTERNAL_LOOPBACK)
    rc = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    rc["validate_clusters"] = False  # else Envoy refuses the bootstrap for the unknown cluster
    return b


LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
LOCAL_RATELIMIT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
ALL = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def local_ratelimit(prefix: str, max_tokens: int = 1, fill: str = "3600s", **cfg: Any) -> dict:
    """A per-route LocalRateLimit, enabled and enforced unless said (`filter_enforced=None` leaves it out)."""
    out = {"@type": LOCAL_RATELIMIT_TYPE, "stat_prefix": prefix, "filter_enabled": ALL, "filter_enforced": ALL,
           "token_bucket": {"max_tokens": max_tokens, "tokens_per_fill": 1, "fill_interval": fill}, **cfg}
    return {LOCAL_RATELIMIT: {k: v for k, v in out.items() if v is not None}}


def descriptor(entries: list[tuple[str, str]], max_tokens: int) -> dict:
    return {"entries": [{"key": k, "value": v} for k, v in entries],
            "token_bucket": {"max_tokens": max_tokens, "tokens_per_fill": 1, "fill_interval": "3600s"}}


def ratelimit(port: int, log: pathlib.Path) -> dict:
    """Local rate limits as Istio users write them: the filter in the chain with only a `stat_prefix`
    (disabled there), the buckets per route and per virtual host (`typed_per_filter_config`). Each row has its
    own route, so its own bucket; buckets refill once an hour, so a row's answers do not depend on time."""
    def limited(value: str, prefix: str, **kw: Any) -> dict:
        return by_header(value, {}, typed_per_filter_config=local_ratelimit(prefix, **kw))

    routes = [
        limited("burst", "rl_burst", max_tokens=2, enable_x_ratelimit_headers="DRAFT_VERSION_03",
                response_headers_to_add=[{"append": False, "header": {"key": "x-local-rate-limit", "value": "true"}}]),
        limited("not-enforced", "rl_not_enforced", filter_enforced=None,
                request_headers_to_add_when_not_enforced=[hv("x-rl-not-enforced", "1")]),
        limited("status", "rl_status", status={"code": "ServiceUnavailable"}),
        limited("per-connection", "rl_per_connection", local_rate_limit_per_downstream_connection=True),
        limited("disabled", "rl_disabled", filter_enabled=None),
        limited("head", "rl_head"),
        limited("hundred", "rl_hundred", max_tokens=10, fill="2s", enable_x_ratelimit_headers="DRAFT_VERSION_03"),
        # descriptors: by the filter's own rate_limits (a request header), by the route's (generic_key and a
        # header match), and a dynamic one (empty value: a bucket per client)
        limited("desc-header", "rl_desc_header", max_tokens=100, enable_x_ratelimit_headers="DRAFT_VERSION_03",
                descriptors=[descriptor([("client", "a")], 1)],
                rate_limits=[{"actions": [{"request_headers": {"header_name": "x-client",
                                                               "descriptor_key": "client"}}]}]),
        {**by_header("desc-route", {"rate_limits": [{"actions": [
            {"generic_key": {"descriptor_value": "slow"}},
            {"header_value_match": {"descriptor_value": "tagged", "headers": [
                {"name": "x-client", "string_match": {"prefix": "t"}}]}}]}]},
            typed_per_filter_config=local_ratelimit(
                "rl_desc_route", max_tokens=100,
                descriptors=[descriptor([("generic_key", "slow"), ("header_match", "tagged")], 1)]))},
        limited("desc-dynamic", "rl_desc_dynamic", max_tokens=100,
                descriptors=[descriptor([("client", "")], 1)],
                rate_limits=[{"actions": [{"request_headers": {"header_name": "x-client",
                                                               "descriptor_key": "client"}}]}]),
        {"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "5s"}},
    ]
    vhost = {**virtual_host("limited", ["limited.example"], [
        {"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "5s"}}]),
        "typed_per_filter_config": local_ratelimit("rl_vhost")}
    chain = {"name": LOCAL_RATELIMIT, "typed_config": {"@type": LOCAL_RATELIMIT_TYPE, "stat_prefix": "rl_chain"}}
    return bootstrap([cluster("backend", [port])], virtual_hosts=[vhost, virtual_host("default", ["*"], routes)],
                     access_log=log, hcm={"http_filters": [chain, ROUTER]})


BUILDERS = {
    "routing": routing, "resilience": resilience, "breakers": breakers, "pending-breaker": pending_breaker,
    "outlier": outlier, "edge": edge, "edge-skip-xff": edge_skip_xff, "sidecar": sidecar,
    "trusted-hop": trusted_hop, "edge-internal": edge_internal, "sidecar-internal": sidecar_internal,
    "conformance": conformance, "ratelimit": ratelimit,
}
