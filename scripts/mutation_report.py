"""Mutation score per decision module, from mutmut 3's results in mutants/ (`make mutate` runs this after it).

    python scripts/mutation_report.py [MODULE_PREFIX]     # e.g. pyproxy.upstream.outlier

Prints a Markdown table (module, mutants, killed, survived, of them listed as equivalent, not run, score) and
then the survivors nobody has explained, by function: that is where a missing test or an equivalent mutant lives
(`mutmut show NAME` prints one as a diff). Survivors judged equivalent are listed, one table row each with the
reason, in tests/mutation-survivors.md.

score = killed / (killed + survived): every survivor counts against it, listed or not. "score excl. equivalent"
leaves the listed equivalent mutants out of the denominator, the usual definition of a mutation score (an
equivalent mutant is the same program, so no test can kill it). A listed name that is no longer a survivor (killed
since, or renumbered because its function changed) is reported as stale, so the list cannot rot silently.
"""
from __future__ import annotations

import collections
import json
import pathlib
import re
import sys

# mutmut's exit codes (mutmut/stats.py status_by_exit_code). Killed: the tests failed (3 is pytest's "internal
# error", which mutmut counts as a kill) or the mutant hung past mutmut's timeout (an infinite loop is caught).
# Survived: the tests passed, or no test reaches the mutated function at all (5, 33: "no tests"), which is worse.
KILLED = {1, 3, 36, 24, -24, 152, 255}
SURVIVED = {0, 5, 33}


def results(root: pathlib.Path) -> dict[str, dict[str, int | None]]:
    """module (dotted) -> mutant name -> exit code (None: not run)."""
    out: dict[str, dict[str, int | None]] = {}
    for meta in sorted(root.glob("**/*.py.meta")):
        rel = meta.relative_to(root).with_suffix("").with_suffix("")
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        out[".".join(rel.parts)] = codes
    return out


def listed_equivalents(path: pathlib.Path) -> set[str]:
    """Mutant names in the first column of tests/mutation-survivors.md's tables (`| `name` | reason |`)."""
    if not path.exists():
        return set()
    return set(re.findall(r"^\|\s*`([\w.ǁ]+__mutmut_\d+)`\s*\|", path.read_text(encoding="utf-8"), re.M))


def function_of(mutant: str) -> str:
    """`pyproxy.upstream.outlier.xǁOutlierDetectorǁ_eject__mutmut_5` -> `OutlierDetector._eject`."""
    name = mutant.rsplit(".", 1)[-1].split("__mutmut_")[0]
    return name.removeprefix("x_").removeprefix("xǁ").replace("ǁ", ".")


def main(argv: list[str]) -> int:
    prefix = argv[0] if argv else ""
    data = {m: codes for m, codes in results(pathlib.Path("mutants")).items() if m.startswith(prefix)}
    if not data:
        print("no mutation results: run `make mutate` first", file=sys.stderr)
        return 1
    listed = listed_equivalents(pathlib.Path("tests/mutation-survivors.md"))
    print("| module | mutants | killed | survived | listed equivalent | not run | score | score excl. equivalent |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    unexplained: dict[str, collections.Counter] = {}
    stale: list[str] = []
    for module, codes in data.items():
        killed = sum(1 for c in codes.values() if c in KILLED)
        survived = [name for name, c in codes.items() if c in SURVIVED]
        equivalent = [n for n in survived if n in listed]
        stale += sorted(n for n in listed if n.startswith(module + ".") and codes.get(n, -1) not in SURVIVED
                        and n.rsplit(".", 1)[0] == module)
        other = len(codes) - killed - len(survived)
        judged = killed + len(survived)
        score = f"{100 * killed / judged:.1f} %" if judged else "-"
        real = judged - len(equivalent)
        excl = f"{100 * killed / real:.1f} %" if real else "-"
        print(f"| {module} | {len(codes)} | {killed} | {len(survived)} | {len(equivalent)} | {other} | {score} | {excl} |")
        unexplained[module] = collections.Counter(function_of(n) for n in survived if n not in listed)
    for module, by_function in unexplained.items():
        if by_function:
            print(f"\nunexplained survivors in {module}: "
                  + ", ".join(f"{f} {n}" for f, n in by_function.most_common()))
    if stale:
        print("\nlisted in tests/mutation-survivors.md but not a survivor now (killed, or renumbered): " + ", ".join(stale))
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
