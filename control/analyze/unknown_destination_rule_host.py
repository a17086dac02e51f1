"""IST0174 UnknownDestinationRuleHost: a DestinationRule's host matches no Service or ServiceEntry, so Istio
ignores the rule.

Istio's analyzer: destinationrule/... (host lookup after short-name resolution in the rule's namespace).
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding


def analyze(index: Index) -> Iterator[Finding]:
    for dr in index.of("DestinationRule"):
        host = get(dr.spec, "host")
        if isinstance(host, str) and host and not index.has_host(host, dr.namespace):
            yield report(msg.UNKNOWN_DR_HOST, dr, "spec.host", host)
