"""The compose mesh's files that this machine cannot run: Grafana and Jaeger (profile `observability`; their images
come from Docker Hub), checked by structure, and the Prometheus config against the compose services.

Why structural checks: a wrong datasource uid, a dashboard query on a label the proxies never emit, or a mount of a
file that is not in the repository fails only when a real user starts the profile. These tests tie each config to
what it refers to: the compose file's services and ports, the provisioning paths, and the metric and label names
pyproxy exports (pyproxy/observe/istio_metrics.py).
"""
from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml

from pyproxy.observe.istio_metrics import LABELS

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DEPLOY = ROOT / "deploy"
ISTIO_METRICS = {"istio_requests_total", "istio_request_duration_milliseconds_bucket", "istio_request_bytes_sum",
                 "istio_response_bytes_sum", "istio_request_duration_milliseconds_sum"}


def mounts(service: str) -> dict[str, str]:
    """target -> source of a service's bind mounts (sources starting with ./)."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = source
    return out


def test_every_bind_mount_of_the_compose_file_exists_in_the_repository():
    for name in SERVICES:
        for target, source in mounts(name).items():
            assert (ROOT / source).exists(), f"service {name}: {source} (mounted at {target}) is not in the repo"


def test_jaeger_and_grafana_are_only_in_the_observability_profile():
    profiled = {name for name, s in SERVICES.items() if s.get("profiles")}
    assert profiled == {"jaeger", "grafana"}
    for name in profiled:
        assert SERVICES[name]["profiles"] == ["observability"]


def test_jaeger_receives_otlp_and_publishes_only_on_loopback():
    jaeger = SERVICES["jaeger"]
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    ports = jaeger["ports"]
    assert all(p.startswith("127.0.0.1:") for p in ports)
    assert {p.rsplit(":", 1)[1] for p in ports} == {"16686", "4317", "4318"}  # UI, OTLP gRPC, OTLP HTTP


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_the_compose_prometheus():
    grafana = mounts("grafana")
    assert grafana["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/istio.yml").read_text())["providers"][0]
    assert provider["type"] == "file"
    assert grafana[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    sources = {d["uid"]: d for d in
               yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]}
    prom = sources["prometheus"]
    assert prom["type"] == "prometheus" and prom["isDefault"] is True
    assert prom["url"] == "http://prometheus:9090" and "--web.listen-address=:9090" in SERVICES["prometheus"]["command"]
    assert sources["jaeger"]["url"] == "http://jaeger:16686"
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (DEPLOY / "grafana/dashboards" / pathlib.Path(home).name).exists()


DASHBOARD = json.loads((DEPLOY / "grafana/dashboards/istio-mesh.json").read_text())


def test_dashboard_is_a_grafana_dashboard_with_distinct_panels_on_a_grid():
    assert DASHBOARD["uid"] and DASHBOARD["title"] and isinstance(DASHBOARD["schemaVersion"], int)
    panels = DASHBOARD["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 4
    for p in panels:
        assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["targets"] and len({t["refId"] for t in p["targets"]}) == len(p["targets"])


@pytest.mark.parametrize("panel", DASHBOARD["panels"], ids=lambda p: p["title"])
def test_dashboard_queries_use_the_provisioned_datasource_and_metrics_and_labels_pyproxy_exports(panel):
    assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
    for target in panel["targets"]:
        expr = target["expr"]
        assert expr.count("(") == expr.count(")"), expr
        metrics = set(re.findall(r"\b(istio_[a-z_]+)\b", expr))
        assert metrics and metrics <= ISTIO_METRICS, expr
        used = set(re.findall(r"by \(([^)]*)\)", expr))
        labels = {label.strip() for group in used for label in group.split(",")} - {"le"}
        labels |= set(re.findall(r"([a-z_]+)(?:=|!=|=~|!~)\"", expr))
        assert labels <= set(LABELS), f"{expr}: {labels - set(LABELS)} are not Istio labels pyproxy emits"
        for legend_label in re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")):
            assert legend_label in labels, f"legend {legend_label} is not grouped by in {expr}"


def test_prometheus_scrapes_every_proxy_on_15090_and_the_control_plane():
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    envoy = jobs["envoy-stats"]
    assert envoy["metrics_path"] == "/stats/prometheus"
    targets = {t for sc in envoy["static_configs"] for t in sc["targets"]}
    # a sidecar shares its app's network namespace: it is scraped at the app's name
    proxies = {s["network_mode"].split(":", 1)[1] for s in SERVICES.values()
               if str(s.get("network_mode", "")).startswith("service:")} | {"ingressgateway"}
    assert targets == {f"{name}:15090" for name in proxies}
    for name in proxies - {"ingressgateway"}:
        assert "--prometheus-port 15090" in SERVICES[f"{name}-sidecar"]["command"][-1]
    assert "--prometheus-port 15090" in SERVICES["ingressgateway"]["command"][-1]
    assert {t for sc in jobs["istiod"]["static_configs"] for t in sc["targets"]} == {"istiod:15014"}
    assert mounts("prometheus")["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
