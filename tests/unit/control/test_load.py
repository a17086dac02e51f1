"""control.istio.load: multi-document YAML in, Resources with file:line out; problems become findings."""
from __future__ import annotations

import io
import textwrap

import pytest

from control.istio.load import load_paths, load_text
from control.istio.messages import Level


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


VS = yaml_text("""
    apiVersion: networking.istio.io/v1beta1
    kind: VirtualService
    metadata:
      name: reviews
    spec:
      hosts:
      - reviews
      http:
      - route:
        - destination:
            host: reviews
            subset: v1
    """)


def codes(result):
    return [f.code for f in result.findings]


def test_resource_records_its_file_line_and_every_field_path_line():
    result = load_text(VS, "vs.yaml")
    (vs,) = result.resources
    assert (vs.kind, vs.namespace, vs.name, vs.key) == ("VirtualService", "default", "reviews",
                                                        "VirtualService default/reviews")
    assert str(vs.source) == "vs.yaml:1"
    assert vs.lines["spec.http[0].route[0].destination.host"] == 11
    assert vs.lines["spec.hosts[0]"] == 7
    assert vs.line_of("spec.http[0].route[0].destination.port.number") == 10  # nearest parent that exists
    assert result.findings == ()


def test_spec_is_frozen():
    (vs,) = load_text(VS, "vs.yaml").resources
    with pytest.raises(TypeError):
        vs.spec["hosts"] = ()  # type: ignore[index]
    assert vs.spec["hosts"] == ("reviews",)


@pytest.mark.parametrize("api_version", ["networking.istio.io/v1alpha3", "networking.istio.io/v1beta1",
                                         "networking.istio.io/v1"])
def test_every_served_api_version_loads(api_version):
    (vs,) = load_text(VS.replace("networking.istio.io/v1beta1", api_version), "vs.yaml").resources
    assert vs.api_version == api_version


def test_unknown_api_version_of_a_known_kind_is_an_error_naming_the_served_versions():
    result = load_text(VS.replace("v1beta1", "v2"), "vs.yaml")
    assert result.resources == ()
    (f,) = result.findings
    assert f.code == "IST0106" and f.line == 1 and "networking.istio.io/v1beta1" in f.message


def test_multi_document_stream_with_empty_documents_and_trailing_separator():
    text = "---\n" + VS + "---\n\n---\n" + VS.replace("name: reviews", "name: ratings") + "---\n"
    result = load_text(text, "many.yaml")
    assert [r.name for r in result.resources] == ["reviews", "ratings"]
    assert result.resources[1].source.line == 17
    assert result.findings == ()


def test_list_kind_items_are_loaded_with_their_own_lines():
    text = yaml_text("""
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: ServiceAccount
          metadata: {name: a}
        - apiVersion: v1
          kind: Service
          metadata:
            name: b
            namespace: shop
          spec:
            ports:
            - port: 80
        """)
    sa, svc = load_text(text, "list.yaml").resources
    assert (sa.kind, sa.name, sa.source.line) == ("ServiceAccount", "a", 4)
    assert (svc.key, svc.source.line, svc.lines["spec.ports[0].port"]) == ("Service shop/b", 7, 14)


def test_other_kubernetes_kinds_are_ignored_with_an_info_finding():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n"
    result = load_text(text, "cm.yaml")
    assert result.resources == ()
    (f,) = result.findings
    assert (f.code, f.level, f.line) == ("PYM0003", Level.INFO, 1) and "ConfigMap" in f.message


def test_unsupported_istio_kind_is_named_as_unsupported():
    text = "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: f}\nspec: {}\n"
    (f,) = load_text(text, "pc.yaml").findings
    assert f.level == Level.INFO and "not supported by pyproxy mesh yet" in f.message


@pytest.mark.parametrize("text, needle", [
    ("- a\n- b\n", "must be a mapping"),
    ("kind: Service\nmetadata: {name: x}\n", "no apiVersion"),
    ("apiVersion: v1\nkind: Service\nmetadata: {}\nspec: {}\n", "metadata.name is required"),
])
def test_documents_that_are_not_resources_are_errors(text, needle):
    result = load_text(text, "bad.yaml")
    assert result.resources == ()
    assert needle in result.findings[0].message and result.findings[0].level == Level.ERROR


def test_yaml_syntax_error_names_file_and_line_and_is_fatal():
    result = load_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n", "broken.yaml")
    (f,) = result.findings
    assert (f.code, f.file, f.line) == ("PYM0002", "broken.yaml", 5)
    assert result.fatal == (f,)


def test_duplicate_keys_warn_that_the_last_one_wins():
    result = load_text(VS.replace("  name: reviews\n", "  name: reviews\n  name: reviews\n"), "dup.yaml")
    assert "IST0133" in codes(result) and "duplicate key" in result.findings[0].message


def test_serving_load_drops_unknown_fields_with_a_warning_and_keeps_the_resource():
    text = VS.replace("  - route:\n", "  - timeuot: 5s\n    route:\n")
    (vs,) = load_text(text, "vs.yaml").resources
    (f,) = load_text(text, "vs.yaml").findings
    assert "timeuot" not in vs.spec["http"][0]
    assert (f.code, f.level, f.line, f.path) == ("PYM0005", Level.WARNING, 9, "spec.http[0].timeuot")
    assert "did you mean timeout?" in f.message


def test_strict_load_reports_unknown_fields_as_ist0106_errors():
    text = VS.replace("  - route:\n", "  - timeuot: 5s\n    route:\n")
    result = load_text(text, "vs.yaml", strict=True)
    (f,) = result.findings
    assert (f.code, f.level, f.resource) == ("IST0106", Level.ERROR, "VirtualService default/reviews")
    assert len(result.resources) == 1  # still analysed by the cross-resource analyzers


def test_a_hard_error_rejects_only_that_resource():
    bad = VS.replace("name: reviews", "name: bad").replace("  - route:\n", "  - timeout: 5\n    route:\n")
    result = load_text(bad + "---\n" + VS, "two.yaml")
    assert [r.name for r in result.resources] == ["reviews"]
    (f,) = result.findings
    assert f.resource == "VirtualService default/bad" and f.line == 9 and "duration" in f.message


def test_load_paths_walks_directories_recursively_for_yaml_yml_json(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.yaml").write_text(VS)
    (tmp_path / "sub" / "b.yml").write_text(VS.replace("name: reviews", "name: b"))
    (tmp_path / "sub" / "deeper" / "c.json").write_text(
        '{"apiVersion": "v1", "kind": "ServiceAccount",\n "metadata": {"name": "c"}}')
    (tmp_path / "sub" / "notes.txt").write_text("not yaml: [")
    result = load_paths([str(tmp_path)])
    assert sorted(r.name for r in result.resources) == ["b", "c", "reviews"]
    assert result.findings == ()


def test_load_paths_reads_stdin_for_dash(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(VS))
    (vs,) = load_paths(["-"]).resources
    assert vs.source.file == "<stdin>"


def test_missing_path_is_a_fatal_finding_not_an_exception(tmp_path):
    result = load_paths([str(tmp_path / "nope.yaml")])
    (f,) = result.fatal
    assert f.code == "PYM0001" and "no such file" in f.message


SERVICE_WITH_BAD_PROTOCOL = yaml_text("""
    apiVersion: v1
    kind: Service
    metadata: {name: reviews}
    spec:
      selector: {app: reviews}
      ports: [{name: http, port: 9080, protocol: HTTP}]
    """)


def test_a_resource_with_a_schema_error_is_dropped_when_serving_and_kept_for_analysis():
    """istioctl analyze reports IST0106 and still analyzes the resource; serving keeps rejecting it."""
    served = load_text(SERVICE_WITH_BAD_PROTOCOL, "svc.yaml", strict=True)
    analyzed = load_text(SERVICE_WITH_BAD_PROTOCOL, "svc.yaml", strict=True, keep_invalid=True)
    assert served.resources == () and [f.code for f in served.findings] == ["IST0106"]
    assert [f.code for f in analyzed.findings] == ["IST0106"]
    (svc,) = analyzed.resources
    assert svc.spec["ports"][0] == {"name": "http", "port": 9080}  # the invalid value left out, the rest kept


@pytest.mark.parametrize("text, addresses", [
    ("addresses: [1.2.3.4, 001:db8::]", ["1.2.3.4", "001:db8::"]),
    ("addresses: [fe80::, '::1']", ["fe80::", "::1"]),
])
def test_ipv6_flow_scalars_ending_in_a_colon_read_as_go_yaml_reads_them(text, addresses):
    doc = yaml_text(f"""
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: se}}
        spec:
          hosts: [example.com]
          {text}
          resolution: STATIC
          workloadSelector: {{labels: {{app: x}}}}
        """)
    result = load_text(doc, "se.yaml", strict=True)
    assert [f.code for f in result.findings] == []
    assert list(result.resources[0].spec["addresses"]) == addresses


def test_a_colon_before_a_flow_end_is_still_a_syntax_error_elsewhere():
    result = load_text("a: [b:]\n", "x.yaml")
    assert [f.code for f in result.findings] == ["PYM0002"]
