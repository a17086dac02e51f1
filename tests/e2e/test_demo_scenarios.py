"""`make demo SCENARIO=...`: every lesson runs in one live demo mesh and every claim it prints holds.

Each scenario checks its own claims against the running mesh (pyproxy/demo_scenarios.py: the status codes the
client saw, the headers, the stats that moved); this test runs them all, in order, in one mesh (each puts
the config back as it found it), and fails on any ✘ or on a scenario that did not run.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from pyproxy.demo_scenarios import SCENARIOS

pytestmark = pytest.mark.timeout(300)


@pytest.mark.slow
def test_every_scenario_shows_the_effect_it_claims():
    r = subprocess.run([sys.executable, "-m", "pyproxy.demo_mesh", "--once", "--scenario", "all"],
                       capture_output=True, text=True, timeout=280)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "✘" not in out, out[-4000:]
    for name in SCENARIOS:
        section = out.split(f"[scenario {name}]", 1)
        assert len(section) == 2, f"scenario {name} did not run"
        body = section[1].split("[scenario ", 1)[0]
        assert body.count("✔") >= 2 and "how: " in body, body
    assert out.count("✔") == sum(body.count("✔") for body in out.split("[scenario ")[1:])


def test_an_unknown_scenario_is_one_line_and_exit_2():
    r = subprocess.run([sys.executable, "-m", "pyproxy.demo_mesh", "--scenario", "nope"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "unknown scenario 'nope'" in r.stderr and "Traceback" not in r.stderr
