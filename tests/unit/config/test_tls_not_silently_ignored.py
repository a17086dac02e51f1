"""A config that asks for something pyproxy does not implement is rejected by name (a NACK over xDS), never
served in plaintext or without the check (which would silently downgrade what the config asked for). TLS
itself is served (docs/tls.md); its unimplemented corners are refused by field."""
from __future__ import annotations

import pytest

from pyproxy.config.decode import decode
from pyproxy.config.model import Cluster, Listener
from pyproxy.server import ConfigRejected, validate_snapshot

HCM = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "x", "route_config": {"virtual_hosts": []},
    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}
UPSTREAM_TLS = {"name": "envoy.transport_sockets.tls", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", "sni": "x"}}
DOWNSTREAM_TLS = {"name": "envoy.transport_sockets.tls", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"}}


def listener(**chain):
    return decode(Listener, {"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                             "filter_chains": [{"filters": [HCM], **chain}]})


def cluster(**extra):
    return decode(Cluster, {"name": "c", **extra})


def test_plain_config_is_accepted():
    validate_snapshot([listener()], [cluster()])


def test_tls_origination_and_termination_are_accepted():
    validate_snapshot([listener(transport_socket=DOWNSTREAM_TLS)], [cluster(transport_socket=UPSTREAM_TLS)])


def test_tls_context_on_the_wrong_side_is_rejected_by_name():
    with pytest.raises(ConfigRejected, match=r"cluster 'c': transport_socket: .* must be an UpstreamTlsContext"):
        validate_snapshot([listener()], [cluster(transport_socket=DOWNSTREAM_TLS)])
    with pytest.raises(ConfigRejected, match=r"listener 'l' filter_chains\[0\]: .* must be a DownstreamTlsContext"):
        validate_snapshot([listener(transport_socket=UPSTREAM_TLS)], [cluster()])


def test_unimplemented_tls_fields_are_rejected_by_name():
    from pyproxy.tls.secrets import SecretManager
    from pyproxy.tls.transport_socket import TlsContextProvider

    ctx = decode(Cluster, {"name": "c", "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {"validation_context": {"verify_certificate_spki": ["abc"]}}}}}).transport_socket
    with pytest.raises(ValueError, match="verify_certificate_spki is not supported"):
        TlsContextProvider(ctx.typed_config, SecretManager(), "cluster 'c'")


def _with_filters(*filters):
    hcm = {**HCM, "typed_config": {**HCM["typed_config"],
                                   "http_filters": [*filters, *HCM["typed_config"]["http_filters"]]}}
    return decode(Listener, {"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                             "filter_chains": [{"filters": [hcm]}]})


FAULT = {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}


def test_known_http_filter_by_name_or_by_type_is_accepted():
    validate_snapshot([_with_filters({"name": "envoy.filters.http.fault", "typed_config": FAULT})], [cluster()])
    # Istio names filters freely; Envoy then finds the filter by its typed_config's type
    validate_snapshot([_with_filters({"name": "istio.fault", "typed_config": FAULT})], [cluster()])


def test_unknown_http_filter_is_rejected_by_name_unless_optional():
    with pytest.raises(ConfigRejected, match=r"HTTP filter 'envoy.filters.http.ext_authz' is not supported"):
        validate_snapshot([_with_filters({"name": "envoy.filters.http.ext_authz"})], [cluster()])
    validate_snapshot([_with_filters({"name": "envoy.filters.http.ext_authz", "is_optional": True})], [cluster()])


def test_jwt_requirement_naming_no_provider_is_rejected_with_its_place():
    jwt = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"a": {"issuer": "i", "local_jwks": {"inline_string": '{"keys": []}'}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "a"}, {"provider_name": "zz"}]}}}]}}
    with pytest.raises(ConfigRejected, match=r"listener 'l' filter_chains\[0\]: envoy.filters.http.jwt_authn: "
                                             r"rules\[0\].requires.requires_any\[1\]: unknown provider 'zz'"):
        validate_snapshot([_with_filters(jwt)], [cluster()])
    jwt["typed_config"]["rules"][0]["requires"] = {"provider_name": "a"}
    validate_snapshot([_with_filters(jwt)], [cluster()])
