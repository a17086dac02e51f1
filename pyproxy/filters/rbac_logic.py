"""Envoy's RBAC engine as pure functions: the facts of one request in, allowed / denied / logged out.

Where it sits: `envoy.filters.http.rbac` (pyproxy.filters.rbac) builds an `RbacRequest` from the stream (the
peer certificate of the mTLS connection, addresses, SNI, headers, dynamic metadata) and asks the compiled
engines of its config. Nothing here does I/O; the config is compiled once per snapshot.

Semantics (envoy source/extensions/filters/common/rbac/{engine_impl,matchers}.cc, config/rbac/v3/rbac.proto):

* A policy matches when ANY of its permissions and ANY of its principals match. Policies are tried in name
  order (Envoy keeps them in a sorted map); the first match is the effective policy id.
* Action ALLOW: allowed iff some policy matched. DENY: allowed iff none matched. LOG: always allowed; a match
  sets the access-log hint (`envoy.common` / `access_log_hint`).
* `authenticated`: false without a TLS peer certificate; with no `principal_name`, any certificate; otherwise
  each URI SAN, then each DNS SAN, then the subject are tried.
* `source_ip` is the connection's peer, `direct_remote_ip` the direct peer, `remote_ip` the client address the
  connection manager derived (x-forwarded-for); `destination_ip` / `destination_port` the local address.
* `url_path` matches the path without query and fragment; `header` uses the route table's HeaderMatcher
  (pseudo headers `:method`, `:authority`, `:path` from the request line).
* `metadata` reads dynamic metadata (string / present / bool / list / or value matchers): istiod's
  `requestPrincipals` and `request.auth.*` read the verified JWT payload `jwt_authn` left there.
* Response details of a denial: `rbac_access_denied_matched_policy[<id>]` (`none` when an ALLOW list matched
  nothing), whitespace in the id replaced by `_` (envoy common/rbac/utility.cc `responseDetail`).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..config import model
from ..http.headers import Headers
from ..routing.table import (RequestView, compile_header_matcher, compile_metadata_matcher, compile_string_matcher,
                             strip_query)

__all__ = ["EngineResult", "PeerCertificate", "RbacDecision", "RbacEngine", "RbacPolicySet", "RbacRequest",
           "response_detail", "stat_prefix_join"]


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What Envoy's `Ssl::ConnectionInfo` offers RBAC about the downstream peer's certificate."""

    uri_sans: tuple[str, ...] = ()
    dns_sans: tuple[str, ...] = ()
    subject: str = ""


@dataclass(frozen=True, slots=True)
class RbacRequest:
    """The facts RBAC reads about one request. `peer` is None on a plaintext connection (or no client cert)."""

    method: str = "GET"
    path: str = "/"  # :path as received (after the connection manager's normalisation), query included
    authority: str = ""
    headers: Headers = field(default_factory=Headers)
    scheme: str = "http"
    peer: PeerCertificate | None = None
    source_ip: str = ""  # connection peer
    direct_remote_ip: str = ""
    remote_ip: str = ""  # x-forwarded-for derived, else the direct peer
    destination_ip: str = ""
    destination_port: int = 0
    requested_server_name: str = ""
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def view(self) -> RequestView:
        return RequestView(self.headers, self.authority, self.path, self.method, self.scheme)


Predicate = Callable[[RbacRequest, RequestView], bool]


def _ip(text: str) -> Any:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _cidr(c: model.CidrRange) -> Callable[[str], bool]:
    network = ipaddress.ip_network(f"{c.address_prefix}/{c.prefix_len or 0}", strict=False)

    def inside(ip_text: str) -> bool:
        ip = _ip(ip_text)
        return ip is not None and ip.version == network.version and ip in network

    return inside


def _path(m: model.PathMatcher) -> Predicate:
    pred = compile_string_matcher(m.path)
    return lambda req, view: pred(strip_query(req.path))


def _metadata(m: model.MetadataMatcher) -> Predicate:
    check = compile_metadata_matcher(m)
    return lambda req, view: check(req.metadata)


def _combine(preds: tuple[Predicate, ...], decisive: bool) -> Predicate:
    """AND (`decisive` False: the first false operand decides) or OR (True). One or two operands get a direct
    closure: istiod nests and/or sets of one element a lot, and a generator per level cost more than the
    matchers themselves (benchmarks/authz_bench.py). An empty AND matches, an empty OR does not (Envoy)."""
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        if decisive:
            return lambda req, view: a(req, view) or b(req, view)
        return lambda req, view: a(req, view) and b(req, view)

    def combined(req: RbacRequest, view: RequestView) -> bool:
        for p in preds:
            if bool(p(req, view)) is decisive:
                return decisive
        return not decisive

    return combined


def _all_of(preds: tuple[Predicate, ...]) -> Predicate:
    return _combine(preds, False)


def _any_of(preds: tuple[Predicate, ...]) -> Predicate:
    return _combine(preds, True)


def _negate(pred: Predicate) -> Predicate:
    return lambda req, view: not pred(req, view)


def _common(p: model.Permission | model.Principal) -> Predicate | None:
    """The kinds Permission and Principal share: any, header, url_path, metadata."""
    if p.any is not None:
        return lambda req, view: True
    if p.header is not None:
        hm = compile_header_matcher(p.header)
        return lambda req, view: hm(view)
    if p.url_path is not None:
        return _path(p.url_path)
    if p.metadata is not None:
        return _metadata(p.metadata)
    return None


def compile_permission(p: model.Permission) -> Predicate:
    """A Permission -> a predicate (Envoy `Matcher::create(Permission)`)."""
    if p.and_rules is not None:
        return _all_of(tuple(compile_permission(r) for r in p.and_rules.rules))
    if p.or_rules is not None:
        return _any_of(tuple(compile_permission(r) for r in p.or_rules.rules))
    if p.not_rule is not None:
        return _negate(compile_permission(p.not_rule))
    common = _common(p)
    if common is not None:
        return common
    if p.destination_ip is not None:
        inside = _cidr(p.destination_ip)
        return lambda req, view: inside(req.destination_ip)
    if p.destination_port is not None:
        port = p.destination_port
        return lambda req, view: req.destination_port == port
    if p.destination_port_range is not None:
        lo, hi = p.destination_port_range.start, p.destination_port_range.end
        return lambda req, view: lo <= req.destination_port < hi
    if p.requested_server_name is not None:
        sni = compile_string_matcher(p.requested_server_name)
        return lambda req, view: sni(req.requested_server_name)
    raise ValueError("Permission needs one rule")  # the decoder enforces the oneof; code-built configs


def _authenticated(a: model.Authenticated) -> Predicate:
    if a.principal_name is None:
        return lambda req, view: req.peer is not None
    pred = compile_string_matcher(a.principal_name)

    def check(req: RbacRequest, view: RequestView) -> bool:
        peer = req.peer
        if peer is None:
            return False
        return any(pred(u) for u in peer.uri_sans) or any(pred(d) for d in peer.dns_sans) or pred(peer.subject)

    return check


def compile_principal(p: model.Principal) -> Predicate:
    """A Principal -> a predicate (Envoy `Matcher::create(Principal)`)."""
    if p.and_ids is not None:
        return _all_of(tuple(compile_principal(i) for i in p.and_ids.ids))
    if p.or_ids is not None:
        return _any_of(tuple(compile_principal(i) for i in p.or_ids.ids))
    if p.not_id is not None:
        return _negate(compile_principal(p.not_id))
    common = _common(p)
    if common is not None:
        return common
    if p.authenticated is not None:
        return _authenticated(p.authenticated)
    if p.source_ip is not None:
        inside = _cidr(p.source_ip)
        return lambda req, view: inside(req.source_ip)
    if p.direct_remote_ip is not None:
        inside = _cidr(p.direct_remote_ip)
        return lambda req, view: inside(req.direct_remote_ip)
    if p.remote_ip is not None:
        inside = _cidr(p.remote_ip)
        return lambda req, view: inside(req.remote_ip)
    raise ValueError("Principal needs one identifier")


@dataclass(frozen=True, slots=True)
class EngineResult:
    allowed: bool
    policy_id: str | None  # the effective (first matching, by name) policy
    log: bool | None = None  # LOG action: whether to log (the access_log_hint)


class RbacEngine:
    """One compiled `envoy.config.rbac.v3.RBAC` (Envoy `RoleBasedAccessControlEngineImpl`)."""

    __slots__ = ("action", "policies")

    def __init__(self, rules: model.RBACRules):
        self.action = rules.action
        self.policies: tuple[tuple[str, Predicate, Predicate], ...] = tuple(
            (name, _any_of(tuple(compile_permission(p) for p in pol.permissions)),
             _any_of(tuple(compile_principal(p) for p in pol.principals)))
            for name, pol in sorted((rules.policies or {}).items()))

    def matched_policy(self, req: RbacRequest, view: RequestView) -> str | None:
        """`view` is `req.view()`, built once per request by the caller for every engine it asks."""
        for name, permissions, principals in self.policies:
            if permissions(req, view) and principals(req, view):
                return name
        return None

    def evaluate(self, req: RbacRequest, view: RequestView) -> EngineResult:
        name = self.matched_policy(req, view)
        if self.action == "ALLOW":
            return EngineResult(name is not None, name)
        if self.action == "DENY":
            return EngineResult(name is None, name)
        return EngineResult(True, name, log=name is not None)

    def __repr__(self) -> str:
        return f"RbacEngine({self.action}, policies={[n for n, _, _ in self.policies]})"


@dataclass(frozen=True, slots=True)
class RbacDecision:
    """What one RBAC filter decided for one request."""

    allowed: bool
    policy_id: str | None = None  # enforced engine's effective policy
    shadow_allowed: bool | None = None  # None: no shadow rules
    shadow_policy_id: str | None = None
    log: bool | None = None  # LOG action's decision (None: not a LOG engine)

    @property
    def details(self) -> str:
        return response_detail(self.policy_id or "none")


class RbacPolicySet:
    """The compiled `envoy.extensions.filters.http.rbac.v3.RBAC`: enforced and shadow engines."""

    __slots__ = ("engine", "shadow_engine")

    def __init__(self, cfg: model.RBAC):
        self.engine = RbacEngine(cfg.rules) if cfg.rules is not None else None
        self.shadow_engine = RbacEngine(cfg.shadow_rules) if cfg.shadow_rules is not None else None

    def decide(self, req: RbacRequest) -> RbacDecision:
        view = req.view()
        shadow_allowed = shadow_id = None
        if self.shadow_engine is not None:
            s = self.shadow_engine.evaluate(req, view)
            shadow_allowed, shadow_id = s.allowed, s.policy_id
        if self.engine is None:  # no enforced rules: allowed by default
            return RbacDecision(True, None, shadow_allowed, shadow_id)
        r = self.engine.evaluate(req, view)
        return RbacDecision(r.allowed, r.policy_id, shadow_allowed, shadow_id, r.log)


def stat_prefix_join(prefix: str) -> str:
    """Envoy statPrefixJoin for a `rules_stat_prefix` / `shadow_rules_stat_prefix`: a non-empty prefix is
    followed by a `.` (Envoy 1.40: `http.<hcm>.rbac.istio_dry_run_deny_.shadow_denied`, `tcp.rbac.denied`)."""
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


def response_detail(policy_id: str) -> str:
    """Envoy `RBAC::responseDetail`: whitespace in the id becomes `_`."""
    return "rbac_access_denied_matched_policy[" + "".join("_" if c.isspace() else c for c in policy_id) + "]"


def evaluate_chain(configs: list[RbacPolicySet] | tuple[RbacPolicySet, ...], req: RbacRequest) \
        -> tuple[bool, int | None, RbacDecision | None]:
    """Several RBAC filters in chain order (Istio: AUDIT, DENY, ALLOW): the first denial stops the request.
    Returns (allowed, index of the denying filter, its decision)."""
    for i, cfg in enumerate(configs):
        d = cfg.decide(req)
        if not d.allowed:
            return False, i, d
    return True, None, None
