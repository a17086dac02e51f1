"""control.analyze: each Istio analyzer, a case that fires and a case that must not."""
from __future__ import annotations

import textwrap

import pytest

from control.analyze import analyze
from control.analyze.index import resolve_host
from control.istio.load import load_text

BASE = """
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {containers: [{name: r, image: r}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  template:
    metadata: {labels: {istio: ingressgateway}}
    spec: {containers: [{name: p, image: p}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop.example.com"]
"""


def run(extra: str, base: str = BASE, default_ingress: bool = True):
    result = load_text(base + "---\n" + textwrap.dedent(extra), "mesh.yaml", strict=True)
    assert [str(f) for f in result.findings] == []
    return analyze(result.resources, default_ingress=default_ingress)


def codes(findings):
    return sorted(f.code for f in findings)


def doc(kind: str, name: str, spec: str, api: str = "networking.istio.io/v1") -> str:
    """One resource's YAML: the header, then `spec` (any indentation) indented under `spec:`."""
    return (f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n"
            + textwrap.indent(textwrap.dedent(spec), "  "))


def vs(spec: str, name: str = "vs") -> str:
    return doc("VirtualService", name, spec)


OK_VS = vs("""
    hosts: [reviews]
    http:
    - route: [{destination: {host: reviews, subset: v1}}]
    """)


def test_short_names_resolve_in_the_rule_namespace():
    assert resolve_host("reviews", "default") == "reviews.default.svc.cluster.local"
    assert resolve_host("reviews.other", "default") == "reviews.other"
    assert resolve_host("*.example.com", "default") == "*.example.com"


def test_a_consistent_mesh_has_no_findings():
    assert run(OK_VS) == ()


@pytest.mark.parametrize("spec, message", [
    ("hosts: [reviews]\nhttp:\n- route: [{destination: {host: reviewz}}]\n", 'Referenced host not found: "reviewz"'),
    ("hosts: [reviews]\nhttp:\n- route: [{destination: {host: reviews, subset: v9}}]\n",
     'Referenced host+subset in destinationrule not found: "reviews+v9"'),
    ("hosts: [shop.example.com]\ngateways: [nogw]\nhttp:\n- route: [{destination: {host: reviews}}]\n",
     'Referenced gateway not found: "nogw"'),
])
def test_ist0101_referenced_resource_not_found(spec, message):
    (f,) = [f for f in run(vs(spec)) if f.code == "IST0101"]  # a missing gateway also gets IST0132, as in Istio
    assert (f.code, f.message, f.resource) == ("IST0101", message, "VirtualService default/vs")
    assert f.line > 1


def test_ist0101_gateway_selector_without_workloads():
    gw = doc("Gateway", "eg", "selector: {istio: egress}\n"
                              "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n")
    (f,) = run(gw)
    assert f.message == 'Referenced selector not found: "istio=egress"'


def test_ist0101_fqdn_and_service_entry_hosts_are_found():
    se = doc("ServiceEntry", "ext", "hosts: ['*.google.com']\nports: [{number: 443, name: https, protocol: HTTPS}]\n"
                                    "resolution: NONE\n")
    spec = "hosts: [reviews, www.google.com]\nhttp:\n- route: [{destination: {host: reviews.default.svc.cluster.local}}]\n" \
           "tls:\n- match: [{sniHosts: [www.google.com]}]\n  route: [{destination: {host: www.google.com}}]\n"
    assert run(se + "---\n" + vs(spec)) == ()


def test_ist0109_two_mesh_virtual_services_for_one_host():
    found = run(OK_VS + "---\n" + OK_VS.replace("name: vs", "name: vs2"))
    assert codes(found) == ["IST0109", "IST0109"]
    assert "default/vs,default/vs2" in found[0].message and "reviews.default.svc.cluster.local" in found[0].message


def test_ist0109_not_when_one_is_bound_to_a_gateway_only():
    other = vs("hosts: [reviews]\ngateways: [gw]\nhttp:\n- route: [{destination: {host: reviews}}]\n", "vs2")
    assert "IST0109" not in codes(run(OK_VS + "---\n" + other))


@pytest.mark.parametrize("labels, fires", [("{app: ratings}", True), ("{app: reviews}", False)])
def test_ist0127_policy_selector_matches_no_workload(labels, fires):
    ap = doc("AuthorizationPolicy", "ap", f"selector: {{matchLabels: {labels}}}\naction: DENY\nrules: [{{}}]\n",
             api="security.istio.io/v1")
    assert codes(run(ap)) == (["IST0127"] if fires else [])


@pytest.mark.parametrize("labels, fires", [("{app: ratings}", True), ("{app: reviews, version: v1}", False)])
def test_ist0101_sidecar_workload_selector_labels_match_no_workload(labels, fires):
    """Istio's sidecar.SelectorAnalyzer reports a selector matching no pod as IST0101 "selector"."""
    sidecar = doc("Sidecar", "sc", f"workloadSelector: {{labels: {labels}}}\negress: [{{hosts: ['./*']}}]\n")
    found = run(sidecar)
    assert codes(found) == (["IST0101"] if fires else [])
    if fires:
        assert found[0].path == "spec.workloadSelector.labels"


@pytest.mark.parametrize("tls, expected", [
    ("{mode: SIMPLE}", ["IST0128"]),
    ("{mode: MUTUAL, clientCertificate: /c, privateKey: /k}", ["IST0128"]),
    ("{mode: SIMPLE, caCertificates: /ca.pem}", []),
    ("{mode: ISTIO_MUTUAL}", []),
])
def test_ist0128_tls_origination_without_ca(tls, expected):
    dr = doc("DestinationRule", "tls", f"host: reviews\ntrafficPolicy:\n  tls: {tls}\n")
    found = run(dr)
    assert codes(found) == expected
    if expected:
        assert found[0].message.startswith("DestinationRule tls in namespace default has TLS mode set to")


@pytest.mark.parametrize("ca, expected", [("", ["IST0129"]), (", caCertificates: /ca.pem", [])])
def test_ist0129_port_level_tls_without_ca(ca, expected):
    dr = doc("DestinationRule", "tls", "host: reviews\ntrafficPolicy:\n  portLevelSettings:\n"
                                       f"  - port: {{number: 9080}}\n    tls: {{mode: SIMPLE{ca}}}\n")
    found = run(dr)
    assert codes(found) == expected
    if expected:
        text_lines = (BASE + "---\n" + dr).splitlines()
        assert found[0].message.endswith("at port 9080")
        assert found[0].line == 1 + next(i for i, line in enumerate(text_lines) if "tls: {mode" in line)


def unused(text: str):
    """IST0130/IST0131 come with validation (Istio's webhook warns; istioctl analyze names them so)."""
    result = load_text(BASE + "---\n" + textwrap.dedent(text), "mesh.yaml", strict=True)
    return [f for f in result.findings if f.code in ("IST0130", "IST0131")]


def test_ist0130_rule_after_a_catch_all_is_unreachable():
    spec = "hosts: [reviews]\nhttp:\n- route: [{destination: {host: reviews}}]\n" \
           "- name: late\n  match: [{uri: {prefix: /a}}]\n  route: [{destination: {host: reviews}}]\n"
    (f,) = unused(vs(spec))
    assert (f.code, f.message) == ("IST0130", 'VirtualService rule "late" not used (route without matches defined before).')


def test_ist0130_and_ist0131_duplicate_matches():
    spec = "hosts: [reviews]\nhttp:\n- match: [{uri: {prefix: /api}}]\n  route: [{destination: {host: reviews}}]\n" \
           "- match: [{uri: {prefix: /api}, name: again}]\n  route: [{destination: {host: reviews}}]\n"
    found = unused(vs(spec))
    assert codes(found) == ["IST0130", "IST0131"]
    msgs = {f.message for f in found}
    assert 'VirtualService rule #1 match "again" is not used (duplicate/overlapping match in rule #0).' in msgs
    assert "VirtualService rule #1 not used (all matches used by prior rules)." in msgs


def test_ist0131_a_duplicate_among_other_matches_leaves_the_rule_reachable():
    """Istio's analyzeUnreachableHTTPRules: only an exact duplicate or a covered uri prefix is ineffective;
    an exact uri under an earlier prefix is not checked."""
    spec = "hosts: [reviews]\nhttp:\n- match: [{uri: {prefix: /api}}]\n  route: [{destination: {host: reviews}}]\n" \
           "- match: [{uri: {exact: /api/v1}}, {uri: {prefix: /api}}]\n  route: [{destination: {host: reviews}}]\n"
    assert codes(unused(vs(spec))) == ["IST0131"]


def test_ist0131_uri_prefix_covered_by_an_earlier_prefix_with_the_same_method():
    spec = "hosts: [reviews]\nhttp:\n- match: [{uri: {prefix: /api}}]\n  route: [{destination: {host: reviews}}]\n" \
           "- match: [{uri: {prefix: /api/v1}, method: {exact: GET}}]\n  route: [{destination: {host: reviews}}]\n"
    (f,) = unused(vs(spec))
    assert f.message == ("VirtualService rule #1 match #0 of prefix /api/v1 is not used (duplicate/overlapping "
                         "match in rule #0 of prefix /api on #0).")


def test_ist0130_ist0131_distinct_matches_are_fine():
    spec = "hosts: [reviews]\nhttp:\n- match: [{uri: {prefix: /api}}]\n  route: [{destination: {host: reviews}}]\n" \
           "- match: [{uri: {prefix: /static}}]\n  route: [{destination: {host: reviews}}]\n" \
           "- route: [{destination: {host: reviews}}]\n"
    assert run(vs(spec)) == () and unused(vs(spec)) == []


@pytest.mark.parametrize("hosts, expected", [("[shop.example.com]", []), ("[other.example.com]", ["IST0132"])])
def test_ist0132_virtual_service_host_not_in_gateway(hosts, expected):
    spec = f"hosts: {hosts}\ngateways: [gw]\nhttp:\n- route: [{{destination: {{host: reviews}}}}]\n"
    found = run(vs(spec))
    assert codes(found) == expected
    if expected:
        assert found[0].message == ("one or more host [other.example.com] defined in VirtualService default/vs "
                                    "not found in Gateway default/gw.")


KUBE_GATEWAY = """---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: kgw}
spec:
  gatewayClassName: istio
  listeners: %s
"""


@pytest.mark.parametrize("listeners, hosts, expected", [
    ("[{name: http, hostname: shop.example.com, port: 80, protocol: HTTP}]", "[shop.example.com]", []),
    ("[{name: http, hostname: '*.example.com', port: 80, protocol: HTTP}]", "[shop.example.com]", []),
    ("[{name: http, hostname: shop.example.com, port: 80, protocol: HTTP}]", "[other.example.com]", ["IST0132"]),
    ("[{name: a, hostname: shop.example.com, port: 80, protocol: HTTP}, {name: b, port: 81, protocol: HTTP}]",
     "[other.example.com]", []),  # a listener without a hostname accepts every host
])
def test_a_kubernetes_gateway_named_by_a_virtual_service_is_found_and_its_listener_hosts_checked(listeners, hosts,
                                                                                                   expected):
    """Istio's GatewayAnalyzer: no Istio Gateway of that name, so the Gateway API one (vsHostInKubernetesGateway);
    it is read for analysis only (keep_invalid), never served."""
    spec = f"hosts: {hosts}\ngateways: [default/kgw]\nhttp:\n- route: [{{destination: {{host: reviews}}}}]\n"
    result = load_text(BASE + KUBE_GATEWAY % listeners + "---\n" + vs(spec), "x.yaml", keep_invalid=True)
    assert [f.code for f in analyze(result.resources) if f.code in ("IST0101", "IST0132")] == expected
    assert any(f.code == "PYM0003" and "read by analysis only" in f.message for f in result.findings)
    assert not [f for f in result.findings if f.level.label != "Info"], result.findings
    served = load_text(BASE + KUBE_GATEWAY % listeners, "x.yaml").resources
    assert not [r for r in served if r.group == "gateway.networking.k8s.io"]


def test_an_istio_gateway_of_the_same_name_wins_over_a_kubernetes_one():
    """Istio looks for an Istio Gateway first: its servers decide, not the Gateway API listeners."""
    kube = (KUBE_GATEWAY % "[{name: http, port: 80, protocol: HTTP}]").replace("name: kgw", "name: gw")
    spec = "hosts: [other.example.com]\ngateways: [gw]\nhttp:\n- route: [{destination: {host: reviews}}]\n"
    result = load_text(BASE + kube + "---\n" + vs(spec), "x.yaml", keep_invalid=True)
    assert [f.code for f in analyze(result.resources) if f.code in ("IST0101", "IST0132", "IST0145")] == ["IST0132"]


@pytest.mark.parametrize("port, host, expected", [(80, "shop.example.com", ["IST0145", "IST0145"]),
                                                  (80, "*.example.com", ["IST0145", "IST0145"]),
                                                  # no Secret c: gateway/secret.go's IST0101 credentialName
                                                  (443, "shop.example.com", ["IST0101"]), (80, "other.com", [])])
def test_ist0145_conflicting_gateways(port, host, expected):
    proto = "HTTP" if port == 80 else "HTTPS"
    tls = "" if port == 80 else ", tls: {mode: SIMPLE, credentialName: c}"
    server = f"{{port: {{number: {port}, name: p, protocol: {proto}}}, hosts: ['{host}']{tls}}}"
    gw = doc("Gateway", "gw2", f"selector: {{istio: ingressgateway}}\nservers: [{server}]\n")
    found = run(gw)
    assert codes(found) == expected
    if "IST0145" in expected:
        assert "Conflict with gateways" in found[0].message and f"port {port}" in found[0].message


@pytest.mark.parametrize("subset, expected", [("{name: v1, labels: {version: v1}}", []),
                                              ("{name: v3, labels: {version: v3}}", ["IST0173"])])
def test_ist0173_subset_selects_no_pods(subset, expected):
    base = BASE.replace("  - {name: v1, labels: {version: v1}}", f"  - {subset}")
    found = run("", base=base + "---\n" + OK_VS.replace("subset: v1", "subset: " + subset.split(",")[0][7:]))
    assert codes(found) == expected
    if expected:
        assert found[0].message.startswith("The Subset v3 defined in the DestinationRule does not select any pods.")


@pytest.mark.parametrize("host, expected", [("reviews", []), ("reviews.default.svc.cluster.local", []),
                                            ("nothing", ["IST0174"])])
def test_ist0174_destination_rule_host_unknown(host, expected):
    dr = doc("DestinationRule", "d2", f"host: {host}\n")
    assert codes(run(dr)) == expected


K8S_ONLY = BASE.split("---\napiVersion: networking")[0]  # BASE's Service and Deployments, not its DestinationRule


def _dr(name: str, body: str) -> str:
    return doc("DestinationRule", name, "host: reviews\n" + textwrap.dedent(body))


@pytest.mark.parametrize("second, expected_paths", [
    ("trafficPolicy: {loadBalancer: {simple: RANDOM}}\n", ["spec.trafficPolicy"]),  # ignored policy
    ("subsets: [{name: v1, labels: {version: v1}}]\n", ["spec.subsets[0]"]),  # duplicate subset dropped
    ("subsets: [{name: v9, labels: {version: v1}}]\n", []),  # a new subset merges fine
    ("workloadSelector: {matchLabels: {app: reviews}}\ntrafficPolicy: {loadBalancer: {simple: RANDOM}}\n", []),
])
def test_pym0007_merged_destination_rules_that_lose_something(second, expected_paths):
    first = _dr("first", "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n"
                         "subsets: [{name: v1, labels: {version: v1}}]\n")
    found = [f for f in run(first + "---\n" + _dr("second", second), base=K8S_ONLY)
             if f.code == "PYM0007"]
    assert [f.path for f in found] == expected_paths
    assert all(f.resource == "DestinationRule default/second" for f in found)


CLAIM_VS = vs("""
    hosts: [shop.example.com]
    gateways: [gw]
    http:
    - match: [{headers: {"@request.auth.claims.groups": {exact: admin}}}]
      route: [{destination: {host: reviews, subset: v1}}]
    - route: [{destination: {host: reviews, subset: v1}}]
    """)


def _ra(namespace: str, selector: str = "") -> str:
    sel = f"  selector: {{matchLabels: {{{selector}}}}}\n" if selector else ""
    return (f"apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: ra, namespace: "
            f"{namespace}}}\nspec:\n{sel}  jwtRules: [{{issuer: iss, jwksUri: 'https://k.example/jwks'}}]\n")


def test_ist0149_claim_routing_without_request_authentication():
    (f,) = [f for f in run(CLAIM_VS, default_ingress=False) if f.code == "IST0149"]  # no default ingress pod
    assert (f.code, f.resource) == ("IST0149", "VirtualService default/vs")
    assert f.message == ("The virtual service uses the JWT claim based routing (key: @request.auth.claims.groups) "
                         "but found no request authentication for the gateway (default/gw) pod (gw). The request "
                         "authentication must first be applied for the gateway pods to validate the JWT token and "
                         "make the claims available for routing.")


@pytest.mark.parametrize("ra, fires", [
    (_ra("istio-system", "istio: ingressgateway"), False),  # root namespace, selector matching the pod
    (_ra("istio-system"), False),  # mesh-wide
    (_ra("istio-system", "istio: egressgateway"), True),  # selects other pods
    (_ra("default"), True),  # another namespace than the gateway pod's
])
def test_ist0149_request_authentication_scope(ra, fires):
    found = codes(run(CLAIM_VS + "---\n" + ra, default_ingress=False))
    assert [c for c in found if c == "IST0149"] == (["IST0149"] if fires else [])


TCP_SVC = """
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  selector: {app: db}
  ports: [{name: tcp-pg, port: 5432}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: d, image: d}]}
"""


def _ap(rules: str, action: str = "ALLOW", app: str = "db") -> str:
    return doc("AuthorizationPolicy", "ap", f"selector: {{matchLabels: {{app: {app}}}}}\naction: {action}\n"
                                            f"rules: {rules}\n", api="security.istio.io/v1")


@pytest.mark.parametrize("rules, action, app, expected", [
    ("[{to: [{operation: {methods: [GET]}}]}]", "ALLOW", "db",
     "rule 0 uses HTTP-only attributes (methods) but applies only to TCP ports (5432): the ALLOW rule is dropped "
     "there"),
    ("[{from: [{source: {requestPrincipals: ['*']}}], to: [{operation: {ports: ['5432']}}]}]", "DENY", "db",
     "rule 0 uses HTTP-only attributes (requestPrincipals) but applies only to TCP ports (5432): the DENY rule "
     "ignores them there and matches more"),
    ("[{when: [{key: 'request.auth.claims[groups]', values: [a]}]}]", "ALLOW", "db",
     "rule 0 uses HTTP-only attributes (request.auth.claims[groups]) but applies only to TCP ports (5432): the "
     "ALLOW rule is dropped there"),
    ("[{to: [{operation: {methods: [GET]}}]}]", "ALLOW", "reviews", None),  # an HTTP port: effective
    ("[{to: [{operation: {ports: ['5432']}}]}]", "ALLOW", "db", None),  # nothing HTTP-only
])
def test_ist0167_http_only_attributes_on_tcp_ports(rules, action, app, expected):
    found = [f for f in run(TCP_SVC + "---\n" + _ap(rules, action, app)) if f.code == "IST0167"]
    assert [f.message for f in found] == ([f"The policy has no impact: {expected}."] if expected else [])


def envoy_filter(name: str, patches: str, priority: int = 0) -> str:
    return doc("EnvoyFilter", name, f"priority: {priority}\nconfigPatches:\n{textwrap.dedent(patches)}",
               api="networking.istio.io/v1alpha3")


def analyze_for_analysis(text: str):
    """Like meshctl analyze: EnvoyFilters are validated, not served, but analysis sees them."""
    result = load_text(text, "ef.yaml", strict=True, keep_invalid=True)
    return [f for f in analyze(result.resources) if f.code.startswith("IST015")]


@pytest.mark.parametrize("apply_to, operation, priority, expected", [
    ("HTTP_ROUTE", "ADD", 0, ["IST0153"]),                 # ignored by Istio
    ("ROUTE_CONFIGURATION", "REMOVE", 0, ["IST0154"]),     # ignored by Istio
    ("CLUSTER", "REPLACE", 0, ["IST0152"]),                # REPLACE only for filters and virtual hosts
    ("HTTP_FILTER", "REPLACE", 0, ["IST0151"]),            # relative, no priority
    ("HTTP_FILTER", "INSERT_BEFORE", 0, ["IST0151"]),
    ("HTTP_FILTER", "INSERT_BEFORE", 10, []),              # a priority orders it
    ("HTTP_FILTER", "INSERT_FIRST", 0, []),                # absolute
])
def test_envoy_filter_patch_operations(apply_to, operation, priority, expected):
    ef = envoy_filter("ef", f"- applyTo: {apply_to}\n  patch: {{operation: {operation}, value: {{name: f}}}}\n",
                      priority)
    assert codes(analyze_for_analysis(ef)) == expected


def test_ist0155_relative_patch_of_a_filter_an_earlier_patch_matched_by_proxy_version():
    ef = envoy_filter("ef", """\
        - applyTo: HTTP_FILTER
          match: {proxy: {proxyVersion: '^1\\.11.*'}}
          patch: {operation: INSERT_FIRST, value: {name: envoy.lua}}
        - applyTo: HTTP_FILTER
          patch: {operation: INSERT_AFTER, value: {name: envoy.lua}}
        """)
    assert codes(analyze_for_analysis(ef)) == ["IST0155"]


def sidecar(name: str, selector: str = "") -> str:
    body = f"workloadSelector: {{labels: {selector}}}\n" if selector else ""
    return doc("Sidecar", name, body + "egress: [{hosts: ['./*']}]\n")


def test_ist0110_two_sidecars_select_the_same_pod():
    found = [f for f in run(sidecar("a", "{app: reviews}") + "---\n" + sidecar("b", "{version: v1}"))
             if f.code == "IST0110"]
    assert len(found) == 2 and {f.resource for f in found} == {"Sidecar default/a", "Sidecar default/b"}
    assert 'The Sidecars [a b] in namespace "default" select the same workload pod' in found[0].message


def test_ist0111_two_sidecars_without_selector_in_one_namespace():
    assert codes(run(sidecar("a") + "---\n" + sidecar("b"))) == ["IST0111", "IST0111"]
    assert codes(run(sidecar("a"))) == []


def service(name: str, ports: str, namespace: str = "default", extra: str = "") -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  selector: {{app: {name}}}\n  ports: {ports}\n{extra}")


def analyzed(text: str, code_prefix: str):
    result = load_text(text, "x.yaml", strict=True, keep_invalid=True)
    return [f for f in analyze(result.resources) if f.code.startswith(code_prefix)]


@pytest.mark.parametrize("ports, expected", [
    ("[{name: http-web, port: 80}]", []),
    ("[{name: grpc-web-x, port: 80}]", []),
    ("[{name: web, port: 80}]", ["IST0118"]),                              # no protocol prefix
    ("[{name: web, port: 80, appProtocol: http}]", []),                     # appProtocol decides
    ("[{name: db, port: 3306}]", []),                                       # well-known port: TCP
    ("[{name: dns, port: 5353, protocol: UDP}]", []),
])
def test_ist0118_port_names_istio_can_read_a_protocol_from(ports, expected):
    assert codes(analyzed(service("s", ports), "IST0118")) == expected


def test_ist0118_skips_kubernetes_system_namespaces_as_istioctl_does():
    assert analyzed(service("s", "[{name: web, port: 80}]", namespace="kube-system"), "IST0118") == []


def test_ist0150_external_name_service_port_named_tcp():
    svc = service("s", "[{name: tcp, port: 80}]", extra="  type: ExternalName\n  externalName: x.example.com\n")
    assert codes(analyzed(svc, "IST0150")) == ["IST0150"]


@pytest.mark.parametrize("ports, expected", [
    ("[{number: 9000, name: tcp, protocol: TCP}]", ["IST0134"]),
    ("[{number: 9000, name: t}]", ["IST0134"]),                    # no protocol: TCP
    ("[{number: 80, name: http, protocol: HTTP}]", []),
])
def test_ist0134_tcp_service_entry_without_addresses(ports, expected):
    se = doc("ServiceEntry", "se", f"hosts: [db.example.com]\nports: {ports}\nresolution: DNS\n")
    assert codes(analyzed(se, "IST0134")) == expected


def test_ist0162_gateway_port_not_exposed_by_its_service():
    gw = doc("Gateway", "gw", "selector: {istio: ingressgateway}\n"
                              "servers: [{port: {number: 8443, name: https, protocol: HTTPS}, hosts: ['a.example.com'],"
                              " tls: {mode: PASSTHROUGH}}, {port: {number: 443, name: tls, protocol: TLS}, "
                              "hosts: ['b.example.com'], tls: {mode: PASSTHROUGH}}]\n")
    found = analyzed(gw, "IST0162")  # the default ingress gateway Service exposes 80, 443, 31400, 15443
    assert [f.path for f in found] == ["spec.servers[0].port.number"]
    assert "(port 8443)" in found[0].message and "istio=ingressgateway" in found[0].message


def test_ist0112_destination_needs_a_port_when_the_service_has_several():
    svc = service("multi", "[{name: http, port: 80}, {name: http-admin, port: 8080}]")
    no_port = vs("hosts: [multi]\nhttp:\n- route: [{destination: {host: multi}}]\n", "v1")
    with_port = vs("hosts: [multi2]\nhttp:\n- route: [{destination: {host: multi, port: {number: 80}}}]\n", "v2")
    found = analyzed(svc + "---\n" + no_port + "---\n" + with_port, "IST0112")
    assert [f.resource for f in found] == ["VirtualService default/v1"]
    assert found[0].message.startswith('This VirtualService routes to a service "multi" that exposes multiple ports [80 8080].')


def test_ist0165_reference_to_a_generated_gateway():
    spec = "hosts: [a.example.com]\ngateways: [istio-system/gw~istio-autogenerated-k8s-gateway~x]\n" \
           "http:\n- route: [{destination: {host: reviews}}]\n"
    result = load_text(BASE + "---\n" + vs(spec), "x.yaml", keep_invalid=True)
    assert [f.code for f in analyze(result.resources) if f.code in ("IST0101", "IST0132", "IST0165")] == ["IST0165"]
