"""AuthorizationPolicy -> `envoy.filters.http.rbac` filters of a sidecar's inbound connection managers.

What istiod does (pilot/pkg/security/authz/builder/builder.go, model/model.go, model/generator.go, matcher/):

* Which policies: the workload's namespace (no selector, or a matching `selector.matchLabels`) and the root
  namespace (mesh-wide; a selector there matches workloads of every namespace).
* One RBAC filter per action, in the order AUDIT (action LOG), DENY, ALLOW; none when no policy applies
  (then everything is allowed). A policy annotated `istio.io/dry-run: "true"` goes to `shadow_rules`;
  `shadow_rules_stat_prefix` is `istio_dry_run_allow_` (also for LOG and when there are no shadow rules:
  istiod reads the action of a nil RBAC) or `istio_dry_run_deny_`.
* Each rule becomes policy `ns[<ns>]-policy[<name>]-rule[<i>]`: permissions = one `and_rules` per `to`
  (hosts, methods, paths, ports, then `when` destination.ip / destination.port / connection.sni), principals =
  one `and_ids` per `from` (principals, namespaces, remoteIpBlocks, ipBlocks, then the other `when` keys);
  each field is `or_rules`/`or_ids` of its values, its `not*` twin a `not_rule`/`not_id` of that OR. An empty
  `and` is `any: true`. A policy without rules is the never-matching policy (`spec: {}` = deny all; DENY with no
  rules denies nothing).
* Strings: `v` exact, `v*` prefix, `*v` suffix, `*` presence (regex `.+`); principals get `spiffe://`
  prepended (suffix form: regex `spiffe://.*<v>`); namespaces become the regex `.*/ns/<ns>/.*` on the peer's
  SPIFFE id (so mTLS is required); hosts match `:authority` ignoring case.
* A value istiod cannot translate (a bad CIDR or port, or here an attribute this control plane does not
  support: experimental.envoy.filters.*, path templates) drops the whole rule for ALLOW (stricter) and only
  that value for DENY/AUDIT (wider); an unknown `when` key drops the rule. Each is reported in the notes.
* CUSTOM (ext_authz) is not supported: reported by name, and its rules are enforced as DENY rules (istiod's
  behaviour for a CUSTOM policy whose provider is unusable), so a CUSTOM policy never silently allows.
* requestPrincipals and `request.auth.*` read the verified JWT payload (`envoy.filters.http.jwt_authn`
  metadata `payload`, request_authn.py): iss AND sub for a principal, `aud` / `azp` / any (nested) claim with
  istiod's string-or-list matcher.
Gateways get the same filters. Inbound TCP chains get `envoy.filters.network.rbac` (stat prefix `tcp.`) from the
same rules without their HTTP-only attributes (hosts, methods, paths, requestPrincipals, request.headers,
request.auth.*): an ALLOW rule using one is dropped, a DENY/AUDIT rule loses it (istiod's checkError).
"""
from __future__ import annotations

import ipaddress
from typing import Any, Mapping

from control.istio.resources import Resource
from control.mesh import MeshSnapshot, selector_labels
from control.registry.model import Workload

RBAC_HTTP = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_NETWORK = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
FILTER_NAME = "envoy.filters.http.rbac"
NETWORK_FILTER_NAME = "envoy.filters.network.rbac"
TCP_STAT_PREFIX = "tcp."  # authz model RBACTCPFilterStatPrefix
DRY_RUN = "istio.io/dry-run"
SHADOW_ALLOW_PREFIX = "istio_dry_run_allow_"
SHADOW_DENY_PREFIX = "istio_dry_run_deny_"
SHADOW_PREFIX = {"ALLOW": SHADOW_ALLOW_PREFIX, "DENY": SHADOW_DENY_PREFIX}  # no prefix for LOG
BAD_CUSTOM_SUFFIX = "-bad-custom-action"  # what istiod appends when a CUSTOM provider is unusable
SPIFFE = "spiffe://"
MATCH_NEVER = {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}
ORDER = ("AUDIT", "DENY", "ALLOW")
RBAC_ACTION = {"ALLOW": "ALLOW", "DENY": "DENY", "AUDIT": "LOG", "CUSTOM": "DENY"}


# The side of a policy a field or `when` key lands on, as the keys of its OR, NOT and list there
PERMISSION = ("or_rules", "not_rule", "rules")
PRINCIPAL = ("or_ids", "not_id", "ids")


class Unsupported(ValueError):
    """A value or attribute this translation cannot express (istiod: a generator error)."""


class UnknownAttribute(ValueError):
    """A `when` key istiod does not know: the whole rule is skipped, whatever the action."""


# ---------------------------------------------------------------- which policies


def policies_for(mesh: MeshSnapshot, workload: Workload) -> list[Resource]:
    """AuthorizationPolicies selecting the workload: root namespace (selectors match in every namespace) and
    its own namespace."""
    root = mesh.config.root_namespace
    out = []
    for ns in dict.fromkeys((root, workload.namespace)):
        for pol in mesh.policies("AuthorizationPolicy", ns):
            sel = selector_labels(pol.spec)
            if sel is None or workload.matches(sel):
                out.append(pol)
    return out


def action_of(pol: Resource) -> str:
    return str(pol.spec.get("action") or "ALLOW")


def is_dry_run(pol: Resource) -> bool:
    """istiod parses the annotation with strconv.ParseBool."""
    return str(pol.annotations.get(DRY_RUN)).strip() in ("1", "t", "T", "true", "TRUE", "True")


def policy_name(ns: str, name: str, index: int) -> str:
    return f"ns[{ns}]-policy[{name}]-rule[{index}]"


# ---------------------------------------------------------------- string forms


def string_matcher(v: str, prefix: str = "") -> dict:
    """istiod matcher.StringMatcherWithPrefix."""
    if v == "*":
        return {"safe_regex": {"regex": ".+"}}
    if v.startswith("*"):
        return {"suffix": v[1:]} if not prefix else {"safe_regex": {"regex": f"{prefix}.*{v[1:]}"}}
    if v.endswith("*"):
        return {"prefix": prefix + v[:-1]}
    return {"exact": prefix + v}


def header_matcher(name: str, v: str, ignore_case: bool = False) -> dict:
    if v == "*":
        return {"name": name, "present_match": True}
    sm = string_matcher(v)
    if ignore_case:
        sm["ignore_case"] = True
    return {"name": name, "string_match": sm}


def cidr(v: str) -> dict:
    """istiod util.AddrStrToCidrRange: the address as written, its prefix length (32/128 for one address)."""
    v = v.strip()
    try:
        net = ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise Unsupported(f"invalid IP address or CIDR {v!r}") from None
    return {"address_prefix": v.split("/")[0], "prefix_len": net.prefixlen}


def port(v: str) -> int:
    try:
        p = int(str(v))
    except ValueError:
        raise Unsupported(f"invalid port {v!r}") from None
    if not 0 <= p <= 65535:
        raise Unsupported(f"port {p} out of range 0..65535")
    return p


def _principal(v: str) -> dict:
    return {"authenticated": {"principal_name": string_matcher(v, SPIFFE)}}


def _namespace(v: str) -> dict:
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": f".*/ns/{v.replace('*', '.*')}/.*"}}}}


def _service_account(policy_ns: str, v: str) -> dict:
    ns, _, sa = v.rpartition("/")
    return {"authenticated": {"principal_name": {"safe_regex": {
        "regex": f"spiffe://.+/ns/{ns or policy_ns}/(.+/|)sa/{sa}(/.+)?"}}}}


def _path(v: str) -> dict:
    if "{*}" in v or "{**}" in v:
        raise Unsupported(f"path template {v!r} (uri_template matcher) is not supported")
    return {"url_path": {"path": string_matcher(v)}}


# ---------------------------------------------------------------- JWT attributes (istiod generator.go)
# The verified payload is in dynamic metadata `envoy.filters.http.jwt_authn` under `payload` (request_authn.py).
# istiod's "extended JWT" matchers: a claim may be a string or a list, so each value matcher is
# or_match[list_match{one_of: V}, V] with V the OR of the values' string matchers.
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "payload"
MATCH_ANY = {"safe_regex": {"regex": ".+"}}


class Extended:
    """A generator that turns ALL values of a field into one principal (istiod's extendedPrincipal), and
    that only HTTP can evaluate."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, values: list[str]) -> dict:
        return self.fn(values)


def _claim_string(claim: str, sm: dict) -> dict:
    """MetadataStringMatcherForJWTClaim: payload.<claim> is this string."""
    return {"metadata": {"filter": JWT_FILTER, "path": [{"key": JWT_PAYLOAD}, {"key": claim}],
                         "value": {"string_match": sm}}}


def _claims_any(claims: list[str], values: list[str]) -> dict:
    """MetadataListValueMatcherForJWTClaims: payload.<claims...> is (or, as a list, holds) one of the values."""
    matchers = [{"string_match": string_matcher(v)} for v in values]
    # Envoy's OrMatcher needs at least two value_matchers (proto validation): one value is matched directly
    one = matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}
    return {"metadata": {"filter": JWT_FILTER, "path": [{"key": k} for k in [JWT_PAYLOAD, *claims]],
                         "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": one}}, one]}}}}


def _one_or_many(items: list[dict]) -> dict:
    return items[0] if len(items) == 1 else {"or_ids": {"ids": items}}


def _request_principals(values: list[str]) -> dict:
    """requestPrincipalGenerator: `iss/sub` split at the LAST `/` (issuers are URLs); `*` any, `*x`/`x*` forms."""
    out = []
    for value in values:
        idx = value.rfind("/")
        found = idx >= 0
        iss, sub = (value[:idx], value[idx + 1:]) if found else (value, "")
        if value == "*":
            m_iss, m_sub = MATCH_ANY, MATCH_ANY
        elif value.startswith("*"):
            if found:
                m_iss = MATCH_ANY if iss == "*" else {"suffix": iss[1:]}
                m_sub = {"exact": sub}
            else:
                m_iss, m_sub = MATCH_ANY, {"suffix": value[1:]}
        elif value.endswith("*"):
            if found:
                m_iss = {"exact": iss}
                m_sub = MATCH_ANY if sub == "*" else {"prefix": sub[:-1]}
            else:
                m_iss, m_sub = {"prefix": value[:-1]}, MATCH_ANY
        else:
            m_iss, m_sub = {"exact": iss}, {"exact": sub}
        out.append({"and_ids": {"ids": [_claim_string("iss", m_iss), _claim_string("sub", m_sub)]}})
    return _one_or_many(out)


def nested_claims(key: str) -> list[str]:
    """`request.auth.claims[a][b]` -> ["a", "b"] (istiod extractNameInNestedBrackets)."""
    rest = key[len("request.auth.claims"):]
    if not rest.startswith("[") or not rest.endswith("]") or len(rest) < 3:
        raise UnknownAttribute(f"invalid claim key {key!r}: want request.auth.claims[name] or [a][b]")
    names = rest[1:-1].split("][")
    if any(not n or "[" in n or "]" in n for n in names):
        raise UnknownAttribute(f"invalid claim key {key!r}: want request.auth.claims[name] or [a][b]")
    return names


# ---------------------------------------------------------------- rule -> policy

# (Istio field, not-field, generator) in istiod's order (model.New inserts at the front in reverse)
TO_FIELDS = (
    ("hosts", "notHosts", lambda v: {"header": header_matcher(":authority", v, ignore_case=True)}),
    ("methods", "notMethods", lambda v: {"header": header_matcher(":method", v)}),
    ("paths", "notPaths", _path),
    ("ports", "notPorts", lambda v: {"destination_port": port(v)}),
)


def _from_fields(policy_ns: str) -> tuple:
    return (
        ("principals", "notPrincipals", _principal),
        ("requestPrincipals", "notRequestPrincipals", Extended(_request_principals)),
        ("namespaces", "notNamespaces", _namespace),
        ("serviceAccounts", "notServiceAccounts", lambda v: _service_account(policy_ns, v)),
        ("remoteIpBlocks", "notRemoteIpBlocks", lambda v: {"remote_ip": cidr(v)}),
        ("ipBlocks", "notIpBlocks", lambda v: {"direct_remote_ip": cidr(v)}),
    )


def _when(key: str):
    """(side, generator) of a `when` key; side is PERMISSION or PRINCIPAL."""
    if key == "destination.ip":
        return PERMISSION, lambda v: {"destination_ip": cidr(v)}
    if key == "destination.port":
        return PERMISSION, lambda v: {"destination_port": port(v)}
    if key == "connection.sni":
        return PERMISSION, lambda v: {"requested_server_name": string_matcher(v)}
    if key == "source.ip":
        return PRINCIPAL, lambda v: {"direct_remote_ip": cidr(v)}
    if key == "remote.ip":
        return PRINCIPAL, lambda v: {"remote_ip": cidr(v)}
    if key == "source.namespace":
        return PRINCIPAL, _namespace
    if key == "source.principal":
        return PRINCIPAL, _principal
    if key.startswith("request.headers[") and key.endswith("]") and len(key) > len("request.headers[]"):
        name = key[len("request.headers["):-1]
        return PRINCIPAL, lambda v: {"header": header_matcher(name, v)}
    if key == "request.auth.principal":
        return PRINCIPAL, Extended(_request_principals)
    if key == "request.auth.audiences":
        return PRINCIPAL, Extended(lambda vs: _claims_any(["aud"], vs))
    if key == "request.auth.presenter":
        return PRINCIPAL, Extended(lambda vs: _claims_any(["azp"], vs))
    if key.startswith("request.auth.claims"):
        claims = nested_claims(key)
        return PRINCIPAL, Extended(lambda vs: _claims_any(claims, vs))
    if key.startswith("experimental.envoy.filters."):
        return PRINCIPAL, _unsupported_value(f"{key} (raw dynamic metadata)")
    raise UnknownAttribute(f"unknown attribute {key}")


def _unsupported_value(what: str):
    def gen(v: str) -> dict:
        raise Unsupported(f"{what} is not supported by this control plane")
    return gen


HTTP_ONLY_FROM = frozenset({"requestPrincipals", "notRequestPrincipals"})
HTTP_ONLY_TO = frozenset({"hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"})


def _http_only_key(key: str) -> bool:
    return key.startswith("request.headers[") or key.startswith("request.auth.")


class _RuleBuilder:
    """One rule's values -> Envoy matchers, with istiod's error handling for the action (`checkError`).
    `for_tcp`: the rule is for a network RBAC filter, where HTTP-only attributes cannot be evaluated (istiod
    generator.go: `"<key>" is HTTP only`): an ALLOW rule using one is dropped, a DENY/AUDIT rule loses it."""

    def __init__(self, action: str, problems: list[str], for_tcp: bool):
        self.action = action
        self.problems = problems
        self.for_tcp = for_tcp

    def _error(self, e: Unsupported) -> None:
        if self.action == "ALLOW":
            raise e
        self.problems.append(f"{e}; ignored in this {self.action} rule (the rule matches more)")

    def values(self, gen, values: Any) -> list[dict]:
        out = []
        for v in values or ():
            try:
                out.append(gen(str(v)))
            except Unsupported as e:
                self._error(e)
        return out

    def field(self, gen, values: Any, not_values: Any, side: tuple[str, str, str], key: str, http_only: bool) \
            -> list[dict]:
        or_key, not_key, list_key = side
        if self.for_tcp and http_only and (values or not_values):
            self._error(Unsupported(f'"{key}" is HTTP only'))
            return []
        out = []
        if isinstance(gen, Extended):  # all values -> one principal (istiod extendedPrincipal)
            if values:
                out.append(gen([str(v) for v in values]))
            if not_values:
                out.append({not_key: gen([str(v) for v in not_values])})
            return out
        pos = self.values(gen, values)
        if pos:
            out.append({or_key: {list_key: pos}})
        neg = self.values(gen, not_values)
        if neg:
            out.append({not_key: {or_key: {list_key: neg}}})
        return out


def rule_policy(rule: Mapping[str, Any] | None, policy_ns: str, action: str, problems: list[str],
                for_tcp: bool = False) -> dict:
    """One AuthorizationPolicy rule -> an envoy.config.rbac.v3.Policy dict. Raises Unsupported (ALLOW: the rule
    is dropped) or UnknownAttribute (any action: the rule is dropped)."""
    rule = rule or {}
    b = _RuleBuilder(action, problems, for_tcp)
    base_perm: list[dict] = []
    base_princ: list[dict] = []
    for cond in rule.get("when") or ():
        key = str(cond.get("key", ""))
        side, gen = _when(key)
        items = b.field(gen, cond.get("values"), cond.get("notValues"), side, key, _http_only_key(key))
        (base_perm if side is PERMISSION else base_princ).extend(items)
    principals = []
    for entry in rule.get("from") or ():
        src = entry.get("source") or {}
        ids: list[dict] = []
        for key, not_key, gen in _from_fields(policy_ns):
            ids += b.field(gen, src.get(key), src.get(not_key), PRINCIPAL, key, key in HTTP_ONLY_FROM)
        principals.append({"and_ids": {"ids": ids + base_princ or [{"any": True}]}})
    if not principals:
        principals.append({"and_ids": {"ids": base_princ or [{"any": True}]}})
    permissions = []
    for entry in rule.get("to") or ():
        op = entry.get("operation") or {}
        rules: list[dict] = []
        for key, not_key, gen in TO_FIELDS:
            rules += b.field(gen, op.get(key), op.get(not_key), PERMISSION, key, key in HTTP_ONLY_TO)
        permissions.append({"and_rules": {"rules": rules + base_perm or [{"any": True}]}})
    if not permissions:
        permissions.append({"and_rules": {"rules": base_perm or [{"any": True}]}})
    return {"permissions": permissions, "principals": principals}


# ---------------------------------------------------------------- policies -> filters


def _rbac(action: str, policies: dict) -> dict:
    out: dict = {}
    if action != "ALLOW":  # proto default, omitted as istiod's JSON does
        out["action"] = action
    if policies:
        out["policies"] = policies
    return out


def build_filters(policies: list[Resource], notes: Any = None, for_tcp: bool = False) -> list[dict]:
    """The RBAC HTTP filters for these policies, in istiod's order (AUDIT, DENY, ALLOW); `for_tcp`: the
    network RBAC filters of a TCP filter chain (HTTP-only attributes dropped, stat prefix `tcp.`)."""
    by_action: dict[str, list[tuple[Resource, str]]] = {}
    for pol in policies:
        action, suffix = action_of(pol), ""
        if action == "CUSTOM":
            provider = (pol.spec.get("provider") or {}).get("name", "")
            _note(notes, pol, "spec.action", f"CUSTOM authorization (provider {provider!r}, ext_authz) is not "
                                             "supported: its rules are enforced as DENY rules")
            action, suffix = "DENY", BAD_CUSTOM_SUFFIX
        if action not in RBAC_ACTION:
            _note(notes, pol, "spec.action", f"unknown action {action!r}: policy ignored")
            continue
        by_action.setdefault(action, []).append((pol, suffix))
    filters = []
    for action in ORDER:
        pols = by_action.get(action)
        if not pols:
            continue
        rbac_action = RBAC_ACTION[action]
        enforced: dict[str, dict] | None = None
        shadow: dict[str, dict] | None = None
        for pol, suffix in pols:
            target: dict[str, dict]
            if is_dry_run(pol):
                shadow = target = shadow if shadow is not None else {}
            else:
                enforced = target = enforced if enforced is not None else {}
            rules = pol.spec.get("rules") or []
            for i, rule in enumerate(rules):
                name = policy_name(pol.namespace, pol.name, i) + suffix
                problems: list[str] = []
                try:
                    target[name] = rule_policy(rule, pol.namespace, action, problems, for_tcp)
                except (Unsupported, UnknownAttribute) as e:
                    _note(notes, pol, f"spec.rules[{i}]", f"skipped rule {name}: {e}")
                    continue
                for p in problems:
                    _note(notes, pol, f"spec.rules[{i}]", p)
            if not rules:
                target[policy_name(pol.namespace, pol.name, 0) + suffix] = MATCH_NEVER
        typed: dict = {"@type": RBAC_NETWORK if for_tcp else RBAC_HTTP}
        if enforced is not None:
            typed["rules"] = _rbac(rbac_action, enforced)
        if shadow is not None:
            typed["shadow_rules"] = _rbac(rbac_action, shadow)
        # istiod: shadowRuleStatPrefix(shadowRules) reads the action of a possibly nil RBAC (nil -> ALLOW)
        shadow_action = rbac_action if shadow is not None else "ALLOW"
        prefix = SHADOW_PREFIX.get(shadow_action)
        if prefix:
            typed["shadow_rules_stat_prefix"] = prefix
        if for_tcp:
            typed["stat_prefix"] = TCP_STAT_PREFIX
        filters.append({"name": NETWORK_FILTER_NAME if for_tcp else FILTER_NAME, "typed_config": typed})
    return filters


def _note(notes: Any, pol: Resource, path: str, message: str) -> None:
    if notes is not None:
        notes.add(pol, path, message)


def http_filters(proxy: Any, direction: str) -> list[dict]:
    """The RBAC filters of a sidecar's inbound or a gateway's connection managers (istiod's position: before
    the other HTTP filters). Outbound traffic is never authorized by the client's sidecar."""
    if direction not in ("inbound", "gateway"):
        return []
    return build_filters(policies_for(proxy.mesh, proxy.workload), proxy.notes)


def note_no_inbound(proxy: Any) -> None:
    """A sidecar without inbound ports has nowhere to enforce: say so for every policy that applies."""
    for pol in policies_for(proxy.mesh, proxy.workload):
        proxy.notes.add(pol, "spec", "applies to this proxy, which serves no inbound port: nothing to enforce")


def network_filters(proxy: Any, port: int) -> list[dict]:
    """The network RBAC filters of an inbound TCP chain (before tcp_proxy, istiod's position). HTTP-only
    attributes cannot be evaluated there: the notes say which rules were dropped or widened."""
    notes = _PortNotes(proxy.notes, port)
    return build_filters(policies_for(proxy.mesh, proxy.workload), notes, for_tcp=True)


class _PortNotes:
    """Notes about a TCP port's translation, saying which port."""

    def __init__(self, notes: Any, port: int):
        self.notes = notes
        self.port = port

    def add(self, pol: Resource, path: str, message: str) -> None:
        self.notes.add(pol, path, f"TCP port {self.port}: {message}")
