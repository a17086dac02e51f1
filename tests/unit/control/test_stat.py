"""control.viz.stat (meshctl stat's numbers) and the pure parts of control.cli.stat / control.cli.tap.

The scrapes are real `/stats/prometheus` text: an IstioMetrics store filled with known requests and rendered by
the proxy's own exposition (pyproxy.observe.stats.render_prometheus), parsed back with prometheus_client."""
from __future__ import annotations

import io
import math

import pytest

from control.cli.proxy import CommandError
from control.cli.stat import parse_resource, uptime_seconds
from control.cli.tap import entry_line
from control.cli.term import print_styled, print_table, status_style
from control.viz.stat import (Delta, Row, counter_increase, delta, group, histogram_quantile, json_rows,
                              parse_scrape, select, success, table_rows)
from pyproxy.observe.istio_metrics import LABELS, IstioMetrics
from pyproxy.observe.stats import Stats, render_prometheus

INF = math.inf


# --- histogram_quantile: Prometheus' BucketQuantile, case by case -----------------------------------------

@pytest.mark.parametrize("q,buckets,expected", [
    (0.5, [(1, 10), (2, 20), (INF, 20)], 1.0),     # rank 10 reached at the top of the first bucket
    (0.75, [(1, 10), (2, 20), (INF, 20)], 1.5),    # rank 15: halfway through (1, 2]
    (1.0, [(1, 10), (2, 20), (INF, 20)], 2.0),
    (0.0, [(1, 10), (2, 20), (INF, 20)], 0.0),     # the first bucket's lower bound is 0
    (0.25, [(1, 10), (2, 20), (INF, 20)], 0.5),
    (0.9, [(1, 5), (INF, 10)], 1.0),               # rank in +Inf: the highest finite bound
    (0.5, [(1, 10), (2, 10), (INF, 20)], 1.0),     # the first bucket that reaches the rank, not a later one
    (0.5, [(2, 20), (INF, 20), (1, 10)], 1.0),     # order of the input does not matter
    (0.5, [(1, 10), (2, 8), (INF, 12)], 0.6),      # a count lower than the one before is raised (monotonic)
    (0.5, [(1, 4), (1, 6), (INF, 10)], 0.5),       # equal bounds are added together
    (0.2, [(-1, 5), (INF, 10)], -1.0),             # first bucket with a bound <= 0: that bound
    (0.5, [(0.5, 0), (1, 0), (5, 4), (10, 4), (INF, 4)], 3.0),  # Envoy-like bounds: (1, 5], rank 2 of 4
])
def test_histogram_quantile(q, buckets, expected):
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize("q,buckets,expected", [
    (0.5, [(1, 10), (2, 20)], "nan"),              # no +Inf bucket
    (0.5, [(INF, 10)], "nan"),                     # fewer than two buckets
    (0.5, [(1, 0), (INF, 0)], "nan"),              # no observation
    (math.nan, [(1, 1), (INF, 1)], "nan"),
    (-0.1, [(1, 1), (INF, 1)], "-inf"),
    (1.1, [(1, 1), (INF, 1)], "inf"),
])
def test_histogram_quantile_edges(q, buckets, expected):
    got = histogram_quantile(q, buckets)
    assert (math.isnan(got) if expected == "nan" else got == float(expected))


# --- scrapes, increases, grouping ------------------------------------------------------------------------

def labels(reporter="destination", workload="reviews-v1", ns="default", service="reviews.default.svc.cluster.local",
           code="200", policy="mutual_tls", **extra) -> tuple[str, ...]:
    values = {"reporter": reporter, "destination_workload": workload, "destination_workload_namespace": ns,
              "destination_service": service, "destination_service_namespace": ns, "response_code": code,
              "connection_security_policy": policy, **extra}
    return tuple(values.get(name, "unknown") for name in LABELS)


def exposition(records) -> str:
    """What a proxy's /stats/prometheus says after `records` [(labels, duration_ms)]."""
    stats = Stats()
    store = stats.extension("istio", IstioMetrics)
    for key, ms in records:
        store.record(key, ms, 10, 20)
    stats.counter("http.inbound.downstream_rq_total").inc(len(records))  # Envoy's own stats sit beside them
    return render_prometheus(stats)


def test_a_real_exposition_parses_back_to_counts_and_buckets():
    text = exposition([(labels(), 3.0), (labels(), 7.0), (labels(code="503"), 30.0)])
    s = parse_scrape(text, proxy="reviews-v1.default", namespace="default", at=5.0, uptime=10.0)
    assert sorted(s.requests.values()) == [1.0, 2.0]
    ok = next(k for k, v in s.requests.items() if v == 2.0)
    assert dict(ok)["response_code"] == "200"
    buckets = dict(s.durations[ok])
    assert buckets[1.0] == 0 and buckets[5.0] == 1 and buckets[10.0] == 2 and buckets[INF] == 2


def test_text_that_is_not_prometheus_is_an_error_naming_the_proxy():
    with pytest.raises(ValueError, match="p1: /stats/prometheus is not Prometheus text"):
        parse_scrape('istio_requests_total{a="1" 3\n', proxy="p1")


@pytest.mark.parametrize("before,after,increase", [(None, 5, 5), (3, 5, 2), (5, 5, 0), (9, 4, 4)])
def test_counter_increase_follows_prometheus_reset_rule(before, after, increase):
    assert counter_increase(before, after) == increase


def test_delta_between_two_scrapes_and_since_start():
    first = parse_scrape(exposition([(labels(), 3.0)] * 2), proxy="p", at=100.0, uptime=10.0)
    second = parse_scrape(exposition([(labels(), 3.0)] * 2 + [(labels(), 40.0)] * 4), proxy="p", at=102.0,
                          uptime=12.0)
    d = delta(first, second)
    assert d.seconds == 2.0 and list(d.requests.values()) == [4.0]
    assert dict(next(iter(d.durations.values())))[50.0] == 4 and dict(next(iter(d.durations.values())))[5.0] == 0
    since = delta(None, second)
    assert since.seconds == 12.0 and list(since.requests.values()) == [6.0]
    restarted = parse_scrape(exposition([(labels(), 3.0)]), proxy="p", at=104.0, uptime=1.0)
    d = delta(second, restarted)  # counts went down: everything now is new
    assert list(d.requests.values()) == [1.0] and dict(next(iter(d.durations.values())))[5.0] == 1


def D(proxy, ns, seconds, records) -> Delta:
    return delta(None, parse_scrape(exposition(records), proxy=proxy, namespace=ns, uptime=seconds))


def test_group_by_deploy_counts_the_destination_side_once():
    reviews = D("reviews-v1.default", "default", 10.0, [(labels(), 2.0)] * 8 + [(labels(code="503"), 20.0)] * 2)
    # the caller's sidecar reports the same requests as source: not counted again for deploy
    product = D("productpage-v1.default", "default", 5.0, [(labels(reporter="source", policy="unknown"), 4.0)] * 10)
    rows = group([reviews, product], "deploy")
    assert [(r.namespace, r.name) for r in rows] == [("default", "reviews-v1")]
    r = rows[0]
    assert (r.requests, r.success_rate, r.rps, r.mtls_share) == (10, 0.8, 1.0, 1.0)
    assert r.latency(0.5) == pytest.approx(1 + 4 * 5 / 8)  # 8 of 10 in (1, 5]: rank 5 -> 1 + 4 * 5/8
    assert r.latency(0.95) == pytest.approx(10 + 15 * 1.5 / 2)  # 2 in (10, 25]: rank 9.5 -> 1.5 of those 2
    assert table_rows(rows) == [["default", "reviews-v1", "10", "80.00%", "1.0rps", "3.5ms", "21ms", "24ms", "100%"]]


def test_group_by_svc_counts_the_source_side_and_sees_client_side_failures():
    client = D("productpage-v1.default", "default", 10.0,
               [(labels(reporter="source", policy="unknown"), 4.0)] * 3
               + [(labels(reporter="source", policy="unknown", code="503", response_flags="UH"), 0.1)])
    server = D("reviews-v1.default", "default", 10.0, [(labels(), 2.0)] * 3)
    [row] = group([client, server], "svc")
    assert (row.name, row.requests, row.success_rate) == ("reviews.default.svc.cluster.local", 4, 0.75)
    assert row.mtls_share is None  # the client side does not know (Istio labels it unknown)
    [row] = group([client, server], "svc", reporter="destination")
    assert (row.requests, row.mtls_share) == (3, 1.0)


def test_group_by_pod_has_a_row_per_proxy_even_an_idle_one():
    a = D("reviews-v1.default", "default", 4.0, [(labels(policy="none"), 1.0)] * 2 + [(labels(), 1.0)] * 2)
    idle = D("istio-ingressgateway.istio-system", "istio-system", 4.0, [])
    rows = group([a, idle], "pod")
    assert [(r.namespace, r.name, r.requests) for r in rows] == [
        ("default", "reviews-v1.default", 4), ("istio-system", "istio-ingressgateway.istio-system", 0)]
    assert rows[0].mtls_share == 0.5
    assert table_rows(rows)[1] == ["istio-system", "istio-ingressgateway.istio-system", "0", "-", "-", "-", "-",
                                   "-", "-"]
    assert json_rows(rows)[1]["success_rate"] is None and json_rows(rows)[0]["rps"] == 1.0


def test_select_by_namespace_and_name():
    rows = [Row("default", "reviews-v1.default"), Row("default", "ratings.default.svc.cluster.local"),
            Row("istio-system", "gw")]
    assert [r.name for r in select(rows, "istio-system")] == ["gw"]
    assert [r.name for r in select(rows, None, "reviews-v1")] == ["reviews-v1.default"]
    assert [r.name for r in select(rows, None, "ratings")] == ["ratings.default.svc.cluster.local"]
    assert select(rows, "default", "gw") == []


@pytest.mark.parametrize("code,ok", [("200", True), ("404", True), ("503", False), ("0", False), (None, False)])
def test_success_is_a_response_that_is_not_5xx(code, ok):
    assert success(code) is ok


# --- the CLI's pure parts ---------------------------------------------------------------------------------

def test_parse_resource():
    assert parse_resource("deploy/reviews-v1", None) == ("deploy", "reviews-v1")
    assert parse_resource("po", "x") == ("pod", "x") and parse_resource("services", None) == ("svc", "")
    with pytest.raises(CommandError, match="unknown resource 'job'"):
        parse_resource("job", None)
    with pytest.raises(CommandError, match="give the name once"):
        parse_resource("svc/a", "b")


def test_uptime_from_server_info():
    assert uptime_seconds({"uptime_current_epoch": "42s"}) == 42.0 and uptime_seconds({}) == 0.0


def test_tap_line_names_every_field():
    line = entry_line({"direction": "inbound", "method": "GET", "authority": "reviews:9080", "path": "/r/1",
                       "status": 503, "duration_ms": 12.345, "response_flags": "UF,URX", "mtls": True,
                       "peer": "spiffe://cluster.local/ns/default/sa/productpage", "upstream_cluster": "c",
                       "upstream_host": "127.0.0.1:1", "trace_id": "ab" * 16, "request_id": "r"})
    assert line == ("inbound GET reviews:9080/r/1 503 12.3ms flags=UF,URX tls=true "
                    "peer=spiffe://cluster.local/ns/default/sa/productpage upstream=c/127.0.0.1:1 "
                    f"trace={'ab' * 16} id=r")
    assert entry_line({"status": 0}) == "- - - 0 - flags=- tls=false peer=- upstream=- trace=- id=-"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_rich_and_a_pipe_gets_plain_text():
    header, rows = ("NAMESPACE", "NAME", "SUCCESS"), [["default", "a-very-long-workload-name-" * 4, "100.00%"]]
    tty, pipe = Tty(), io.StringIO()
    print_table(header, rows, tty)
    print_table(header, rows, pipe)
    assert "\x1b[" in tty.getvalue() and rows[0][1] in tty.getvalue()  # wider than 80 columns: not cut
    assert "\x1b" not in pipe.getvalue() and pipe.getvalue().splitlines()[1].split() == rows[0]
    plain = io.StringIO()
    print_styled([("GET ", "bold"), ("/[x]", ""), (" 503", status_style(503))], plain)
    styled = Tty()
    print_styled([("GET ", "bold"), ("/[x]", ""), (" 503", status_style(503))], styled)
    assert plain.getvalue() == "GET /[x] 503\n" and "/[x]" in styled.getvalue() and "\x1b[31m" in styled.getvalue()
