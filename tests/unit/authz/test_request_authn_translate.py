"""control.translate.request_authn: RequestAuthentication -> jwt_authn as istiod's convertToEnvoyJwtConfig."""
from __future__ import annotations

import pytest

from control.istio.load import load_text
from control.translate.request_authn import build_filter, claim_route_matcher, jwks_cluster, routing_claims


class Notes(list):
    def add(self, pol, path, message):
        self.append(f"{pol.name}: {path}: {message}")


def _ra(rules: str, name: str = "ra") -> list:
    text = (f"apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, "
            f"namespace: default}}\nspec:\n  jwtRules: {rules}\n")
    return [r for r in load_text(text, "ra.yaml").resources]


def test_one_provider_is_provider_or_allow_missing():
    notes = Notes()
    f = build_filter(_ra("[{issuer: iss, jwksUri: 'https://keys.example/jwks', timeout: 2s}]"), notes)
    cfg = f["typed_config"]
    assert cfg["rules"] == [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
        {"provider_name": "origins-0"}, {"allow_missing": {}}]}}}]
    p = cfg["providers"]["origins-0"]
    assert p["remote_jwks"] == {"http_uri": {"uri": "https://keys.example/jwks", "timeout": "2s",
                                             "cluster": "outbound|443||keys.example"}, "cache_duration": "300s"}
    assert (p["payload_in_metadata"], cfg["bypass_cors_preflight"], notes) == ("payload", True, [])
    assert "forward" not in p and "clear_route_cache" not in p


def test_rules_of_several_policies_are_sorted_by_issuer():
    keys = """'{"keys": []}'"""  # an empty key set (`{}` is no JWKS: Istio's jwk.Parse refuses it)
    pols = _ra(f"[{{issuer: zeta, jwks: {keys}}}]", "a") + _ra(f"[{{issuer: alpha, jwks: {keys}}}]", "b")
    providers = build_filter(pols, Notes())["typed_config"]["providers"]
    assert [(n, p["issuer"]) for n, p in providers.items()] == [("origins-0", "alpha"), ("origins-1", "zeta")]


def test_no_keys_at_all_is_noted_and_fails_closed():
    notes = Notes()
    p = build_filter(_ra("[{issuer: iss}]"), notes)["typed_config"]["providers"]["origins-0"]
    assert p["local_jwks"] == {"inline_string": '{"keys":[]}'}
    assert notes == ["ra: spec.jwtRules[0]: neither jwks nor jwksUri: OpenID discovery of the issuer's keys is not "
                     "done by this control plane; its tokens are rejected"]


def test_no_rules_no_filter():
    assert build_filter(_ra("[]"), Notes()) is None


@pytest.mark.parametrize("uri, cluster", [("http://k.example/jwks", "outbound|80||k.example"),
                                          ("https://k.example:8443/x", "outbound|8443||k.example"),
                                          ("https:///x", "outbound|443||")])
def test_jwks_cluster(uri, cluster):
    assert jwks_cluster(uri) == cluster


@pytest.mark.parametrize("header, claims", [
    ("@request.auth.claims.groups", ["groups"]), ("@request.auth.claims.a.b", ["a", "b"]),
    ("@request.auth.claims[a][b]", ["a", "b"]), ("@request.auth.claims", None), ("@request.auth.claims.", None),
    ("x-user", None), ("@request.auth.claimsx", None), ("@request.auth.claims[ab", None),
])
def test_routing_claims(header, claims):
    assert routing_claims(header) == claims


def test_claim_route_matcher_is_string_or_list():
    m = claim_route_matcher(["groups"], {"exact": "admin"}, invert=True)
    one = {"string_match": {"exact": "admin"}}
    assert m == {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "payload"}, {"key": "groups"}],
                 "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": one}}, one]}}, "invert": True}


def test_claim_route_matcher_without_a_value_is_presence_and_not_inverted_by_default():
    one = {"present_match": True}
    assert claim_route_matcher(["a", "b"], None) == {
        "filter": "envoy.filters.http.jwt_authn", "path": [{"key": "payload"}, {"key": "a"}, {"key": "b"}],
        "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": one}}, one]}}}


def test_fields_left_out_of_a_rule_translate_to_empty_strings():
    """Istio's validation wants them; translated as they are, an absent issuer, header or claim name is empty
    (never the text "None")."""
    rules = "[{jwks: '{\"keys\": []}', outputClaimToHeaders: [{}], fromHeaders: [{prefix: 'Bearer '}]}]"
    text = ("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra, namespace: default}\n"
            f"spec:\n  jwtRules: {rules}\n")
    assert load_text(text, "ra.yaml").resources == ()  # validation refuses it: never served
    pols = list(load_text(text, "ra.yaml", keep_invalid=True).resources)
    p = build_filter(pols, Notes())["typed_config"]["providers"]["origins-0"]
    assert (p["issuer"], p["claim_to_headers"], p["from_headers"]) == (
        "", [{"header_name": "", "claim_name": ""}], [{"name": "", "value_prefix": "Bearer "}])


def test_a_rule_without_issuer_sorts_first():
    text = ("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra, namespace: default}\n"
            "spec:\n  jwtRules: [{issuer: M, jwks: '{}'}, {jwks: '{}'}]\n")
    pols = list(load_text(text, "ra.yaml", keep_invalid=True).resources)
    providers = build_filter(pols, Notes())["typed_config"]["providers"]
    assert [p["issuer"] for p in providers.values()] == ["", "M"]


@pytest.mark.parametrize("match, uses", [
    ("{headers: {'@request.auth.claims.group': {exact: admin}}}", True),
    ("{withoutHeaders: {'@request.auth.claims.group': {exact: admin}}}", True),
    ("{headers: {x-user: {exact: admin}}}", False),
])
def test_virtual_services_matching_on_claims_use_claim_routing(match, uses):
    from control.translate.request_authn import uses_claim_routing
    text = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: default}\n"
            f"spec:\n  hosts: [a]\n  http: [{{match: [{match}], route: [{{destination: {{host: a}}}}]}}]\n")
    (vs,) = load_text(text, "vs.yaml", keep_invalid=True).resources
    assert uses_claim_routing(vs) is uses
