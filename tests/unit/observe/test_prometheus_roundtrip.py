"""/stats/prometheus parsed back: names, labels, types and values, in Envoy's own text format.

Envoy writes `# TYPE <exact name> counter` for every counter, with or without `_total` (checked against Envoy
1.40 in tests/differential/test_admin_stats_differential.py). prometheus_client's parser folds
`envoy_cluster_upstream_rq_total` and `envoy_cluster_upstream_rq` into one OpenMetrics family, so these tests
read the text format (0.0.4) with the small parser below, keyed by the name on the `# TYPE` line.
"""
import re

import pytest

from pyproxy.observe.stats import DEFAULT_BUCKETS, Stats, TagExtractor, render_prometheus

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def scrape(stats: Stats, **kwargs) -> dict:
    """family name (as on its `# TYPE` line) -> (type, {(sample name, frozenset(labels)): value})."""
    families: dict = {}
    current = None
    for line in render_prometheus(stats, **kwargs).splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name not in families, f"family {name} written twice"
            current = families[name] = (typ, {})
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m and current is not None, line
        lbls = frozenset((k, _unescape(v)) for k, v in LABEL.findall(m.group(2) or ""))
        current[1][(m.group(1), lbls)] = float(m.group(3))
    return families


def store() -> Stats:
    stats = Stats()
    stats.scope("cluster.backend").counter("upstream_rq_total").inc(7)
    stats.scope("cluster.other").counter("upstream_rq_total").inc(2)
    stats.counter("cluster.backend.upstream_rq_200").inc(6)
    stats.counter("cluster.backend.upstream_rq_503").inc(1)
    stats.counter("cluster.backend.upstream_cx_connect_fail").inc(4)
    stats.gauge("cluster.backend.upstream_rq_active").set(3)
    stats.counter("http.ingress_http.downstream_rq_2xx").inc(5)
    stats.counter("http.ingress_http.downstream_rq_5xx").inc(1)
    stats.counter("listener.0.0.0.0_15001.downstream_cx_total").inc(9)
    stats.gauge("server.live").set(1)
    h = stats.histogram("cluster.backend.upstream_rq_time")
    for v in (0.3, 3, 3, 7, 120, 4_000_000):
        h.record(v)
    return stats


def labels(**kw) -> frozenset:
    return frozenset(kw.items())


def test_a_counter_ending_in_total_is_a_prometheus_counter_with_the_cluster_as_a_label():
    typ, samples = scrape(store())["envoy_cluster_upstream_rq_total"]
    assert typ == "counter"
    assert samples == {
        ("envoy_cluster_upstream_rq_total", labels(envoy_cluster_name="backend")): 7,
        ("envoy_cluster_upstream_rq_total", labels(envoy_cluster_name="other")): 2,
    }


def test_response_codes_become_a_label_on_one_family():
    # Envoy's name is envoy_cluster_upstream_rq (no _total): exported under that exact name, a counter.
    typ, samples = scrape(store())["envoy_cluster_upstream_rq"]
    assert typ == "counter"
    assert samples == {
        ("envoy_cluster_upstream_rq", labels(envoy_cluster_name="backend", envoy_response_code="200")): 6,
        ("envoy_cluster_upstream_rq", labels(envoy_cluster_name="backend", envoy_response_code="503")): 1,
    }


def test_the_text_says_counter_for_every_counter_as_envoy_does():
    text = render_prometheus(store())
    assert "# TYPE envoy_cluster_upstream_rq_total counter\n" in text
    assert "# TYPE envoy_cluster_upstream_cx_connect_fail counter\n" in text
    assert "untyped" not in text and "# HELP" not in text
    assert "# TYPE envoy_cluster_upstream_rq_time histogram\n" in text
    assert "# TYPE envoy_server_live gauge\n" in text


def test_the_http_response_code_class_is_extracted_as_envoy_does():
    families = scrape(store())
    typ, samples = families["envoy_http_downstream_rq_xx"]
    assert typ == "counter"
    assert samples == {
        ("envoy_http_downstream_rq_xx",
         labels(envoy_response_code_class="2", envoy_http_conn_manager_prefix="ingress_http")): 5,
        ("envoy_http_downstream_rq_xx",
         labels(envoy_response_code_class="5", envoy_http_conn_manager_prefix="ingress_http")): 1,
    }


def test_counters_without_total_keep_envoys_exact_name():
    families = scrape(store())
    assert families["envoy_cluster_upstream_cx_connect_fail"] == (
        "counter", {("envoy_cluster_upstream_cx_connect_fail", labels(envoy_cluster_name="backend")): 4})


def test_gauges_and_listener_addresses():
    families = scrape(store())
    assert families["envoy_cluster_upstream_rq_active"] == (
        "gauge", {("envoy_cluster_upstream_rq_active", labels(envoy_cluster_name="backend")): 3})
    assert families["envoy_server_live"] == ("gauge", {("envoy_server_live", labels()): 1})
    assert families["envoy_listener_downstream_cx_total"] == (
        "counter", {("envoy_listener_downstream_cx_total", labels(envoy_listener_address="0.0.0.0_15001")): 9})


def test_histograms_have_envoys_buckets_cumulative_counts_sum_and_count():
    typ, samples = scrape(store())["envoy_cluster_upstream_rq_time"]
    assert typ == "histogram"
    backend = {"envoy_cluster_name": "backend"}
    buckets = {dict(lbls)["le"]: v for (name, lbls), v in samples.items() if name.endswith("_bucket")}
    expected_les = [str(float(b)) if isinstance(b, float) else str(b) for b in DEFAULT_BUCKETS] + ["+Inf"]
    assert list(buckets) == expected_les
    assert buckets["0.5"] == 1 and buckets["1"] == 1 and buckets["5"] == 3 and buckets["10"] == 4
    assert buckets["250"] == 5 and buckets["3600000"] == 5 and buckets["+Inf"] == 6
    assert samples[("envoy_cluster_upstream_rq_time_count", frozenset(backend.items()))] == 6
    assert samples[("envoy_cluster_upstream_rq_time_sum", frozenset(backend.items()))] == pytest.approx(4_000_133.3)


def test_every_sample_name_is_a_valid_prometheus_name_even_for_odd_stat_names():
    stats = Stats()
    stats.counter("cluster.outbound|80||reviews.default.svc.cluster.local.upstream_rq_total").inc()
    stats.gauge("control_plane.connected_state").set(1)
    families = scrape(stats)
    assert "envoy_control_plane_connected_state" in families
    (typ, samples), = [v for k, v in families.items() if k.startswith("envoy_cluster_")]
    ((name, lbls),) = samples
    assert name == "envoy_cluster_default_svc_cluster_local_upstream_rq_total"  # Envoy's default extractors
    assert dict(lbls) == {"envoy_cluster_name": "outbound|80||reviews"}


def test_label_values_with_quotes_and_backslashes_survive_the_round_trip():
    stats = Stats()
    stats.counter('cluster.we"ird\\name.upstream_rq_total').inc(1)
    (typ, samples), = scrape(stats).values()
    assert samples == {("envoy_cluster_upstream_rq_total", labels(envoy_cluster_name='we"ird\\name')): 1}


def test_filter_and_usedonly_apply_to_prometheus_too():
    stats = store()
    stats.counter("cluster.idle.upstream_rq_total")
    families = scrape(stats, used_only=True, filter="^cluster")
    assert ("envoy_cluster_upstream_rq_total", labels(envoy_cluster_name="idle")) not in (
        families["envoy_cluster_upstream_rq_total"][1])
    assert "envoy_server_live" not in families and "envoy_http_downstream_rq_xx" not in families


def test_custom_tag_extractors_change_names_and_labels():
    stats = Stats()
    stats.counter("cluster.outbound|80||reviews.default.svc.cluster.local.upstream_rq_total").inc(3)
    istio_like = (TagExtractor.from_regex("cluster_name", r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"),)
    families = scrape(stats, extractors=istio_like)
    assert families["envoy_cluster_upstream_rq_total"] == ("counter", {
        ("envoy_cluster_upstream_rq_total",
         labels(cluster_name="outbound|80||reviews.default.svc.cluster.local")): 3})


def test_an_empty_store_renders_an_empty_exposition():
    assert render_prometheus(Stats()) == ""
