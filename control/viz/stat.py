"""`meshctl stat`'s numbers from Istio's standard metrics, as `linkerd viz stat` shows them. Pure: Prometheus text
and clock readings in, rows out; the scraping is control/cli/stat.py.

Inputs: each sidecar's `/stats/prometheus` (pyproxy.observe.istio_metrics: `istio_requests_total` and the
`istio_request_duration_milliseconds` histogram, labelled with Istio's `reporter`, `destination_workload`,
`destination_service`, `response_code`, `connection_security_policy`...), parsed with prometheus_client's
parser (`parse_scrape`).

- Rates come from two scrapes of the same proxy (`delta`): per series, the increase of a counter, or its
  whole value when it went down (the proxy restarted: Prometheus' `rate()` reset rule), divided by the time
  between the scrapes. With one scrape (`delta(None, s)`) the window is the proxy's uptime: counts and rates
  since it started.
- Latency percentiles come from the histogram's buckets summed over the group, with Prometheus'
  `histogram_quantile` (linear interpolation inside the bucket; `histogram_quantile`).
- Grouping (`group`): `deploy` = (destination_workload_namespace, destination_workload); `pod` = the proxy that
  reported; `svc` = (destination_service_namespace, destination_service). Only series of one `reporter` are
  counted, so each request is counted once: `destination` (the server's sidecar) for deploy and pod, `source`
  (the client's sidecar or gateway, which also sees requests that never reached a server: UH, UF, injected
  faults) for svc.
- Success = a response that is not 5xx; a stream with no response (response_code 0) is a failure, as linkerd
  counts it. mTLS share = the fraction with `connection_security_policy="mutual_tls"` among the requests
  whose policy is known (`mutual_tls` or `none`). Only the server side knows it: Istio labels what the client
  side reports `unknown`, so `svc` (reporter source) shows `-` there; `--reporter destination` shows it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape", "Delta", "Row", "KINDS", "DEFAULT_REPORTER", "parse_scrape", "delta", "counter_increase",
           "histogram_quantile", "group", "success", "HEADER", "table_rows", "json_rows"]

REQUESTS = "istio_requests_total"
DURATION_BUCKET = "istio_request_duration_milliseconds_bucket"
# meshctl stat's resource kinds (kubectl's spellings) -> the grouping
KINDS = {"deploy": "deploy", "deployment": "deploy", "deployments": "deploy", "po": "pod", "pod": "pod",
         "pods": "pod", "svc": "svc", "service": "svc", "services": "svc"}
DEFAULT_REPORTER = {"deploy": "destination", "pod": "destination", "svc": "source"}

Labels = tuple[tuple[str, str], ...]  # a series' labels, sorted: hashable, comparable
Buckets = tuple[tuple[float, float], ...]  # (upper bound `le`, cumulative count), sorted by bound


@dataclass(frozen=True)
class Scrape:
    """One proxy's Istio request metrics at one moment. `at`: the reader's monotonic clock; `uptime`: seconds
    the proxy has been running (its /server_info)."""

    proxy: str
    namespace: str
    at: float
    uptime: float
    requests: Mapping[Labels, float]
    durations: Mapping[Labels, Buckets]


def _key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def parse_scrape(text: str, *, proxy: str, namespace: str = "", at: float = 0.0, uptime: float = 0.0) -> Scrape:
    """Parse a /stats/prometheus page with prometheus_client; ValueError (naming the proxy) if it is not
    Prometheus text."""
    requests: dict[Labels, float] = {}
    buckets: dict[Labels, dict[float, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == REQUESTS:
                    k = _key(s.labels)
                    requests[k] = requests.get(k, 0.0) + s.value
                elif s.name == DURATION_BUCKET:
                    labels = dict(s.labels)
                    le = float(labels.pop("le", "nan"))
                    if math.isnan(le):
                        continue
                    per = buckets.setdefault(_key(labels), {})
                    per[le] = per.get(le, 0.0) + s.value
    except (ValueError, TypeError, IndexError) as e:
        raise ValueError(f"{proxy}: /stats/prometheus is not Prometheus text ({e})") from None
    return Scrape(proxy, namespace, at, uptime, requests,
                  {k: tuple(sorted(v.items())) for k, v in buckets.items()})


def counter_increase(before: float | None, after: float) -> float:
    """How much a counter grew between two readings; a counter that went down was reset (the process restarted)
    and everything it holds now is new (Prometheus' rate/increase rule)."""
    if before is None or after < before:
        return after
    return after - before


def _bucket_increase(before: Buckets | None, after: Buckets) -> Buckets:
    if before is None or (after and before and after[-1][1] < before[-1][1]):
        return after  # new series, or reset: the +Inf bucket (the count) went down
    old = dict(before)
    return tuple((le, max(0.0, c - old.get(le, 0.0))) for le, c in after)


@dataclass(frozen=True)
class Delta:
    """What one proxy counted during `seconds`."""

    proxy: str
    namespace: str
    seconds: float
    requests: Mapping[Labels, float]
    durations: Mapping[Labels, Buckets]


def delta(before: Scrape | None, after: Scrape) -> Delta:
    """The counts between two scrapes of one proxy; with no earlier scrape, since the proxy started."""
    if before is None:
        return Delta(after.proxy, after.namespace, after.uptime, after.requests, after.durations)
    return Delta(after.proxy, after.namespace, max(0.0, after.at - before.at),
                 {k: counter_increase(before.requests.get(k), v) for k, v in after.requests.items()},
                 {k: _bucket_increase(before.durations.get(k), v) for k, v in after.durations.items()})


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """Prometheus' `histogram_quantile(q, ...)` for classic buckets (promql/quantile.go `BucketQuantile`):
    (upper bound, cumulative count) pairs, +Inf required; equal bounds are added together, a count lower than
    the one before is raised to it (ensureMonotonic). The rank q*count is found in the first bucket whose
    cumulative count reaches it and interpolated linearly between that bucket's lower and upper bound (the first
    bucket's lower bound is 0); a rank in the +Inf bucket gives the highest finite bound. NaN when there are
    fewer than two buckets, no +Inf bucket or no observation; -Inf/+Inf for q < 0 / q > 1."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[le] = merged.get(le, 0.0) + count
    b = sorted(merged.items())
    if len(b) < 2 or not math.isinf(b[-1][0]) or b[-1][0] < 0:
        return math.nan
    highest = 0.0
    for i, (le, count) in enumerate(b):  # ensureMonotonic
        if count < highest:
            b[i] = (le, highest)
        else:
            highest = count
    observations = b[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    idx = next((i for i in range(len(b) - 1) if b[i][1] >= rank), len(b) - 1)
    if idx == len(b) - 1:
        return b[-2][0]
    if idx == 0 and b[0][0] <= 0:
        return b[0][0]
    start, end, count = 0.0, b[idx][0], b[idx][1]
    if idx > 0:
        start = b[idx - 1][0]
        count -= b[idx - 1][1]
        rank -= b[idx - 1][1]
    return start + (end - start) * (rank / count)


def success(response_code: str | None) -> bool:
    """Not a 5xx, and a response was sent (code 0 = the stream ended without one)."""
    code = response_code or "0"
    return not code.startswith("5") and code != "0"


@dataclass
class Row:
    """One line of the table: totals over its group and window."""

    namespace: str
    name: str
    requests: float = 0.0
    successes: float = 0.0
    mtls: float = 0.0
    policy_known: float = 0.0  # requests whose connection_security_policy is mutual_tls or none
    rps: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.requests if self.requests else None

    @property
    def mtls_share(self) -> float | None:
        return self.mtls / self.policy_known if self.policy_known else None

    def latency(self, q: float) -> float | None:
        value = histogram_quantile(q, self.buckets.items())
        return None if math.isnan(value) else value


def _group_of(kind: str, labels: Mapping[str, str], d: Delta) -> tuple[str, str]:
    if kind == "deploy":
        return labels.get("destination_workload_namespace", "unknown"), labels.get("destination_workload", "unknown")
    if kind == "svc":
        return labels.get("destination_service_namespace", "unknown"), labels.get("destination_service", "unknown")
    return d.namespace, d.proxy


def group(deltas: Iterable[Delta], kind: str, reporter: str | None = None) -> list[Row]:
    """Rows of `kind` (deploy, pod, svc) from every proxy's counts, counting only series whose `reporter` is
    `reporter` (default: DEFAULT_REPORTER[kind]). Every proxy gets a pod row, even one that served nothing."""
    reporter = reporter or DEFAULT_REPORTER[kind]
    rows: dict[tuple[str, str], Row] = {}

    def row(key: tuple[str, str]) -> Row:
        r = rows.get(key)
        if r is None:
            r = rows[key] = Row(*key)
        return r

    for d in deltas:
        if kind == "pod":
            row((d.namespace, d.proxy))
        for key, n in d.requests.items():
            labels = dict(key)
            if labels.get("reporter") != reporter or n <= 0:
                continue
            r = row(_group_of(kind, labels, d))
            r.requests += n
            if success(labels.get("response_code")):
                r.successes += n
            policy = labels.get("connection_security_policy")
            if policy in ("mutual_tls", "none"):
                r.policy_known += n
                r.mtls += n if policy == "mutual_tls" else 0
            if d.seconds > 0:
                r.rps += n / d.seconds
        for key, buckets in d.durations.items():
            labels = dict(key)
            if labels.get("reporter") != reporter:
                continue
            r = row(_group_of(kind, labels, d))
            for le, c in buckets:
                r.buckets[le] = r.buckets.get(le, 0.0) + c
    return sorted((r for r in rows.values() if kind == "pod" or r.requests > 0),
                  key=lambda r: (r.namespace, r.name))


def select(rows: Sequence[Row], namespace: str | None = None, name: str = "") -> list[Row]:
    """Rows of one namespace (None: all) and, when `name` is given, that one resource: its full name, or the
    part before the first dot (a pod `reviews-v1.default`, a service `reviews.default.svc.cluster.local`)."""
    return [r for r in rows if (namespace is None or r.namespace == namespace)
            and (not name or name in (r.name, r.name.split(".", 1)[0]))]


HEADER = ("NAMESPACE", "NAME", "REQUESTS", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "MTLS")
QUANTILES = (0.5, 0.95, 0.99)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def _pct(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def table_rows(rows: Iterable[Row]) -> list[list[str]]:
    """linkerd's formats: `100.00%`, `1.3rps`, `12ms` (one decimal under 10 ms), `-` where nothing was counted."""
    return [[r.namespace, r.name, f"{r.requests:.0f}", _pct(r.success_rate, 2),
             f"{r.rps:.1f}rps" if r.requests else "-", *(_ms(r.latency(q)) for q in QUANTILES),
             _pct(r.mtls_share, 0)] for r in rows]


def json_rows(rows: Iterable[Row]) -> list[dict]:
    return [{"namespace": r.namespace, "name": r.name, "requests": r.requests, "success_rate": r.success_rate,
             "rps": r.rps, "latency_ms_p50": r.latency(0.5), "latency_ms_p95": r.latency(0.95),
             "latency_ms_p99": r.latency(0.99), "mtls_share": r.mtls_share} for r in rows]
