"""control.istio.validate: the value each of Istio's semantic rules gives at its edges (exact messages, as
`meshctl validate` prints them after the field path), checked on the message alone with `check_message`."""
from __future__ import annotations

import pytest

from control.istio import schema as S
from control.istio.validate import RULES, Meta, check_message, header_value_error, label_errors


def found(message, value, *kinds, meta=Meta()):
    _, issues = check_message(message, value, meta=meta)
    return [(i.path, i.kind, i.text) for i in issues if not kinds or i.kind in kinds]


# --- maglev table size: Istio's validateLoadBalancer and its copy of Envoy's Primes::isPrime -------------

NOT_PRIME = ("spec.tableSize", "error", "tableSize must be a prime number for maglev")


@pytest.mark.parametrize("size, expect", [
    (0, [("spec.tableSize", "error", "tableSize must be set for maglev"), NOT_PRIME]),
    (1, []), (2, []), (3, []), (5, []), (65537, []), ("65537", []), (4999999, []),
    (4, [NOT_PRIME]), (9, [NOT_PRIME]), (25, [NOT_PRIME]), (49, [NOT_PRIME]), (1000, [NOT_PRIME]),
    ("65536", [NOT_PRIME]), (4999997, [NOT_PRIME]),
    (5000011, [("spec.tableSize", "error", "tableSize must be less than 5000011 for maglev")]),
    (2**64 - 59, [("spec.tableSize", "error", "tableSize must be less than 5000011 for maglev")]),
])
def test_maglev_table_size_is_set_small_and_prime(size, expect):
    assert found("MagLev", {"tableSize": size}) == expect


def test_a_maglev_without_a_table_size_is_refused():
    assert found("MagLev", {}) == [("spec.tableSize", "error", "tableSize must be set for maglev"), NOT_PRIME]


# --- header values: Envoy's substitution format (ValidateHTTPHeaderValue) ----------------------------------

@pytest.mark.parametrize("value, ok", [
    ("plain", True), ("100%%", True), ("%%x", True), ("%HOSTNAME%", True), ("a %REQ(x-foo)% b", True),
    ("%A%", True), ("%START_TIME%-%HOSTNAME%", True),
    ("%bad", False), ("%abc%", False), ("%1A%", False), ("%START_TIME%%", False), ("100%%%", False),
    ("%HOSTNAME", False), ("x%", False), ("%A%%B", False),
])
def test_header_value_percent_signs(value, ok):
    expect = None if ok else f"header value configuration {value!r}: invalid or unescaped '%' (write %% for a literal)"
    assert header_value_error(value) == expect


@pytest.mark.parametrize("value", ["a\nb", "a\x00", "a\x7f", "\x1f"])
def test_header_value_control_characters(value):
    assert header_value_error(value) == f"header value configuration {value!r} is invalid"


def test_a_tab_is_a_valid_header_value_character():
    assert header_value_error("a\tb") is None


# --- cipher suites: security.IsValidCipherSuite -------------------------------------------------------------

@pytest.mark.parametrize("suites, expect", [
    (["", "ALL", "-AES128-SHA", "!DES-CBC3-SHA", "AES128-SHA"], []),
    (["all"], [("spec.cipherSuites", "warning", "ignoring invalid cipher suites: ['all']")]),
    (["ALL", "ALL"], [("spec.cipherSuites", "warning", "ignoring duplicate cipher suites: ['ALL']")]),
])
def test_cipher_suite_names(suites, expect):
    assert found("ServerTLSSettings", {"mode": "SIMPLE", "credentialName": "c", "cipherSuites": suites}) == expect


# --- unix sockets: ValidateUnixAddress --------------------------------------------------------------------

@pytest.mark.parametrize("bind, expect", [
    ("unix:///var/run/app.sock", []),
    ("unix://@abstract", []),
    ("unix:///var/run/", [("spec.egress[0].bind", "error", "/var/run/ is not an absolute path to a file")]),
    ("unix://relative.sock", [("spec.egress[0].bind", "error", "relative.sock is not an absolute path to a file")]),
    ("unix://", [("spec.egress[0].bind", "error", "unix address must not be empty")]),
])
def test_a_unix_socket_egress_listener_binds_an_absolute_file_or_abstract_socket(bind, expect):
    spec = {"egress": [{"port": {"number": 0}, "bind": bind, "hosts": ["*/*"]}]}
    assert found("Sidecar", spec, "error") == expect


# --- DYNAMIC_DNS service entries: HTTP-ish ports only -----------------------------------------------------

@pytest.mark.parametrize("protocol, ok", [
    ("HTTP", True), ("http", True), ("TLS", True), ("GRPC", True), ("HTTP2", True),
    ("TCP", False), ("HTTPS", False), (None, False),
])
def test_dynamic_dns_port_protocols(protocol, ok):
    port = {"number": 80, "name": "p", **({"protocol": protocol} if protocol else {})}
    spec = {"hosts": ["*.a.com"], "resolution": "DYNAMIC_DNS", "ports": [port]}
    expect = [] if ok else [("spec.ports[0].protocol", "error", "only HTTP, TLS, GRPC, and HTTP2 protocols are "
                                                                "supported for resolution type DYNAMIC_DNS")]
    assert found("ServiceEntry", spec, "error") == expect


# --- inline JWKS: jwk.Parse, and the private-key warning -----------------------------------------------------

NOT_A_SET = ("spec.jwks", "error", "jwks parse error: not a JSON Web Key set (keys of kty RSA, EC, OKP or oct)")


@pytest.mark.parametrize("jwks, expect", [
    ('{"keys": []}', []),
    ('{"kty": "RSA", "n": "x", "e": "AQAB"}', []),  # one key, not a set
    ('{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "y"}]}', []),
    ('{"keys": [{"kty": "EC"}, {"kty": "EC", "d": "secret"}]}',
     [("spec.jwks", "warning", "jwks key at index 1 contains private key material; only public keys are used for "
                               "verification")]),
    ('{"keys": [{"kty": "oct", "k": "x"}]}',
     [("spec.jwks", "warning", "jwks key at index 0 contains private key material; only public keys are used for "
                               "verification")]),
    ('[{"kty": "RSA"}]', [NOT_A_SET]),
    ('{"keys": [{"kty": "DSA"}]}', [NOT_A_SET]),
    ('{"keys": "x"}', [NOT_A_SET]),
])
def test_inline_jwks(jwks, expect):
    assert found("JWTRule", {"issuer": "i", "jwks": jwks}, "error", "warning") == expect


# --- label keys: labels.Instance.Validate (a DNS-subdomain prefix of at most 253, a name of at most 63) ------

PREFIX_253 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])


@pytest.mark.parametrize("key, ok", [
    ("app", True), ("n" * 63, True), ("n" * 64, False),
    (f"{PREFIX_253}/app", True), (f"{PREFIX_253}e/app", False), (f"{PREFIX_253}/{'n' * 64}", False),
    ("example.com/app", True), ("-bad", False),
])
def test_label_keys(key, ok):
    assert list(label_errors({key: "v"})) == ([] if ok else [(key, f"invalid tag key: {key!r}")])


@pytest.mark.parametrize("value, ok", [("v1", True), ("", True), ("a.b-c_d", True), ("-v", False), ("v" * 64, True)])
def test_label_values(value, ok):
    assert list(label_errors({"app": value})) == ([] if ok else [("app", f"invalid tag value: {value!r}")])


# --- registering a rule -----------------------------------------------------------------------------------

def test_a_registered_rule_runs_for_its_message_and_can_read_the_metadata():
    from control.istio.validate import _WITH_META, rule
    name = next(m for m in sorted(S.MESSAGES) if m not in RULES)

    def seen(value, meta):
        yield "", "warning", f"namespace {meta.namespace}"

    try:
        assert rule(name, with_meta=True)(seen) is seen
        assert found(name, {}, meta=Meta(namespace="ns1")) == [("spec", "warning", "namespace ns1")]
    finally:
        RULES.pop(name, None)
        _WITH_META.discard(name)
    assert found(name, {}) == []


def test_a_rule_without_metadata_is_called_with_the_value_alone():
    from control.istio.validate import rule
    name = next(m for m in sorted(S.MESSAGES) if m not in RULES)
    try:
        rule(name)(lambda value: iter([("", "warning", f"{len(value)} fields")]))
        assert found(name, {}) == [("spec", "warning", "0 fields")]
    finally:
        RULES.pop(name, None)


def test_a_second_rule_for_a_message_is_refused_by_name():
    from control.istio.validate import rule
    with pytest.raises(ValueError) as err:
        rule("VirtualService")(lambda vs: iter(()))
    assert str(err.value) == "a rule for VirtualService is already registered (_virtual_service)"


# --- did you mean: a snake_case spelling of a field gets its camelCase name ---------------------------------

@pytest.mark.parametrize("message, field, hint", [
    ("TCPSettings", "connect_timeout", "connectTimeout"),
    ("TCPSettings", "max_connection_duration", "maxConnectionDuration"),
    ("HTTPSettings", "max_requests_per_connection", "maxRequestsPerConnection"),
])
def test_a_snake_case_field_is_pointed_at_its_camel_case_name(message, field, hint):
    assert found(message, {field: 1}) == [
        (f"spec.{field}", "unknown", f'unknown field "{field}" in {message}; did you mean {hint}?')]


# --- gateway server hosts: ValidateNamespaceSlashWildcardHostname(isGateway) ----------------------------------

SHORT = "short names (non FQDN) are not allowed"
EMPTY_PART = "config namespace and dnsName in host entry cannot be empty"


@pytest.mark.parametrize("hosts, expect", [
    (["ns/a.com", "*", "*/a.com", "./a.com", "1.2.3.4", "::ffff:1.2.3.4", "*.a.com", "ns/*", "NS/a.com"], []),
    (["ns/", "a"], [(0, EMPTY_PART), (0, SHORT), (0, "empty domain name not allowed"), (1, SHORT)]),
    (["/a.com"], [(0, EMPTY_PART), (0, "invalid namespace value '' in gateway")]),
    (["::1"], [(0, SHORT)]),  # an IPv6 address without a dot is a short name to Istio too (but a valid IP)
    (["ns/a"], [(0, SHORT)]),
    (["*a.com"], [(0, "partial wildcard '*a.com' not allowed")]),
    (["ns/*a.com"], [(0, "partial wildcard '*a.com' not allowed")]),
    (["a*.com"], [(0, "domain name 'a*.com' invalid (label 'a*' invalid)"),
                  (0, "partial wildcard 'a*.com' not allowed")]),
    # agent.ValidateWildcardDomain checks the labels after the first as a domain of their own, named so
    (["a..com"], [(0, "domain name '.com' invalid (label '' invalid)")]),
    (["ns/a/b.com"], [(0, "domain name 'a/b.com' invalid (label 'a/b' invalid)")]),
    (["Bad_NS/a.com"], [(0, "invalid namespace value 'Bad_NS' in gateway")]),
    (["~ns/a.com"], [(0, "invalid namespace value '~ns' in gateway")]),  # `~` (no namespace) is a sidecar's only
    (["10.0.0.300"], [(0, "domain name '0.0.300' invalid (top level domain '300' cannot be all-numeric)")]),
    (["a.b_c"], [(0, "domain name 'b_c' invalid (label 'b_c' invalid)")]),
])
def test_gateway_server_hosts(hosts, expect):
    server = {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}
    assert found("Server", server) == [(f"spec.hosts[{i}]", "error", text) for i, text in expect]


# --- VirtualService hosts that overlap (host.Name.Matches) ---------------------------------------------------

@pytest.mark.parametrize("a, b, duplicate", [
    ("a.com", "a.com", True), ("a.com", "b.com", False),
    ("*.a.com", "x.a.com", True), ("x.a.com", "*.a.com", True), ("a.com", "*.com", True),
    ("b.com", "*.b.com", False), ("*.b.com", "b.com", False),
    ("*.a.com", "*.x.a.com", True), ("*.x.a.com", "*.a.com", True), ("*.a.com", "*.b.com", False),
    ("*xa.com", "*.a.com", False), ("*.a.com", "*xa.com", False),
])
def test_virtual_service_hosts_that_overlap_are_duplicates(a, b, duplicate):
    spec = {"hosts": [a, b], "http": [{"route": [{"destination": {"host": "r"}}]}]}
    expect = [("spec.hosts[0]", "error", f"duplicate hosts in virtual service: {a} & {b}")] if duplicate else []
    assert found("VirtualService", spec, "error") == expect


# --- SNI hosts of a gateway VirtualService: validateSniHost (host.Name.SubsetOf a VirtualService host) -------

@pytest.mark.parametrize("host, sni, ok", [
    ("*.a.com", "x.a.com", True), ("*.a.com", "*.x.a.com", True), ("*.a.com", "*.a.com", True),
    ("*.a.com", "xa.com", False), ("*.a.com", "a.com", False), ("*.a.com", "*.b.com", False),
    ("*a.com", "a.com", True), ("a.com", "a.com", True), ("a.com", "b.com", False), ("a.com", "*.a.com", False),
])
def test_sni_hosts_are_a_subset_of_the_virtual_service_hosts(host, sni, ok):
    spec = {"hosts": [host], "gateways": ["ns/gw"],
            "tls": [{"match": [{"sniHosts": [sni]}], "route": [{"destination": {"host": "r"}}]}]}
    expect = [] if ok else [("spec.tls[0].match[0].sniHosts[0]", "error", f"SNI host {sni!r} is not a compatible "
                                                                          f"subset of any of the virtual service hosts: [{host}]")]
    assert found("VirtualService", spec, "error") == expect


# --- sidecar ingress TLS: what ValidateSidecar refuses there ---------------------------------------------------

KEYS = {"serverCertificate": "/c.pem", "privateKey": "/k.pem"}


@pytest.mark.parametrize("tls, protocol, expect", [
    ({"mode": "SIMPLE", **KEYS}, "HTTPS", []),
    ({"mode": "SIMPLE", **KEYS}, "TLS", []),
    ({"mode": "SIMPLE", **KEYS, "httpsRedirect": False}, "HTTPS", []),
    ({"mode": "SIMPLE", **KEYS, "httpsRedirect": True}, "HTTPS",
     [("tls.httpsRedirect", "sidecar: httpsRedirect is not supported")]),
    ({"mode": "SIMPLE", **KEYS, "subjectAltNames": ["x"]}, "HTTPS",
     [("tls.subjectAltNames", "sidecar: subjectAltNames is not supported in ingress tls")]),
    ({"mode": "SIMPLE", "credentialName": "c"}, "HTTPS",
     [("tls.credentialName", "sidecar: credentialName is not currently supported")]),
    ({"mode": "SIMPLE", "credentialNames": ["c"]}, "HTTPS",
     [("tls.credentialNames", "sidecar: credentialNames is not currently supported")]),
    ({"mode": "SIMPLE", "tlsCertificates": [KEYS]}, "HTTPS",
     [("tls.tlsCertificates", "sidecar: tls_certificates is not currently supported")]),
    ({"mode": "AUTO_PASSTHROUGH"}, "TLS",
     [("tls.mode", "configuration is invalid: cannot set mode to AUTO_PASSTHROUGH in sidecar ingress tls")]),
    ({"mode": "ISTIO_MUTUAL"}, "TLS",
     [("tls.mode", "configuration is invalid: cannot set mode to ISTIO_MUTUAL in sidecar ingress tls")]),
    ({"mode": "SIMPLE", **KEYS}, "HTTP", [("tls", "server cannot have TLS settings for non HTTPS/TLS ports")]),
])
def test_sidecar_ingress_tls(tls, protocol, expect):
    listener = {"port": {"number": 8443, "protocol": protocol, "name": "p"}, "defaultEndpoint": "127.0.0.1:8080",
                "tls": tls}
    assert found("Sidecar", {"ingress": [listener]}, "error") == [
        (f"spec.ingress[0].{path}", "error", text) for path, text in expect]


# --- sidecar ingress defaultEndpoint: net.SplitHostPort, the hosts Istio allows, the port --------------------

NOT_HOST_PORT = "address {}: not of the form host:port"
NO_PORT = "sidecar: defaultEndpoint port () is not a number"


@pytest.mark.parametrize("endpoint, expect", [
    ("127.0.0.1:8080", []), ("0.0.0.0:8080", []), ("[::1]:8080", []), ("[::]:8080", []), (":8080", []),
    ("127.0.0.1:1", []), ("127.0.0.1:65535", []),
    ("127.0.0.1:65536", ["port number 65536 must be in the range 1..65535"]),
    ("127.0.0.1:0", ["port number 0 must be in the range 1..65535"]),
    ("127.0.0.1:x", ["sidecar: defaultEndpoint port (x) is not a number"]),
    ("10.0.0.1:80", ["sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,"
                     "[::]:port,unix://filepath or unset"]),
    *((bad, [NOT_HOST_PORT.format(bad), NO_PORT])
      for bad in ("[::1]]:80", "[::1]", "[::1]80", "[::1]:80:90", "[::1]::80", "1:2:80", "::1:80")),
])
def test_sidecar_ingress_default_endpoint(endpoint, expect):
    listener = {"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "defaultEndpoint": endpoint}
    assert found("Sidecar", {"ingress": [listener]}, "error") == [
        ("spec.ingress[0].defaultEndpoint", "error", text) for text in expect]


def test_sidecar_ingress_listeners_after_one_without_a_port_are_still_checked():
    spec = {"ingress": [{"defaultEndpoint": "127.0.0.1:80"},
                        {"port": {"number": 1, "name": "a"}}, {"port": {"name": "b"}}]}
    assert found("Sidecar", spec, "error") == [
        ("spec.ingress[0].port", "error", "port is required"),
        ("spec.ingress[2].port.number", "error", "port number 0 must be in the range 1..65535")]


def test_an_http_pool_on_a_sidecar_ingress_port_without_a_name_or_protocol():
    spec = {"ingress": [{"port": {"number": 9080}, "connectionPool": {"http": {"maxRetries": 1}}}]}
    assert found("Sidecar", spec, "warning") == [
        ("spec.ingress[0].connectionPool.http", "warning", "sidecar: HTTP connection pool settings are configured for "
                                                           "port 9080 (\"\") but its protocol is not HTTP (); only TCP "
                                                           "settings will apply")]


# --- what a value of the wrong type is called in the message ----------------------------------------------

@pytest.mark.parametrize("value, described", [
    (True, "boolean true"), (False, "boolean false"), (["a"], "a list"), ({"a": 1}, "an object"), (3, "number 3"),
    (1.5, "number 1.5"),
])
def test_a_wrong_type_is_described_in_the_message(value, described):
    assert found("Destination", {"host": value}) == [("spec.host", "error", f"must be a string, not {described}")]


# --- CUSTOM authorization rules: the conditions ext_authz cannot see ------------------------------------------

@pytest.mark.parametrize("key, supported", [
    ("request.headers[x]", True), ("source.ip", True), ("source.namespace", False),
    ("request.auth.claims[iss]", False), (None, True),
])
def test_custom_action_conditions(key, supported):
    cond = {"values": ["v"], **({"key": key} if key else {})}
    spec = {"action": "CUSTOM", "provider": {"name": "p"}, "rules": [{"when": [cond]}]}
    custom = [i for i in found("AuthorizationPolicy", spec, "error") if "CUSTOM" in i[2]]
    assert custom == ([] if supported else [("spec.rules[0].when[0].key", "error",
                                             f"{key} is currently not supported with CUSTOM action")])


# --- authorization conditions: security.ValidateAttribute --------------------------------------------------

def _invalid(key, error):
    return [("spec.values", "error", f"invalid `values` for `key` {key}: {error}"),
            ("spec.notValues", "error", f"invalid `notValues` for `key` {key}: {error}")]


@pytest.mark.parametrize("key, values, expect", [
    ("request.headers[x]", ["a"], []),
    ("request.headers[]", ["a"], _invalid("request.headers[]", "bad key (request.headers[]): should have format a[b]")),
    ("request.headers]", ["a"], _invalid("request.headers]", "bad key (request.headers]): should have format a[b]")),
    ("destination.port", ["65535"], []),
    ("destination.port", ["65536"], [("spec.values", "error", "invalid `values` for `key` destination.port: bad port "
                                                              "(65536)")]),
    ("destination.name", ["a"], _invalid("destination.name", "deprecated attribute destination.name: only supported "
                                                             "in v1alpha1")),
    ("destination.user", ["a"], _invalid("destination.user", "deprecated attribute destination.user: only supported "
                                                             "in v1alpha1")),
])
def test_authorization_condition_keys_and_values(key, values, expect):
    assert found("Condition", {"key": key, "values": values}) == expect


# --- sidecar egress host names: ValidateWildcardDomain / ValidateDNS1123Labels -----------------------------------

@pytest.mark.parametrize("host, error", [
    ("ns/a.b.c", None), ("ns/a.com.", None),
    ("ns/a.b.c.123", "domain name 'b.c.123' invalid (top level domain '123' cannot be all-numeric)"),
    ("ns/a..com", "domain name '.com' invalid (label '' invalid)"),
])
def test_sidecar_egress_host_domain_names(host, error):
    assert found("Sidecar", {"egress": [{"hosts": [host]}]}, "error") == (
        [] if error is None else [("spec.egress[0].hosts[0]", "error", error)])


# --- sidecar listener ports: validateSidecar*PortAndBind ----------------------------------------------------

@pytest.mark.parametrize("port, bind, expect", [
    ({"number": 1}, None, []), ({"number": 65535}, "", []), ({"number": 8080.0}, "1.2.3.4", []),
    ({"number": 65536}, None, [("port.number", "port number 65536 must be in the range 1..65535")]),
    ({"number": 0}, None, [("port.number", "port number 0 must be in the range 1..65535")]),
    ({"number": 80, "targetPort": 1}, None, [("port.targetPort", "targetPort has no impact on Sidecars")]),
    ({"number": 80}, "x", [("bind", "x is not a valid IP")]),
])
def test_sidecar_ingress_port_and_bind(port, bind, expect):
    listener = {"port": {"name": "p", **port}, **({} if bind is None else {"bind": bind})}
    assert found("Sidecar", {"ingress": [listener]}, "error") == [
        (f"spec.ingress[0].{path}", "error", text) for path, text in expect]


def test_sidecar_egress_port_given_as_an_integral_float():
    spec = {"egress": [{"port": {"number": 8080.0, "name": "p"}, "hosts": ["*/*"]}]}
    assert found("Sidecar", spec, "error") == []


def test_sidecar_egress_hosts_split_at_the_first_slash():
    spec = {"egress": [{"hosts": ["ns/*", "ns/a/b.com", "ns/*.a.com"]}]}
    assert found("Sidecar", spec) == [
        ("spec.egress[0].hosts[1]", "warning", "duplicated egress host: ns/a/b.com"),
        ("spec.egress[0].hosts[1]", "error", "domain name 'a/b.com' invalid (label 'a/b' invalid)"),
        ("spec.egress[0].hosts[2]", "warning", "duplicated egress host: ns/*.a.com")]


def test_a_rule_does_not_run_over_a_type_error_below_it_after_an_earlier_one():
    """The Destination rule would say "invalid destination host *"; its port is not an integer, so Istio never
    got that far (it could not unmarshal the resource), however many type errors came before."""
    spec = {"hosts": [123], "http": [{"route": [{"destination": {"host": "*", "port": {"number": "x"}}}]}]}
    assert found("VirtualService", spec) == [
        ("spec.hosts[0]", "error", "must be a string, not number 123"),
        ("spec.http[0].route[0].destination.port.number", "error", "must be an integer, not string 'x'")]


# --- where a misplaced field lives: the message tree the "did you mean" searches ----------------------------

def test_the_message_tree_is_breadth_first_through_lists_and_maps_to_a_depth():
    from control.istio.validate import _message_tree
    assert list(_message_tree("Tracing")) == [
        ("", "Tracing"), ("match", "TracingSelector"), ("providers[]", "ProviderRef"), ("customTags.*", "CustomTag"),
        ("customTags.*.literal", "TagLiteral"), ("customTags.*.environment", "TagEnvironment"),
        ("customTags.*.header", "TagHeader"), ("customTags.*.formatter", "TagFormatter")]
    assert list(_message_tree("Tracing", 1)) == [
        ("", "Tracing"), ("match", "TracingSelector"), ("providers[]", "ProviderRef"), ("customTags.*", "CustomTag")]
    assert list(_message_tree("Tracing", 0)) == [("", "Tracing")]
    assert list(_message_tree("Tracing", 2)) == list(_message_tree("Tracing"))  # Tracing is two messages deep


def test_the_message_tree_stops_six_messages_down_by_default():
    """The deepest message in the schema, an IstioOperator's cookie attribute through a port-level policy, is
    seven down: left out (the same message six down, through the default policy, is in)."""
    from control.istio.validate import _message_tree
    cookie = "meshConfig.defaultTrafficPolicy.{}loadBalancer.consistentHash.httpCookie.attributes[]"
    rels = {rel for rel, _ in _message_tree("IstioOperator")}
    assert cookie.format("") in rels and cookie.format("portLevelSettings[].") not in rels


@pytest.mark.parametrize("typ, message, step", [
    ("HTTPRoute", "HTTPRoute", ""), ("HTTPRoute!", "HTTPRoute", ""), ("[]HTTPRoute", "HTTPRoute", "[]"),
    ("[]HTTPRoute!", "HTTPRoute", "[]"), ("map:StringMatch", "StringMatch", ".*"), ("[]map:StringMatch", "StringMatch", "[]"),
    ("map:[]StringMatch", "StringMatch", ".*"), ("string", None, ""), ("[]string", None, "[]"), ("map:string", None, ".*"),
])
def test_a_field_type_leads_to_its_message_through_lists_and_maps(typ, message, step):
    from control.istio.validate import _element_message, _type_step
    assert (_element_message(typ), _type_step(typ)) == (message, step)


@pytest.mark.parametrize("kind, spec, field, hint", [
    ("Telemetry", {"literal": {"value": "x"}}, "literal", "tracing[].customTags.*.literal"),
    ("VirtualService", {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}}]}], "prefix": "/a"},
     "prefix", "http[].match[].uri.prefix"),
])
def test_a_misplaced_field_is_pointed_at_its_place_through_lists_and_maps(kind, spec, field, hint):
    from control.istio.validate import check_spec
    assert [i.text for i in check_spec(kind, spec)[1] if i.kind == "unknown"] == [
        f'unknown field "{field}" in {kind}; did you mean {hint}?']


# --- a whole resource: metadata, unknown fields strict or not, rejection ----------------------------------------

def _load(name="vs", namespace="ns", strict=False, extra=""):
    from control.istio.load import load_text
    text = (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n"
            f"  namespace: {namespace}\nspec:\n  hosts: [r]\n  http:\n  - route: [{{destination: {{host: r}}}}]\n{extra}")
    result = load_text(text, "x.yaml", strict=strict)
    return [(f.type.code, f.level.label, f.line, f.message) for f in result.findings], [r.name for r in result.resources]


TIMOUT = 'spec.http[0].timout: unknown field "timout" in HTTPRoute; did you mean timeout?'


def test_an_unknown_field_is_dropped_with_a_warning_or_an_error_when_strict():
    """Strict (`istioctl validate`) reports it as an error; the resource is still the one without the field."""
    assert _load(extra="    timout: 1s\n") == ([("PYM0005", "Warning", 10, f"{TIMOUT} (ignored)")], ["vs"])
    assert _load(extra="    timout: 1s\n", strict=True) == (
        [("IST0106", "Error", 10, f"Schema validation error: {TIMOUT}")], ["vs"])


@pytest.mark.parametrize("name, ok", [("a" * 253, True), ("a" * 254, False), ("a.b-c", True), ("Vs", False),
                                      ("-vs", False)])
def test_resource_names_are_lowercase_rfc_1123_subdomains(name, ok):
    found_, loaded = _load(name=name)
    assert (found_, loaded) == (([], [name]) if ok else (
        [("IST0106", "Error", 4, f"Schema validation error: metadata.name: invalid name {name!r}: must be a "
                                 "lowercase RFC 1123 subdomain")], []))


def test_a_namespace_must_be_a_dns_label():
    assert _load(namespace="Bad") == (
        [("IST0106", "Error", 5, "Schema validation error: metadata.namespace: invalid namespace 'Bad'")], [])


# --- ServiceEntry warnings (ValidateServiceEntry accepts the entry and warns) -----------------------------------

def _port(protocol):
    return {"number": 80, "name": "p", **({"protocol": protocol} if protocol else {})}


NO_LABELS = ("spec.workloadSelector", "warning", "service entry: workload selector specified without labels, will "
                                                 "be applied to all services in namespace")
NEEDS_ADDRESS = ("spec.addresses", "warning", "addresses are required for ports serving TCP (or unset) protocol when "
                                              "IP Autoallocation is not enabled")
ONE_HOST = ("spec.hosts", "warning", "service entry can not have more than one host specified simultaneously with "
                                     "address and tcp port")


@pytest.mark.parametrize("spec, expect", [
    ({"ports": [_port("HTTP")], "resolution": "DNS", "workloadSelector": {}}, [NO_LABELS]),
    ({"ports": [_port("HTTP")], "resolution": "STATIC", "workloadSelector": {"labels": {"app": "a"}}}, []),
    ({"ports": [_port("HTTP")], "addresses": ["1.1.1.1"], "workloadSelector": {"labels": {"app": "a"}}},
     [("spec.workloadSelector", "warning", "workloadSelector should not be set when resolution mode is NONE")]),
    ({"ports": [_port("HTTP")], "workloadSelector": {"labels": {"a*": "a"}}},
     [("spec.workloadSelector.labels.a*", "error", 'wildcard is not supported in selector: "a*=a"')]),
    ({"ports": [_port("HTTP")], "workloadSelector": {"labels": {"app": "*"}}},
     [("spec.workloadSelector.labels.app", "error", 'wildcard is not supported in selector: "app=*"')]),
    ({"ports": [_port("TCP")]}, [NEEDS_ADDRESS]),
    ({"ports": [_port(None)]}, [NEEDS_ADDRESS]),
    ({"ports": [_port("HTTP")]}, []),
    ({"ports": [_port("TCP")], "addresses": ["1.1.1.1"]}, []),
    ({"ports": [_port("TCP")], "resolution": "DNS"}, []),
    ({"hosts": ["a.com", "b.com"], "ports": [_port("tcp")], "addresses": ["1.1.1.1"], "resolution": "DNS"}, [ONE_HOST]),
    ({"hosts": ["a.com", "b.com"], "ports": [_port("MONGO")], "addresses": ["1.1.1.1"],
      "resolution": "DNS_ROUND_ROBIN"}, [ONE_HOST]),
    ({"hosts": ["a.com", "b.com"], "ports": [_port("HTTP")], "addresses": ["1.1.1.1"], "resolution": "DNS"}, []),
    ({"hosts": ["a.com", "b.com"], "ports": [_port("TCP")], "resolution": "DNS"}, []),
    ({"hosts": ["a.com", "b.com"], "ports": [_port("TCP")], "addresses": ["1.1.1.1"], "resolution": "STATIC",
      "endpoints": [{"address": "2.2.2.2"}]}, []),
    ({"ports": [_port("TCP")], "addresses": ["1.1.1.1"], "resolution": "DNS_ROUND_ROBIN"}, []),
    ({"hosts": ["*a.com"], "ports": [_port("HTTP")], "resolution": "STATIC"},
     [("spec.hosts[0]", "warning", "partial wildcard '*a.com' not allowed")]),
    ({"hosts": ["*a.com"], "ports": [_port("HTTP")], "resolution": "DYNAMIC_DNS"}, []),
    ({"hosts": ["*.a.com", "*"], "ports": [_port("HTTP")], "resolution": "STATIC"},
     [("spec.hosts[1]", "error", "invalid host *")]),
])
def test_service_entry_warnings(spec, expect):
    assert found("ServiceEntry", {"hosts": ["a.com"], **spec}, "warning", "error") == expect


# --- metadata Istio validates on every kind (validateMetadata) ----------------------------------------------------

DRY_RUN_PATH = "metadata.annotations.istio.io/dry-run"


@pytest.mark.parametrize("kind, spec, value, error", [
    ("AuthorizationPolicy", {}, "true", None), ("AuthorizationPolicy", {"action": "DENY"}, "0", None),
    ("AuthorizationPolicy", {"action": "ALLOW"}, "F", None), ("AuthorizationPolicy", None, "True", None),
    ("AuthorizationPolicy", {}, "yes", "istio.io/dry-run has an invalid value (yes): not a boolean"),
    ("AuthorizationPolicy", {"action": "CUSTOM"}, "true",
     "the annotation istio.io/dry-run currently only supports action ALLOW/DENY, found action CUSTOM"),
    ("AuthorizationPolicy", {"action": "AUDIT"}, "yes",
     "the annotation istio.io/dry-run currently only supports action ALLOW/DENY, found action AUDIT"),
    ("PeerAuthentication", {}, "true", "ns1/p has unsupported annotation istio.io/dry-run, please remove the annotation"),
])
def test_the_dry_run_annotation(kind, spec, value, error):
    from control.istio.validate import metadata_issues
    issues = metadata_issues(kind, spec, Meta("p", "ns1", {}, {"istio.io/dry-run": value}))
    assert [(i.path, i.kind, i.text) for i in issues] == ([] if error is None else [(DRY_RUN_PATH, "error", error)])


def test_istiod_internal_annotations_are_refused():
    from control.istio.validate import metadata_issues
    annotations = {"internal.istio.io/webhook-always-reject": "x", "internal.istio.io/parent-namespace": "x",
                   "internal.istio.io/parents": "x", "internal.istio.io/other": "x"}
    issues = metadata_issues("VirtualService", {}, Meta("v", "ns1", {}, annotations))
    assert [(i.path, i.kind, i.text) for i in issues] == [
        ("metadata.annotations.internal.istio.io/webhook-always-reject", "error",
         "'internal.istio.io/webhook-always-reject' annotation found, rejecting"),
        ("metadata.annotations.internal.istio.io/parent-namespace", "error",
         "'internal.istio.io/parent-namespace' annotation found, this may not be set by users"),
        ("metadata.annotations.internal.istio.io/parents", "error",
         "'internal.istio.io/parents' annotation found, this may not be set by users")]
    assert metadata_issues("VirtualService", {}, Meta("v", "ns1")) == []


# --- sidecar egress: label and name lengths, duplicates, listener binds and capture modes ------------------------

LABEL_63, LABEL_64 = "a" * 63, "a" * 64
NAME_255 = ".".join([LABEL_63] * 3 + ["b" * 61, "c"])
NAME_256 = ".".join([LABEL_63] * 3 + ["b" * 62, "c"])


@pytest.mark.parametrize("host, errors", [
    (f"ns/{LABEL_63}.com", []), (f"{LABEL_63}/x.com", []), (f"ns/{NAME_255}", []),
    (f"ns/{LABEL_64}.com", [f"domain name '{LABEL_64}.com' invalid (label '{LABEL_64}' invalid)"]),
    (f"{LABEL_64}/x.com", [f"invalid namespace value '{LABEL_64}' in sidecar"]),
    (f"ns/{NAME_256}", [f"domain name '{NAME_256}' too long (max 255)"]),
    ("ns/", ["config namespace and dnsName in host entry cannot be empty", "short names (non FQDN) are not allowed",
             "empty domain name not allowed"]),
])
def test_sidecar_egress_host_lengths(host, errors):
    assert found("Sidecar", {"egress": [{"hosts": [host]}]}, "error") == [
        ("spec.egress[0].hosts[0]", "error", e) for e in errors]


def test_sidecar_egress_duplicate_hosts_under_a_namespace_wildcard():
    assert found("Sidecar", {"egress": [{"hosts": ["ns/*", "ns/*", "ns/a.com"]}]}, "warning") == [
        ("spec.egress[0].hosts[1]", "warning", "duplicated egress host: ns/*"),
        ("spec.egress[0].hosts[2]", "warning", "duplicated egress host: ns/a.com")]


def test_sidecar_egress_listener_bind_and_unix_socket_capture_modes():
    assert found("Sidecar", {"egress": [{"port": {"number": 80, "name": "h"}, "bind": "x", "hosts": ["*/*"]}]},
                 "error") == [("spec.egress[0].bind", "error", "x is not a valid IP")]
    listeners = [{"port": {"number": 0}, "bind": f"unix:///{mode}.sock", "captureMode": mode, "hosts": ["*/*"]}
                 for mode in ("DEFAULT", "NONE", "IPTABLES")]
    assert found("Sidecar", {"egress": listeners}, "error") == [
        ("spec.egress[2].captureMode", "error", "sidecar: captureMode must be DEFAULT/NONE for unix domain socket "
                                                "listeners")]


# --- did you mean: the cut-off, letter case, and a hint at the root -------------------------------------------

def test_a_hint_needs_a_close_match_in_any_letter_case():
    assert [t for _, _, t in found("TCPSettings", {"maxConn": 1, "MAXCONNECTIONS": 1})] == [
        'unknown field "maxConn" in TCPSettings',
        'unknown field "MAXCONNECTIONS" in TCPSettings; did you mean maxConnections?']


def test_a_field_of_the_root_message_is_hinted_at_the_root():
    spec = {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}}], "hosts": ["x"]}]}
    assert [t for _, k, t in found("VirtualService", spec) if k == "unknown"] == [
        'unknown field "hosts" in HTTPRoute; did you mean spec.hosts?']
    _, issues = check_message("HTTPRoute", {"route": [{"destination": {"host": "r"}, "timeout": "1s"}]}, root="")
    assert [i.text for i in issues] == ['unknown field "timeout" in HTTPRouteDestination; did you mean timeout?']


# --- JWT claim routing keys (jwt.ToRoutingClaim) -----------------------------------------------------------

@pytest.mark.parametrize("header, claim", [
    ("@request.auth.claims.iss", True), ("@request.auth.claims.i", True), ("@request.auth.claims[iss]", True),
    ("@request.auth.claims[i]", True), ("@REQUEST.AUTH.CLAIMS.iss", True),
    ("@request.auth.claims.", False), ("@request.auth.claims[]", False), ("@request.auth.claims[iss", False),
    ("@request.auth.claims", False), ("@request.auth.claimsabc", False), ("@request.auth.claimsab]", False),
    ("x-foo", False),
])
def test_jwt_claim_routing_keys(header, claim):
    from control.istio.validate import is_jwt_claim
    assert is_jwt_claim(header) is claim


# --- authorization sources: trust domains, service accounts, IP blocks ----------------------------------------

@pytest.mark.parametrize("value, ok", [("*", True), ("*.a", True), ("a*", True), ("a*b", False), ("**", False),
                                       ("*a*", False)])
def test_trust_domain_wildcards(value, ok):
    expect = [] if ok else [("spec.trustDomains", "error", "wildcard is only allowed once, at the start or end, found "
                                                            f"in trustDomains: {value!r}")]
    assert found("Source", {"trustDomains": [value]}) == expect


@pytest.mark.parametrize("value, ok", [("sa", True), ("ns/sa", True), ("x" * 320, True), ("ns/", False),
                                       ("/sa", False), ("a/b/c", False), ("x" * 321, False), ("sa*", False)])
def test_service_account_forms(value, ok):
    expect = [] if ok else [("spec.serviceAccounts", "error", "expected format 'serviceAccount' or "
                                                               f"'namespace/serviceAccount', found {value!r} in "
                                                               "serviceAccounts")]
    assert found("Source", {"serviceAccounts": [value]}) == expect


def test_at_most_16_service_accounts():
    assert found("Source", {"serviceAccounts": ["sa"] * 16}) == []
    assert found("Source", {"serviceAccounts": ["sa"] * 17}) == [
        ("spec.serviceAccounts", "error", "may not have more than 16 values")]


def test_ip_blocks_take_a_cidr_with_host_bits_set():
    assert found("Source", {"ipBlocks": ["10.0.0.1/8", "1.2.3.4", "::1/64"]}) == []
    assert found("Source", {"ipBlocks": ["10.0.0.1/33"]}) == [
        ("spec.ipBlocks", "error", "bad IP address or CIDR range (10.0.0.1/33)")]


@pytest.mark.parametrize("message, field", [("TCPSettings", "maxConnections"), ("HTTPSettings", "maxRetries"),
                                            ("HTTPSettings", "http2MaxRequests")])
@pytest.mark.parametrize("value, ok", [(0, True), (1, True), (-1, False)])
def test_connection_limits_are_non_negative(message, field, value, ok):
    expect = [] if ok else [(f"spec.{field}", "error", f"{field} must be non-negative")]
    assert found(message, {field: value}) == expect


@pytest.mark.parametrize("resolution", ["DNS", "DNS_ROUND_ROBIN"])
def test_dns_service_entry_endpoints_are_fqdns_or_ips(resolution):
    spec = {"hosts": ["a.com"], "resolution": resolution, "ports": [{"number": 80, "name": "http"}],
            "endpoints": [{"address": "a_b"}]}
    assert ("spec.endpoints[0].address", "error", "endpoint address 'a_b' is not a valid FQDN or an IP address") in \
        found("ServiceEntry", spec, "error")


def test_a_wildcard_sni_host_is_a_subset_only_at_a_label_boundary():
    spec = {"hosts": ["*.a.com"], "gateways": ["ns/gw"],
            "tls": [{"match": [{"sniHosts": ["*xa.com"]}], "route": [{"destination": {"host": "r"}}]}]}
    assert found("VirtualService", spec, "error") == [
        ("spec.tls[0].match[0].sniHosts[0]", "error", "SNI host '*xa.com' is not a compatible subset of any of the "
                                                      "virtual service hosts: [*.a.com]")]


# --- DENY rules with only HTTP attributes (ValidateAuthorizationPolicy's warning) ----------------------------

HTTP_ONLY = ("spec.rules[0]", "warning", "configured AuthorizationPolicy will deny all traffic to TCP ports under its "
                                         "scope due to the use of only HTTP attributes in a DENY rule; it is "
                                         "recommended to explicitly specify the port")


@pytest.mark.parametrize("rule, warns", [
    ({"from": [{"source": {"requestPrincipals": ["*"]}}]}, True),
    ({"from": [{"source": {"principals": ["a"]}}]}, False),
    ({"from": [{"source": {"notNamespaces": ["a"]}}]}, False),
    ({"to": [{"operation": {"methods": ["GET"]}}]}, True),
    ({"to": [{"operation": {"ports": ["80"]}}]}, False),
    ({"to": [{"operation": {"notPorts": ["80"]}}]}, False),
    ({"from": [{"source": {"principals": ["a"]}}], "to": [{"operation": {"methods": ["GET"]}}]}, True),
    ({"when": [{"key": "request.headers[x]", "values": ["a"]}]}, False),
])
def test_deny_rules_with_only_http_attributes_warn(rule, warns):
    spec = {"action": "DENY", "rules": [rule]}
    assert found("AuthorizationPolicy", spec, "warning") == ([HTTP_ONLY] if warns else [])


def test_an_empty_service_account_is_refused_by_both_checks():
    assert found("Source", {"serviceAccounts": [""]}) == [
        ("spec.serviceAccounts", "error", "expected format 'serviceAccount' or 'namespace/serviceAccount', found '' in "
                                          "serviceAccounts"),
        ("spec.serviceAccounts", "error", "empty value not allowed, found in serviceAccounts")]


def test_an_sni_host_outside_every_host_lists_them_all():
    spec = {"hosts": ["a.com", "b.com"], "gateways": ["ns/gw"],
            "tls": [{"match": [{"sniHosts": ["c.com"]}], "route": [{"destination": {"host": "r"}}]}]}
    assert found("VirtualService", spec, "error") == [
        ("spec.tls[0].match[0].sniHosts[0]", "error", "SNI host 'c.com' is not a compatible subset of any of the "
                                                      "virtual service hosts: [a.com, b.com]")]


# --- RE2: an escaped backslash is a plain character ------------------------------------------------------------

@pytest.mark.parametrize("pattern, feature", [
    (r"a\\1", None), (r"(\\?=x)", None), (r"(\\?!x)", None), (r"\\\1", "backreferences"), (r"a\1", "backreferences"),
    (r"(?=x)", "lookahead/lookbehind"), (r"a++", "possessive quantifiers"),
])
def test_an_escaped_backslash_does_not_start_an_re2_feature(pattern, feature):
    from control.istio.validate import check_regex
    expect = None if feature is None else (f"regex {pattern!r} uses {feature}, which RE2 (Istio's regex engine) "
                                           "does not support")
    assert check_regex(pattern) == expect


@pytest.mark.parametrize("address, static_error, dns_error", [
    ("", None, None), ("1.2.3.4", None, None), ("::1", None, None), ("a.com", "is not a valid IP address", None),
    ("10.0.0.0/8", "is not a valid IP address", "is not a valid FQDN or an IP address"),
    ("*.a.com", "is not a valid IP address", "is not a valid FQDN or an IP address"),
])
def test_service_entry_endpoint_addresses_by_resolution(address, static_error, dns_error):
    for resolution, error in (("STATIC", static_error), ("DNS", dns_error)):
        spec = {"hosts": ["a.com"], "resolution": resolution, "ports": [{"number": 80, "name": "http"}],
                "endpoints": [{"address": address}]}
        expect = [("spec.endpoints[0].address", "error", f"endpoint address {address!r} {error}")] if error else []
        if not address:
            expect = [("spec.endpoints[0].address", "error", "address is required")]  # the WorkloadEntry rule's
        assert found("ServiceEntry", spec, "error") == expect, resolution


def test_a_service_entry_selector_with_an_empty_label_key_gives_no_warning():
    spec = {"hosts": ["a.com"], "ports": [{"number": 80, "name": "http"}], "workloadSelector": {"labels": {"": "a"}}}
    assert found("ServiceEntry", spec, "error", "warning") == [
        ("spec.workloadSelector.labels", "error", 'empty key is not supported in selector: "=a"')]


@pytest.mark.parametrize("text", ["0", "+0", "-0"])
def test_a_bare_zero_duration_takes_a_sign_as_in_go(text):
    from control.istio.validate import parse_duration
    assert parse_duration(text) == 0


@pytest.mark.parametrize("text, ns", [("-1s", -1_000_000_000), ("-1.5ms", -1_500_000), ("+2s", 2_000_000_000)])
def test_a_signed_duration(text, ns):
    from control.istio.validate import parse_duration
    assert parse_duration(text) == ns


# --- VirtualService gateways, authority rewrites, redirect prefix rewrites; policy targets; protocols ---------

@pytest.mark.parametrize("gateways, expect", [
    (["gw"], []), (["ns/gw"], []), (["mesh"], []), (["ns/gw", "mesh"], []),
    (["Bad/Gw"], []), ([f"{LABEL_63}/{LABEL_63}"], []),  # labels.IsDNS1123Label: either case, at most 63
    (["gw.ns.svc.cluster.local"], [(0, "warning", "using legacy gatewayName format 'gw.ns.svc.cluster.local'; "
                                                  "prefer the <namespace>/<name> format: 'ns/gw'")]),
    (["b_d/gw"], [(0, "error", "invalid value for namespace: 'b_d'")]),
    ([f"{LABEL_64}/gw"], [(0, "error", f"invalid value for namespace: '{LABEL_64}'")]),
    (["ns/g_w"], [(0, "error", "invalid value for gateway name: 'g_w'")]),
    (["ns/a/gw"], [(0, "error", "invalid value for gateway name: 'a/gw'")]),  # split at the first '/'
    (["/gw"], [(0, "error", "config namespace and gateway name cannot be empty"),
               (0, "error", "invalid value for namespace: ''")]),
    (["ns/gw", "ns/"], [(1, "error", "config namespace and gateway name cannot be empty"),
                        (1, "error", "invalid value for gateway name: ''")]),
    (["*"], [(0, "error", "domain name '*' invalid (label '*' invalid)")]),  # agent.ValidateFQDN
    (["a*b.com"], [(0, "warning", "using legacy gatewayName format 'a*b.com'; prefer the <namespace>/<name> "
                                  "format: 'com/a*b'"),
                   (0, "error", "domain name 'a*b.com' invalid (label 'a*b' invalid)")]),
    (["10.0.0.1"], [(0, "warning", "using legacy gatewayName format '10.0.0.1'; prefer the <namespace>/<name> "
                                   "format: '0/10'"),
                    (0, "error", "domain name '10.0.0.1' invalid (top level domain '1' cannot be all-numeric)")]),
    # Istio's validateGatewayNames returns at the first name without a namespace: later names go unchecked
    (["mesh", "b_d/gw"], []), (["g_w", "*"], [(0, "error", "domain name 'g_w' invalid (label 'g_w' invalid)")]),
])
def test_virtual_service_gateway_names(gateways, expect):
    spec = {"hosts": ["r.com"], "gateways": gateways, "http": [{"route": [{"destination": {"host": "r"}}]}]}
    assert found("VirtualService", spec) == [(f"spec.gateways[{i}]", kind, text) for i, kind, text in expect]


ROUTE = {"route": [{"destination": {"host": "r"}}]}


@pytest.mark.parametrize("extra, expect", [
    ({"rewrite": {"authority": "a"}, "headers": {"request": {"set": {":authority": "b"}}}},
     [("spec.headers.request.set", "error", "authority header cannot be set multiple times: have 'a', attempting to "
                                            "set 'b'")]),
    ({"headers": {"request": {"set": {"Host": "b"}, "add": {":authority": "c"}}}},
     [("spec.headers.request.add", "error", "authority header cannot be set multiple times: have 'b', attempting to "
                                            "set 'c'")]),
    ({"headers": {"request": {"add": {"host": "c"}}}}, []),
    ({"rewrite": {"authority": "a"}, "headers": {"request": {"set": {"x": "b"}}}}, []),
])
def test_the_authority_is_rewritten_in_one_place_only(extra, expect):
    assert found("HTTPRoute", {**ROUTE, **extra}, "error") == expect


PREFIX_ONLY = "redirect prefix_rewrite requires all URI matches to use prefix match type"


@pytest.mark.parametrize("match, bad", [
    ([{"uri": {"prefix": "/a"}}], None), ([{"headers": {"a": {"exact": "b"}}}], None),
    ([{"uri": {"exact": "/a"}}], 0), ([{"uri": {"regex": "/a"}}], 0), ([{"uri": {"prefix": "/a"}}, {"uri": {"exact": "/b"}}], 1),
])
def test_a_redirect_prefix_rewrite_needs_prefix_uri_matches(match, bad):
    expect = [] if bad is None else [(f"spec.match[{bad}].uri", "error", PREFIX_ONLY)]
    assert found("HTTPRoute", {"match": match, "redirect": {"prefixRewrite": "/x"}}, "error") == expect


def test_a_redirect_without_a_prefix_rewrite_takes_any_uri_match():
    assert found("HTTPRoute", {"match": [{"uri": {"regex": "/a"}}], "redirect": {"uri": "/x"}}, "error") == []


ALLOWED_TARGETS = ("core/Service, gateway.networking.k8s.io/Gateway, gateway.networking.k8s.io/GatewayClass, "
                   "networking.istio.io/ServiceEntry")


@pytest.mark.parametrize("group, kind, ok", [
    (None, "Service", True), ("", "Service", True), ("core", "Service", True),
    ("networking.istio.io", "ServiceEntry", True), ("gateway.networking.k8s.io", "Gateway", True),
    ("gateway.networking.k8s.io", "GatewayClass", True), ("gateway.networking.k8s.io", "HTTPRoute", False),
    (None, "Pod", False),
])
def test_policy_target_kinds(group, kind, ok):
    ref = {"kind": kind, "name": "a", **({} if group is None else {"group": group})}
    expect = [] if ok else [("spec.targetRefs[0]", "error", f"targetRef must be to one of {ALLOWED_TARGETS} but was "
                                                            f"{group or ''}/{kind}")]
    assert found("AuthorizationPolicy", {"targetRefs": [ref]}, "error") == expect


@pytest.mark.parametrize("protocol, error", [
    ("http", None), ("HTPP", "unrecognized protocol 'HTPP'; did you mean HTTP?"),
    ("xyzzy", "unrecognized protocol 'xyzzy'"),
])
def test_port_protocols(protocol, error):
    assert found("ServicePort", {"number": 80, "name": "h", "protocol": protocol}) == (
        [] if error is None else [("spec.protocol", "error", error)])


@pytest.mark.parametrize("ports, endpoint, expect", [
    ([{"number": 80, "name": "http"}], {"address": "1.1.1.1", "ports": {"http": 8080}}, []),
    ([{"number": 80, "name": "http"}], {"address": "1.1.1.1", "ports": {"grpc": 8080}},
     [("spec.endpoints[0].ports", "endpoint port grpc is not defined by the service entry")]),
    ([{"number": 80, "name": "http"}], {"address": "unix:///a.sock"}, []),
    ([{"number": 80, "name": "http"}, {"number": 81, "name": "b"}], {"address": "unix:///a.sock"},
     [("spec.endpoints[0].address", "exactly 1 service port required for unix endpoints")]),
])
def test_static_service_entry_endpoint_ports(ports, endpoint, expect):
    spec = {"hosts": ["a.com"], "resolution": "STATIC", "ports": ports, "endpoints": [endpoint]}
    assert found("ServiceEntry", spec, "error") == [(path, "error", text) for path, text in expect]


def test_an_empty_port_protocol_counts_as_tcp_for_the_address_warning():
    assert found("ServiceEntry", {"hosts": ["a.com"], "ports": [{"number": 80, "name": "p", "protocol": ""}]},
                 "warning") == [NEEDS_ADDRESS]


def test_an_empty_port_level_list_is_no_traffic_policy_field():
    assert found("TrafficPolicy", {"portLevelSettings": []}) == [
        ("spec", "error", "traffic policy must have at least one field")]


@pytest.mark.parametrize("field, gateways, shown", [
    ("headers", None, "[]"), ("withoutHeaders", None, "[]"),
    ("headers", ["mesh", "ns/gw"], "[mesh ns/gw]"),  # with the mesh among them it is no gateway route; Go's %v
])
def test_jwt_claim_routing_needs_a_gateway(field, gateways, shown):
    spec = {"hosts": ["r"], "http": [{"match": [{field: {"@request.auth.claims.iss": {"exact": "a"}}}],
                                      "route": [{"destination": {"host": "r"}}]}]}
    if gateways:
        spec["gateways"] = gateways
    assert found("VirtualService", spec, "error") == [
        (f"spec.http[0].match[0].{field}", "error", "JWT claim based routing (key: @request.auth.claims.iss) is only "
                                                    f"supported for gateway, found no gateways: {shown}")]


def test_a_target_ref_without_a_kind():
    assert found("AuthorizationPolicy", {"targetRefs": [{"name": "a"}]}, "error") == [
        ("spec.targetRefs[0].kind", "error", "kind is required"),
        ("spec.targetRefs[0]", "error", f"targetRef must be to one of {ALLOWED_TARGETS} but was /")]


@pytest.mark.parametrize("value, error", [
    (5, "must be a regular expression string, not number 5"),
])
def test_a_regex_that_is_not_a_string(value, error):
    from control.istio.validate import check_regex
    assert check_regex(value) == error


@pytest.mark.parametrize("text", ["X1s", "\u0663"])
def test_durations_are_ascii_digits_with_an_optional_sign(text):
    from control.istio.validate import check_duration
    assert check_duration(text) == (f"invalid duration {text!r} (units are ns, us, ms, s, m, h; e.g. \"1.5s\", "
                                    "\"100ms\")")
