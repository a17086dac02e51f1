"""`meshctl validate` and `meshctl analyze` on hostile files: one line naming the file, exit code 1 (as for invalid
YAML), no traceback; the alias bomb under a 512 MiB address-space cap (RLIMIT_AS) to show that nothing is
expanded. Real subprocesses of the console scripts."""
from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from tests.hostile.files import CAP_BYTES, HOSTILE, valid_vs, write
from tests.support.mesh import console_script


def capped() -> None:
    """preexec_fn: the child may map at most CAP_BYTES (a blow-up is a MemoryError, not the machine's RAM)."""
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))


def meshctl(*args: str, cap: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([*console_script("meshctl", "control.cli.meshctl"), *args], capture_output=True,
                          text=True, timeout=60, preexec_fn=capped if cap else None)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_validate_reports_a_hostile_file_in_one_line_and_exits_1(tmp_path, name):
    content, needle = HOSTILE[name]
    path = tmp_path / name
    write(path, content)
    run = meshctl("validate", "-f", str(path), cap=True)
    assert run.returncode == 1, run
    assert "Traceback" not in run.stderr + run.stdout and run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"Error: {path}") and needle in line, line


def test_the_alias_bomb_is_refused_under_the_memory_cap_and_the_other_files_still_validate(tmp_path):
    write(tmp_path / "bomb.yaml", HOSTILE["bomb.yaml"][0])
    write(tmp_path / "vs.yaml", valid_vs(80))
    run = meshctl("analyze", str(tmp_path), cap=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr and "MemoryError" not in run.stderr
    assert run.stderr.splitlines() == [
        f"Error: {tmp_path}/bomb.yaml:1: YAML aliases expand to 4,412,961,486 more nodes (limit 100,000: "
        "an alias bomb?); the file is not loaded"]


def test_the_cap_is_real():
    """Control: under the same cap, a child cannot get CAP_BYTES of memory (so the tests above would have seen
    a MemoryError had the bomb been expanded: before the limits it took 1.16 GB)."""
    code = f"import sys\ntry:\n    bytearray({CAP_BYTES})\nexcept MemoryError:\n    sys.exit(42)\nsys.exit(0)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, preexec_fn=capped)
    assert run.returncode == 42, run.stderr[-500:]
