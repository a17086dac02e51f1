"""Check rendered resources against Envoy's own protobuf schemas (the `xds-protos` package).

Each resource is parsed as a `google.protobuf.Any` with `json_format.ParseDict` (unknown fields rejected), so
its `@type` and every nested `typed_config` must name a registered Envoy message: the modules below register
every type the translator emits.
"""
from __future__ import annotations

import copy
import importlib

from google.protobuf import any_pb2, json_format

MODULES = (
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.http.cors.v3.cors_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2",
    "envoy.extensions.retry.priority.previous_priorities.v3.previous_priorities_config_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
)
for _name in MODULES:
    importlib.import_module(_name)


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
