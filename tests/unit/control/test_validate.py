"""control.istio.validate: Istio's schema and webhook rules, one table per kind of check."""
from __future__ import annotations

import pytest

from control.istio.load import load_text
from control.istio.validate import check_duration, check_regex, check_spec, parse_duration


def issues(kind, spec, *kinds):
    _, found = check_spec(kind, spec)
    return [(i.path, i.text) for i in found if not kinds or i.kind in kinds]


def errors(kind, spec):
    return issues(kind, spec, "error")


def route(*destinations, **extra):
    return {"hosts": ["r"], "http": [{"route": list(destinations), **extra}]}


def dest(host="r", weight=None, **more):
    d = {"destination": {"host": host, **more}}
    if weight is not None:
        d["weight"] = weight
    return d


# --- durations: Go's time.ParseDuration (gogo jsonpb), then Istio's >= 1ms at ms precision ---------------

@pytest.mark.parametrize("text, ns", [("1s", 10**9), ("0.5s", 5 * 10**8), ("100ms", 10**8), ("1h30m", 5400 * 10**9),
                                      ("1.5m", 90 * 10**9), ("250us", 250_000), ("0", 0)])
def test_duration_syntax(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("value, problem", [
    ("1s", None), ("0.5s", None), ("100ms", None), ("2h", None), ("1ms", None),
    ("5", "missing unit"), ("5 s", "invalid duration"), ("1d", "invalid duration"), ("abc", "invalid duration"),
    ("500us", "greater than 1ms"), ("0s", "greater than 1ms"), ("1.5ms", "ms precision"),
    (5, "duration string"), (True, "duration string"),
])
def test_duration_validation(value, problem):
    result = check_duration(value)
    assert (result is None) if problem is None else (problem in result)


def test_duration_field_error_names_the_path():
    assert errors("VirtualService", route(dest(), timeout="10")) == [
        ("spec.http[0].timeout", "missing unit in duration '10' (write e.g. \"10s\")")]


# --- ports ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("number, ok", [(1, True), (80, True), (65535, True), (0, False), (65536, False),
                                        (-1, False), ("80", False), (80.0, True)])
def test_port_numbers(number, ok):
    found = errors("VirtualService", route(dest(port={"number": number})))
    assert (found == []) == ok


def test_port_error_message():
    assert errors("ServiceEntry", {"hosts": ["a.com"], "ports": [{"number": 70000, "name": "http"}]}) == [
        ("spec.ports[0].number", "port number 70000 must be in the range 1..65535")]


# --- weights: relative in modern Istio; negative or all-zero multi-destination routes are errors ------------

@pytest.mark.parametrize("weights, expect", [
    ((100,), []),
    ((80, 20), []),
    ((50, 50), []),
    ((70, 20), [("info", "spec.http[0].route", "destination weights add up to 90, not 100; Istio treats them as "
                                               "relative shares (each gets weight/90)")]),
    ((0, 0), [("error", "spec.http[0].route", "total destination weight = 0")]),
    ((None, None), [("error", "spec.http[0].route", "total destination weight = 0")]),
    ((-10, 110), [("error", "spec.http[0].route[0].weight", "weight -10 < 0")]),
])
def test_route_weights(weights, expect):
    """The messages users see, whole (a substring check let a mangled message pass)."""
    spec = route(*(dest(subset=f"v{i}", weight=w) for i, w in enumerate(weights)))
    _, found = check_spec("VirtualService", spec)
    assert [(i.kind, i.path, i.text) for i in found] == expect


@pytest.mark.parametrize("host, problem", [
    ("*", None), ("10.0.0.1/8", None),  # an IP network, host bits set
    ("a.example.com.", None), ("a.example.b_c.", "invalid host 'a.example.b_c.': 'b_c' is not a valid DNS label"),
    ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 63, None),  # 255 characters: the limit
    ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62 + ".e", "too long (max 255)"),
])
def test_host_names(host, problem):
    from control.istio.validate import _host_error
    got = _host_error(host)
    assert got == problem if problem is None else problem in got


def test_an_auto_sni_host_on_a_gateway_bound_virtual_service_must_have_the_outbound_form():
    from control.istio.validate import _vs_host_error
    assert _vs_host_error("outbound_.80_._.a.example", True) is None
    assert _vs_host_error("outbound_80_a", True) == ("domain name 'outbound_80_a' invalid, should follow "
                                                    "'outbound_.<port>_._.<hostname>' format")


# --- regexes: RE2 approximated by Python re, RE2-only features rejected --------------------------------------

@pytest.mark.parametrize("pattern, problem", [
    ("^/api/v[0-9]+/.*", None), ("(?i)/Login", None), (r"\d+$", None),
    ("[unclosed", "error parsing regexp"), ("(?=x)y", "lookahead"), (r"(a)\1", "backreferences"),
    ("a++", "possessive"), (5, "regular expression string"),
])
def test_regex_validation(pattern, problem):
    result = check_regex(pattern)
    assert (result is None) if problem is None else (problem in result)


def test_regex_in_a_uri_match():
    spec = {"hosts": ["r"], "http": [{"match": [{"uri": {"regex": "(?!admin)"}}], "route": [dest()]}]}
    ((path, text),) = errors("VirtualService", spec)
    assert path == "spec.http[0].match[0].uri.regex" and "RE2" in text


# --- oneofs and required fields ------------------------------------------------------------------------

@pytest.mark.parametrize("kind, spec, path, text", [
    ("VirtualService", {"hosts": ["r"], "http": [{"match": [{"uri": {"exact": "/a", "prefix": "/"}}],
                                                  "route": [dest()]}]},
     "spec.http[0].match[0].uri.prefix", "only one of exact, prefix, regex may be set (found exact and prefix)"),
    ("DestinationRule", {"host": "r", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM",
                                                                         "consistentHash": {"useSourceIp": True}}}},
     "spec.trafficPolicy.loadBalancer.consistentHash",
     "only one of simple, consistentHash may be set (found simple and consistentHash)"),
    ("RequestAuthentication", {"jwtRules": [{"issuer": "i", "jwks": "{}", "jwksUri": "https://x/jwks"}]},
     "spec.jwtRules[0].jwksUri", "only one of jwks, jwksUri, jwks_uri may be set (found jwks and jwksUri)"),
])
def test_oneof_fields(kind, spec, path, text):
    assert (path, text) in errors(kind, spec)


@pytest.mark.parametrize("kind, spec, path", [
    ("DestinationRule", {"subsets": [{"labels": {"v": "1"}}]}, "spec.host"),
    ("DestinationRule", {"host": "r", "subsets": [{"labels": {"v": "1"}}]}, "spec.subsets[0].name"),
    ("VirtualService", {"hosts": ["r"], "http": [{"route": [{"weight": 100}]}]}, "spec.http[0].route[0].destination"),
    ("Gateway", {"selector": {"istio": "ingressgateway"}}, "spec.servers"),
    ("Gateway", {"servers": [{"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["*"]}]},
     "spec.servers[0].port.name"),
    ("ServiceEntry", {"ports": [{"number": 80, "name": "http"}]}, "spec.hosts"),
    ("AuthorizationPolicy", {"rules": [{"when": [{"values": ["a"]}]}]}, "spec.rules[0].when[0].key"),
])
def test_required_fields(kind, spec, path):
    assert (path, f"{path.rsplit('.', 1)[1]} is required") in errors(kind, spec)


# --- unknown fields: misspelt and misplaced "did you mean" ----------------------------------------------

@pytest.mark.parametrize("kind, spec, path, hint", [
    ("VirtualService", route(dest(), timout="1s"), "spec.http[0].timout", "did you mean timeout?"),
    ("VirtualService", route(dest(), retries={"attempts": 2, "perTryTimout": "1s"}),
     "spec.http[0].retries.perTryTimout", "did you mean perTryTimeout?"),
    ("DestinationRule", {"host": "r", "trafficPolicy": {"connectionPool": {"tcp": {"max_connections": 1}}}},
     "spec.trafficPolicy.connectionPool.tcp.max_connections", "did you mean maxConnections?"),
    ("DestinationRule", {"host": "r", "trafficPolicy": {"connectionPool": {"http": {"consecutive5xxErrors": 5}}}},
     "spec.trafficPolicy.connectionPool.http.consecutive5xxErrors",
     "did you mean trafficPolicy.outlierDetection.consecutive5xxErrors?"),
    ("DestinationRule", {"host": "r", "subsets": [{"name": "v1", "trafficPolicy": {
        "connectionPool": {"http": {"baseEjectionTime": "30s", "interval": "5s"}}}}]},
     "spec.subsets[0].trafficPolicy.connectionPool.http.interval",
     "did you mean subsets[0].trafficPolicy.outlierDetection.interval?"),
    ("VirtualService", {"hosts": ["r"], "http": [{"route": [dest()], "perTryTimeout": "1s"}]},
     "spec.http[0].perTryTimeout", "did you mean http[0].retries.perTryTimeout?"),
    ("Gateway", {"servers": [{"port": {"number": 80, "name": "h", "protocol": "HTTP"}, "hosts": ["*"],
                              "httpsRedirect": True}]},
     "spec.servers[0].httpsRedirect", "did you mean servers[0].tls.httpsRedirect?"),
    # the fields known where the unknown one stands do not count (`gateways` is an HTTPMatchRequest field too)
    ("VirtualService", {"hosts": ["r"], "gateways": ["mesh"], "headers": {"request": {"set": {"a": "b"}}},
                        "http": [{"route": [dest()]}]}, "spec.headers", "did you mean http[].headers?"),
])
def test_unknown_field_did_you_mean(kind, spec, path, hint):
    found = dict(issues(kind, spec, "unknown"))
    assert found[path].endswith(hint)


def test_unknown_field_is_dropped_from_the_cleaned_spec():
    cleaned, _ = check_spec("VirtualService", route(dest(), timout="1s"))
    assert "timout" not in cleaned["http"][0] and cleaned["http"][0]["route"][0]["destination"]["host"] == "r"


def test_kubernetes_objects_are_open_for_fields_the_mesh_does_not_read():
    spec = {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": "http"}], "sessionAffinity": "None"}
    assert issues("Service", spec) == []


# --- types and enums ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, spec, path, text", [
    ("VirtualService", {"hosts": "r", "http": [{"route": [dest()]}]}, "spec.hosts", "must be a list, not string 'r'"),
    ("DestinationRule", {"host": "r", "trafficPolicy": {"tls": {"mode": "MUTAL"}}}, "spec.trafficPolicy.tls.mode",
     "did you mean MUTUAL?"),
    ("DestinationRule", {"host": "r", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": "ten"}}}},
     "spec.trafficPolicy.connectionPool.tcp.maxConnections", "must be an integer"),
    ("DestinationRule", {"host": "r", "trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 150}}},
     "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "must be in the range 0..100"),
    ("PeerAuthentication", {"mtls": {"mode": "STRICT"}, "portLevelMtls": {8080: {"mode": "DISABLE"}}},
     "spec.portLevelMtls", "portLevelMtls requires selector"),
    ("Gateway", {"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["a.com"]}]},
     "spec.servers[0].tls", "server must have TLS settings"),
    ("Gateway", {"servers": [{"port": {"number": 443, "name": "h", "protocol": "HTTPX"}, "hosts": ["a.com"]}]},
     "spec.servers[0].port.protocol", "unrecognized protocol 'HTTPX'; did you mean HTTP?"),
    ("VirtualService", route(dest(), retries={"attempts": 3, "retryOn": "5xx,conect-failure"}),
     "spec.http[0].retries.retryOn", "'conect-failure' is not a valid retryOn policy; did you mean connect-failure?"),
    ("VirtualService", route(dest(), retries={"attempts": 0, "perTryTimeout": "1s"}),
     "spec.http[0].retries.attempts", "attempts are set to 0"),
    ("VirtualService", route(dest(), fault={"abort": {"httpStatus": 700, "percentage": {"value": 10}}}),
     "spec.http[0].fault.abort.httpStatus", "not in range 200-599"),
    ("VirtualService", route(dest(), redirect={"uri": "/x"}), "spec.http[0].route",
     "cannot contain both route and redirect"),
    ("VirtualService", {"hosts": ["r"], "http": [{"match": [{"uri": {"prefix": "/"}}]}]}, "spec.http[0]",
     "HTTP route, redirect or directResponse is required"),
    ("VirtualService", {"hosts": ["r"]}, "spec", "http, tcp or tls must be provided"),
    ("DestinationRule", {"host": "r", "trafficPolicy": {"tls": {"mode": "MUTUAL"}}},
     "spec.trafficPolicy.tls.clientCertificate", "client certificate required for mutual tls"),
])
def test_type_enum_and_rule_errors(kind, spec, path, text):
    found = errors(kind, spec)
    assert any(p == path and text in t for p, t in found), found


# --- durations where 0s means something ------------------------------------------------------------------

def _cookie(ttl):
    return {"host": "r", "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpCookie": {"name": "u", "ttl": ttl}}}}}


@pytest.mark.parametrize("ttl, problem", [
    ("0s", None),  # Istio's own example: a session cookie (the webhook only requires the name)
    ("3600s", None), ("1h", None),
    ("-1s", "must not be negative"), ("10", "missing unit"),
])
def test_http_cookie_ttl_zero_is_a_session_cookie(ttl, problem):
    found = errors("DestinationRule", _cookie(ttl))
    if problem is None:
        assert found == []
    else:
        assert [p for p, t in found if problem in t] == ["spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl"]


@pytest.mark.parametrize("idle, ok", [("0s", True), ("1h", True), ("500us", False)])
def test_tcp_idle_timeout_zero_disables_it(idle, ok):
    spec = {"host": "r", "trafficPolicy": {"connectionPool": {"tcp": {"idleTimeout": idle}}}}
    assert (errors("DestinationRule", spec) == []) == ok


def test_other_durations_still_reject_zero():
    spec = {"host": "r", "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "0s"}}}}
    assert errors("DestinationRule", spec) == [
        ("spec.trafficPolicy.connectionPool.tcp.connectTimeout", "duration '0s' must be greater than 1ms")]


# --- two WorkloadSelectors: networking (`labels`) and istio.type.v1beta1 (`matchLabels`) ------------------

@pytest.mark.parametrize("kind, spec", [
    ("Sidecar", {"workloadSelector": {"labels": {"app": "a"}}, "egress": [{"hosts": ["./*"]}]}),
    ("ServiceEntry", {"hosts": ["a.internal"], "ports": [{"number": 80, "name": "http"}], "resolution": "STATIC",
                      "location": "MESH_INTERNAL", "workloadSelector": {"labels": {"app": "a"}}}),
    ("DestinationRule", {"host": "r", "workloadSelector": {"matchLabels": {"app": "a"}},
                         "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}),
    ("AuthorizationPolicy", {"selector": {"matchLabels": {"app": "a"}}}),
])
def test_each_kind_uses_its_own_workload_selector_field(kind, spec):
    assert issues(kind, spec) == []


@pytest.mark.parametrize("kind, spec, path, hint", [
    ("Sidecar", {"workloadSelector": {"matchLabels": {"app": "a"}}, "egress": [{"hosts": ["./*"]}]},
     "spec.workloadSelector.matchLabels", "did you mean labels?"),
    ("ServiceEntry", {"hosts": ["a.internal"], "resolution": "STATIC", "workloadSelector": {"matchLabels": {"a": "b"}}},
     "spec.workloadSelector.matchLabels", "did you mean labels?"),
    ("AuthorizationPolicy", {"selector": {"labels": {"app": "a"}}}, "spec.selector.labels",
     "did you mean matchLabels?"),
])
def test_the_other_selector_field_is_unknown_with_a_hint(kind, spec, path, hint):
    found = issues(kind, spec, "unknown")
    assert any(p == path and hint in t for p, t in found), found


def test_sidecar_selector_without_labels_is_a_warning_as_in_istio():
    """ValidateSidecar: "workload selector specified without labels, will be applied to all services in
    namespace" is a warning (kept backwards compatible), and the Sidecar is namespace-wide."""
    spec = {"workloadSelector": {}, "egress": [{"hosts": ["./*"]}]}
    assert errors("Sidecar", spec) == []
    assert any(p == "spec.workloadSelector" and "without labels" in t for p, t in issues("Sidecar", spec, "warning"))


def test_selector_labels_reject_wildcards():
    spec = {"workloadSelector": {"labels": {"app": "a*"}}, "egress": [{"hosts": ["./*"]}]}
    assert errors("Sidecar", spec) == [("spec.workloadSelector.labels.app",
                                        'wildcard is not supported in selector: "app=a*"')]


# --- Istio's VirtualService / Gateway rules (pkg/config/validation validation.go, virtualservice.go) -------

R = [{"destination": {"host": "r"}}]


@pytest.mark.parametrize("spec, path, text", [
    ({"hosts": ["a.com", "a.com"], "http": [{"route": R}]}, "spec.hosts[0]", "duplicate hosts in virtual service"),
    ({"hosts": ["*.a.com", "b.a.com"], "http": [{"route": R}]}, "spec.hosts[0]",
     "duplicate hosts in virtual service: *.a.com & b.a.com"),
    ({"hosts": ["a.com"], "gateways": ["b@dgateway"], "http": [{"route": R}]}, "spec.gateways[0]",
     "domain name 'b@dgateway' invalid (label 'b@dgateway' invalid)"),
    ({"hosts": ["a.com"], "gateways": ["ns1/*"], "http": [{"route": R}]}, "spec.gateways[0]",
     "invalid value for gateway name"),
    ({"hosts": ["a.com"], "gateways": ["*/gateway"], "http": [{"route": R}]}, "spec.gateways[0]",
     "invalid value for namespace"),
    ({"hosts": ["a.com"], "tcp": [{"match": [{"port": 80}]}]}, "spec.tcp[0].route", "TCP route is required"),
    ({"hosts": ["a.com"], "gateways": ["gw"], "tls": [{"match": [{"sniHosts": ["a.com"]}]}]}, "spec.tls[0].route",
     "TLS route is required"),
    ({"hosts": ["a.com"], "http": [{"rewrite": {"authority": "b"}, "route": R,
                                    "headers": {"request": {"set": {":authority": "c"}}}}]},
     "spec.http[0].headers.request.set", "authority header cannot be set multiple times"),
    ({"hosts": ["a.com"], "http": [{"match": [{"headers": {"@request.auth.claims.group": {"exact": "x"}}}],
                                    "route": R}]},
     "spec.http[0].match[0].headers", "JWT claim based routing (key: @request.auth.claims.group) is only supported"),
    ({"hosts": ["a.com"], "gateways": ["gw"], "tls": [{"match": [{"sniHosts": ["foo*.a.com"]}], "route": R}]},
     "spec.tls[0].match[0].sniHosts[0]", "invalid host"),
    ({"hosts": ["a.com"], "gateways": ["gw"], "tls": [{"match": [{"sniHosts": ["b.com"]}], "route": R}]},
     "spec.tls[0].match[0].sniHosts[0]", "is not a compatible subset of any of the virtual service hosts"),
])
def test_istio_rejects_virtual_service(spec, path, text):
    assert any(p == path and text in t for p, t in errors("VirtualService", spec)), errors("VirtualService", spec)


@pytest.mark.parametrize("spec", [
    # Istio's auto-generated SNI names (AUTO_PASSTHROUGH) on a gateway-bound VirtualService with SNI matches
    {"hosts": ["outbound_.15010_._.istiod.istio-system.svc.cluster.local"], "gateways": ["istio-system/gw"],
     "tls": [{"match": [{"sniHosts": ["outbound_.15010_._.istiod.istio-system.svc.cluster.local"]}], "route": R}]},
    {"hosts": ["*.a.com"], "gateways": ["gw"], "tls": [{"match": [{"sniHosts": ["b.a.com"]}], "route": R}]},
    {"hosts": ["a.com"], "gateways": ["gw"], "http": [{"match": [{"headers": {"@request.auth.claims[g]": {"exact": "x"}}}],
                                                       "route": R}]},
    {"hosts": ["a.com"], "http": [{"rewrite": {"authority": "b"}, "route": R}]},
])
def test_istio_accepts_virtual_service(spec):
    assert errors("VirtualService", spec) == []


def test_legacy_gateway_name_is_a_warning():
    spec = {"hosts": ["a.com"], "gateways": ["gw.istio-system"], "http": [{"route": R}]}
    assert errors("VirtualService", spec) == []
    assert any("prefer the <namespace>/<name> format: 'istio-system/gw'" in t
               for _, t in issues("VirtualService", spec, "warning"))


def test_gateway_port_names_must_be_unique():
    servers = [{"port": {"number": n, "name": "http", "protocol": "HTTP"}, "hosts": ["a.com"]} for n in (80, 81)]
    assert errors("Gateway", {"servers": servers}) == [
        ("spec.servers[1].port.name", "port names in servers must be unique: duplicate name http")]


def test_multiple_tracing_providers_is_a_warning_as_in_istio():
    spec = {"tracing": [{"providers": [{"name": "a"}, {"name": "b"}]}]}
    assert errors("Telemetry", spec) == []
    assert issues("Telemetry", spec, "warning") == [("spec.tracing[0].providers",
                                                     "multiple providers is not currently supported")]


# --- metadata Istio's validation reads (validateMetadata, usesWaypoint, a Sidecar's `./` namespace) ------

def _loaded(kind: str, spec: str, metadata: str) -> list[str]:
    api = {"AuthorizationPolicy": "security.istio.io/v1", "RequestAuthentication": "security.istio.io/v1",
           "ServiceEntry": "networking.istio.io/v1", "Sidecar": "networking.istio.io/v1"}[kind]
    result = load_text(f"apiVersion: {api}\nkind: {kind}\nmetadata: {metadata}\nspec: {spec}\n", "x.yaml")
    return [f"{f.level.label} {f.message}" for f in result.findings if f.level.label in ("Error", "Warning")]


DRY_RUN = "Error Schema validation error: metadata.annotations.istio.io/dry-run: "


@pytest.mark.parametrize("kind, spec, annotations, error", [
    ("AuthorizationPolicy", "{action: DENY, rules: [{}]}", "{istio.io/dry-run: 'true'}", None),
    ("AuthorizationPolicy", "{rules: [{}]}", "{istio.io/dry-run: 'foo'}",
     DRY_RUN + "istio.io/dry-run has an invalid value (foo): not a boolean"),
    ("AuthorizationPolicy", "{action: AUDIT, rules: [{}]}", "{istio.io/dry-run: 'true'}",
     DRY_RUN + "the annotation istio.io/dry-run currently only supports action ALLOW/DENY, found action AUDIT"),
    ("RequestAuthentication", "{}", "{istio.io/dry-run: 'true'}",
     DRY_RUN + "default/p has unsupported annotation istio.io/dry-run, please remove the annotation"),
    ("RequestAuthentication", "{}", "{internal.istio.io/parents: x}",
     "Error Schema validation error: metadata.annotations.internal.istio.io/parents: 'internal.istio.io/parents' "
     "annotation found, this may not be set by users"),
])
def test_annotations_istio_validates_on_every_kind(kind, spec, annotations, error):
    found = [f for f in _loaded(kind, spec, f"{{name: p, annotations: {annotations}}}") if f.startswith("Error")]
    assert found == ([] if error is None else [error])


def test_a_dynamic_dns_mesh_internal_service_entry_cannot_use_a_waypoint():
    spec = ("{hosts: ['*.a.com'], ports: [{number: 80, protocol: HTTP, name: http}], resolution: DYNAMIC_DNS, "
            "location: MESH_INTERNAL}")
    assert not [f for f in _loaded("ServiceEntry", spec, "{name: se}") if f.startswith("Error")]
    errors_ = [f for f in _loaded("ServiceEntry", spec, "{name: se, labels: {istio.io/use-waypoint: wp}}")
               if f.startswith("Error")]
    assert any("not supported when using waypoints" in f for f in errors_), errors_
    assert not [f for f in _loaded("ServiceEntry", spec, "{name: se, labels: {istio.io/use-waypoint: none}}")
                if f.startswith("Error")]


def test_a_sidecar_dot_host_is_in_the_sidecar_namespace():
    spec = "{egress: [{hosts: ['./*', 'bar/a.com']}]}"
    assert any("duplicated egress host: bar/a.com" in f for f in _loaded("Sidecar", spec, "{name: s, namespace: bar}"))
    assert not any("duplicated" in f for f in _loaded("Sidecar", spec, "{name: s, namespace: foo}"))


def test_a_telemetry_access_log_filter_must_parse_as_cel():
    spec = {"accessLogging": [{"filter": {"expression": ")++++"}}]}
    assert any(p == "spec.accessLogging[0].filter.expression" and "valid CEL" in t for p, t in errors("Telemetry", spec))
    assert errors("Telemetry", {"accessLogging": [{"filter": {"expression": "response.code >= 400"}}]}) == []


# --- scalars: protobuf JSON forms, enums, booleans --------------------------------------------------------

@pytest.mark.parametrize("value, typ, expect", [
    ("-5", "int64", (-5, None)), ("18446744073709551615", "uint64", (2**64 - 1, None)),  # 64-bit ints as strings
    ("5", "int32", ("5", "must be an integer, not string '5'")),  # ... but no others
    ("yes", "bool", ("yes", "must be true or false, not string 'yes'")),
    (1, "bool", (1, "must be true or false, not number 1")),
    ("SIMPEL", "enum:NONE|SIMPLE",
     ("SIMPEL", "invalid value 'SIMPEL'; must be one of NONE, SIMPLE; did you mean SIMPLE?")),
    ("XYZ", "enum:NONE|SIMPLE", ("XYZ", "invalid value 'XYZ'; must be one of NONE, SIMPLE")),
    (None, "enum:NONE|SIMPLE", (None, "invalid value None; must be one of NONE, SIMPLE")),  # null is no misspelt NONE
])
def test_scalar_values(value, typ, expect):
    from control.istio.validate import _scalar
    assert _scalar(value, typ) == expect


def test_a_boolean_field_refuses_a_string():
    spec = route(dest(), corsPolicy={"allowOrigins": [{"exact": "a"}], "allowCredentials": "yes"})
    assert errors("VirtualService", spec) == [
        ("spec.http[0].corsPolicy.allowCredentials", "must be true or false, not string 'yes'")]


# --- the walker: every field and list entry is checked, whatever comes before it --------------------------

@pytest.mark.parametrize("spec, expect", [
    ({"hosts": [None, 5], "http": [{"route": [dest()]}]},
     [("spec.hosts[0]", "list entries cannot be null"), ("spec.hosts[1]", "must be a string, not number 5")]),
    ({"hosts": ["r"], "gateways": None, "http": 5}, [("spec.http", "must be a list, not number 5")]),  # null: unset
    ({"hosts": 5, "http": 5}, [("spec.hosts", "must be a list, not number 5"),
                               ("spec.http", "must be a list, not number 5")]),
    (route(dest(), websocketUpgrade=True, timeout="10"),
     [("spec.http[0].websocketUpgrade", "websocketUpgrade is obsolete: removed from Istio's API; WebSocket "
                                        "upgrades are always allowed; it is ignored"),
      ("spec.http[0].timeout", "missing unit in duration '10' (write e.g. \"10s\")")]),
])
def test_each_field_is_checked_after_a_null_an_invalid_or_an_obsolete_one(spec, expect):
    assert issues("VirtualService", spec) == expect


def test_an_open_kubernetes_object_keeps_the_fields_it_does_not_know():
    spec = {"sessionAffinity": "None", "clusterIP": "10.0.0.1", "ports": [{"port": 80, "targetPort": "http"}]}
    assert check_spec("Service", spec) == (spec, [])


# --- a loaded resource: where a finding points, its level, what analysis keeps of a rejected one ---------------

def _findings(text: str, **options) -> tuple[list[tuple[str, str, str, int]], list]:
    result = load_text(text, "x.yaml", **options)
    return [(str(f), f.resource, f.path, f.line) for f in result.findings], result.resources


VS = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, namespace: ns1}\n"


@pytest.mark.parametrize("text, expect", [
    # a Secret has no spec: its fields are named from the top
    ("apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns1}\ntype: Opaque\nimmutable: 'yes'\n",
     [("Error [IST0106] (Secret ns1/s x.yaml:5) Schema validation error: immutable: must be true or false, not "
       "string 'yes'", "Secret ns1/s", "immutable", 5)]),
    # ... but one written with a spec is read from it, as a Namespace's is
    ("apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns1}\nspec: {immutable: 'yes'}\n",
     [("Error [IST0106] (Secret ns1/s x.yaml:4) Schema validation error: spec.immutable: must be true or false, "
       "not string 'yes'", "Secret ns1/s", "spec.immutable", 4)]),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: ns1}\nspec: 5\n",
     [("Error [IST0106] (Namespace /ns1 x.yaml:4) Schema validation error: spec: must be an object "
       "(K8sNamespaceSpec), not number 5", "Namespace /ns1", "spec", 4)]),
    # an Istio kind without its spec is still checked as one, at `spec`
    (VS, [("Error [IST0106] (VirtualService ns1/v x.yaml:1) Schema validation error: spec: http, tcp or tls must "
           "be provided in virtual service", "VirtualService ns1/v", "spec", 1)]),
    (VS + "spec:\n  hosts: [r]\n  http:\n  - route:\n    - {destination: {host: r, subset: a}, weight: 70}\n"
          "    - {destination: {host: r, subset: b}, weight: 20}\n",
     [("Info [IST0133] (VirtualService ns1/v x.yaml:7) Schema validation warning: spec.http[0].route: destination "
       "weights add up to 90, not 100; Istio treats them as relative shares (each gets weight/90)",
       "VirtualService ns1/v", "spec.http[0].route", 7)]),
    (VS + "spec:\n  hosts: [r]\n  http:\n  - route: [{destination: {host: r}}]\n  - name: late\n"
          "    match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: r}}]\n",
     [('Warning [IST0130] (VirtualService ns1/v x.yaml:8) VirtualService rule "late" not used (route without '
       'matches defined before).', "VirtualService ns1/v", "spec.http[1]", 8)]),
])
def test_a_resource_finding_names_its_file_line_resource_and_field(text, expect):
    assert _findings(text)[0] == expect


def test_analysis_keeps_a_rejected_resource_without_the_spec_that_is_not_an_object():
    _, resources = _findings("apiVersion: v1\nkind: Namespace\nmetadata: {name: ns1}\nspec: 5\n", keep_invalid=True)
    assert [(r.kind, r.name, dict(r.spec)) for r in resources] == [("Namespace", "ns1", {})]
