"""HTTP filters by Envoy name: `envoy.filters.http.fault` -> its factory builder.

Envoy finds a filter by the type URL of its typed_config (or its name); so do we. A filter that is not
registered here is rejected when the config is loaded, with its name, never skipped silently.
"""
from __future__ import annotations

from typing import Any

from ..config.model import RBAC, Cors, HTTPFault, JwtAuthentication, LocalRateLimit
from . import cors, fault, istio_stats, jwt_authn, local_ratelimit, rbac
from .base import FactoryBuilder, FilterFactory

ROUTER = "envoy.filters.http.router"

BY_NAME: dict[str, FactoryBuilder] = {
    fault.NAME: fault.build_factory,
    cors.NAME: cors.build_factory,
    rbac.NAME: rbac.build_factory,
    jwt_authn.NAME: jwt_authn.build_factory,
    istio_stats.NAME: istio_stats.build_factory,
    local_ratelimit.NAME: local_ratelimit.build_factory,
}
BY_TYPE: dict[type, FactoryBuilder] = {HTTPFault: fault.build_factory, Cors: cors.build_factory,
                                       RBAC: rbac.build_factory, JwtAuthentication: jwt_authn.build_factory,
                                       LocalRateLimit: local_ratelimit.build_factory}


def supported() -> list[str]:
    return sorted([*BY_NAME, ROUTER])


def builder_for(http_filter: Any) -> FactoryBuilder | None:
    """The builder for an `HttpFilter` entry: by its name, else by its typed_config's type (Envoy's rule)."""
    builder = BY_NAME.get(http_filter.name)
    if builder is None and http_filter.typed_config is not None:
        builder = BY_TYPE.get(type(http_filter.typed_config))
    return builder


def unsupported_message(http_filter: Any) -> str:
    return f"HTTP filter {http_filter.name!r} is not supported (supported: {', '.join(supported())})"


def build_chain(http_filters: Any, stats: Any, rng: Any) -> tuple[FilterFactory, ...]:
    """Factories for every HTTP filter before the router, in order (optional unknown filters are skipped)."""
    out = []
    for f in http_filters:
        if f.name == ROUTER:
            continue
        builder = builder_for(f)
        if builder is None:
            if f.is_optional:
                continue
            raise ValueError(unsupported_message(f))
        out.append(builder(f.typed_config, stats, rng))
    return tuple(out)
