"""IST0134 ServiceEntryAddressesRequired: a ServiceEntry with TCP ports (or ports without a protocol) and no
`addresses`: sidecars cannot tell its traffic apart from other TCP traffic on the port.

Istio's analyzer: serviceentry/protocoladdresses.go, once per such port. Istio skips it when DNS capture with
address auto-allocation is on in meshConfig.defaultConfig.proxyMetadata (ISTIO_META_DNS_CAPTURE and
ISTIO_META_DNS_AUTO_ALLOCATE or PILOT_ENABLE_IP_AUTOALLOCATE "true"), read here from an IstioOperator's
meshConfig, or when the ServiceEntry's status has allocated addresses (a cluster's; files have none).
"""
from __future__ import annotations

from typing import Iterator

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding


def auto_allocated(index: Index) -> bool:
    for iop in index.of("IstioOperator"):
        meta = get(iop.spec, "meshConfig", "defaultConfig", "proxyMetadata", default={}) or {}
        if meta.get("ISTIO_META_DNS_CAPTURE") == "true" and "true" in (
                meta.get("ISTIO_META_DNS_AUTO_ALLOCATE"), meta.get("PILOT_ENABLE_IP_AUTOALLOCATE")):
            return True
    return False


def analyze(index: Index) -> Iterator[Finding]:
    if auto_allocated(index):
        return
    for se in index.of("ServiceEntry"):
        if get(se.spec, "addresses") is not None:
            continue
        for i, port in enumerate(get(se.spec, "ports", default=())):
            if str(get(port, "protocol", default="") or "").upper() in ("", "TCP"):
                yield report(msg.SERVICE_ENTRY_ADDRESSES_REQUIRED, se, f"spec.ports[{i}].protocol")
