"""Observability cost: pyproxy with Istio's metrics, traces and an access log against pyproxy with none.

    .venv/bin/python benchmarks/telemetry_bench.py        # about 90 s; --duration / --rounds to change

Same backend, load tool and request; configs run one at a time, alternating (routes_bench.py's runner), and the
table shows each config's median round and its ratio to `plain`:
* `plain`: the engine benchmark's bootstrap (benchmarks/configs.py): the router only, no access log;
* `metrics`: Istio's stats filter (`istio.stats`, as control/translate/listeners.py emits it, before the router)
  on an INBOUND listener with a sidecar's node metadata: every request updates `istio_requests_total`, the
  duration and size histograms (reporter destination);
* `metrics+trace-1%`: the same, plus HCM `tracing` with the OpenTelemetry provider (OTLP/HTTP) and
  `random_sampling` 1 %, Istio's default: 99 requests in 100 only propagate headers, 1 makes a span that the
  batch exporter sends to a collector (here the bench's backend, which answers 200 to the export POST);
* `metrics+trace-100%`: every request makes and exports a span;
* `access-log`: no metrics; Istio's default text access log (`meshConfig.accessLogFile`, the
  control plane's format) written to a file.
Target (the observability issue): metrics + 1 % tracing costs at most 15 % of `plain`'s requests/s.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import configs, routes_bench  # noqa: E402
from control.translate.accesslog import FILE_ACCESS_LOG, log_format  # noqa: E402
from control.translate.listeners import istio_stats_filter  # noqa: E402

PATH = "/api/orders/42"
NODE = {"id": "sidecar~127.0.0.1~bench-v1.default~default.svc.cluster.local", "cluster": "bench.default",
        "metadata": {"NAME": "bench-v1", "NAMESPACE": "default", "SERVICE_ACCOUNT": "bench", "CLUSTER_ID": "Kubernetes",
                     "LABELS": {"app": "bench", "version": "v1"}}}
OTEL_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
_LOG_DIR = tempfile.mkdtemp(prefix="telemetry-bench-")
atexit.register(shutil.rmtree, _LOG_DIR, True)


def _hcm(bootstrap: dict) -> dict:
    return bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def telemetry_bootstrap(*, listen_port: int, admin_port: int, backend_port: int, metrics: bool = True,
                        sampling: float | None = None, access_log: bool = False) -> dict:
    """configs.pyproxy_bootstrap made a sidecar's inbound side: node metadata, INBOUND, and what is asked."""
    b = configs.pyproxy_bootstrap(listen_port=listen_port, admin_port=admin_port, backend_port=backend_port)
    b["node"] = NODE
    listener = b["static_resources"]["listeners"][0]
    listener["traffic_direction"] = "INBOUND"
    hcm = _hcm(b)
    if metrics:
        hcm["http_filters"] = [istio_stats_filter(), *hcm["http_filters"]]
    if sampling is not None:
        b["static_resources"]["clusters"].append({
            "name": "otel-collector", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "otel-collector", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": backend_port}}}}]}]}})
        hcm["tracing"] = {
            "random_sampling": {"value": sampling}, "client_sampling": {"value": 100.0},
            "overall_sampling": {"value": 100.0},
            "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
                "@type": OTEL_TYPE, "service_name": "bench.default",
                "http_service": {"http_uri": {"uri": f"http://127.0.0.1:{backend_port}/v1/traces",
                                              "cluster": "otel-collector", "timeout": "3s"}}}}}
    if access_log:
        hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {  # as meshConfig accessLogFile
            "@type": FILE_ACCESS_LOG, "path": os.path.join(_LOG_DIR, f"access-{listen_port}.log"),
            "log_format": log_format("TEXT", "")}}]
    return b


def _config(**kw):
    return lambda **ports: telemetry_bootstrap(**ports, **kw)


CONFIGS = {
    "plain": ("no metrics, no tracing, no access log (the engine benchmark's config)", configs.pyproxy_bootstrap),
    "metrics": ("istio.stats on an INBOUND listener (Istio's standard metrics)", _config()),
    "metrics+trace-1%": ("istio.stats + OpenTelemetry tracing, random_sampling 1 % (Istio's default)",
                         _config(sampling=1.0)),
    "metrics+trace-100%": ("istio.stats + OpenTelemetry tracing, every request sampled", _config(sampling=100.0)),
    "access-log": ("Istio's default text access log to a file, no metrics", _config(metrics=False, access_log=True)),
}


def sanity_check(name: str, port: int) -> None:
    routes_bench.expect_answer(name, port, PATH, 200)


SUITE = routes_bench.Suite("telemetry-bench", CONFIGS, PATH, sanity_check,
                           "pyproxy throughput: Istio metrics, tracing at 1 % and 100 %, access log, vs all off")


if __name__ == "__main__":
    sys.exit(routes_bench.main(sys.argv[1:], SUITE))
