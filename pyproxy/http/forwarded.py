"""Who sent this request, and which proxy headers it may carry: Envoy's `mutateRequestHeaders` rules.

Where it sits: the HTTP connection manager calls `forwarded_headers()` once per request, before any filter,
so the router and the app see what Envoy's would. What it implements (Envoy 1.40
`ConnectionManagerUtility::mutateRequestHeaders`, checked row by row in tests/differential, "forged-*"):

* The downstream address. With `use_remote_address` it is the peer (or, with `xff_num_trusted_hops` N > 0,
  the N-th address from the right of the client's x-forwarded-for); the peer is appended to
  x-forwarded-for (unless `skip_xff_append`), a loopback peer as the proxy's own address, as Envoy appends
  `local_info.address()`. Without it, the address is taken from x-forwarded-for.
* Internal or not: a request is internal only when x-forwarded-for held at most that one address and the
  address is in `internal_address_config` (Envoy 1.40's default is EMPTY: nothing is internal, not even
  loopback or RFC 1918). An internal request gets `x-envoy-internal: true`.
* Any other request loses `x-envoy-internal` and the x-envoy-* headers only an Envoy may set
  (`EXTERNAL_CLEANED`: retry and timeout overrides, force-trace, ...), so a client cannot choose its own
  retries, timeouts or identity hints; an edge request (`use_remote_address`, not internal) also loses
  `EDGE_CLEANED` and gets `x-envoy-external-address`.
* x-forwarded-proto: overwritten with the scheme at the edge unless a trusted hop is configured, else set
  when absent.

`forwarded_headers` is pure (headers, config facts, peer in; the headers changed in place and whether the
request is an edge request out). `local_address()` reads the machine's interfaces once (the only I/O here).
"""
from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .headers import Headers

# Removed from every request that is not internal (Envoy cleanInternalHeaders).
EXTERNAL_CLEANED = (
    "x-envoy-internal",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-retriable-status-codes",  # not in Envoy's documented list; Envoy 1.40 drops them (row forged-*)
    "x-envoy-retriable-header-names",
)
EXTERNAL_CLEANED_SET = frozenset(EXTERNAL_CLEANED)
# Removed as well from an edge request (use_remote_address and not internal).
EDGE_CLEANED = (
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-original-path",
    "x-envoy-external-address",
)
EDGE_CLEANED_SET = EXTERNAL_CLEANED_SET | frozenset(EDGE_CLEANED)


@functools.lru_cache(maxsize=64)
def _networks(config: Any) -> tuple[Any, ...]:
    """The `internal_address_config.cidr_ranges` as ip_network objects (compiled once per config)."""
    if config is None:
        return ()
    nets = []
    for r in config.cidr_ranges:
        bits = r.prefix_len if r.prefix_len is not None else (128 if ":" in r.address_prefix else 32)
        nets.append(ipaddress.ip_network(f"{r.address_prefix}/{bits}", strict=False))
    return tuple(nets)


def is_internal(ip: str | None, config: Any) -> bool:
    """Envoy's InternalAddressConfig: an address in one of the configured CIDR ranges (none by default);
    a peer without an IP (a unix socket) when `unix_sockets` is set."""
    if ip is None:
        return False
    if ip == "-":
        return bool(config is not None and config.unix_sockets)
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in _networks(config))


def _xff_addresses(value: str | None) -> list[str]:
    return [a.strip() for a in value.split(",")] if value else []


def _valid_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def forwarded_headers(h: Headers, cfg: Any, peer_ip: str, scheme: str, local_ip: str | None = None) -> bool:
    """Apply Envoy's x-forwarded-* / x-envoy-* rules to request headers `h` (changed in place).
    `cfg`: the HCM config; `peer_ip`: the downstream peer ("-" without an IP); `local_ip`: what a loopback peer
    is appended to x-forwarded-for as (default: `local_address()`, looked up only then: not a call per request).
    Returns whether the request is an edge request (external and `use_remote_address`), which also regenerates
    x-request-id."""
    xff_value = h.get("x-forwarded-for")
    xff = _xff_addresses(xff_value)
    hops = cfg.xff_num_trusted_hops
    remote: str | None = peer_ip
    if cfg.use_remote_address:
        if hops > 0 and len(xff) >= hops:
            remote = _valid_ip(xff[len(xff) - hops]) or peer_ip
        if not cfg.skip_xff_append and peer_ip != "-":
            if _is_loopback(peer_ip):  # the machine's own address, read (once) only when needed
                appended = local_ip if local_ip is not None else local_address()
            else:
                appended = peer_ip
            h.set("x-forwarded-for", f"{xff_value},{appended}" if xff_value else appended)
        if hops == 0 or "x-forwarded-proto" not in h:
            h.set("x-forwarded-proto", scheme)
        internal = not xff and is_internal(remote, cfg.internal_address_config)
    else:
        # the remote address is then x-forwarded-for's (hops+1)-th from the right; it decides only `internal`,
        # which needs the header to hold that one address alone, so no trusted hop can be skipped
        if "x-forwarded-proto" not in h:
            h.add("x-forwarded-proto", scheme)
        internal = len(xff) == 1 and hops == 0 and is_internal(_valid_ip(xff[0]), cfg.internal_address_config)
    edge = bool(cfg.use_remote_address) and not internal
    if internal:
        h.set("x-envoy-internal", "true")
        return False
    h.remove_names(EDGE_CLEANED_SET if edge else EXTERNAL_CLEANED_SET)
    if edge:
        if remote is not None and remote != "-":
            h.set("x-envoy-external-address", remote)
    return edge


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def local_address() -> str:
    """The machine's first non-loopback IPv4 interface address, as Envoy's `local_info.address()` picks it
    (Network::Utility::getLocalAddress); 127.0.0.1 when there is none. Linux: SIOCGIFADDR per interface."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not Linux
        return "127.0.0.1"
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), siocgifaddr, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue  # no IPv4 address on this interface
            ip = socket.inet_ntoa(packed[20:24])
            if not ipaddress.ip_address(ip).is_loopback:
                return ip
    return "127.0.0.1"
