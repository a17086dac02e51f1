"""Check JSON against Envoy's own protobuf schemas (the `xds-protos` package).

`json_format.ParseDict` with `ignore_unknown_fields=False`: a field Envoy does not know is an error, so a
config that passes here is one real Envoy would load (modulo semantic checks Envoy does after parsing).
"""
from __future__ import annotations

import importlib
from typing import Any

from google.protobuf import json_format, symbol_database

# Importing these registers the message types that Any (`typed_config`) fields may name.
_MODULES = [
    "envoy.config.bootstrap.v3.bootstrap_pb2",
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.network.sni_cluster.v3.sni_cluster_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.http.cors.v3.cors_pb2",
    "envoy.extensions.filters.http.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.network.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.http.jwt_authn.v3.config_pb2",
    "envoy.extensions.access_loggers.file.v3.file_pb2",
    "envoy.extensions.access_loggers.stream.v3.stream_pb2",
    "envoy.extensions.access_loggers.filters.cel.v3.cel_pb2",  # Telemetry accessLogging filter.expression
    "envoy.config.trace.v3.opentelemetry_pb2",  # HCM tracing providers
    "envoy.config.trace.v3.zipkin_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2",
    "envoy.extensions.retry.priority.previous_priorities.v3.previous_priorities_config_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.admin.v3.config_dump_pb2",
    "udpa.type.v1.typed_struct_pb2",  # Istio's istio.stats config (stats.PluginConfig) travels as a TypedStruct
]
for _m in _MODULES:
    try:
        importlib.import_module(_m)
    except ImportError:  # an older xds-protos without that extension
        pass


def parse_envoy(message_name: str, data: dict[str, Any]):
    """Parse `data` as the Envoy message `message_name` (e.g. "envoy.config.cluster.v3.Cluster")."""
    cls = symbol_database.Default().GetSymbol(message_name)
    return json_format.ParseDict(data, cls(), ignore_unknown_fields=False)
