"""Every CLI answers a bad input file with one line naming it, a non-zero exit, and never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.process import REPO

MODULES = {"pyproxy": "pyproxy", "meshctl": "control.cli.meshctl", "control": "control.cli.control"}


def run_cli(program: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", MODULES[program], *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO)

BAD_FILES = {
    "binary.yaml": b"\x00\x01\x02\x89PNG",
    "empty.yaml": b"",
    "latin1.yaml": "kind: Gateway # caf\xe9\n".encode("latin-1"),
    "list.yaml": b"- a\n- b\n",
    "broken.yaml": b"a: [1, 2\nb: {",
}
COMMANDS = {
    "pyproxy validate": ["pyproxy", "validate", "-c"],
    "pyproxy run": ["pyproxy", "run", "-c"],
    "meshctl validate": ["meshctl", "validate", "-f"],
    "meshctl analyze": ["meshctl", "analyze"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", [*BAD_FILES, "a-directory"])
def test_bad_file_is_one_line_without_traceback(tmp_path, command, name):
    if name == "a-directory":
        path = tmp_path / "a-directory"
        path.mkdir()
        if command.startswith("meshctl"):
            pytest.skip("meshctl reads a directory's YAML files (an empty directory is covered by empty.yaml)")
    else:
        path = tmp_path / name
        path.write_bytes(BAD_FILES[name])
    proc = run_cli(*COMMANDS[command], str(path))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert any(str(path) in line or path.name in line for line in lines), output
    assert len([line for line in lines if line.lower().startswith(("error", "usage"))]) >= 1, output


@pytest.mark.parametrize("argv", [["pyproxy", "--version"], ["meshctl", "--version"], ["control", "--version"]])
def test_version(argv):
    proc = run_cli(*argv)
    assert proc.returncode == 0 and "0.1.0" in proc.stdout
