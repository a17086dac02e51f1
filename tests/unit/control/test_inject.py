"""`meshctl inject` for compose files: the pure transformation (control/inject.py) and its command line.

What a user relies on: every service gets a sidecar in its network namespace with the identity its labels (or
the flags) say, a token volume of its service account only, the control plane when the file has none;
injecting twice changes nothing (the shipped docker-compose.yml is its own injection); bad input names the
service and the field in one line.
"""
from __future__ import annotations

import io
import pathlib

import pytest
import yaml

from control.cli import meshctl
from control.inject import (CONTROL_PLANE, SIDECAR_FOR_LABEL, TOKENS, InjectError, InjectOptions, identity,
                            inject)

ROOT = pathlib.Path(__file__).resolve().parents[3]

APP = {"services": {
    "web": {"image": "shop/web", "expose": ["8000"], "labels": {"app": "web", "version": "v2"},
            "networks": ["front"]},
    "api": {"image": "shop/api", "ports": ["127.0.0.1:9000:9080"],
            "labels": ["mesh.pyproxy.io/namespace=shop", "mesh.pyproxy.io/service-account=api-sa"],
            "networks": ["front"]},
    "db": {"image": "postgres", "labels": {"mesh.pyproxy.io/inject": "false"}},
}, "networks": {"front": {}}}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = meshctl.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def command_of(service: dict) -> str:
    return service["command"][-1]


def test_every_service_gets_a_sidecar_in_its_network_namespace_except_opted_out():
    out = inject(APP)
    assert out["services"]["web-sidecar"]["network_mode"] == "service:web"
    assert out["services"]["api-sidecar"]["network_mode"] == "service:api"
    assert "db-sidecar" not in out["services"]
    assert out["services"]["web-sidecar"]["labels"] == {SIDECAR_FOR_LABEL: "web"}
    assert out["services"]["web"] == APP["services"]["web"]  # the app itself is untouched


@pytest.mark.parametrize("service, namespace, account, labels, port", [
    ("web", "default", "web", "app=web,version=v2", 8000),          # defaults: namespace default, SA = name
    ("api", "shop", "api-sa", "app=api,version=v1", 9080),          # list labels; container side of ports
])
def test_identity_comes_from_labels_else_defaults(service, namespace, account, labels, port):
    cmd = command_of(inject(APP)["services"][f"{service}-sidecar"])
    assert f"--namespace {namespace} --service-account {account} " in cmd
    assert f"--labels {labels} --app-port {port} " in cmd
    assert f"--name {service} " in cmd
    assert "--control https://istiod:15012" in cmd and "--prometheus-port 15090" in cmd


def test_flags_give_namespace_and_account_where_labels_do_not():
    ident = identity("web", APP["services"]["web"], InjectOptions(namespace="prod", service_account="shared"))
    assert (ident.namespace, ident.service_account) == ("prod", "shared")
    labelled = identity("api", APP["services"]["api"], InjectOptions(namespace="prod", service_account="shared"))
    assert (labelled.namespace, labelled.service_account) == ("shop", "api-sa")  # labels win over flags


def test_each_account_has_its_own_token_volume_written_once_the_control_plane_is_healthy():
    out = inject(APP)
    web, api = out["services"]["web-sidecar"], out["services"]["api-sidecar"]
    assert web["volumes"] == ["istio-token-default-web:/var/run/secrets/pyproxy:ro"]
    assert api["volumes"] == ["istio-token-shop-api-sa:/var/run/secrets/pyproxy:ro"]
    assert web["depends_on"][TOKENS] == {"condition": "service_completed_successfully"}
    assert web["depends_on"][CONTROL_PLANE] == {"condition": "service_healthy"}
    tokens = out["services"][TOKENS]
    assert "istio-token-shop-api-sa:/var/run/tokens/shop/api-sa" in tokens["volumes"]
    assert tokens["depends_on"] == {CONTROL_PLANE: {"condition": "service_healthy"}}
    assert {"istiod-ca", "istio-token-default-web", "istio-token-shop-api-sa"} <= set(out["volumes"])


def test_control_plane_is_added_on_the_apps_networks_with_the_mesh_config_mounted():
    istiod = inject(APP, InjectOptions(mesh_config="./istio"))["services"][CONTROL_PLANE]
    assert istiod["networks"] == ["front"]
    assert "./istio:/etc/pyproxy/mesh:ro" in istiod["volumes"]
    assert "--secure-port" in istiod["command"] and "healthcheck" in istiod


def test_an_existing_control_plane_is_kept():
    doc = {"services": {**APP["services"], CONTROL_PLANE: {"image": "mine"}}}
    assert inject(doc)["services"][CONTROL_PLANE] == {"image": "mine"}


def test_injecting_twice_changes_nothing():
    once = inject(APP)
    assert inject(once) == once


def test_a_new_service_added_later_gets_its_sidecar_and_keeps_the_other_tokens():
    once = inject(APP)
    once["services"]["cart"] = {"image": "shop/cart", "expose": [7000]}
    twice = inject(once)
    assert twice["services"]["cart-sidecar"]["network_mode"] == "service:cart"
    vols = twice["services"][TOKENS]["volumes"]
    assert "istio-token-default-cart:/var/run/tokens/default/cart" in vols
    assert "istio-token-shop-api-sa:/var/run/tokens/shop/api-sa" in vols


def test_the_shipped_docker_compose_file_is_its_own_injection():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert inject(doc) == doc


def test_a_file_without_control_plane_gets_the_istiod_and_token_services_the_shipped_file_runs():
    """The shipped docker-compose.yml was made by injection; its control plane and token writer are what
    injection adds (less what was added by hand: istiod's published xDS port, the gateway's token)."""
    shipped = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    apps = {k: v for k, v in shipped["services"].items() if k not in (CONTROL_PLANE, TOKENS)}
    out = inject({**shipped, "services": apps, "volumes": {}}, InjectOptions(mesh_config="./examples/mesh"))
    istiod = {k: v for k, v in shipped["services"][CONTROL_PLANE].items() if k != "ports"}
    assert out["services"][CONTROL_PLANE] == istiod
    tokens = shipped["services"][TOKENS]
    assert out["services"][TOKENS] == {**tokens, "volumes": [v for v in tokens["volumes"] if "ingressgateway" not in v]}
    assert out["volumes"] == {v: {} for v in shipped["volumes"] if "ingressgateway" not in v}


def test_the_files_own_volumes_and_token_mounts_are_kept():
    doc = {"services": {"web": {"expose": [80]},
                        TOKENS: {"image": "t", "volumes": ["istiod-ca:/var/lib/istiod:ro", "extra:/x",
                                                           "istio-token-a-b:/var/run/tokens/a/b:ro"]}},
           "volumes": {"data": {"driver": "local"}}}
    out = inject(doc)
    assert out["volumes"] == {"data": {"driver": "local"}, "istiod-ca": {}, "istio-token-a-b": {},
                              "istio-token-default-web": {}}
    assert out["services"][TOKENS]["volumes"] == [
        "istiod-ca:/var/lib/istiod:ro", "extra:/x", "istio-token-a-b:/var/run/tokens/a/b:ro",
        "istio-token-default-web:/var/run/tokens/default/web"]


@pytest.mark.parametrize("service, port", [
    ({"expose": ["9080/tcp"]}, 9080),
    ({"ports": [{"target": 8080, "published": 80}]}, 8080),
    ({"expose": [], "ports": ["127.0.0.1:8080:9080/tcp"]}, 9080),
    ({"expose": [1]}, 1),
    ({"expose": [65535]}, 65535),
    ({"expose": [80], "labels": ["mesh.pyproxy.io/app-port=7000"]}, 7000),
])
def test_the_app_port_is_the_container_side_of_the_first_port(service, port):
    assert identity("web", service, InjectOptions()).app_port == port


def test_identity_of_a_service_with_malformed_labels_names_the_service():
    with pytest.raises(InjectError, match="^service 'web': field 'labels' must be a map or a list, not int$"):
        identity("web", {"expose": [80], "labels": 3}, InjectOptions())


def test_labels_without_values_count_as_unset():
    ident = identity("web", {"expose": [80], "labels": {"app": None, "version": None, "tier": None}},
                     InjectOptions())
    assert (ident.app, ident.version, ident.labels) == ("web", "v1", "app=web,version=v1")
    listed = identity("web", {"expose": [80], "labels": ["app", "version=v3=rc1"]}, InjectOptions())
    assert (listed.app, listed.version) == ("web", "v3=rc1")  # a `k=v` item splits at its first `=`, as compose


@pytest.mark.parametrize("doc, message", [
    ({"services": {"web": {"image": "x"}}},
     "service 'web': no app port: set field 'expose' (or 'ports', or label mesh.pyproxy.io/app-port)"),
    ({"services": {"web": {"expose": ["http"]}}}, "service 'web': field 'expose': 'http' is not a port"),
    ({"services": {"web": {"ports": ["8080:0"]}}}, "service 'web': field 'ports': '8080:0' is not a port"),
    ({"services": {"web": {"expose": [80], "labels": {"mesh.pyproxy.io/app-port": "99999"}}}},
     "service 'web': field 'labels.mesh.pyproxy.io/app-port': '99999' is not a port"),
    ({"services": {"web": {"expose": [80], "labels": {"mesh.pyproxy.io/app-port": "65536"}}}},
     "service 'web': field 'labels.mesh.pyproxy.io/app-port': '65536' is not a port"),
    ({"services": {"web": {"expose": [80], "labels": {"mesh.pyproxy.io/namespace": "Shop_1"}}}},
     "service 'web': namespace 'Shop_1' is not a DNS-1123 label (lowercase letters, digits, '-')"),
    ({"services": {"web": {"expose": [80], "labels": {"mesh.pyproxy.io/service-account": "-sa"}}}},
     "service 'web': service account '-sa' is not a DNS-1123 label (lowercase letters, digits, '-')"),
    ({"services": {"web": {"expose": [80], "network_mode": "host"}}},
     "service 'web': field 'network_mode' is set ('host'): a sidecar needs the service's own network namespace "
     "(label mesh.pyproxy.io/inject: \"false\" skips it)"),
    ({"services": {"web": {"expose": [80], "labels": "app=web"}}},
     "service 'web': field 'labels' must be a map or a list, not str"),
    ({"services": {"web": ["not", "a", "map"]}}, "service 'web': must be a map, not list"),
    ({"services": {"web": {"expose": [80]}, "web-sidecar": {"image": "mine"}}},
     "service 'web': its sidecar's name 'web-sidecar' is taken by another service"),
    ({"version": "3"}, "not a compose file: no 'services' map"),
    ({"services": {}}, "not a compose file: no 'services' map"),
    ({"services": ["web"]}, "not a compose file: no 'services' map"),
    (["a", "list"], "not a compose file: no 'services' map"),
])
def test_bad_input_names_the_service_and_the_field(doc, message):
    with pytest.raises(InjectError) as err:
        inject(doc)
    assert str(err.value) == message


# ---------------------------------------------------------------- the command line

def write(tmp_path: pathlib.Path, doc) -> pathlib.Path:
    path = tmp_path / "app-compose.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_cli_prints_the_injected_file_and_writes_it_with_o(tmp_path):
    src = write(tmp_path, APP)
    code, out, _ = run("inject", "-f", str(src))
    assert code == 0 and yaml.safe_load(out) == inject(APP)
    dest = tmp_path / "out.yml"
    code, out, err = run("inject", "-f", str(src), "-o", str(dest))
    assert code == 0 and out == ""
    assert yaml.safe_load(dest.read_text()) == inject(APP)
    assert "web-sidecar" in err and "api-sidecar" in err


def test_cli_dry_run_shows_a_unified_diff_and_writes_nothing(tmp_path):
    src = write(tmp_path, APP)
    before = src.read_text()
    code, out, _ = run("inject", "-f", str(src), "--dry-run")
    assert code == 0
    assert out.startswith(f"--- {src}\n+++ {src} (injected)\n")
    assert "+  web-sidecar:" in out and "+    network_mode: service:web" in out
    assert src.read_text() == before
    run("inject", "-f", str(src), "-o", str(src))
    code, out, _ = run("inject", "-f", str(src), "--dry-run")
    assert (code, out) == (0, f"{src}: already injected, nothing to change\n")


def test_cli_flags_set_namespace_and_service_account(tmp_path):
    src = write(tmp_path, {"services": {"web": {"expose": [80]}}})
    code, out, _ = run("inject", "-f", str(src), "-n", "prod", "--service-account", "frontend")
    assert code == 0
    assert "--namespace prod --service-account frontend " in command_of(yaml.safe_load(out)["services"]["web-sidecar"])


@pytest.mark.parametrize("content, message", [
    (b"", "empty: nothing to inject"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file"),
    (b"services: [unclosed", "not valid YAML"),
    (b"services:\n  web: {image: x}\n", "service 'web': no app port"),
])
def test_cli_bad_files_are_one_line_and_exit_1(tmp_path, content, message):
    path = tmp_path / "bad.yml"
    path.write_bytes(content)
    code, out, err = run("inject", "-f", str(path))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_cli_missing_file_and_directory_are_one_line(tmp_path):
    for path, message in ((tmp_path / "nope.yml", "No such file"), (tmp_path, "is a directory")):
        code, _, err = run("inject", "-f", str(path))
        assert code == 1 and err.count("\n") == 1 and message in err, err
