"""`meshctl analyze` / `meshctl validate`: istioctl's output lines, thresholds, formats and exit codes."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from control.cli.meshctl import main

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "istio"
ROOT = FIXTURES.parents[2]


def meshctl(*argv, stdin: str | None = None, monkeypatch=None):
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_analyze_of_the_brief_matches_the_golden_output(monkeypatch):
    monkeypatch.chdir(FIXTURES)
    code, out, _ = meshctl("analyze", "brief")
    assert code == 79
    assert out == (FIXTURES / "golden" / "brief-analyze.txt").read_text()


def test_line_format_is_istioctls(monkeypatch):
    monkeypatch.chdir(FIXTURES)
    _, out, _ = meshctl("analyze", "brief/virtualservice.yaml")
    assert ("Error [IST0101] (VirtualService default/my-app-vs brief/virtualservice.yaml:17) "
            'Referenced host not found: "my-app-service"') in out.splitlines()


def test_clean_input_exits_0_with_istioctls_message():
    code, out, err = meshctl("analyze", str(ROOT / "examples" / "mesh"))
    assert (code, out) == (0, "")
    assert err.startswith("\u2714 No validation issues found when analyzing")


@pytest.mark.parametrize("failure, output, code, levels", [
    ("Error", "Info", 79, {"Error", "Warning", "Info"}),
    ("Error", "Error", 79, {"Error"}),
])
def test_thresholds(failure, output, code, levels):
    got, out, _ = meshctl("analyze", "--failure-threshold", failure, "--output-threshold", output,
                          str(FIXTURES / "brief"))
    assert got == code
    assert {line.split(" ", 1)[0] for line in out.splitlines()} <= levels


def test_warnings_only_fail_with_a_warning_failure_threshold():
    tele = str(FIXTURES / "known-good" / "destination-rule-ssl.yaml")  # IST0128 + IST0174 warnings only
    assert meshctl("analyze", tele)[0] == 0
    assert meshctl("analyze", "--failure-threshold", "Warning", tele)[0] == 79


def test_suppress_by_code_and_resource():
    path = str(FIXTURES / "brief" / "security-policy.yaml")
    assert "IST0127" in meshctl("analyze", path)[1]
    # IST0101: the policy's `namespaces: [monitoring]` names a namespace the input does not define
    code, out, err = meshctl("analyze", "-S", "IST0127=AuthorizationPolicy default/*",
                             "-S", "IST0101=AuthorizationPolicy default/my-app-authz", path)
    assert (code, out) == (0, "")


@pytest.mark.parametrize("fmt, load", [("json", json.loads), ("yaml", yaml.safe_load)])
def test_structured_output(fmt, load):
    _, out, _ = meshctl("analyze", "-o", fmt, str(FIXTURES / "brief" / "telemetry.yaml"))
    items = load(out)
    # PYM0010: a tag value read as CEL (this project's warning); IST0133: two tracing entries (Istio warns)
    assert [i["code"] for i in items] == ["PYM0010", "IST0133", "IST0106"]
    assert items[2]["origin"] == "Telemetry default/my-app-telemetry" and items[2]["line"] == 21
    assert items[2]["level"] == "Error" and items[2]["path"] == "spec.tracing[1].overrides"


def test_stdin(monkeypatch):
    text = (FIXTURES / "brief" / "telemetry.yaml").read_text()
    code, out, _ = meshctl("analyze", "-", stdin=text, monkeypatch=monkeypatch)
    assert code == 79 and "<stdin>:21" in out


@pytest.mark.parametrize("args, stdin, needle", [
    (["analyze", "missing.yaml"], None, "Error: missing.yaml: no such file or directory"),
    (["analyze", "-"], "a: [\n", "Error: <stdin>:2: YAML syntax error"),
    (["validate", "-f", "-"], "kind: [", "Error: <stdin>:1: YAML syntax error"),
])
def test_unreadable_input_is_one_line_and_exit_1(monkeypatch, tmp_path, args, stdin, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = meshctl(*args, stdin=stdin, monkeypatch=monkeypatch)
    assert code == 1 and out == ""
    assert err.startswith(needle) and len(err.splitlines()) == 1 and "Traceback" not in err


def test_no_default_ingress_gateway_flag(monkeypatch, capsys):
    monkeypatch.chdir(FIXTURES)
    assert 'Referenced selector not found: "istio=ingressgateway"' not in meshctl("analyze", "brief/gateway.yaml")[1]
    _, out, _ = meshctl("analyze", "--no-default-ingress-gateway", "brief/gateway.yaml")
    assert 'Referenced selector not found: "istio=ingressgateway"' in out
    assert meshctl("analyze", "--help")[0] == 0  # argparse prints help to sys.stdout
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--no-default-ingress-gateway" in help_text and "default ingress gateway" in help_text


def test_bad_usage_exits_64():
    assert meshctl("analyze", "--output-threshold", "Loud", "x")[0] == 64
    assert meshctl("analyze")[0] == 64


def test_validate_accepts_good_files_and_rejects_bad_ones():
    code, out, _ = meshctl("validate", "-f", str(FIXTURES / "httpbin"))
    assert code == 0 and "Validated 5 resource(s)" in out
    code, _, err = meshctl("validate", "-f", str(FIXTURES / "brief" / "circuit-breaker.yaml"))
    assert code == 1 and "did you mean trafficPolicy.outlierDetection.interval?" in err


def test_console_script_runs_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "control.cli.meshctl", "analyze", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "no such file" in proc.stderr
