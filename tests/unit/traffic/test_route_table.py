"""RouteTable: Envoy's virtual-host selection, first-match-wins route matching, rewrites, redirects, weighted
clusters and header mutations. Configs are written as Envoy v3 JSON and decoded, as the proxy does."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyproxy.config.decode import ConfigError, decode
from pyproxy.config.model import HeaderMatcher, HeaderValueOption, RedirectAction, RouteConfiguration
from pyproxy.http.headers import Headers
from pyproxy.routing.table import (
    RouteTable,
    apply_header_mutations,
    choose_weighted_cluster,
    redirect_location,
    rewrite_path,
    split_host_port,
)


def table(virtual_hosts, **extra) -> RouteTable:
    return RouteTable(decode(RouteConfiguration, {"name": "80", "virtual_hosts": virtual_hosts, **extra}))


def vh(name, domains, routes=None, **extra):
    return {"name": name, "domains": domains, "routes": routes or [{"match": {"prefix": "/"}, "route": {"cluster": name}}], **extra}


def route(match, cluster="c", **extra):
    return {"match": match, "route": {"cluster": cluster}, **extra}


def H(**kv) -> Headers:
    return Headers([(k.replace("_", "-"), v) for k, v in kv.items()])


# ---------------------------------------------------------------- virtual hosts

VHOSTS = [
    vh("exact", ["api.example.com", "api.example.com:8080"]),
    vh("suffix-short", ["*.example.com"]),
    vh("suffix-long", ["*.eu.example.com"]),
    vh("suffix-dash", ["*-bar.example.com"]),
    vh("prefix", ["api.*"]),
    vh("prefix-long", ["api.internal.*"]),
    vh("default", ["*"]),
]


@pytest.mark.parametrize(
    "authority, expected",
    [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),  # hostnames are case-insensitive
        ("api.example.com:8080", "exact"),  # the port is part of the domain when listed
        ("api.example.com:9090", "prefix"),  # port kept: only "api.*" matches "api.example.com:9090"
        ("www.example.com", "suffix-short"),
        ("x.eu.example.com", "suffix-long"),  # longest suffix wildcard wins
        ("foo-bar.example.com", "suffix-dash"),  # '*' may stand for part of a label
        ("api.other.org", "prefix"),
        ("api.internal.corp", "prefix-long"),  # longest prefix wildcard wins
        ("example.com", "default"),  # '*.example.com' needs at least one character before '.example.com'
        (".example.com", "default"),
        ("unknown", "default"),
        ("", "default"),
    ],
)
def test_virtual_host_most_specific_domain_wins(authority, expected):
    result = table(VHOSTS).match(authority, "/", Headers())
    assert result is not None and result.virtual_host.name == expected


def test_host_with_unlisted_port_is_not_stripped_by_default():
    t = table([vh("svc", ["svc.ns.svc.cluster.local"]), vh("other", ["*.com"])])
    assert t.match("svc.ns.svc.cluster.local:80", "/", Headers()) is None


def test_ignore_port_in_host_matching_strips_the_port():
    t = table([vh("svc", ["svc"])], ignore_port_in_host_matching=True)
    assert t.match("svc:80", "/", Headers()).virtual_host.name == "svc"
    assert t.match("[::1]:80", "/", Headers()) is None


def test_suffix_wildcard_does_not_shadow_exact_match_with_port():
    t = table([vh("wild", ["*.com:80"]), vh("exact", ["a.com:80"])])
    assert t.match("a.com:80", "/", Headers()).virtual_host.name == "exact"
    assert t.match("b.com:80", "/", Headers()).virtual_host.name == "wild"


def test_no_virtual_host_means_no_match():
    assert table([vh("a", ["a"])]).match("b", "/", Headers()) is None


@pytest.mark.parametrize(
    "vhosts, path",
    [
        ([vh("a", ["*"]), vh("b", ["*"])], "virtual_hosts[1].domains[0]"),
        ([vh("a", ["x.com"]), vh("b", ["X.com"])], "virtual_hosts[1].domains[0]"),
        ([vh("a", ["*.x.com", "*.x.com"])], "virtual_hosts[0].domains[1]"),
    ],
)
def test_duplicate_domains_are_config_errors_with_a_path(vhosts, path):
    with pytest.raises(ConfigError) as e:
        table(vhosts)
    assert e.value.path == path


@pytest.mark.parametrize(
    "authority, host, port",
    [("a.com", "a.com", None), ("a.com:80", "a.com", "80"), ("[::1]:443", "[::1]", "443"), ("[::1]", "[::1]", None),
     ("::1", "::1", None)],
)
def test_split_host_port(authority, host, port):
    assert split_host_port(authority) == (host, port)


# ---------------------------------------------------------------- path matching

PATH_CASES = [
    # (match, path, matches?)
    ({"prefix": "/api"}, "/api/v1", True),
    ({"prefix": "/api"}, "/apiv1", True),  # plain string prefix
    ({"prefix": "/api"}, "/API/v1", False),
    ({"prefix": "/api", "case_sensitive": False}, "/API/v1", True),
    ({"prefix": "/a?b"}, "/a", False),
    ({"prefix": "/api"}, "/x?/api", False),  # the query is not part of the path
    ({"path": "/health"}, "/health", True),
    ({"path": "/health"}, "/health?full=1", True),
    ({"path": "/health"}, "/health#frag", True),
    ({"path": "/health"}, "/health/", False),
    ({"path": "/Health", "case_sensitive": False}, "/HEALTH", True),
    ({"safe_regex": {"regex": "/users/[0-9]+"}}, "/users/42", True),
    ({"safe_regex": {"regex": "/users/[0-9]+"}}, "/users/42/x", False),  # full match, not search
    ({"safe_regex": {"regex": "/users/[0-9]+"}}, "/users/42?x=1", True),
    ({"safe_regex": {"regex": "/users/[a-z]+"}, "case_sensitive": False}, "/users/ABC", False),  # regex ignores it
    ({"path_separated_prefix": "/api"}, "/api", True),
    ({"path_separated_prefix": "/api"}, "/api/x", True),
    ({"path_separated_prefix": "/api"}, "/api?x", True),
    ({"path_separated_prefix": "/api"}, "/apix", False),
    ({"path_separated_prefix": "/api", "case_sensitive": False}, "/API/x", True),
]


@pytest.mark.parametrize("match, path, expected", PATH_CASES)
def test_path_matching(match, path, expected):
    t = table([vh("v", ["*"], [route(match)])])
    assert (t.match("h", path, Headers()) is not None) is expected


def test_first_matching_route_wins_in_order():
    t = table([vh("v", ["*"], [
        route({"prefix": "/api/v2"}, "v2"),
        route({"prefix": "/api"}, "api"),
        route({"prefix": "/api/v3"}, "unreachable"),
        route({"prefix": "/"}, "catch-all"),
    ])])
    assert [t.match("h", p, Headers()).action.cluster for p in ("/api/v2/x", "/api/v3", "/other")] == [
        "v2", "api", "catch-all"]


@pytest.mark.parametrize("prefix", ["/api/", "api", "/a?b", "/a#b"])
def test_invalid_path_separated_prefix_is_rejected_with_its_path(prefix):
    with pytest.raises(ConfigError) as e:
        table([vh("v", ["*"], [route({"path_separated_prefix": prefix})])])
    assert e.value.path == "virtual_hosts[0].routes[0].match.path_separated_prefix"


@pytest.mark.parametrize("match, path, hit", [
    ({"path_separated_prefix": "/Api"}, "/Api/x", True),
    ({"path_separated_prefix": "/Api"}, "/api/x", False),  # case-sensitive by default
    ({"path_separated_prefix": "/Api", "case_sensitive": False}, "/aPI/x", True),
])
def test_path_separated_prefix_case(match, path, hit):
    assert (first([route(match)], path=path) == "c") is hit


def test_header_layers_hold_lower_cased_names_to_remove():
    r = table([vh("v", ["*"], [{**route({"prefix": "/"}), "request_headers_to_remove": ["X-Drop"],
                                "response_headers_to_remove": ["X-RDrop"]}])]).match("h", "/", Headers())
    assert r.request_layers() == (((), ("x-drop",)),) and r.response_layers() == (((), ("x-rdrop",)),)


# ---------------------------------------------------------------- header and query matching

HEADER_CASES = [
    # (header matcher, request headers, matches?)
    ({"name": "x-env", "string_match": {"exact": "prod"}}, {"x-env": "prod"}, True),
    ({"name": "x-env", "string_match": {"exact": "prod"}}, {"x-env": "PROD"}, False),
    ({"name": "x-env", "string_match": {"exact": "prod", "ignore_case": True}}, {"x-env": "PROD"}, True),
    ({"name": "x-env", "string_match": {"prefix": "pr"}}, {"x-env": "prod"}, True),
    ({"name": "x-env", "string_match": {"suffix": "od"}}, {"x-env": "prod"}, True),
    ({"name": "x-env", "string_match": {"contains": "ro"}}, {"x-env": "prod"}, True),
    ({"name": "x-env", "string_match": {"safe_regex": {"regex": "p.o"}}}, {"x-env": "prod"}, False),  # full match
    ({"name": "x-env", "string_match": {"safe_regex": {"regex": "p.o."}}}, {"x-env": "prod"}, True),
    ({"name": "x-env", "exact_match": "prod"}, {"x-env": "prod"}, True),  # legacy fields
    ({"name": "x-env", "prefix_match": "p"}, {"x-env": "prod"}, True),
    ({"name": "x-env", "suffix_match": "d"}, {"x-env": "prod"}, True),
    ({"name": "x-env", "contains_match": "x"}, {"x-env": "prod"}, False),
    ({"name": "x-env", "safe_regex_match": {"regex": "[a-z]+"}}, {"x-env": "prod"}, True),
    ({"name": "x-env", "present_match": True}, {"x-env": ""}, True),
    ({"name": "x-env", "present_match": True}, {}, False),
    ({"name": "x-env", "present_match": False}, {}, True),
    ({"name": "x-env", "present_match": True, "invert_match": True}, {}, True),
    ({"name": "x-env", "string_match": {"exact": "prod"}, "invert_match": True}, {"x-env": "dev"}, True),
    # a missing header fails even an inverted matcher ...
    ({"name": "x-env", "string_match": {"exact": "prod"}, "invert_match": True}, {}, False),
    # ... unless it is treated as empty (Istio's withoutHeaders)
    ({"name": "x-env", "string_match": {"exact": "prod"}, "invert_match": True,
      "treat_missing_header_as_empty": True}, {}, True),
    ({"name": "x-n", "range_match": {"start": 10, "end": 20}}, {"x-n": "10"}, True),
    ({"name": "x-n", "range_match": {"start": 10, "end": 20}}, {"x-n": "20"}, False),  # end exclusive
    ({"name": "x-n", "range_match": {"start": 0, "end": 5}}, {"x-n": "-3"}, False),  # signed value parsed
    ({"name": "x-n", "range_match": {"start": 10, "end": 20}}, {"x-n": "15x"}, False),
    ({"name": ":method", "string_match": {"exact": "POST"}}, {}, False),  # request line gives GET
    ({"name": ":authority", "string_match": {"exact": "h"}}, {}, True),
    ({"name": ":path", "string_match": {"prefix": "/p?q"}}, {}, True),  # :path includes the query
    ({"name": ":scheme", "string_match": {"exact": "http"}}, {}, True),
    ({"name": "X-Env", "string_match": {"exact": "a,b"}}, [("x-env", "a"), ("x-env", "b")], True),  # joined
]


@pytest.mark.parametrize("matcher, headers, expected", HEADER_CASES)
def test_header_matching(matcher, headers, expected):
    t = table([vh("v", ["*"], [route({"prefix": "/", "headers": [matcher]})])])
    items = headers.items() if isinstance(headers, dict) else headers
    assert (t.match("h", "/p?q=1", Headers(items)) is not None) is expected


def test_all_header_matchers_must_hold():
    t = table([vh("v", ["*"], [route({"prefix": "/", "headers": [
        {"name": "a", "string_match": {"exact": "1"}}, {"name": "b", "present_match": True}]})])])
    assert t.match("h", "/", H(a="1", b="x")) is not None
    assert t.match("h", "/", H(a="1")) is None


def test_method_match_reads_the_request_line():
    t = table([vh("v", ["*"], [route({"prefix": "/", "headers": [{"name": ":method", "exact_match": "POST"}]})])])
    assert t.match("h", "/", Headers(), method="POST") is not None
    assert t.match("h", "/", Headers(), method="GET") is None


QUERY_CASES = [
    ({"name": "v", "string_match": {"exact": "2"}}, "/p?v=2", True),
    ({"name": "v", "string_match": {"exact": "2"}}, "/p?v=3", False),
    ({"name": "v", "string_match": {"exact": "2"}}, "/p?v=2&v=3", True),  # first value wins
    ({"name": "v", "string_match": {"exact": "2"}}, "/p?v=3&v=2", False),
    ({"name": "v", "string_match": {"exact": ""}}, "/p?v", True),  # ?key has the empty value
    ({"name": "v", "string_match": {"exact": ""}}, "/p?v=", True),
    ({"name": "v", "string_match": {"exact": "a b"}}, "/p?v=a%20b", True),  # percent-decoded
    ({"name": "v", "string_match": {"safe_regex": {"regex": "\\d+"}}}, "/p?v=a123", False),
    ({"name": "v", "present_match": True}, "/p?x=1&v=", True),
    ({"name": "v", "present_match": True}, "/p", False),
]


@pytest.mark.parametrize("matcher, path, expected", QUERY_CASES)
def test_query_parameter_matching(matcher, path, expected):
    t = table([vh("v", ["*"], [route({"prefix": "/", "query_parameters": [matcher]})])])
    assert (t.match("h", path, Headers()) is not None) is expected


def test_runtime_fraction_takes_the_share_of_requests_drawn_from_rng():
    t = table([vh("v", ["*"], [
        route({"prefix": "/", "runtime_fraction": {"default_value": {"numerator": 25, "denominator": "HUNDRED"}}}, "canary"),
        route({"prefix": "/"}, "stable"),
    ])])
    rng = random.Random(7)
    picks = [t.match("h", "/", Headers(), rng=rng).action.cluster for _ in range(2000)]
    assert 400 <= picks.count("canary") <= 600


# ---------------------------------------------------------------- require_tls


@pytest.mark.parametrize(
    "require_tls, scheme, internal, redirected",
    [("ALL", "http", False, True), ("ALL", "https", False, False), ("ALL", "http", True, True),
     ("EXTERNAL_ONLY", "http", False, True), ("EXTERNAL_ONLY", "http", True, False), ("NONE", "http", False, False)],
)
def test_require_tls_redirects_plain_http(require_tls, scheme, internal, redirected):
    t = table([vh("v", ["*"], require_tls=require_tls)])
    r = t.match("shop.com:80", "/cart?x=1", Headers(), scheme=scheme, internal=internal)
    assert (r.kind == "redirect") is redirected
    if redirected:
        assert r.redirect_status == 301
        assert r.redirect_location(scheme, "shop.com:80", "/cart?x=1") == "https://shop.com/cart?x=1"


# ---------------------------------------------------------------- rewrite


REWRITE_CASES = [
    # (match, action extras, request path, upstream path)
    ({"prefix": "/api/"}, {"prefix_rewrite": "/"}, "/api/users?x=1", "/users?x=1"),
    ({"prefix": "/api"}, {"prefix_rewrite": "/v2"}, "/api/users", "/v2/users"),
    ({"prefix": "/API", "case_sensitive": False}, {"prefix_rewrite": "/x"}, "/api/y", "/x/y"),
    ({"path": "/old"}, {"prefix_rewrite": "/new"}, "/old?q", "/new?q"),
    ({"path_separated_prefix": "/svc"}, {"prefix_rewrite": "/"}, "/svc/a", "//a"),
    ({"prefix": "/"}, {"regex_rewrite": {"pattern": {"regex": "^/service/([^/]+)(/.*)$"},
                                          "substitution": "\\2/instance/\\1"}},
     "/service/foo/v1/api?x", "/v1/api/instance/foo?x"),
    ({"prefix": "/"}, {"regex_rewrite": {"pattern": {"regex": "o"}, "substitution": "0"}}, "/foo/o?o", "/f00/0?o"),
    ({"prefix": "/"}, {"regex_rewrite": {"pattern": {"regex": "^/a"}, "substitution": "\\0\\0"}}, "/ab", "/a/ab"),
    ({"prefix": "/"}, {}, "/unchanged?x", "/unchanged?x"),
    # a group that did not take part in the match is empty, as is one that matched nothing
    ({"prefix": "/"}, {"regex_rewrite": {"pattern": {"regex": "^/(a)?(c*)b"}, "substitution": "/x\\1\\2y"}}, "/b", "/xy"),
]


@pytest.mark.parametrize("match, extra, path, expected", REWRITE_CASES)
def test_path_rewrite(match, extra, path, expected):
    t = table([vh("v", ["*"], [{"match": match, "route": {"cluster": "c", **extra}}])])
    result = t.match("h", path, Headers())
    assert result.rewrite_path(path) == expected
    assert rewrite_path(result.action, result.route, path) == expected


def test_regex_substitution_referring_to_a_missing_group_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        table([vh("v", ["*"], [{"match": {"prefix": "/"}, "route": {
            "cluster": "c", "regex_rewrite": {"pattern": {"regex": "(a)"}, "substitution": "\\2"}}}])])
    assert e.value.path == "virtual_hosts[0].routes[0].route.regex_rewrite.substitution"


# ---------------------------------------------------------------- redirect

REDIRECT_CASES = [
    # (redirect action, scheme, authority, path, location)
    ({"https_redirect": True}, "http", "a.com", "/x?q", "https://a.com/x?q"),
    ({"https_redirect": True}, "http", "a.com:80", "/x", "https://a.com/x"),  # :80 dropped for https
    ({"https_redirect": True}, "http", "a.com:8080", "/x", "https://a.com:8080/x"),
    ({"scheme_redirect": "http"}, "https", "a.com:443", "/", "http://a.com/"),
    ({"host_redirect": "b.com"}, "http", "a.com:8080", "/x", "http://b.com/x"),
    ({"port_redirect": 8443}, "https", "a.com:443", "/x", "https://a.com:8443/x"),
    ({"path_redirect": "/new"}, "http", "a.com", "/old?q=1", "http://a.com/new?q=1"),
    ({"path_redirect": "/new?z=2"}, "http", "a.com", "/old?q=1", "http://a.com/new?z=2"),
    ({"path_redirect": "/new", "strip_query": True}, "http", "a.com", "/old?q=1", "http://a.com/new"),
    ({"prefix_rewrite": "/v2/"}, "http", "a.com", "/v1/items?q", "http://a.com/v2/items?q"),
    ({"regex_rewrite": {"pattern": {"regex": "v1"}, "substitution": "v9"}}, "http", "a.com", "/v1/x", "http://a.com/v9/x"),
    # a regex rewrite with every other part of the redirect (the regex runs once, on the path only)
    ({"regex_rewrite": {"pattern": {"regex": "v"}, "substitution": "vv"}, "https_redirect": True,
      "host_redirect": "b.com"}, "http", "a.com", "/v1?v", "https://b.com/vv1?v"),
    ({"regex_rewrite": {"pattern": {"regex": "v"}, "substitution": "vv"}, "scheme_redirect": "https",
      "port_redirect": 8443, "strip_query": True}, "http", "a.com:8080", "/v1?v", "https://a.com:8443/vv1"),
]


@pytest.mark.parametrize("action, scheme, authority, path, expected", REDIRECT_CASES)
def test_redirect_location(action, scheme, authority, path, expected):
    t = table([vh("v", ["*"], [{"match": {"prefix": "/v1/" if "prefix_rewrite" in action else "/"},
                                "redirect": action}])])
    result = t.match(authority, path, Headers())
    assert result.kind == "redirect"
    assert result.redirect_location(scheme, authority, path) == expected
    assert redirect_location(result.redirect, scheme, authority, path, matched_route=result.route) == expected


@pytest.mark.parametrize("code, status", [(None, 301), ("FOUND", 302), ("SEE_OTHER", 303),
                                          ("TEMPORARY_REDIRECT", 307), ("PERMANENT_REDIRECT", 308)])
def test_redirect_status_codes(code, status):
    action = {"path_redirect": "/x", **({"response_code": code} if code else {})}
    r = table([vh("v", ["*"], [{"match": {"prefix": "/"}, "redirect": action}])]).match("h", "/", Headers())
    assert r.redirect_status == status


def test_plain_redirect_action_keeps_the_request():
    assert redirect_location(RedirectAction(), "http", "a.com:81", "/p?q") == "http://a.com:81/p?q"
    assert redirect_location(RedirectAction(path_redirect=""), "http", "a.com", "/p?q") == "http://a.com/p?q"


def test_prefix_rewrite_redirect_without_a_matched_route_replaces_the_whole_path():
    action = RedirectAction(prefix_rewrite="/new")
    assert redirect_location(action, "http", "a.com", "/old/x?q") == "http://a.com/new?q"


def test_the_helpers_name_the_field_of_a_bad_substitution():
    from pyproxy.config.model import RegexMatchAndSubstitute, RouteAction

    bad = decode(RegexMatchAndSubstitute, {"pattern": {"regex": "(a)"}, "substitution": "\\2"})
    route_ = table([vh("v", ["*"])]).match("h", "/", Headers()).route
    with pytest.raises(ConfigError) as e:
        rewrite_path(RouteAction(cluster="c", regex_rewrite=bad), route_, "/a")
    assert e.value.path == "regex_rewrite.substitution"
    with pytest.raises(ConfigError) as e:
        redirect_location(RedirectAction(regex_rewrite=bad), "http", "h", "/a")
    assert e.value.path == "regex_rewrite.substitution"


def test_a_route_without_a_route_action_never_rewrites_the_path():
    r = table([vh("v", ["*"], [{"match": {"prefix": "/"}, "redirect": {"path_redirect": "/new"}}])]).match("h", "/x", Headers())
    assert r.rewrite_path("/x?q") == "/x?q"


# ---------------------------------------------------------------- clusters


def weighted(*pairs):
    return {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
        {"name": n, "weight": w} for n, w in pairs]}}}


def test_50_50_weighted_route_over_2000_picks_lands_within_bounds_seeded_rng():
    r = table([vh("v", ["*"], [weighted(("v1", 50), ("v2", 50))])]).match("h", "/", Headers())
    rng = random.Random(1)
    picks = [r.choose_cluster(Headers(), rng)[0] for _ in range(2000)]
    assert 900 <= picks.count("v1") <= 1100
    assert picks.count("v1") + picks.count("v2") == 2000


def test_weights_need_not_sum_to_100_and_zero_weight_is_never_chosen():
    r = table([vh("v", ["*"], [weighted(("a", 1), ("never", 0), ("b", 3))])]).match("h", "/", Headers())
    rng = random.Random(3)
    picks = [r.choose_cluster(Headers(), rng)[0] for _ in range(4000)]
    assert picks.count("never") == 0
    assert 800 <= picks.count("a") <= 1200  # 25 %


def test_choose_weighted_cluster_helper():
    from pyproxy.config.model import WeightedCluster, ClusterWeight

    wc = WeightedCluster(clusters=(ClusterWeight(name="only", weight=5), ClusterWeight(name="zero", weight=0)))
    assert {choose_weighted_cluster(wc, random.Random(i)).name for i in range(50)} == {"only"}


def test_all_zero_weights_are_a_config_error():
    with pytest.raises(ConfigError) as e:
        table([vh("v", ["*"], [weighted(("a", 0), ("b", 0))])])
    assert e.value.path == "virtual_hosts[0].routes[0].route.weighted_clusters.clusters"


def test_cluster_header_names_the_cluster_and_missing_header_means_not_found():
    r = table([vh("v", ["*"], [{"match": {"prefix": "/"}, "route": {"cluster_header": "X-Cluster"}}])]).match(
        "h", "/", Headers())
    assert r.choose_cluster(H(x_cluster="blue"), random.Random())[0] == "blue"
    assert r.choose_cluster(Headers(), random.Random())[0] is None


def test_route_retry_policy_replaces_the_virtual_host_policy():
    t = table([vh("v", ["*"], [
        {"match": {"prefix": "/own"}, "route": {"cluster": "c", "retry_policy": {"retry_on": "reset"}}},
        route({"prefix": "/"}),
    ], retry_policy={"retry_on": "5xx", "num_retries": 3})])
    assert t.match("h", "/own", Headers()).retry_policy.retry_on == "reset"
    assert t.match("h", "/x", Headers()).retry_policy.num_retries == 3


def test_route_timeout_defaults_to_envoys_15s_and_0_disables():
    t = table([vh("v", ["*"], [
        {"match": {"prefix": "/istio"}, "route": {"cluster": "c", "timeout": "0s"}},
        route({"prefix": "/"}),
    ])])
    assert t.match("h", "/istio", Headers()).timeout == 0.0
    assert t.match("h", "/", Headers()).timeout == 15.0


# ---------------------------------------------------------------- header mutations


def hvo(key, value, **extra):
    return {"header": {"key": key, "value": value}, **extra}


MUTATION_CASES = [
    # (option, existing headers, resulting values of x-a)
    (hvo("x-a", "new"), [("x-a", "old")], ["old", "new"]),  # default APPEND_IF_EXISTS_OR_ADD
    (hvo("x-a", "new", append=False), [("x-a", "old")], ["new"]),  # deprecated append: false
    (hvo("x-a", "new", append_action="OVERWRITE_IF_EXISTS_OR_ADD"), [("x-a", "o1"), ("x-a", "o2")], ["new"]),
    (hvo("x-a", "new", append_action="OVERWRITE_IF_EXISTS_OR_ADD"), [], ["new"]),
    (hvo("x-a", "new", append_action="ADD_IF_ABSENT"), [("x-a", "old")], ["old"]),
    (hvo("x-a", "new", append_action="ADD_IF_ABSENT"), [], ["new"]),
    (hvo("x-a", "new", append_action="OVERWRITE_IF_EXISTS"), [], []),
    (hvo("x-a", "new", append_action="OVERWRITE_IF_EXISTS"), [("x-a", "old")], ["new"]),
    (hvo("x-a", ""), [], []),  # empty values are skipped ...
    (hvo("x-a", "", keep_empty_value=True), [], [""]),  # ... unless kept
]


@pytest.mark.parametrize("option, existing, expected", MUTATION_CASES)
def test_apply_header_mutations_honours_append_action(option, existing, expected):
    from pyproxy.config.model import HeaderValueOption

    headers = Headers(existing)
    apply_header_mutations(headers, [decode(HeaderValueOption, option)])
    assert headers.get_all("x-a") == expected


def test_removals_happen_before_additions():
    from pyproxy.config.model import HeaderValueOption

    headers = H(x_a="old", x_b="keep")
    apply_header_mutations(headers, [decode(HeaderValueOption, hvo("x-a", "new"))], ["X-A"])
    assert headers.items() == [("x-b", "keep"), ("x-a", "new")]


def layered_config(**extra):
    return table([vh("v", ["*"], [{
        "match": {"prefix": "/"},
        "route": {"weighted_clusters": {"clusters": [{"name": "c", "weight": 1, "request_headers_to_add": [
            hvo("x-level", "cluster", append_action="OVERWRITE_IF_EXISTS_OR_ADD")]}]}},
        "request_headers_to_add": [hvo("x-level", "route", append_action="OVERWRITE_IF_EXISTS_OR_ADD")],
        "response_headers_to_remove": ["server"],
    }], request_headers_to_add=[hvo("x-level", "vhost", append_action="OVERWRITE_IF_EXISTS_OR_ADD")])],
        request_headers_to_add=[hvo("x-level", "global", append_action="OVERWRITE_IF_EXISTS_OR_ADD")], **extra)


def test_header_layers_run_route_then_vhost_then_global_by_default_so_least_specific_wins():
    r = layered_config().match("h", "/", Headers())
    _, cw = r.choose_cluster(Headers(), random.Random())
    headers = Headers()
    r.apply_request_headers(headers, cw)
    assert headers.get_all("x-level") == ["global"]


def test_most_specific_header_mutations_wins_reverses_the_order():
    r = layered_config(most_specific_header_mutations_wins=True).match("h", "/", Headers())
    _, cw = r.choose_cluster(Headers(), random.Random())
    headers = Headers()
    r.apply_request_headers(headers, cw)
    # the weighted-cluster layer always runs first, so the route's own value wins here
    assert headers.get_all("x-level") == ["route"]


def test_response_layers_apply_too():
    r = layered_config().match("h", "/", Headers())
    headers = H(server="upstream", x_other="1")
    r.apply_response_headers(headers)
    assert "server" not in headers


@pytest.mark.parametrize("key", [":path", "host", "Host"])
def test_host_and_pseudo_headers_cannot_be_mutated(key):
    with pytest.raises(ConfigError) as e:
        table([vh("v", ["*"], [{**route({"prefix": "/"}), "request_headers_to_add": [hvo(key, "/x")]}])])
    assert e.value.path == "virtual_hosts[0].routes[0].request_headers_to_add[0].header.key"
    assert f"header {key!r} may not be modified" in e.value.message


def test_an_empty_header_value_skips_only_its_own_option():
    from pyproxy.config.model import HeaderValueOption

    headers = Headers()
    apply_header_mutations(headers, [decode(HeaderValueOption, hvo("x-a", "")), decode(HeaderValueOption, hvo("x-b", "1"))])
    assert headers.items() == [("x-b", "1")]


def test_per_filter_config_most_specific_wins():
    from pyproxy.config.model import HTTPFault

    fault = {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
             "abort": {"http_status": 503, "percentage": {"numerator": 100}}}
    r = table([vh("v", ["*"], [route({"prefix": "/"})], typed_per_filter_config={
        "envoy.filters.http.fault": fault})]).match("h", "/", Headers())
    assert isinstance(r.per_filter_config("envoy.filters.http.fault"), HTTPFault)
    assert r.per_filter_config("envoy.filters.http.rbac") is None
    # a chosen weighted cluster's own config beats the route's and the virtual host's
    cluster_fault = {**fault, "abort": {"http_status": 418, "percentage": {"numerator": 100}}}
    r = table([vh("v", ["*"], [{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
        {"name": "c", "weight": 1, "typed_per_filter_config": {"envoy.filters.http.fault": cluster_fault}}]}},
        "typed_per_filter_config": {"envoy.filters.http.fault": fault}}])]).match("h", "/", Headers())
    _, cw = r.choose_cluster(Headers(), random.Random(0))
    assert r.per_filter_config("envoy.filters.http.fault", cw).abort.http_status == 418
    assert r.per_filter_config("envoy.filters.http.fault").abort.http_status == 503
    assert repr(r) == "RouteMatchResult(vhost='v', route='', -> weighted_clusters)"


# ---------------------------------------------------------------- robustness

ROBUST = table([
    vh("a", ["a.com", "*.b.com", "c.*"], [
        route({"safe_regex": {"regex": "/x/[0-9]+"}, "headers": [{"name": "h", "range_match": {"start": 0, "end": 9}}]}),
        route({"prefix": "/", "query_parameters": [{"name": "q", "string_match": {"prefix": "z"}}]}),
        route({"path_separated_prefix": "/p", "case_sensitive": False}),
    ]),
    vh("d", ["*"]),
])


@settings(max_examples=300, deadline=None)
@given(
    authority=st.text(max_size=30),
    path=st.text(max_size=60),
    headers=st.lists(st.tuples(st.sampled_from(["h", "q", "x", ":path"]), st.text(max_size=20)), max_size=5),
    method=st.text(max_size=8),
)
def test_route_table_never_raises_on_arbitrary_requests(authority, path, headers, method):
    result = ROBUST.match(authority, path, Headers(headers), method=method)
    vhost = ROBUST.find_virtual_host(authority)
    assert vhost is not None  # '*' catches every authority
    if vhost.name == "d" and path.startswith("/"):
        assert result is not None
    if result is not None:
        assert result.virtual_host is vhost
        result.rewrite_path(path)


@given(st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=6).filter(lambda ws: sum(ws) > 0),
       st.integers(min_value=0, max_value=2**32))
@settings(max_examples=40, deadline=None)
def test_weighted_picks_converge_on_the_weights(weights, seed):
    """Whatever the weights (zero allowed, any sum), 3,000 seeded draws land on each cluster within 6 standard
    deviations of weight/total (binomial), and a zero-weight cluster is never chosen."""
    pairs = [(f"c{i}", w) for i, w in enumerate(weights)]
    r = table([vh("v", ["*"], [weighted(*pairs)])]).match("h", "/", Headers())
    rng = random.Random(seed)
    n = 3000
    picks = [r.choose_cluster(Headers(), rng)[0] for _ in range(n)]
    total = sum(weights)
    for name, w in pairs:
        p = w / total
        expected, sigma = n * p, (n * p * (1 - p)) ** 0.5
        got = picks.count(name)
        if w == 0:
            assert got == 0
        else:
            assert abs(got - expected) <= 6 * sigma + 1, (name, w, total, got, expected)


# ---------------------------------------------------------------- matcher decisions, one each


def first(routes, authority="a", path="/", headers=None, **kw):
    """The cluster of the route that matches, or None."""
    r = table([vh("v", ["*"], routes)]).match(authority, path, headers or Headers(), **kw)
    return r.action.cluster if r is not None and r.action is not None else None


@pytest.mark.parametrize("matcher, kw, hit", [
    ({"name": ":scheme", "string_match": {"exact": "https"}}, {"scheme": "https"}, True),
    ({"name": ":scheme", "string_match": {"exact": "https"}}, {"scheme": "http"}, False),
    ({"name": ":method", "exact_match": "POST"}, {"method": "POST"}, True),
    ({"name": ":authority", "prefix_match": "a"}, {}, True),
    ({"name": ":path", "suffix_match": "?q=1"}, {}, True),  # :path is the full path, query included
    ({"name": ":other", "present_match": True}, {}, False),  # an unknown pseudo-header is never present
    ({"name": "x-a", "exact_match": ""}, {"headers": H(x_a="anything")}, True),  # legacy: presence
    ({"name": "x-a", "exact_match": ""}, {}, False),
    ({"name": "x-a", "string_match": {"prefix": "AB", "ignore_case": True}}, {"headers": H(x_a="abc")}, True),
    ({"name": "x-a", "string_match": {"contains": "B", "ignore_case": True}}, {"headers": H(x_a="xbx")}, True),
    ({"name": "x-a", "string_match": {"suffix": "AB", "ignore_case": True}}, {"headers": H(x_a="xab")}, True),
    ({"name": "x-a", "string_match": {"suffix": "AB", "ignore_case": True}}, {"headers": H(x_a="abx")}, False),
    ({"name": "x-a", "string_match": {"contains": "B", "ignore_case": True}}, {"headers": H(x_a="xx")}, False),
    ({"name": "x-a", "contains_match": "b"}, {"headers": H(x_a="abc")}, True),
    ({"name": "x-a", "range_match": {"start": 1, "end": 10}}, {"headers": H(x_a="-5")}, False),
    ({"name": "x-a", "range_match": {"start": -10, "end": 10}}, {"headers": H(x_a=" -5 ")}, True),
    ({"name": "x-a", "range_match": {"start": 1, "end": 10}}, {"headers": H(x_a="٣")}, False),  # ASCII only
])
def test_header_matchers(matcher, kw, hit):
    assert (first([route({"prefix": "/", "headers": [matcher]})], path="/p?q=1", **kw) == "c") is hit


@pytest.mark.parametrize("path, hit", [
    ("/?&a=1#frag", True),  # empty parts skipped, the fragment is not part of the query
    ("/?a=2&a=1", False),  # the first value of a name wins
    ("/?b=1#a=1", False),
    ("/", False),
])
def test_query_string_parsing_for_matching(path, hit):
    routes = [route({"prefix": "/", "query_parameters": [{"name": "a", "string_match": {"exact": "1"}}]})]
    assert (first(routes, path=path) == "c") is hit


def dynamic(value, invert=False):
    return route({"prefix": "/", "dynamic_metadata": [{"filter": "jwt", "path": [{"key": "claims"}, {"key": "groups"}],
                                                        "value": value, "invert": invert}]})


@pytest.mark.parametrize("value, metadata, hit", [
    ({"list_match": {"one_of": {"string_match": {"exact": "dev"}}}}, {"jwt": {"claims": {"groups": ["a", "dev"]}}}, True),
    ({"list_match": {"one_of": {"string_match": {"exact": "dev"}}}}, {"jwt": {"claims": {"groups": ["a"]}}}, False),
    ({"list_match": {"one_of": {"string_match": {"exact": "dev"}}}}, {"jwt": {"claims": {"groups": "dev"}}}, False),
    ({"or_match": {"value_matchers": [{"string_match": {"exact": "x"}}]}}, {"jwt": {"claims": {"groups": "x"}}}, True),
    ({"or_match": {"value_matchers": [{"string_match": {"exact": "x"}}, {"bool_match": True}]}},
     {"jwt": {"claims": {"groups": True}}}, True),
    ({"or_match": {"value_matchers": [{"string_match": {"exact": "x"}}, {"bool_match": True}]}},
     {"jwt": {"claims": {"groups": "y"}}}, False),
    ({"present_match": True}, {"jwt": {"claims": {}}}, False),
    ({"present_match": True}, None, False),
])
def test_dynamic_metadata_matching(value, metadata, hit):
    assert (first([dynamic(value)], metadata=metadata) == "c") is hit
    assert (first([dynamic(value, invert=True)], metadata=metadata) == "c") is not hit


@pytest.mark.parametrize("full_path, query", [
    ("/p?a=1?b=2", {"a": "1?b=2"}),  # the query starts at the first '?'
    ("?a=1", {"a": "1"}),
    ("/p?a=1#x#y", {"a": "1"}),  # and ends at the first '#'
    ("/p?#a=1", {}),
    ("/p?a=b=c&c", {"a": "b=c", "c": ""}),  # the value is everything after the first '='
    ("/p", {}),
])
def test_parse_query(full_path, query):
    from pyproxy.routing.table import parse_query
    assert parse_query(full_path) == query


def test_range_match_reads_an_optional_sign_then_digits_only():
    def hit(value):
        return first([route({"prefix": "/", "headers": [{"name": "x-a", "range_match": {"start": 0, "end": 10}}]})],
                     headers=H(x_a=value)) == "c"
    assert hit("5") and hit("+5") and not hit("X5") and not hit("5X") and not hit("") and not hit("+")


def test_headers_match_reads_the_request_line_it_is_given():
    from pyproxy.routing.table import compile_header_matcher, headers_match

    def exact(name, value):
        return compile_header_matcher(decode(HeaderMatcher, {"name": name, "string_match": {"exact": value}}))
    given = [exact(":authority", "a.com"), exact(":path", "/p"), exact(":method", "PUT"), exact(":scheme", "https")]
    assert headers_match(given, H(), authority="a.com", path="/p", method="PUT", scheme="https") is True
    assert headers_match(given[1:], H(), path="/p", method="PUT", scheme="https") is True
    # what is not given is present and empty
    empty = [exact(":authority", ""), exact(":path", ""), exact(":method", ""), exact(":scheme", "")]
    assert headers_match(empty, H()) is True


def test_headers_match_for_bare_headers():
    from pyproxy.routing.table import compile_header_matcher, headers_match
    matchers = [compile_header_matcher(decode(HeaderMatcher, {"name": ":method", "exact_match": "GET"})),
                compile_header_matcher(decode(HeaderMatcher, {"name": "x-a", "present_match": True}))]
    assert headers_match(matchers, H(x_a="1"), method="GET") is True
    assert headers_match(matchers, H(x_a="1"), method="PUT") is False
    assert headers_match(matchers, H(), method="GET") is False


@pytest.mark.parametrize("split, expected", [
    ("[::1", ("[::1", None)),  # an unclosed bracket: no port
    ("[::1]:8080", ("[::1]", "8080")),
    ("::1", ("::1", None)),
    ("a:80", ("a", "80")),
    (":80", ("", "80")),  # Envoy getPortStart: the last ':' even at the start
    ("[a]:b]", ("[a]:b]", None)),  # the last ']' is after the last ':': no port
])
def test_split_host_port_edges(split, expected):
    assert split_host_port(split) == expected


@pytest.mark.parametrize("vhosts, where, says", [
    ([vh("v", ["*"], [route({"safe_regex": {"regex": "("}})])],
     "virtual_hosts[0].routes[0].match.safe_regex", "missing ), unterminated subpattern"),
    ([vh("v", [""])], "virtual_hosts[0].domains[0]", "empty domain"),
    ([vh("v", ["*"], [{**route({"prefix": "/"}), "request_headers_to_remove": [":authority"]}])],
     "virtual_hosts[0].routes[0].request_headers_to_remove[0]", "may not be modified"),
    ([vh("v", ["*"], [{"match": {"prefix": "/"}, "route": {"cluster": "c", "regex_rewrite": {
        "pattern": {"regex": "a"}, "substitution": "x\\"}}}])],
     "virtual_hosts[0].routes[0].route.regex_rewrite.substitution", "ends with a lone backslash"),
    ([vh("v", ["*"], [{"match": {"prefix": "/"}, "route": {"cluster": "c", "regex_rewrite": {
        "pattern": {"regex": "a"}, "substitution": "\\n"}}}])],
     "virtual_hosts[0].routes[0].route.regex_rewrite.substitution", "invalid escape '\\n'"),
])
def test_config_errors_name_the_field(vhosts, where, says):
    with pytest.raises(ConfigError) as e:
        table(vhosts)
    assert e.value.path.endswith(where) and says in e.value.message


def test_substitution_escaped_backslash():
    r = table([vh("v", ["*"], [{"match": {"prefix": "/"}, "route": {"cluster": "c", "regex_rewrite": {
        "pattern": {"regex": "/(a)"}, "substitution": "/\\1\\\\b"}}}])]).match("x", "/a?q", Headers())
    assert r.rewrite_path("/a?q") == "/a\\b?q"


def test_header_mutations_skip_a_missing_header_and_overwrite_only_what_exists():
    h = H(x_a="1")
    apply_header_mutations(h, [HeaderValueOption(header=None),
                               decode(HeaderValueOption, {"header": {"key": "x-a", "value": "2"},
                                                          "append_action": "OVERWRITE_IF_EXISTS"}),
                               decode(HeaderValueOption, {"header": {"key": "x-b", "value": "3"},
                                                          "append_action": "OVERWRITE_IF_EXISTS"})])
    assert h.items() == [("x-a", "2")]


def test_a_redirect_route_chooses_no_cluster_and_reprs_name_the_target():
    t = table([vh("v", ["*"], [{"name": "r1", "match": {"prefix": "/old"}, "redirect": {"path_redirect": "/new"}},
                               {"name": "r2", "match": {"prefix": "/"}, "route": {"cluster_header": "x-c"}}])])
    r = t.match("a", "/old", Headers())
    assert r.choose_cluster(Headers(), random.Random(0)) == (None, None)
    assert repr(r) == "RouteMatchResult(vhost='v', route='r1', -> redirect)"
    plain = table([vh("v", ["*"])]).match("a", "/", Headers())
    assert plain.choose_cluster(Headers(), random.Random(0)) == ("v", None)
    r2 = t.match("a", "/x", Headers())
    assert r2.choose_cluster(H(x_c="up"), random.Random(0)) == ("up", None)
    assert r2.choose_cluster(Headers(), random.Random(0)) == (None, None)  # header absent: cluster not found
    assert repr(r2) == "RouteMatchResult(vhost='v', route='r2', -> x-c)"
    assert repr(t) == "RouteTable('80', virtual_hosts=1)"


# ---------------------------------------------------------------- matchers compiled directly

STRING_MATCHER_CASES = [
    # (StringMatcher fields, value, matches)
    ({"exact": "ab"}, "ab", True), ({"exact": "ab"}, "xab", False), ({"exact": "ab"}, "abx", False),
    ({"exact": "ab"}, "AB", False),
    ({"prefix": "ab"}, "abx", True), ({"prefix": "ab"}, "xab", False), ({"prefix": "ab"}, "ABx", False),
    ({"suffix": "ab"}, "xab", True), ({"suffix": "ab"}, "abx", False), ({"suffix": "ab"}, "xAB", False),
    ({"contains": "ab"}, "xabx", True), ({"contains": "ab"}, "xx", False), ({"contains": "ab"}, "xABx", False),
    ({"exact": "AB", "ignore_case": True}, "ab", True), ({"exact": "AB", "ignore_case": True}, "xab", False),
    ({"exact": "AB", "ignore_case": True}, "abx", False),
    ({"prefix": "AB", "ignore_case": True}, "abx", True), ({"prefix": "AB", "ignore_case": True}, "xab", False),
    ({"suffix": "AB", "ignore_case": True}, "xab", True), ({"suffix": "AB", "ignore_case": True}, "abx", False),
    ({"contains": "AB", "ignore_case": True}, "xabx", True), ({"contains": "AB", "ignore_case": True}, "xx", False),
    ({"safe_regex": {"regex": "a."}, "ignore_case": True}, "AB", False),  # ignore_case has no effect on regex
    ({"safe_regex": {"regex": "a."}}, "ab", True), ({"safe_regex": {"regex": "a."}}, "abc", False),
]


@pytest.mark.parametrize("fields, value, hit", STRING_MATCHER_CASES)
def test_string_matcher(fields, value, hit):
    from pyproxy.config.model import StringMatcher
    from pyproxy.routing.table import compile_string_matcher

    assert compile_string_matcher(decode(StringMatcher, fields))(value) is hit


LEGACY_HEADER_CASES = [
    # (HeaderMatcher fields beyond the name x-a, x-a value or None for absent, matches)
    ({"safe_regex_match": {"regex": "a+"}}, "aa", True), ({"safe_regex_match": {"regex": "a+"}}, "ab", False),
    ({"prefix_match": "ab"}, "abc", True), ({"prefix_match": "ab"}, "cab", False),
    ({"suffix_match": "ab"}, "cab", True), ({"suffix_match": "ab"}, "abc", False),
    ({"contains_match": "ab"}, "cabc", True), ({"contains_match": "ab"}, "cc", False),
    ({"exact_match": "ab"}, "ab", True), ({"exact_match": "ab"}, "abc", False),
    # a missing header fails every matcher, even an inverted one, unless treated as empty
    ({"prefix_match": "X", "invert_match": True}, None, False),
    ({"prefix_match": "X", "treat_missing_header_as_empty": True}, None, False),
    ({"string_match": {"exact": ""}, "treat_missing_header_as_empty": True}, None, True),
    ({"string_match": {"exact": ""}, "treat_missing_header_as_empty": True, "invert_match": True}, None, False),
]


@pytest.mark.parametrize("fields, value, hit", LEGACY_HEADER_CASES)
def test_header_matcher_kinds(fields, value, hit):
    from pyproxy.routing.table import RequestView, compile_header_matcher

    check = compile_header_matcher(decode(HeaderMatcher, {"name": "x-a", **fields}))
    headers = Headers([("x-a", value)] if value is not None else [])
    assert check(RequestView(headers, "", "/", "GET", "http")) is hit


def test_matchers_built_in_code_name_the_field_of_an_empty_string_matcher():
    """The decoder refuses a StringMatcher without a kind; one built in code gets the same error, with its path."""
    from pyproxy.config.model import (ListMatcher, MetadataMatcher, OrMatcher, QueryParameterMatcher, StringMatcher,
                                      ValueMatcher)
    from pyproxy.routing.table import (_compile_query_matcher, compile_header_matcher, compile_metadata_matcher,
                                       compile_string_matcher, compile_value_matcher)

    empty = StringMatcher()
    value = ValueMatcher(string_match=empty)
    cases = [
        (lambda: compile_string_matcher(empty), ""),
        (lambda: compile_string_matcher(empty, "p"), "p"),
        (lambda: compile_header_matcher(HeaderMatcher(name="x", string_match=empty)), ".string_match"),
        (lambda: compile_header_matcher(HeaderMatcher(name="x", string_match=empty), "h"), "h.string_match"),
        (lambda: _compile_query_matcher(QueryParameterMatcher(name="q", string_match=empty), "q"), "q.string_match"),
        (lambda: compile_value_matcher(value), ".string_match"),
        (lambda: compile_value_matcher(ValueMatcher(list_match=ListMatcher(one_of=value)), "v"),
         "v.list_match.one_of.string_match"),
        (lambda: compile_value_matcher(ValueMatcher(or_match=OrMatcher(value_matchers=(
            ValueMatcher(bool_match=True), value))), "v"), "v.or_match.value_matchers[1].string_match"),
        (lambda: compile_metadata_matcher(MetadataMatcher(filter="f", value=value)), ".value.string_match"),
        (lambda: compile_metadata_matcher(MetadataMatcher(filter="f", value=value), "m"), "m.value.string_match"),
    ]
    for build, where in cases:
        with pytest.raises(ConfigError) as e:
            build()
        assert (e.value.path, e.value.message) == (where, "StringMatcher needs one of exact, prefix, suffix, contains, "
                                                          "safe_regex")
    with pytest.raises(ConfigError) as e:
        compile_header_matcher(HeaderMatcher(name=""), "h")
    assert (e.value.path, e.value.message) == ("h.name", "header matcher needs a name")
    with pytest.raises(ConfigError) as e:
        compile_header_matcher(HeaderMatcher(name=""))
    assert e.value.path == ".name"


@pytest.mark.parametrize("fields, value, hit", [
    ({"bool_match": True}, True, True), ({"bool_match": True}, False, False), ({"bool_match": True}, 1, False),
    ({"bool_match": False}, "x", False),
    ({"present_match": True}, "x", True), ({"present_match": True}, None, False),
    ({"present_match": False}, "x", False),  # Envoy: present_match false never matches
])
def test_value_matcher(fields, value, hit):
    from pyproxy.config.model import ValueMatcher
    from pyproxy.routing.table import compile_value_matcher

    assert compile_value_matcher(decode(ValueMatcher, fields))(value) is hit


def test_the_chosen_weighted_cluster_s_own_header_layers_run_first():
    r = table([vh("v", ["*"], [{
        "match": {"prefix": "/"},
        "route": {"weighted_clusters": {"clusters": [
            {"name": "c", "weight": 1,
             "request_headers_to_add": [hvo("x-c", "req")], "request_headers_to_remove": ["X-Drop"],
             "response_headers_to_add": [hvo("x-c", "resp")], "response_headers_to_remove": ["X-RDrop"]},
            {"name": "d", "weight": 0}]}},
        "request_headers_to_add": [hvo("x-r", "1")],
    }])]).match("h", "/", Headers())
    name, cw = r.choose_cluster(Headers(), random.Random(0))
    assert name == "c"
    assert [len(layer[0]) for layer in r.request_layers(cw)] == [1, 1] and r.request_layers(cw)[0][1] == ("x-drop",)
    headers = H(x_drop="1", x_keep="1")
    r.apply_request_headers(headers, cw)
    assert headers.items() == [("x-keep", "1"), ("x-c", "req"), ("x-r", "1")]
    headers = H(x_rdrop="1", x_keep="1")
    r.apply_response_headers(headers, cw)
    assert headers.items() == [("x-keep", "1"), ("x-c", "resp")]
    assert r.response_layers(cw)[0][1] == ("x-rdrop",)
    # without a cluster weight, or for one without headers, only the route's layers
    d = next(c for c in r.action.weighted_clusters.clusters if c.name == "d")
    assert r.request_layers(d) == r.request_layers() and len(r.request_layers()) == 1
    assert r.response_layers(d) == () == r.response_layers()


def test_weighted_clusters_without_weight_name_the_field():
    from pyproxy.config.model import WeightedCluster

    with pytest.raises(ConfigError) as e:
        choose_weighted_cluster(decode(WeightedCluster, {"clusters": [{"name": "a", "weight": 0}]}), random.Random(0))
    assert (e.value.path, e.value.message) == (".clusters", "weighted_clusters needs at least one cluster with weight > 0")


@pytest.mark.parametrize("path, rewritten", [
    ("/a?a?a", "/b?a?a"),  # the query starts at the first '?' and is never rewritten
    ("?a", "?a"),  # an empty path: nothing to rewrite
    ("/a", "/b"),
])
def test_regex_rewrite_leaves_the_query_alone(path, rewritten):
    from pyproxy.config.model import RouteAction

    action = decode(RouteAction, {"cluster": "c", "regex_rewrite": {"pattern": {"regex": "a"}, "substitution": "b"}})
    route_ = table([vh("v", ["*"])]).match("h", "/", Headers()).route
    assert rewrite_path(action, route_, path) == rewritten


def test_find_virtual_host_without_a_match_is_none():
    t = table([vh("a", ["a.com"])])
    assert t.find_virtual_host("b.com") is None and t.find_virtual_host("a.com").name == "a"


def test_a_route_action_built_without_a_cluster_finds_none():
    """The decoder requires cluster, cluster_header or weighted_clusters; one built in code gets 'not found'."""
    from pyproxy.config.model import Route, RouteAction, RouteMatch, VirtualHost
    from pyproxy.routing.table import RouteMatchResult

    route_ = Route(match=RouteMatch(prefix="/"), route=RouteAction())
    r = RouteMatchResult(RouteConfiguration(), VirtualHost(name="v", domains=("*",), routes=(route_,)), route_, "r")
    assert r.choose_cluster(H(x_c="up"), random.Random(0)) == (None, None)


def test_a_match_result_carries_its_route_facts():
    rc = {"name": "80", "virtual_hosts": [vh("v", ["*"], [
        {"match": {"prefix": "/r"}, "route": {"cluster": "c", "timeout": "2s",
                                                "hash_policy": [{"header": {"header_name": "x-user"}}]}},
        {"match": {"prefix": "/d"}, "direct_response": {"status": 418}},
        {"match": {"prefix": "/"}, "redirect": {"path_redirect": "/r"}},
    ])]}
    t = RouteTable(decode(RouteConfiguration, rc))
    routed, direct, redirect = (t.match("h", p, Headers()) for p in ("/r", "/d", "/x"))
    assert routed.route_config is t.config and routed.timeout == 2.0
    assert [h.header.header_name for h in routed.hash_policies] == ["x-user"]
    assert direct.kind == "direct_response" and direct.direct_response.status == 418
    assert (direct.timeout, direct.hash_policies) == (0.0, ()) and (redirect.timeout, redirect.hash_policies) == (0.0, ())


def test_a_bad_redirect_substitution_names_its_route():
    with pytest.raises(ConfigError) as e:
        table([vh("v", ["*"], [{"match": {"prefix": "/"}, "redirect": {"regex_rewrite": {
            "pattern": {"regex": "(a)"}, "substitution": "\\\\2"}}}])])
    assert e.value.path == "virtual_hosts[0].routes[0].redirect.regex_rewrite.substitution"


def test_errors_name_the_route_config_when_it_has_a_name():
    with pytest.raises(ConfigError) as e:
        table([vh("a", ["a.com"]), vh("b", ["A.com"])])
    assert (e.value.path, e.value.message) == (
        "virtual_hosts[1].domains[0]", "route_config '80': duplicate domain 'A.com' (domains must be unique)")
    with pytest.raises(ConfigError) as e:
        RouteTable(decode(RouteConfiguration, {"virtual_hosts": [vh("a", ["a.com"]), vh("b", ["a.com"])]}))
    assert e.value.message == "duplicate domain 'a.com' (domains must be unique)"


def test_route_matchers_built_in_code_name_their_field():
    """The decoder refuses these; a RouteConfiguration built in code gets the same errors, naming the field."""
    from pyproxy.config.model import (MetadataMatcher, QueryParameterMatcher, Route, RouteAction, RouteMatch,
                                      StringMatcher, ValueMatcher, VirtualHost)

    def build(match):
        route_ = Route(match=match, route=RouteAction(cluster="c"))
        RouteTable(RouteConfiguration(virtual_hosts=(VirtualHost(name="v", domains=("*",), routes=(route_,)),)))

    empty = StringMatcher()
    cases = [
        (RouteMatch(), "virtual_hosts[0].routes[0].match",
         "route match needs one of prefix, path, safe_regex, path_separated_prefix"),
        (RouteMatch(prefix="/", headers=(HeaderMatcher(name=""),)), "virtual_hosts[0].routes[0].match.headers[0].name",
         "header matcher needs a name"),
        (RouteMatch(prefix="/", query_parameters=(QueryParameterMatcher(name="q", string_match=empty),)),
         "virtual_hosts[0].routes[0].match.query_parameters[0].string_match", None),
        (RouteMatch(prefix="/", dynamic_metadata=(MetadataMatcher(filter="f", value=ValueMatcher(string_match=empty)),)),
         "virtual_hosts[0].routes[0].match.dynamic_metadata[0].value.string_match", None),
    ]
    for match, where, says in cases:
        with pytest.raises(ConfigError) as e:
            build(match)
        assert e.value.path == where
        assert e.value.message == (says or "StringMatcher needs one of exact, prefix, suffix, contains, safe_regex")


def test_the_https_redirect_of_require_tls_is_a_named_catch_all_route():
    r = table([vh("v", ["*"], require_tls="ALL")]).match("h", "/x?q", Headers(), scheme="http")
    assert (r.name, r.route.match.prefix, r.kind) == ("v/require_tls", "/", "redirect")
    assert r.redirect_location("http", "h", "/x?q") == "https://h/x?q"


@pytest.mark.parametrize("path, stripped", [
    ("/a?b?c", "/a"), ("/a#x#y", "/a"), ("/a?b#c", "/a"), ("?q", ""), ("#f", ""), ("/a", "/a"),
])
def test_strip_query(path, stripped):
    from pyproxy.routing.table import strip_query
    assert strip_query(path) == stripped


class _Draw:
    def __init__(self, value):
        self.value = value

    def randrange(self, n):
        return self.value


def test_runtime_fraction_boundary_and_without_an_rng():
    t = table([vh("v", ["*"], [route({"prefix": "/", "runtime_fraction": {"default_value": {"numerator": 50}}})])])
    assert t.match("h", "/", Headers(), rng=_Draw(49)) is not None
    assert t.match("h", "/", Headers(), rng=_Draw(50)) is None  # a draw equal to the numerator is out
    one = table([vh("v", ["*"], [route({"prefix": "/", "runtime_fraction": {"default_value": {"numerator": 1}}})])])
    assert one.match("h", "/", Headers()) is not None  # without an rng any fraction > 0 matches
    none = table([vh("v", ["*"], [route({"prefix": "/", "runtime_fraction": {"default_value": {"numerator": 0}}})])])
    assert none.match("h", "/", Headers()) is None


def test_domain_errors_say_what_is_wrong():
    with pytest.raises(ConfigError) as e:
        table([vh("a", ["*"]), vh("b", ["*"])])
    assert e.value.message == "route_config '80': only a single wildcard domain '*' is permitted"
    with pytest.raises(ConfigError) as e:  # a domain listed after '*' still counts
        table([vh("a", ["*", "a.com"]), vh("b", ["a.com"])])
    assert e.value.path == "virtual_hosts[1].domains[0]"


@pytest.mark.parametrize("domains, authority, found", [
    (["*.a.com"], "x.a.com", True), (["*.a.com"], ".a.com", False),  # a wildcard never matches the empty string
    (["api.*"], "api.x", True), (["api.*"], "api.", False),
])
def test_wildcard_only_tables(domains, authority, found):
    t = table([vh("v", domains)])
    assert (t.find_virtual_host(authority) is not None) is found


def test_match_defaults_to_an_external_get():
    t = table([vh("v", ["*"], [route({"prefix": "/", "headers": [{"name": ":method", "exact_match": "GET"}]})],
                  require_tls="EXTERNAL_ONLY")])
    assert t.match("h", "/", Headers(), scheme="https") is not None  # the method defaults to GET
    assert t.match("h", "/", Headers()).kind == "redirect"  # not internal by default: EXTERNAL_ONLY redirects


def test_a_weighted_route_reprs_its_target_as_weighted_clusters():
    r = table([vh("v", ["*"], [{"name": "w", "match": {"prefix": "/"},
                                "route": {"weighted_clusters": {"clusters": [{"name": "c", "weight": 1}]}}}])])
    assert repr(r.match("h", "/", Headers())) == "RouteMatchResult(vhost='v', route='w', -> weighted_clusters)"


@pytest.mark.parametrize("with_weight", [False, True])
def test_header_rules_apply_from_the_route_alone_and_from_a_weighted_cluster_alone(with_weight):
    """A route's own request/response header rules apply without a weighted cluster; a weighted cluster's apply
    when the route, virtual host and table have none (the shortcut for a route without rules skips neither)."""
    if with_weight:
        route = {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
            {"name": "c", "weight": 1, "request_headers_to_add": [hvo("x-req", "1")],
             "response_headers_to_add": [hvo("x-resp", "1")]}]}}}
    else:
        route = {"match": {"prefix": "/"}, "route": {"cluster": "c"},
                 "request_headers_to_add": [hvo("x-req", "1")], "response_headers_to_add": [hvo("x-resp", "1")]}
    r = table([vh("v", ["*"], [route])]).match("h", "/", Headers())
    _, cw = r.choose_cluster(Headers(), random.Random(0))
    assert (cw is not None) == with_weight
    request, response = H(x_keep="1"), H(x_keep="1")
    r.apply_request_headers(request, cw)
    r.apply_response_headers(response, cw)
    assert (request.items(), response.items()) == ([("x-keep", "1"), ("x-req", "1")], [("x-keep", "1"), ("x-resp", "1")])


def test_a_route_without_header_rules_leaves_the_headers_alone():
    r = table([vh("v", ["*"], [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}])]).match("h", "/", Headers())
    request, response = H(x_keep="1"), H(x_keep="1")
    r.apply_request_headers(request)
    r.apply_response_headers(response)
    assert request.items() == response.items() == [("x-keep", "1")]
