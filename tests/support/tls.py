"""Envoy v3 TLS config pieces for tests (plain dicts, as a user writes them) and client contexts.

`downstream_tls(...)` / `upstream_tls(...)` build a `transport_socket` with inline PEM (`inline_string`) or SDS
names; `tls_listener(...)` turns `tests.support.proxy.bootstrap` output into a listener with the given chains.
`client_ctx(ca, leaf)` is a Python client context that trusts `ca` and presents `leaf` (mTLS) when given.
"""
from __future__ import annotations

import copy
import ssl
from typing import Any

from .pki import Leaf

T = "type.googleapis.com/envoy.extensions."
DOWNSTREAM = T + "transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = T + "transport_sockets.tls.v3.UpstreamTlsContext"
TLS_INSPECTOR = {"name": "envoy.filters.listener.tls_inspector",
                 "typed_config": {"@type": T + "filters.listener.tls_inspector.v3.TlsInspector"}}
HTTP_INSPECTOR = {"name": "envoy.filters.listener.http_inspector",
                  "typed_config": {"@type": T + "filters.listener.http_inspector.v3.HttpInspector"}}


def inline(pem: bytes) -> dict:
    return {"inline_string": pem.decode("ascii")}


def common(leaf: Leaf | None = None, ca_pem: bytes | None = None, *, cert_sds: str | None = None,
           ca_sds: str | None = None, sans: list[dict] | None = None, alpn: list[str] | None = None,
           **extra: Any) -> dict:
    c: dict[str, Any] = {}
    if leaf is not None:
        c["tls_certificates"] = [{"certificate_chain": inline(leaf.chain_pem), "private_key": inline(leaf.key_pem)}]
    if cert_sds:
        c["tls_certificate_sds_secret_configs"] = [{"name": cert_sds, "sds_config": {"ads": {}}}]
    vc: dict[str, Any] = {}
    if ca_pem is not None:
        vc["trusted_ca"] = inline(ca_pem)
    if sans:
        vc["match_typed_subject_alt_names"] = sans
    if ca_sds:
        c["combined_validation_context"] = {"default_validation_context": vc,
                                            "validation_context_sds_secret_config": {"name": ca_sds,
                                                                                     "sds_config": {"ads": {}}}}
    elif vc:
        c["validation_context"] = vc
    if alpn:
        c["alpn_protocols"] = alpn
    c.update(extra)
    return c


def downstream_tls(leaf: Leaf | None = None, ca_pem: bytes | None = None, *, require_client: bool = False,
                   **kw: Any) -> dict:
    ctx: dict[str, Any] = {"@type": DOWNSTREAM, "common_tls_context": common(leaf, ca_pem, **kw)}
    if require_client:
        ctx["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def upstream_tls(leaf: Leaf | None = None, ca_pem: bytes | None = None, *, sni: str = "", **kw: Any) -> dict:
    ctx: dict[str, Any] = {"@type": UPSTREAM, "common_tls_context": common(leaf, ca_pem, **kw)}
    if sni:
        ctx["sni"] = sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def uri_san(exact: str | None = None, **matcher: Any) -> dict:
    return {"san_type": "URI", "matcher": {"exact": exact} if exact is not None else matcher}


def with_chains(config: dict, chains: list[dict], *, listener_filters: list[dict] | None = None,
                default_chain: dict | None = None) -> dict:
    """`config` (a tests.support.proxy.bootstrap dict) with its listener's one chain replaced by `chains`: each
    a dict of `filter_chain_match` / `transport_socket` / `name`, plus optional `hcm` entries merged into a copy
    of the original HTTP connection manager."""
    b = copy.deepcopy(config)
    lis = b["static_resources"]["listeners"][0]
    base = lis["filter_chains"][0]["filters"][0]

    def chain(spec: dict) -> dict:
        f = copy.deepcopy(base)
        f["typed_config"].update(spec.get("hcm", {}))
        out = {"filters": [f]}
        for k in ("name", "filter_chain_match", "transport_socket"):
            if k in spec:
                out[k] = spec[k]
        return out

    lis["filter_chains"] = [chain(c) for c in chains]
    if default_chain is not None:
        lis["default_filter_chain"] = chain(default_chain)
    if listener_filters:
        lis["listener_filters"] = listener_filters
    return b


def client_ctx(ca_pem: bytes | None, leaf: Leaf | None = None, *, alpn: list[str] | None = None,
               max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if ca_pem is not None:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if leaf is not None:
        from pyproxy.tls.contexts import load_cert_chain_pem

        load_cert_chain_pem(ctx, leaf.chain_pem, leaf.key_pem)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def server_ctx(leaf: Leaf, ca_pem: bytes | None = None, *, require_client: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    from pyproxy.tls.contexts import load_cert_chain_pem

    load_cert_chain_pem(ctx, leaf.chain_pem, leaf.key_pem)
    if ca_pem is not None:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    return ctx
