"""Branch-coverage floors for the pure decision modules, checked against a coverage data file.

    python scripts/coverage_floors.py DATA_FILE            the decision modules, each against its floor
    python scripts/coverage_floors.py --whole DATA_FILE    all of pyproxy/ and control/ against WHOLE_FLOOR

The decision modules are pure by design, so their unit tests alone must cover them (tests/unit, in-process:
fast, and no subprocess measurement needed). `make coverage-floors` runs the unit tests under coverage and
then this check (about 45 s on 2 cores); `make test` runs tests/unit the same way, checks, then runs the rest,
so CI fails when a floor is broken. A module under its floor fails with
one line naming it, its coverage and the floor.

The target for every decision module is 95 % (line + branch, coverage.py's "cover" column); every module
listed is there. Each floor is what the module measured when the floor was last raised (rounded down to 0.5),
so coverage can only go up: raise the number when you add tests, never lower it. New code in a module at 100
needs its test in the same change.

`--whole` checks the whole of pyproxy/ and control/ together, from the combined data of the whole suite
(`make test` runs the rest of the suite under coverage too, subprocesses included, and combines it with the unit
data): the project's floor there is 85 %; WHOLE_FLOOR is held a little under what it measures, because
the e2e tests reach some branches (a retry after a slow start, a reconnect) only on some runs.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

from coverage import Coverage
from coverage.exceptions import NoDataError

TARGET = 95.0
WHOLE_FLOOR = 92.0  # measured 94.1 % (2026-12-04, c088871); the project's floor is 85 %
ROOT = Path(__file__).resolve().parent.parent
FLOORS = {  # module -> floor (%): what it measured when last raised (2026-12-04, rounded down to 0.5)
    "pyproxy/routing/table.py": 99.0,
    "pyproxy/routing/retry.py": 97.5,
    "pyproxy/upstream/outlier.py": 99.5,
    "pyproxy/upstream/load_balancer.py": 100.0,
    "pyproxy/upstream/circuit_breaker.py": 100.0,
    "pyproxy/filters/fault_logic.py": 99.0,
    "pyproxy/filters/rbac_logic.py": 100.0,
    "pyproxy/filters/jwt_authn_logic.py": 99.0,
    "pyproxy/filters/local_ratelimit_logic.py": 98.5,
    "pyproxy/http/path.py": 100.0,
    "pyproxy/http/headers.py": 100.0,
    "pyproxy/http/forwarded.py": 98.0,
    "pyproxy/listener/chain_match.py": 98.0,
    "pyproxy/observe/cel.py": 100.0,
    "pyproxy/tracing/sampling.py": 100.0,
    "pyproxy/tcp/rbac.py": 100.0,
    "control/translate/authn.py": 99.0,
    "control/translate/authz.py": 99.0,
    "control/translate/request_authn.py": 99.0,
    "control/translate/telemetry.py": 99.5,
    "control/translate/policy.py": 100.0,
    "control/translate/routes.py": 97.0,
    "control/translate/clusters.py": 96.0,
    "control/translate/listeners.py": 100.0,
    "control/translate/common.py": 100.0,
    "control/translate/tcp.py": 96.0,
    "control/istio/validate.py": 100.0,
    "control/inject.py": 100.0,
}


def percent(cov: Coverage, path: str) -> float | None:
    """coverage.py's combined line + branch percentage for one file, or None if it was never imported."""
    data = cov.get_data()
    matches = [f for f in data.measured_files() if f.endswith("/" + path)]
    if not matches:
        return None
    return cov.report(include=[matches[0]], file=io.StringIO())  # the "Cover" column of `coverage report`


def whole(data_file: str) -> int:
    """The whole-package floor: line + branch coverage of pyproxy/ and control/ together."""
    cov = Coverage(data_file=data_file)
    cov.load()
    include = [f"{ROOT}/pyproxy/*", f"{ROOT}/control/*"]
    try:
        got = cov.report(include=include, file=io.StringIO())
    except NoDataError as e:  # nothing under pyproxy/ or control/ was measured
        print(f"coverage floor: pyproxy/ and control/: {e}", file=sys.stderr)
        return 1
    if got + 1e-9 < WHOLE_FLOOR:
        print(f"coverage floor: pyproxy/ and control/: {got:.1f} % branch coverage, under the floor "
              f"{WHOLE_FLOOR:.1f} %", file=sys.stderr)
        return 1
    print(f"coverage of pyproxy/ and control/, whole suite: {got:.1f} % (floor {WHOLE_FLOOR:.1f} %)")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--whole":
        return whole(argv[1])
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    cov = Coverage(data_file=argv[0])
    cov.load()
    failed = []
    for path, floor in FLOORS.items():
        got = percent(cov, path)
        if got is None:
            failed.append(f"{path}: not measured (did its unit tests run?)")
        elif got + 1e-9 < floor:
            failed.append(f"{path}: {got:.1f} % branch coverage, under its floor {floor:.1f} %")
    below_target = [p for p, f in FLOORS.items() if f < TARGET]
    for line in failed:
        print(f"coverage floor: {line}", file=sys.stderr)
    print(f"coverage floors: {len(FLOORS) - len(failed)}/{len(FLOORS)} decision modules at or above their floor; "
          f"{len(FLOORS) - len(below_target)} at the {TARGET:.0f} % target")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
