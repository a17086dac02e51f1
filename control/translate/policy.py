"""Which DestinationRule traffic policy applies to one cluster (service port P, subset S).

istiod's `MergeTrafficPolicy` (pilot/pkg/model/destination_rule.go, util.MergeSubsetTrafficPolicy), at the
granularity of whole sub-objects, never field by field:

1. Start from the rule's top-level policy; a `portLevelSettings` entry for P replaces its `connectionPool`,
   `outlierDetection`, `loadBalancer` and `tls` wholesale (omitted ones fall back to defaults, NOT to the
   top-level values).
2. A subset's policy then overrides each of those four objects it sets (a subset `connectionPool` with only
   `http` wipes the parent's `tcp`); `tunnel`, `proxyProtocol`, `retryBudget` only when set.
3. A subset `portLevelSettings` entry for P replaces all four again, even the ones it leaves unset.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from control.mesh import DestinationRuleView

SETTINGS = ("connectionPool", "outlierDetection", "loadBalancer", "tls")
EXTRAS = ("tunnel", "proxyProtocol", "retryBudget")


def _port_entry(policy: Mapping[str, Any], port: int) -> Mapping[str, Any] | None:
    for entry in policy.get("portLevelSettings") or ():
        number = (entry.get("port") or {}).get("number")
        if number is not None and int(number) == port:
            return entry
    return None


def _merge(original: Mapping[str, Any] | None, override: Mapping[str, Any] | None, port: int) \
        -> Mapping[str, Any] | None:
    if override is None:
        return original
    merged: dict[str, Any] = {}
    if original:
        merged.update({k: original[k] for k in SETTINGS + EXTRAS if original.get(k) is not None})
    for key in SETTINGS + EXTRAS:
        if override.get(key) is not None:
            merged[key] = override[key]
    entry = _port_entry(override, port)
    if entry is not None:
        for key in SETTINGS:
            merged.pop(key, None)
            if entry.get(key) is not None:
                merged[key] = entry[key]
    return MappingProxyType(merged)


def effective_policy(rule: DestinationRuleView | None, port: int, subset: str | None = None) \
        -> Mapping[str, Any] | None:
    """The traffic policy for cluster (port, subset) under `rule` (no subset: the service-level cluster); None
    when nothing applies (an empty policy included)."""
    if rule is None:
        return None
    policy = _merge(None, rule.traffic_policy, port)
    if subset:
        sub = rule.subset(subset)
        if sub is not None and sub.get("trafficPolicy"):
            policy = _merge(policy, sub["trafficPolicy"], port)
    return policy or None
