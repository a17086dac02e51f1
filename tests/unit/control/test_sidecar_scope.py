"""Which services and VirtualServices a proxy sees (control/translate/common.py: Sidecar egress hosts, exportTo),
checked on the pure scope objects and on the Envoy config they lead to."""
from __future__ import annotations

import pytest

from control.istio.load import load_text
from control.mesh import build_mesh
from control.translate import find_workload
from control.translate.common import EgressHost, egress_admits, make_proxy
from tests.unit.control.test_translate import BASE, render, vhost

REVIEWS = "reviews.default.svc.cluster.local"


@pytest.mark.parametrize("entry, namespace, host", [
    ("./reviews", ".", REVIEWS),  # a short name is resolved in the Sidecar's namespace
    ("*/reviews.default.svc.cluster.local", "*", REVIEWS),
    ("default/*.example.com", "default", "*.example.com"),
    ("~/*", "*", "*"),  # `~/host`: excluded, in any namespace
    ("~elsewhere/*", "elsewhere", "*"),
])
def test_egress_host_entries_parse_as_namespace_slash_host(entry, namespace, host):
    parsed = EgressHost.parse(entry, 3, "default", "cluster.local")
    assert (parsed.namespace, parsed.host, parsed.listener, parsed.excluded) == \
        (namespace, host, 3, entry.startswith("~"))


def test_egress_host_short_names_take_the_mesh_dns_domain():
    assert EgressHost.parse("./reviews", 0, "prod", "corp.internal").host == "reviews.prod.svc.corp.internal"


@pytest.mark.parametrize("entry, obj_ns, host, virtual_service, admitted", [
    ("./reviews.default.svc.cluster.local", "default", REVIEWS, False, True),
    ("./reviews.default.svc.cluster.local", "other", REVIEWS, False, False),  # `.` is the Sidecar's namespace
    ("*/*.example.com", "other", "api.example.com", False, True),
    # a service host must fall within the entry's (istiod hostClassification.Matches: SubsetOf) ...
    ("*/api.example.com", "other", "*.example.com", False, False),
    ("*/*.api.example.com", "other", "*.example.com", False, False),
    # ... a VirtualService host need only overlap it (VSMatches: host.Name.Matches, both ways)
    ("*/api.example.com", "other", "*.example.com", True, True),
    ("*/*.api.example.com", "other", "*.example.com", True, True),
    ("*/*.example.com", "other", "api.example.com", True, True),
    ("*/api.example.com", "other", "web.example.com", True, False),
    ("~/*", "other", "api.example.com", True, False),  # an exclusion admits nothing
])
def test_egress_entries_admit_service_and_virtual_service_hosts(entry, obj_ns, host, virtual_service, admitted):
    parsed = EgressHost.parse(entry, 0, "default", "cluster.local")
    if virtual_service:
        assert parsed.admits("default", obj_ns, host, True) is admitted
        assert egress_admits((parsed,), "default", obj_ns, host, virtual_service=True) is admitted
    else:  # services are what the callers ask about by default
        assert parsed.admits("default", obj_ns, host) is admitted
        assert egress_admits((parsed,), "default", obj_ns, host) is admitted


TWO_NAMESPACES = BASE + """---
apiVersion: apps/v1
kind: Deployment
metadata: {name: outsider, namespace: elsewhere}
spec:
  selector: {matchLabels: {app: outsider}}
  template:
    metadata: {labels: {app: outsider}}
    spec: {containers: [{name: c, image: c}]}
"""


def virtual_service(name: str, namespace: str, hosts: str, export_to: str = "") -> str:
    export = f", exportTo: {export_to}" if export_to else ""
    return (f"---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: "
            f"{namespace}}}\nspec: {{hosts: {hosts}{export}, http: [{{route: [{{destination: {{host: {REVIEWS}}}}}], "
            f"timeout: 3s}}]}}\n")


SCOPED = (TWO_NAMESPACES
          + "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\n"
            f"spec: {{egress: [{{hosts: ['./{REVIEWS}']}}]}}\n"
          + virtual_service("short", "default", "[reviews]", "['.']")  # short host, exported to its own namespace
          + virtual_service("named", "default", "[reviews.default.svc.cluster.local]", "[default]")
          + virtual_service("wild", "default", "['*.default.svc.cluster.local']")  # overlaps the imported host
          + virtual_service("private", "elsewhere", f"[{REVIEWS}]", "['.']")
          + virtual_service("unrelated", "default", "[ratings.default.svc.cluster.local]"))


def test_a_sidecar_sees_the_virtual_services_its_egress_hosts_import_and_that_are_exported_to_it():
    mesh = build_mesh(load_text(SCOPED, "scope.yaml").resources)
    client = make_proxy(mesh, find_workload(mesh, "client"))
    assert [vs.name for vs in client.mesh_virtual_services()] == ["short", "named", "wild"]
    outsider = make_proxy(mesh, find_workload(mesh, "outsider", "elsewhere"))  # no Sidecar: every exported one
    assert sorted(vs.name for vs in outsider.mesh_virtual_services()) == ["private", "unrelated", "wild"]
    # the scope is part of the memo key: asking for the client again still gives its own view
    assert [vs.name for vs in make_proxy(mesh, find_workload(mesh, "client")).mesh_virtual_services()] == \
        ["short", "named", "wild"]


def test_a_virtual_service_on_a_short_host_routes_the_service_for_a_scoped_sidecar():
    rendered = render(SCOPED.removeprefix(BASE + "---\n"))
    route = vhost(rendered, "9080", f"{REVIEWS}:9080")["routes"][0]
    assert route["metadata"]["filter_metadata"]["istio"]["config"].endswith("/virtual-service/short")  # the first one wins
    assert route["route"]["timeout"] == "3s"


def test_each_proxy_sees_the_services_of_its_own_scope_from_one_snapshot():
    mesh = build_mesh(load_text(SCOPED + "---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings}\n"
                                         "spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}\n",
                                "scope.yaml").resources)
    client = make_proxy(mesh, find_workload(mesh, "client"))
    outsider = make_proxy(mesh, find_workload(mesh, "outsider", "elsewhere"))
    assert [s.hostname for s in client.visible_services()] == [REVIEWS]
    assert sorted(s.hostname for s in outsider.visible_services()) == ["ratings.default.svc.cluster.local", REVIEWS]
    assert [s.hostname for s in make_proxy(mesh, find_workload(mesh, "client")).visible_services()] == [REVIEWS]


@pytest.mark.parametrize("api_version, kind, path", [
    ("networking.istio.io/v1beta1", "DestinationRule", "/apis/networking.istio.io/v1/namespaces/ns/destination-rule/r"),
    ("security.istio.io/v1", "AuthorizationPolicy", "/apis/security.istio.io/v1/namespaces/ns/authorization-policy/r"),
    ("v1", "VirtualService", "/apis/networking.istio.io/v1/namespaces/ns/virtual-service/r"),  # no group: Istio's
])
def test_config_path_names_the_group_kind_namespace_and_name(api_version, kind, path):
    from control.istio.resources import Resource
    from control.translate.common import config_path
    assert config_path(Resource(api_version, kind, "r", "ns", {})) == path


@pytest.mark.parametrize("configured, envoy", [("1m", "60s"), ("250ms", "0.25s"), ("soon", "10s")])
def test_connect_timeout_is_mesh_config_or_istios_ten_seconds(configured, envoy):
    from types import SimpleNamespace

    from control.translate.common import connect_timeout
    assert connect_timeout(SimpleNamespace(mesh=SimpleNamespace(config=SimpleNamespace(
        connect_timeout=configured)))) == envoy
