"""Golden files: Istio YAML in, Envoy v3 resources out, each resource valid against Envoy's protos.

* `tests/golden/<case>/input.yaml` -> `expected.json`: one small hand case per feature. The first line of
  `input.yaml` says which proxy to render: `# render: --workload NAME [--namespace NS]` or
  `# render: --gateway NAME`.
* The original brief's YAML (`tests/fixtures/istio/brief/`, with its real mistakes) plus the Kubernetes side it
  assumes (`tests/golden/brief/registry.yaml`), loaded for serving (unknown fields dropped with a warning, the
  IstioOperator with an invalid profile rejected) -> `tests/golden/brief/<proxy>.json`, for the ingress
  gateway and for the my-app-v1 sidecar. The expected files also record the load findings.
* Bookinfo: each of the 21 networking samples in `tests/fixtures/istio/bookinfo/` applied together with
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
BOOKINFO = ROOT / "fixtures" / "istio" / "bookinfo"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
BOOKINFO_BASE = ("platform-kube-bookinfo.yaml", "destination-rule-all.yaml")
BOOKINFO_SAMPLES = sorted(p.name for p in BOOKINFO.glob("*.yaml") if p.name != "platform-kube-bookinfo.yaml")
HAND_CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").exists())


def _render(paths: list[Path], directive: str, *, allowed_errors: tuple[str, ...] = ()) -> dict:
    result = load_paths([str(p) for p in paths])
    errors = [str(f) for f in result.findings if f.level >= Level.ERROR]
    assert [e for e in errors if not any(a in e for a in allowed_errors)] == [], errors
    mesh = build_mesh(result.resources)
    args = directive.split()
    opts = dict(zip(args[::2], args[1::2]))
    if "--gateway" in opts:
        rendered = render_gateway(mesh, opts["--gateway"], opts.get("--namespace"))
    else:
        rendered = render_sidecar(mesh, opts["--workload"], opts.get("--namespace"))
    out = {**rendered.as_dict(), "notes": list(rendered.notes)}
    if allowed_errors:
        out["load_findings"] = [str(f) for f in result.findings if f.level >= Level.WARNING]
    return out


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
    for key in ("notes", "load_findings"):
        if key in doc:
            doc[key] = [n.replace(str(base) + os.sep, "") for n in doc[key]]
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


# --- the brief's YAML, mistakes and all ------------------------------------------------------------------

BRIEF = ROOT / "fixtures" / "istio" / "brief"
BRIEF_PROXIES = {"gateway": "--gateway istio-ingressgateway", "sidecar-my-app-v1": "--workload my-app-v1"}
# The one hard error in the brief: it rejects that resource only (profile "production" is no Istio profile).
BRIEF_REJECTED = ('IST0106] (IstioOperator istio-system/control-plane', 'profile "production"')


def _brief(proxy: str) -> dict:
    paths = sorted(BRIEF.glob("*.yaml")) + [GOLDEN / "brief" / "registry.yaml"]
    return _relative_sources(_render(paths, BRIEF_PROXIES[proxy], allowed_errors=BRIEF_REJECTED), ROOT)


@pytest.mark.parametrize("proxy", sorted(BRIEF_PROXIES))
def test_brief_yaml_renders_after_loading_for_serving(proxy: str) -> None:
    actual = _brief(proxy)
    assert check_rendered(actual) > 0
    _compare(actual, GOLDEN / "brief" / f"{proxy}.json")


def test_brief_serving_load_drops_misplaced_fields_with_a_warning_naming_file_and_line() -> None:
    findings = _brief("sidecar-my-app-v1")["load_findings"]
    dropped = [f for f in findings if "PYM0005" in f]
    assert len(dropped) == 9  # 4 misplaced outlier fields in each DestinationRule + tracing[1].overrides
    assert any("destinationrule.yaml:17" in f and "consecutiveGatewayErrors" in f
               and "did you mean trafficPolicy.outlierDetection.consecutiveGatewayErrors" in f for f in dropped)
    assert any("telemetry.yaml:21" in f and "tracing[1].overrides" in f for f in dropped)
    assert [f for f in findings if f.startswith("Error")] == [
        next(f for f in findings if all(part in f for part in BRIEF_REJECTED))]


def _by_name(resources: list[dict]) -> dict:
    return {r.get("name") or r.get("cluster_name"): r for r in resources}


def test_brief_destination_rules_become_circuit_breakers_and_outlier_detection() -> None:
    clusters = _by_name(_brief("sidecar-my-app-v1")["clusters"])
    main = clusters["outbound|80||my-app-service.default.svc.cluster.local"]
    assert main["lb_policy"] == "LEAST_REQUEST"  # LEAST_CONN (deprecated) is the same Envoy LB
    (limits,) = main["circuit_breakers"]["thresholds"]
    assert (limits["max_connections"], limits["max_pending_requests"], limits["max_retries"]) == (10, 10, 3)
    assert main["outlier_detection"]["consecutive_5xx"] == 5
    assert main["outlier_detection"]["max_ejection_percent"] == 50
    assert main["common_lb_config"]["healthy_panic_threshold"] == {"value": 30.0}  # minHealthPercent
    # the misplaced fields under connectionPool.http were dropped, not turned into gateway-error detection
    assert "consecutive_gateway_failure" not in main["outlier_detection"]
    v1 = clusters["outbound|80|v1|my-app-service.default.svc.cluster.local"]
    assert v1["circuit_breakers"]["thresholds"][0]["max_connections"] == 5  # the subset's connectionPool


def test_brief_gateway_redirects_http_and_terminates_https_with_the_credential() -> None:
    rendered = _brief("gateway")
    routes = _by_name(rendered["routes"])
    assert routes["http.80"]["virtual_hosts"][0]["require_tls"] == "ALL"
    https = _by_name(rendered["listeners"])["0.0.0.0_443"]["filter_chains"][0]
    assert https["filter_chain_match"]["server_names"] == ["my-app.example.com"]
    sds = https["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificate_sds_secret_configs"]
    assert [s["name"] for s in sds] == ["kubernetes://my-app-tls"]
    first = routes["https.443.https.my-app-gateway.default"]["virtual_hosts"][0]["routes"][0]
    assert first["match"] == {"prefix": "/api/v1"}
    assert first["route"]["cluster"] == "outbound|80|v1|my-app-service.default.svc.cluster.local"
    assert first["route"]["retry_policy"]["num_retries"] == 3 and first["route"]["timeout"] == "30s"
