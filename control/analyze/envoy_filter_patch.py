"""IST0151-IST0155: EnvoyFilter patches that Istio ignores or may apply out of order.

Istio's analyzer: envoyfilter/envoyfilter.go (EnvoyPatchAnalyzer), over the EnvoyFilters in name order:
* ADD or REMOVE on ROUTE_CONFIGURATION / HTTP_ROUTE is ignored (IST0153, IST0154, errors);
* REPLACE is only valid for HTTP_FILTER, NETWORK_FILTER and VIRTUAL_HOST (IST0152, error);
* a relative operation (INSERT_BEFORE/AFTER, and REMOVE/REPLACE where valid) in an EnvoyFilter without a
  priority may apply out of order (IST0151, warning), or IST0155 when an earlier patch with a `proxyVersion`
  match named the same filter (the patch value's `name`, else its listener filter-chain filter name), as it
  may then break during an upgrade.
A patch without `patch` stops the EnvoyFilter's checks, as in Istio.
PYM0011 (ours): a patch pyproxy mesh does not apply (control/translate/envoy_filter.py `unsupported`), named
with the EnvoyFilter and the field; translation skips it.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding
from control.translate.envoy_filter import unsupported_spec

ROUTE_LEVEL = ("ROUTE_CONFIGURATION", "HTTP_ROUTE")
REPLACEABLE = ("NETWORK_FILTER", "HTTP_FILTER", "VIRTUAL_HOST")


def _instance_name(patch: Mapping[str, Any]) -> str:
    value = get(patch, "patch", "value")
    if not isinstance(value, Mapping) or not value:
        return ""
    if "name" in value:
        return repr(value["name"])
    return str(get(patch, "match", "listener", "filterChain", "filter", "name", default="") or "")


def analyze(index: Index) -> Iterator[Finding]:
    for ef in sorted(index.of("EnvoyFilter"), key=lambda r: (r.namespace, r.name)):
        for path, why in unsupported_spec(ef.spec):
            yield report(msg.ENVOY_FILTER_UNSUPPORTED, ef, path, f"not applied by pyproxy mesh: {why}")
    with_proxy_version: list[str] = []  # instance names of earlier patches matching a proxyVersion
    for ef in sorted(index.of("EnvoyFilter"), key=lambda r: (r.namespace, r.name)):
        priority = get(ef.spec, "priority", default=0) or 0
        for i, patch in enumerate(get(ef.spec, "configPatches", default=())):
            if not isinstance(get(patch, "patch"), Mapping):
                break
            path = f"spec.configPatches[{i}].patch.operation"
            name = _instance_name(patch)
            operation, apply_to = get(patch, "patch", "operation"), get(patch, "applyTo")
            relative = operation in ("INSERT_BEFORE", "INSERT_AFTER")
            if operation == "ADD" and apply_to in ROUTE_LEVEL:
                yield report(msg.ENVOY_FILTER_ADD_INCORRECTLY, ef, path)
            elif operation == "REMOVE":
                if apply_to in ROUTE_LEVEL:
                    yield report(msg.ENVOY_FILTER_REMOVE_INCORRECTLY, ef, path)
                else:
                    relative = True
            elif operation == "REPLACE":
                if apply_to not in REPLACEABLE:
                    yield report(msg.ENVOY_FILTER_REPLACE_INCORRECTLY, ef, path)
                else:
                    relative = True
            if relative and priority == 0:
                yield report(msg.ENVOY_FILTER_RELATIVE_WITH_PROXY_VERSION if name in with_proxy_version
                             else msg.ENVOY_FILTER_RELATIVE_OPERATION, ef, path)
            if get(patch, "match", "proxy", "proxyVersion"):
                with_proxy_version.append(name)
