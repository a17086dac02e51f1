"""The RBAC engine (pyproxy.filters.rbac_logic) as tables: every permission and principal kind and its negation,
ALLOW / DENY / LOG actions, first-match-by-name policy ids, shadow rules, and chains of filters (DENY over ALLOW)."""
from __future__ import annotations

import pytest

import pyproxy.config.model as model
from pyproxy.config.decode import decode
from pyproxy.filters.rbac_logic import (PeerCertificate, RbacEngine, RbacPolicySet, RbacRequest, compile_permission,
                                        compile_principal, evaluate_chain, response_detail)
from pyproxy.http.headers import Headers

SA_BAR = "spiffe://cluster.local/ns/foo/sa/bar"
PEER = PeerCertificate(uri_sans=(SA_BAR,), dns_sans=("bar.foo.svc",), subject="CN=bar,O=mesh")


def req(**kw) -> RbacRequest:
    base = dict(method="GET", path="/api/x?q=1", authority="my-app.foo:8080", headers=Headers([("x-user", "alice")]),
                peer=PEER, source_ip="10.0.0.5", direct_remote_ip="10.0.0.5", remote_ip="203.0.113.9",
                destination_ip="10.0.1.1", destination_port=8080, requested_server_name="outbound_.8080_._.my-app",
                metadata={"envoy.filters.a.b": {"c": "exact", "flag": True}})
    base.update(kw)
    return RbacRequest(**base)


def cidr(prefix: str, n: int) -> dict:
    return {"address_prefix": prefix, "prefix_len": n}


HEADER_GET = {"header": {"name": ":method", "string_match": {"exact": "GET"}}}

PERMISSIONS = [
    ("any", {"any": True}, {}, True),
    ("header exact on :method", {"header": {"name": ":method", "string_match": {"exact": "GET"}}}, {}, True),
    ("header exact on :method, other method", {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
     {"method": "POST"}, False),
    ("header present", {"header": {"name": "x-user", "present_match": True}}, {}, True),
    ("header present, missing", {"header": {"name": "x-other", "present_match": True}}, {}, False),
    (":authority ignore_case suffix", {"header": {"name": ":authority",
                                                  "string_match": {"suffix": "FOO:8080", "ignore_case": True}}}, {}, True),
    ("url_path prefix ignores query", {"url_path": {"path": {"prefix": "/api/"}}}, {}, True),
    ("url_path exact ignores query", {"url_path": {"path": {"exact": "/api/x"}}}, {}, True),
    ("url_path exact, other path", {"url_path": {"path": {"exact": "/api/x"}}}, {"path": "/api/y"}, False),
    ("url_path regex .+", {"url_path": {"path": {"safe_regex": {"regex": ".+"}}}}, {}, True),
    ("destination_ip in /24", {"destination_ip": cidr("10.0.1.0", 24)}, {}, True),
    ("destination_ip outside /32", {"destination_ip": cidr("10.0.1.2", 32)}, {}, False),
    ("destination_port", {"destination_port": 8080}, {}, True),
    ("destination_port other", {"destination_port": 9090}, {}, False),
    ("destination_port_range [8000,8081)", {"destination_port_range": {"start": 8000, "end": 8081}}, {}, True),
    ("requested_server_name prefix", {"requested_server_name": {"prefix": "outbound_."}}, {}, True),
    ("requested_server_name, no SNI", {"requested_server_name": {"prefix": "outbound_."}},
     {"requested_server_name": ""}, False),
    ("metadata string", {"metadata": {"filter": "envoy.filters.a.b", "path": [{"key": "c"}],
                                      "value": {"string_match": {"exact": "exact"}}}}, {}, True),
    ("metadata bool", {"metadata": {"filter": "envoy.filters.a.b", "path": [{"key": "flag"}],
                                    "value": {"bool_match": True}}}, {}, True),
    ("metadata absent", {"metadata": {"filter": "envoy.filters.x", "path": [{"key": "c"}],
                                      "value": {"present_match": True}}}, {}, False),
    ("and_rules all hold", {"and_rules": {"rules": [{"destination_port": 8080}, {"url_path": {"path": {"prefix": "/api"}}}]}},
     {}, True),
    ("and_rules one fails", {"and_rules": {"rules": [{"destination_port": 8080}, {"url_path": {"path": {"prefix": "/x"}}}]}},
     {}, False),
    ("or_rules one holds", {"or_rules": {"rules": [{"destination_port": 1}, {"url_path": {"path": {"prefix": "/api"}}}]}},
     {}, True),
    ("or_rules none holds", {"or_rules": {"rules": [{"destination_port": 1}, {"destination_port": 2}]}}, {}, False),
    ("not_rule of a match", {"not_rule": {"destination_port": 8080}}, {}, False),
    ("not_rule of a miss", {"not_rule": {"destination_port": 1}}, {}, True),
    ("not_rule of any (match never)", {"not_rule": {"any": True}}, {}, False),
    ("and_rules of three, all hold", {"and_rules": {"rules": [{"destination_port": 8080}, {"any": True},
                                                               {"url_path": {"path": {"prefix": "/api"}}}]}}, {}, True),
    ("and_rules of three, the last fails", {"and_rules": {"rules": [{"destination_port": 8080}, {"any": True},
                                                                     {"destination_port": 1}]}}, {}, False),
    ("or_rules of three, the last holds", {"or_rules": {"rules": [{"destination_port": 1}, {"destination_port": 2},
                                                                   {"destination_port": 8080}]}}, {}, True),
    ("or_rules of three, none holds", {"or_rules": {"rules": [{"destination_port": 1}, {"destination_port": 2},
                                                               {"destination_port": 3}]}}, {}, False),
    ("destination_ip that is not an IP", {"destination_ip": cidr("10.0.1.0", 24)}, {"destination_ip": "pipe"}, False),
    ("destination_ip of another IP version", {"destination_ip": cidr("::", 0)}, {}, False),
    ("destination_ip prefix with host bits set is masked", {"destination_ip": cidr("10.0.1.77", 24)}, {}, True),
    ("destination_ip without prefix_len: the whole family", {"destination_ip": {"address_prefix": "192.168.0.0"}},
     {}, True),
    ("destination_port_range start is inclusive", {"destination_port_range": {"start": 8080, "end": 8081}}, {}, True),
    ("destination_port_range end is exclusive", {"destination_port_range": {"start": 8000, "end": 8080}}, {}, False),
    ("header on :scheme", {"header": {"name": ":scheme", "string_match": {"exact": "https"}}}, {"scheme": "https"},
     True),
    ("and_rules of two, the header second", {"and_rules": {"rules": [{"destination_port": 8080}, HEADER_GET]}},
     {}, True),
    ("or_rules of two, the header first", {"or_rules": {"rules": [HEADER_GET, {"destination_port": 1}]}}, {}, True),
    ("or_rules of two, the header second", {"or_rules": {"rules": [{"destination_port": 1}, HEADER_GET]}}, {}, True),
    ("and_rules of three with a header", {"and_rules": {"rules": [HEADER_GET, {"any": True}, HEADER_GET]}}, {}, True),
    ("not_rule of a header", {"not_rule": HEADER_GET}, {"method": "POST"}, True),
]


@pytest.mark.parametrize("name,perm,overrides,expected", PERMISSIONS, ids=[p[0] for p in PERMISSIONS])
def test_permission(name, perm, overrides, expected):
    p = compile_permission(decode(model.Permission, perm))
    r = req(**overrides)
    assert p(r, r.view()) is expected


PRINCIPALS = [
    ("any", {"any": True}, {}, True),
    ("authenticated exact URI SAN", {"authenticated": {"principal_name": {"exact": SA_BAR}}}, {}, True),
    ("authenticated other SA", {"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/foo/sa/baz"}}},
     {}, False),
    ("authenticated on plaintext", {"authenticated": {"principal_name": {"exact": SA_BAR}}}, {"peer": None}, False),
    ("authenticated namespace regex", {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/foo/.*"}}}},
     {}, True),
    ("authenticated namespace regex, other ns",
     {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/monitoring/.*"}}}}, {}, False),
    ("authenticated DNS SAN", {"authenticated": {"principal_name": {"exact": "bar.foo.svc"}}}, {}, True),
    ("authenticated subject", {"authenticated": {"principal_name": {"exact": "CN=bar,O=mesh"}}}, {}, True),
    ("authenticated without name: any cert", {"authenticated": {}}, {}, True),
    ("authenticated without name: plaintext", {"authenticated": {}}, {"peer": None}, False),
    ("source_ip", {"source_ip": cidr("10.0.0.0", 8)}, {}, True),
    ("direct_remote_ip /32", {"direct_remote_ip": cidr("10.0.0.5", 32)}, {}, True),
    ("direct_remote_ip other", {"direct_remote_ip": cidr("10.0.0.6", 32)}, {}, False),
    ("remote_ip (xff)", {"remote_ip": cidr("203.0.113.0", 24)}, {}, True),
    ("remote_ip is not the direct peer", {"remote_ip": cidr("10.0.0.5", 32)}, {}, False),
    ("ipv6 range vs ipv4 address", {"source_ip": cidr("::", 0)}, {}, False),
    ("bracketed ipv6 address", {"source_ip": cidr("fd00::", 64)}, {"source_ip": "[fd00::5]"}, True),
    ("remote_ip that is not an address (x-forwarded-for junk)", {"remote_ip": cidr("203.0.113.0", 24)},
     {"remote_ip": "X203.0.113.9"}, False),
    ("header", {"header": {"name": "x-user", "string_match": {"exact": "alice"}}}, {}, True),
    ("header missing", {"header": {"name": "x-user", "string_match": {"exact": "alice"}}}, {"headers": Headers()}, False),
    ("url_path", {"url_path": {"path": {"prefix": "/api"}}}, {}, True),
    ("and_ids", {"and_ids": {"ids": [{"any": True}, {"source_ip": cidr("10.0.0.5", 32)}]}}, {}, True),
    ("and_ids one fails", {"and_ids": {"ids": [{"any": True}, {"source_ip": cidr("10.0.0.6", 32)}]}}, {}, False),
    ("or_ids", {"or_ids": {"ids": [{"source_ip": cidr("1.1.1.1", 32)}, {"source_ip": cidr("10.0.0.5", 32)}]}}, {}, True),
    ("or_ids none", {"or_ids": {"ids": [{"source_ip": cidr("1.1.1.1", 32)}]}}, {}, False),
    ("not_id of a match", {"not_id": {"authenticated": {"principal_name": {"exact": SA_BAR}}}}, {}, False),
    ("not_id of a miss (plaintext)", {"not_id": {"authenticated": {"principal_name": {"exact": SA_BAR}}}},
     {"peer": None}, True),
    ("not_id of any", {"not_id": {"any": True}}, {}, False),
]


@pytest.mark.parametrize("name,principal,overrides,expected", PRINCIPALS, ids=[p[0] for p in PRINCIPALS])
def test_principal(name, principal, overrides, expected):
    p = compile_principal(decode(model.Principal, principal))
    r = req(**overrides)
    assert p(r, r.view()) is expected


def rules(action: str, **policies: tuple[list, list]) -> dict:
    return {"action": action, "policies": {name: {"permissions": perms, "principals": princ}
                                           for name, (perms, princ) in policies.items()}}


GET_API = ([{"and_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                                     {"url_path": {"path": {"prefix": "/api/"}}}]}}], [{"any": True}])
ADMIN = ([{"url_path": {"path": {"prefix": "/admin"}}}], [{"any": True}])
NEVER = ([{"not_rule": {"any": True}}], [{"not_id": {"any": True}}])
ALL = ([{"any": True}], [{"any": True}])

ENGINE = [
    ("ALLOW matched", rules("ALLOW", p1=GET_API), {}, (True, "p1", None)),
    ("ALLOW nothing matched", rules("ALLOW", p1=GET_API), {"method": "DELETE"}, (False, None, None)),
    ("ALLOW no policies (spec {}) denies all", rules("ALLOW"), {}, (False, None, None)),
    ("ALLOW match-never policy denies all", rules("ALLOW", p=NEVER), {}, (False, None, None)),
    ("ALLOW empty rule allows all", rules("ALLOW", p=ALL), {"path": "/anything"}, (True, "p", None)),
    ("DENY matched", rules("DENY", d=ADMIN), {"path": "/admin/x"}, (False, "d", None)),
    ("DENY not matched", rules("DENY", d=ADMIN), {}, (True, None, None)),
    ("DENY match-never denies nothing", rules("DENY", d=NEVER), {}, (True, None, None)),
    ("first matching policy by name", rules("ALLOW", zz=ALL, aa=GET_API), {}, (True, "aa", None)),
    ("LOG matched: allowed, logged", rules("LOG", a=ADMIN), {"path": "/admin"}, (True, "a", True)),
    ("LOG not matched: allowed, not logged", rules("LOG", a=ADMIN), {}, (True, None, False)),
    ("principal on a header", rules("ALLOW", h=([{"any": True}], [HEADER_GET])), {}, (True, "h", None)),
]


@pytest.mark.parametrize("name,cfg,overrides,expected", ENGINE, ids=[e[0] for e in ENGINE])
def test_engine(name, cfg, overrides, expected):
    request = req(**overrides)
    r = RbacEngine(decode(model.RBACRules, cfg)).evaluate(request, request.view())
    assert (r.allowed, r.policy_id, r.log) == expected


def policy_set(**cfg) -> RbacPolicySet:
    return RbacPolicySet(decode(model.RBAC, cfg))


def test_shadow_rules_are_evaluated_never_enforced():
    ps = policy_set(shadow_rules=rules("DENY", dry=ADMIN), shadow_rules_stat_prefix="istio_dry_run_deny_")
    d = ps.decide(req(path="/admin"))
    assert (d.allowed, d.shadow_allowed, d.shadow_policy_id) == (True, False, "dry")
    d = ps.decide(req(path="/api/x"))
    assert (d.allowed, d.shadow_allowed, d.shadow_policy_id) == (True, True, None)


def test_enforced_and_shadow_together():
    ps = policy_set(rules=rules("ALLOW", p1=GET_API), shadow_rules=rules("ALLOW", p2=ADMIN))
    d = ps.decide(req(method="POST"))
    assert (d.allowed, d.policy_id, d.shadow_allowed, d.details) == \
        (False, None, False, "rbac_access_denied_matched_policy[none]")


def test_no_rules_at_all_allows():
    assert policy_set().decide(req()).allowed is True


CHAIN = [  # Istio's filter order: AUDIT (LOG), DENY, ALLOW
    ("deny wins over allow", {"path": "/admin"}, (False, 1, "rbac_access_denied_matched_policy[ns[foo]-policy[deny-admin]-rule[0]]")),
    ("allowed by the allow list", {}, (True, None, None)),
    ("not in the allow list", {"method": "DELETE"}, (False, 2, "rbac_access_denied_matched_policy[none]")),
]


@pytest.mark.parametrize("name,overrides,expected", CHAIN, ids=[c[0] for c in CHAIN])
def test_chain_audit_deny_allow(name, overrides, expected):
    chain = [policy_set(rules=rules("LOG", **{"ns[foo]-policy[audit]-rule[0]": ALL})),
             policy_set(rules=rules("DENY", **{"ns[foo]-policy[deny-admin]-rule[0]": ADMIN})),
             policy_set(rules=rules("ALLOW", **{"ns[foo]-policy[allow-get]-rule[0]": GET_API,
                                                "ns[foo]-policy[allow-admin]-rule[0]": ADMIN}))]
    allowed, index, decision = evaluate_chain(chain, req(**overrides))
    assert (allowed, index, decision.details if decision else None) == expected


def test_response_detail_replaces_whitespace():
    assert response_detail("ab df\txy") == "rbac_access_denied_matched_policy[ab_df_xy]"


def test_engine_repr_names_its_policies_in_order():
    engine = RbacEngine(decode(model.RBACRules, rules("DENY", zz=ADMIN, aa=ALL)))
    assert repr(engine) == "RbacEngine(DENY, policies=['aa', 'zz'])"


def test_log_engine_and_shadow_ids_reach_the_decision():
    """Both engines see the request's headers; the decision carries the LOG hint and the shadow policy id."""
    ps = policy_set(rules=rules("LOG", audit=GET_API), shadow_rules=rules("DENY", dry=GET_API))
    d = ps.decide(req())
    assert (d.allowed, d.policy_id, d.shadow_allowed, d.shadow_policy_id, d.log) == (True, "audit", False, "dry", True)
    d = ps.decide(req(method="POST"))
    assert (d.allowed, d.policy_id, d.shadow_allowed, d.shadow_policy_id, d.log) == (True, None, True, None, False)


def test_a_rule_with_no_kind_set_is_a_clear_error():
    """The decoder enforces the oneof; a config built in code without one still gets a message, not a crash."""
    with pytest.raises(ValueError, match="^Permission needs one rule$"):
        compile_permission(model.Permission())
    with pytest.raises(ValueError, match="^Principal needs one identifier$"):
        compile_principal(model.Principal())
