"""AuthorizationPolicy -> RBAC filter translation (control.translate.authz) as tables: string forms, fields,
filter order, dry-run, empty spec / empty rule, CUSTOM, error handling per action. Each output parses with
Envoy's protos and decodes into pyproxy's model."""
from __future__ import annotations

import re

import pytest

from control.istio.load import load_text
from control.istio.resources import Resource
from control.mesh import build_mesh
from control.translate import find_workload
from control.translate.authz import build_filters, cidr, http_filters, rule_policy, string_matcher
from control.translate.common import Notes, make_proxy
import pyproxy.config.model  # noqa: F401  (registers the typed configs)
from pyproxy.config.decode import decode_any
from tests.golden.envoy_schema import check_resource
from tests.unit.control.test_translate import BASE

STRINGS = [("abc", "", {"exact": "abc"}), ("abc*", "", {"prefix": "abc"}), ("*abc", "", {"suffix": "abc"}),
           ("*", "", {"safe_regex": {"regex": ".+"}}),
           ("ns/default/sa/x", "spiffe://", {"exact": "spiffe://ns/default/sa/x"}),
           ("cluster.local/ns/*", "spiffe://", {"prefix": "spiffe://cluster.local/ns/"}),
           ("*/sa/robot", "spiffe://", {"safe_regex": {"regex": "spiffe://.*/sa/robot"}}),
           ("*", "spiffe://", {"safe_regex": {"regex": ".+"}})]


@pytest.mark.parametrize("value,prefix,expected", STRINGS)
def test_string_forms(value, prefix, expected):
    assert string_matcher(value, prefix) == expected


@pytest.mark.parametrize("value,expected", [("1.2.3.4", {"address_prefix": "1.2.3.4", "prefix_len": 32}),
                                            ("5.6.0.0/16", {"address_prefix": "5.6.0.0", "prefix_len": 16}),
                                            ("::1", {"address_prefix": "::1", "prefix_len": 128}),
                                            ("10.0.0.1/24", {"address_prefix": "10.0.0.1", "prefix_len": 24})])
def test_cidr(value, expected):
    assert cidr(value) == expected


def _filters(yaml_text: str) -> tuple[list[dict], list[str]]:
    notes = Notes()
    res = [r for r in load_text(yaml_text, "p.yaml").resources if r.kind == "AuthorizationPolicy"]
    out = build_filters(res, notes)
    for f in out:
        check_resource(f["typed_config"])
        decode_any(f["typed_config"], "typed_config")
    return out, notes.items


def _pol(name: str, spec: str, annotations: str = "") -> str:
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, "
            f"namespace: foo{annotations}}}\nspec: {spec}\n---\n")


NEVER = {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}
ANY = {"permissions": [{"and_rules": {"rules": [{"any": True}]}}], "principals": [{"and_ids": {"ids": [{"any": True}]}}]}


def test_empty_spec_is_allow_with_a_never_matching_policy():
    (f,), _ = _filters(_pol("deny-all", "{}"))
    assert f["typed_config"]["rules"] == {"policies": {"ns[foo]-policy[deny-all]-rule[0]": NEVER}}


def test_empty_rule_matches_everything():
    (f,), _ = _filters(_pol("allow-all", "{rules: [{}]}"))
    assert f["typed_config"]["rules"] == {"policies": {"ns[foo]-policy[allow-all]-rule[0]": ANY}}


def test_order_audit_deny_allow_and_dry_run_prefixes():
    fs, _ = _filters(_pol("a", "{rules: [{}]}") + _pol("d", "{action: DENY, rules: [{}]}")
                     + _pol("au", "{action: AUDIT, rules: [{}]}")
                     + _pol("dd", "{action: DENY, rules: [{}]}", ", annotations: {istio.io/dry-run: 'true'}"))
    summary = [(f["typed_config"].get("rules", {}).get("action", "ALLOW" if "rules" in f["typed_config"] else None),
                sorted(f["typed_config"].get("rules", {}).get("policies", {})),
                sorted(f["typed_config"].get("shadow_rules", {}).get("policies", {})),
                f["typed_config"].get("shadow_rules_stat_prefix")) for f in fs]
    assert summary == [("LOG", ["ns[foo]-policy[au]-rule[0]"], [], "istio_dry_run_allow_"),
                       ("DENY", ["ns[foo]-policy[d]-rule[0]"], ["ns[foo]-policy[dd]-rule[0]"], "istio_dry_run_deny_"),
                       ("ALLOW", ["ns[foo]-policy[a]-rule[0]"], [], "istio_dry_run_allow_")]


def test_custom_is_reported_and_enforced_as_deny():
    (f,), notes = _filters(_pol("ext", "{action: CUSTOM, provider: {name: opa}, rules: [{}]}"))
    assert f["typed_config"]["rules"] == {"action": "DENY",
                                          "policies": {"ns[foo]-policy[ext]-rule[0]-bad-custom-action": ANY}}
    assert any("CUSTOM authorization (provider 'opa'" in n for n in notes)


def _jwt_claim(claim, sm):
    return {"metadata": {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "payload"}, {"key": claim}],
                         "value": {"string_match": sm}}}


RULES = [
    ("principal + namespace", {"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"], "notNamespaces": ["x"]}}]},
     "ALLOW", {"permissions": ANY["permissions"], "principals": [{"and_ids": {"ids": [
         {"or_ids": {"ids": [{"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/a/sa/b"}}}]}},
         {"not_id": {"or_ids": {"ids": [{"authenticated": {"principal_name": {
             "safe_regex": {"regex": ".*/ns/x/.*"}}}}]}}}]}}]}),
    ("methods paths ports and when", {"to": [{"operation": {"methods": ["GET"], "notPaths": ["/a*"], "ports": ["80"]}}],
                                      "when": [{"key": "connection.sni", "values": ["*.x"]}]},
     "ALLOW", {"permissions": [{"and_rules": {"rules": [
         {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}},
         {"not_rule": {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/a"}}}]}}},
         {"or_rules": {"rules": [{"destination_port": 80}]}},
         {"or_rules": {"rules": [{"requested_server_name": {"suffix": ".x"}}]}}]}}],
         "principals": ANY["principals"]}),
    ("requestPrincipals: iss AND sub from the jwt_authn payload", {"from": [{"source": {
        "requestPrincipals": ["https://iss.example/alice"]}}]}, "ALLOW",
     {"permissions": ANY["permissions"], "principals": [{"and_ids": {"ids": [{"and_ids": {"ids": [
         _jwt_claim("iss", {"exact": "https://iss.example"}), _jwt_claim("sub", {"exact": "alice"})]}}]}}]}),
    ("requestPrincipals *: any verified token", {"from": [{"source": {"notRequestPrincipals": ["*"]}}]}, "DENY",
     {"permissions": ANY["permissions"], "principals": [{"and_ids": {"ids": [{"not_id": {"and_ids": {"ids": [
         _jwt_claim("iss", {"safe_regex": {"regex": ".+"}}),
         _jwt_claim("sub", {"safe_regex": {"regex": ".+"}})]}}}]}}]}),
]


@pytest.mark.parametrize("name,rule,action,expected", RULES, ids=[r[0] for r in RULES])
def test_rule_policy(name, rule, action, expected):
    assert rule_policy(rule, "foo", action, []) == expected


def test_untranslatable_value_drops_the_allow_rule():
    """Validation refuses the policy (Istio's security.ValidateIPs), so it is never served; the translator
    still drops such a rule should one reach it (here loaded as analysis does, invalid values kept)."""
    text = _pol("p", "{rules: [{from: [{source: {ipBlocks: ['not-an-ip']}}]}, {}]}")
    assert load_text(text, "p.yaml").resources == ()
    notes = Notes()
    res = [r for r in load_text(text, "p.yaml", keep_invalid=True).resources if r.kind == "AuthorizationPolicy"]
    (f,) = build_filters(res, notes)
    notes = notes.items
    assert sorted(f["typed_config"]["rules"]["policies"]) == ["ns[foo]-policy[p]-rule[1]"]
    assert any("skipped rule ns[foo]-policy[p]-rule[0]: invalid IP address or CIDR 'not-an-ip'" in n for n in notes)


PRINCIPAL_FORMS = [  # istiod requestPrincipalGenerator: split at the LAST "/"
    ("*", ".+", ".+"), ("iss/*", "exact:iss", ".+"), ("*/sub", ".+", "exact:sub"),
    ("https://a.b/c/d", "exact:https://a.b/c", "exact:d"), ("*.b/d", "suffix:.b", "exact:d"),
    ("iss/pre*", "exact:iss", "prefix:pre"), ("nosub*", "prefix:nosub", ".+"), ("*tail", ".+", "suffix:tail"),
    ("issuer-only", "exact:issuer-only", "exact:"), ("/sub-only", "exact:", "exact:sub-only"),
]


@pytest.mark.parametrize("value,iss,sub", PRINCIPAL_FORMS, ids=[f[0] for f in PRINCIPAL_FORMS])
def test_request_principal_forms(value, iss, sub):
    def sm(form):
        kind, _, v = form.partition(":")
        return {"safe_regex": {"regex": ".+"}} if form == ".+" else {kind: v}
    p = rule_policy({"from": [{"source": {"requestPrincipals": [value]}}]}, "foo", "ALLOW", [])
    assert p["principals"][0]["and_ids"]["ids"][0] == {"and_ids": {"ids": [_jwt_claim("iss", sm(iss)),
                                                                            _jwt_claim("sub", sm(sub))]}}


def test_nested_claim_condition_reads_the_payload_path():
    p = rule_policy({"when": [{"key": "request.auth.claims[team][name]", "values": ["blue"]}]}, "foo", "ALLOW", [])
    m = p["principals"][0]["and_ids"]["ids"][0]["metadata"]
    assert [s["key"] for s in m["path"]] == ["payload", "team", "name"]
    one = {"string_match": {"exact": "blue"}}  # one value: no or_match (Envoy's needs two or more)
    assert m["value"] == {"or_match": {"value_matchers": [{"list_match": {"one_of": one}}, one]}}
    two = rule_policy({"when": [{"key": "request.auth.claims[team]", "values": ["blue", "red"]}]}, "foo", "ALLOW",
                      [])["principals"][0]["and_ids"]["ids"][0]["metadata"]["value"]
    either = {"or_match": {"value_matchers": [{"string_match": {"exact": "blue"}}, {"string_match": {"exact": "red"}}]}}
    assert two == {"or_match": {"value_matchers": [{"list_match": {"one_of": either}}, either]}}


@pytest.mark.parametrize("key", ["request.auth.claims", "request.auth.claims[]", "request.auth.claims[a]x",
                                 "request.auth.claims[ab", "request.auth.claims.ab]", "request.auth.claims[a[b]",
                                 "request.auth.claims[a]b]"])
def test_bad_claim_keys_skip_the_rule(key):
    with pytest.raises(ValueError, match="invalid claim key"):
        rule_policy({"when": [{"key": key, "values": ["v"]}]}, "foo", "DENY", [])


TCP_RULES = [  # istiod on a TCP chain: ALLOW rule with an HTTP-only field dropped; DENY loses the field
    ("ALLOW with methods dropped", {"to": [{"operation": {"methods": ["GET"]}}]}, "ALLOW", None),
    ("ALLOW with requestPrincipals dropped", {"from": [{"source": {"requestPrincipals": ["*"]}}]}, "ALLOW", None),
    ("ALLOW with a header condition dropped", {"when": [{"key": "request.headers[x]", "values": ["1"]}]}, "ALLOW",
     None),
    ("DENY methods+ports keeps the port", {"to": [{"operation": {"methods": ["POST"], "ports": ["8080"]}}]}, "DENY",
     {"permissions": [{"and_rules": {"rules": [{"or_rules": {"rules": [{"destination_port": 8080}]}}]}}],
      "principals": ANY["principals"]}),
    ("DENY paths only: denies everything", {"to": [{"operation": {"paths": ["/admin"]}}]}, "DENY", ANY),
    ("ALLOW principals stays", {"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"]}}]}, "ALLOW",
     {"permissions": ANY["permissions"], "principals": [{"and_ids": {"ids": [{"or_ids": {"ids": [
         {"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/a/sa/b"}}}]}}]}}]}),
]


@pytest.mark.parametrize("name,rule,action,expected", TCP_RULES, ids=[r[0] for r in TCP_RULES])
def test_rule_policy_for_tcp(name, rule, action, expected):
    problems: list[str] = []
    if expected is None:
        with pytest.raises(ValueError, match="is HTTP only"):
            rule_policy(rule, "foo", action, problems, for_tcp=True)
        return
    assert rule_policy(rule, "foo", action, problems, for_tcp=True) == expected
    assert all("is HTTP only; ignored in this DENY rule" in p for p in problems)


@pytest.mark.parametrize("rule, note", [
    ("{to: [{operation: {paths: ['/files/{*}']}}]}",
     "path template '/files/{*}' (uri_template matcher) is not supported"),
    ("{to: [{operation: {paths: ['/files/{**}']}}]}",
     "path template '/files/{**}' (uri_template matcher) is not supported"),
    ("{when: [{key: 'experimental.envoy.filters.a.b[c]', values: [x]}]}",
     "experimental.envoy.filters.a.b[c] (raw dynamic metadata) is not supported by this control plane"),
    ("{when: [{key: 'request.auth.claims[a][]', values: [x]}]}",
     "invalid claim key 'request.auth.claims[a][]': want request.auth.claims[name] or [a][b]"),
])
def test_a_rule_this_control_plane_cannot_express_is_skipped_with_a_note(rule, note):
    (f,), notes = _filters(_pol("p", f"{{rules: [{rule}, {{}}]}}"))
    assert sorted(f["typed_config"]["rules"]["policies"]) == ["ns[foo]-policy[p]-rule[1]"]
    assert any(f"spec.rules[0]: skipped rule ns[foo]-policy[p]-rule[0]: {note}" in n for n in notes), notes


@pytest.mark.parametrize("ports, says", [("['http']", "invalid port 'http'"),
                                         ("['70000']", "port 70000 out of range 0..65535")])
def test_an_invalid_port_that_reaches_the_translator_skips_the_rule(ports, says):
    text = _pol("p", f"{{rules: [{{to: [{{operation: {{ports: {ports}}}}}]}}]}}")
    assert load_text(text, "p.yaml").resources == ()  # validation refuses it: never served
    res = [r for r in load_text(text, "p.yaml", keep_invalid=True).resources if r.kind == "AuthorizationPolicy"]
    notes = Notes()
    (f,) = build_filters(res, notes)
    assert f["typed_config"]["rules"].get("policies", {}) == {}  # ALLOW with no policy left: allows nothing
    assert any(says in n for n in notes.items)


def test_a_dry_run_audit_policy_alone_is_shadow_rules_without_a_stat_prefix_and_notes_are_optional():
    text = _pol("au", "{action: AUDIT, rules: [{}]}", ", annotations: {istio.io/dry-run: 'true'}")
    assert load_text(text, "p.yaml").resources == ()  # Istio's validation refuses dry-run on AUDIT: never served
    res = [r for r in load_text(text, "p.yaml", keep_invalid=True).resources if r.kind == "AuthorizationPolicy"]
    (f,) = build_filters(res, None)  # no notes collected
    assert "rules" not in f["typed_config"]
    assert sorted(f["typed_config"]["shadow_rules"]["policies"]) == ["ns[foo]-policy[au]-rule[0]"]
    assert "shadow_rules_stat_prefix" not in f["typed_config"]  # istiod: only ALLOW and DENY get one


def test_claim_keys_name_the_payload_path():
    from control.translate.authz import nested_claims
    assert nested_claims("request.auth.claims[a]") == ["a"]
    assert nested_claims("request.auth.claims[a][bc]") == ["a", "bc"]


@pytest.mark.parametrize("value, ok", [("0", True), ("65535", True), ("65536", False), ("-1", False)])
def test_port_range(value, ok):
    from control.translate.authz import Unsupported, port
    if ok:
        assert port(value) == int(value)
    else:
        with pytest.raises(Unsupported, match=f"^port {value} out of range 0..65535$"):
            port(value)


WHEN_PRINCIPALS = [  # `when` keys istiod puts on the principal side (and_ids), as one OR of the values
    ("source.ip", "10.0.0.0/8", {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}),
    ("remote.ip", "10.0.0.1", {"remote_ip": {"address_prefix": "10.0.0.1", "prefix_len": 32}}),
    ("source.namespace", "ns1", {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/ns1/.*"}}}}),
    ("source.principal", "cluster.local/ns/a/sa/b",
     {"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/a/sa/b"}}}),
    ("request.headers[x-user]", "alice", {"header": {"name": "x-user", "string_match": {"exact": "alice"}}}),
]


@pytest.mark.parametrize("key, value, matcher", WHEN_PRINCIPALS, ids=[w[0] for w in WHEN_PRINCIPALS])
def test_when_keys_on_the_principal_side(key, value, matcher):
    p = rule_policy({"when": [{"key": key, "values": [value]}]}, "foo", "ALLOW", [])
    assert p == {"permissions": ANY["permissions"],
                 "principals": [{"and_ids": {"ids": [{"or_ids": {"ids": [matcher]}}]}}]}


@pytest.mark.parametrize("key, claim", [("request.auth.principal", None), ("request.auth.audiences", "aud"),
                                        ("request.auth.presenter", "azp"), ("request.auth.claims[team]", "team")])
def test_jwt_when_keys_are_one_principal_of_all_values(key, claim):
    p = rule_policy({"when": [{"key": key, "values": ["v"]}]}, "foo", "ALLOW", [])
    assert p["permissions"] == ANY["permissions"]
    (one,) = p["principals"][0]["and_ids"]["ids"]
    if claim is None:
        assert [m["metadata"]["path"][1]["key"] for m in one["and_ids"]["ids"]] == ["iss", "sub"]
    else:
        assert one["metadata"]["path"] == [{"key": "payload"}, {"key": claim}]


@pytest.mark.parametrize("key", ["request.headers[]", "request.bogus", None])
def test_an_unknown_when_key_is_named(key):
    from control.translate.authz import UnknownAttribute
    cond = {"values": ["v"]} if key is None else {"key": key, "values": ["v"]}
    with pytest.raises(UnknownAttribute, match=rf"^unknown attribute {re.escape(key or '')}$"):
        rule_policy({"when": [cond]}, "foo", "DENY", [])


def test_a_source_with_no_fields_matches_any_principal():
    p = rule_policy({"from": [{"source": {}}]}, "foo", "ALLOW", [])
    assert p == ANY


def test_raw_metadata_when_key_is_reported_on_a_deny_rule_and_dropped():
    problems: list[str] = []
    p = rule_policy({"when": [{"key": "experimental.envoy.filters.a.b[c]", "values": ["x"]}]}, "foo", "DENY", problems)
    assert p == ANY
    assert problems == ["experimental.envoy.filters.a.b[c] (raw dynamic metadata) is not supported by this control "
                        "plane; ignored in this DENY rule (the rule matches more)"]


@pytest.mark.parametrize("value, dry", [(v, True) for v in ("1", "t", "T", "true", "TRUE", "True", " true ")]
                         + [(v, False) for v in ("0", "false", "yes", "", None)])
def test_dry_run_annotation_is_parsed_as_go_parsebool(value, dry):
    from control.translate.authz import is_dry_run
    annotations = "" if value is None else f", annotations: {{istio.io/dry-run: '{value}'}}"
    (pol,) = load_text(_pol("p", "{rules: [{}]}", annotations), "p.yaml", keep_invalid=True).resources
    assert is_dry_run(pol) is dry


def test_not_service_accounts_is_a_negated_principal():
    p = rule_policy({"from": [{"source": {"notServiceAccounts": ["ns1/robot"]}}]}, "foo", "ALLOW", [])
    regex = "spiffe://.+/ns/ns1/(.+/|)sa/robot(/.+)?"
    assert p["principals"] == [{"and_ids": {"ids": [{"not_id": {"or_ids": {"ids": [
        {"authenticated": {"principal_name": {"safe_regex": {"regex": regex}}}}]}}}]}}]


def _code_policy(name: str, spec: dict) -> Resource:
    """A policy built in code (other translators call build_filters with policies from the mesh snapshot,
    which the loader does not always produce: no provider name, an action the enum lacks)."""
    return Resource(api_version="security.istio.io/v1", kind="AuthorizationPolicy", name=name, namespace="foo",
                    spec=spec)


def test_a_policy_with_an_unknown_action_is_ignored_with_a_note_and_the_others_still_apply():
    notes = Notes()
    fs = build_filters([_code_policy("odd", {"action": "BLOCK", "rules": [{}]}),
                        _code_policy("d", {"action": "DENY", "rules": [{}]})], notes)
    assert [sorted(f["typed_config"]["rules"]["policies"]) for f in fs] == [["ns[foo]-policy[d]-rule[0]"]]
    assert notes.items == ["<unknown>: AuthorizationPolicy foo/odd: spec.action: unknown action 'BLOCK': "
                           "policy ignored"]


def test_a_custom_policy_without_a_provider_name_is_reported_with_an_empty_name():
    notes = Notes()
    (f,) = build_filters([_code_policy("ext", {"action": "CUSTOM", "provider": {}, "rules": [{}]})], notes)
    assert f["typed_config"]["rules"]["action"] == "DENY"
    assert notes.items == ["<unknown>: AuthorizationPolicy foo/ext: spec.action: CUSTOM authorization (provider "
                           "'', ext_authz) is not supported: its rules are enforced as DENY rules"]


def test_dry_run_policies_of_one_action_share_the_shadow_rules():
    dry = ", annotations: {istio.io/dry-run: 'true'}"
    (f,), _ = _filters(_pol("d1", "{action: DENY, rules: [{}]}", dry) + _pol("d2", "{action: DENY, rules: [{}]}", dry))
    assert "rules" not in f["typed_config"]
    assert sorted(f["typed_config"]["shadow_rules"]["policies"]) == ["ns[foo]-policy[d1]-rule[0]",
                                                                     "ns[foo]-policy[d2]-rule[0]"]
    assert f["typed_config"]["shadow_rules"]["action"] == "DENY"
    assert f["typed_config"]["shadow_rules_stat_prefix"] == "istio_dry_run_deny_"


@pytest.mark.parametrize("direction, rbac", [("inbound", True), ("gateway", True), ("outbound", False)])
def test_rbac_filters_authorize_inbound_and_gateway_traffic_not_the_clients_outbound(direction, rbac):
    """Istio enforces AuthorizationPolicy where traffic arrives: a sidecar's inbound and a gateway."""
    result = load_text(BASE + "---\n" + _pol("deny-all", "{}").replace("namespace: foo", "namespace: default"),
                       "p.yaml")
    mesh = build_mesh(result.resources)
    proxy = make_proxy(mesh, find_workload(mesh, "client"))
    names = [f["name"] for f in http_filters(proxy, direction)]
    assert names == (["envoy.filters.http.rbac"] if rbac else [])
