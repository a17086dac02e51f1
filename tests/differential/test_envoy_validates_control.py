"""Real Envoy validates what the control plane emits (`envoy --mode validate`).

Every golden file (tests/golden/**.json), every sidecar and gateway that `meshctl render` produces for the
samples in examples/mesh, and the static example bootstrap go through Envoy 1.40's own validation: it runs
each extension's factory and cross-field rule, which the proto check (tests/golden/envoy_schema.py) cannot.
Bare resources sit in `control.envoy_check.validation_bootstrap`'s sidecar-like shell (ADS configured, RDS
inlined, each ClusterLoadAssignment in a STATIC cluster). Validations run two at a time (a thread pool over
subprocesses): the ~40 configs take a few seconds.
"""
from __future__ import annotations

import json
import pathlib
from concurrent.futures import ThreadPoolExecutor

import yaml

from control.cli.meshctl import main as meshctl
from control.envoy_check import check_rendered, validate, validation_bootstrap
from control.istio.load import load_paths
from control.mesh import build_mesh
from control.translate import render_gateway, render_sidecar
from tests.support.envoy import require_envoy

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = sorted((ROOT / "tests" / "golden").rglob("*.json"))
EXAMPLES = ROOT / "examples" / "mesh"
PARALLEL = 2  # the machine has two cores; Envoy validation is CPU-bound


def example_renders() -> dict[str, dict]:
    """What `meshctl render` prints for every workload of examples/mesh and for its ingress gateway."""
    mesh = build_mesh(load_paths([str(EXAMPLES)], strict=False).resources)
    out = {f"examples/{w.namespace}/{w.owner or w.name}": render_sidecar(mesh, w).as_dict()
           for w in mesh.workloads if not (w.owner or w.name).startswith("istio-")}
    out["examples/gateway"] = render_gateway(mesh, "istio-ingressgateway").as_dict()
    return out


def test_every_golden_file_and_example_render_is_accepted_by_envoy():
    binary = require_envoy()
    configs = {str(p.relative_to(ROOT)): json.loads(p.read_text()) for p in GOLDEN} | example_renders()
    assert len(configs) > 40 and any(k.startswith("examples/") for k in configs)
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = dict(zip(configs, pool.map(lambda c: check_rendered(c, binary), configs.values())))
    refused = {name: why for name, (ok, why, _) in results.items() if not ok}
    assert refused == {}
    # what the shell left out is only istio-proxy's own extension (docs/envoy-differences.md)
    assert {r for _, _, shell in results.values() for r in shell.removed} <= {"istio.stats"}


def test_the_static_example_bootstrap_is_accepted_by_envoy():
    ok, why = validate(yaml.safe_load((ROOT / "examples" / "static" / "front-proxy.yaml").read_text()),
                       require_envoy())
    assert ok, why


def test_envoy_refuses_an_extension_the_proto_check_accepts(monkeypatch):
    """The check has teeth: kept in the shell, istio-proxy's `istio.stats` filter (a valid TypedStruct to the
    proto check) is refused by upstream Envoy, so the shell must leave it out and say so."""
    import control.envoy_check as envoy_check

    monkeypatch.setattr(envoy_check, "ISTIO_PROXY_ONLY", frozenset())
    rendered = json.loads((ROOT / "tests/golden/http-matches/expected.json").read_text())
    ok, why, _ = check_rendered(rendered, require_envoy())
    assert not ok and "Didn't find a registered implementation for 'istio.stats'" in why, why


async def test_a_running_envoy_without_ads_skips_clusters_whose_eds_config_is_ads(tmp_path):
    """Why the shell configures ADS: `--mode validate` accepts `eds_config: {ads: {}}` without an
    `ads_config`, but a running Envoy skips such a cluster ("ADS must be configured to support an ADS config
    source"): what happens when real Envoy is pointed at pyproxy-control's REST-only xDS."""
    from tests.support.envoy import EnvoyProcess
    from tests.support.process import poll

    require_envoy()
    bootstrap = {"node": {"id": "sidecar~127.0.0.1~x.default~default.svc.cluster.local", "cluster": "x"},
                 "static_resources": {"clusters": [{"name": "c", "type": "EDS", "connect_timeout": "1s",
                                                    "eds_cluster_config": {"eds_config": {"ads": {}}}}]}}
    envoy = EnvoyProcess(bootstrap, tmp_path).start()
    refusal = "Skipping initialization of secondary cluster: ADS must be configured to support an ADS config source"

    async def logged() -> bool:
        return refusal in envoy.output(None)
    try:
        await poll("envoy's ADS refusal", logged, detail=envoy.output)
    finally:
        envoy.stop()


def test_validation_bootstrap_inlines_routes_and_holds_endpoints_in_static_clusters():
    rendered = {"listeners": [{"@type": "x", "name": "l", "filter_chains": [{"filters": [
        {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "rds": {"route_config_name": "r"}, "http_filters": [{"name": "istio.stats"}, {"name": "router"}]}}]}]}],
        "routes": [{"@type": "x", "name": "r", "virtual_hosts": []}],
        "clusters": [{"@type": "x", "name": "c", "type": "EDS"}],
        "endpoints": [{"@type": "x", "cluster_name": "c", "endpoints": []}]}
    shell = validation_bootstrap(rendered, {"/etc/certs/ca.pem": "/tmp/stand-in.pem"})
    hcm = shell.bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["route_config"] == {"name": "r", "virtual_hosts": []} and "rds" not in hcm
    assert [f["name"] for f in hcm["http_filters"]] == ["router"] and shell.removed == ("istio.stats",)
    names = [c["name"] for c in shell.bootstrap["static_resources"]["clusters"]]
    assert names == ["c", "eds-check|c", "xds-grpc"]
    assert shell.bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] \
        == "xds-grpc"


def test_meshctl_render_check_envoy(capsys, monkeypatch):
    binary = require_envoy()
    monkeypatch.setenv("ENVOY_BIN", str(binary))
    assert meshctl(["render", "--config-dir", str(EXAMPLES), "--workload", "reviews-v1", "--check-envoy"]) == 0
    assert "accepted" in capsys.readouterr().err
    monkeypatch.setenv("ENVOY_BIN", "/nonexistent/envoy")
    assert meshctl(["render", "--config-dir", str(EXAMPLES), "--workload", "reviews-v1", "--check-envoy"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error: --check-envoy: no Envoy binary found: set ENVOY_BIN"), err
