"""The Telemetry API: Istio's three Telemetry analyzers (codes and texts) and the translation's merge rules
(root namespace < namespace < workload, per-side match.mode, providers replacing, sampling fallbacks)."""
from __future__ import annotations

import textwrap

import pytest

from control.istio.load import load_text
from control.mesh import build_mesh
from control.translate import render_sidecar
from tests.golden.envoy_schema import check_rendered
from tests.unit.control.test_analyze import BASE as ANALYZE_BASE
from tests.unit.control.test_analyze import codes, run

TEL = "telemetry.istio.io/v1"


def tel(name: str, spec: str, namespace: str = "default") -> str:
    return (f"apiVersion: {TEL}\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
            + textwrap.indent(textwrap.dedent(spec), "  ") + "---\n")


def messages(findings, code):
    return [f.message for f in findings if f.code == code]


def test_ist0160_two_selectorless_telemetries_in_a_namespace():
    found = run(tel("a", "tracing: [{randomSamplingPercentage: 1}]\n") + tel("b", "tracing: [{}]\n")
                + tel("c", "selector: {matchLabels: {app: reviews}}\ntracing: [{}]\n"))
    assert messages(found, "IST0160") == [
        'The Telemetries [a b] in namespace "default" have no workload selector, which can lead to '
        'undefined behavior.'] * 2
    assert "IST0159" not in codes(found)


def test_ist0159_two_telemetries_select_one_pod_and_ist0101_for_a_selector_matching_nothing():
    found = run(tel("a", "selector: {matchLabels: {app: reviews}}\ntracing: [{}]\n")
                + tel("b", "selector: {matchLabels: {version: v1}}\ntracing: [{}]\n")
                + tel("c", "selector: {matchLabels: {app: ghost}}\ntracing: [{}]\n"))
    assert messages(found, "IST0159") == [
        'The Telemetries [a b] in namespace "default" select the same workload pod "reviews-v1", '
        'which can lead to undefined behavior.'] * 2
    assert messages(found, "IST0101") == ['Referenced selector not found: "app=ghost"']
    assert "IST0127" not in codes(found)  # Istio's Telemetry analyzer says IST0101, not NoMatchingWorkloadsFound


@pytest.mark.parametrize("entry,default,fires", [
    ("accessLogging: [{}]", False, True),
    ("accessLogging: [{disabled: true}]", False, False),
    ("accessLogging: [{providers: [{name: envoy}]}]", False, False),
    ("accessLogging: [{}]", True, False),  # meshConfig.defaultProviders.accessLogging fills the gap
    ("tracing: [{}]", False, False),  # Istio's analyzer only looks at accessLogging
])
def test_ist0157_access_logging_without_providers(entry, default, fires):
    mesh = ("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: cp, namespace: istio-system}\n"
            "spec: {meshConfig: {defaultProviders: {accessLogging: [envoy]}}}\n---\n") if default else ""
    found = run(mesh + tel("logs", entry + "\n"))
    assert messages(found, "IST0157") == (
        ['The Telemetry logs in namespace "default" with empty providers will be ignored.'] if fires else [])


# --------------------------------------------------------------------------- translation

MESH = """apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: cp, namespace: istio-system}
spec:
  meshConfig:
    extensionProviders:
    - {name: otel, opentelemetry: {service: otel.istio-system.svc.cluster.local, port: 4318, http: {path: /otlp/traces}}}
    - {name: otel-grpc, opentelemetry: {service: otel.istio-system.svc.cluster.local, port: 4317}}
    - {name: zipkin, zipkin: {service: otel.istio-system.svc.cluster.local, port: 9411}}
    - {name: nowhere, zipkin: {service: zipkin.elsewhere.svc.cluster.local, port: 9411}}
    - {name: zipkin-w3c, zipkin: {service: otel.istio-system.svc.cluster.local, port: 9411,
                                  traceContextOption: USE_B3_WITH_W3C_PROPAGATION}}
    - {name: sky, skywalking: {service: otel.istio-system.svc.cluster.local, port: 11800}}
    - {name: bare-otel, opentelemetry: {http: {}}}
    - {name: bare-zipkin, zipkin: {}}
    - {name: kindless}
    - {name: text-log, envoyFileAccessLog: {path: /dev/stderr, logFormat: {text: "%RESPONSE_CODE%"}}}
    - {name: als, envoyOtelAls: {service: otel.istio-system.svc.cluster.local, port: 4317}}
---
apiVersion: v1
kind: Service
metadata: {name: otel, namespace: istio-system}
spec: {selector: {app: otel}, ports: [{name: http, port: 4318}, {name: grpc, port: 4317}, {name: zipkin, port: 9411}]}
---
"""


def render(extra: str):
    result = load_text(ANALYZE_BASE + "---\n" + MESH + extra, "mesh.yaml")
    rendered = render_sidecar(build_mesh(result.resources), "reviews-v1")
    check_rendered(rendered.as_dict())
    return rendered


def hcms(rendered, listener: str) -> list[dict]:
    lis = next(x for x in rendered.listeners if x["name"] == listener)
    return [f["typed_config"] for ch in lis["filter_chains"] for f in ch["filters"]
            if f["name"] == "envoy.filters.network.http_connection_manager"]


def sampling(rendered, listener: str) -> float | None:
    t = hcms(rendered, listener)[0].get("tracing")
    return None if t is None else t["random_sampling"]["value"]


def test_no_provider_anywhere_means_no_tracing():
    r = render(tel("mesh", "tracing: [{randomSamplingPercentage: 5}]\n", "istio-system"))
    assert sampling(r, "0.0.0.0_15001") is None and sampling(r, "virtualInbound") is None


def test_levels_merge_root_then_namespace_then_workload_per_side():
    r = render(tel("mesh", "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 5}]\n", "istio-system")
               + tel("ns", "tracing: [{randomSamplingPercentage: 20}]\n")
               + tel("wl", "selector: {matchLabels: {app: reviews}}\n"
                           "tracing: [{match: {mode: SERVER}, randomSamplingPercentage: 70}]\n"))
    assert sampling(r, "0.0.0.0_15001") == 20.0  # the namespace's; the workload one is SERVER only
    assert sampling(r, "virtualInbound") == 70.0
    provider = hcms(r, "virtualInbound")[0]["tracing"]["provider"]
    assert provider["typed_config"]["http_service"]["http_uri"] == {
        "uri": "http://otel.istio-system.svc.cluster.local:4318/otlp/traces",
        "cluster": "outbound|4318||otel.istio-system.svc.cluster.local", "timeout": "5s"}
    assert provider["typed_config"]["service_name"] == "reviews.default"


def test_sampling_defaults_to_one_percent_then_proxy_config():
    r = render(tel("mesh", "tracing: [{providers: [{name: otel}]}]\n", "istio-system"))
    assert sampling(r, "0.0.0.0_15001") == 1.0


def test_lower_level_providers_replace_and_zipkin_is_istios_shape():
    r = render(tel("mesh", "tracing: [{providers: [{name: otel}]}]\n", "istio-system")
               + tel("ns", "tracing: [{providers: [{name: zipkin}]}]\n"))
    t = hcms(r, "0.0.0.0_15001")[0]["tracing"]
    assert t["provider"] == {"name": "envoy.tracers.zipkin", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
        "collector_cluster": "outbound|9411||otel.istio-system.svc.cluster.local",
        "collector_endpoint": "/api/v2/spans", "trace_id_128bit": True, "shared_span_context": False,
        "collector_endpoint_version": "HTTP_JSON", "collector_hostname": "otel.istio-system.svc.cluster.local"}}


@pytest.mark.parametrize("provider,note", [
    ("otel-grpc", "meshConfig.extensionProviders 'otel-grpc': OpenTelemetry export over gRPC is not implemented by "
                  "pyproxy; add `http: {path: /v1/traces}` (OTLP/HTTP)"),
    ("nowhere", "meshConfig.extensionProviders 'nowhere': zipkin.service zipkin.elsewhere.svc.cluster.local:9411 is "
                "not a service of the mesh (no cluster for it)"),
    ("bare-otel", "meshConfig.extensionProviders 'bare-otel': opentelemetry.service :0 is not a service of the mesh"),
    ("bare-zipkin", "meshConfig.extensionProviders 'bare-zipkin': zipkin.service :0 is not a service of the mesh"),
    ("kindless", "meshConfig.extensionProviders 'kindless': ? is not a tracing provider pyproxy implements "
                 "(opentelemetry with http, zipkin)"),
    ("jaeger", "tracing provider 'jaeger' is not defined in meshConfig.extensionProviders: no tracing"),
])
def test_providers_pyproxy_cannot_serve_are_noted_not_emitted(provider, note):
    r = render(tel("mesh", f"tracing: [{{providers: [{{name: {provider}}}]}}]\n", "istio-system"))
    assert sampling(r, "0.0.0.0_15001") is None
    assert any(note in n for n in r.notes), r.notes


def test_disable_span_reporting_keeps_sampling_without_provider_and_istio_tags_can_go():
    r = render(tel("mesh", "tracing: [{providers: [{name: otel}], disableSpanReporting: true, "
                           "enableIstioTags: false}]\n", "istio-system"))
    assert hcms(r, "0.0.0.0_15001")[0]["tracing"] == {
        "client_sampling": {"value": 100.0}, "random_sampling": {"value": 1.0}, "overall_sampling": {"value": 100.0},
        "max_path_tag_length": 256}


def test_access_logging_providers_filter_and_disable():
    r = render(tel("mesh", "accessLogging: [{providers: [{name: envoy}]}]\n", "istio-system")
               + tel("ns", "accessLogging: [{providers: [{name: envoy}], "
                           "filter: {expression: 'response.code >= 500'}}]\n")
               + tel("wl", "selector: {matchLabels: {app: reviews}}\n"
                           "accessLogging: [{match: {mode: SERVER}, disabled: true}]\n"))
    (log,) = hcms(r, "0.0.0.0_15001")[0]["access_log"]
    assert log["typed_config"]["path"] == "/dev/stdout"
    assert log["typed_config"]["log_format"]["text_format_source"]["inline_string"].startswith(
        '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% ')
    assert log["filter"]["extension_filter"]["typed_config"]["expression"] == "response.code >= 500"
    assert "access_log" not in hcms(r, "virtualInbound")[0]


def test_mesh_access_log_file_json_encoding():
    extra = ("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: cp, namespace: istio-system}\n"
             "spec: {meshConfig: {accessLogFile: /tmp/a.log, accessLogEncoding: JSON}}\n---\n")
    result = load_text(ANALYZE_BASE + "---\n" + extra, "mesh.yaml")
    r = render_sidecar(build_mesh(result.resources), "reviews-v1")
    (log,) = hcms(r, "0.0.0.0_15001")[0]["access_log"]
    assert log["typed_config"]["path"] == "/tmp/a.log"
    assert log["typed_config"]["log_format"]["json_format"]["response_code"] == "%RESPONSE_CODE%"


def test_all_metrics_disabled_drops_istio_stats_on_that_side_only():
    r = render(tel("wl", "selector: {matchLabels: {app: reviews}}\n"
                         "metrics: [{overrides: [{match: {metric: ALL_METRICS, mode: SERVER}, disabled: true}]}]\n"))
    names = lambda lis: [f["name"] for f in hcms(r, lis)[0]["http_filters"]]  # noqa: E731
    assert "istio.stats" not in names("virtualInbound") and "istio.stats" in names("0.0.0.0_15001")


def stats_value(rendered, listener: str) -> dict:
    f = next(f for f in hcms(rendered, listener)[0]["http_filters"] if f["name"] == "istio.stats")
    return f["typed_config"]["value"]


def test_tag_overrides_merge_into_istio_stats_dimensions():
    r = render(tel("mesh", "metrics: [{overrides: [{match: {metric: ALL_METRICS}, tagOverrides: "
                           "{request_host: {value: request.host}, response_flags: {operation: REMOVE}}}]}]\n",
                   "istio-system")
               + tel("wl", "selector: {matchLabels: {app: reviews}}\n"
                           "metrics:\n"
                           "- overrides:\n"
                           "  - match: {metric: REQUEST_COUNT, mode: SERVER}\n"
                           "    tagOverrides: {request_host: {operation: REMOVE}, method: {value: request.method}}\n"
                           "  - match: {metric: RESPONSE_SIZE}\n"
                           "    disabled: true\n"
                           "  - match: {metric: TCP_SENT_BYTES}\n"
                           "    disabled: true\n"
                           "  - match: {metric: REQUEST_SIZE}\n"
                           "    tagOverrides: {proto: {value: http}}\n"))
    inbound = stats_value(r, "virtualInbound")["metrics"]
    by_name = {m["name"]: m for m in inbound}
    assert by_name["requests_total"] == {"name": "requests_total", "dimensions": {"method": "request.method"},
                                         "tags_to_remove": ["response_flags", "request_host"]}
    assert by_name["response_bytes"] == {"name": "response_bytes", "dimensions": {"request_host": "request.host"},
                                         "tags_to_remove": ["response_flags"], "drop": True}
    outbound = {m["name"]: m for m in stats_value(r, "0.0.0.0_15001")["metrics"]}
    assert outbound["requests_total"]["dimensions"] == {"request_host": "request.host"}  # the SERVER-only one skipped
    notes = "\n".join(r.notes)
    assert "TCP_SENT_BYTES overrides are not translated" in notes
    assert "tagOverrides.proto.value: 'http' is not an expression pyproxy evaluates" in notes


def test_an_access_log_filter_the_proxy_would_refuse_is_left_out_with_a_note():
    """Valid CEL (Istio accepts it) that the proxy's CEL subset does not evaluate: a method call."""
    expression = "request.url_path.startsWith('/v1')"
    r = render(tel("mesh", f"accessLogging: [{{providers: [{{name: envoy}}], filter: {{expression: \"{expression}\"}}}}]\n",
                   "istio-system"))
    assert "access_log" not in hcms(r, "0.0.0.0_15001")[0]
    assert any(f"filter {expression!r} is not an expression the proxy evaluates" in n for n in r.notes), r.notes


def test_target_ref_telemetry_is_noted_not_applied_namespace_wide():
    r = render(tel("gw", "targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n"
                         "tracing: [{providers: [{name: otel}]}]\n"))
    assert sampling(r, "0.0.0.0_15001") is None
    assert any("targetRef(s) is not translated" in n for n in r.notes)


@pytest.mark.parametrize("telemetry, note", [
    ("tracing: [{providers: [{name: sky}]}]",
     "meshConfig.extensionProviders 'sky': skywalking is not a tracing provider pyproxy implements"),
    ("accessLogging: [{providers: [{name: nolog}]}]",
     "access log provider 'nolog' is not defined in meshConfig.extensionProviders"),
    ("accessLogging: [{providers: [{name: als}]}]",
     "access log provider 'als': envoyOtelAls is not translated (envoyFileAccessLog is)"),
    ("metrics: [{overrides: [{match: {customMetric: my_metric}, disabled: true}]}]",
     "spec.metrics[0].overrides[0].match.customMetric: custom metrics are not translated"),
])
def test_what_is_not_translated_is_noted_and_left_out(telemetry, note):
    r = render(tel("mesh", telemetry + "\n", "istio-system"))
    hcm = hcms(r, "0.0.0.0_15001")[0]
    assert "tracing" not in hcm and "access_log" not in hcm
    assert not any(f["name"] == "istio.stats" and f["typed_config"]["value"].get("metrics")
                   for f in hcm["http_filters"])
    assert any(note in n for n in r.notes), r.notes


def test_zipkin_w3c_propagation_is_noted_and_b3_kept_and_only_the_first_provider_is_used():
    r = render(tel("mesh", "tracing: [{providers: [{name: zipkin-w3c}, {name: otel}]}]\n", "istio-system"))
    assert hcms(r, "0.0.0.0_15001")[0]["tracing"]["provider"]["name"] == "envoy.tracers.zipkin"
    notes = "\n".join(r.notes)
    assert "zipkin.traceContextOption USE_B3_WITH_W3C_PROPAGATION is not translated (B3 only)" in notes
    assert "spec.tracing[0].providers: only the first tracing provider is used (zipkin-w3c), as istiod does" in notes


def test_a_text_log_format_and_a_tag_removed_then_set_again():
    r = render(tel("mesh", "accessLogging: [{providers: [{name: text-log}]}]\n"
                           "metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, tagOverrides: "
                           "{request_host: {operation: REMOVE}}}]}]\n", "istio-system")
               + tel("ns", "metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, tagOverrides: "
                           "{request_host: {value: request.host}}}]}]\n"))
    (log,) = hcms(r, "0.0.0.0_15001")[0]["access_log"]
    assert log["typed_config"]["path"] == "/dev/stderr"
    # Istio: "Istio will insert a newline ('\n') on all formats (if missing)" (EnvoyFileAccessLogProvider)
    assert log["typed_config"]["log_format"] == {"text_format_source": {"inline_string": "%RESPONSE_CODE%\n"}}
    (requests,) = [m for m in stats_value(r, "0.0.0.0_15001")["metrics"] if m["name"] == "requests_total"]
    assert requests == {"name": "requests_total", "dimensions": {"request_host": "request.host"}}


# --------------------------------------------------------------------------- tracing details, one rule each

def fake_proxy(labels=None, owner="reviews-v1", name="reviews-v1-0", mesh_id=None, trust_domain="td.example"):
    from types import SimpleNamespace

    from control.translate.common import Notes
    default_config = {"meshId": mesh_id} if mesh_id else {}
    return SimpleNamespace(workload=SimpleNamespace(labels=labels or {}, owner=owner, name=name), namespace="shop",
                           notes=Notes(), mesh=SimpleNamespace(config=SimpleNamespace(
                               default_config=default_config, trust_domain=trust_domain)))


@pytest.mark.parametrize("labels, owner, expected", [
    ({"service.istio.io/canonical-name": "cn", "app.kubernetes.io/name": "k", "app": "a",
      "service.istio.io/canonical-revision": "cr", "app.kubernetes.io/version": "kv", "version": "v"}, "o", ("cn", "cr")),
    ({"app.kubernetes.io/name": "k", "app": "a", "app.kubernetes.io/version": "kv", "version": "v"}, "o", ("k", "kv")),
    ({"app": "a", "version": "v"}, "o", ("a", "v")),
    ({}, "owner", ("owner", "latest")),
    ({}, "", ("reviews-v1-0", "latest")),
])
def test_canonical_service_follows_the_injectors_label_order(labels, owner, expected):
    from control.translate.telemetry import canonical_service
    assert canonical_service(fake_proxy(labels, owner=owner)) == expected


def test_istio_tags_name_the_workload_and_the_mesh_id_defaults_to_the_trust_domain():
    from control.translate.telemetry import istio_tags
    tags = {t["tag"]: t["literal"]["value"] for t in istio_tags(fake_proxy({"app": "a", "version": "v2"}))}
    assert tags == {"istio.canonical_revision": "v2", "istio.canonical_service": "a", "istio.mesh_id": "td.example",
                    "istio.namespace": "shop", "istio.cluster_id": "Kubernetes"}
    assert istio_tags(fake_proxy(mesh_id="mesh1"))[2] == {"tag": "istio.mesh_id", "literal": {"value": "mesh1"}}


@pytest.mark.parametrize("spec, tag", [
    ({"literal": {"value": "x"}}, {"tag": "t", "literal": {"value": "x"}}),
    ({"literal": {}}, {"tag": "t", "literal": {"value": ""}}),
    ({"environment": {"name": "POD", "defaultValue": "p"}},
     {"tag": "t", "environment": {"name": "POD", "default_value": "p"}}),
    ({"environment": {}}, {"tag": "t", "environment": {"name": "", "default_value": ""}}),
    ({"header": {"name": "x-id", "defaultValue": "none"}},
     {"tag": "t", "request_header": {"name": "x-id", "default_value": "none"}}),
    ({"header": {}}, {"tag": "t", "request_header": {"name": "", "default_value": ""}}),
])
def test_custom_tags_become_envoys_custom_tag_kinds(spec, tag):
    from control.translate.telemetry import custom_tag
    assert custom_tag(fake_proxy(), "t", spec, None) == tag


def test_a_custom_tag_of_another_kind_is_noted_at_its_field():
    from control.istio.resources import Resource
    from control.translate.telemetry import custom_tag
    proxy = fake_proxy()
    res = Resource("telemetry.istio.io/v1", "Telemetry", "mesh", "istio-system", {})
    assert custom_tag(proxy, "t", {"formatter": {"value": "%REQ(x)%"}}, (res, "spec.tracing[0]")) is None
    assert custom_tag(proxy, "u", {"formatter": {}}, None) is None
    assert proxy.notes.items == [
        "<unknown>: Telemetry istio-system/mesh: spec.tracing[0].customTags.t: only literal, environment and header custom tags are translated (formatter "
        "is not)"]


OTEL_HEADERS = """apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: cp, namespace: istio-system}
spec:
  meshConfig:
    defaultConfig: {tracing: {sampling: 12.5}}
    extensionProviders:
    - name: otel
      opentelemetry:
        service: otel.istio-system.svc.cluster.local
        port: 4318
        http: {timeout: 2s, headers: [{name: x-tenant, value: t1}, {name: x-empty}, {value: nameless}]}
    - {name: zipkin, zipkin: {service: otel.istio-system.svc.cluster.local, port: 9411, path: /zipkin,
                              enable64bitTraceId: true, traceContextOption: USE_B3}}
---
apiVersion: v1
kind: Service
metadata: {name: otel, namespace: istio-system}
spec: {selector: {app: otel}, ports: [{name: http, port: 4318}, {name: zipkin, port: 9411}]}
---
"""


def render_with(mesh: str, extra: str, workload: str = "reviews-v1"):
    from control.translate import render_gateway
    result = load_text(ANALYZE_BASE + "---\n" + mesh + extra, "mesh.yaml")
    mesh_snapshot = build_mesh(result.resources)
    rendered = (render_gateway(mesh_snapshot, workload) if workload == "gw"
                else render_sidecar(mesh_snapshot, workload))
    check_rendered(rendered.as_dict())
    return rendered


def test_otel_http_export_takes_headers_timeout_and_the_default_path_and_legacy_sampling():
    r = render_with(OTEL_HEADERS, tel("mesh", "tracing: [{providers: [{name: otel}], customTags: "
                                              "{b: {literal: {value: '2'}}, a: {header: {name: x-a}}}}]\n",
                                      "istio-system"))
    tracing = hcms(r, "0.0.0.0_15001")[0]["tracing"]
    assert tracing["random_sampling"] == {"value": 12.5}  # defaultConfig.tracing.sampling
    assert tracing["provider"]["typed_config"]["http_service"] == {
        "http_uri": {"uri": "http://otel.istio-system.svc.cluster.local:4318/v1/traces",
                     "cluster": "outbound|4318||otel.istio-system.svc.cluster.local", "timeout": "2s"},
        "request_headers_to_add": [{"header": {"key": "x-tenant", "value": "t1"}},
                                   {"header": {"key": "x-empty", "value": ""}}]}
    assert [t["tag"] for t in tracing["custom_tags"]] == [
        "istio.canonical_revision", "istio.canonical_service", "istio.mesh_id", "istio.namespace",
        "istio.cluster_id", "a", "b"]  # Istio's tags, then the custom ones by name
    assert "spawn_upstream_span" not in tracing


def test_zipkin_path_and_64_bit_trace_ids_and_a_gateway_spawns_an_upstream_span():
    r = render_with(OTEL_HEADERS, tel("mesh", "tracing: [{providers: [{name: zipkin}]}]\n", "istio-system"),
                    workload="gw")
    (hcm,) = [f["typed_config"] for lis in r.listeners for ch in lis["filter_chains"] for f in ch["filters"]
              if f["name"] == "envoy.filters.network.http_connection_manager"]
    config = hcm["tracing"]["provider"]["typed_config"]
    assert (config["collector_endpoint"], config["trace_id_128bit"]) == ("/zipkin", False)
    assert hcm["tracing"]["spawn_upstream_span"] is True
    assert hcm["tracing"]["max_path_tag_length"] == 256
    assert not any("traceContextOption" in n for n in r.notes), r.notes  # USE_B3 is what pyproxy sends


def test_tracing_entries_of_the_other_side_are_skipped_and_a_missing_default_provider_is_noted_at_the_entry():
    r = render_with(OTEL_HEADERS.replace("defaultConfig: {tracing: {sampling: 12.5}}",
                                         "defaultProviders: {tracing: [missing]}"),
                    tel("mesh", "tracing: [{providers: [{name: otel}]}]\n", "istio-system")
                    + tel("ns", "tracing:\n- {match: {mode: SERVER}, randomSamplingPercentage: 50}\n"
                                "- {randomSamplingPercentage: 7}\n"))
    assert sampling(r, "0.0.0.0_15001") == 7.0 and sampling(r, "virtualInbound") == 7.0
    r = render_with(OTEL_HEADERS.replace("defaultConfig: {tracing: {sampling: 12.5}}",
                                         "defaultProviders: {tracing: [missing]}"),
                    tel("ns", "tracing: [{randomSamplingPercentage: 7}]\n"))
    assert sampling(r, "0.0.0.0_15001") is None
    assert any(n.endswith("Telemetry default/ns: spec.tracing[0].providers: tracing provider 'missing' is not "
                          "defined in meshConfig.extensionProviders: no tracing") for n in r.notes), r.notes


def test_a_lower_level_can_turn_istio_tags_back_on():
    r = render(tel("mesh", "tracing: [{providers: [{name: otel}], enableIstioTags: false}]\n", "istio-system")
               + tel("ns", "tracing: [{enableIstioTags: true}]\n"))
    tags = [t["tag"] for t in hcms(r, "0.0.0.0_15001")[0]["tracing"]["custom_tags"]]
    assert tags == ["istio.canonical_revision", "istio.canonical_service", "istio.mesh_id", "istio.namespace",
                    "istio.cluster_id"]


DEFAULT_PROVIDERS = OTEL_HEADERS.replace("defaultConfig: {tracing: {sampling: 12.5}}",
                                         "defaultProviders: {tracing: [missing], accessLogging: [envoy]}")


def test_mesh_default_providers_apply_where_telemetry_names_none():
    """meshConfig.defaultProviders: a tracing provider that is not defined is noted (no Telemetry to point at);
    logging entries without providers act on the default ones, skipping the other side's entries (and, as in
    istiod's mergeLogs, a filter applies only to the providers its own entry names); a level naming providers with
    `disabled` turns them off."""
    r = render_with(DEFAULT_PROVIDERS, "")
    assert sampling(r, "0.0.0.0_15001") is None
    assert "tracing provider 'missing' is not defined in meshConfig.extensionProviders: no tracing" in r.notes
    (log,) = hcms(r, "0.0.0.0_15001")[0]["access_log"]  # the default provider without any Telemetry
    assert log["typed_config"]["path"] == "/dev/stdout" and "filter" not in log
    r = render_with(DEFAULT_PROVIDERS, tel("ns", "accessLogging:\n- {match: {mode: SERVER}, disabled: true}\n"
                                                 "- {match: {mode: CLIENT}, filter: {expression: 'response.code >= 500'}}\n"))
    (log,) = hcms(r, "0.0.0.0_15001")[0]["access_log"]
    assert log["typed_config"]["path"] == "/dev/stdout" and "filter" not in log
    assert "access_log" not in hcms(r, "virtualInbound")[0]
    r = render_with(DEFAULT_PROVIDERS, tel("ns", "accessLogging: [{providers: [{name: envoy}], disabled: true}]\n"))
    assert "access_log" not in hcms(r, "0.0.0.0_15001")[0]


# --------------------------------------------------------------------------- istiod's merge rules, table-driven

def merged_logs(levels, mode="CLIENT", defaults=()):
    """merge_access_logging over Telemetries whose `accessLogging` lists are `levels` (least specific first), as
    {provider: 'off' | 'on' | 'on if <expression>'}."""
    from types import SimpleNamespace

    from control.istio.resources import Resource
    from control.translate.telemetry import merge_access_logging
    proxy = SimpleNamespace(mesh=SimpleNamespace(config=SimpleNamespace(
        default_providers={"accessLogging": list(defaults)} if defaults else {})))
    tels = [Resource(TEL, "Telemetry", f"t{i}", "default", {"accessLogging": entries} if entries else {})
            for i, entries in enumerate(levels)]
    chosen = merge_access_logging(proxy, tels, mode)
    if chosen is None:
        return None
    return {name: "off" if c.disabled else ("on" if c.expression == "" else f"on if {c.expression}")
            for name, c in chosen.items()}


def named(*names, **extra):
    return {"providers": [{"name": n} for n in names], **extra}


SERVER = {"match": {"mode": "SERVER"}}
CLIENT = {"match": {"mode": "CLIENT"}}
FILTER_500 = {"filter": {"expression": "response.code >= 500"}}


@pytest.mark.parametrize("levels, mode, defaults, expected", [
    ([], "CLIENT", (), None),  # nothing configured: the legacy accessLogFile decides
    ([None, None], "CLIENT", (), None),  # Telemetries without accessLogging count as none
    ([], "CLIENT", ("envoy",), {"envoy": "on"}),  # defaultProviders alone
    # istiod's "disable config" / "disable default": a provider-less `disabled` turns the inherited ones off
    ([[named("envoy")], [{"disabled": True}]], "CLIENT", (), {"envoy": "off"}),
    ([[{"disabled": True}]], "CLIENT", ("envoy",), {"envoy": "off"}),
    # "multi accesslogging": the entries of one Telemetry name providers together
    ([[named("envoy")], [named("envoy"), named("json")]], "CLIENT", (), {"envoy": "on", "json": "on"}),
    ([[named("envoy")], [named("envoy"), named("json", disabled=True)]], "CLIENT", (),
     {"envoy": "on", "json": "off"}),
    ([[named("envoy")], [named("envoy", "json"), named("envoy")]], "CLIENT", (), {"envoy": "on", "json": "on"}),
    ([[named("envoy", "json")], [named("envoy")]], "CLIENT", (), {"envoy": "on"}),
    # a more specific Telemetry naming providers puts the others out of scope, even one it names for the other side
    ([[named("envoy")], [named("json")]], "CLIENT", (), {"json": "on"}),
    ([[named("envoy")], [named("json", **SERVER)]], "CLIENT", (), {"envoy": "on"}),
    ([[named("envoy", **SERVER), named("json")]], "CLIENT", (), {"json": "on"}),
    ([[named("envoy", **SERVER), named("json")]], "SERVER", (), {"envoy": "on", "json": "on"}),
    # a filter belongs to the providers its own entry names; a later entry naming one again replaces it
    ([[named("envoy", **FILTER_500)]], "CLIENT", (), {"envoy": "on if response.code >= 500"}),
    ([[named("envoy", **FILTER_500)], [named("envoy")]], "CLIENT", (), {"envoy": "on"}),
    ([[named("envoy", **FILTER_500), {"disabled": False, "filter": {"expression": "true"}}]], "CLIENT", (),
     {"envoy": "on if response.code >= 500"}),
    ([[named("envoy", **FILTER_500), named("envoy", **SERVER)]], "CLIENT", (), {"envoy": "on if response.code >= 500"}),
    # a provider-less entry acts on the previous entry's providers, of either side
    ([[named("json", **SERVER), {"disabled": True}]], "CLIENT", ("envoy",), {}),
    ([[named("json", **SERVER), {"disabled": True}]], "SERVER", ("envoy",), {"json": "off"}),
    ([[{"disabled": True, **SERVER}]], "CLIENT", ("envoy",), {}),
    ([[{"disabled": True, **SERVER}, {}]], "SERVER", ("envoy",), {"envoy": "on"}),
])
def test_access_logging_merges_as_istiods_merge_logs(levels, mode, defaults, expected):
    assert merged_logs(levels, mode, defaults) == expected


LEGACY_MESH = MESH.replace("    extensionProviders:\n", "    accessLogFile: /tmp/legacy.log\n    extensionProviders:\n"
                           "    - {name: bare-log, envoyFileAccessLog: {}}\n", 1)


def access_logs(telemetry: str, listener: str = "0.0.0.0_15001"):
    r = render_with(LEGACY_MESH, tel("mesh", telemetry + "\n", "istio-system"))
    return [(log["typed_config"]["path"], log.get("filter", {}).get("extension_filter", {}).get("typed_config", {})
             .get("expression")) for log in hcms(r, listener)[0].get("access_log", ())], r.notes


@pytest.mark.parametrize("telemetry, logs, note", [
    ("", [("/tmp/legacy.log", None)], None),
    # logs in provider-name order; one provider that cannot be built does not stop the next
    ("accessLogging: [{providers: [{name: text-log}, {name: envoy}]}]", [("/dev/stdout", None), ("/dev/stderr", None)],
     None),
    ("accessLogging: [{providers: [{name: envoy}], disabled: true}, {providers: [{name: text-log}]}]",
     [("/dev/stderr", None)], None),
    ("accessLogging: [{providers: [{name: als}, {name: text-log}]}]", [("/dev/stderr", None)],
     "access log provider 'als': envoyOtelAls is not translated (envoyFileAccessLog is)"),
    ("accessLogging: [{providers: [{name: kindless}, {name: text-log}]}]", [("/dev/stderr", None)],
     "access log provider 'kindless' is not an access log provider (envoyFileAccessLog, envoyHttpAls, envoyTcpAls, "
     "envoyOtelAls)"),
    ("accessLogging: [{providers: [{name: otel}]}]", [("/tmp/legacy.log", None)],  # istiod makes no log of it
     "access log provider 'otel' is not an access log provider (envoyFileAccessLog, envoyHttpAls, envoyTcpAls, "
     "envoyOtelAls)"),
    ("accessLogging: [{providers: [{name: als}]}, {providers: [{name: otel}], disabled: true}]", [],
     "access log provider 'als': envoyOtelAls is not translated (envoyFileAccessLog is)"),
    ("accessLogging: [{providers: [{name: envoy}], filter: {expression: \"request.url_path.startsWith('/v1')\"}},"
     " {providers: [{name: text-log}], filter: {expression: 'response.code >= 500'}}]",
     [("/dev/stderr", "response.code >= 500")], None),
    ("accessLogging: [{providers: [{name: bare-log}]}]", [("/dev/stdout", None)], None),
    # a provider chosen but disabled turns logging off; only undefined ones leave the legacy file in place
    ("accessLogging: [{providers: [{name: envoy}], disabled: true}]", [], None),
    ("accessLogging: [{providers: [{name: nolog}]}]", [("/tmp/legacy.log", None)],
     "access log provider 'nolog' is not defined in meshConfig.extensionProviders"),
    ("accessLogging: [{providers: [{name: nolog}, {name: text-log}]}]", [("/dev/stderr", None)],
     "access log provider 'nolog' is not defined in meshConfig.extensionProviders"),
    ("accessLogging: [{match: {mode: SERVER}, providers: [{name: envoy}]}]", [("/tmp/legacy.log", None)], None),
])
def test_access_log_providers_become_file_logs_or_the_legacy_file(telemetry, logs, note):
    got, notes = access_logs(telemetry)
    assert got == logs
    if note is not None:
        assert note in notes, notes


def test_a_workload_telemetry_listed_first_still_merges_last_and_target_refs_are_skipped():
    """`policies_for` lists a namespace's Telemetries in load order; the selecting one still wins, and one bound by
    `targetRefs` is noted (at its field) without hiding the ones after it."""
    r = render(tel("gw", "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n"
                         "tracing: [{randomSamplingPercentage: 90}]\n")
               + tel("wl", "selector: {matchLabels: {app: reviews}}\ntracing: [{randomSamplingPercentage: 70}]\n")
               + tel("ns", "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 20}]\n"))
    assert sampling(r, "0.0.0.0_15001") == 70.0
    assert [n.split(": ", 1)[1] for n in r.notes if "targetRef" in n] == [
        "Telemetry default/gw: spec.targetRef: Telemetry bound by targetRef(s) is not translated (selector is)"]


def http_metrics(telemetries: str, listener: str) -> list[dict] | None:
    """istio.stats' `metrics` on that listener's HCM, or None when the filter is not there."""
    r = render(telemetries)
    f = next((f for f in hcms(r, listener)[0]["http_filters"] if f["name"] == "istio.stats"), None)
    return None if f is None else f["typed_config"]["value"].get("metrics", [])


@pytest.mark.parametrize("root, ns, outbound, inbound", [
    # an override without `metric` is ALL_METRICS
    ("[{disabled: true}]", None, None, None),
    ("[{match: {mode: SERVER}, disabled: true}]", None, [], None),
    # any later override on a side turns the filter back on there; the disabling one's tags are not kept
    ("[{disabled: true, tagOverrides: {a: {value: request.host}}}]",
     "[{match: {metric: REQUEST_SIZE, mode: CLIENT}, tagOverrides: {b: {value: request.method}}}]",
     [{"name": "request_bytes", "dimensions": {"b": "request.method"}}], None),
    ("[{disabled: true}, {match: {metric: REQUEST_COUNT}, disabled: true}]", None,
     [{"name": "requests_total", "drop": True}], [{"name": "requests_total", "drop": True}]),
    ("[{disabled: true}]", "[{match: {metric: ALL_METRICS}, disabled: false}]", [], []),
    ("[{disabled: true}]", "[{match: {metric: TCP_SENT_BYTES}}]", [], []),
    ("[{disabled: true}]", "[{match: {customMetric: my_metric}}]", [], []),
    ("[{disabled: true}]", "[{match: {customMetric: my_metric}, disabled: true}]", [], []),
    # ALL_METRICS `disabled: false` undoes one metric's drop, as istiod sets it on every metric
    ("[{match: {metric: REQUEST_COUNT}, disabled: true}, {match: {metric: RESPONSE_SIZE}, disabled: true}]",
     "[{match: {metric: ALL_METRICS, mode: SERVER}, disabled: false}]",
     [{"name": "requests_total", "drop": True}, {"name": "response_bytes", "drop": True}], []),
    # an override for the other side, a custom metric or a TCP one does not stop the overrides after it
    ("[{match: {mode: SERVER, metric: REQUEST_SIZE}, disabled: true}, {match: {customMetric: m}, disabled: true},"
     " {match: {metric: TCP_SENT_BYTES}, disabled: true}, {match: {metric: REQUEST_COUNT}, disabled: true}]", None,
     [{"name": "requests_total", "drop": True}],
     [{"name": "requests_total", "drop": True}, {"name": "request_bytes", "drop": True}]),
    ("[{match: {metric: RESPONSE_SIZE}, tagOverrides: {a: {operation: UPSERT, value: request.host}}}]", None,
     [{"name": "response_bytes", "dimensions": {"a": "request.host"}}],
     [{"name": "response_bytes", "dimensions": {"a": "request.host"}}]),
])
def test_metric_overrides_disable_and_re_enable_as_istiods_merge_metrics(root, ns, outbound, inbound):
    telemetries = tel("mesh", f"metrics: [{{overrides: {root}}}]\n", "istio-system")
    if ns is not None:
        telemetries += tel("ns", f"metrics: [{{overrides: {ns}}}]\n")
    assert http_metrics(telemetries, "0.0.0.0_15001") == outbound
    assert http_metrics(telemetries, "virtualInbound") == inbound


def test_metric_overrides_not_translated_are_noted_at_their_field():
    r = render(tel("mesh", "metrics: [{overrides: [{match: {metric: TCP_SENT_BYTES}, disabled: true},"
                           " {match: {metric: REQUEST_COUNT}, tagOverrides: {empty: null}}]}]\n", "istio-system"))
    notes = [n.split(": ", 1)[1] for n in r.notes]
    assert ("Telemetry istio-system/mesh: spec.metrics[0].overrides[0]: TCP_SENT_BYTES overrides are not translated "
            "(pyproxy reports the HTTP metrics only)") in notes
    assert any(n.startswith("Telemetry istio-system/mesh: spec.metrics[0].overrides[1].tagOverrides.empty.value: "
                            "'' is not an expression pyproxy evaluates (") and n.endswith("); tag left out")
               for n in notes), notes


def test_a_lower_levels_custom_tags_replace_the_inherited_ones_whole():
    """istiod's Tracing(): `spec.CustomTags = m.CustomTags` (a shallow merge, unlike metrics' tag overrides)."""
    r = render(tel("mesh", "tracing: [{providers: [{name: otel}], enableIstioTags: false, customTags: "
                           "{a: {literal: {value: '1'}}, b: {literal: {value: '2'}}}}]\n", "istio-system")
               + tel("ns", "tracing: [{customTags: {b: {literal: {value: '3'}}}}, {randomSamplingPercentage: 5}]\n"))
    assert hcms(r, "0.0.0.0_15001")[0]["tracing"]["custom_tags"] == [{"tag": "b", "literal": {"value": "3"}}]


def test_stats_config_says_whether_istio_stats_stays_as_a_bool():
    from control.translate import find_workload
    from control.translate.common import make_proxy
    from control.translate.telemetry import stats_config
    result = load_text(ANALYZE_BASE + "---\n" + MESH + tel("mesh", "metrics: [{overrides: [{match: {mode: CLIENT}, "
                                                                 "disabled: true}]}]\n", "istio-system"), "mesh.yaml")
    mesh = build_mesh(result.resources)
    proxy = make_proxy(mesh, find_workload(mesh, "reviews-v1"))
    assert stats_config(proxy, "outbound") == (False, [])
    assert stats_config(proxy, "inbound") == (True, [])


def test_provider_names_match_case_insensitively_and_a_mesh_provider_named_envoy_wins():
    """istiod's fetchProvider compares names with strings.EqualFold; the built-in `envoy` is only the default."""
    mesh = MESH.replace("    extensionProviders:\n", "    extensionProviders:\n"
                        "    - {name: Envoy, envoyFileAccessLog: {path: /dev/stderr}}\n", 1)
    r = render_with(mesh, tel("mesh", "tracing: [{providers: [{name: OTEL}]}]\n"
                                      "accessLogging: [{providers: [{name: envoy}]}]\n", "istio-system"))
    hcm = hcms(r, "0.0.0.0_15001")[0]
    assert hcm["tracing"]["provider"]["name"] == "envoy.tracers.opentelemetry"
    assert [log["typed_config"]["path"] for log in hcm["access_log"]] == ["/dev/stderr"]
    r = render(tel("mesh", "accessLogging: [{providers: [{name: ENVOY}]}]\n", "istio-system"))
    assert [log["typed_config"]["path"] for log in hcms(r, "0.0.0.0_15001")[0]["access_log"]] == ["/dev/stdout"]


def log_format_summary(fmt: dict) -> tuple[str, str]:
    """('json', its first key in order) or ('text', the format's first 15 characters)."""
    if "json_format" in fmt:
        return "json", sorted(fmt["json_format"])[0]
    return "text", fmt["text_format_source"]["inline_string"][:15]


@pytest.mark.parametrize("mesh_config, expected", [
    ("accessLogEncoding: JSON\naccessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'", ("json", "code")),
    ("accessLogEncoding: JSON", ("json", "authority")),  # Istio's JSON labels
    ("accessLogFormat: '%RESPONSE_CODE%'", ("text", "%RESPONSE_CODE%")),
    ("{}", ("text", "[%START_TIME%] ")),
    # a mesh provider named envoy takes meshConfig's format too, unless it has its own or omits empty values
    ("accessLogEncoding: JSON\nextensionProviders: [{name: envoy, envoyFileAccessLog: {path: /dev/stderr}}]",
     ("json", "authority")),
    ("accessLogEncoding: JSON\nextensionProviders: [{name: envoy, envoyFileAccessLog: {logFormat: {text: x}}}]",
     ("text", "x\n")),
    ("accessLogEncoding: JSON\nextensionProviders: [{name: envoy, envoyFileAccessLog: {omitEmptyValues: true}}]",
     ("text", "[%START_TIME%] ")),
])
def test_the_built_in_envoy_provider_logs_in_mesh_configs_encoding_and_format(mesh_config, expected):
    """istiod's telemetryAccessLog: the `envoy` provider without a logFormat is FileAccessLogFromMeshConfig."""
    mesh = ("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n"
            "metadata: {name: cp, namespace: istio-system}\nspec:\n  meshConfig:\n" + textwrap.indent(mesh_config, "    ") + "\n---\n")
    r = render_with(mesh, tel("mesh", "accessLogging: [{providers: [{name: envoy}]}]\n", "istio-system"))
    (log,) = hcms(r, "0.0.0.0_15001")[0]["access_log"]
    assert log_format_summary(log["typed_config"]["log_format"]) == expected
