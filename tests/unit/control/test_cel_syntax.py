"""control.istio.cel_syntax: cel-spec's grammar, syntax only (what Istio's cel.NewEnv().Parse accepts)."""
from __future__ import annotations

import pytest

from control.istio.cel_syntax import cel_syntax_error


@pytest.mark.parametrize("text", [
    "response.code >= 400",
    "connection.mtls && request.url_path.contains('v1beta3')",
    "response.code",  # any expression parses; its type is not checked
    "!(request.method in ['GET', 'HEAD',]) || has(request.headers.x)",
    "request.headers['x-b3'] == \"1\" ? 1u : -2.5e3",
    "{'a': 1, 2: [b'x', r'\\d']}.size() > 0x1F",
    "google.protobuf.Int64Value{value: 1} == .pkg.Msg{}",
    "'''multi\nline''' + \"\"\"x\"\"\" // a comment",
])
def test_valid_cel_parses(text):
    assert cel_syntax_error(text) is None


@pytest.mark.parametrize("text", [
    ")++++", "", "a &&", "a ? b", "(a", "a[1", "f(a,,b)", "a.1", "if == 1", "a = 1", "'unterminated", "a.b{c}",
    "{1: }", "@",
])
def test_invalid_cel_is_refused_with_a_reason(text):
    assert cel_syntax_error(text)
