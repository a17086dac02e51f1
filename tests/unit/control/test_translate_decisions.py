"""Translation decisions the golden files do not pin, one each: VirtualService matches and actions
(control/translate/routes.py) and DestinationRule cluster settings (control/translate/clusters.py), checked
on the Envoy config a sidecar or gateway gets."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from control.istio.load import load_text
from control.mesh import build_mesh
from control.translate import TranslateError, render_gateway
from control.translate.routes import cors_config, fault_config, hash_policy, header_operations, string_match
from tests.golden.envoy_schema import check_rendered
from tests.unit.control.test_translate import BASE, REVIEWS, by_name, render, vhost

CLUSTER = f"outbound|9080||{REVIEWS}"


def vs(http: str, **spec: str) -> str:
    """A VirtualService for reviews with `http` (YAML of the rules, indented under `http:`)."""
    extra = "".join(f"  {k}: {v}\n" for k, v in spec.items())
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\n"
            f"spec:\n  hosts: [reviews]\n{extra}  http:\n{http}")


def dr(policy: str, **spec: str) -> str:
    """A DestinationRule for reviews with `trafficPolicy: policy` (YAML flow style)."""
    extra = "".join(f"  {k}: {v}\n" for k, v in spec.items())
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\n"
            f"spec:\n  host: reviews\n  trafficPolicy: {policy}\n{extra}")


def routes_of(extra: str) -> list[dict]:
    return vhost(render(extra), "9080", f"{REVIEWS}:9080")["routes"]


def cluster_of(extra: str, name: str = CLUSTER) -> dict:
    return by_name(render(extra).clusters, name)


# --- routes: matches -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sm, envoy", [
    (None, None), ({}, None), ({"regex": "*"}, None),  # presence only
    ({"exact": "a"}, {"exact": "a"}), ({"prefix": "a"}, {"prefix": "a"}),
    ({"regex": "a.*"}, {"safe_regex": {"regex": "a.*"}}),
    ({"suffix": "a"}, None),  # not an Istio StringMatch: presence
])
def test_string_match(sm, envoy):
    assert string_match(sm) == envoy


def test_header_matches_on_uri_scheme_method_authority_are_ignored_as_istio_does():
    (route, _) = routes_of(vs("""  - match:
    - headers: {uri: {exact: /x}, method: {exact: GET}, x-a: {exact: b}}
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"""))
    assert route["match"]["headers"] == [{"name": "x-a", "string_match": {"exact": "b"}}]


def test_a_match_naming_gateways_applies_on_a_sidecar_only_with_mesh():
    routes = routes_of(vs("""  - match: [{uri: {prefix: /gw}, gateways: [istio-system/public]}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /mesh}, gateways: [mesh]}]
    route: [{destination: {host: reviews}}]
""", gateways="[mesh, istio-system/public]"))
    assert [r["match"] for r in routes] == [{"prefix": "/mesh"}]


@pytest.mark.parametrize("ops, expected", [
    (None, ([], [], None)),
    ({"set": {":path": "/x", "Host": "h.example", "x-a": "1"}, "add": {"x-b": "2"}, "remove": [":path", "host", "x-c"]},
     ([{"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
       {"header": {"key": "x-b", "value": "2"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}], ["x-c"], "h.example")),
])
def test_header_operations_drop_pseudo_headers_and_turn_host_into_the_authority(ops, expected):
    assert header_operations(ops) == expected


# --- routes: actions -------------------------------------------------------------------------------------

@pytest.mark.parametrize("consistent_hash, policy", [
    (None, []),
    ({"useSourceIp": True}, [{"connection_properties": {"source_ip": True}}]),
    ({"httpQueryParameterName": "user"}, [{"query_parameter": {"name": "user"}}]),
    ({"httpCookie": {"name": "c"}}, [{"cookie": {"name": "c"}}]),
    ({"httpCookie": {"name": "c", "ttl": "0s", "path": "/p"}}, [{"cookie": {"name": "c", "ttl": "0s", "path": "/p"}}]),
    ({"maglev": {"tableSize": 65537}}, []),  # a table size alone names no hash key
])
def test_hash_policy(consistent_hash, policy):
    assert hash_policy(SimpleNamespace(consistent_hash=consistent_hash)) == policy


def test_the_default_route_carries_the_destination_rules_hash_policy():
    (route,) = routes_of(dr("{loadBalancer: {consistentHash: {useSourceIp: true}}}"))
    assert route["route"]["hash_policy"] == [{"connection_properties": {"source_ip": True}}]
    assert "retry_host_predicate" not in route["route"]["retry_policy"]  # consistent hashing keeps the host


@pytest.mark.parametrize("fault, says", [
    ("{delay: {percentage: {value: 10}}}", "spec.http[0].fault.delay: only fixedDelay is supported"),
    ("{abort: {percentage: {value: 10}}}", "spec.http[0].fault.abort: abort needs httpStatus or grpcStatus"),
])
def test_untranslatable_faults_name_the_field(fault, says):
    with pytest.raises(TranslateError, match=says.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        render(vs(f"  - route: [{{destination: {{host: reviews}}}}]\n    fault: {fault}\n"))


def test_a_delay_reads_the_deprecated_int_percent_and_an_abort_does_not():
    """HTTPFaultInjection.Delay has the deprecated int `percent` (Istio reads it when `percentage` is unset);
    Abort has none, so an abort without `percentage` applies to 0 %."""
    (route,) = routes_of(vs("  - route: [{destination: {host: reviews}}]\n"
                            "    fault: {delay: {fixedDelay: 2s, percent: 30}, abort: {httpStatus: 503}}\n"))
    fault = route["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"] == {"fixed_delay": "2s", "percentage": {"numerator": 300000, "denominator": "MILLION"}}
    assert fault["abort"] == {"http_status": 503, "percentage": {"numerator": 0, "denominator": "MILLION"}}


def test_a_mirror_at_zero_percent_is_left_out():
    (route,) = routes_of(vs("""  - route: [{destination: {host: reviews}}]
    mirrors:
    - destination: {host: reviews, subset: v2}
      percentage: {value: 0}
    - destination: {host: reviews}
""", ) + "---\n" + dr("{loadBalancer: {simple: RANDOM}}", subsets="[{name: v2, labels: {version: v2}}]"))
    assert [m["cluster"] for m in route["route"]["request_mirror_policies"]] == [CLUSTER]


@pytest.mark.parametrize("redirect, envoy", [
    ("{uri: /n, derivePort: FROM_REQUEST_PORT}", {"path_redirect": "/n", "port_redirect": 9080,
                                                  "response_code": "MOVED_PERMANENTLY"}),
    # FROM_PROTOCOL_DEFAULT: no port_redirect (istiod ApplyRedirect leaves the port to Envoy's default)
    ("{scheme: https, derivePort: FROM_PROTOCOL_DEFAULT, redirectCode: 308}",
     {"scheme_redirect": "https", "response_code": "PERMANENT_REDIRECT"}),
    ("{uri: /n, derivePort: FROM_PROTOCOL_DEFAULT}", {"path_redirect": "/n", "response_code": "MOVED_PERMANENTLY"}),
])
def test_redirect_ports(redirect, envoy):
    (route,) = routes_of(vs(f"  - redirect: {redirect}\n"))
    assert route["redirect"] == envoy


def test_a_redirect_code_envoy_lacks_drops_the_route_with_a_note():
    rendered = render(vs("  - match: [{uri: {prefix: /old}}]\n    redirect: {uri: /n, redirectCode: 305}\n"
                         "  - route: [{destination: {host: reviews}}]\n"))
    assert [r["match"] for r in vhost(rendered, "9080", f"{REVIEWS}:9080")["routes"]] == [{"prefix": "/"}]
    assert any("spec.http[0].redirect.redirectCode: redirect code 305 is not one of 301, 302, 303, 307, 308; "
               "the route is dropped" in n for n in rendered.notes)


def test_a_delegate_rule_is_noted_and_skipped():
    rendered = render(vs("  - delegate: {name: other}\n  - route: [{destination: {host: reviews}}]\n"))
    assert len(vhost(rendered, "9080", f"{REVIEWS}:9080")["routes"]) == 1
    assert any("spec.http[0].delegate: delegate VirtualServices are not translated yet" in n for n in rendered.notes)


def test_direct_response_bytes_body():
    (route,) = routes_of(vs("  - directResponse: {status: 503, body: {bytes: aGk=}}\n"))
    assert route["direct_response"] == {"status": 503, "body": {"inline_bytes": "aGk="}}


# --- virtual hosts ---------------------------------------------------------------------------------------

SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  addresses: [10.9.9.9]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 10.9.9.10}]
  ports: [{number: 9080, name: http, protocol: HTTP}]
"""


def test_a_service_entry_address_is_a_domain_too():
    rendered = render(SE)
    assert vhost(rendered, "9080", "api.example.com:9080")["domains"] == [
        "api.example.com", "api.example.com:9080", "10.9.9.9", "10.9.9.9:9080"]


def test_a_wildcard_virtual_service_host_covers_matching_services_and_the_first_virtual_service_wins():
    wild = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a-wild}\nspec:\n"
            "  hosts: ['*.example.com']\n  http: [{route: [{destination: {host: api.example.com}}], timeout: 3s}]\n")
    exact = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b-exact}\nspec:\n"
             "  hosts: [api.example.com]\n  http: [{route: [{destination: {host: api.example.com}}], timeout: 5s}]\n")
    tcp_only = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: c-tcp}\nspec:\n"
                "  hosts: [api.example.com]\n  tcp: [{route: [{destination: {host: api.example.com}}]}]\n")
    rendered = render("---\n".join([SE, wild, exact, tcp_only]))
    (route,) = vhost(rendered, "9080", "api.example.com:9080")["routes"]
    assert route["route"]["timeout"] == "3s"  # a-wild comes first


def service(name: str, port: int) -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
            f"spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: {port}}}]}}\n")


def named_vs(name: str, hosts: str, body: str) -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\n"
            f"spec:\n  hosts: {hosts}\n{body}")


def prefixes(rendered, route_config: str) -> dict[str, list[str]]:
    """Virtual host name -> its routes' prefixes, for one route configuration (the catch-all left out)."""
    return {v["name"]: [r["match"].get("prefix", "") for r in v["routes"]]
            for v in by_name(rendered.routes, route_config)["virtual_hosts"] if v["name"] != "allow_any"}


def test_a_virtual_service_for_a_host_no_service_has_gets_a_virtual_host_on_port_80_only():
    """istiod: on port 80 every VirtualService host gets a virtual host (port 80 is where a client's plain
    HTTP to an unknown name lands); on other ports only hosts that are services of that port do."""
    rendered = render("---\n".join([
        service("web", 80),
        named_vs("ext", "[external.example]", "  http: [{match: [{uri: {prefix: /ext}}], route: [{destination: {host: reviews}}]}]\n"),
        named_vs("web", "[web]", "  http: [{match: [{uri: {prefix: /web}}], route: [{destination: {host: web}}]}]\n")]))
    port80 = by_name(rendered.routes, "80")["virtual_hosts"]
    assert [(v["name"], v["domains"][:2]) for v in port80 if v["name"] != "allow_any"][:1] == [
        ("external.example:80", ["external.example", "external.example:80"])]
    assert prefixes(rendered, "80")["external.example:80"] == ["/ext"]
    assert prefixes(rendered, "80")["web.default.svc.cluster.local:80"] == ["/web"]
    assert "external.example:9080" not in prefixes(rendered, "9080")
    assert prefixes(rendered, "9080")[f"{REVIEWS}:9080"] == ["/"]  # its default route


def test_virtual_services_that_do_not_apply_are_skipped_without_ending_the_scan():
    """In order: one for a name no service has (not on port 9080), one without http rules, one for a service
    already covered by an earlier VirtualService (the first wins), then a wildcard one that still covers the
    service nobody covered yet."""
    rendered = render("---\n".join([
        service("zeta", 9080),  # after reviews in host order: the wildcard meets covered reviews first
        named_vs("a-nothing", "[nothing.example]", "  http: [{route: [{destination: {host: reviews}}]}]\n"),
        named_vs("b-tcp", "[reviews]", "  tcp: [{route: [{destination: {host: reviews}}]}]\n"),
        named_vs("c-reviews", "[reviews]", "  http: [{match: [{uri: {prefix: /c}}], route: [{destination: {host: reviews}}]}]\n"),
        named_vs("d-all", "['*.default.svc.cluster.local']",
                 "  http: [{match: [{uri: {prefix: /d}}], route: [{destination: {host: zeta}}]}]\n")]))
    assert prefixes(rendered, "9080") == {f"{REVIEWS}:9080": ["/c"], "zeta.default.svc.cluster.local:9080": ["/d"]}


def test_on_port_80_a_wildcard_host_that_covers_services_gets_no_virtual_host_of_its_own():
    rendered = render(service("web", 80) + "---\n" + named_vs(
        "all", "['*.default.svc.cluster.local']", "  http: [{match: [{uri: {prefix: /all}}], route: [{destination: {host: web}}]}]\n"))
    assert prefixes(rendered, "80") == {"web.default.svc.cluster.local:80": ["/all"]}


def test_a_shared_virtual_host_is_rebuilt_when_the_memo_holds_another_routes_list():
    """_shared_vhost shares one dict per (name, domains, routes list); a memo entry made for another list (an id
    reused after that list was freed) must not be returned."""
    from control.translate.routes import _shared_vhost
    stale_routes = [{"name": "old"}]
    stale = {"name": "n", "domains": ["d"], "routes": stale_routes, "include_request_attempt_count": True}
    proxy = SimpleNamespace(mesh=SimpleNamespace(memo=lambda key, compute: (stale_routes, stale)))
    routes = [{"name": "new"}]
    assert _shared_vhost(proxy, "n", ["d", "d:80"], routes) == {
        "name": "n", "domains": ["d", "d:80"], "routes": routes, "include_request_attempt_count": True}


def test_proxies_rendered_from_one_mesh_share_routes_only_when_they_see_the_same_rules():
    """Default routes, virtual hosts and VirtualService routes are shared between proxies of one mesh snapshot
    (memoized by what they read); a proxy in another namespace that sees its own DestinationRule (exportTo
    ".") must not get the first proxy's routes: its default route carries its hash policy."""
    hashed = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: elsewhere}\n"
              "spec:\n  host: reviews.default.svc.cluster.local\n  exportTo: ['.']\n"
              "  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}\n")
    from tests.unit.control.test_sidecar_scope import TWO_NAMESPACES  # a client `outsider` in `elsewhere`
    result = load_text(TWO_NAMESPACES + "---\n" + hashed, "config.yaml")
    mesh = build_mesh(result.resources)
    from control.translate import render_sidecar
    plain, other = render_sidecar(mesh, "client"), render_sidecar(mesh, "outsider", "elsewhere")
    route_of = lambda rendered: vhost(rendered, "9080", f"{REVIEWS}:9080")["routes"][0]["route"]  # noqa: E731
    assert "hash_policy" not in route_of(plain)
    assert route_of(other)["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    again = render_sidecar(mesh, "client")  # the first proxy again: the shared routes, unchanged
    assert route_of(again) is route_of(plain) and "hash_policy" not in route_of(again)


@pytest.mark.parametrize("source", ["sourceNamespace: default", "sourceLabels: {app: client}"])
def test_routes_that_read_the_client_are_not_shared_with_a_client_they_do_not_match(source):
    from control.translate import render_sidecar
    from tests.unit.control.test_sidecar_scope import TWO_NAMESPACES  # a client `outsider` in `elsewhere`
    mesh = build_mesh(load_text(TWO_NAMESPACES + "---\n" + vs(f"""  - match: [{{uri: {{prefix: /mine}}, {source}}}]
    route: [{{destination: {{host: reviews}}}}]
  - route: [{{destination: {{host: reviews}}}}]
""", **{"exportTo": "['*']"}), "config.yaml").resources)
    matches = lambda rendered: [r["match"] for r in vhost(rendered, "9080", f"{REVIEWS}:9080")["routes"]]  # noqa: E731
    assert matches(render_sidecar(mesh, "client")) == [{"prefix": "/mine"}, {"prefix": "/"}]
    assert matches(render_sidecar(mesh, "outsider", "elsewhere")) == [{"prefix": "/"}]


def test_shared_default_routes_are_rebuilt_when_the_memo_holds_another_cluster_spec():
    """The memo's entry is trusted only for the very ClusterSpec it was made from (an id can be reused)."""
    from control.translate.routes import RouteContext, shared_default_routes
    mesh = build_mesh(load_text(BASE, "config.yaml").resources)
    stale = [{"name": "stale"}]
    cluster = f"outbound|9080||{REVIEWS}"
    proxy = SimpleNamespace(mesh=SimpleNamespace(memo=lambda key, compute: (object(), stale), config=mesh.config),
                            namespace="default", notes=None)
    ctx = RouteContext(proxy, {}, 9080)
    (route,) = shared_default_routes(ctx, cluster)
    assert route["name"] == "default" and route["route"]["cluster"] == cluster and route is not stale[0]


MESH_RETRIES = """apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: cp, namespace: istio-system}
spec:
  meshConfig:
    defaultHttpRetryPolicy: {attempts: 5}
"""


def test_retry_policy_details():
    """istiod's retry.ConvertPolicy: meshConfig.defaultHttpRetryPolicy for routes without `retries`; attempts 1
    is one retry; numeric retryOn tokens become retriable_status_codes plus the `retriable-status-codes` token
    (once); backoff sets base and 10 x max; a consistent hash drops the previous-hosts predicate, also when
    retryIgnorePreviousHosts already did."""
    rendered = render(MESH_RETRIES + "---\n" + dr("{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}") + "---\n"
                      + vs("""  - match: [{uri: {prefix: /one}}]
    route: [{destination: {host: reviews}}]
    retries: {attempts: 1, retryOn: "5xx,503,retriable-status-codes"}
  - match: [{uri: {prefix: /ignore}}]
    route: [{destination: {host: reviews}}]
    retries: {attempts: 2, retryIgnorePreviousHosts: false, backoff: 25ms}
  - route: [{destination: {host: reviews}}]
"""))
    one, ignore, default = (r["route"] for r in vhost(rendered, "9080", f"{REVIEWS}:9080")["routes"])
    assert one["retry_policy"]["num_retries"] == 1
    assert one["retry_policy"]["retry_on"] == "5xx,retriable-status-codes"
    assert one["retry_policy"]["retriable_status_codes"] == [503]
    assert ignore["retry_policy"]["retry_back_off"] == {"base_interval": "0.025s", "max_interval": "0.25s"}
    assert all("retry_host_predicate" not in r["retry_policy"] for r in (one, ignore, default))
    assert default["retry_policy"]["num_retries"] == 5  # the mesh default


@pytest.mark.parametrize("field, value", [("perTryTimeout", "soon"), ("backoff", "later")])
def test_a_bad_retry_duration_names_the_resource_and_field(field, value):
    from control.translate.routes import RouteContext, retry_policy
    proxy = SimpleNamespace(mesh=build_mesh(load_text(BASE, "config.yaml").resources))
    with pytest.raises(TranslateError, match=rf"reviews\.yaml.*VirtualService default/reviews.*"
                                             rf"spec\.http\[0\]\.retries\.{field}: invalid duration '{value}'"):
        retry_policy(RouteContext(proxy, {}, 9080), vs_resource(), "spec.http[0].retries",
                     {"attempts": 2, field: value}, False)


@pytest.mark.parametrize("ops, authority", [
    ({"set": {":authority": "a.example"}}, "a.example"),
    ({"add": {"HOST": "b.example"}}, "b.example"),
])
def test_host_or_authority_in_a_header_operation_is_the_authority_rewrite(ops, authority):
    assert header_operations(ops) == ([], [], authority)


@pytest.mark.parametrize("route, operation", [
    ({"match": {"prefix": "/p"}, "route": {"cluster": f"outbound|9080|v1|{REVIEWS}"}}, f"{REVIEWS}:9080/p*"),
    ({"match": {"path": "/exact"}, "route": {"cluster": "outbound|9080||r"}}, "r:9080/exact"),
    ({"match": {"safe_regex": {"regex": "/r.*"}}, "route": {"cluster": "outbound|9080||r"}}, "r:9080/r.*"),
    ({"match": {}, "route": {"weighted_clusters": {}}}, "vs:80/*"),
    ({"match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster"}}, "vs:80/*"),
    ({"match": {"prefix": "/"}, "route": {"cluster": "outbound|http|v1|r"}}, "vs:80/*"),
])
def test_route_operation(route, operation):
    """istiod getRouteOperation (the route's decorator): host:port + path for one subset-key cluster, else
    VirtualService name : listener port + path."""
    from control.translate.routes import route_operation
    assert route_operation(route, "vs", 80) == operation


# --- gateways --------------------------------------------------------------------------------------------

GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["default/a.example.com", "other/b.example.com"]
  - port: {number: 8080, name: http-redirect, protocol: HTTP}
    hosts: ["c.example.com"]
    tls: {httpsRedirect: true}
"""


def gw_vs(name: str, hosts: str, body: str) -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n"
            f"  hosts: {hosts}\n  gateways: [istio-system/public]\n{body}")


def render_gw(*docs: str, gateway: str = GATEWAY):
    result = load_text(BASE + "---\n" + "---\n".join([gateway, *docs]), "config.yaml")
    assert not [f for f in result.findings if f.level.label == "Error"], [str(f) for f in result.findings]
    rendered = render_gateway(build_mesh(result.resources), "istio-ingressgateway")
    check_rendered(rendered.as_dict())
    return rendered


def test_gateway_virtual_hosts():
    rendered = render_gw(
        gw_vs("one", "[a.example.com, b.example.com]",
              "  http: [{match: [{uri: {prefix: /one}}], route: [{destination: {host: reviews}}]}]\n"),
        gw_vs("two", "[a.example.com]", "  http: [{route: [{destination: {host: reviews}}]}]\n"),
        gw_vs("three", "[a.example.com]", "  tcp: [{route: [{destination: {host: reviews}}]}]\n"))
    (a,) = by_name(rendered.routes, "http.80")["virtual_hosts"]  # b.example.com: the server wants namespace other
    assert a["name"] == "a.example.com:80" and [r["match"] for r in a["routes"]] == [{"prefix": "/one"},
                                                                                      {"prefix": "/"}]
    (c,) = by_name(rendered.routes, "http.8080")["virtual_hosts"]  # httpsRedirect without a VirtualService
    assert c["require_tls"] == "ALL" and c["domains"] == ["c.example.com", "c.example.com:8080"]
    assert c["routes"] == [{"name": "default", "match": {"prefix": "/"}, "direct_response": {"status": 404}}]


def test_header_matches_on_scheme_and_authority_are_ignored_too_and_an_inverted_one_is_kept():
    (route, _) = routes_of(vs("""  - match:
    - headers: {scheme: {exact: https}, authority: {exact: a.example}, x-a: {exact: b}}
      withoutHeaders: {authority: {exact: c.example}}
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"""))
    assert [(h["name"], h.get("invert_match", False)) for h in route["match"]["headers"]] == [
        ("authority", True), ("x-a", False)]


def test_a_match_source_namespace_is_compared_with_the_client_proxys_namespace():
    routes = routes_of(vs("""  - match: [{uri: {prefix: /mine}, sourceNamespace: default}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /theirs}, sourceNamespace: other}]
    route: [{destination: {host: reviews}}]
"""))
    assert [r["match"] for r in routes] == [{"prefix": "/mine"}]


def test_a_bare_gateway_name_in_a_match_is_in_the_virtual_services_namespace():
    local = GATEWAY.replace("{name: public, namespace: istio-system}", "{name: local, namespace: default}")
    rendered = render_gw(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: one}\nspec:\n"
        "  hosts: [a.example.com]\n  gateways: [local]\n"
        "  http: [{match: [{uri: {prefix: /one}, gateways: [local]}], route: [{destination: {host: reviews}}]}]\n",
        gateway=local)
    (a,) = by_name(rendered.routes, "http.80")["virtual_hosts"]
    assert [r["match"] for r in a["routes"]] == [{"prefix": "/one"}]


def vs_resource():
    (res,) = load_text(vs("  - route: [{destination: {host: reviews}}]\n"), "reviews.yaml").resources
    return res


@pytest.mark.parametrize("cors, expected", [
    ({"allowOrigins": [{"exact": "https://a"}], "allowOrigin": ["https://b"]},
     {"allow_origin_string_match": [{"exact": "https://a"}, {"exact": "https://b"}],
      "forward_not_matching_preflights": True}),
    ({"allowMethods": ["GET", "POST"], "allowHeaders": ["x-a"], "exposeHeaders": ["x-b", "x-c"], "maxAge": "24h",
      "allowCredentials": False, "unmatchedPreflights": "IGNORE"},
     {"allow_methods": "GET,POST", "allow_headers": "x-a", "expose_headers": "x-b,x-c", "max_age": "86400",
      "allow_credentials": False, "forward_not_matching_preflights": False}),
    ({"maxAge": "0s", "unmatchedPreflights": "FORWARD"}, {"max_age": "0", "forward_not_matching_preflights": True}),
    ({"maxAge": "1.5s", "unmatchedPreflights": "UNSPECIFIED"},
     {"max_age": "1", "forward_not_matching_preflights": True}),
])
def test_cors_policy(cors, expected):
    """istiod's translateCORSPolicy: the deprecated exact `allowOrigin` list after `allowOrigins`, lists joined
    with ",", maxAge in whole seconds, and preflights that match no origin forwarded unless IGNORE."""
    assert cors_config(vs_resource(), "spec.http[0].corsPolicy", cors) == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy", **expected,
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}}


def test_a_bad_cors_max_age_names_the_resource_and_field():
    with pytest.raises(TranslateError, match=r"reviews\.yaml.*VirtualService default/reviews.*"
                                             r"spec\.http\[0\]\.corsPolicy\.maxAge: invalid duration 'soon'"):
        cors_config(vs_resource(), "spec.http[0].corsPolicy", {"maxAge": "soon"})


@pytest.mark.parametrize("abort, expected", [
    ({"grpcStatus": "UNAVAILABLE", "percentage": {"value": 5}}, {"grpc_status": 14, "percentage": 5}),
    ({"grpcStatus": "NOT_FOUND"}, {"grpc_status": 5, "percentage": 0}),
    ({"grpcStatus": "NOT_A_CODE"}, {"grpc_status": 0, "percentage": 0}),  # Go's map lookup: 0 (validation refuses it)
    ({"httpStatus": 503, "percent": 40}, {"http_status": 503, "percentage": 0}),  # Abort has no deprecated int percent
])
def test_abort_status_and_percentage(abort, expected):
    """istiod's translateFault: grpcStatus through grpc.SupportedGRPCStatus (names as Istio spells them), the
    percentage from `percentage` only."""
    out = fault_config(vs_resource(), "spec.http[0].fault", {"abort": abort})["abort"]
    status = {k: v for k, v in expected.items() if k != "percentage"}  # the row's dict is shared: never edited
    assert out == {**status, "percentage": {"numerator": expected["percentage"] * 10000, "denominator": "MILLION"}}


@pytest.mark.parametrize("mirror, percents", [
    ("mirror: {host: reviews}\n    mirrorPercentage: {}", []),  # a percentage without a value is 0: no mirror
    ("mirror: {host: reviews}\n    mirrorPercent: 25", [25]),  # the deprecated int field
    ("mirror: {host: reviews}\n    mirrorPercent: 0", []),
    ("mirror: {host: reviews}", [100]),
    ("mirrors: [{destination: {host: reviews}, percentage: {}}, {destination: {host: reviews}}]", [100]),
])
def test_mirror_percentages(mirror, percents):
    (route,) = routes_of(vs(f"  - route: [{{destination: {{host: reviews}}}}]\n    {mirror}\n"))
    got = route["route"].get("request_mirror_policies", [])
    assert [m["runtime_fraction"]["default_value"]["numerator"] / 10000 for m in got] == percents


def test_a_mirror_to_an_unknown_host_is_noted_at_its_own_field():
    rendered = render(vs("  - route: [{destination: {host: reviews}}]\n"
                         "    mirrors: [{destination: {host: reviews}}, {destination: {host: nowhere}}]\n"))
    assert any("spec.http[0].mirrors[1].destination.host: destination nowhere.default.svc.cluster.local is not "
               "in the registry" in n for n in rendered.notes), rendered.notes


def gateway(name: str, namespace: str, servers: str) -> str:
    """A Gateway on the ingress gateway; `servers` is the YAML flow list of its servers."""
    return (f"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  selector: {{istio: ingressgateway}}\n  servers: {servers}\n")


def virtual_service(name: str, hosts: str, gateways: str, http: str, namespace: str = "default") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: "
            f"{namespace}}}\nspec:\n  hosts: {hosts}\n  gateways: {gateways}\n  http: {http}\n")


def vhost_summary(rendered, route_config: str) -> list[tuple]:
    """(name, domains, route prefixes (`-> status` for a direct response), require_tls) of each virtual host."""
    return [(v["name"], v["domains"], [r["match"].get("prefix", "") + (f" -> {r['direct_response']['status']}"
                                                                     if "direct_response" in r else "")
                                       for r in v["routes"]], v.get("require_tls"))
            for v in by_name(rendered.routes, route_config)["virtual_hosts"]]


TO_REVIEWS = "{destination: {host: reviews.default.svc.cluster.local}}"


def test_https_redirect_covers_every_server_host_with_or_without_a_virtual_service():
    """istiod: after the VirtualServices, each host of an httpsRedirect server gets `require_tls: ALL`, on its
    VirtualService's virtual host or on a new one."""
    rendered = render_gw(virtual_service("c", "[c.example.com]", "[istio-system/public]",
                                         f"[{{match: [{{uri: {{prefix: /c}}}}], route: [{TO_REVIEWS}]}}]"),
                         gateway=gateway("public", "istio-system",
                                         "[{port: {number: 80, name: http, protocol: HTTP}, hosts: [c.example.com, "
                                         "d.example.com], tls: {httpsRedirect: true}}]"))
    assert vhost_summary(rendered, "http.80") == [
        ("c.example.com:80", ["c.example.com", "c.example.com:80"], ["/c"], "ALL"),
        ("d.example.com:80", ["d.example.com", "d.example.com:80"], ["/ -> 404"], "ALL")]


def test_a_wildcard_redirect_server_and_a_port_nobody_routes():
    rendered = render_gw(gateway=gateway("public", "istio-system",
                                         "[{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], "
                                         "tls: {httpsRedirect: true}}, {port: {number: 81, name: http2, "
                                         "protocol: HTTP}, hosts: ['*']}]"))
    assert vhost_summary(rendered, "http.80") == [("*:80", ["*"], ["/ -> 404"], "ALL")]
    assert by_name(rendered.routes, "http.81")["virtual_hosts"] == [
        {"name": "blackhole:81", "domains": ["*"], "include_request_attempt_count": True,
         "routes": [{"name": "default", "match": {"prefix": "/"}, "direct_response": {"status": 404}}]}]


def test_which_virtual_services_a_gateway_server_takes():
    """Server hosts `ns/host` take VirtualServices of that namespace only, `./host` those of the gateway's own
    namespace, `*/host` any; a short VirtualService host is a service of its namespace; HTTP-less VirtualServices
    and hosts that do not intersect are skipped without ending the scan; per-match `port` and `gateways` are
    checked against this server and gateway."""
    servers = ("[{port: {number: 80, name: http, protocol: HTTP}, hosts: [other/b.example.com, x.example.com, "
               "'*/a.example.com', ./here.example.com, '*/reviews.default.svc.cluster.local']}]")
    rendered = render_gw(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a-tcp}\nspec:\n"
        "  hosts: [a.example.com]\n  gateways: [istio-system/edge]\n"
        f"  tcp: [{{route: [{TO_REVIEWS}]}}]\n",
        virtual_service("b", "[a.example.com, b.example.com]", "[istio-system/edge]",
                        f"[{{match: [{{uri: {{prefix: /on80}}, port: 80}}], route: [{TO_REVIEWS}]}}, "
                        f"{{match: [{{uri: {{prefix: /on81}}, port: 81}}], route: [{TO_REVIEWS}]}}, "
                        f"{{match: [{{uri: {{prefix: /gw}}, gateways: [istio-system/edge]}}], route: [{TO_REVIEWS}]}}]"),
        virtual_service("here", "[here.example.com]", "[istio-system/edge]", f"[{{route: [{TO_REVIEWS}]}}]"),
        virtual_service("svc", "[reviews]", "[istio-system/edge]", f"[{{route: [{TO_REVIEWS}]}}]"),
        gateway=gateway("edge", "istio-system", servers))
    assert vhost_summary(rendered, "http.80") == [
        ("a.example.com:80", ["a.example.com", "a.example.com:80"], ["/on80", "/gw"], None),
        ("reviews.default.svc.cluster.local:80",
         ["reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:80"], ["/"], None)]
    here = render_gw(virtual_service("here", "[here.example.com]", "[edge]", f"[{{route: [{TO_REVIEWS}]}}]",
                                     namespace="istio-system"),
                     gateway=gateway("edge", "istio-system", servers))
    assert [v[0] for v in vhost_summary(here, "http.80")] == ["here.example.com:80"]


# --- clusters --------------------------------------------------------------------------------------------

def test_passthrough_load_balancing_is_an_original_destination_cluster():
    cluster = cluster_of(dr("{loadBalancer: {simple: PASSTHROUGH}}"))
    assert cluster["type"] == "ORIGINAL_DST" and cluster["lb_policy"] == "CLUSTER_PROVIDED"
    assert "eds_cluster_config" not in cluster and "load_assignment" not in cluster


def test_locality_load_balancing_is_noted():
    rendered = render(dr("{loadBalancer: {localityLbSetting: {enabled: true}}}"))
    assert any("spec.trafficPolicy.loadBalancer.localityLbSetting: locality load balancing is not translated yet"
               in n for n in rendered.notes)


def protocol_options(cluster: dict) -> dict:
    return cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]


def test_connection_pool_settings():
    options = protocol_options(cluster_of(dr(
        "{connectionPool: {tcp: {maxConnectionDuration: 30s}, http: {useClientProtocol: true}}}")))
    assert options["common_http_protocol_options"] == {"max_connection_duration": "30s"}
    assert options["use_downstream_protocol_config"] == {"http_protocol_options": {}, "http2_protocol_options": {}}
    options = protocol_options(cluster_of(dr(
        "{connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 7}}}")))
    assert options["explicit_http_config"] == {"http2_protocol_options": {"max_concurrent_streams": 7}}


@pytest.mark.parametrize("lb, expected", [
    ("{consistentHash: {httpHeaderName: x, ringHash: {minimumRingSize: 2048}}}",
     {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 2048}}),
    ("{consistentHash: {httpHeaderName: x, minimumRingSize: 4096}}",  # the deprecated top-level field
     {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 4096}}),
    ("{consistentHash: {httpHeaderName: x}}", {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 1024}}),
    ("{simple: LEAST_REQUEST, warmupDurationSecs: 10s}",  # the deprecated warmup field
     {"lb_policy": "LEAST_REQUEST", "least_request_lb_config": {"slow_start_config": {"slow_start_window": "10s"}}}),
    ("{simple: ROUND_ROBIN, warmup: {duration: 5s, aggression: 2, minimumPercent: 10}}",
     {"lb_policy": "ROUND_ROBIN", "round_robin_lb_config": {"slow_start_config": {
         "slow_start_window": "5s", "aggression": {"default_value": 2.0, "runtime_key": "upstream.slow_start.aggression"},
         "min_weight_percent": {"value": 10.0}}}}),
])
def test_load_balancer_settings(lb, expected):
    cluster = cluster_of(dr(f"{{loadBalancer: {lb}}}"))
    assert {k: cluster.get(k) for k in expected} == expected


def test_passthrough_load_balancing_on_a_dns_service_entry_drops_its_endpoints():
    entry = ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\n"
             "spec: {hosts: [api.example], resolution: DNS, location: MESH_EXTERNAL, endpoints: [{address: a.example}], "
             "ports: [{number: 80, name: http, protocol: HTTP}]}\n---\n"
             "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ext}\n"
             "spec: {host: api.example, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}\n")
    cluster = cluster_of(entry, "outbound|80||api.example")
    assert (cluster["type"], cluster["lb_policy"]) == ("ORIGINAL_DST", "CLUSTER_PROVIDED")
    assert "load_assignment" not in cluster and "eds_cluster_config" not in cluster


def test_a_bad_cluster_duration_names_the_destination_rule_and_field():
    """Validation refuses such durations first; called directly (as code-built rules reach them), the translation
    still names the resource and field."""
    from control.translate.clusters import _apply_connection_pool, _apply_load_balancer
    (rule,) = load_text(dr("{loadBalancer: {simple: ROUND_ROBIN}}"), "rules.yaml").resources
    port = SimpleNamespace(protocol=SimpleNamespace(is_http2=False, is_http=True))
    with pytest.raises(TranslateError, match=r"rules\.yaml.*DestinationRule default/reviews.*"
                                             r"spec\.trafficPolicy\.loadBalancer\.warmup\.duration: invalid duration"):
        _apply_load_balancer(None, {"lb_policy": "ROUND_ROBIN"}, {"warmup": {"duration": "soon"}}, rule)
    with pytest.raises(TranslateError, match=r"rules\.yaml.*DestinationRule default/reviews.*"
                                             r"spec\.trafficPolicy\.connectionPool\.tcp\.connectTimeout: invalid duration"):
        _apply_connection_pool({}, {"tcp": {"connectTimeout": "soon"}}, port, rule)


@pytest.mark.parametrize("pool, field", [
    ({"tcp": {"maxConnectionDuration": "soon"}}, "tcp.maxConnectionDuration"),
    ({"http": {"idleTimeout": "soon"}}, "http.idleTimeout"),
    ({"tcp": {"idleTimeout": "soon"}}, "tcp.idleTimeout"),
])
def test_a_bad_connection_pool_duration_names_its_own_field(pool, field):
    from control.translate.clusters import _apply_connection_pool
    (rule,) = load_text(dr("{loadBalancer: {simple: ROUND_ROBIN}}"), "rules.yaml").resources
    port = SimpleNamespace(protocol=SimpleNamespace(is_http2=False, is_http=True))
    with pytest.raises(TranslateError, match=rf"DestinationRule default/reviews.*spec\.trafficPolicy\.connectionPool\."
                                             rf"{field.replace('.', chr(92) + '.')}: invalid duration 'soon'"):
        _apply_connection_pool({}, pool, port, rule)


def test_connection_pool_keepalive_and_a_tcp_idle_timeout():
    from control.translate.clusters import _apply_connection_pool
    (rule,) = load_text(dr("{loadBalancer: {simple: ROUND_ROBIN}}"), "rules.yaml").resources
    port = SimpleNamespace(protocol=SimpleNamespace(is_http2=False, is_http=True))
    cluster: dict = {}
    _apply_connection_pool(cluster, {"tcp": {"tcpKeepalive": {"time": "0s", "interval": "75s", "probes": 3},
                                             "idleTimeout": "30s"}}, port, rule)
    assert cluster["upstream_connection_options"] == {"tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 0,
                                                                    "keepalive_interval": 75}}
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["common_http_protocol_options"] == {"idle_timeout": "30s"}


@pytest.mark.parametrize("od, expected", [
    ({"consecutiveErrors": 4}, {"consecutive_5xx": 4, "enforcing_consecutive_5xx": 100}),  # the deprecated name
    ({"consecutive5xxErrors": 0, "consecutiveErrors": 4}, {"consecutive_5xx": 0, "enforcing_consecutive_5xx": 0}),
    ({"consecutiveGatewayErrors": 0}, {"consecutive_gateway_failure": 0, "enforcing_consecutive_gateway_failure": 0}),
    ({"consecutiveGatewayErrors": 1}, {"consecutive_gateway_failure": 1, "enforcing_consecutive_gateway_failure": 100}),
    ({"consecutiveGatewayErrors": 2}, {"consecutive_gateway_failure": 2, "enforcing_consecutive_gateway_failure": 100}),
])
def test_outlier_detection_consecutive_errors(od, expected):
    from control.translate.clusters import _apply_outlier_detection
    (rule,) = load_text(dr("{loadBalancer: {simple: ROUND_ROBIN}}"), "rules.yaml").resources
    cluster: dict = {}
    _apply_outlier_detection(cluster, od, rule)
    assert cluster["outlier_detection"] == {**expected, "enforcing_success_rate": 0}


def test_a_bad_outlier_duration_names_its_field():
    from control.translate.clusters import _apply_outlier_detection
    (rule,) = load_text(dr("{loadBalancer: {simple: ROUND_ROBIN}}"), "rules.yaml").resources
    with pytest.raises(TranslateError, match=r"spec\.trafficPolicy\.outlierDetection\.interval: invalid duration"):
        _apply_outlier_detection({}, {"interval": "soon"}, rule)


def test_zero_connection_limits_keep_envoys_defaults():
    thresholds = cluster_of(dr("{connectionPool: {tcp: {maxConnections: 0}, http: {http1MaxPendingRequests: 0, "
                               "http2MaxRequests: 0, maxRetries: 0}}}"))["circuit_breakers"]["thresholds"][0]
    assert not {"max_connections", "max_pending_requests", "max_requests", "max_retries"} & {
        k for k, v in thresholds.items() if v == 0}


def test_local_origin_failures_are_split_out():
    od = cluster_of(dr("{outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3}}"))[
        "outlier_detection"]
    assert od["split_external_local_origin_errors"] is True
    assert (od["consecutive_local_origin_failure"], od["enforcing_consecutive_local_origin_failure"]) == (3, 100)


def tls_context(cluster: dict) -> dict:
    return cluster["transport_socket"]["typed_config"]


RATINGS = ("apiVersion: v1\nkind: Service\nmetadata: {name: ratings}\n"
           "spec: {selector: {app: ratings}, ports: [{name: grpc, port: 7070}]}\n---\n"
           "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ratings}\nspec:\n"
           "  selector: {matchLabels: {app: ratings}}\n  template:\n    metadata: {labels: {app: ratings}}\n"
           "    spec: {containers: [{name: r, image: r, ports: [{containerPort: 7070}]}]}\n")


def test_client_tls_with_a_crl_and_an_h2_port():
    grpc = (RATINGS + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\n"
            "spec: {host: ratings, trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /ca.pem, caCrl: /crl.pem}}}\n")
    common = tls_context(cluster_of(grpc, "outbound|7070||ratings.default.svc.cluster.local"))["common_tls_context"]
    assert common["validation_context"]["crl"] == {"filename": "/crl.pem"}
    assert common["alpn_protocols"] == ["h2"]


def test_a_credential_name_on_a_selector_less_rule_gives_a_sidecar_no_tls():
    rendered = render(dr("{tls: {mode: SIMPLE, credentialName: reviews-ca}}"))
    assert "transport_socket" not in by_name(rendered.clusters, CLUSTER)
    assert any(f"DestinationRule default/reviews: spec.trafficPolicy.tls.credentialName: {CLUSTER}: credentialName "
               "is only used by gateways and by DestinationRules with a workloadSelector" in n
               for n in rendered.notes), rendered.notes


def test_a_missing_credential_points_at_sds_that_fails_closed():
    rule = dr("{tls: {mode: MUTUAL, credentialName: gone}}", workloadSelector="{matchLabels: {app: client}}")
    rendered = render(rule)
    common = tls_context(by_name(rendered.clusters, CLUSTER))["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "kubernetes://gone"
    assert common["combined_validation_context"]["validation_context_sds_secret_config"]["name"] == \
        "kubernetes://gone-cacert"
    assert any("DestinationRule default/reviews: spec.trafficPolicy.tls.credentialName: " in n
               and "which no one serves (it fails closed)" in n for n in rendered.notes), rendered.notes


def test_insecure_skip_verify_with_a_credential_has_an_empty_validation_context():
    secret = ("apiVersion: v1\nkind: Secret\nmetadata: {name: client-cred}\ntype: kubernetes.io/tls\n"
              "data: {tls.crt: Y2VydA==, tls.key: a2V5}\n")
    rule = dr("{tls: {mode: MUTUAL, credentialName: client-cred, insecureSkipVerify: true}}",
              workloadSelector="{matchLabels: {app: client}}")
    common = tls_context(cluster_of(secret + "---\n" + rule))["common_tls_context"]
    assert common["validation_context"] == {}  # verify nothing
    assert common["tls_certificates"] == [{"certificate_chain": {"inline_bytes": "Y2VydA=="},
                                           "private_key": {"inline_bytes": "a2V5"}}]


def test_tls_without_a_mode_is_disable():
    assert "transport_socket" not in cluster_of(dr("{tls: {sni: x.example, subjectAltNames: [x.example]}}"))


def test_istio_mutual_from_a_destination_rule_on_an_h2_port():
    """buildUpstreamClusterTLSContext ISTIO_MUTUAL: the outbound_ SNI, the destination's service accounts, and
    h2 offered on an HTTP/2 port (validation refuses sni and subjectAltNames with ISTIO_MUTUAL)."""
    grpc = (RATINGS + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\n"
            "spec: {host: ratings, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n")
    context = tls_context(cluster_of(grpc, "outbound|7070||ratings.default.svc.cluster.local"))
    assert context["sni"] == "outbound_.7070_._.ratings.default.svc.cluster.local"
    common = context["common_tls_context"]
    assert common["combined_validation_context"]["default_validation_context"] == {
        "match_subject_alt_names": [{"exact": "spiffe://cluster.local/ns/default/sa/default"}]}
    assert common["alpn_protocols"] == ["istio-peer-exchange", "istio", "h2"]


@pytest.mark.parametrize("tls, sni, validation", [
    # auto SNI and auto SAN validation: the host asked for must be the server's name
    ("{mode: SIMPLE}", REVIEWS, {"trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"},
                                 "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": REVIEWS}}]}),
    # an explicit sni turns the automatic SAN check off; explicit SANs are exact matches
    ("{mode: SIMPLE, sni: r.example}", "r.example", {"trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}}),
    ("{mode: SIMPLE, subjectAltNames: [a.example], caCertificates: /ca.pem}", REVIEWS,
     {"trusted_ca": {"filename": "/ca.pem"}, "match_subject_alt_names": [{"exact": "a.example"}]}),
])
def test_simple_tls_sni_and_validation(tls, sni, validation):
    context = tls_context(cluster_of(dr(f"{{tls: {tls}}}")))
    assert context["sni"] == sni and context["common_tls_context"]["validation_context"] == validation


def test_a_service_entrys_subject_alt_names_are_the_default_for_its_destination_rule():
    entry = ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\n"
             "spec: {hosts: [api.example], resolution: DNS, location: MESH_EXTERNAL, subjectAltNames: [san.example], "
             "ports: [{number: 443, name: tls, protocol: TLS}]}\n---\n"
             "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ext}\n"
             "spec: {host: api.example, trafficPolicy: {tls: {mode: SIMPLE}}}\n")
    validation = tls_context(cluster_of(entry, "outbound|443||api.example"))["common_tls_context"]["validation_context"]
    assert validation["match_subject_alt_names"] == [{"exact": "san.example"}]


def test_clusters_are_shared_between_proxies_only_under_the_same_destination_rule():
    """shared_outbound_cluster memoizes a cluster per (name, service, rule): a proxy in another namespace that
    sees its own DestinationRule (exportTo ".") gets its settings, and the first proxy keeps its own."""
    from control.translate import render_sidecar
    from tests.unit.control.test_sidecar_scope import TWO_NAMESPACES  # a client `outsider` in `elsewhere`
    rule = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: elsewhere}\n"
            "spec:\n  host: reviews.default.svc.cluster.local\n  exportTo: ['.']\n"
            "  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}\n")
    mesh = build_mesh(load_text(TWO_NAMESPACES + "---\n" + rule, "config.yaml").resources)
    limit = lambda rendered: by_name(rendered.clusters, CLUSTER)["circuit_breakers"]["thresholds"][0].get(  # noqa: E731
        "max_connections")
    first, other, again = (render_sidecar(mesh, "client"), render_sidecar(mesh, "outsider", "elsewhere"),
                           render_sidecar(mesh, "client"))
    assert (limit(first), limit(other), limit(again)) == (limit(first), 7, limit(first)) and limit(first) != 7


@pytest.mark.parametrize("tls, scope", [({"credentialName": "c"}, ("gateway", "gw-ns")), ({"mode": "SIMPLE"}, ()),
                                        (None, ())])
def test_a_clusters_credential_makes_it_depend_on_the_proxys_kind_and_namespace(tls, scope):
    from control.translate.clusters import credential_scope
    spec = SimpleNamespace(policy={"tls": tls} if tls is not None else None)
    assert credential_scope(SimpleNamespace(kind="gateway", namespace="gw-ns"), spec) == scope


def test_a_dns_service_entrys_endpoints_per_subset_and_its_host_when_it_has_none():
    entry = ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\n"
             "spec: {hosts: [api.example], resolution: DNS, location: MESH_EXTERNAL, "
             "ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}], "
             "endpoints: [{address: one.example, labels: {v: one}}, {address: two.example, labels: {v: two}}]}\n"
             "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ext}\n"
             "spec: {host: api.example, subsets: [{name: two, labels: {v: two}}]}\n---\n"
             "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: bare}\n"
             "spec: {hosts: [bare.example], resolution: DNS, location: MESH_EXTERNAL, "
             "ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]}\n")
    rendered = render(entry)

    def addresses(name: str) -> list[tuple[str, int]]:
        return [(e["endpoint"]["address"]["socket_address"]["address"],
                 e["endpoint"]["address"]["socket_address"]["port_value"])
                for g in by_name(rendered.clusters, name)["load_assignment"]["endpoints"] for e in g["lb_endpoints"]]
    assert addresses("outbound|80||api.example") == [("one.example", 8080), ("two.example", 8080)]
    assert addresses("outbound|80|two|api.example") == [("two.example", 8080)]  # the subset's only
    assert addresses("outbound|80||bare.example") == [("bare.example", 8080)]  # Envoy resolves the host itself


def test_inbound_ports_skip_a_named_target_port_the_workload_lacks_and_the_first_service_wins_a_port():
    from control.translate.clusters import inbound_ports
    extra = ("apiVersion: v1\nkind: Service\nmetadata: {name: reviews-alias}\n"
             "spec: {selector: {app: reviews}, ports: [{name: http-alias, port: 80, targetPort: 9080}, "
             "{name: http-named, port: 81, targetPort: missing}]}\n")
    mesh = build_mesh(load_text(BASE + "---\n" + extra, "config.yaml").resources)
    from control.translate.common import make_proxy
    proxy = make_proxy(mesh, mesh.workload("reviews-v1"), "sidecar")
    # both services expose workload port 9080: the first in host-name order (reviews-alias.default... sorts
    # before reviews.default...) wins it; the named targetPort the pod does not declare gives no port
    assert [(p.port, p.service.name, p.service_port.port) for p in inbound_ports(proxy)] == [(9080, "reviews-alias", 80)]


@pytest.mark.parametrize("field, value", [
    ("tunnel", "{protocol: CONNECT, targetHost: egress, targetPort: 8080}"),
    ("proxyProtocol", "{version: V1}"),
    ("retryBudget", "{percent: 20}"),
])
def test_traffic_policy_fields_not_translated_are_noted_at_their_field(field, value):
    rendered = render(dr(f"{{{field}: {value}}}"))
    assert any(n.endswith(f"DestinationRule default/reviews: spec.trafficPolicy.{field}: {field} is not translated yet")
               for n in rendered.notes), rendered.notes


def test_a_destination_host_two_namespaces_define_is_the_virtual_services_namespaces_service():
    """istiod resolves a Destination's host among the services visible to the rule's namespace first: with a
    ServiceEntry for api.example in `aaa` (port 8080) and one in `default` (port 80), a VirtualService in
    `default` without a port goes to the one in `default`."""
    def entry(ns: str, port: int) -> str:
        return (f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api, namespace: {ns}}}\n"
                f"spec: {{hosts: [api.example], location: MESH_EXTERNAL, resolution: DNS, "
                f"ports: [{{number: {port}, name: http, protocol: HTTP}}]}}\n")
    rendered = render(entry("aaa", 8080) + "---\n" + entry("default", 80) + "---\n" + named_vs(
        "api", "[api.example]", "  http: [{route: [{destination: {host: api.example}}]}]\n"))
    (route,) = vhost(rendered, "80", "api.example:80")["routes"]
    assert route["route"]["cluster"] == "outbound|80||api.example"


def test_a_service_entrys_addresses_are_domains_of_its_virtual_host_but_not_its_cidrs():
    entry = ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\n"
             "spec: {hosts: [api.example], addresses: [240.0.0.1, 10.1.0.0/16, 240.0.0.2], location: MESH_EXTERNAL, "
             "resolution: STATIC, endpoints: [{address: 10.1.2.3}], ports: [{number: 8080, name: http, protocol: HTTP}]}\n")
    domains = vhost(render(entry), "8080", "api.example:8080")["domains"]
    assert domains == ["api.example", "api.example:8080", "240.0.0.1", "240.0.0.1:8080", "240.0.0.2", "240.0.0.2:8080"]


def test_udp_ports_and_resolving_wildcard_hosts_get_no_cluster():
    extra = ("apiVersion: v1\nkind: Service\nmetadata: {name: dns}\n"
             "spec: {selector: {app: dns}, ports: [{name: dns, port: 53, protocol: UDP}, {name: tcp, port: 5353}]}\n"
             "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: wild}\n"
             "spec: {hosts: ['*.wild.example'], resolution: DNS, endpoints: [{address: w.example}],"
             " ports: [{number: 443, name: tls, protocol: TLS}]}\n")
    names = {c["name"] for c in render(extra).clusters}
    assert "outbound|5353||dns.default.svc.cluster.local" in names
    assert "outbound|53||dns.default.svc.cluster.local" not in names
    assert not any("wild.example" in n for n in names)


def test_mutual_tls_with_certificate_files():
    common = tls_context(cluster_of(dr("{tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}")))[
        "common_tls_context"]
    assert common["tls_certificates"] == [{"certificate_chain": {"filename": "/c.pem"},
                                           "private_key": {"filename": "/k.pem"}}]


def test_an_inbound_grpc_port_speaks_h2_to_the_app():
    cluster = by_name(render(RATINGS, workload="ratings").clusters, "inbound|7070||ratings.default.svc.cluster.local")
    assert protocol_options(cluster)["explicit_http_config"] == {"http2_protocol_options": {}}


# --- common: durations, percentages, Sidecar scope ----------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [(None, None), ("", None), (5, None), ("1sx", None), ("x1s", None),
                                           ("1m30s", 90.0), ("250ms", 0.25)])
def test_parse_seconds(text, seconds):
    from control.translate.common import parse_seconds
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("spec, legacy, percent", [
    ({"percentage": {"value": 12.5}, "percent": 3}, "percent", 12.5),
    ({"percent": 3}, "percent", 3.0),  # the deprecated int field
    ({"percent": 3}, None, 0.0),  # not read where Istio has none
    ({}, "percent", 0.0),
])
def test_percent_of(spec, legacy, percent):
    from control.translate.common import percent_of
    assert percent_of(spec, legacy_key=legacy) == percent


def sidecar(spec: str, namespace: str = "default") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: {namespace}}}"
            f"\nspec: {spec}\n")


@pytest.mark.parametrize("spec, notes", [
    ("{egress: [{bind: 127.0.0.1, hosts: ['./*']}], ingress: [{port: {number: 9080, protocol: HTTP, name: http}, "
     "defaultEndpoint: '127.0.0.1:9080'}], outboundTrafficPolicy: {mode: REGISTRY_ONLY}}",
     ["spec.egress[0]: `bind`/`captureMode` without a `port` are not translated; only `hosts` scoping is applied",
      "spec.ingress: Sidecar ingress listeners are not translated"]),
    ("{egress: [{captureMode: NONE, hosts: ['./*']}]}",
     ["spec.egress[0]: `bind`/`captureMode` without a `port` are not translated; only `hosts` scoping is applied"]),
    ("{egress: [{port: {number: 9080, protocol: HTTP, name: http}, hosts: ['./*']}, "
     "{port: {number: 5555, protocol: TCP, name: tcp}, captureMode: NONE, hosts: ['./*']}, {hosts: ['./*']}]}",
     ["spec.egress[0].port: only egress listeners with captureMode NONE and a TCP/TLS port are translated",
      "spec.egress[1].port: no service its hosts admit has port 5555"]),
])
def test_what_a_sidecar_resource_asks_and_is_not_translated_is_noted(spec, notes):
    said = "\n".join(render(sidecar(spec)).notes)
    assert all(n in said for n in notes), said


def test_a_gateway_is_not_scoped_by_a_sidecar_resource():
    """istiod: Sidecar resources scope sidecars only; a gateway sees every service exported to it even with a
    root-namespace Sidecar that imports nothing."""
    rendered = render_gw(sidecar("{egress: [{hosts: ['~/*']}]}", namespace="istio-system"))
    assert CLUSTER in {c["name"] for c in rendered.clusters}


def test_a_sidecar_outbound_policy():
    rendered = render(sidecar("{egress: [{hosts: ['./*']}], outboundTrafficPolicy: {mode: REGISTRY_ONLY}}"))
    catch_all = vhost(rendered, "9080", "block_all")
    assert catch_all["routes"][0]["direct_response"] == {"status": 502}  # the Sidecar's REGISTRY_ONLY


def test_a_tilde_egress_host_sees_nothing_and_export_to_hides_from_other_namespaces():
    rendered = render(sidecar("{egress: [{hosts: ['~/*']}]}"))
    assert [r["name"] for r in rendered.routes] == ["http_proxy"]  # no service seen: no port route config
    assert [v["name"] for v in rendered.routes[0]["virtual_hosts"]] == ["allow_any"]
    private = ("apiVersion: v1\nkind: Service\nmetadata: {name: secret, namespace: other, annotations: "
               "{networking.istio.io/exportTo: '.'}}\nspec: {selector: {app: s}, ports: [{name: http, port: 9080}]}"
               "\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r2, namespace: other}"
               "\nspec: {hosts: [reviews.default.svc.cluster.local], exportTo: ['.'], http: [{route: [{destination: "
               "{host: reviews.default.svc.cluster.local}}], timeout: 7s}]}\n")
    rendered = render(private)
    names = [v["name"] for v in by_name(rendered.routes, "9080")["virtual_hosts"]]
    assert "secret.other.svc.cluster.local:9080" not in names
    assert vhost(rendered, "9080", f"{REVIEWS}:9080")["routes"][0]["route"]["timeout"] == "0s"  # r2 not seen


# --- listeners: gateway TLS, Sidecar egress ports, extension hooks -------------------------------------------

def servers(*items: str) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tls, namespace: istio-system}\n"
            "spec:\n  selector: {istio: ingressgateway}\n  servers:\n" + "".join(f"  - {s}\n" for s in items))


def server_tls(rendered, port: int) -> dict:
    lis = by_name(rendered.listeners, f"0.0.0.0_{port}")
    return lis["filter_chains"][0]["transport_socket"]["typed_config"]


def test_gateway_server_tls_contexts():
    rendered = render_gw(gateway=servers(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL, "
        "subjectAltNames: [spiffe://td/ns/a/sa/b]}}",
        "{port: {number: 8443, name: https-files, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, "
        "serverCertificate: /s.pem, privateKey: /k.pem, caCertificates: /ca.pem, subjectAltNames: [client.example], "
        "cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]}}",
        "{port: {number: 9443, name: https-gone, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, "
        "credentialName: gone}}",
        "{port: {number: 27017, name: mongo, protocol: MONGO}, hosts: ['*']}"))
    istio = server_tls(rendered, 443)
    assert istio["require_client_certificate"] is True
    assert istio["common_tls_context"]["combined_validation_context"]["default_validation_context"] == {
        "match_subject_alt_names": [{"exact": "spiffe://td/ns/a/sa/b"}]}
    files = server_tls(rendered, 8443)["common_tls_context"]
    assert files["validation_context"] == {"trusted_ca": {"filename": "/ca.pem"},
                                           "match_subject_alt_names": [{"exact": "client.example"}]}
    assert files["tls_params"] == {"cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256"]}
    gone = server_tls(rendered, 9443)["common_tls_context"]
    assert gone["combined_validation_context"]["validation_context_sds_secret_config"]["name"] == \
        "kubernetes://gone-cacert"
    notes = "\n".join(rendered.notes)
    assert "spec.servers[3]: MONGO servers are not translated yet" in notes
    assert not any(lis["name"] == "0.0.0.0_27017" for lis in rendered.listeners)


def test_gateway_server_tls_client_validation_only_when_the_mode_asks_for_it():
    """applyServerTLSSettings: SIMPLE ignores caCertificates (no client check); MUTUAL with a credential found
    inline gets its CA and no SAN matcher when subjectAltNames is empty."""
    secret = ("apiVersion: v1\nkind: Secret\nmetadata: {name: cred, namespace: istio-system}\n"
              "type: kubernetes.io/tls\ndata: {tls.crt: Y2VydA==, tls.key: a2V5, ca.crt: Y2E=}\n")
    rendered = render_gw(secret, gateway=servers(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, "
        "serverCertificate: /s.pem, privateKey: /k.pem, caCertificates: /ca.pem}}",
        "{port: {number: 8443, name: https-cred, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, "
        "credentialName: cred}}"))
    simple = server_tls(rendered, 443)
    assert "validation_context" not in simple["common_tls_context"]
    assert not simple.get("require_client_certificate")
    mutual = server_tls(rendered, 8443)
    assert mutual["common_tls_context"]["validation_context"] == {"trusted_ca": {"inline_bytes": "Y2E="}}
    assert mutual["require_client_certificate"] is True


def test_plain_http_servers_sharing_a_port_share_one_chain():
    """Two HTTP servers on one port: one filter chain whose route (http.80) holds both servers' hosts."""
    rendered = render_gw(gateway=servers("{port: {number: 80, name: http, protocol: HTTP}, hosts: [a.example.com]}",
                                         "{port: {number: 80, name: http2, protocol: HTTP}, hosts: [b.example.com]}"))
    chains = by_name(rendered.listeners, "0.0.0.0_80")["filter_chains"]
    assert len(chains) == 1
    hcm = chains[0]["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == "http.80"


def test_a_unix_socket_egress_listener_is_named_in_notes_not_translated():
    sidecar = ("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\n"
               "spec:\n  egress:\n  - port: {number: 0}\n    bind: unix:///var/run/out.sock\n    hosts: ['*/*']\n"
               "  - port: {number: 9080, protocol: HTTP, name: http}\n    hosts: ['*/*']\n")
    rendered = render(sidecar)
    assert any("spec.egress[0].port: unix domain socket egress listeners (port 0, a unix:// bind) are not "
               "translated" in n for n in rendered.notes)
    assert not any("unix" in json.dumps(lis) for lis in rendered.listeners)


def test_extension_hooks_add_filters_and_rewrite_listeners():
    from control.translate import Options
    from control.translate.common import Extensions
    cors = {"name": "envoy.filters.http.cors",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}
    seen: list[str] = []
    kinds: list[str] = []  # the proxy each listener contributor call is for
    ext = Extensions(http_filters_authn=(lambda proxy, direction: seen.append(direction) or [],),
                     http_filters_before_router=(lambda proxy, direction: [cors] if direction == "inbound" else [],),
                     listener_contributors=(lambda proxy, lis: kinds.append(proxy.kind) or
                                            {**lis, "per_connection_buffer_limit_bytes": 4096},))
    rendered = render(RATINGS, workload="ratings", options=Options(extensions=ext))
    assert all(lis["per_connection_buffer_limit_bytes"] == 4096 for lis in rendered.listeners)
    assert kinds and set(kinds) == {"sidecar"}
    kinds.clear()
    assert {"inbound", "outbound"} <= set(seen)
    inbound = by_name(rendered.listeners, "virtualInbound")
    names = [f["name"] for ch in inbound["filter_chains"] for f in ch["filters"]
             if f["name"] == "envoy.filters.network.http_connection_manager"
             for f in f["typed_config"]["http_filters"]]
    assert names.count("envoy.filters.http.cors") == 2 * names.count("envoy.filters.http.router")  # ours + theirs
    gw = render_gateway(build_mesh(load_text(BASE + "---\n" + GATEWAY, "g.yaml").resources), "istio-ingressgateway",
                        options=Options(extensions=ext))
    assert gw.listeners and all(lis["per_connection_buffer_limit_bytes"] == 4096 for lis in gw.listeners)
    assert kinds and set(kinds) == {"router"}


def test_http_filter_contributors_add_to_the_chain_in_their_places_and_see_the_proxy():
    """Extensions.http_filters_authn go after jwt_authn/RBAC (kept), http_filters_before_router after fault and
    CORS; each is called with the proxy it configures."""
    from control.translate import Options, find_workload
    from control.translate.common import Extensions, make_proxy
    from control.translate.listeners import http_filters
    deny_all = ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: none}\n"
                "spec: {}\n")
    ext = Extensions(http_filters_authn=(lambda proxy, direction: [{"name": f"authn.{proxy.kind}"}],),
                     http_filters_before_router=(lambda proxy, direction: [{"name": f"late.{proxy.kind}"}],))
    mesh = build_mesh(load_text(BASE + "---\n" + deny_all, "p.yaml").resources)
    proxy = make_proxy(mesh, find_workload(mesh, "client"), options=Options(extensions=ext))
    assert [f["name"] for f in http_filters(proxy, "inbound")] == [
        "envoy.filters.http.rbac", "authn.sidecar", "envoy.filters.http.fault", "envoy.filters.http.cors",
        "late.sidecar", "istio.stats", "envoy.filters.http.router"]


def test_a_client_in_a_third_namespace_uses_the_rule_in_the_services_namespace():
    """istiod's lookup order for a DestinationRule: the proxy's namespace, then the service's, then the root
    namespace, then any other exported to it. The client (default) sees a rule in `other` (listed first) and one
    in the service's namespace `shop`: the service's wins."""
    extra = """
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {selector: {app: cart}, ports: [{name: http, port: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart-elsewhere, namespace: other}
spec: {host: cart.shop.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec: {host: cart.shop.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}}
"""
    cluster = cluster_of(extra, "outbound|8080||cart.shop.svc.cluster.local")
    assert cluster["lb_policy"] == "LEAST_REQUEST"


def test_two_services_of_one_host_seen_by_different_proxies_get_their_own_clusters():
    """A ServiceEntry `api.example.com` in namespace a (DNS) and another in b (STATIC), each exported to its own
    namespace only: the cluster name is the same, but a proxy in each namespace, rendered from one mesh snapshot,
    gets the cluster of the service it sees (the per-snapshot cluster cache is keyed by the service too)."""
    from control.translate import render_sidecar

    def entry(ns: str, resolution: str) -> str:
        return (f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api, namespace: {ns}}}\n"
                f"spec: {{hosts: [api.example.com], exportTo: ['.'], location: MESH_EXTERNAL, resolution: {resolution},"
                f" ports: [{{number: 443, name: tls, protocol: TLS}}], endpoints: [{{address: 10.0.0.1}}]}}\n")

    def client(ns: str) -> str:
        return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: client-{ns}, namespace: {ns}}}\n"
                f"spec:\n  selector: {{matchLabels: {{app: c}}}}\n  template:\n    metadata: {{labels: {{app: c}}}}\n"
                f"    spec: {{containers: [{{name: c, image: c}}]}}\n")

    text = "---\n".join([entry("a", "DNS"), entry("b", "STATIC"), client("a"), client("b")])
    result = load_text(text, "config.yaml")
    assert not [f for f in result.findings if f.level.label == "Error"], [str(f) for f in result.findings]
    mesh = build_mesh(result.resources)
    name = "outbound|443||api.example.com"
    types = [by_name(render_sidecar(mesh, f"client-{ns}").clusters, name)["type"] for ns in ("a", "b")]
    assert types == ["STRICT_DNS", "EDS"]
