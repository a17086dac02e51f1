"""The control plane's own metrics (istiod's `pilot_*` series), served on its metrics port (15014, /metrics).

Names and labels are Istio's (pilot/pkg/xds/monitoring.go, pilot/pkg/model/push_context.go):

* `pilot_xds` (gauge): proxies connected (a request in flight, long-polls included);
* `pilot_xds_pushes{type}` (counter): responses sent, type cds/eds/lds/rds;
* `pilot_total_xds_rejects{type}` (counter): responses a proxy NACKed;
* `pilot_proxy_convergence_time` (histogram, seconds): from a config or registry change until a proxy has
  acknowledged every type of the config it caused; Istio's buckets;
* `pilot_xds_push_time` (histogram, seconds): time to generate one proxy's config;
* `pilot_k8s_cfg_events{type,event}` (counter): accepted config changes per kind (event add/update/delete);
* `pilot_services`, `pilot_virt_services` (gauges);
* `galley_validation_failed` (counter): config reloads rejected because a file failed validation (Istio
  counts webhook rejections under this name); the last good config keeps serving;
* `pilot_config_errors` (gauge, this project's): error findings in the files right now (0 when they are
  good), what `meshctl analyze` would print.

Istio exports its counters without a `_total` suffix (its dashboards query `pilot_xds_pushes{type="cds"}`).
prometheus_client insists on `_total` for the counter type, so these counts are exposed as untyped families
with exactly Istio's sample names (monotonic all the same: use rate() on them); histograms are
prometheus_client's own. One `CollectorRegistry` per control plane: no global state.
"""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# pilot/pkg/xds/monitoring.go: proxy convergence buckets
CONVERGENCE_BUCKETS = (0.1, 0.5, 1, 3, 5, 10, 20, 30)
PUSH_TIME_BUCKETS = (0.01, 0.1, 0.5, 1, 3, 5, 10, 20, 30)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Counters(Collector):
    """Counters by name and label values, exposed with Istio's exact sample names."""

    def __init__(self, specs: dict[str, tuple[str, tuple[str, ...]]]):
        self._specs = specs  # name -> (help, label names)
        self._values: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in specs}

    def inc(self, name: str, *labels: str, amount: float = 1.0) -> None:
        values = self._values[name]
        values[labels] = values.get(labels, 0.0) + amount

    def value(self, name: str, *labels: str) -> float:
        return self._values[name].get(labels, 0.0)

    def collect(self) -> Iterable[Metric]:
        for name, (doc, label_names) in self._specs.items():
            family = Metric(name, doc, "unknown")  # untyped: keeps Istio's name (see module doc)
            for labels, value in sorted(self._values[name].items()):
                family.add_sample(name, dict(zip(label_names, labels)), value)
            yield family


class _Gauges(Collector):
    def __init__(self, specs: dict[str, str]):
        self._specs = specs
        self._sources: dict[str, Callable[[], float]] = {name: (lambda: 0.0) for name in specs}

    def set_source(self, name: str, source: Callable[[], float]) -> None:
        self._sources[name] = source

    def collect(self) -> Iterable[Metric]:
        for name, doc in self._specs.items():
            yield GaugeMetricFamily(name, doc, value=float(self._sources[name]()))


class ControlMetrics:
    """Everything the control plane counts. `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.counters = _Counters({
            "pilot_xds_pushes": ("Pilot build and send errors for lds, rds, cds and eds.", ("type",)),
            "pilot_total_xds_rejects": ("Total number of XDS responses from pilot rejected by proxy.", ("type",)),
            "pilot_k8s_cfg_events": ("Events from k8s config.", ("type", "event")),
            "galley_validation_failed": ("Config reloads rejected by validation (last good config kept).", ()),
        })
        self.gauges = _Gauges({
            "pilot_xds": "Number of endpoints connected to this pilot using XDS.",
            "pilot_services": "Total services known to pilot.",
            "pilot_virt_services": "Total virtual services known to pilot.",
            "pilot_config_errors": "Error findings in the config files now (0 = the files are good).",
        })
        self.registry.register(self.counters)
        self.registry.register(self.gauges)
        self.convergence = Histogram("pilot_proxy_convergence_time", "Delay in seconds between config change and "
                                     "a proxy receiving all required configuration.", buckets=CONVERGENCE_BUCKETS,
                                     registry=self.registry)
        self.push_time = Histogram("pilot_xds_push_time", "Total time in seconds Pilot takes to push lds, rds, "
                                   "cds and eds.", buckets=PUSH_TIME_BUCKETS, registry=self.registry)

    def pushed(self, xds_type: str) -> None:
        self.counters.inc("pilot_xds_pushes", xds_type)

    def rejected(self, xds_type: str) -> None:
        self.counters.inc("pilot_total_xds_rejects", xds_type)

    def config_event(self, kind: str, event: str) -> None:
        self.counters.inc("pilot_k8s_cfg_events", kind, event)

    def validation_failed(self) -> None:
        self.counters.inc("galley_validation_failed")

    def render(self) -> bytes:
        return generate_latest(self.registry)
