"""Issue 3, routing: a RouteConfiguration (Envoy v3, as istiod emits it for a VirtualService) decides, black box.

Virtual hosts by `domains` (exact, `*.suffix`, `prefix.*`, `*`, with and without port; most specific wins),
route matches (prefix, path, safe_regex, path_separated_prefix, case_sensitive, header and query matchers; first
match wins), and route actions (cluster, weighted_clusters under a seeded rng, prefix/regex/host rewrites,
redirects, direct responses, header mutations at route and virtual-host level, request mirroring). Which route
matched is read from a `direct_response` body naming it, or from what the upstream received.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.support.client import RawClient
from tests.support.proxy import bootstrap, route, virtual_host
from tests.support.traffic import binomial_bounds, percent


def named(name: str, match: dict, **extra) -> dict:
    """A route answering 200 with its own name as the body."""
    return {"name": name, "match": match, "direct_response": {"status": 200, "body": {"inline_string": name}},
            **extra}


async def body_of(proxy, path: str, headers=None, host: str = "example.com") -> str:
    r = await proxy.fetch("GET", path, headers, host=host)
    assert r.status == 200, (path, headers, host, r.status, r.body)
    return r.body.decode()


# ---------------------------------------------------------------- virtual hosts

DOMAIN_HOSTS = [
    virtual_host("exact", ["api.example.com"], [named("exact", {"prefix": "/"})]),
    virtual_host("exact-port", ["api.example.com:8080"], [named("exact-port", {"prefix": "/"})]),
    virtual_host("suffix", ["*.example.com"], [named("suffix", {"prefix": "/"})]),
    virtual_host("longer-suffix", ["*.svc.example.com"], [named("longer-suffix", {"prefix": "/"})]),
    virtual_host("prefix", ["api.*"], [named("prefix", {"prefix": "/"})]),
    virtual_host("default", ["*"], [named("default", {"prefix": "/"})]),
]


@pytest.mark.parametrize("host, vhost", [
    ("api.example.com", "exact"),  # exact beats *.example.com and api.*
    ("API.Example.COM", "exact"),  # domains are case-insensitive
    ("api.example.com:8080", "exact-port"),  # a domain with a port matches Host with that port
    ("www.example.com", "suffix"),
    ("a.svc.example.com", "longer-suffix"),  # the longest suffix wildcard wins
    ("api.svc.example.com", "longer-suffix"),  # suffix wildcards beat prefix wildcards
    ("api.other.org", "prefix"),
    ("api.example.com:9090", "prefix"),  # Host is matched with its port: not exact, not *.example.com
    ("other.org", "default"),
    ("example.com", "default"),  # *.example.com needs at least one character before the dot
])
async def test_virtual_host_by_domain_most_specific_wins(traffic_proxy, host, vhost):
    p = await traffic_proxy(bootstrap({"unused": []}, virtual_hosts=DOMAIN_HOSTS))
    assert await body_of(p, "/", host=host) == vhost


async def test_no_virtual_host_is_404_nr(traffic_proxy, tmp_path):
    vhs = [virtual_host("only", ["only.example.com", "only.example.com:80"], [named("only", {"prefix": "/"})])]
    p = await traffic_proxy(bootstrap({"unused": []}, virtual_hosts=vhs, access_log=tmp_path / "a.log"))
    assert await body_of(p, "/", host="only.example.com:80") == "only"
    assert (await p.fetch("GET", "/", host="other.example.com")).status == 404
    assert p.access_log()[-1]["flags"] == "NR"


# ---------------------------------------------------------------- route matching

def hdr(name: str, **string_match) -> dict:
    return {"name": name, "string_match": string_match}


MATCH_ROUTES = [
    named("path", {"path": "/exact"}),
    named("regex", {"safe_regex": {"regex": "/items/[0-9]+"}}),
    named("sep", {"path_separated_prefix": "/sep"}),
    named("nocase", {"prefix": "/CaSe", "case_sensitive": False}),
    named("h-exact", {"prefix": "/h", "headers": [hdr("x-m", exact="exact")]}),
    named("h-prefix", {"prefix": "/h", "headers": [hdr("x-m", prefix="pre")]}),
    named("h-suffix", {"prefix": "/h", "headers": [hdr("x-m", suffix="suf")]}),
    named("h-contains", {"prefix": "/h", "headers": [hdr("x-m", contains="mid")]}),
    named("h-regex", {"prefix": "/h", "headers": [hdr("x-m", safe_regex={"regex": "v[0-9]+"})]}),
    named("h-present", {"prefix": "/h", "headers": [{"name": "x-present", "present_match": True}]}),
    named("h-inverted", {"prefix": "/h", "headers": [{**hdr("x-m", exact="nope"), "invert_match": True}]}),
    named("h-and", {"prefix": "/and", "headers": [hdr("x-a", exact="1"), hdr("x-b", exact="2")]}),
    named("q", {"prefix": "/q", "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}]}),
    named("q-present", {"prefix": "/q", "query_parameters": [{"name": "flag", "present_match": True}]}),
    named("first", {"prefix": "/order"}),
    named("second", {"prefix": "/order/more"}),  # never reached: the route above matches first
    named("catch-all", {"prefix": "/"}),
]


@pytest.mark.parametrize("path, headers, expected", [
    ("/exact", None, "path"),
    ("/exact?x=1", None, "path"),  # the query is not part of the path match
    ("/exact/more", None, "catch-all"),
    ("/items/42", None, "regex"),
    ("/items/42x", None, "catch-all"),  # safe_regex must match the whole path
    ("/sep", None, "sep"),
    ("/sep/a", None, "sep"),
    ("/sepx", None, "catch-all"),  # path_separated_prefix stops at a segment boundary
    ("/case/x", None, "nocase"),
    ("/CASE", None, "nocase"),
    ("/h", [("x-m", "exact")], "h-exact"),
    ("/h", [("x-m", "prefix-x")], "h-prefix"),
    ("/h", [("x-m", "x-suf")], "h-suffix"),
    ("/h", [("x-m", "amidb")], "h-contains"),
    ("/h", [("x-m", "v12")], "h-regex"),
    ("/h", [("x-m", "v12a"), ("x-present", "")], "h-present"),  # regex is a full match; presence of an empty value
    ("/h", [("x-m", "other")], "h-inverted"),
    ("/h", [("x-m", "nope")], "catch-all"),
    ("/h", None, "catch-all"),  # a missing header fails even an inverted matcher
    ("/and", [("x-a", "1"), ("x-b", "2")], "h-and"),
    ("/and", [("x-a", "1")], "catch-all"),  # header matchers are AND-ed
    ("/q?debug=1", None, "q"),
    ("/q?debug=2", None, "catch-all"),
    ("/q?flag", None, "q-present"),
    ("/q?debug=2&flag=", None, "q-present"),
    ("/order/more", None, "first"),  # first match wins, in order
])
async def test_route_match_first_match_wins(traffic_proxy, path, headers, expected):
    p = await traffic_proxy(bootstrap({"unused": []}, routes=MATCH_ROUTES))
    assert await body_of(p, path, headers) == expected


# ---------------------------------------------------------------- actions

async def test_prefix_rewrite_keeps_query_and_records_original_path(traffic_proxy, upstream):
    routes = [route("/api/", "backend", prefix_rewrite="/v2/")]
    p = await traffic_proxy(bootstrap({"backend": [upstream.port]}, routes=routes))
    assert (await p.fetch("GET", "/api/users?x=1")).status == 200
    rq = upstream.requests[-1]
    assert rq.path == "/v2/users?x=1"
    assert rq.header("x-envoy-original-path") == "/api/users?x=1"


async def test_regex_rewrite_with_capture_groups(traffic_proxy, upstream):
    routes = [route("/svc/", "backend", regex_rewrite={"pattern": {"regex": "^/svc/([^/]+)/(.*)$"},
                                                       "substitution": "/\\2/instance/\\1"})]
    p = await traffic_proxy(bootstrap({"backend": [upstream.port]}, routes=routes))
    assert (await p.fetch("GET", "/svc/a7/items/3")).status == 200
    assert upstream.requests[-1].path == "/items/3/instance/a7"


async def test_host_rewrite_literal(traffic_proxy, upstream):
    routes = [route("/", "backend", host_rewrite_literal="rewritten.internal")]
    p = await traffic_proxy(bootstrap({"backend": [upstream.port]}, routes=routes))
    assert (await p.fetch("GET", "/", host="outside.example.com")).status == 200
    assert upstream.requests[-1].header("host") == "rewritten.internal"


@pytest.mark.parametrize("redirect, path, status, location", [
    ({"https_redirect": True, "host_redirect": "secure.example.com", "response_code": "PERMANENT_REDIRECT"},
     "/r/x?y=1", 308, "https://secure.example.com/r/x?y=1"),
    ({"scheme_redirect": "https"}, "/r", 301, "https://example.com/r"),
    ({"path_redirect": "/new", "response_code": "FOUND"}, "/r/old?q=1", 302, "http://example.com/new?q=1"),
    ({"prefix_rewrite": "/fresh/", "response_code": "SEE_OTHER"}, "/r/page", 303, "http://example.com/fresh/page"),
    ({"host_redirect": "other.example.com", "port_redirect": 8443, "response_code": "TEMPORARY_REDIRECT"},
     "/r", 307, "http://other.example.com:8443/r"),
])
async def test_redirect(traffic_proxy, upstream, redirect, path, status, location):
    routes = [{"match": {"prefix": "/r/"}, "redirect": redirect}, {"match": {"prefix": "/r"}, "redirect": redirect}]
    p = await traffic_proxy(bootstrap({"backend": [upstream.port]}, routes=routes))
    r = await p.fetch("GET", path)
    assert (r.status, r.header("location")) == (status, location)
    assert upstream.requests == []


async def test_direct_response(traffic_proxy, upstream):
    routes = [{"match": {"prefix": "/tea"}, "direct_response": {"status": 418, "body": {"inline_string": "teapot"}},
               "response_headers_to_add": [{"header": {"key": "x-brew", "value": "green"}}]}]
    p = await traffic_proxy(bootstrap({"backend": [upstream.port]}, routes=routes))
    r = await p.fetch("GET", "/tea")
    assert (r.status, r.body, r.header("x-brew")) == (418, b"teapot", "green")
    assert upstream.requests == []


def add(key: str, value: str, action: str | None = None) -> dict:
    opt: dict = {"header": {"key": key, "value": value}}
    if action:
        opt["append_action"] = action
    return opt


async def test_header_mutations_route_then_virtual_host(traffic_proxy, upstream):
    """Request: route-level additions come before the virtual host's; removals apply; OVERWRITE replaces the
    client's value. Response: additions and removals at both levels."""
    r0 = route("/", "backend")
    r0.update(request_headers_to_add=[add("x-layer", "route"), add("x-set", "proxy", "OVERWRITE_IF_EXISTS_OR_ADD")],
              request_headers_to_remove=["x-secret"],
              response_headers_to_add=[add("x-resp-route", "r")],
              response_headers_to_remove=["x-upstream"])
    vh = virtual_host("vh", ["*"], [r0])
    vh.update(request_headers_to_add=[add("x-layer", "vhost"), add("x-vh-only", "v", "ADD_IF_ABSENT")],
              request_headers_to_remove=["x-vh-secret"],
              response_headers_to_add=[add("x-resp-vh", "v")])
    p = await traffic_proxy(bootstrap({"backend": [upstream.port]}, virtual_hosts=[vh]))
    r = await p.fetch("GET", "/", [("x-secret", "s"), ("x-vh-secret", "s"), ("x-set", "client"),
                                   ("x-vh-only", "client")])
    assert r.status == 200
    rq = upstream.requests[-1]
    assert rq.header_values("x-layer") == ["route", "vhost"]
    assert rq.header_values("x-set") == ["proxy"]
    assert rq.header_values("x-vh-only") == ["client"]  # ADD_IF_ABSENT keeps the client's
    assert rq.header("x-secret") is None and rq.header("x-vh-secret") is None
    assert (r.header("x-resp-route"), r.header("x-resp-vh")) == ("r", "v")
    assert not r.has("x-upstream")


# ---------------------------------------------------------------- weighted clusters

def weighted(a: int, b: int) -> list[dict]:
    return [{"match": {"prefix": "/"}, "route": {"timeout": "5s", "weighted_clusters": {"clusters": [
        {"name": "a", "weight": a}, {"name": "b", "weight": b}]}}}]


async def split(proxy, n: int) -> list[str]:
    async with await RawClient.connect(proxy.port) as c:
        return [(await c.request("GET", "/")).header("x-upstream") for _ in range(n)]


async def test_weighted_clusters_50_50_over_2000_requests(traffic_proxy, upstream_factory):
    """2000 requests over a 50/50 split land within 6σ of 1000 each; the same seed gives the same sequence."""
    ua, ub = await upstream_factory("a"), await upstream_factory("b")
    cfg = bootstrap({"a": [ua.port], "b": [ub.port]}, routes=weighted(50, 50))
    seq = await split(await traffic_proxy(cfg, seed=7), 2000)
    lo, hi = binomial_bounds(2000, 0.5)
    assert set(seq) == {"a", "b"}
    assert lo <= seq.count("a") <= hi, seq.count("a")
    again = await split(await traffic_proxy(cfg, seed=7), 200)
    assert again == seq[:200]  # deterministic under the injected random source
    other = await split(await traffic_proxy(cfg, seed=8), 200)
    assert other != seq[:200]


async def test_weighted_clusters_follow_unequal_weights(traffic_proxy, upstream_factory):
    """Weights need not sum to 100: 1:3 sends a quarter to `a`; weight 0 never gets traffic."""
    ua, ub = await upstream_factory("a"), await upstream_factory("b")
    p = await traffic_proxy(bootstrap({"a": [ua.port], "b": [ub.port]}, routes=weighted(1, 3)), seed=3)
    seq = await split(p, 800)
    lo, hi = binomial_bounds(800, 0.25)
    assert lo <= seq.count("a") <= hi, seq.count("a")
    p0 = await traffic_proxy(bootstrap({"a": [ua.port], "b": [ub.port]}, routes=weighted(0, 5)), seed=3)
    assert set(await split(p0, 50)) == {"b"}


# ---------------------------------------------------------------- request mirroring

def mirrored(fraction: dict | None = None) -> list[dict]:
    policy: dict = {"cluster": "mirror"}
    if fraction is not None:
        policy["runtime_fraction"] = {"default_value": fraction}
    return [route("/", "primary", request_mirror_policies=[policy])]


async def test_mirror_sends_a_shadow_copy_and_does_not_wait_for_it(traffic_proxy, upstream_factory):
    """The mirror gets the same request (method, path, body) with `-shadow` appended to the host (before the
    port); the client gets the primary's answer while the mirror still holds its copy unanswered."""
    release = asyncio.Event()

    async def stall(conn, req):
        await release.wait()
        return True

    primary = await upstream_factory("primary")
    mirror = await upstream_factory("mirror", handler=stall)
    p = await traffic_proxy(bootstrap({"primary": [primary.port], "mirror": [mirror.port]}, routes=mirrored()))
    try:
        r = await p.fetch("POST", "/orders?id=1", body=b"payload", host="shop.example.com:8080")
        assert (r.status, r.header("x-upstream")) == (200, "primary")
        [shadow] = await mirror.wait_requests(1)
        assert (shadow.method, shadow.path, shadow.header("host")) == ("POST", "/orders?id=1",
                                                                        "shop.example.com-shadow:8080")
        assert primary.requests[-1].header("host") == "shop.example.com:8080"
        r2 = await p.fetch("GET", "/again", host="shop.example.com")
        assert r2.status == 200
        shadows = await mirror.wait_requests(2)
        assert shadows[1].header("host") == "shop.example.com-shadow"
        await asyncio.wait_for(_until_complete(shadows[0]), 5)
        assert shadows[0].body_length == len(b"payload")
    finally:
        release.set()


async def _until_complete(req) -> None:
    while not req.complete:
        await asyncio.sleep(0.01)  # poll interval of a bounded wait (wait_for 5 s)


async def test_mirror_runtime_fraction(traffic_proxy, upstream_factory):
    """`runtime_fraction` 25 % mirrors about a quarter of 400 requests (6σ); 0 % mirrors none."""
    primary, mirror = await upstream_factory("primary"), await upstream_factory("mirror")
    clusters = {"primary": [primary.port], "mirror": [mirror.port]}
    p = await traffic_proxy(bootstrap(clusters, routes=mirrored(percent(25))), seed=11)
    async with await RawClient.connect(p.port) as c:
        for _ in range(400):
            assert (await c.request("GET", "/")).status == 200
    mirrored_count = p.stat("cluster.mirror.upstream_rq_total")
    lo, hi = binomial_bounds(400, 0.25)
    assert lo <= mirrored_count <= hi, mirrored_count
    await mirror.wait_requests(mirrored_count)
    p0 = await traffic_proxy(bootstrap(clusters, routes=mirrored(percent(0))), seed=11)
    before = len(mirror.requests)
    for _ in range(20):
        assert (await p0.fetch("GET", "/")).status == 200
    assert p0.stat("cluster.mirror.upstream_rq_total") == 0
    assert len(mirror.requests) == before
