"""`envoy.filters.http.rbac`: allow or deny a request by who sent it (principals) and what it asks (permissions).

Where it sits: first among the HTTP filters of an inbound connection manager (istiod emits one per action, in
the order AUDIT, DENY, ALLOW; each runs in chain order and the first denial answers). The decision is pure
(`pyproxy.filters.rbac_logic`); this shell gathers the request's facts (peer certificate of the mTLS
connection, addresses, SNI, headers, dynamic metadata), counts stats, records dynamic metadata and answers a
denial with Envoy's local reply: 403, body `RBAC: access denied`, details
`rbac_access_denied_matched_policy[<policy id>|none]`.

Stats (envoy common/rbac/utility.cc `generateStats`), under the connection manager's `http.<stat_prefix>.`:
`rbac.[<rules_stat_prefix>.]allowed|denied` and `rbac.[<shadow_rules_stat_prefix>.]shadow_allowed|shadow_denied`
(Istio sets `shadow_rules_stat_prefix: istio_dry_run_allow_` / `istio_dry_run_deny_`; Envoy 1.40 joins a prefix
with a `.`: `rbac.istio_dry_run_deny_.shadow_denied`, checked against Envoy).
Dynamic metadata `envoy.filters.http.rbac`: `<prefix>shadow_engine_result` (`allowed`/`denied`),
`<prefix>shadow_effective_policy_id`, `<prefix>enforced_engine_result`, `<prefix>enforced_effective_policy_id`;
a LOG engine sets `envoy.common` `access_log_hint`.
Not implemented: per-route `RBACPerRoute`, `matcher`/`shadow_matcher` trees, `track_per_rule_stats` counters.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config.model import RBAC
from ..http.local_reply import LocalReply
from .base import FilterFactory, FilterStatus, HttpFilter
from .rbac_logic import PeerCertificate, RbacPolicySet, RbacRequest, stat_prefix_join

if TYPE_CHECKING:  # pragma: no cover
    from ..http.connection import ActiveStream

NAME = "envoy.filters.http.rbac"
DENIED_BODY = "RBAC: access denied"


def split_address(address: str | None) -> tuple[str, int]:
    """"ip:port" / "[v6]:port" -> (ip, port); ("", 0) when unknown."""
    if not address or address == "-":
        return "", 0
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return address, 0


def remote_ip(headers: Any, direct_ip: str, xff_trusted_hops: int = 0) -> str:
    """Envoy's downstream remote address for a connection manager: the x-forwarded-for entry `trusted hops`
    from the right when there is one, else the connection's peer."""
    xff = headers.get("x-forwarded-for")
    if xff:
        hops = [h.strip() for h in xff.split(",") if h.strip()]
        if len(hops) > xff_trusted_hops:
            return hops[len(hops) - 1 - xff_trusted_hops]
    return direct_ip


def request_facts(stream: "ActiveStream") -> RbacRequest:
    info = stream.info
    tls = info.downstream_tls
    peer = None
    if tls is not None and tls.peer_presented:
        peer = PeerCertificate(tls.peer_uri_sans, tls.peer_dns_sans, tls.peer_subject)
    direct = stream.conn.remote_ip if stream.conn.remote_ip != "-" else ""
    local_ip, local_port = split_address(info.downstream_local_address)
    cfg = stream.hcm.config
    return RbacRequest(
        method=stream.method, path=stream.path, authority=info.authority or "", headers=stream.headers,
        scheme=info.scheme or "http", peer=peer, source_ip=direct, direct_remote_ip=direct,
        remote_ip=remote_ip(stream.headers, direct, cfg.xff_num_trusted_hops),
        destination_ip=local_ip, destination_port=local_port,
        requested_server_name=info.requested_server_name or (tls.server_name if tls is not None else ""),
        metadata=info.dynamic_metadata or {})


class RbacFilterConfig:
    """Parsed once per snapshot: the compiled engines and the counters."""

    def __init__(self, cfg: RBAC, stats: Any):
        self.cfg = cfg
        self.policies = RbacPolicySet(cfg)
        self.rules_prefix = cfg.rules_stat_prefix
        self.shadow_prefix = cfg.shadow_rules_stat_prefix
        st = stats.scope("rbac.")
        rules, shadow = stat_prefix_join(self.rules_prefix), stat_prefix_join(self.shadow_prefix)
        self.allowed = st.counter(f"{rules}allowed")
        self.denied = st.counter(f"{rules}denied")
        self.shadow_allowed = st.counter(f"{shadow}shadow_allowed")
        self.shadow_denied = st.counter(f"{shadow}shadow_denied")

    def __repr__(self) -> str:
        return f"RbacFilterConfig(rules={self.policies.engine!r}, shadow={self.policies.shadow_engine!r})"


class RbacFilter(HttpFilter):
    __slots__ = ("config",)

    def __init__(self, config: RbacFilterConfig):
        self.config = config

    def decode_headers(self, stream: "ActiveStream") -> FilterStatus:
        config = self.config
        d = config.policies.decide(request_facts(stream))
        meta: dict[str, Any] = {}
        if d.shadow_allowed is not None:
            (config.shadow_allowed if d.shadow_allowed else config.shadow_denied).inc()
            if d.shadow_policy_id:
                meta[f"{config.shadow_prefix}shadow_effective_policy_id"] = d.shadow_policy_id
            meta[f"{config.shadow_prefix}shadow_engine_result"] = "allowed" if d.shadow_allowed else "denied"
        if config.policies.engine is not None:
            if d.policy_id:
                meta[f"{config.rules_prefix}enforced_effective_policy_id"] = d.policy_id
            meta[f"{config.rules_prefix}enforced_engine_result"] = "allowed" if d.allowed else "denied"
            if d.log is not None:
                stream.info.set_dynamic_metadata("envoy.common", {"access_log_hint": d.log})
        if meta:
            stream.info.set_dynamic_metadata(NAME, meta)
        if config.policies.engine is None:
            return FilterStatus.CONTINUE
        if d.allowed:
            config.allowed.inc()
            return FilterStatus.CONTINUE
        config.denied.inc()
        stream.send_local_reply(LocalReply(403, DENIED_BODY, d.details))
        return FilterStatus.STOP


def build_factory(typed_config: Any, stats: Any, rng: Any) -> FilterFactory:
    config = RbacFilterConfig(typed_config if typed_config is not None else RBAC(), stats)
    return lambda: RbacFilter(config)
