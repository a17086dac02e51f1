"""Check rendered resources against Envoy's own protobuf schemas (the `xds-protos` package).

Each resource is parsed as a `google.protobuf.Any` with `json_format.ParseDict` (unknown fields rejected), so
its `@type` and every nested `typed_config` must name a registered Envoy message: tests.envoy_protos registers
every type the translator emits.
"""
from __future__ import annotations

import copy

from google.protobuf import any_pb2, json_format

import tests.envoy_protos  # noqa: F401  (registers the Envoy message types)
# transport sockets the security translation emits beyond tests.envoy_protos' list (auto-mTLS plaintext match)
import envoy.extensions.transport_sockets.raw_buffer.v3.raw_buffer_pb2  # noqa: F401,E402


def check_resource(resource: dict) -> None:
    """Raise json_format.ParseError if `resource` is not a valid Envoy message of its `@type`."""
    # ParseDict moves "@type" keys around in the dict it reads: give it a copy
    json_format.ParseDict(copy.deepcopy(resource), any_pb2.Any(), ignore_unknown_fields=False)


def check_rendered(groups: dict) -> int:
    """Check every resource of a rendered `{listeners, routes, clusters, endpoints}`; returns the count."""
    count = 0
    for group in ("listeners", "routes", "clusters", "endpoints"):
        for resource in groups.get(group, ()):
            check_resource(resource)
            count += 1
    return count
