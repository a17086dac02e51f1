"""Istio's own validation tables (pkg/config/validation/validation_test.go, ported to YAML under
tests/istio_corpus/testdata/validation/), judged in process, one test per table.

tests/istio_corpus/test_istio_agreement.py turns every row into a test of its own; this runs the same rows a
table at a time among the unit tests, where the validator's decisions are pinned (and where `make mutate` looks
for the tests that kill a changed decision). A row whose Go input has no YAML form (`go_only`) is left out.
"""
from __future__ import annotations

from collections import defaultdict

import pytest

from tests.istio_corpus.corpus import ValidationCase, judge_validation_case, validation_cases, validation_warnings


def _tables() -> dict[str, list[ValidationCase]]:
    tables: dict[str, list[ValidationCase]] = defaultdict(list)
    for case in validation_cases():
        if not case.go_only:
            tables[case.table].append(case)
    return dict(tables)


TABLES = _tables()


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_row_of_istio_validation_table_is_judged_as_istio_judges_it(table: str):
    """Istio's verdict (valid or not) and, where the table says, whether it warns."""
    wrong = []
    for case in TABLES[table]:
        valid, errors = judge_validation_case(case)
        if valid != case.valid:
            wrong.append(f"{case.id}: Istio says {'valid' if case.valid else 'invalid'}; errors {errors}")
        if case.warning is not None:
            warnings = validation_warnings(case)
            if bool(warnings) != case.warning:
                wrong.append(f"{case.id}: Istio {'warns' if case.warning else 'does not warn'}; warnings {warnings}")
    assert not wrong, "\n".join(wrong)
