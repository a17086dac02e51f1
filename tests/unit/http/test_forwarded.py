"""Envoy's x-forwarded-* / x-envoy-* request rules as a pure function (pyproxy/http/forwarded.py). The same
rules are checked against a real Envoy 1.40 in tests/differential (rows forged-*); these rows run without it."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from pyproxy.config.model import CidrRange, InternalAddressConfig
from pyproxy.http.forwarded import _is_loopback, forwarded_headers, is_internal, local_address
from pyproxy.http.headers import Headers

LOOPBACK_INTERNAL = InternalAddressConfig(cidr_ranges=(CidrRange(address_prefix="127.0.0.0", prefix_len=8),))


@dataclass(frozen=True)
class Hcm:
    use_remote_address: bool | None = None
    xff_num_trusted_hops: int = 0
    skip_xff_append: bool = False
    internal_address_config: InternalAddressConfig | None = None


FORGED = [("x-envoy-internal", "true"), ("x-envoy-retry-on", "5xx"), ("x-envoy-original-path", "/f"),
          ("x-forwarded-proto", "https"), ("x-envoy-external-address", "9.9.9.9")]


def run(hcm: Hcm, extra=(), peer="127.0.0.1") -> tuple[dict[str, str], bool]:
    h = Headers([("host", "x"), *FORGED, *extra])
    edge = forwarded_headers(h, hcm, peer, "http", "192.0.2.2")
    return {k: v for k, v in h}, edge


@pytest.mark.parametrize("hcm, extra, expect, edge", [
    # a sidecar (no use_remote_address): not internal by default; x-envoy-* only Envoy may set are removed,
    # x-envoy-original-path and the client's x-forwarded-proto stay
    (Hcm(), (), {"host": "x", "x-envoy-original-path": "/f", "x-forwarded-proto": "https",
                 "x-envoy-external-address": "9.9.9.9"}, False),
    # the edge: the loopback peer is appended as the machine's address, proto overwritten, edge-only cleaning
    (Hcm(use_remote_address=True), (), {"host": "x", "x-forwarded-for": "192.0.2.2", "x-forwarded-proto": "http",
                                        "x-envoy-external-address": "127.0.0.1"}, True),
    (Hcm(use_remote_address=True, skip_xff_append=True), (("x-forwarded-for", "203.0.113.7"),),
     {"host": "x", "x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "http",
      "x-envoy-external-address": "127.0.0.1"}, True),
    # one trusted hop: the client is the XFF's last address and its x-forwarded-proto is kept
    (Hcm(use_remote_address=True, xff_num_trusted_hops=1), (("x-forwarded-for", "203.0.113.7"),),
     {"host": "x", "x-forwarded-for": "203.0.113.7,192.0.2.2", "x-forwarded-proto": "https",
      "x-envoy-external-address": "203.0.113.7"}, True),
    # internal (loopback listed): everything stays and x-envoy-internal is Envoy's own
    (Hcm(use_remote_address=True, internal_address_config=LOOPBACK_INTERNAL), (),
     {"host": "x", "x-envoy-internal": "true", "x-envoy-retry-on": "5xx", "x-envoy-original-path": "/f",
      "x-forwarded-proto": "http", "x-envoy-external-address": "9.9.9.9", "x-forwarded-for": "192.0.2.2"}, False),
    # internal needs a single XFF address: two addresses make the request external again
    (Hcm(internal_address_config=LOOPBACK_INTERNAL), (("x-forwarded-for", "10.0.0.1, 127.0.0.1"),),
     {"host": "x", "x-envoy-original-path": "/f", "x-forwarded-proto": "https",
      "x-envoy-external-address": "9.9.9.9", "x-forwarded-for": "10.0.0.1, 127.0.0.1"}, False),
    # without use_remote_address the address is x-forwarded-for's: internal only when it is the one address there
    (Hcm(internal_address_config=LOOPBACK_INTERNAL), (("x-forwarded-for", "127.0.0.1"),),
     {"host": "x", "x-envoy-internal": "true", "x-envoy-retry-on": "5xx", "x-envoy-original-path": "/f",
      "x-forwarded-proto": "https", "x-envoy-external-address": "9.9.9.9", "x-forwarded-for": "127.0.0.1"}, False),
    (Hcm(internal_address_config=LOOPBACK_INTERNAL), (("x-forwarded-for", "127.0.0.1, 10.0.0.1"),),
     {"host": "x", "x-envoy-original-path": "/f", "x-forwarded-proto": "https",
      "x-envoy-external-address": "9.9.9.9", "x-forwarded-for": "127.0.0.1, 10.0.0.1"}, False),
    (Hcm(xff_num_trusted_hops=1, internal_address_config=LOOPBACK_INTERNAL), (("x-forwarded-for", "127.0.0.1"),),
     {"host": "x", "x-envoy-original-path": "/f", "x-forwarded-proto": "https",
      "x-envoy-external-address": "9.9.9.9", "x-forwarded-for": "127.0.0.1"}, False),
    (Hcm(internal_address_config=LOOPBACK_INTERNAL), (("x-forwarded-for", "10.9.9.9"),),
     {"host": "x", "x-envoy-original-path": "/f", "x-forwarded-proto": "https",
      "x-envoy-external-address": "9.9.9.9", "x-forwarded-for": "10.9.9.9"}, False),
    # x-forwarded-for is split on commas (no spaces needed)
    (Hcm(use_remote_address=True, xff_num_trusted_hops=1), (("x-forwarded-for", "203.0.113.7,198.51.100.1"),),
     {"host": "x", "x-forwarded-for": "203.0.113.7,198.51.100.1,192.0.2.2", "x-forwarded-proto": "https",
      "x-envoy-external-address": "198.51.100.1"}, True),
])
def test_forwarded_headers_follow_envoy(hcm, extra, expect, edge):
    assert run(hcm, extra) == (expect, edge)


V6_AND_UNIX = InternalAddressConfig(unix_sockets=True, cidr_ranges=(CidrRange(address_prefix="fd00::"),
                                                                    CidrRange(address_prefix="10.1.2.3")))


@pytest.mark.parametrize("ip, config, internal", [
    (None, LOOPBACK_INTERNAL, False),  # no remote address could be found
    ("-", None, False),  # a unix-socket peer: internal only with unix_sockets
    ("-", V6_AND_UNIX, True),
    ("-", LOOPBACK_INTERNAL, False),
    ("not-an-ip", LOOPBACK_INTERNAL, False),
    ("127.9.9.9", LOOPBACK_INTERNAL, True),
    ("127.0.0.1", None, False),  # nothing is internal by default
    ("fd00::", V6_AND_UNIX, True),  # no prefix_len: the whole address (/128, /32)
    ("fd00::1", V6_AND_UNIX, False),
    ("10.1.2.3", V6_AND_UNIX, True),
    ("10.1.2.4", V6_AND_UNIX, False),
])
def test_is_internal(ip, config, internal):
    assert is_internal(ip, config) is internal


def test_a_trusted_hop_that_is_not_an_ip_falls_back_to_the_peer():
    headers, edge = run(Hcm(use_remote_address=True, xff_num_trusted_hops=1), (("x-forwarded-for", "garbage"),),
                        peer="198.51.100.9")
    assert edge is True and headers["x-envoy-external-address"] == "198.51.100.9"
    assert headers["x-forwarded-for"] == "garbage,198.51.100.9"


def test_a_unix_socket_peer_is_not_appended_and_names_no_external_address():
    headers, edge = run(Hcm(use_remote_address=True), peer="-")
    assert edge is True and "x-forwarded-for" not in headers and "x-envoy-external-address" not in headers


def test_loopback_and_local_address():
    assert _is_loopback("127.0.0.2") and _is_loopback("::1")
    assert not _is_loopback("192.0.2.1") and not _is_loopback("-")
    local = local_address()
    assert local == "127.0.0.1" or not _is_loopback(local)


@pytest.mark.parametrize("hcm, proto", [
    (Hcm(), "http"),  # a sidecar adds the scheme when the client sent none
    (Hcm(use_remote_address=True, xff_num_trusted_hops=1), "http"),  # a trusted hop keeps only a proto it sent
])
def test_x_forwarded_proto_is_the_scheme_when_absent(hcm, proto):
    h = Headers([("host", "x")])
    forwarded_headers(h, hcm, "10.0.0.1", "http", "192.0.2.2")
    assert h.get_all("x-forwarded-proto") == [proto]
