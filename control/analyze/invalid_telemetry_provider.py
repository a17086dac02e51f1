"""IST0157 InvalidTelemetryProvider: a Telemetry `accessLogging` entry names no provider (and is not `disabled`)
while meshConfig has no `defaultProviders.accessLogging`, so it configures nothing and is ignored.

Istio's analyzer: pkg/config/analysis/analyzers/telemetry/providers.go (it looks at accessLogging only).
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding


def default_access_log_providers(index: Index) -> tuple[str, ...]:
    for op in index.of("IstioOperator"):
        providers = get(op.spec, "meshConfig", "defaultProviders", "accessLogging")
        if providers:
            return tuple(str(p) for p in providers)
    return ()


def analyze(index: Index) -> Iterator[Finding]:
    if default_access_log_providers(index):
        return
    for tel in index.of("Telemetry"):
        for i, entry in enumerate(get(tel.spec, "accessLogging", default=()) or ()):
            if not get(entry, "providers") and not get(entry, "disabled"):
                yield report(msg.INVALID_TELEMETRY_PROVIDER, tel, f"spec.accessLogging[{i}]", tel.name, tel.namespace)
