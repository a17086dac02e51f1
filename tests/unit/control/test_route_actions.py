"""Route actions of a VirtualService rule as istiod builds them (route/route.go applyHTTPRouteDestination,
processDestination, processWeightedDestination, BuildHTTPRoutesForVirtualService): destination headers and the
authority they set, weights, hash policies, rewrites, the fields an error or a note names, and where the route
list stops."""
from __future__ import annotations

import dataclasses
import json

import pytest

from control.istio.load import load_text
from control.mesh import build_mesh
from control.translate import TranslateError, find_workload
from control.translate.common import make_proxy
from control.translate.routes import RouteContext, _RecordedSpecs, http_routes
from tests.unit.control.test_translate import BASE, REVIEWS, vhost
from tests.unit.control.test_translate_decisions import dr, render, routes_of, vs, vs_resource

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
