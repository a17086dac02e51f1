"""Branch-coverage floors for the pure decision modules, checked against a coverage data file.

    python scripts/coverage_floors.py DATA_FILE

The decision modules are pure by design, so their unit tests alone must cover them (tests/unit, in-process:
fast, and no subprocess measurement needed). `make coverage-floors` runs the unit tests under coverage and
then this check; `make test` runs it after the suite. A module under its floor fails with one line naming it,
its coverage and the floor.

The target for every decision module is 95 % (line + branch, coverage.py's "cover" column). Where a module is
not there yet its floor is what it measured when the floor was set, so coverage can only go up: raise the
number when you add tests, never lower it. TARGET_MET lists the modules already at the target.
"""
from __future__ import annotations

import io
import sys

from coverage import Coverage

TARGET = 95.0
FLOORS = {  # module -> floor (%); below TARGET = measured when set (2026-12-04, rounded down), to be raised
    "pyproxy/routing/table.py": 90.5,
    "pyproxy/routing/retry.py": 95.0,
    "pyproxy/upstream/outlier.py": 95.0,
    "pyproxy/upstream/load_balancer.py": 92.5,
    "pyproxy/upstream/circuit_breaker.py": 95.0,
    "pyproxy/filters/fault_logic.py": 95.0,
    "pyproxy/filters/rbac_logic.py": 94.5,
    "pyproxy/filters/jwt_authn_logic.py": 92.0,
    "pyproxy/http/path.py": 95.0,
    "pyproxy/http/headers.py": 89.0,
    "pyproxy/http/forwarded.py": 88.0,
    "pyproxy/listener/chain_match.py": 95.0,
    "pyproxy/observe/cel.py": 86.5,
    "pyproxy/tracing/sampling.py": 95.0,
    "pyproxy/tcp/rbac.py": 93.5,
    "control/translate/authn.py": 95.0,
    "control/translate/authz.py": 94.5,
    "control/translate/request_authn.py": 95.0,
    "control/translate/telemetry.py": 92.5,
    "control/translate/policy.py": 95.0,
    "control/translate/routes.py": 88.5,
    "control/translate/clusters.py": 86.0,
    "control/translate/listeners.py": 91.5,
    "control/translate/common.py": 89.0,
    "control/translate/tcp.py": 90.5,
    "control/istio/validate.py": 99.5,
    "control/inject.py": 95.0,
}


def percent(cov: Coverage, path: str) -> float | None:
    """coverage.py's combined line + branch percentage for one file, or None if it was never imported."""
    data = cov.get_data()
    matches = [f for f in data.measured_files() if f.endswith("/" + path)]
    if not matches:
        return None
    return cov.report(include=[matches[0]], file=io.StringIO())  # the "Cover" column of `coverage report`


def main(argv: list[str]) -> int:
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
