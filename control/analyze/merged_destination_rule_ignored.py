"""PYM0007 MergedDestinationRuleIgnored: several DestinationRules for one host in one namespace, where the merge
drops something a later rule says.

istiod merges DestinationRules of the same host and namespace (`mergeDestinationRule`, the rules taken in
creation order; here, the order the files are read): subsets are concatenated, a later subset with a name
already seen is dropped, and only the first rule's top-level `trafficPolicy` applies, a later rule's is
ignored. Istio has no analyzer for this (Kiali's KIA0201 is the closest); it is reported here because the
ignored part is silent in a cluster and depends on creation order. Rules with a `workloadSelector` are not
merged with selector-less ones (Istio keeps them apart) and are left out.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from control.analyze.index import Index, get, report
from control.istio import messages as msg
from control.istio.messages import Finding


def analyze(index: Index) -> Iterator[Finding]:
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for host, rules in index.destination_rules.items():
        for dr in rules:
            if not get(dr.spec, "workloadSelector"):
                groups[(host, dr.namespace)].append(dr)
    for (host, namespace), rules in groups.items():
        if len(rules) < 2:
            continue
        names = ",".join(f"{r.namespace}/{r.name}" for r in rules)
        policy_owner = next((r for r in rules if get(r.spec, "trafficPolicy")), None)
        seen: set[str] = set()
        for dr in rules:
            if get(dr.spec, "trafficPolicy") and dr is not policy_owner:
                yield report(msg.MERGED_DESTINATION_RULES, dr, "spec.trafficPolicy", names, host, namespace,
                             f"the trafficPolicy of {dr.namespace}/{dr.name} is ignored, the one of "
                             f"{policy_owner.namespace}/{policy_owner.name} applies")
            for i, subset in enumerate(get(dr.spec, "subsets", default=())):
                name = get(subset, "name")
                if name in seen:
                    yield report(msg.MERGED_DESTINATION_RULES, dr, f"spec.subsets[{i}]", names, host, namespace,
                                 f"subset {name} of {dr.namespace}/{dr.name} is ignored, an earlier rule "
                                 "defines it")
                seen.add(name)
