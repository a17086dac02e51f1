"""Golden files: Istio YAML in, Envoy v3 resources out, each resource valid against Envoy's protos.

* `tests/golden/<case>/input.yaml` -> `expected.json`: one small hand case per feature. The first line of
  `input.yaml` says which proxy to render: `# render: --workload NAME [--namespace NS]` or
  `# render: --gateway NAME`.
* Bookinfo: each of the 21 networking samples in `tests/fixtures/bookinfo/` applied together with
  `destination-rule-all.yaml` and `platform-kube-bookinfo.yaml` (the Kubernetes manifests) ->
  `tests/golden/bookinfo/<sample>.json`, rendered for the proxy the sample is about (the gateway for gateway
  samples, reviews-v2 (a ratings client) for ratings samples, productpage-v1 otherwise).

`UPDATE_GOLDEN=1 pytest tests/unit/control/test_translate_golden.py` rewrites the expected files; review the
diff before committing it. Expected files also record the translator's notes (what it did not translate).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from control.istio.load import load_paths
from control.istio.messages import Level
from control.mesh import build_mesh
from control.translate import render_gateway, render_sidecar
from tests.golden.envoy_schema import check_rendered

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "golden"
BOOKINFO = ROOT / "fixtures" / "bookinfo"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
BOOKINFO_BASE = ("platform-kube-bookinfo.yaml", "destination-rule-all.yaml")
BOOKINFO_SAMPLES = sorted(p.name for p in BOOKINFO.glob("*.yaml") if p.name != "platform-kube-bookinfo.yaml")
HAND_CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").exists())


def _render(paths: list[Path], directive: str) -> dict:
    result = load_paths([str(p) for p in paths])
    errors = [str(f) for f in result.findings if f.level >= Level.ERROR]
    assert not errors, errors
    mesh = build_mesh(result.resources)
    args = directive.split()
    opts = dict(zip(args[::2], args[1::2]))
    if "--gateway" in opts:
        rendered = render_gateway(mesh, opts["--gateway"], opts.get("--namespace"))
    else:
        rendered = render_sidecar(mesh, opts["--workload"], opts.get("--namespace"))
    return {**rendered.as_dict(), "notes": list(rendered.notes)}


def _compare(actual: dict, expected_path: Path) -> None:
    text = json.dumps(actual, indent=1, sort_keys=False) + "\n"
    if UPDATE or not expected_path.exists():
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_text(text)
        if not UPDATE:
            pytest.fail(f"{expected_path} did not exist; written now (review and commit it)")
    expected = json.loads(expected_path.read_text())
    assert actual == expected, f"{expected_path} differs (UPDATE_GOLDEN=1 to regenerate, then review the diff)"


def _relative_sources(doc: dict, base: Path) -> dict:
    """Notes name files; keep them relative so the golden files do not depend on the checkout path."""
    doc["notes"] = [n.replace(str(base) + os.sep, "") for n in doc["notes"]]
    return doc


@pytest.mark.parametrize("case", HAND_CASES)
def test_hand_case_matches_golden_and_envoy_schema(case: str) -> None:
    source = GOLDEN / case / "input.yaml"
    first = source.read_text().splitlines()[0]
    match = re.match(r"#\s*render:\s*(.+)", first)
    assert match, f"{source}: first line must be '# render: --workload NAME' or '# render: --gateway NAME'"
    actual = _relative_sources(_render([source], match.group(1)), GOLDEN / case)
    assert check_rendered(actual) > 0
    _compare(actual, GOLDEN / case / "expected.json")


def _bookinfo_proxy(sample: str) -> str:
    if "gateway" in sample:
        return "--gateway istio-ingressgateway"
    if "ratings" in sample:
        return "--workload reviews-v2"
    return "--workload productpage-v1"


def test_all_21_bookinfo_samples_are_covered() -> None:
    assert len(BOOKINFO_SAMPLES) == 21


@pytest.mark.parametrize("sample", BOOKINFO_SAMPLES)
def test_bookinfo_sample_matches_golden_and_envoy_schema(sample: str) -> None:
    paths = [BOOKINFO / name for name in BOOKINFO_BASE]
    if sample not in BOOKINFO_BASE:
        paths.append(BOOKINFO / sample)
    actual = _relative_sources(_render(paths, _bookinfo_proxy(sample)), BOOKINFO)
    assert check_rendered(actual) > 0
    _compare(actual, GOLDEN / "bookinfo" / sample.replace(".yaml", ".json"))
