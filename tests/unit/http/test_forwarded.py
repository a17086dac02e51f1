"""Envoy's x-forwarded-* / x-envoy-* request rules as a pure function (pyproxy/http/forwarded.py). The same
rules are checked against a real Envoy 1.40 in tests/differential (rows forged-*); these rows run without it."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from pyproxy.config.model import CidrRange, InternalAddressConfig
from pyproxy.http.forwarded import forwarded_headers
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
])
def test_forwarded_headers_follow_envoy(hcm, extra, expect, edge):
    assert run(hcm, extra) == (expect, edge)
