"""A real Prometheus beside `make demo`, scraping every proxy as Istio's Prometheus add-on does.

Istio's sample Prometheus (samples/addons/prometheus.yaml) scrapes each pod's merged metrics (port 15020, or the
Envoy stats at 15090 `/stats/prometheus`) and istiod's 15014 `/metrics`. The demo's proxies serve the same text on
their admin port's `/stats/prometheus` (Istio's standard metrics beside Envoy's own) and the control plane on its
metrics port's `/metrics`, so the scrape config below lists those, one job per kind and a `pod` label per proxy
(what Kubernetes service discovery would have added).

Which Prometheus: $PROMETHEUS_BIN, else `.prometheus/usr/bin/prometheus` (`make prometheus` unpacks Debian's
package there without installing it system-wide), else `prometheus` on PATH. `scrape_config` and `command` are pure;
`pyproxy/demo_mesh.py` starts the process with the others.
"""
from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Mapping

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
LOCAL_BINARY = REPO / ".prometheus" / "usr" / "bin" / "prometheus"
SCRAPE_INTERVAL = "2s"  # Istio's add-on uses 15s; a demo wants the graph to move while you watch


def find_prometheus() -> pathlib.Path | None:
    explicit = os.environ.get("PROMETHEUS_BIN")
    if explicit:
        return pathlib.Path(explicit) if os.access(explicit, os.X_OK) else None
    if os.access(LOCAL_BINARY, os.X_OK):
        return LOCAL_BINARY
    found = shutil.which("prometheus")
    return pathlib.Path(found) if found else None


def scrape_config(proxies: Mapping[str, int], control_metrics_port: int) -> dict:
    """Prometheus's config: job `envoy-stats` for each proxy (`pod` -> its admin port, path /stats/prometheus,
    as Istio's add-on scrapes the sidecars' 15090) and job `istiod` for the control plane's /metrics."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {"job_name": "envoy-stats", "metrics_path": "/stats/prometheus",
             "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"pod": name}}
                                for name, port in sorted(proxies.items())]},
            {"job_name": "istiod", "metrics_path": "/metrics",
             "static_configs": [{"targets": [f"127.0.0.1:{control_metrics_port}"]}]},
        ],
    }


def command(binary: pathlib.Path, workdir: pathlib.Path, port: int) -> list[str]:
    """Prometheus on 127.0.0.1:`port`, its config and data in `workdir` (gone with the demo's temp dir)."""
    return [str(binary), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]


def write_config(workdir: pathlib.Path, proxies: Mapping[str, int], control_metrics_port: int) -> pathlib.Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(scrape_config(proxies, control_metrics_port), sort_keys=False))
    return path

