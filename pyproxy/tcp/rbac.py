"""`envoy.filters.network.rbac`: allow or close a TCP connection by who it comes from and where it goes.

Where it sits: before `envoy.filters.network.tcp_proxy` on a chain (istiod puts it on inbound TCP chains). The
engines are the HTTP filter's (pyproxy.filters.rbac_logic) fed with the connection's facts only: the mTLS
peer certificate, source and destination addresses, SNI; no headers, paths or JWT metadata, which is why
istiod drops those attributes for TCP. Denied: the connection is closed before anything is proxied, with
termination details `rbac_access_denied_matched_policy[<id>|none]`.

Stats (envoy network/rbac `generateStats(stat_prefix)`, `statPrefixJoin(stat_prefix, "rbac.")`):
`<stat_prefix>rbac.allowed|denied`, `<stat_prefix>rbac.<shadow_rules_stat_prefix>.shadow_allowed|shadow_denied`
(Istio's stat_prefix is `tcp.`: `tcp.rbac.denied`, `tcp.rbac.istio_dry_run_allow_.shadow_denied`; both checked
against Envoy 1.40).
Deviation: Envoy's default enforcement (`ONE_TIME_ON_FIRST_BYTE`) decides when the first bytes arrive; the
facts it reads are all known when the connection is accepted, so pyproxy decides then, before connecting
upstream (a denied client sees the close without sending anything). `CONTINUOUS` behaves the same.
"""
from __future__ import annotations

from typing import Any

from ..config.model import NetworkRBAC
from ..filters.rbac import split_address
from ..filters.rbac_logic import PeerCertificate, RbacDecision, RbacPolicySet, RbacRequest, stat_prefix_join

NAME = "envoy.filters.network.rbac"


def connection_facts(info: Any, tls: Any) -> RbacRequest:
    """What the network filter knows: addresses, SNI and the peer certificate of an mTLS connection."""
    peer = None
    if tls is not None and tls.peer_presented:
        peer = PeerCertificate(tls.peer_uri_sans, tls.peer_dns_sans, tls.peer_subject)
    source_ip, _ = split_address(info.downstream_remote_address)
    local_ip, local_port = split_address(info.downstream_local_address)
    return RbacRequest(method="", path="", peer=peer, source_ip=source_ip, direct_remote_ip=source_ip,
                       remote_ip=source_ip, destination_ip=local_ip, destination_port=local_port,
                       requested_server_name=info.requested_server_name or (tls.server_name if tls else "") or "")


class NetworkRbacConfig:
    """Parsed once per snapshot: the compiled engines and the counters."""

    def __init__(self, cfg: NetworkRBAC, stats: Any):
        self.policies = RbacPolicySet(cfg)  # type: ignore[arg-type]  # same rules / shadow_rules fields
        st = stats.scope(f"{stat_prefix_join(cfg.stat_prefix)}rbac.")
        self.allowed = st.counter("allowed")
        self.denied = st.counter("denied")
        shadow = stat_prefix_join(cfg.shadow_rules_stat_prefix)
        self.shadow_allowed = st.counter(f"{shadow}shadow_allowed")
        self.shadow_denied = st.counter(f"{shadow}shadow_denied")

    def decide(self, facts: RbacRequest) -> RbacDecision:
        d = self.policies.decide(facts)
        if d.shadow_allowed is not None:
            (self.shadow_allowed if d.shadow_allowed else self.shadow_denied).inc()
        if self.policies.engine is not None:
            (self.allowed if d.allowed else self.denied).inc()
        return d

    def __repr__(self) -> str:
        return f"NetworkRbacConfig({self.policies.engine!r}, shadow={self.policies.shadow_engine!r})"


def first_denial(configs: tuple[NetworkRbacConfig, ...], facts: RbacRequest) -> RbacDecision | None:
    """The chain's network RBAC filters in order: the first that denies, or None."""
    for cfg in configs:
        d = cfg.decide(facts)
        if not d.allowed:
            return d
    return None
