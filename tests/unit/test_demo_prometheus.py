"""The demo's Prometheus scrape config (pyproxy/demo_prometheus.py): what it scrapes, as Istio's add-on would."""
from __future__ import annotations

import pathlib

import yaml

from pyproxy import demo_prometheus


def test_every_proxy_is_scraped_on_its_admin_stats_with_a_pod_label_and_the_control_plane_on_metrics():
    config = demo_prometheus.scrape_config({"reviews-v1": 1001, "details-v1": 1002}, 2000)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["envoy-stats"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy-stats"]["static_configs"] == [
        {"targets": ["127.0.0.1:1002"], "labels": {"pod": "details-v1"}},
        {"targets": ["127.0.0.1:1001"], "labels": {"pod": "reviews-v1"}}]
    assert jobs["istiod"] == {"job_name": "istiod", "metrics_path": "/metrics",
                              "static_configs": [{"targets": ["127.0.0.1:2000"]}]}
    assert config["global"]["scrape_interval"] == "2s"


def test_the_command_keeps_everything_in_the_work_directory_and_on_loopback(tmp_path: pathlib.Path):
    path = demo_prometheus.write_config(tmp_path / "prom", {"a": 1}, 2)
    assert yaml.safe_load(path.read_text()) == demo_prometheus.scrape_config({"a": 1}, 2)
    argv = demo_prometheus.command(pathlib.Path("/bin/prometheus"), tmp_path / "prom", 9999)
    assert argv == ["/bin/prometheus", f"--config.file={tmp_path}/prom/prometheus.yml",
                    f"--storage.tsdb.path={tmp_path}/prom/tsdb", "--web.listen-address=127.0.0.1:9999",
                    "--log.level=warn"]


def test_prometheus_bin_names_the_binary_and_a_missing_one_is_none(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_BIN", str(tmp_path / "nothing"))
    assert demo_prometheus.find_prometheus() is None
    exe = tmp_path / "prom"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PROMETHEUS_BIN", str(exe))
    assert demo_prometheus.find_prometheus() == exe
