"""Print how far `meshctl analyze` / `meshctl validate` agree with Istio on Istio's own test corpora
(tests/istio_corpus): per claimed IST code the findings Istio expects that meshctl gives (recall) and the
findings meshctl gives that Istio expects (precision), then the CRD valid/invalid documents per kind.
Run from the repo root:

    .venv/bin/python scripts/istio_agreement.py [-v]    # -v: every disagreeing row and document
"""
from __future__ import annotations

import pathlib
import sys
from collections import Counter, defaultdict
from typing import Iterable, Iterator

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tests.istio_corpus.corpus import (  # noqa: E402
    ANALYZER_CASES, LOADED_CRD_KINDS, crd_documents, judge_validation_case, run_case, validate_document,
    validation_cases, validation_warnings,
)


def pct(num: int, den: int) -> str:
    return f"{100 * num / den:5.1f} %" if den else "    - "


def analyzer_table(verbose: bool) -> None:
    hit, missed, extra = Counter(), Counter(), Counter()
    for case in ANALYZER_CASES:
        if case.out_of_scope:
            print(f"  left out of the figures: {case.name}: {case.known_difference}")
            continue
        out = run_case(case)
        for (code, _), n in (out.expected & out.actual).items():
            hit[code] += n
        for (code, _), n in out.missed.items():
            missed[code] += n
        for (code, _), n in out.extra.items():
            extra[code] += n
        if verbose and not out.agrees:
            print(f"  {case.name}: missed {sorted(out.missed.elements())} extra {sorted(out.extra.elements())}")
    print(f"{'code':8} {'expected':>8} {'agreed':>7} {'missed':>7} {'extra':>6} {'recall':>8} {'precision':>10}")
    codes = sorted(set(hit) | set(missed) | set(extra))
    for code in codes:
        exp = hit[code] + missed[code]
        print(f"{code:8} {exp:8} {hit[code]:7} {missed[code]:7} {extra[code]:6} {pct(hit[code], exp):>8} "
              f"{pct(hit[code], hit[code] + extra[code]):>10}")
    h, m, e = sum(hit.values()), sum(missed.values()), sum(extra.values())
    print(f"{'overall':8} {h + m:8} {h:7} {m:7} {e:6} {pct(h, h + m):>8} {pct(h, h + e):>10}")
    counted = [c for c in ANALYZER_CASES if not c.out_of_scope]
    print(f"rows agreeing: {sum(run_case(c).agrees for c in counted)}/{len(counted)} "
          f"({len(ANALYZER_CASES) - len(counted)} out of scope)")


def verdict_table(label: str, verdicts: Iterable[tuple[str, bool, bool]]) -> None:
    """Per group: documents, agreeing verdicts, and precision of meshctl's "invalid" against Istio's."""
    by_group: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # agree, total, flagged, flagged-invalid
    for group, istio_valid, valid in verdicts:
        row = by_group[group]
        row[0] += valid == istio_valid
        row[1] += 1
        row[2] += not valid
        row[3] += not valid and not istio_valid
    print(f"{label:30} {'docs':>5} {'agreed':>7} {'agreement':>10} {'precision(invalid)':>19}")
    total = [0, 0, 0, 0]
    for group, row in sorted(by_group.items()) + [("overall", None)]:
        if row is None:
            row = total
        else:
            total = [a + b for a, b in zip(total, row)]
        print(f"{group:30} {row[1]:5} {row[0]:7} {pct(row[0], row[1]):>10} {pct(row[3], row[2]):>19}")


def crd_verdicts(verbose: bool) -> Iterator[tuple[str, bool, bool]]:
    for doc in crd_documents():
        if doc.kind not in LOADED_CRD_KINDS:
            continue
        _, valid, findings = validate_document(doc)
        if verbose and valid != doc.valid:
            said = "; ".join(f"{f.code} {f.message}" for f in findings if f.level.label == "Error")[:160]
            print(f"  {doc.id} {doc.kind}: Istio {'valid' if doc.valid else 'invalid: ' + doc.istio_error}; "
                  f"meshctl {'valid' if valid else 'invalid: ' + said}")
        yield doc.kind, doc.valid, valid


def validation_verdicts(verbose: bool) -> Iterator[tuple[str, bool, bool]]:
    for case in validation_cases():
        if case.go_only:
            print(f"  left out of the figures: {case.id}: {case.go_only}")
            continue
        valid, errors = judge_validation_case(case)
        if verbose and valid != case.valid:
            print(f"  {case.id}: Istio {'valid' if case.valid else 'invalid'}; meshctl "
                  f"{'valid' if valid else 'invalid: ' + '; '.join(errors)[:160]}")
        yield case.table, case.valid, valid


def main(argv: list[str]) -> None:
    verbose = "-v" in argv
    print("Istio analyzer grid (pkg/config/analysis/analyzers/analyzers_test.go), claimed codes:")
    analyzer_table(verbose)
    print("\nIstio CRD corpus (pkg/config/validation/testdata/crds), kinds meshctl loads:")
    verdict_table("kind", crd_verdicts(verbose))
    print("\nIstio validation tables (pkg/config/validation/validation_test.go):")
    verdict_table("table", validation_verdicts(verbose))
    told = [c for c in validation_cases() if c.warning is not None and not c.go_only]
    agree = sum(bool(validation_warnings(c)) == c.warning for c in told)
    print(f"warnings: {agree}/{len(told)} cases agree on whether Istio warns "
          f"(Istio warns on {sum(bool(c.warning) for c in told)})")


if __name__ == "__main__":
    main(sys.argv[1:])
