"""Istio's public samples (bookinfo, known-good, httpbin) load without errors; the demo mesh is clean."""
from __future__ import annotations

from pathlib import Path

import pytest

from control.analyze import analyze
from control.istio.load import load_paths, load_text
from control.istio.messages import Level

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "istio"
SAMPLES = sorted(p for d in ("bookinfo", "known-good", "httpbin") for p in (FIXTURES / d).glob("*.yaml"))


def test_the_sample_set_is_there():
    assert len(SAMPLES) >= 50


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("strict", [False, True], ids=["serving", "strict"])
def test_istio_sample_loads_without_errors(path, strict):
    result = load_paths([str(path)], strict=strict)
    errors = [str(f) for f in result.findings if f.level >= Level.ERROR]
    assert errors == []
    assert result.resources, "every sample file holds at least one resource"


def test_cors_sample_loads_with_its_policy_for_translation():
    result = load_paths([str(FIXTURES / "known-good" / "rule-default-route-cors-policy.yaml")])
    assert [f for f in result.findings if f.code == "PYM0004"] == []  # translated: control/translate/routes.py
    (vs,) = [r for r in result.resources if r.kind == "VirtualService"]
    assert "corsPolicy" in vs.spec["http"][0]


def test_fields_not_translated_yet_are_named_not_dropped_silently():
    text = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n"
            "  host: r\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n"
            "      localityLbSetting: {enabled: true}\n")
    result = load_text(text, "dr.yaml")
    (f,) = [f for f in result.findings if f.code == "PYM0004"]
    assert f.path == "spec.trafficPolicy.loadBalancer.localityLbSetting" and f.line == 9
    assert "locality load balancing" in f.message and f.level == Level.WARNING
    (dr,) = result.resources
    assert "localityLbSetting" in dr.spec["trafficPolicy"]["loadBalancer"]  # kept for whoever supports it later


def test_obsolete_websocket_upgrade_is_a_deprecation_not_an_error():
    result = load_paths([str(FIXTURES / "known-good" / "rule-websocket-route.yaml")], strict=True)
    assert {f.code for f in result.findings} == {"IST0002"}
    assert all("websocketUpgrade" in f.message for f in result.findings)


def test_demo_mesh_loads_and_analyzes_with_zero_findings():
    result = load_paths([str(ROOT / "examples" / "mesh")], strict=True)
    assert result.findings == ()
    kinds = {r.kind for r in result.resources}
    assert {"Service", "Deployment", "Gateway", "VirtualService", "DestinationRule"} <= kinds
    assert analyze(result.resources) == ()
