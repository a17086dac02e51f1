"""Istio's families on /stats/prometheus are written without prometheus_client (pyproxy.observe.stats
`families_text`, so a sidecar does not load it): the text must be prometheus_client's own, byte for byte."""
from __future__ import annotations

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from pyproxy.observe.istio_metrics import LABELS, TCP_LABELS, IstioMetrics
from pyproxy.observe.stats import MetricFamily, families_text, go_float


def _reference(families: list[MetricFamily]) -> str:
    """prometheus_client's generate_latest of the same families."""
    class Registry:
        def collect(self):
            for m in families:
                family = Metric(m.name, m.documentation, m.type)
                for sample in m.samples:
                    family.add_sample(*sample)
                yield family
    return generate_latest(Registry()).decode("utf-8")


def _families() -> list[MetricFamily]:
    requests = MetricFamily("istio_requests", "", "counter")
    requests.add_sample("istio_requests_total", {"z": "1", "a": 'quote " back\\slash\nnewline', "m": "café"}, 3)
    requests.add_sample("istio_requests_total", {}, 12345678)
    hist = MetricFamily("istio_request_duration_milliseconds", "doc with \\ and \n", "histogram")
    for le, n in (("0.5", 1), ("1", 2), ("+Inf", 2)):
        hist.add_sample("istio_request_duration_milliseconds_bucket", {"le": le, "app": "x"}, n)
    hist.add_sample("istio_request_duration_milliseconds_sum", {"app": "x"}, 1.25)
    hist.add_sample("istio_request_duration_milliseconds_count", {"app": "x"}, 2)
    odd = MetricFamily("istio_custom", "", "counter")
    odd.add_sample("istio_custom_total", {"bad-label": "v", "__reserved": "w"}, 1)  # prometheus_client escapes
    gauge = MetricFamily("some_gauge", "", "gauge")
    gauge.add_sample("some_gauge", {"a": "b"}, 0.1)
    return [requests, hist, odd, gauge]


def test_families_text_is_prometheus_clients_text():
    families = _families()
    assert families_text(families) == _reference(families)


@pytest.mark.parametrize("value", [0, 1, 2.5, 1e-9, 123456.0, 1234567.0, 12345678.9, 1e21, -3.0, float("inf"),
                                   float("-inf"), float("nan")])
def test_go_float_is_prometheus_clients_float_to_go_string(value):
    from prometheus_client.utils import floatToGoString

    assert go_float(value) == floatToGoString(value)


def test_a_live_istio_store_scrapes_as_prometheus_client_would_write_it():
    """Real series (requests, the three histograms, a custom metric, TCP counters) through IstioCollector: the
    same text both ways."""
    store = IstioMetrics()
    store.record(tuple(f"v{i}" for i in range(len(LABELS))), 0.5, 10, 1000)
    store.record(tuple(f'w"{i}' for i in range(len(LABELS))), 7123.25, 2600, 10 ** 9)
    store.record_one("requests_total", ("custom_dim",), ("x",), 1)
    store.record_tcp(tuple("t" for _ in TCP_LABELS), opened=1, sent=10)
    families = list(store.collector().collect())
    assert {f.name for f in families} >= {"istio_requests", "istio_request_bytes", "istio_tcp_sent_bytes"}
    assert families_text(families) == _reference(families)
