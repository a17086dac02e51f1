"""Route actions of a VirtualService rule as istiod builds them (route/route.go applyHTTPRouteDestination,
processDestination, processWeightedDestination, BuildHTTPRoutesForVirtualService): destination headers and the
authority they set, weights, hash policies, rewrites, the fields an error or a note names, and where the route
list stops."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from control.istio.load import load_text
from control.mesh import build_mesh
from control.translate import TranslateError, find_workload, render_sidecar
from control.translate.common import make_proxy
from control.translate.routes import (RouteContext, _RecordedSpecs, _shared_vhost, _vhost, default_route,
                                      hash_policy, header_operations, http_routes, shared_default_routes)
from tests.unit.control.test_sidecar_scope import TWO_NAMESPACES
from tests.unit.control.test_translate import BASE, REVIEWS, by_name, vhost
from tests.unit.control.test_translate_decisions import (dr, gateway, render, render_gw, routes_of, servers, vhost_summary,
                                                         virtual_service, vs, vs_resource)

V1, V2 = f"outbound|9080|v1|{REVIEWS}", f"outbound|9080|v2|{REVIEWS}"
SUBSETS = "[{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]"
SOURCE_IP = [{"connection_properties": {"source_ip": True}}]


def rules(*http: dict) -> str:
    """A VirtualService for reviews with these rules (dicts; JSON is YAML) and a DestinationRule with subsets
    v1 and v2 hashing on the source IP."""
    return (vs("".join(f"  - {json.dumps(rule)}\n" for rule in http)) + "---\n"
            + dr("{loadBalancer: {consistentHash: {useSourceIp: true}}}", subsets=SUBSETS))


def to(subset: str, weight: int | None = None, host: str = "reviews", **extra) -> dict:
    dest = {"destination": {"host": host, "subset": subset}, **extra}
    return dest if weight is None else {**dest, "weight": weight}


def host_header(host: str) -> dict:
    return {"request": {"set": {"host": host}}}


def routes_direct(*http: dict) -> tuple[list[dict], list[str]]:
    """(http_routes, notes) for a reviews VirtualService with these rules, unvalidated (as an in-memory caller
    may pass them)."""
    mesh = build_mesh(load_text(BASE, "config.yaml").resources)
    proxy = make_proxy(mesh, find_workload(mesh, "client"))
    res = dataclasses.replace(vs_resource(), spec={"hosts": ["reviews"], "http": list(http)})
    return http_routes(RouteContext(proxy, {}, 9080), res), proxy.notes.items


def test_a_single_destinations_headers_go_on_the_route():
    (route,) = routes_of(rules({"route": [to("v1", headers={
        "request": {"set": {"x-a": "1"}, "remove": ["x-b"]}, "response": {"add": {"x-c": "2"}, "remove": ["x-d"]}})]}))
    assert route["request_headers_to_add"] == [{"header": {"key": "x-a", "value": "1"},
                                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    assert route["request_headers_to_remove"] == ["x-b"]
    assert route["response_headers_to_add"] == [{"header": {"key": "x-c", "value": "2"},
                                                 "append_action": "APPEND_IF_EXISTS_OR_ADD"}]
    assert route["response_headers_to_remove"] == ["x-d"]
    assert route["route"]["cluster"] == V1


@pytest.mark.parametrize("rule, authority", [
    ({"route": [to("v1")]}, None),
    ({"route": [to("v1", headers=host_header("dest.example"))]}, "dest.example"),
    # the rule's own host header and rewrite.authority win over a destination's (processDestination)
    ({"headers": host_header("rule.example"), "route": [to("v1", headers=host_header("dest.example"))]},
     "rule.example"),
    ({"rewrite": {"authority": "rewrite.example"}, "route": [to("v1", headers=host_header("dest.example"))]},
     "rewrite.example"),
    ({"route": [to("v1", 50), to("v2", 50)]}, None),
    ({"route": [to("v1", 50, headers=host_header("v1.example")), to("v2", 50)]}, "v1.example"),
    ({"route": [to("v1", 50), to("v2", 50, headers=host_header("v2.example"))]}, "v2.example"),
    ({"headers": host_header("rule.example"), "route": [to("v1", 50), to("v2", 50, headers=host_header("v2.example"))]},
     "rule.example"),
])
def test_which_host_header_rewrites_the_authority(rule, authority):
    (route,) = routes_of(rules(rule))
    assert route["route"].get("host_rewrite_literal") == authority


def test_a_weighted_destinations_headers_go_on_its_cluster_weight():
    (route,) = routes_of(rules({"route": [to("v1", 60), to("v2", 40, headers={"request": {"add": {"x-v": "2"}}})]}))
    assert route["route"]["weighted_clusters"]["clusters"] == [
        {"name": V1, "weight": 60},
        {"name": V2, "weight": 40, "request_headers_to_add": [{"header": {"key": "x-v", "value": "2"},
                                                               "append_action": "APPEND_IF_EXISTS_OR_ADD"}]}]
    assert "request_headers_to_add" not in route


@pytest.mark.parametrize("weights, clusters", [
    ((99, 1), [{"name": V1, "weight": 99}, {"name": V2, "weight": 1}]),
    ((0, 100), [{"name": V2, "weight": 100}]),  # weight 0 is left out, not the end of the list
    ((100, None), [{"name": V1, "weight": 100}]),
])
def test_weighted_clusters_leave_out_weight_zero(weights, clusters):
    (route,) = routes_of(rules({"route": [to(s, w) for s, w in zip(("v1", "v2"), weights)]}))
    assert route["route"]["weighted_clusters"] == {"clusters": clusters}


def test_a_rule_whose_weights_add_up_to_zero_is_dropped_with_a_note():
    """Validation refuses it (IST0106); a caller that skipped validation gets the route dropped, not a
    weighted_clusters Envoy would reject."""
    routes, notes = routes_direct({"match": [{"uri": {"prefix": "/a"}}], "route": [to("v1", 0), to("v2", 0)]},
                                  {"route": [to("v1")]})
    assert [r["match"] for r in routes] == [{"prefix": "/"}]
    assert [n.split(": ", 1)[1] for n in notes if "weight" in n] == [
        "VirtualService default/reviews: spec.http[0].route: total destination weight is 0; the route is dropped"]


def test_an_unknown_weighted_destination_is_noted_at_its_index_and_a_weight_zero_one_not_at_all():
    rendered = render(rules({"route": [to("", 0, host="gone"), to("v1", 50), to("", 50, host="nope")]}))
    notes = [n for n in rendered.notes if "not in the registry" in n]
    assert len(notes) == 1 and notes[0].endswith(
        "spec.http[0].route[2].destination.host: destination nope.default.svc.cluster.local is not in the registry: "
        "Envoy answers 503 NC"), rendered.notes


def test_hash_policies_come_from_each_destination_and_only_a_single_one_keeps_the_host_on_retry():
    """istiod: a single destination's consistent hash drops the previous_hosts retry predicate; weighted
    destinations each append their hash policy and the predicate stays."""
    (single,) = routes_of(rules({"route": [to("v1")]}))
    assert single["route"]["hash_policy"] == SOURCE_IP
    assert "retry_host_predicate" not in single["route"]["retry_policy"]
    (weighted,) = routes_of(rules({"route": [to("v1", 0), to("v1", 50), to("v2", 50)]}))
    assert weighted["route"]["hash_policy"] == SOURCE_IP + SOURCE_IP
    assert weighted["route"]["retry_policy"]["retry_host_predicate"][0]["name"] == \
        "envoy.retry_host_predicates.previous_hosts"


def test_no_destination_rule_no_hash_policy():
    (route,) = routes_of(vs("  - route: [{destination: {host: reviews}, weight: 50}, "
                            "{destination: {host: reviews}, weight: 50}]\n"))
    assert "hash_policy" not in route["route"]


@pytest.mark.parametrize("rewrite, action", [
    ({"uri": "/v2/"}, {"prefix_rewrite": "/v2/"}),
    ({"uri": "", "authority": "a.example"}, {"host_rewrite_literal": "a.example"}),  # an empty uri rewrites nothing
    ({"uriRegexRewrite": {"match": "^/old", "rewrite": "/new"}},
     {"regex_rewrite": {"pattern": {"regex": "^/old"}, "substitution": "/new"}}),
])
def test_rewrites(rewrite, action):
    (route,) = routes_of(rules({"route": [to("v1")], "rewrite": rewrite}))
    keys = ("prefix_rewrite", "regex_rewrite", "host_rewrite_literal")
    assert {k: v for k, v in route["route"].items() if k in keys} == action


@pytest.mark.parametrize("regex_rewrite, envoy", [
    ({"rewrite": "/x"}, {"pattern": {"regex": ""}, "substitution": "/x"}),
    ({"match": "^/old"}, {"pattern": {"regex": "^/old"}, "substitution": ""}),
])
def test_a_regex_rewrite_missing_a_part_has_it_empty(regex_rewrite, envoy):
    """Validation asks for both; unvalidated, the translator writes the proto default "", never "None"."""
    (route,), _ = routes_direct({"route": [to("v1")], "rewrite": {"uriRegexRewrite": regex_rewrite}})
    assert route["route"]["regex_rewrite"] == envoy


def test_a_mirror_to_an_unknown_host_is_noted_at_the_mirror_field():
    rendered = render(rules({"route": [to("v1")], "mirror": {"host": "shadow"}}))
    assert any(n.endswith("spec.http[0].mirror.host: destination shadow.default.svc.cluster.local is not in the "
                          "registry: Envoy answers 503 NC") for n in rendered.notes), rendered.notes


def test_direct_response_string_body():
    (route,) = routes_of(vs("  - directResponse: {status: 418, body: {string: teapot}}\n"))
    assert route["direct_response"] == {"status": 418, "body": {"inline_string": "teapot"}}


def test_a_case_insensitive_slash_prefix_is_a_catch_all_too():
    """istiod IsCatchAllRoute looks at the prefix, headers, query and metadata only: `/` matches every path
    whatever the case, so the rules after it are not translated."""
    routes = routes_of(rules({"match": [{"uri": {"prefix": "/"}, "ignoreUriCase": True}], "route": [to("v1")]},
                             {"route": [to("v2")]}))
    assert [(r["match"], r["route"]["cluster"]) for r in routes] == [({"prefix": "/", "case_sensitive": False}, V1)]


def test_a_claim_in_headers_and_without_headers_gives_two_metadata_matchers():
    """(Istio validates claim routing for gateways only; the translation is the same.)"""
    claim = "@request.auth.claims.group"
    (route,), _ = routes_direct({"match": [{"headers": {claim: {"exact": "a"}}, "withoutHeaders": {claim: {"exact": "b"}}}],
                                 "route": [to("v1")]})
    matchers = route["match"]["dynamic_metadata"]
    assert [(m["value"]["or_match"]["value_matchers"][1], m.get("invert")) for m in matchers] == [
        ({"string_match": {"exact": "a"}}, None), ({"string_match": {"exact": "b"}}, True)]


# --- what errors name ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, field", [
    ({"timeout": "soon"}, "spec.http[0].timeout"),
    ({"retries": {"attempts": 3, "perTryTimeout": "soon"}}, "spec.http[0].retries.perTryTimeout"),
    ({"retries": {"attempts": 3, "backoff": "soon"}}, "spec.http[0].retries.backoff"),
    ({"corsPolicy": {"maxAge": "soon"}}, "spec.http[0].corsPolicy.maxAge"),
])
def test_a_bad_duration_names_the_resource_and_field(rule, field):
    with pytest.raises(TranslateError) as err:
        routes_direct({"route": [{"destination": {"host": "reviews"}}], **rule})
    assert f"VirtualService default/reviews: {field}: invalid duration 'soon'" in str(err.value)


# --- the cluster lookups a shared rendering records -------------------------------------------------------

def test_recorded_specs_remember_each_lookup_and_iterating_makes_them_incomplete():
    spec = object()
    specs = _RecordedSpecs({"a": spec})
    assert specs.get("a") is spec and "b" not in specs
    with pytest.raises(KeyError) as err:
        specs["c"]
    assert err.value.args == ("c",)
    assert specs.read == {"a": spec, "b": None, "c": None} and specs.complete is True
    assert len(specs) == 1 and specs.complete is False
    iterated = _RecordedSpecs({"a": spec})
    assert [name for name in iterated] == ["a"] and iterated.complete is False  # (list() would ask len first)


@pytest.mark.parametrize("ops, expected", [
    ({"set": {"x-a": "1"}}, ([{"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
                             [], None)),  # no host header: no authority, not an empty one
    ({"add": {":authority": "a.example", ":path": "/p"}}, ([], [], "a.example")),
])
def test_header_operations_authority(ops, expected):
    assert header_operations(ops) == expected


def test_a_destination_without_host_is_noted_not_guessed():
    """Validation requires `destination.host`; unvalidated, the cluster names an empty host."""
    (route,), notes = routes_direct({"route": [{"destination": {}}]})
    assert route["route"]["cluster"] == "outbound|9080||"
    assert any(n.endswith("spec.http[0].route[0].destination.host: destination  is not in the registry: "
                          "Envoy answers 503 NC") for n in notes), notes


# --- what proxies share: routes and virtual hosts are memoized on the mesh snapshot -----------------------

def render_both(extra: str) -> tuple:
    """The sidecars of `client` (namespace default) and `outsider` (elsewhere), rendered from one mesh snapshot
    in that order, so the second may reuse what the first memoized."""
    mesh = build_mesh(load_text(TWO_NAMESPACES + "---\n" + extra, "config.yaml").resources)
    return tuple(render_sidecar(mesh, name) for name in ("client", "outsider"))


def reviews_route(rendered) -> dict:
    (route,) = vhost(rendered, "9080", f"{REVIEWS}:9080")["routes"]
    return route


def test_a_default_route_is_shared_only_by_proxies_that_see_the_same_destination_rule():
    mine, theirs = render_both(dr("{loadBalancer: {consistentHash: {useSourceIp: true}}}", exportTo="['.']"))
    assert reviews_route(mine)["route"]["hash_policy"] == SOURCE_IP
    assert "hash_policy" not in reviews_route(theirs)["route"]


def test_shared_routes_bring_their_notes_to_every_proxy():
    both = render_both(vs("  - route: [{destination: {host: reviews}, weight: 50}, "
                          "{destination: {host: nope}, weight: 50}]\n"))
    for rendered in both:
        assert any("destination nope.default.svc.cluster.local is not in the registry" in n
                   for n in rendered.notes), rendered.notes


def test_routes_matching_a_source_namespace_are_not_shared_across_namespaces():
    mine, theirs = render_both(vs("  - match: [{uri: {prefix: /o}, sourceNamespace: elsewhere}]\n"
                                  "    route: [{destination: {host: reviews}}]\n"
                                  "  - route: [{destination: {host: reviews}}]\n"))
    routes = [[r["match"] for r in vhost(rd, "9080", f"{REVIEWS}:9080")["routes"]] for rd in (mine, theirs)]
    assert routes == [[{"prefix": "/"}], [{"prefix": "/o"}, {"prefix": "/"}]]


RATINGS = """apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
"""


def test_services_sharing_one_virtual_services_routes_keep_their_own_virtual_hosts():
    rendered = render(RATINGS + "---\n" + vs("  - route: [{destination: {host: reviews}}]\n").replace(
        "hosts: [reviews]", "hosts: [reviews, ratings]"))
    names = {vh["name"]: vh["domains"][0] for vh in by_name(rendered.routes, "9080")["virtual_hosts"]}
    assert names["ratings.default.svc.cluster.local:9080"] == "ratings.default.svc.cluster.local"
    assert names[f"{REVIEWS}:9080"] == REVIEWS


SE_ADDRESSES = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  addresses: [10.9.0.0/24, 10.9.9.9, 10.9.9.8]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 10.9.9.10}]
  ports: [{number: 9080, name: http, protocol: HTTP}]
"""


def test_service_entry_addresses_as_domains_leave_out_cidrs():
    assert vhost(render(SE_ADDRESSES), "9080", "api.example.com:9080")["domains"] == [
        "api.example.com", "api.example.com:9080", "10.9.9.9", "10.9.9.9:9080", "10.9.9.8", "10.9.9.8:9080"]


def test_an_unspecified_service_entry_address_is_no_domain():
    text = SE_ADDRESSES.replace("10.9.0.0/24, 10.9.9.9, 10.9.9.8", "0.0.0.0, 10.9.9.9")
    assert vhost(render(text), "9080", "api.example.com:9080")["domains"] == [
        "api.example.com", "api.example.com:9080", "10.9.9.9", "10.9.9.9:9080"]


def test_a_service_entry_without_addresses_has_only_its_host_as_domains():
    text = SE_ADDRESSES.replace("  addresses: [10.9.0.0/24, 10.9.9.9, 10.9.9.8]\n", "").replace(
        "resolution: STATIC", "resolution: DNS").replace("10.9.9.10", "api.example.com")
    assert vhost(render(text), "9080", "api.example.com:9080")["domains"] == ["api.example.com", "api.example.com:9080"]


def test_a_service_entry_host_under_the_cluster_domain_without_a_namespace_gets_no_short_forms():
    text = SE_ADDRESSES.replace("api.example.com", "api.svc.cluster.local").replace(
        "  addresses: [10.9.0.0/24, 10.9.9.9, 10.9.9.8]\n", "")
    assert vhost(render(text), "9080", "api.svc.cluster.local:9080")["domains"] == [
        "api.svc.cluster.local", "api.svc.cluster.local:9080"]


def test_a_service_in_a_namespace_named_svc_gets_no_short_forms_as_in_istiod():
    """istiod finds the first ".svc." of `web.svc.svc.cluster.local` right after the name and calls the
    domain invalid: the FQDN and its port form only."""
    text = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: svc}
spec: {selector: {app: web}, ports: [{name: http, port: 9080}]}
"""
    domains = vhost(render(text), "9080", "web.svc.svc.cluster.local:9080")["domains"]
    assert domains[:2] == ["web.svc.svc.cluster.local", "web.svc.svc.cluster.local:9080"]
    assert not [d for d in domains if d.startswith("web.svc:") or d in ("web", "web.svc", "web.svc.svc")], domains


def test_a_default_route_memoized_for_another_spec_is_not_reused():
    """The memo key holds id(spec); the entry also holds the spec itself, so an id the garbage collector
    handed on to another spec cannot bring back routes built for the old one."""
    mesh = build_mesh(load_text(BASE, "config.yaml").resources)
    proxy = make_proxy(mesh, find_workload(mesh, "client"))
    cluster = f"outbound|9080||{REVIEWS}"
    spec = SimpleNamespace(consistent_hash=None)
    mesh.memo(("default_routes", cluster, id(spec)), lambda: (object(), ["stale"]))
    ctx = RouteContext(proxy, {cluster: spec}, 9080)
    assert shared_default_routes(ctx, cluster) == [default_route(RouteContext(proxy, {}, 9080), cluster)]


@pytest.mark.parametrize("rule, operation", [
    ({"route": [to("v1")]}, f"{REVIEWS}:9080/*"),  # one cluster: its host and port
    ({"route": [to("v1", 50), to("v2", 50)]}, "reviews:9080/*"),  # several: the VirtualService's name
    ({"match": [{"uri": {"regex": "/r.*"}}], "route": [to("v1", 50), to("v2", 50)]}, "reviews:9080/r.*"),
    ({"match": [{"uri": {"exact": "/e"}}], "route": [to("v1")]}, f"{REVIEWS}:9080/e"),
])
def test_route_decorators_name_the_service_or_the_virtual_service(rule, operation):
    route = routes_of(rules(rule, {"route": [to("v1")]}))[0]
    assert route["decorator"] == {"operation": operation}


def test_a_destination_host_two_namespaces_define_takes_the_virtual_services_own():
    """Port from the service's only port: the ServiceEntry in the VirtualService's namespace, not the first."""
    entry = SE_ADDRESSES.replace("  addresses: [10.9.0.0/24, 10.9.9.9, 10.9.9.8]\n", "")
    elsewhere = entry.replace("metadata: {name: ext}", "metadata: {name: ext, namespace: a}").replace(
        "number: 9080", "number: 8080")
    (route,) = routes_of(elsewhere + "---\n" + entry + "---\n" + vs("  - route: [{destination: {host: api.example.com}}]\n"))
    assert route["route"]["cluster"] == "outbound|9080||api.example.com"


def test_a_virtual_host_memoized_for_another_routes_list_is_not_reused():
    mesh = build_mesh(load_text(BASE, "config.yaml").resources)
    proxy = make_proxy(mesh, find_workload(mesh, "client"))
    routes = [{"name": "r"}]
    mesh.memo(("vhost", "h:80", ("h", "h:80"), id(routes)), lambda: (object(), "stale"))
    assert _shared_vhost(proxy, "h:80", ["h", "h:80"], routes) == _vhost("h:80", ["h", "h:80"], routes)


PORT_80 = RATINGS.replace("ratings", "web").replace("9080", "80") + "---\n" + SE_ADDRESSES.replace(
    "  addresses: [10.9.0.0/24, 10.9.9.9, 10.9.9.8]\n", "").replace("9080", "80") + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-ext}
spec:
  hosts: [external.example.org, "*.example.com"]
  http: [{route: [{destination: {host: web}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b-tcp}
spec:
  hosts: [reviews]
  tcp: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{name: mine, route: [{destination: {host: reviews}}]}]
"""


def test_which_virtual_hosts_virtual_services_make_on_port_80_and_on_others():
    """On port 80 a VirtualService host that is no service (and matches none) is a virtual host of its own;
    on other ports a VirtualService matching no service is skipped, and one without http rules too, without
    ending the list."""
    rendered = render(PORT_80)
    port_80 = {vh["name"]: vh for vh in by_name(rendered.routes, "80")["virtual_hosts"]}
    assert sorted(port_80) == ["allow_any", "api.example.com:80", "external.example.org:80",
                               f"{REVIEWS}:80", "web.default.svc.cluster.local:80"]  # reviews: no port 80
    external = port_80["external.example.org:80"]
    assert external["domains"] == ["external.example.org", "external.example.org:80"]
    assert [r["route"]["cluster"] for r in external["routes"]] == ["outbound|80||web.default.svc.cluster.local"]
    assert port_80["api.example.com:80"]["routes"] is external["routes"]  # matched through *.example.com
    assert port_80["web.default.svc.cluster.local:80"]["routes"][0]["name"] == "default"
    port_9080 = {vh["name"]: vh for vh in by_name(rendered.routes, "9080")["virtual_hosts"]}
    assert sorted(port_9080) == ["allow_any", f"{REVIEWS}:9080"]
    assert [r["name"] for r in port_9080[f"{REVIEWS}:9080"]["routes"]] == ["mine"]


def test_a_domain_two_virtual_hosts_would_share_is_listed_once_as_envoy_requires():
    """Envoy refuses a route configuration whose virtual hosts repeat a domain: the first keeps it."""
    one = SE_ADDRESSES.replace("10.9.0.0/24, 10.9.9.9, 10.9.9.8", "10.9.9.9")
    two = one.replace("name: ext", "name: ext2").replace("api.example.com", "api2.example.com")
    rendered = render(one + "---\n" + two)
    assert vhost(rendered, "9080", "api.example.com:9080")["domains"][2:] == ["10.9.9.9", "10.9.9.9:9080"]
    assert vhost(rendered, "9080", "api2.example.com:9080")["domains"] == ["api2.example.com", "api2.example.com:9080"]


@pytest.mark.parametrize("cookie, envoy", [
    ({"path": "/"}, {"name": "", "path": "/"}),  # validation asks for a name; unvalidated, the proto default
    ({"name": "c", "ttl": "0s"}, {"name": "c", "ttl": "0s"}),  # 0: a session cookie, not 1 s
])
def test_cookie_hash_policy(cookie, envoy):
    assert hash_policy(SimpleNamespace(consistent_hash={"httpCookie": cookie})) == [{"cookie": envoy}]


@pytest.mark.parametrize("retries, expected", [
    ({"attempts": 1}, {"num_retries": 1}),
    ({"attempts": 2, "retryOn": "503,retriable-status-codes"},
     {"retry_on": "retriable-status-codes", "retriable_status_codes": [503]}),
    ({"attempts": 2, "backoff": "0s"}, {"retry_back_off": {"base_interval": "0s", "max_interval": "0s"}}),
])
def test_retry_policy_fields(retries, expected):
    (route,), _ = routes_direct({"route": [to("v1")], "retries": retries})
    assert {k: v for k, v in route["route"]["retry_policy"].items() if k in expected} == expected


def test_a_consistent_hash_with_retry_ignore_previous_hosts_false_has_no_host_predicate():
    (route,) = routes_of(rules({"route": [to("v1")], "retries": {"attempts": 2, "retryIgnorePreviousHosts": False}}))
    assert route["route"]["retry_policy"]["num_retries"] == 2
    assert "retry_host_predicate" not in route["route"]["retry_policy"]


def test_the_mesh_default_retry_policy_applies_to_default_routes():
    operator = ("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: cp, namespace: "
                "istio-system}\nspec:\n  meshConfig:\n    defaultHttpRetryPolicy: {attempts: 5}\n")
    assert reviews_route(render(operator))["route"]["retry_policy"]["num_retries"] == 5


def test_an_http_proxy_virtual_host_memoized_for_another_virtual_host_is_not_reused():
    mesh = build_mesh(load_text(BASE + "---\n" + PORT_80, "config.yaml").resources)  # port 80 keeps every domain
    first = render_sidecar(mesh, "client")
    for key in [k for k in mesh._memo if k[0] == "http_proxy_vhost"]:
        mesh._memo[key] = (object(), {"name": "stale", "domains": ["stale"], "routes": []})
    assert render_sidecar(mesh, "client").routes == first.routes


@pytest.mark.parametrize("tls, redirect, envoy", [
    (False, {"port": 80}, {}),  # the default port of the request's scheme (http on a plain server)
    (False, {"port": 443}, {"port_redirect": 443}),
    (False, {"scheme": "https", "port": 443}, {"scheme_redirect": "https"}),
    (False, {"scheme": "https", "port": 80}, {"scheme_redirect": "https", "port_redirect": 80}),
    (False, {"scheme": "http", "derivePort": "FROM_PROTOCOL_DEFAULT"}, {"scheme_redirect": "http"}),
    (True, {"port": 443}, {}),  # https on a server that terminates TLS
    (True, {"port": 80}, {"port_redirect": 80}),
    (True, {"derivePort": "FROM_REQUEST_PORT"}, {"port_redirect": 9080}),
])
def test_redirect_ports_leave_out_the_schemes_default(tls, redirect, envoy):
    """istiod ApplyRedirect: with a port, 80 for http and 443 for https are left out; FROM_PROTOCOL_DEFAULT
    sets none."""
    mesh = build_mesh(load_text(BASE, "config.yaml").resources)
    proxy = make_proxy(mesh, find_workload(mesh, "client"))
    res = dataclasses.replace(vs_resource(), spec={"hosts": ["reviews"], "http": [{"redirect": redirect}]})
    ctx = RouteContext(proxy, {}, 9080, tls=True) if tls else RouteContext(proxy, {}, 9080)  # a sidecar's: no TLS
    (route,) = http_routes(ctx, res)
    assert route["redirect"] == {**envoy, "response_code": "MOVED_PERMANENTLY"}


def test_a_gateway_redirect_to_the_request_port_80_names_no_port():
    rendered = render_gw("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n"
                         "  hosts: [a.example.com]\n  gateways: [istio-system/public]\n"
                         "  http: [{redirect: {authority: b.example.com, derivePort: FROM_REQUEST_PORT}}]\n")
    (vh,) = by_name(rendered.routes, "http.80")["virtual_hosts"]
    assert vh["routes"][0]["redirect"] == {"host_redirect": "b.example.com", "response_code": "MOVED_PERMANENTLY"}


def test_a_gateway_redirect_on_an_https_server_to_port_443_names_no_port():
    """The route configuration of a server that terminates TLS redirects with https by default."""
    rendered = render_gw(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n"
        "  hosts: ['*']\n  gateways: [istio-system/tls]\n  http: [{redirect: {port: 443}}]\n",
        gateway=servers("{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, "
                        "serverCertificate: /s.pem, privateKey: /k.pem}}",
                        "{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}"))
    redirects = {rc["name"]: rc["virtual_hosts"][0]["routes"][0]["redirect"] for rc in rendered.routes}
    assert redirects == {"https.443.https.tls.istio-system": {"response_code": "MOVED_PERMANENTLY"},
                         "http.80": {"port_redirect": 443, "response_code": "MOVED_PERMANENTLY"}}


def test_a_gateway_virtual_host_takes_the_narrower_of_server_and_virtual_service_host():
    """A VirtualService host inside a wildcard server host names the virtual host (and redirects to https with
    the server); a wildcard VirtualService host over a server host takes the server's."""
    rendered = render_gw(
        virtual_service("narrow", "[a.example.com]", "[istio-system/gw]", "[{route: [{destination: {host: reviews}}]}]"),
        virtual_service("wide", "['*.example.org']", "[istio-system/gw]", "[{route: [{destination: {host: reviews}}]}]"),
        gateway=gateway("gw", "istio-system", "[{port: {number: 8080, name: http, protocol: HTTP}, "
                        "hosts: ['*.example.com', b.example.org], tls: {httpsRedirect: true}}]"))
    assert [(name, tls) for name, _, _, tls in vhost_summary(rendered, "http.8080")] == [
        ("*.example.com:8080", "ALL"), ("a.example.com:8080", "ALL"), ("b.example.org:8080", "ALL")]
    assert [prefixes for name, _, prefixes, _ in vhost_summary(rendered, "http.8080")] == [["/ -> 404"], ["/"], ["/"]]
