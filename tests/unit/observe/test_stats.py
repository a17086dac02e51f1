"""The stats store and Envoy's admin renderings of it (/stats, /stats?format=json, tag extraction)."""
import json
import math

import pytest

from pyproxy.observe.stats import (
    DEFAULT_BUCKETS,
    Stats,
    StatsQuery,
    TagExtractor,
    extract_tags,
    render_json,
    render_text,
)

# ---------------------------------------------------------------- the store


def test_a_stat_is_created_once_and_the_same_object_is_returned_after():
    stats = Stats()
    c = stats.counter("cluster.backend.upstream_rq_total")
    assert stats.counter("cluster.backend.upstream_rq_total") is c
    assert stats.gauge("g") is stats.gauge("g")
    assert stats.histogram("h") is stats.histogram("h")


def test_the_hot_path_is_an_attribute_increment_on_a_slotted_object():
    c = Stats().counter("x")
    c.inc()
    c.value += 1
    c.inc(5)
    assert c.value == 7
    assert not hasattr(c, "__dict__")


def test_gauges_go_up_down_and_can_be_set():
    g = Stats().gauge("cluster.backend.upstream_rq_active")
    g.inc()
    g.inc(3)
    g.dec()
    assert g.value == 3
    g.set(10)
    assert g.value == 10


@pytest.mark.parametrize("prefix, name, full", [
    ("cluster.backend.", "upstream_rq_total", "cluster.backend.upstream_rq_total"),
    ("cluster.backend", "upstream_rq_total", "cluster.backend.upstream_rq_total"),  # Envoy adds the dot
    ("", "server.uptime", "server.uptime"),
])
def test_a_scope_prefixes_names(prefix, name, full):
    stats = Stats()
    assert stats.scope(prefix).counter(name) is stats.counter(full)


def test_scopes_nest_and_create_every_kind_of_stat():
    stats = Stats()
    http = stats.scope("http.ingress_http")
    assert http.scope("rbac").counter("denied").name == "http.ingress_http.rbac.denied"
    assert http.gauge("downstream_rq_active").name == "http.ingress_http.downstream_rq_active"
    assert http.histogram("downstream_rq_time").name == "http.ingress_http.downstream_rq_time"


@pytest.mark.parametrize("first, second", [("counter", "gauge"), ("gauge", "histogram"), ("histogram", "counter")])
def test_one_name_cannot_be_two_kinds_of_stat(first, second):
    stats = Stats()
    getattr(stats, first)("x.y")
    with pytest.raises(ValueError, match=f"'x.y' already exists as a {first}, cannot create it as a {second}"):
        getattr(stats, second)("x.y")


def test_bad_gauge_mode_and_histogram_unit_are_errors():
    with pytest.raises(ValueError, match="import mode 'sometimes'"):
        Stats().gauge("g", mode="sometimes")
    with pytest.raises(ValueError, match="unit 'hours'"):
        Stats().histogram("h", unit="hours")


# ---------------------------------------------------------------- histograms


def test_histograms_use_envoys_default_buckets():
    assert DEFAULT_BUCKETS == (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                               300000, 600000, 1800000, 3600000)


@pytest.mark.parametrize("value, bucket_index", [
    (0, 0), (0.5, 0), (0.51, 1), (1, 1), (4.9, 2), (5, 2), (3600000, 18), (3600001, 19), (1e12, 19),
])
def test_a_value_lands_in_the_first_bucket_whose_bound_is_not_below_it(value, bucket_index):
    h = Stats().histogram("h")
    h.record(value)
    assert h.counts.index(1) == bucket_index


def test_cumulative_buckets_count_and_sum():
    h = Stats().histogram("h")
    for v in (0.2, 3, 3, 7, 120):
        h.record(v)
    cumulative = h.cumulative_buckets()
    assert cumulative[:4] == [1, 1, 3, 4]  # le 0.5, 1, 5, 10
    assert cumulative[-1] == h.count == 5
    assert h.sum == pytest.approx(133.2)


def test_quantiles_interpolate_within_the_bucket():
    h = Stats().histogram("h")
    for _ in range(10):
        h.record(7)  # all in (5, 10]
    p0, p50, p100 = h.quantiles((0, 0.5, 1))
    assert (p0, p50, p100) == (5, 7.5, 10)


def test_interval_quantiles_cover_the_span_between_latches():
    stats = Stats()
    h = stats.histogram("h")
    h.record(3)
    assert math.isnan(h.quantiles((0.5,), interval=True)[0])  # no interval closed yet
    stats.latch()
    assert h.quantiles((1,), interval=True) == [5]  # interval 1 held the 3, in (1, 5]
    h.record(700)
    stats.latch()
    assert sum(h.interval_counts) == 1  # interval 2 held only the 700
    assert h.quantiles((1,), interval=True) == [1000]
    assert h.quantiles((0, 1)) == [1, 1000]  # cumulative holds both


# ---------------------------------------------------------------- /stats text


def sample_store() -> Stats:
    stats = Stats()
    stats.counter("cluster.backend.upstream_rq_total").inc(7)
    stats.counter("cluster.backend.upstream_cx_connect_fail")  # never used
    stats.gauge("cluster.backend.upstream_rq_active").set(2)
    stats.counter("http.ingress_http.downstream_rq_2xx").inc(3)
    stats.gauge("server.live").set(1)
    stats.histogram("cluster.backend.upstream_rq_time")  # never recorded
    h = stats.histogram("http.ingress_http.downstream_rq_time")
    for _ in range(4):
        h.record(7)
    return stats


def test_text_lists_counters_and_gauges_sorted_by_name_then_histograms():
    assert render_text(sample_store()) == (
        "cluster.backend.upstream_cx_connect_fail: 0\n"
        "cluster.backend.upstream_rq_active: 2\n"
        "cluster.backend.upstream_rq_total: 7\n"
        "http.ingress_http.downstream_rq_2xx: 3\n"
        "server.live: 1\n"
        "cluster.backend.upstream_rq_time: No recorded values\n"
        "http.ingress_http.downstream_rq_time: P0(nan,5) P25(nan,6.25) P50(nan,7.5) P75(nan,8.75) P90(nan,9.5) "
        "P95(nan,9.75) P99(nan,9.95) P99.5(nan,9.975) P99.9(nan,9.995) P100(nan,10)\n"
    )


def test_usedonly_hides_stats_never_touched():
    names = [line.split(":")[0] for line in render_text(sample_store(), used_only=True).splitlines()]
    assert names == ["cluster.backend.upstream_rq_active", "cluster.backend.upstream_rq_total",
                     "http.ingress_http.downstream_rq_2xx", "server.live", "http.ingress_http.downstream_rq_time"]


def test_a_gauge_set_back_to_zero_still_counts_as_used():
    stats = Stats()
    g = stats.gauge("cluster.backend.upstream_cx_active")
    g.inc()
    g.dec()
    assert render_text(stats, used_only=True) == "cluster.backend.upstream_cx_active: 0\n"


@pytest.mark.parametrize("pattern, names", [
    ("upstream_rq", ["cluster.backend.upstream_rq_active", "cluster.backend.upstream_rq_total",
                     "cluster.backend.upstream_rq_time"]),
    ("^server", ["server.live"]),
    (r"rq_\dxx$", ["http.ingress_http.downstream_rq_2xx"]),
])
def test_filter_is_a_regex_searched_in_the_name(pattern, names):
    text = render_text(sample_store(), filter=pattern)
    assert [line.split(":")[0] for line in text.splitlines()] == names


def test_type_selects_one_kind_of_stat():
    assert render_text(sample_store(), type="Gauges") == (
        "cluster.backend.upstream_rq_active: 2\nserver.live: 1\n")


def test_an_invalid_filter_is_a_clear_error():
    with pytest.raises(ValueError, match=r"filter: invalid regex '\(unclosed'"):
        render_text(Stats(), filter="(unclosed")


# ---------------------------------------------------------------- /stats?format=json


def test_json_lists_stats_then_histogram_quantiles():
    doc = json.loads(render_json(sample_store(), filter="ingress_http"))
    assert doc["stats"][0] == {"name": "http.ingress_http.downstream_rq_2xx", "value": 3}
    histograms = doc["stats"][1]["histograms"]
    assert histograms["supported_quantiles"] == [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]
    (computed,) = histograms["computed_quantiles"]
    assert computed["name"] == "http.ingress_http.downstream_rq_time"
    assert computed["values"][2] == {"interval": None, "cumulative": 7.5}


def test_json_without_histograms_has_only_name_value_entries():
    doc = json.loads(render_json(sample_store(), type="Counters", used_only=True))
    assert doc == {"stats": [{"name": "cluster.backend.upstream_rq_total", "value": 7},
                             {"name": "http.ingress_http.downstream_rq_2xx", "value": 3}]}


# ---------------------------------------------------------------- admin query parameters


@pytest.mark.parametrize("params, expected", [
    ({}, StatsQuery()),
    ({"usedonly": ""}, StatsQuery(used_only=True)),
    ({"format": "json"}, StatsQuery(format="json")),
    ({"format": "prometheus", "type": "Counters"}, StatsQuery(format="prometheus", type="Counters")),
])
def test_query_parameters_are_read_like_envoys_admin(params, expected):
    assert StatsQuery.from_params(params) == expected


def test_query_filter_is_compiled():
    assert StatsQuery.from_params({"filter": "^cluster"}).filter.pattern == "^cluster"


@pytest.mark.parametrize("params, message", [
    ({"filter": "[x"}, "filter: invalid regex"),
    ({"format": "xml"}, "format: 'xml' is not one of text, json, prometheus"),
    ({"type": "Timers"}, "type: 'Timers' is not one of All, Counters, Gauges, Histograms"),
])
def test_bad_query_parameters_are_clear_errors(params, message):
    with pytest.raises(ValueError, match=message):
        StatsQuery.from_params(params)


# ---------------------------------------------------------------- Envoy's default tag extractors


@pytest.mark.parametrize("name, extracted, tags", [
    ("cluster.backend.upstream_rq_total", "cluster.upstream_rq_total", {"envoy.cluster_name": "backend"}),
    ("cluster.backend.upstream_rq_200", "cluster.upstream_rq",
     {"envoy.cluster_name": "backend", "envoy.response_code": "200"}),
    ("http.ingress_http.downstream_rq_2xx", "http.downstream_rq_xx",
     {"envoy.http_conn_manager_prefix": "ingress_http", "envoy.response_code_class": "2"}),
    ("listener.0.0.0.0_15001.downstream_cx_total", "listener.downstream_cx_total",
     {"envoy.listener_address": "0.0.0.0_15001"}),
    ("listener.[__1]_8080.downstream_cx_total", "listener.downstream_cx_total",
     {"envoy.listener_address": "[__1]_8080"}),
    ("listener.0.0.0.0_15006.http.inbound_0.0.0.0_8080.downstream_rq_5xx", None, None),
    ("listener.admin.downstream_cx_total", "listener.admin.downstream_cx_total", {}),
    ("listener_manager.worker_3.dispatcher.loop_duration_us", "listener_manager.worker_dispatcher.loop_duration_us",
     {"envoy.worker_id": "3"}),
    ("vhost.www.vcluster.other.upstream_rq_503", "vhost.vcluster.upstream_rq",
     {"envoy.virtual_host": "www", "envoy.virtual_cluster": "other", "envoy.response_code": "503"}),
    ("http.ingress_http.rds.local_route.config_reload", "http.rds.config_reload",
     {"envoy.http_conn_manager_prefix": "ingress_http", "envoy.rds_route_config": "local_route"}),
    ("http.ingress_http.fault.downstream_a.aborts_injected", "http.fault.aborts_injected",
     {"envoy.http_conn_manager_prefix": "ingress_http", "envoy.fault_downstream_cluster": "downstream_a"}),
    ("tcp.passthrough.downstream_cx_total", "tcp.downstream_cx_total", {"envoy.tcp_prefix": "passthrough"}),
    ("inbound_8080.http_local_rate_limit.rate_limited", "http_local_rate_limit.rate_limited",
     {"envoy.local_http_ratelimit_prefix": "inbound_8080"}),
    ("cluster.backend.ssl.ciphers.ECDHE-RSA-AES128-GCM-SHA256", "cluster.ssl.ciphers",
     {"envoy.cluster_name": "backend", "cipher_suite": "ECDHE-RSA-AES128-GCM-SHA256"}),
    ("server.uptime", "server.uptime", {}),
])
def test_default_tag_extractors_pull_envoys_tags_out_of_names(name, extracted, tags):
    got_name, got_tags = extract_tags(name)
    if extracted is None:  # an HCM stat prefix with dots: the token form takes only the first word
        assert dict(got_tags)["envoy.listener_address"] == "0.0.0.0_15006"
        assert dict(got_tags)["envoy.response_code_class"] == "5"
        return
    assert got_name == extracted
    assert dict(got_tags) == tags


def test_custom_extractors_replace_the_defaults():
    mine = (TagExtractor.from_regex("istio.cluster", r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"),)
    name, tags = extract_tags("cluster.outbound|80||reviews.default.svc.cluster.local.upstream_rq_total", mine)
    assert name == "cluster.upstream_rq_total"
    assert tags == (("istio.cluster", "outbound|80||reviews.default.svc.cluster.local"),)


def test_a_token_pattern_needs_exactly_one_dollar():
    with pytest.raises(ValueError, match="exactly one"):
        TagExtractor.from_tokens("t", "cluster.*.**")


def test_reprs_show_live_values():
    stats = sample_store()
    assert repr(stats.counter("cluster.backend.upstream_rq_total")) == "Counter(cluster.backend.upstream_rq_total: 7)"
    assert repr(stats) == "Stats(3 counters, 2 gauges, 2 histograms)"
    assert repr(stats.scope("cluster.a")) == "Scope('cluster.a.')"
