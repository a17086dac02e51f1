"""Which filter chain serves a new connection: Envoy's `filter_chain_match` rules, as a pure function.

Where it sits: accept -> listener filters (tls_inspector / http_inspector, `pyproxy.listener.client_hello`)
learn the connection's facts -> **select_chain** (this module) -> the chain's transport socket (TLS or
plaintext) -> its HTTP connection manager.

Envoy's rules (api/envoy/config/listener/v3/listener_components.proto, `FilterChainMatch`): the criteria are
looked at one level at a time, in this order:

  1. destination_port          5. application_protocols (ALPN, or http_inspector's guess)
  2. prefix_ranges (dest IP)   6. direct_source_prefix_ranges
  3. server_names (SNI)        7. source_type (ANY / SAME_IP_OR_LOOPBACK / EXTERNAL)
  4. transport_protocol        8. source_prefix_ranges, 9. source_ports

At each level only the chains with the *most specific* matching value stay in the running (an exact port
beats "any port"; a longer CIDR beats a shorter one; an exact server name beats `*.example.com`, which beats a
shorter wildcard, which beats "no server_names"); a chain that sets a criterion the connection does not meet
is out. There is no backtracking: once a level has narrowed the set, a later level that matches nothing
means no chain, not a less specific one. No chain -> `default_filter_chain`, else the connection is closed
(stat `listener.<addr>.no_filter_chain_match`).

`ChainSelector(chains)` compiles the criteria once (CIDRs parsed, wildcards split); `select(facts)` is the
per-connection decision. Envoy rejects two chains with identical match criteria; so does `ChainSelector`.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..config import model

NO_MATCH = -1


@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    """What is known about a connection when its chain is chosen."""

    destination_port: int = 0
    destination_ip: str = ""
    server_name: str = ""
    transport_protocol: str = "raw_buffer"
    application_protocols: tuple[str, ...] = ()
    direct_source_ip: str = ""
    source_ip: str = ""
    source_port: int = 0


class ChainMatchError(ValueError):
    """A filter_chain_match Envoy refuses (names the chain and the field)."""


def _ip(text: str) -> Any:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _networks(ranges: Sequence[model.CidrRange], where: str) -> tuple[Any, ...]:
    out = []
    for r in ranges:
        try:
            addr = ipaddress.ip_address(r.address_prefix)
            plen = addr.max_prefixlen if r.prefix_len is None else r.prefix_len
            out.append(ipaddress.ip_network(f"{r.address_prefix}/{plen}", strict=False))
        except ValueError as e:
            raise ChainMatchError(f"{where}: bad CIDR {r.address_prefix}/{r.prefix_len}: {e}") from None
    return tuple(out)


def _cidr_rank(nets: tuple[Any, ...], ip: Any) -> int:
    if not nets:
        return 0
    if ip is None:
        return NO_MATCH
    best = NO_MATCH
    for net in nets:
        if ip.version == net.version and ip in net:
            best = max(best, net.prefixlen + 1)
    return best


class _Compiled:
    __slots__ = ("chain", "port", "dst", "exact_names", "wildcards", "transport", "alpn", "direct_src",
                 "source_type", "src", "src_ports")

    def __init__(self, chain: model.FilterChain, where: str):
        m = chain.filter_chain_match or model.FilterChainMatch()
        self.chain = chain
        self.port = m.destination_port
        self.dst = _networks(m.prefix_ranges, f"{where}.prefix_ranges")
        exact, wild = set(), []
        for name in m.server_names:
            name = name.lower()
            if name.startswith("*."):
                wild.append(name[1:])  # ".example.com"
            elif "*" in name:
                raise ChainMatchError(f"{where}.server_names: partial wildcards are not supported: {name!r}")
            else:
                exact.add(name)
        self.exact_names = frozenset(exact)
        self.wildcards = tuple(wild)
        self.transport = m.transport_protocol
        self.alpn = frozenset(m.application_protocols)
        self.direct_src = _networks(m.direct_source_prefix_ranges, f"{where}.direct_source_prefix_ranges")
        self.source_type = m.source_type
        self.src = _networks(m.source_prefix_ranges, f"{where}.source_prefix_ranges")
        self.src_ports = frozenset(m.source_ports)


def _rank_port(c: _Compiled, f: ConnectionFacts, _ips: Any) -> int:
    if c.port is None:
        return 0
    return 1 if c.port == f.destination_port else NO_MATCH


def _rank_dst(c: _Compiled, f: ConnectionFacts, ips: Any) -> int:
    return _cidr_rank(c.dst, ips[0])


def _rank_server_name(c: _Compiled, f: ConnectionFacts, _ips: Any) -> int:
    if not c.exact_names and not c.wildcards:
        return 0
    name = f.server_name.lower()
    if not name:
        return NO_MATCH
    if name in c.exact_names:
        return 1 << 16
    best = NO_MATCH
    for suffix in c.wildcards:
        if name.endswith(suffix) and len(name) > len(suffix):
            best = max(best, len(suffix))  # a longer wildcard is more specific
    return best


def _rank_transport(c: _Compiled, f: ConnectionFacts, _ips: Any) -> int:
    if not c.transport:
        return 0
    return 1 if c.transport == f.transport_protocol else NO_MATCH


def _rank_alpn(c: _Compiled, f: ConnectionFacts, _ips: Any) -> int:
    if not c.alpn:
        return 0
    offered = f.application_protocols
    for i, proto in enumerate(offered):  # Envoy tries the connection's protocols in order
        if proto in c.alpn:
            return len(offered) - i
    return NO_MATCH


def _rank_direct_src(c: _Compiled, f: ConnectionFacts, ips: Any) -> int:
    return _cidr_rank(c.direct_src, ips[1])


def _rank_source_type(c: _Compiled, f: ConnectionFacts, ips: Any) -> int:
    if c.source_type == "ANY":
        return 0
    src, dst = ips[2], ips[0]
    local = src is not None and (src.is_loopback or src == dst)
    return 1 if local == (c.source_type == "SAME_IP_OR_LOOPBACK") else NO_MATCH


def _rank_src(c: _Compiled, f: ConnectionFacts, ips: Any) -> int:
    return _cidr_rank(c.src, ips[2])


def _rank_src_port(c: _Compiled, f: ConnectionFacts, _ips: Any) -> int:
    if not c.src_ports:
        return 0
    return 1 if f.source_port in c.src_ports else NO_MATCH


LEVELS: tuple[tuple[str, Callable[[_Compiled, ConnectionFacts, Any], int]], ...] = (
    ("destination_port", _rank_port),
    ("prefix_ranges", _rank_dst),
    ("server_names", _rank_server_name),
    ("transport_protocol", _rank_transport),
    ("application_protocols", _rank_alpn),
    ("direct_source_prefix_ranges", _rank_direct_src),
    ("source_type", _rank_source_type),
    ("source_prefix_ranges", _rank_src),
    ("source_ports", _rank_src_port),
)


class ChainSelector:
    """A listener's filter chains compiled for `select`. Raises ChainMatchError for configs Envoy refuses."""

    def __init__(self, chains: Sequence[model.FilterChain], default: model.FilterChain | None = None,
                 listener: str = ""):
        self.compiled = tuple(_Compiled(c, f"listener {listener!r} filter_chains[{i}].filter_chain_match")
                              for i, c in enumerate(chains))
        self.default = default
        seen: dict[Any, int] = {}
        for i, c in enumerate(chains):
            key = c.filter_chain_match or model.FilterChainMatch()
            if key in seen:
                raise ChainMatchError(f"listener {listener!r}: multiple filter chains with the same matching rules "
                                      f"are defined (filter_chains[{seen[key]}] and [{i}])")
            seen[key] = i
        # which criteria any chain uses: the accept path only peeks at bytes when a chain needs them
        self.needs_server_name = any(c.exact_names or c.wildcards for c in self.compiled)
        self.needs_transport = any(c.transport for c in self.compiled)
        self.needs_alpn = any(c.alpn for c in self.compiled)

    def select(self, facts: ConnectionFacts) -> model.FilterChain | None:
        ips = (_ip(facts.destination_ip), _ip(facts.direct_source_ip or facts.source_ip), _ip(facts.source_ip))
        candidates: Sequence[_Compiled] = self.compiled
        for _name, rank in LEVELS:
            if len(candidates) == 0:
                break
            best = NO_MATCH
            kept: list[_Compiled] = []
            for c in candidates:
                r = rank(c, facts, ips)
                if r > best:
                    best, kept = r, [c]
                elif r == best and r != NO_MATCH:
                    kept.append(c)
            candidates = kept
        if candidates:
            return candidates[0].chain
        return self.default


def select_chain(chains: Sequence[model.FilterChain], facts: ConnectionFacts,
                 default: model.FilterChain | None = None) -> model.FilterChain | None:
    """One-shot form of `ChainSelector(chains, default).select(facts)`."""
    return ChainSelector(chains, default).select(facts)
