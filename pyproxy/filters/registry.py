"""HTTP filters by Envoy name: `envoy.filters.http.fault` -> its factory builder.

Envoy finds a filter by the type URL of its typed_config (or its name); so do we. A filter that is not
registered here is rejected when the config is loaded, with its name, never skipped silently.
"""
from __future__ import annotations

from typing import Any

from . import cors, fault
from .base import FactoryBuilder, FilterFactory

ROUTER = "envoy.filters.http.router"

BUILDERS: dict[str, FactoryBuilder] = {
    fault.NAME: fault.build_factory,
    cors.NAME: cors.build_factory,
}


def supported() -> list[str]:
    return sorted([*BUILDERS, ROUTER])


def build_chain(http_filters: Any, stats: Any, rng: Any) -> tuple[FilterFactory, ...]:
    """Factories for every HTTP filter before the router, in order."""
    out = []
    for f in http_filters:
        if f.name == ROUTER:
            continue
        builder = BUILDERS.get(f.name)
        if builder is None and f.typed_config is not None:
            builder = BY_TYPE.get(type(f.typed_config).__name__)
        if builder is None:
            if f.is_optional:
                continue
            raise ValueError(f"HTTP filter {f.name!r} is not supported (supported: {', '.join(supported())})")
        out.append(builder(f.typed_config, stats, rng))
    return tuple(out)


BY_TYPE: dict[str, FactoryBuilder] = {"HTTPFault": fault.build_factory, "Cors": cors.build_factory}
