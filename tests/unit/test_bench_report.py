"""Reading wrk and loadgen output, pooling fixed-rate rounds, CPU placement, and the markdown report."""

from __future__ import annotations

import pytest

from benchmarks import report, stats

WRK_OUTPUT = """Running 8s test @ http://127.0.0.1:8080/
  1 threads and 32 connections
Requests/sec: 110923.31
WRK_JSON {"requests": 200000, "duration_us": 2000000, "bytes": 12006468, "errors": {"connect": 0, "read": 1, \
"write": 0, "status": 2, "timeout": 0}, "latency_us": {"mean": 225.7, "p50": 209, "p90": 322, "p99": 590, "max": 3550}}
"""


def test_wrk_json_line_gives_rate_over_wrks_own_duration():
    t = report.parse_wrk(WRK_OUTPUT)
    assert (t.tool, t.requests, t.rps, t.p50_us, t.p99_us, t.errors) == ("wrk", 200000, 100000.0, 209.0, 590.0, 3)


def test_wrk_output_without_the_json_line_is_a_clear_error():
    with pytest.raises(ValueError, match="wrk_report.lua"):
        report.parse_wrk("Requests/sec: 1\n")


def _round(samples_s, *, duration=1.0, errors=None):
    return {"target_rps": 1000.0, "completed": len(samples_s), "duration_s": duration, "samples_s": samples_s,
            "errors": errors or {"status": 0, "connect": 0, "read": 0, "timeout": 0}}  # fmt: skip


def test_fixed_rate_percentiles_are_over_all_rounds_pooled():
    # Round 1: 99 fast answers and one slow; round 2: 100 fast. Pooled, the slow one is the 200th of 200.
    rounds = [_round([0.0001] * 99 + [0.005]), _round([0.0002] * 100, errors={"status": 1, "timeout": 2})]
    fixed = report.fixed_rate_from_rounds(rounds, discarded=1)
    assert fixed.completed == 200 and fixed.achieved_rps == 100.0
    assert (fixed.rounds, fixed.discarded) == (2, 1)
    assert fixed.p50_us == pytest.approx(200.0)
    assert fixed.p99_us == pytest.approx(200.0)  # the 198th sample
    assert fixed.max_us == pytest.approx(5000.0)
    assert fixed.errors == 3


@pytest.mark.parametrize("lag_p99_us, disturbed", [(4.0, False), (200.0, False), (201.0, True), (5000.0, True)])
def test_a_round_whose_generator_sent_late_is_disturbed(lag_p99_us, disturbed):
    assert report.round_was_disturbed({"send_lag": {"p99_us": lag_p99_us}}) is disturbed


@pytest.mark.parametrize(
    "cpus, plan",
    [
        ({0}, (None, None, None)),
        ({0, 1}, ({0}, {0}, {1})),
        ({2, 5}, ({2}, {2}, {5})),
        ({0, 1, 2, 3}, ({0}, {1}, {2})),
    ],
)
def test_the_load_tool_never_shares_a_cpu_with_the_servers(cpus, plan):
    assert report.cpu_plan(cpus) == tuple(None if p is None else frozenset(p) for p in plan)


def _throughput(rps):
    return report.Throughput("wrk", rps, int(rps * 8), 200.0, 900.0, 0, proxy_cpu_us=20.0, backend_cpu_us=9.0)


def _fixed(p50, p99):
    return report.FixedRate(1000.0, 999.0, 9000, p50, p50 * 1.2, p99, p99 * 3, 0, rounds=3, discarded=1)


def _render(rows):
    return report.render_markdown(rows, rate=1000.0, machine={"cpu": "Test CPU"}, settings={"pinning": "none"})


def test_report_shows_ratio_added_latency_and_whether_targets_are_met():
    rows = [
        report.Row("direct", "no proxy", _throughput(100_000), _fixed(80, 300)),
        report.Row("pyproxy", "pyproxy", _throughput(12_000), _fixed(230, 1500)),
        report.Row("nginx", "nginx", _throughput(30_000), _fixed(130, 400)),
    ]
    assert report.throughput_ratio(rows) == pytest.approx(0.4)
    assert report.added_latency(rows, "pyproxy") == pytest.approx((150, 180, 1200))
    text = _render(rows)
    assert "| pyproxy | 12,000 | 200 µs | 900 µs | 20 µs | 9 µs | 230 µs | 276 µs | 1,500 µs | 4,500 µs | 3/4 | 0 |" in text
    assert "pyproxy / nginx requests/s: **0.40** (target ≥ 0.5: NOT met)" in text
    assert "pyproxy added latency at 1,000/s vs direct: p50 +150 µs, p90 +180 µs, p99 **+1,200 µs** (target p99 < 1 ms: NOT met)" in text
    assert "nginx added latency at 1,000/s vs direct: p50 +50 µs, p90 +60 µs, p99 **+100 µs**" in text
    assert "- cpu: Test CPU" in text


def test_a_negative_added_p99_is_called_noise():
    rows = [report.Row("direct", "no proxy", _throughput(100_000), _fixed(80, 2000)),
            report.Row("pyproxy", "pyproxy", _throughput(12_000), _fixed(230, 1300))]  # fmt: skip
    assert "p99 **-700 µs** (target p99 < 1 ms: met); below zero: on this run the machine's own stalls" in _render(rows)


def test_a_pyproxy_that_did_not_start_is_a_row_saying_why():
    rows = [
        report.Row("direct", "no proxy", _throughput(100_000), _fixed(80, 300)),
        report.Row("pyproxy", "pyproxy", error="pyproxy failed to start: exited with code 1:\nNo module | cli"),
        report.Row("nginx", "nginx", _throughput(30_000), _fixed(130, 400)),
    ]
    text = _render(rows)
    assert "| pyproxy | pyproxy failed to start: exited with code 1: / No module \\| cli | | | | | | | | | | |" in text
    assert "pyproxy / nginx requests/s: not available" in text
    assert "pyproxy added latency at 1,000/s vs direct: not available" in text


def test_a_fixed_rate_run_that_fell_short_of_its_rate_is_flagged():
    slow = report.FixedRate(1000.0, 700.0, 2100, 100.0, 120.0, 150.0, 300.0, 0)
    text = _render([report.Row("direct", "no proxy", _throughput(1000), slow)])
    assert "warning: direct reached only 700 of 1,000 req/s" in text


@pytest.mark.parametrize(
    "samples, q, expected",
    [
        ([], 50, 0.0),
        ([7.0], 99, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 75, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 76, 4.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 101)], 100, 100.0),
    ],
)
def test_percentile_is_nearest_rank(samples, q, expected):
    assert stats.percentile(samples, q) == expected


@pytest.mark.parametrize("q", [0, -1, 100.5])
def test_percentile_outside_0_to_100_is_refused(q):
    with pytest.raises(ValueError, match="percentile"):
        stats.percentile([1.0], q)


def test_open_loop_schedule_is_evenly_spaced_from_start():
    assert stats.open_loop_schedule(start=10.0, rate=4, count=3) == [10.0, 10.25, 10.5]
    with pytest.raises(ValueError, match="rate"):
        stats.open_loop_schedule(start=0.0, rate=0, count=1)


def test_latency_summary_is_in_microseconds():
    s = stats.LatencySummary.of_seconds([0.003, 0.001, 0.002])
    assert (s.count, s.p50_us, s.max_us) == (3, pytest.approx(2000.0), pytest.approx(3000.0))
    assert s.mean_us == pytest.approx(2000.0)
    assert stats.LatencySummary.of_seconds([]).count == 0


def test_pinning_is_described_per_role_or_as_none():
    assert report.describe_pinning(*report.cpu_plan({0})) == "none"
    assert (report.describe_pinning(*report.cpu_plan({0, 1}))
            == "proxy on CPU [0], backend on CPU [0], load tool on CPU [1]")


def test_floor_row_gives_pyproxy_over_floor_and_a_one_line_summary():
    rows = [
        report.Row("direct", "no proxy", _throughput(100_000), _fixed(80, 300)),
        report.Row("floor", "floor", _throughput(25_000), _fixed(120, 350)),
        report.Row("pyproxy", "pyproxy", _throughput(10_000), _fixed(230, 500)),
        report.Row("nginx", "nginx", _throughput(30_000), _fixed(130, 400)),
    ]
    assert "- pyproxy / floor requests/s: **0.40** (floor / nginx 0.83)" in _render(rows)
    assert report.summary_line(rows) == ("summary: pyproxy/nginx 0.33, pyproxy/floor 0.40, floor/nginx 0.83, "
                                         "pyproxy adds p99 +200 µs")
    assert "pyproxy/floor n/a" in report.summary_line(rows[2:])


def test_summary_line_gives_the_compiled_builds_ratios_when_its_row_ran():
    rows = [report.Row(name, name, _throughput(rps), _fixed(200, 400)) for name, rps in (
        ("direct", 60_000), ("floor", 25_000), ("pyproxy", 10_000), ("pyproxy-compiled", 15_000),
        ("envoy", 20_000), ("nginx", 30_000))]
    line = report.summary_line(rows)
    assert "compiled/nginx 0.50, compiled/floor 0.60, compiled/envoy 0.75" in line
    assert "pyproxy/nginx 0.33" in line  # the interpreted row keeps its own ratios
    assert "compiled/" not in report.summary_line([r for r in rows if r.name != "pyproxy-compiled"])


def test_summary_line_gives_the_sidecar_rows_against_nginx_when_they_ran():
    rows = [report.Row(name, name, _throughput(rps), None) for name, rps in (
        ("pyproxy", 10_000), ("nginx", 30_000), ("pyproxy-sidecar", 6_000), ("pyproxy-compiled-sidecar", 12_000),
        ("envoy-sidecar", 15_000))]
    line = report.summary_line(rows)
    assert "sidecar/nginx 0.20, compiled-sidecar/nginx 0.40, envoy-sidecar/nginx 0.50" in line
    assert "sidecar/nginx" not in report.summary_line(rows[:2])
