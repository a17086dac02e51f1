"""Filter-chain selection (pyproxy.listener.chain_match): Envoy's order of criteria, most specific wins, no
backtracking, default_filter_chain, and the configs Envoy refuses. Pure: chains and facts in, a chain out."""
from __future__ import annotations

import pytest

from pyproxy.config.decode import decode
from pyproxy.config.model import FilterChain
from pyproxy.listener.chain_match import ChainMatchError, ChainSelector, ConnectionFacts, select_chain


def chain(name, **match):
    return decode(FilterChain, {"name": name, "filter_chain_match": match} if match else {"name": name})


def facts(**kw):
    base = dict(destination_port=15006, destination_ip="10.0.0.1", source_ip="10.0.0.9", source_port=40000)
    base.update(kw)
    return ConnectionFacts(**base)


ISTIO_INBOUND = [  # the PERMISSIVE inbound chains of security_telemetry.md §2.3
    chain("mtls-http", transport_protocol="tls", application_protocols=["istio-http/1.0", "istio-http/1.1", "istio-h2"]),
    chain("plain-http", transport_protocol="raw_buffer", application_protocols=["http/1.0", "http/1.1", "h2c"]),
    chain("mtls-tcp", transport_protocol="tls", application_protocols=["istio-peer-exchange", "istio"]),
    chain("plain-tcp", transport_protocol="raw_buffer"),
    chain("passthrough-tls", transport_protocol="tls"),
]

CASES = [
    # (description, chains, facts, expected chain name or None)
    ("an istio sidecar's HTTP mTLS", ISTIO_INBOUND, facts(transport_protocol="tls", application_protocols=("istio-http/1.1",)), "mtls-http"),
    ("plaintext HTTP seen by http_inspector", ISTIO_INBOUND, facts(application_protocols=("http/1.1",)), "plain-http"),
    ("an istio sidecar's TCP mTLS", ISTIO_INBOUND, facts(transport_protocol="tls", application_protocols=("istio-peer-exchange", "istio")), "mtls-tcp"),
    ("plaintext that is not HTTP", ISTIO_INBOUND, facts(), "plain-tcp"),
    ("an app's own TLS, no istio ALPN", ISTIO_INBOUND, facts(transport_protocol="tls", application_protocols=("h2",)), "passthrough-tls"),
    ("exact port beats any port", [chain("any"), chain("p", destination_port=15006)], facts(), "p"),
    ("other port falls to the portless chain", [chain("any"), chain("p", destination_port=80)], facts(), "any"),
    ("exact SNI beats a wildcard", [chain("w", server_names=["*.example.com"]), chain("e", server_names=["a.example.com"])], facts(server_name="a.example.com"), "e"),
    ("longer wildcard wins", [chain("w", server_names=["*.com"]), chain("ww", server_names=["*.example.com"])], facts(server_name="a.example.com"), "ww"),
    ("wildcard does not match the bare domain", [chain("w", server_names=["*.example.com"])], facts(server_name="example.com"), None),
    ("no SNI: only chains without server_names", [chain("s", server_names=["a.example.com"]), chain("none")], facts(), "none"),
    ("SNI is case-insensitive", [chain("s", server_names=["A.Example.com"])], facts(server_name="a.example.COM"), "s"),
    ("longest destination prefix wins", [chain("8", prefix_ranges=[{"address_prefix": "10.0.0.0", "prefix_len": 8}]), chain("24", prefix_ranges=[{"address_prefix": "10.0.0.0", "prefix_len": 24}])], facts(), "24"),
    ("source range narrows", [chain("lan", source_prefix_ranges=[{"address_prefix": "10.0.0.0", "prefix_len": 24}]), chain("any")], facts(), "lan"),
    ("source range miss falls back within the level", [chain("lan", source_prefix_ranges=[{"address_prefix": "192.168.0.0", "prefix_len": 16}]), chain("any")], facts(), "any"),
    ("loopback source is SAME_IP_OR_LOOPBACK", [chain("local", source_type="SAME_IP_OR_LOOPBACK"), chain("ext", source_type="EXTERNAL")], facts(source_ip="127.0.0.1"), "local"),
    ("source port", [chain("p", source_ports=[40000]), chain("any")], facts(), "p"),
    ("the first offered ALPN wins, whatever the chain order", [chain("h11", application_protocols=["http/1.1"]), chain("h2", application_protocols=["h2"])], facts(application_protocols=("h2", "http/1.1")), "h2"),
    ("a matching ALPN beats no ALPN criterion", [chain("none"), chain("h11", application_protocols=["http/1.1"])], facts(application_protocols=("h2", "http/1.1")), "h11"),
    ("direct source range reads the peer, not the PROXY-protocol source", [chain("d", direct_source_prefix_ranges=[{"address_prefix": "10.0.0.0", "prefix_len": 24}]), chain("any")], facts(direct_source_ip="10.0.0.7", source_ip="192.168.1.1"), "d"),
    ("direct source range miss", [chain("d", direct_source_prefix_ranges=[{"address_prefix": "192.168.0.0", "prefix_len": 16}]), chain("any")], facts(direct_source_ip="10.0.0.7"), "any"),
    ("without a direct source the source is the peer", [chain("d", direct_source_prefix_ranges=[{"address_prefix": "10.0.0.0", "prefix_len": 24}])], facts(), "d"),
    ("an external source picks EXTERNAL over ANY", [chain("any"), chain("ext", source_type="EXTERNAL")], facts(), "ext"),
    ("an external source is not SAME_IP_OR_LOOPBACK", [chain("local", source_type="SAME_IP_OR_LOOPBACK"), chain("ext", source_type="EXTERNAL")], facts(), "ext"),
    ("SAME_IP_OR_LOOPBACK only: an external source finds no chain", [chain("local", source_type="SAME_IP_OR_LOOPBACK")], facts(), None),
    ("an external source falls to ANY", [chain("local", source_type="SAME_IP_OR_LOOPBACK"), chain("any")], facts(), "any"),
    ("source equal to the destination is local (the direct peer does not count)", [chain("ext", source_type="EXTERNAL"), chain("local", source_type="SAME_IP_OR_LOOPBACK")], facts(source_ip="10.0.0.1", direct_source_ip="10.0.0.2"), "local"),
    ("a listed source port beats no source_ports", [chain("any"), chain("p", source_ports=[40000])], facts(), "p"),
    ("an unlisted source port is out", [chain("p", source_ports=[1]), chain("any")], facts(), "any"),
    ("a destination range reads the destination, not the source", [chain("24", prefix_ranges=[{"address_prefix": "10.0.0.0", "prefix_len": 24}]), chain("any")], facts(source_ip="192.168.1.1"), "24"),
    # checked against Envoy 1.40: a /0 source range beats a chain without one, in either order
    ("a /0 source range beats no source range", [chain("none"), chain("slash0", source_prefix_ranges=[{"address_prefix": "0.0.0.0", "prefix_len": 0}])], facts(), "slash0"),
    ("a /0 direct source range beats none", [chain("slash0", direct_source_prefix_ranges=[{"address_prefix": "0.0.0.0", "prefix_len": 0}]), chain("none")], facts(), "slash0"),
    ("a transport_protocol match beats no transport_protocol", [chain("none"), chain("raw", transport_protocol="raw_buffer")], facts(), "raw"),
    ("even the shortest wildcard beats no server_names", [chain("none"), chain("w", server_names=["*."])], facts(server_name="a."), "w"),
    ("a wildcard needs the name to end with its suffix", [chain("w", server_names=["*.example.com"])], facts(server_name="a-much-longer-name.other.org"), None),
    ("a wildcard does not match its bare suffix", [chain("w", server_names=["*.example.com"])], facts(server_name=".example.com"), None),
    ("a range without prefix_len is the one address", [chain("one", prefix_ranges=[{"address_prefix": "10.0.0.1"}]), chain("any")], facts(), "one"),
    ("a range without prefix_len excludes its neighbours", [chain("one", prefix_ranges=[{"address_prefix": "10.0.0.2"}]), chain("any")], facts(), "any"),
    ("host bits in a range are ignored, as Envoy's CidrRange truncates them", [chain("24", prefix_ranges=[{"address_prefix": "10.0.0.77", "prefix_len": 24}]), chain("any")], facts(), "24"),
    # no backtracking: the exact-port chain wins level 1, then fails transport_protocol -> no chain at all
    ("no backtracking to a less specific level", [chain("p-tls", destination_port=15006, transport_protocol="tls"), chain("any")], facts(), None),
]


@pytest.mark.parametrize("desc, chains, f, expected", CASES, ids=[c[0] for c in CASES])
def test_selection(desc, chains, f, expected):
    got = ChainSelector(chains).select(f)
    assert (got.name if got else None) == expected


def test_no_match_uses_the_default_filter_chain():
    default = chain("default")
    assert ChainSelector([chain("tls", transport_protocol="tls")], default).select(facts()) is default


def test_one_shot_select_chain():
    default = chain("default")
    assert select_chain(ISTIO_INBOUND, facts(application_protocols=("http/1.1",))).name == "plain-http"
    assert select_chain([chain("tls", transport_protocol="tls")], facts(), default) is default


def test_identical_matches_are_refused_like_envoy():
    with pytest.raises(ChainMatchError, match="multiple filter chains with the same matching rules"):
        ChainSelector([chain("a", transport_protocol="tls"), chain("b", transport_protocol="tls")], listener="l")


def test_partial_wildcards_are_refused():
    with pytest.raises(ChainMatchError, match="partial wildcards"):
        ChainSelector([chain("a", server_names=["*foo.com"])])


def test_identical_matches_name_both_chains():
    with pytest.raises(ChainMatchError) as e:
        ChainSelector([chain("a", transport_protocol="tls"), chain("b"), chain("c", transport_protocol="tls")])
    assert str(e.value) == ("listener '': multiple filter chains with the same matching rules are defined "
                            "(filter_chains[0] and [2])")


@pytest.mark.parametrize("field", ["prefix_ranges", "direct_source_prefix_ranges", "source_prefix_ranges"])
def test_a_bad_cidr_names_the_listener_chain_and_field(field):
    bad = chain("a", **{field: [{"address_prefix": "not-an-ip", "prefix_len": 8}]})
    with pytest.raises(ChainMatchError) as e:
        ChainSelector([chain("ok"), bad], listener="l")
    assert str(e.value).startswith(f"listener 'l' filter_chains[1].filter_chain_match.{field}: bad CIDR not-an-ip/8: ")
    with pytest.raises(ChainMatchError) as e:
        ChainSelector([bad])
    assert str(e.value).startswith(f"listener '' filter_chains[0].filter_chain_match.{field}: bad CIDR")


def test_a_wildcard_matches_only_below_its_dot():
    chains = [chain("w", server_names=["*.example.com"])]
    assert ChainSelector(chains).select(facts(server_name="badexample.com")) is None
    assert ChainSelector(chains).select(facts(server_name="a.example.com")).name == "w"


@pytest.mark.parametrize("chains, sni, transport, alpn", [
    ([chain("a")], False, False, False),
    ([chain("a"), chain("w", server_names=["*.a.com"])], True, False, False),
    ([chain("e", server_names=["a.com"])], True, False, False),
    ([chain("t", transport_protocol="tls")], False, True, False),
    ([chain("h", application_protocols=["h2"])], False, False, True),
])
def test_the_selector_says_which_connection_facts_it_needs(chains, sni, transport, alpn):
    s = ChainSelector(chains)
    assert (s.needs_server_name, s.needs_transport, s.needs_alpn) == (sni, transport, alpn)
    assert all(isinstance(flag, bool) for flag in (s.needs_server_name, s.needs_transport, s.needs_alpn))
