"""IST0112 VirtualServiceDestinationPortSelectorRequired: a VirtualService routes to a service with several
ports without saying which, so Istio cannot tell which port the route is for.

Istio's analyzer: virtualservice/destinationhosts.go (checkServiceEntryPorts), for route destinations and
mirrors whose host resolves (exportTo honoured, control.analyze.index.Index.destination_service).
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import Index, get, report
from control.analyze.referenced_resource_not_found import destinations
from control.istio import messages as msg
from control.istio.messages import Finding


def analyze(index: Index) -> Iterator[Finding]:
    for vs in index.of("VirtualService"):
        export_to = tuple(get(vs.spec, "exportTo", default=()))
        for path, dest, _ in destinations(vs):
            host = str(dest.get("host") or "")
            service = index.destination_service(host, vs.namespace, export_to)
            if service is not None and get(dest, "port") is None and len(service.ports) > 1:
                yield report(msg.VS_DESTINATION_PORT_SELECTOR_REQUIRED, vs, f"{path}.host", host,
                             "[" + " ".join(str(p) for p in service.ports) + "]")
