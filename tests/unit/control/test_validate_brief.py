"""The original brief's YAML (tests/fixtures/istio/brief) and each real mistake in it, by file and line."""
from __future__ import annotations

from pathlib import Path

import pytest

from control.analyze import analyze
from control.istio.load import load_paths
from control.istio.messages import Level

BRIEF = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "istio" / "brief"


@pytest.fixture(scope="module")
def strict():
    return load_paths([str(BRIEF)], strict=True)


@pytest.fixture(scope="module")
def analysis(strict):
    return analyze(strict.resources)


def at(findings, file: str, line: int, code: str):
    hits = [f for f in findings if Path(f.file).name == file and f.line == line and f.code == code]
    assert len(hits) == 1, f"expected one {code} at {file}:{line}, got {[str(f) for f in findings]}"
    return hits[0]


@pytest.mark.parametrize("file", ["circuit-breaker.yaml", "destinationrule.yaml"])
@pytest.mark.parametrize("line, field", [(17, "consecutiveGatewayErrors"), (18, "interval"),
                                         (19, "baseEjectionTime"), (20, "maxEjectionPercent")])
def test_outlier_fields_under_connection_pool_http_are_misplaced(strict, file, line, field):
    f = at(strict.findings, file, line, "IST0106")
    assert f.level == Level.ERROR and f.path == f"spec.trafficPolicy.connectionPool.http.{field}"
    assert f'unknown field "{field}" in HTTPSettings' in f.message
    assert f"did you mean trafficPolicy.outlierDetection.{field}?" in f.message


@pytest.mark.parametrize("file", ["circuit-breaker.yaml", "destinationrule.yaml"])
def test_serving_load_keeps_the_rule_without_the_misplaced_fields(file):
    result = load_paths([str(BRIEF / file)])
    (dr,) = result.resources
    assert dict(dr.spec["trafficPolicy"]["connectionPool"]["http"]) == {
        "http1MaxPendingRequests": 10, "maxRequestsPerConnection": 2, "h2UpgradePolicy": "UPGRADE", "maxRetries": 3}
    assert dr.spec["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] == 5
    assert {f.code for f in result.findings} == {"PYM0005", "IST0002"}


@pytest.mark.parametrize("file", ["circuit-breaker.yaml", "destinationrule.yaml"])
def test_least_conn_is_deprecated(strict, file):
    f = at(strict.findings, file, 22, "IST0002")
    assert "use LEAST_REQUEST" in f.message


def test_overrides_under_tracing_belongs_to_metrics(strict):
    f = at(strict.findings, "telemetry.yaml", 21, "IST0106")
    assert f.path == "spec.tracing[1].overrides"
    assert 'unknown field "overrides" in Tracing; did you mean metrics[].overrides?' in f.message


def test_tag_override_value_is_cel_not_a_string_literal(strict):
    """This project's own warning (PYM0010, Warning level): Istio does not warn, so it is not IST0133."""
    f = at(strict.findings, "telemetry.yaml", 15, "PYM0010")
    assert f.level.label == "Warning"
    assert f.path == "spec.metrics[1].overrides[0].tagOverrides.request_protocol.value"
    assert "write \"'http'\"" in f.message


def test_production_is_not_an_istio_profile(strict):
    f = at(strict.findings, "istio-install.yaml", 7, "IST0106")
    assert 'profile "production" is not a built-in Istio profile' in f.message
    assert not any(r.kind == "IstioOperator" for r in strict.resources)


@pytest.mark.parametrize("file, line", [("virtualservice.yaml", 17), ("virtualservice.yaml", 31),
                                        ("virtualservice.yaml", 42), ("fault-injection.yaml", 25),
                                        ("fault-injection.yaml", 30)])
def test_destination_host_has_no_service(analysis, file, line):
    assert at(analysis, file, line, "IST0101").message == 'Referenced host not found: "my-app-service"'


@pytest.mark.parametrize("file", ["circuit-breaker.yaml", "destinationrule.yaml"])
def test_destination_rule_host_has_no_service(analysis, file):
    assert "my-app-service" in at(analysis, file, 7, "IST0174").message


def test_gateway_selector_matches_no_gateway_workload_without_the_default_ingress_gateway(strict):
    analysis = analyze(strict.resources, default_ingress=False)
    assert at(analysis, "gateway.yaml", 7, "IST0101").message == 'Referenced selector not found: "istio=ingressgateway"'


def test_gateway_selector_finds_istioctls_default_ingress_gateway(analysis):
    """istioctl analyze without a cluster adds Istio's default istio-ingressgateway Pod (istio=ingressgateway)."""
    assert not [f for f in analysis if f.code == "IST0101" and f.path == "spec.selector"]


def test_two_destination_rules_for_one_host_merge_and_the_second_policy_is_ignored(analysis):
    f = at(analysis, "destinationrule.yaml", 8, "PYM0007")
    assert f.path == "spec.trafficPolicy" and f.level == Level.WARNING
    assert "the trafficPolicy of default/my-app-dr is ignored, the one of default/my-app-circuit-breaker" in f.message


def test_authorization_policy_selects_no_workload(analysis):
    assert at(analysis, "security-policy.yaml", 17, "IST0127").message.endswith("labels: app=my-app")


def test_everything_else_in_the_brief_is_valid(strict):
    flagged = {Path(f.file).name for f in strict.findings}
    assert flagged == {"circuit-breaker.yaml", "destinationrule.yaml", "telemetry.yaml", "istio-install.yaml"}
