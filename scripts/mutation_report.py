"""Mutation score per decision module, from mutmut 3's results in mutants/ (`make mutate` runs this after it).

    python scripts/mutation_report.py [MODULE_PREFIX]     # e.g. pyproxy.upstream.outlier

Prints a Markdown table (module, mutants, killed, survived, not run, score = killed / (killed + survived)) and
then the surviving mutants by function, which is where a missing test or an equivalent mutant lives
(`mutmut show NAME` prints one as a diff). Survivors judged equivalent are listed with their reason in
tests/mutation-survivors.md.
"""
from __future__ import annotations

import collections
import json
import pathlib
import sys

KILLED = {1, 3}  # the tests failed (3: pytest's "internal error" counts, as mutmut counts it)
SURVIVED = {0}


def results(root: pathlib.Path) -> dict[str, dict[str, int | None]]:
    """module (dotted) -> mutant name -> exit code (None: not run)."""
    out: dict[str, dict[str, int | None]] = {}
    for meta in sorted(root.glob("**/*.py.meta")):
        rel = meta.relative_to(root).with_suffix("").with_suffix("")
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        out[".".join(rel.parts)] = codes
    return out


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
    print("| module | mutants | killed | survived | not run | score |")
    print("|---|---:|---:|---:|---:|---:|")
    survivors: dict[str, collections.Counter] = {}
    for module, codes in data.items():
        killed = sum(1 for c in codes.values() if c in KILLED)
        survived = [name for name, c in codes.items() if c in SURVIVED]
        other = len(codes) - killed - len(survived)
        judged = killed + len(survived)
        score = f"{100 * killed / judged:.1f} %" if judged else "-"
        print(f"| {module} | {len(codes)} | {killed} | {len(survived)} | {other} | {score} |")
        survivors[module] = collections.Counter(function_of(n) for n in survived)
    for module, by_function in survivors.items():
        if by_function:
            print(f"\nsurvivors in {module}: " + ", ".join(f"{f} {n}" for f, n in by_function.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
