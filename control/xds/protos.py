"""The translator's JSON as Envoy's protobuf messages, for the gRPC ADS server (control.xds.grpc_ads). No I/O.

REST-JSON clients get the snapshot payload bytes as they are; a gRPC client (Envoy's `api_type: GRPC`,
`ads_config`) needs `google.protobuf.Any` resources in a protobuf `DiscoveryResponse`. `json_format.ParseDict`
turns each resource into its message; every `@type` inside (`typed_config` of filters and transport sockets,
`typed_extension_protocol_options`) must be registered in protobuf's descriptor pool, which importing the
`xds-protos` module that defines it does (`MODULES`). A type missing there is a `ConversionError` naming it,
never a traceback.

Conversion is done once per payload (keyed by its content hash, `AnyCache`) and shared by every stream that
sends that payload, as the JSON bytes are shared on the REST path.

`for_upstream_envoy` is the one adaptation gRPC clients get (docs/xds.md "gRPC ADS"): the `istio.stats` filter
(`stats.PluginConfig`, wrapped in a TypedStruct) exists only in Istio's own Envoy build (istio/proxy), and
upstream Envoy refuses a listener naming an extension it does not have, so the filter is dropped.
"""
from __future__ import annotations

import importlib
import json
from collections import OrderedDict
from typing import Any, Iterable

from google.protobuf import any_pb2, json_format, symbol_database

from control.translate.common import STATS_PLUGIN_CONFIG
from control.xds.cache import LISTENER, DiscoveryResponse, Payload

# Importing these registers the messages that the translator's `@type`s name (and the discovery service).
MODULES = (
    "envoy.service.discovery.v3.ads_pb2",
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
    "envoy.extensions.filters.http.local_ratelimit.v3.local_rate_limit_pb2",
    "envoy.extensions.filters.http.cors.v3.cors_pb2",
    "envoy.extensions.filters.http.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.network.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.http.jwt_authn.v3.config_pb2",
    "envoy.extensions.access_loggers.filters.cel.v3.cel_pb2",  # Telemetry accessLogging filter.expression
    "envoy.config.trace.v3.opentelemetry_pb2",  # HCM tracing providers
    "envoy.config.trace.v3.zipkin_pb2",
    "envoy.extensions.access_loggers.file.v3.file_pb2",
    "envoy.extensions.access_loggers.stream.v3.stream_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2",
    "envoy.extensions.retry.priority.previous_priorities.v3.previous_priorities_config_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.transport_sockets.raw_buffer.v3.raw_buffer_pb2",
    "udpa.type.v1.typed_struct_pb2",
    "xds.type.v3.typed_struct_pb2",
)


class ConversionError(ValueError):
    """A resource that does not convert to Envoy's protobuf; the message names the resource and the cause."""


def register_types(modules: Iterable[str] = MODULES) -> None:
    """Import the xds-protos modules; a missing one is a ConversionError naming it (install xds-protos)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConversionError(f"protobuf module {name} is missing ({err}); gRPC ADS needs the xds-protos "
                                  "package") from None


def message_class(type_url: str):
    """The generated message class for `type.googleapis.com/<full name>`."""
    full = type_url.rpartition("/")[2]
    try:
        return symbol_database.Default().GetSymbol(full)
    except KeyError:
        raise ConversionError(f"protobuf type {full} is not registered (no xds-protos module imported for "
                              "it in control.xds.protos.MODULES)") from None


def _is_stats(f: Any) -> bool:
    tc = f.get("typed_config") if isinstance(f, dict) else None
    return isinstance(tc, dict) and STATS_PLUGIN_CONFIG in (tc.get("@type"), tc.get("type_url"))


def for_upstream_envoy(type_url: str, resource: dict) -> dict:
    """`resource` without Istio-build-only filters (see the module docstring); unchanged when it has none."""
    if type_url != LISTENER or STATS_PLUGIN_CONFIG not in json.dumps(resource):
        return resource
    resource = json.loads(json.dumps(resource))
    for chain in [*resource.get("filter_chains", ()), resource.get("default_filter_chain") or {}]:
        filters = chain.get("filters")
        if not filters:
            continue
        chain["filters"] = [f for f in filters if not _is_stats(f)]
        for f in chain["filters"]:
            tc = f.get("typed_config") or {}
            if isinstance(tc.get("http_filters"), list):
                tc["http_filters"] = [h for h in tc["http_filters"] if not _is_stats(h)]
    return resource


def _name(resource: dict) -> str:
    return str(resource.get("name") or resource.get("cluster_name") or "?")


def to_any(type_url: str, resource: dict) -> any_pb2.Any:
    """One resource (Envoy JSON) as an Any of `type_url`; ConversionError names the resource and field."""
    cls = message_class(type_url)
    data = {k: v for k, v in for_upstream_envoy(type_url, resource).items() if k != "@type"}
    try:
        message = json_format.ParseDict(data, cls(), ignore_unknown_fields=False)
    except json_format.ParseError as err:
        text = str(err)
        if "Can not find message descriptor by type_url" in text or "Invalid type url" in text:
            missing = text.rpartition("type_url:")[2].strip() or text
            raise ConversionError(f"{type_url.rpartition('/')[2]} {_name(resource)!r}: @type {missing} is not "
                                  "registered (import its xds-protos module in control.xds.protos.MODULES)") from None
        raise ConversionError(f"{type_url.rpartition('/')[2]} {_name(resource)!r}: {text}") from None
    out = any_pb2.Any()
    out.Pack(message)
    return out


class AnyCache:
    """Converted resources per payload content hash (bounded, least recently used out): a payload shared by
    many proxies is converted once, not once per stream or per response."""

    def __init__(self, size: int = 512):
        self.size = size
        self._items: OrderedDict[tuple[str, str], tuple[any_pb2.Any, ...]] = OrderedDict()
        self._named: OrderedDict[tuple, dict] = OrderedDict()
        self.conversions = 0  # payloads converted (tests: a second stream reuses them)

    def resources(self, type_url: str, payload: Payload) -> tuple[any_pb2.Any, ...]:
        key = (type_url, payload.hash)
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            return found
        found = tuple(to_any(type_url, r) for r in json.loads(payload.body))
        self.conversions += 1
        self._items[key] = found
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return found

    def named(self, type_url: str, payload: Payload) -> dict[str, tuple[str, any_pb2.Any]]:
        """name -> (resource version, Any): what delta xDS sends per resource (control.xds.delta)."""
        key = ("named", type_url, payload.hash)
        found = self._named.get(key)
        if found is None:
            from control.xds.delta import resource_name, resource_versions

            items = json.loads(payload.body)
            versions = resource_versions(items)
            found = {resource_name(r): (versions[resource_name(r)], a)
                     for r, a in zip(items, self.resources(type_url, payload))}
            self._named[key] = found
            while len(self._named) > self.size:
                self._named.popitem(last=False)
        return found

    def response(self, response: DiscoveryResponse):
        """The protobuf DiscoveryResponse for a cache response (control.xds.cache.DiscoveryResponse)."""
        from envoy.service.discovery.v3 import discovery_pb2
        from envoy.config.core.v3 import base_pb2

        return discovery_pb2.DiscoveryResponse(
            version_info=response.version_info, type_url=response.type_url, nonce=response.nonce,
            resources=self.resources(response.type_url, response.payload),
            control_plane=base_pb2.ControlPlane(identifier="pyproxy-control"))


def node_json(node_message) -> dict:
    """A protobuf Node as the JSON `parse_node` reads (Envoy's field names; Struct metadata as JSON values).
    Without ISTIO_VERSION in the metadata, the version proxy-status shows is Envoy's own build version
    (`user_agent_name` + `user_agent_build_version`, e.g. `envoy-1.40.0`)."""
    node = json_format.MessageToDict(node_message, preserving_proto_field_name=True)
    meta = node.setdefault("metadata", {})
    build = node.get("user_agent_build_version", {}).get("version")
    if not meta.get("ISTIO_VERSION") and build:
        number = ".".join(str(build.get(k, 0)) for k in ("major_number", "minor_number", "patch"))
        meta["ISTIO_VERSION"] = f"{node.get('user_agent_name') or 'envoy'}-{number}"
    return node


__all__ = ["AnyCache", "ConversionError", "MODULES", "for_upstream_envoy", "message_class", "node_json",
           "register_types", "to_any"]
