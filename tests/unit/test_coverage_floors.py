"""scripts/coverage_floors.py --whole: the whole-package floor CI holds pyproxy/ and control/ to.

The data files are written with coverage's own API (CoverageData), as a measured run would write them: a file
measured with none of its lines run is 0 %, under any floor."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from coverage import CoverageData

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def floors():
    spec = importlib.util.spec_from_file_location("coverage_floors", ROOT / "scripts" / "coverage_floors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(path: Path, measured: dict[str, set[int]]) -> str:
    data = CoverageData(basename=str(path))
    data.add_lines({str(ROOT / name): lines for name, lines in measured.items()})
    data.write()
    return str(path)


def test_a_package_under_the_floor_fails_with_the_figure(tmp_path, floors, capsys):
    data = _data(tmp_path / "cov", {"pyproxy/http/path.py": set()})
    assert floors.main(["--whole", data]) == 1
    err = capsys.readouterr().err
    assert err == (f"coverage floor: pyproxy/ and control/: 0.0 % branch coverage, under the floor "
                   f"{floors.WHOLE_FLOOR:.1f} %\n")


def test_at_the_floor_passes_and_says_the_figure(tmp_path, floors, capsys, monkeypatch):
    monkeypatch.setattr(floors, "WHOLE_FLOOR", 0.0)
    data = _data(tmp_path / "cov", {"pyproxy/http/path.py": set()})
    assert floors.main(["--whole", data]) == 0
    assert capsys.readouterr().out == "coverage of pyproxy/ and control/, whole suite: 0.0 % (floor 0.0 %)\n"


def test_files_outside_the_packages_do_not_count(tmp_path, floors, capsys):
    """Only pyproxy/ and control/ are held to the floor: data about tests/ alone is no data."""
    data = _data(tmp_path / "cov", {"tests/unit/test_coverage_floors.py": {1, 2, 3}})
    assert floors.main(["--whole", data]) == 1
    assert capsys.readouterr().err == "coverage floor: pyproxy/ and control/: No data to report.\n"
