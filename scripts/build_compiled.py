"""The optional compiled build: the request path's modules compiled with mypyc, in a copy of the repository.

    .venv/bin/python scripts/build_compiled.py [--out build/compiled]      # `make compiled`, ~2 min

Why a copy: a compiled module (`connection.cpython-311-x86_64-linux-gnu.so`) next to its `.py` shadows it, so
an edit of the `.py` would silently not run. Here the source tree is never touched: the tracked files are copied
to `--out`, `.venv`, `.venv-envoy` and `.prometheus` are linked into it, and the modules below are compiled in place there.
The interpreted tree stays the default (what `make demo` and `make test` run); the copy runs the same code
compiled:

    PYTHONPATH=build/compiled .venv/bin/pyproxy run -c bootstrap.json        # the compiled proxy
    make test-compiled                                                         # the suite against it

mypyc (mypy's compiler; black and mypy ship compiled with it) turns the annotated classes into C structs with
direct attribute access and the annotated calls into C calls: the same source, no Cython dialect. The modules
are the ones every request runs through (benchmarks/request_path_bench.py, docs/performance.md);
what mypyc needed changed in them is listed in docs/performance.md (*The compiled build*).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The request path (accept -> parse -> route -> pick -> upstream -> response), in the order a request meets them
COMPILED = (
    "pyproxy/http/connection.py",
    "pyproxy/http/headers.py",
    "pyproxy/http/codec.py",
    "pyproxy/http/forwarded.py",
    "pyproxy/http/flush.py",
    "pyproxy/routing/table.py",
    "pyproxy/filters/router.py",
    "pyproxy/upstream/load_balancer.py",
    "pyproxy/upstream/pool.py",
    "pyproxy/upstream/connection.py",
    "pyproxy/upstream/cluster_manager.py",
    "pyproxy/upstream/circuit_breaker.py",
    "pyproxy/upstream/host.py",
    "pyproxy/observe/stats.py",
    "pyproxy/observe/stream_info.py",
    "pyproxy/server.py",
    # what a sidecar adds on every request (benchmarks/run.py's sidecar rows): retries, Istio's metrics, access log
    "pyproxy/routing/retry.py",
    "pyproxy/filters/istio_stats.py",
    "pyproxy/observe/istio_metrics.py",
    "pyproxy/observe/access_log.py",
)


def tracked_files() -> list[str]:
    """What `git` tracks, plus new files not yet committed (not the ignored ones: .venv, build/)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p]


def copy_tree(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for rel in tracked_files():
        src = REPO / rel
        if not src.is_file():
            continue  # deleted in the work tree, not yet committed
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    for venv in (".venv", ".venv-envoy", ".prometheus"):  # installed by make setup, envoy, prometheus
        if (REPO / venv).exists():
            (out / venv).symlink_to(REPO / venv)


def compile_modules(out: Path, modules: tuple[str, ...] = COMPILED) -> None:
    """mypyc over `modules` as one group (calls between them become C calls), .so files left in place."""
    code = ("from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            "setup(name='pyproxy-compiled', script_args=['build_ext', '--inplace', '-q'],\n"
            "      ext_modules=mypycify(['--ignore-missing-imports', '--follow-imports=silent'] + %r))\n"
            % list(modules))
    subprocess.run([sys.executable, "-c", code], cwd=out, check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "build" / "compiled"), help="where the compiled copy goes")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    t0 = time.monotonic()
    copy_tree(out)
    try:
        compile_modules(out)
    except subprocess.CalledProcessError as e:
        print(f"build_compiled: mypyc failed (exit {e.returncode}); the interpreted tree is unaffected",
              file=sys.stderr)
        return 1
    built = sorted(str(p.relative_to(out)) for p in out.glob("pyproxy/**/*.so"))
    print(f"build_compiled: {len(built)} modules compiled into {out} in {time.monotonic() - t0:.0f} s")
    return 0 if len(built) == len(COMPILED) else 1


if __name__ == "__main__":
    sys.exit(main())
