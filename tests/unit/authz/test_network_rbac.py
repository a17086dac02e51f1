"""envoy.filters.network.rbac's shell without sockets: connection facts -> the engines -> Envoy's stat names.
The names were read from Envoy 1.40's /stats with the same config (`tcp.rbac.denied`,
`tcp.rbac.istio_dry_run_allow_.shadow_denied`; HTTP: `rbac.istio_dry_run_deny_.shadow_denied`)."""
from __future__ import annotations

from types import SimpleNamespace

from pyproxy.config.decode import decode
from pyproxy.config.model import RBAC, NetworkRBAC
from pyproxy.filters.rbac import RbacFilterConfig
from pyproxy.filters.rbac_logic import PeerCertificate
from pyproxy.observe.stats import Stats
from pyproxy.tcp.rbac import NetworkRbacConfig, connection_facts, first_denial

ALLOW_API = {"action": "ALLOW", "policies": {"api": {
    "permissions": [{"destination_port": 5432}],
    "principals": [{"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/default/sa/api"}}}]}}}
DENY_ALL = {"action": "DENY", "policies": {"all": {"permissions": [{"any": True}], "principals": [{"any": True}]}}}


def _tls(uri: str | None):
    if uri is None:
        return None
    return SimpleNamespace(peer_presented=True, peer_uri_sans=(uri,), peer_dns_sans=(), peer_subject="",
                           server_name="db")


def _info(port: int = 5432):
    return SimpleNamespace(downstream_remote_address="10.0.0.7:41000",
                           downstream_local_address=f"10.0.0.9:{port}", requested_server_name=None)


def _counters(stats: Stats) -> dict[str, int]:
    return {c.name: c.value for c in stats.counters() if c.value}


def test_network_rbac_decides_on_peer_and_port_with_envoys_stat_names():
    stats = Stats()
    cfg = NetworkRbacConfig(decode(NetworkRBAC, {"rules": ALLOW_API, "shadow_rules": DENY_ALL, "stat_prefix": "tcp.",
                                                 "shadow_rules_stat_prefix": "istio_dry_run_allow_"}), stats)
    rows = [("spiffe://cluster.local/ns/default/sa/api", 5432, True),
            ("spiffe://cluster.local/ns/default/sa/web", 5432, False),
            ("spiffe://cluster.local/ns/default/sa/api", 6379, False),
            (None, 5432, False)]
    for uri, port, allowed in rows:
        denial = first_denial((cfg,), connection_facts(_info(port), _tls(uri)))
        assert (denial is None) == allowed
        if denial is not None:
            assert denial.details == "rbac_access_denied_matched_policy[none]"
    assert _counters(stats) == {"tcp.rbac.allowed": 1, "tcp.rbac.denied": 3,
                                "tcp.rbac.istio_dry_run_allow_.shadow_denied": 4}


def test_http_rbac_shadow_stats_are_joined_with_a_dot():
    stats = Stats()
    RbacFilterConfig(decode(RBAC, {"shadow_rules": DENY_ALL, "shadow_rules_stat_prefix": "istio_dry_run_deny_"}),
                     stats.scope("http.x."))
    names = {c.name for c in stats.counters()}
    assert {"http.x.rbac.istio_dry_run_deny_.shadow_denied", "http.x.rbac.allowed"} <= names


def test_only_shadow_rules_count_shadow_stats_and_no_enforcement_stats():
    stats = Stats()
    cfg = NetworkRbacConfig(decode(NetworkRBAC, {"shadow_rules": DENY_ALL, "stat_prefix": "tcp."}), stats)
    assert first_denial((cfg,), connection_facts(_info(), None)) is None  # shadow rules never deny
    assert _counters(stats) == {"tcp.rbac.shadow_denied": 1}
    assert repr(cfg) == "NetworkRbacConfig(None, shadow=RbacEngine(DENY, policies=['all']))"


def test_no_rules_at_all_allow_and_count_nothing():
    stats = Stats()
    cfg = NetworkRbacConfig(decode(NetworkRBAC, {"stat_prefix": "tcp."}), stats)
    assert first_denial((cfg,), connection_facts(_info(), _tls("spiffe://x"))) is None
    assert _counters(stats) == {}


def _facts(req) -> dict:
    keep = ("method", "path", "peer", "source_ip", "direct_remote_ip", "remote_ip", "destination_ip",
            "destination_port", "requested_server_name")
    return {k: getattr(req, k) for k in keep}


def test_connection_facts_carry_addresses_peer_and_sni_but_no_request_line():
    """A TCP connection has no method or path; every address field is the connection's own peer (no XFF on TCP);
    the SNI is the listener's requested_server_name, else the TLS handshake's, else empty."""
    tls = SimpleNamespace(peer_presented=True, peer_uri_sans=("spiffe://a",), peer_dns_sans=("a.example",),
                          peer_subject="CN=a", server_name="tls-sni")
    info = SimpleNamespace(downstream_remote_address="[fd00::7]:41000", downstream_local_address="10.0.0.9:5432",
                           requested_server_name=None)
    assert _facts(connection_facts(info, tls)) == {
        "method": "", "path": "", "peer": PeerCertificate(("spiffe://a",), ("a.example",), "CN=a"),
        "source_ip": "fd00::7", "direct_remote_ip": "fd00::7", "remote_ip": "fd00::7",
        "destination_ip": "10.0.0.9", "destination_port": 5432, "requested_server_name": "tls-sni"}
    sni_rows = [("listener-sni", tls, "listener-sni"), (None, tls, "tls-sni"), (None, None, ""),
                (None, SimpleNamespace(peer_presented=False, server_name=None), "")]
    for listener_sni, conn_tls, want in sni_rows:
        info = SimpleNamespace(downstream_remote_address="10.0.0.7:41000",
                               downstream_local_address="10.0.0.9:5432", requested_server_name=listener_sni)
        facts = connection_facts(info, conn_tls)
        assert facts.requested_server_name == want, (listener_sni, conn_tls)
        assert facts.peer is None or conn_tls is tls


def test_shadow_rules_that_allow_count_shadow_allowed():
    stats = Stats()
    cfg = NetworkRbacConfig(decode(NetworkRBAC, {"rules": DENY_ALL, "shadow_rules": ALLOW_API, "stat_prefix": "tcp.",
                                                 "shadow_rules_stat_prefix": "istio_dry_run_allow_"}), stats)
    denial = first_denial((cfg,), connection_facts(_info(5432), _tls("spiffe://cluster.local/ns/default/sa/api")))
    assert denial is not None and denial.details == "rbac_access_denied_matched_policy[all]"
    assert _counters(stats) == {"tcp.rbac.denied": 1, "tcp.rbac.istio_dry_run_allow_.shadow_allowed": 1}
