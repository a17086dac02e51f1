"""The Envoy row of the benchmark: the user's bootstrap made runnable side by side, the report's per-proxy
table (RSS, added latency at each fixed rate, the pyproxy / Envoy headline) and the SVG chart."""
from __future__ import annotations

import xml.dom.minidom

import pytest

from benchmarks import chart, configs, report


def _throughput(rps, cpu):
    return report.Throughput("wrk", rps, int(rps * 8), 200.0, 900.0, 0, proxy_cpu_us=cpu, backend_cpu_us=9.0)


def _fixed(rate, p50, p99):
    return report.FixedRate(rate, rate, int(rate), p50, p50, p99, p99, 0)


ROWS = [
    report.Row("direct", "no proxy", _throughput(50_000, None), _fixed(1000, 100, 300),
               more_rates=(_fixed(5000, 120, 400),)),
    report.Row("pyproxy", "pyproxy", _throughput(16_000, 60.0), _fixed(1000, 250, 900),
               more_rates=(_fixed(5000, 300, 1400),), rss_bytes=48_000_000),
    report.Row("envoy", "envoy", _throughput(24_000, 40.0), _fixed(1000, 180, 500),
               more_rates=(_fixed(5000, 200, 700),), rss_bytes=68_000_000),
]


def test_pyproxy_over_envoy_is_the_headline_with_cpu_per_request():
    text = report.render_markdown(ROWS, rate=1000.0, machine={}, settings={})
    assert "- **pyproxy / Envoy requests/s: 0.67**; CPU/req pyproxy / Envoy **1.50**" in text
    assert report.summary_line(ROWS).startswith("summary: pyproxy/envoy 0.67, ")


def test_per_proxy_table_has_rss_and_added_latency_at_every_rate():
    lines = report.per_proxy_table(ROWS)
    assert lines[1] == ("| proxy | RSS after the run | added p50 @ 1,000/s | added p99 @ 1,000/s "
                        "| added p50 @ 5,000/s | added p99 @ 5,000/s |")
    assert "| pyproxy | 48.0 MB | +150 µs | +600 µs | +180 µs | +1,000 µs |" in lines
    assert "| envoy | 68.0 MB | +80 µs | +200 µs | +80 µs | +300 µs |" in lines
    assert report.added_latency(ROWS, "envoy", rate=5000) == (80, 80, 300)
    assert report.added_latency(ROWS, "envoy", rate=2000) is None


def test_the_chart_is_an_svg_with_every_proxy_in_every_panel():
    svg = chart.render_svg(ROWS, [1000, 5000], title="loaded machine")
    xml.dom.minidom.parseString(svg)  # well-formed
    assert svg.count(">pyproxy</text>") == 5 and svg.count(">envoy</text>") == 5  # 4 panels + 1 rate more
    assert "16,000/s" in svg and "+1,000 µs" in svg and "68.0 MB" in svg and "loaded machine" in svg


def test_a_user_bootstrap_is_moved_to_our_ports_and_must_stay_on_loopback():
    user = configs.pyproxy_bootstrap(listen_port=10000, admin_port=9901, backend_port=8080)
    moved = configs.user_bootstrap(user, listen_port=20001, admin_port=20002)
    assert moved["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 20001
    assert moved["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 20002}
    assert user["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 10000  # a copy
    endpoint = user["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    endpoint["endpoint"]["address"]["socket_address"]["address"] = "10.1.2.3"
    with pytest.raises(ValueError, match="only talks to 127.0.0.1"):
        configs.user_bootstrap(user, listen_port=1, admin_port=2)
    with pytest.raises(ValueError, match="no static listener"):
        configs.user_bootstrap({"static_resources": {}}, listen_port=1, admin_port=2)
