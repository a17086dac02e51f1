"""Envoy's stats store: named counters, gauges and histograms, and the admin renderings of them.

Where it sits: every layer of the proxy counts things under Envoy's names (`cluster.<name>.upstream_rq_total`,
`http.<stat_prefix>.downstream_rq_2xx`, `listener.<address>.downstream_cx_total`, ...). A component asks the
store (or a `Scope` with its prefix) for its stat objects ONCE, keeps the references, and on the hot path
does `counter.inc()` or `counter.value += 1`: an attribute store on a `__slots__` object, no dict lookup,
no lock (each worker process has its own store, like Envoy's per-thread caches merged at flush).

Renderers are pure functions of a store, for the admin endpoints (Envoy `source/server/admin/stats_*`):
- `render_text`: `GET /stats` — `name: value` lines sorted by name; histograms as Envoy's quantile summary
  `P0(interval,cumulative) P25(..) ... P100(..)` or `No recorded values`.
- `render_json`: `GET /stats?format=json` — `{"stats":[{"name":..,"value":..},...,{"histograms":{...}}]}`.
- `render_prometheus`: `GET /stats/prometheus` — tags extracted from names by Envoy's default tag
  extractors (`source/common/config/well_known_names.cc`), names prefixed `envoy_` and sanitised, in Envoy's
  own text: `# TYPE` lines (no HELP), counters then gauges then histograms, integer values.
Each takes `filter` (a regex searched in the stat name, as Envoy's `filter=`) and `used_only` (`usedonly`).
`StatsQuery.from_params` reads those admin query parameters.

Histograms have Envoy's default fixed buckets (`source/common/stats/histogram_impl.h`, defaultBuckets), in the
histogram's unit (ms by default). Quantiles are interpolated within those buckets (Envoy uses a
log-linear histogram, so values differ in the last digits). "Interval" values cover the span between the two
latest `Stats.latch()` calls (the server calls it on its stats flush timer, Envoy's default 5 s); before
the first latch they are `nan`.

Why the text is written here and not by prometheus_client: its writer names every counter family
`<name>_total`, so Envoy's counters without that suffix (`envoy_cluster_upstream_rq{envoy_response_code=..}`,
`envoy_cluster_upstream_cx_connect_fail`) could only be printed as `untyped`. Envoy types every counter as
`counter` under its exact name; so does this text (tests/differential/test_admin_stats_differential.py).
Extension collectors (Istio's families) are written as prometheus_client's exposition writes them
(`families_text`), without importing it.
"""
from __future__ import annotations

import asyncio
import math
import re
import time
from bisect import bisect_left
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Mapping

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_TAG_EXTRACTORS",
    "SUPPORTED_QUANTILES",
    "Counter",
    "Gauge",
    "Histogram",
    "Scope",
    "Stats",
    "StatsQuery",
    "TagExtractor",
    "extract_tags",
    "render_json",
    "render_prometheus",
    "render_text",
]

# Envoy's default histogram bucket bounds (source/common/stats/histogram_impl.h).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)
# Envoy's supported quantiles for the admin summary (HistogramStatisticsImpl::supportedQuantiles).
SUPPORTED_QUANTILES: tuple[float, ...] = (0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1)

GAUGE_IMPORT_MODES = ("accumulate", "never_import")
HISTOGRAM_UNITS = ("unspecified", "bytes", "us", "ms", "percent")


class Counter:
    """A monotonically increasing count. Hot path: `c.inc()` or `c.value += 1`."""

    __slots__ = ("name", "value")

    def __init__(self, name: str):
        self.name = name
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def add(self, amount: int = 1) -> None:  # (a method, not `add = inc`: the compiled build needs real methods)
        self.value += amount

    @property
    def used(self) -> bool:
        return self.value != 0

    def __repr__(self) -> str:
        return f"Counter({self.name}: {self.value})"


class Gauge:
    """A value that goes up and down (active connections, pending requests)."""

    __slots__ = ("name", "value", "import_mode", "used")

    def __init__(self, name: str, import_mode: str = "accumulate"):
        self.name = name
        self.value = 0
        self.import_mode = import_mode
        self.used = False

    def inc(self, amount: int = 1) -> None:
        self.value += amount
        self.used = True

    def dec(self, amount: int = 1) -> None:
        self.value -= amount
        self.used = True

    def set(self, value: int) -> None:
        self.value = value
        self.used = True

    def add(self, amount: int = 1) -> None:
        self.inc(amount)

    def sub(self, amount: int = 1) -> None:
        self.dec(amount)

    def __repr__(self) -> str:
        return f"Gauge({self.name}: {self.value})"


class Histogram:
    """Recorded values in Envoy's fixed buckets: `h.record(12.5)`."""

    __slots__ = ("name", "unit", "bounds", "counts", "sum", "_latched", "interval_counts", "interval_sum",
                 "_latched_sum")

    def __init__(self, name: str, unit: str = "ms", bounds: tuple[float, ...] = DEFAULT_BUCKETS):
        self.name = name
        self.unit = unit
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot: above the largest bound (+Inf)
        self.sum = 0.0
        self._latched = [0] * (len(bounds) + 1)
        self._latched_sum = 0.0
        self.interval_counts: list[int] | None = None
        self.interval_sum = 0.0

    def record(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (Prometheus `le`).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def used(self) -> bool:
        return any(self.counts)

    def latch(self) -> None:
        """Close the current interval: its counts become `interval_counts`."""
        self.interval_counts = [c - p for c, p in zip(self.counts, self._latched)]
        self.interval_sum = self.sum - self._latched_sum
        self._latched = list(self.counts)
        self._latched_sum = self.sum

    def cumulative_buckets(self) -> list[int]:
        """Counts at or below each bound, then the total (+Inf), as Prometheus wants them."""
        out, running = [], 0
        for c in self.counts:
            running += c
            out.append(running)
        return out

    def quantiles(self, qs: Iterable[float] = SUPPORTED_QUANTILES, *, interval: bool = False) -> list[float]:
        counts = self.interval_counts if interval else self.counts
        if counts is None:
            return [math.nan for _ in qs]
        return _quantiles(counts, self.bounds, qs)

    def __repr__(self) -> str:
        return f"Histogram({self.name}: count={self.count} sum={self.sum:g}{self.unit})"


def _quantiles(counts: list[int], bounds: tuple[float, ...], qs: Iterable[float]) -> list[float]:
    """Linear interpolation inside the bucket holding each rank (Prometheus histogram_quantile style)."""
    total = sum(counts)
    if total == 0:
        return [math.nan for _ in qs]
    out = []
    for q in qs:
        rank = q * total
        below = 0
        for i, c in enumerate(counts):
            if c and below + c >= rank:
                lower = bounds[i - 1] if i > 0 else 0.0
                if i == len(bounds):  # beyond the last bound: nothing to interpolate towards
                    out.append(float(bounds[-1]))
                else:
                    fraction = 0.0 if q == 0 else (rank - below) / c
                    out.append(lower + (bounds[i] - lower) * fraction)
                break
            below += c
        else:  # pragma: no cover - rank <= total always finds a bucket
            out.append(math.nan)
    return out


class Stats:
    """The store: each stat created once and cached by its full name."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}
        # stores that are not name -> value stats (Istio's labelled metrics), by key; each may offer
        # `collector()` for /stats/prometheus (pyproxy.observe.istio_metrics)
        self.extensions: dict[str, Any] = {}

    def extension(self, key: str, make: Any) -> Any:
        """The store's extension `key`, made by `make()` on first use (kept for the store's lifetime)."""
        ext = self.extensions.get(key)
        if ext is None:
            ext = self.extensions[key] = make()
        return ext

    def _create(self, kind: str, name: str, make: Any) -> Any:
        """Slow path: first use of a name. A name belongs to one kind of stat only."""
        tables: dict[str, dict[str, Any]] = {"counter": self._counters, "gauge": self._gauges,
                                             "histogram": self._histograms}
        for other, table in tables.items():
            if other != kind and name in table:
                raise ValueError(f"stat {name!r} already exists as a {other}, cannot create it as a {kind}")
        stat = tables[kind][name] = make()
        return stat

    def counter(self, name: str) -> Counter:
        return self._counters.get(name) or self._create("counter", name, lambda: Counter(name))

    def gauge(self, name: str, mode: str = "accumulate") -> Gauge:
        if mode not in GAUGE_IMPORT_MODES:
            raise ValueError(f"gauge {name!r}: import mode {mode!r}, expected one of {GAUGE_IMPORT_MODES}")
        return self._gauges.get(name) or self._create("gauge", name, lambda: Gauge(name, mode))

    def histogram(self, name: str, unit: str = "ms") -> Histogram:
        if unit not in HISTOGRAM_UNITS:
            raise ValueError(f"histogram {name!r}: unit {unit!r}, expected one of {HISTOGRAM_UNITS}")
        return self._histograms.get(name) or self._create("histogram", name, lambda: Histogram(name, unit))

    def scope(self, prefix: str) -> "Scope":
        return Scope(self, _scope_prefix("", prefix))

    def counters(self) -> Iterator[Counter]:
        return iter(list(self._counters.values()))

    def gauges(self) -> Iterator[Gauge]:
        return iter(list(self._gauges.values()))

    def histograms(self) -> Iterator[Histogram]:
        return iter(list(self._histograms.values()))

    def latch(self) -> None:
        """End a stats interval (histogram interval quantiles); the server calls this on its flush timer."""
        for h in self._histograms.values():
            h.latch()

    def __repr__(self) -> str:
        return (f"Stats({len(self._counters)} counters, {len(self._gauges)} gauges, "
                f"{len(self._histograms)} histograms)")


def _scope_prefix(base: str, prefix: str) -> str:
    # Envoy's createScope("cluster.backend") yields names "cluster.backend.<stat>": add the dot if missing.
    if prefix and not prefix.endswith("."):
        prefix += "."
    return base + prefix


class Scope:
    """A view of a store that prefixes every name: `stats.scope("cluster.backend.").counter("upstream_rq_total")`."""

    __slots__ = ("store", "prefix")

    def __init__(self, store: Stats, prefix: str):
        self.store = store
        self.prefix = prefix

    def counter(self, name: str) -> Counter:
        return self.store.counter(self.prefix + name)

    def gauge(self, name: str, mode: str = "accumulate") -> Gauge:
        return self.store.gauge(self.prefix + name, mode)

    def histogram(self, name: str, unit: str = "ms") -> Histogram:
        return self.store.histogram(self.prefix + name, unit)

    def scope(self, prefix: str) -> "Scope":
        return Scope(self.store, _scope_prefix(self.prefix, prefix))

    def __repr__(self) -> str:
        return f"Scope({self.prefix!r})"


# ---------------------------------------------------------------- admin query

STAT_TYPES = ("All", "Counters", "Gauges", "Histograms")


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """The admin `/stats` query parameters Envoy understands (a subset)."""

    filter: re.Pattern[str] | None = None
    used_only: bool = False
    format: str = "text"  # text | json | prometheus
    type: str = "All"

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> "StatsQuery":
        """`filter=<regex>`, `usedonly` (present = on), `format=json|prometheus`, `type=Counters|...`.

        Raises ValueError with a message fit for a 400 response.
        """
        pattern = params.get("filter")
        compiled = None
        if pattern:
            try:
                compiled = re.compile(pattern)
            except re.error as e:
                raise ValueError(f"filter: invalid regex {pattern!r}: {e}") from None
        fmt = params.get("format", "text") or "text"
        if fmt not in ("text", "json", "prometheus"):
            raise ValueError(f"format: {fmt!r} is not one of text, json, prometheus")
        typ = params.get("type", "All") or "All"
        if typ not in STAT_TYPES:
            raise ValueError(f"type: {typ!r} is not one of {', '.join(STAT_TYPES)}")
        return cls(filter=compiled, used_only="usedonly" in params, format=fmt, type=typ)


def _pattern(filter: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    if filter is None or isinstance(filter, re.Pattern):
        return filter
    try:
        return re.compile(filter)
    except re.error as e:
        raise ValueError(f"filter: invalid regex {filter!r}: {e}") from None


def _select(stats: Stats, filter: str | re.Pattern[str] | None, used_only: bool, type: str
            ) -> tuple[list[Counter | Gauge], list[Histogram]]:
    pattern = _pattern(filter)

    def keep(stat: Any) -> bool:
        return (not used_only or stat.used) and (pattern is None or pattern.search(stat.name) is not None)

    scalars: list[Counter | Gauge] = []
    if type in ("All", "Counters"):
        scalars.extend(c for c in stats.counters() if keep(c))
    if type in ("All", "Gauges"):
        scalars.extend(g for g in stats.gauges() if keep(g))
    histograms = [h for h in stats.histograms() if keep(h)] if type in ("All", "Histograms") else []
    scalars.sort(key=lambda s: s.name)
    histograms.sort(key=lambda h: h.name)
    return scalars, histograms


def _num(value: float) -> str:
    """A double as Envoy's fmt prints it: no trailing ".0", "nan"; 12 digits hide float noise."""
    if math.isnan(value):
        return "nan"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".12g")


def _quantile_summary(h: Histogram) -> str:
    if not h.used:
        return "No recorded values"
    interval = h.quantiles(interval=True)
    cumulative = h.quantiles()
    return " ".join(
        f"P{_num(100 * q)}({_num(i)},{_num(c)})" for q, i, c in zip(SUPPORTED_QUANTILES, interval, cumulative)
    )


def render_text(stats: Stats, *, filter: str | re.Pattern[str] | None = None, used_only: bool = False,
                type: str = "All") -> str:
    """Envoy's `/stats`: counters and gauges as `name: value` sorted by name, then histograms."""
    scalars, histograms = _select(stats, filter, used_only, type)
    lines = [f"{s.name}: {s.value}\n" for s in scalars]
    lines.extend(f"{h.name}: {_quantile_summary(h)}\n" for h in histograms)
    return "".join(lines)


def render_json(stats: Stats, *, filter: str | re.Pattern[str] | None = None, used_only: bool = False,
                type: str = "All") -> str:
    """Envoy's `/stats?format=json`; histograms as `supported_quantiles` + `computed_quantiles`."""
    import json

    scalars, histograms = _select(stats, filter, used_only, type)
    entries: list[dict[str, Any]] = [{"name": s.name, "value": s.value} for s in scalars]
    if histograms:
        def value(x: float) -> float | int | None:
            return None if math.isnan(x) else _json_number(x)

        computed = []
        for h in histograms:
            interval, cumulative = h.quantiles(interval=True), h.quantiles()
            computed.append({
                "name": h.name,
                "values": [{"interval": value(i), "cumulative": value(c)} for i, c in zip(interval, cumulative)],
            })
        entries.append({"histograms": {
            "supported_quantiles": [_json_number(100 * q) for q in SUPPORTED_QUANTILES],
            "computed_quantiles": computed,
        }})
    return json.dumps({"stats": entries}, separators=(",", ":")) + "\n"


def _json_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


# ---------------------------------------------------------------- tag extraction (Prometheus)


@dataclass(frozen=True, slots=True)
class TagExtractor:
    """Envoy's TagExtractor: pulls one tag value out of a stat name and says which characters to drop.

    Regex form: group 1 is removed from the name, group 2 is the value (Envoy's TagExtractorStdRegexImpl).
    Token form: "cluster.$.**" — `*` one token, `**` one or more, `$` the value (TagExtractorTokensImpl).
    """

    name: str
    regex: re.Pattern[str] | None = None
    tokens: tuple[str, ...] = ()
    substr: str = ""  # cheap pre-check: skip names that do not contain it
    negative_match: str = ""  # a value that is never a tag (e.g. listener "admin")

    @classmethod
    def from_regex(cls, name: str, regex: str, substr: str = "", negative_match: str = "") -> "TagExtractor":
        return cls(name, regex=re.compile(regex), substr=substr, negative_match=negative_match)

    @classmethod
    def from_tokens(cls, name: str, tokens: str) -> "TagExtractor":
        parts = tuple(tokens.split("."))
        if parts.count("$") != 1:
            raise ValueError(f"tag extractor {name!r}: token pattern {tokens!r} needs exactly one '$'")
        return cls(name, tokens=parts)

    def extract(self, stat_name: str) -> tuple[str, int, int] | None:
        """(value, start, end) of the characters to remove, or None when this tag is not in the name."""
        if self.substr and self.substr not in stat_name:
            return None
        if self.regex is not None:
            m = self.regex.search(stat_name)
            if m is None:
                return None
            value = m.group(2)
            if self.negative_match and value == self.negative_match:
                return None
            return value, m.start(1), m.end(1)
        return self._extract_tokens(stat_name)

    def _extract_tokens(self, stat_name: str) -> tuple[str, int, int] | None:
        words = stat_name.split(".")
        found = _match_tokens(self.tokens, 0, words, 0, 0, None)
        if found is None or found is _NO_MATCH:
            return None
        index, start = found
        value = words[index]
        end = start + len(value)
        if index < len(words) - 1:
            end += 1  # remove the dot before the next token: "ab." or "cd."
        elif start > 0:
            start -= 1  # last token: remove the dot before it: ".ef"
        return value, start, end


_NO_MATCH: Any = object()


def _match_tokens(pattern: tuple[str, ...], p: int, words: list[str], w: int, char: int,
                  found: tuple[int, int] | None) -> Any:
    """Envoy's TagExtractorTokensImpl::searchTags.

    Returns `_NO_MATCH`, or (index of the word matched by `$`, its character offset) — None when the `$`
    was not in the part of the pattern this call matched.
    """
    while p < len(pattern) and w < len(words):
        token = pattern[p]
        if token == "$":
            found = (w, char)
        elif token == "**":
            if p == len(pattern) - 1:
                return found  # a trailing ** takes the rest (at least one word, as in Envoy)
            for start in range(w, len(words)):  # a middle ** takes zero or more words
                rest = _match_tokens(pattern, p + 1, words, start, char, found)
                if rest is not _NO_MATCH:
                    return rest
                char += len(words[start]) + 1
            return _NO_MATCH
        elif token != "*" and token != words[w]:
            return _NO_MATCH
        char += len(words[w]) + 1
        p += 1
        w += 1
    return found if p == len(pattern) and w == len(words) else _NO_MATCH


def _re(name: str, regex: str, substr: str = "", negative_match: str = "") -> TagExtractor:
    # The placeholders of Envoy's well_known_names.cc, in Python `re` syntax.
    regex = (regex
             .replace("<ADDRESS>", r"(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)")
             .replace("<CIPHER>", r"[\w-]+")
             .replace("<TAG_VALUE>", r"[^\.]+")
             .replace("<ROUTE_CONFIG_NAME>", r"[\w.-]+"))
    return TagExtractor.from_regex(name, regex, substr, negative_match)


_tok = TagExtractor.from_tokens

# Envoy's default tag extractors, in Envoy's order (source/common/config/well_known_names.cc). Left out:
# DynamoDB, SSL curves/sigalgs/versions and a few filters pyproxy does not have.
DEFAULT_TAG_EXTRACTORS: tuple[TagExtractor, ...] = (
    _re("envoy.response_code", r"_rq(_(\d{3}))$", "_rq_"),
    _re("envoy.response_code_class", r"_rq_((\d))xx$", "_rq_"),
    _tok("envoy.mongo_callsite", "mongo.*.collection.*.callsite.$.query.**"),
    _tok("envoy.mongo_collection", "mongo.*.collection.$.**.query.*"),
    _tok("envoy.mongo_cmd", "mongo.*.cmd.$.**"),
    _tok("envoy.grpc_bridge_method", "cluster.*.grpc.*.$.**"),
    _tok("envoy.http_user_agent", "http.*.user_agent.$.**"),
    _tok("envoy.virtual_cluster", "vhost.*.vcluster.$.**"),
    _tok("envoy.fault_downstream_cluster", "http.*.fault.$.**"),
    _re("envoy.ssl_cipher", r"^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$", ".ssl.ciphers."),
    _re("cipher_suite", r"^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.(<CIPHER>))$", ".ssl.ciphers."),
    _tok("envoy.grpc_bridge_service", "cluster.*.grpc.$.**"),
    _tok("envoy.tcp_prefix", "tcp.$.**"),
    _tok("envoy.udp_prefix", "udp.$.**"),
    _tok("envoy.clientssl_prefix", "auth.clientssl.$.**"),
    _tok("envoy.ratelimit_prefix", "ratelimit.$.**"),
    _tok("envoy.cluster_name", "cluster.$.**"),
    _re("envoy.http_conn_manager_prefix", r"^listener\..*?\.http\.((<TAG_VALUE>)\.)", ".http."),
    _tok("envoy.ext_authz_prefix", "cluster.*.ext_authz.$.**"),
    _tok("envoy.ext_authz_prefix", "http.*.ext_authz.$.**"),
    _tok("envoy.http_conn_manager_prefix", "http.$.**"),
    _re("envoy.worker_id",
        r"^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)\.|server\.|listener_manager\.)worker_((\d+)\.)"),
    _re("envoy.listener_address", r"^listener\.((<ADDRESS>|<TAG_VALUE>)\.)", "", "admin"),
    _tok("envoy.virtual_host", "vhost.$.**"),
    _tok("envoy.mongo_prefix", "mongo.$.**"),
    _re("envoy.rds_route_config", r"^http\.<TAG_VALUE>\.rds\.((<ROUTE_CONFIG_NAME>)\.)\w+?$", ".rds."),
    _tok("envoy.route", "vhost.*.route.$.**"),
    _tok("envoy.thrift_prefix", "thrift.$.**"),
    _tok("envoy.redis_prefix", "redis.$.**"),
    _tok("envoy.local_http_ratelimit_prefix", "$.http_local_rate_limit.**"),
    _tok("envoy.local_network_ratelimit_prefix", "local_rate_limit.$.**"),
)


def extract_tags(name: str, extractors: tuple[TagExtractor, ...] = DEFAULT_TAG_EXTRACTORS
                 ) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Envoy's TagProducer: (tag-extracted name, ((tag, value), ...)) — every extractor sees the full name."""
    if extractors is DEFAULT_TAG_EXTRACTORS:
        return _extract_default(name)
    return _extract(name, extractors)


@lru_cache(maxsize=65536)
def _extract_default(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return _extract(name, DEFAULT_TAG_EXTRACTORS)


def _extract(name: str, extractors: tuple[TagExtractor, ...]) -> tuple[str, tuple[tuple[str, str], ...]]:
    tags: list[tuple[str, str]] = []
    remove = bytearray(len(name))
    for extractor in extractors:
        found = extractor.extract(name)
        if found is None:
            continue
        value, start, end = found
        tags.append((extractor.name, value))
        remove[start:end] = b"\x01" * (end - start)
    if not tags:
        return name, ()
    return "".join(ch for i, ch in enumerate(name) if not remove[i]), tuple(tags)


_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _sanitize(name: str) -> str:
    """Envoy's PrometheusStatsFormatter::sanitizeName: anything but [a-zA-Z0-9_] becomes '_'."""
    return _INVALID.sub("_", name)


def _le(bound: float) -> str:
    return _num(float(bound))


_KIND_ORDER = {"counter": 0, "gauge": 1, "histogram": 2}


def _families(scalars: list[Counter | Gauge], histograms: list[Histogram], extractors: tuple[TagExtractor, ...]
              ) -> list[tuple[str, str, list[tuple[str, tuple[tuple[str, str], ...], str]]]]:
    """(family name, type, [(sample name, labels, value text)]) in Envoy's order: counters, then gauges, then
    histograms, each sorted by name. Labels in extraction order, as Envoy prints them
    (`{envoy_response_code="200",envoy_cluster_name="backend"}`, checked in tests/differential)."""
    families: dict[tuple[str, str], list[tuple[str, tuple[tuple[str, str], ...], str]]] = {}

    def family(stat_name: str, kind: str) -> tuple[list, str, tuple[tuple[str, str], ...]]:
        extracted, tags = extract_tags(stat_name, extractors)
        prom = "envoy_" + _sanitize(extracted)
        labels = tuple((_sanitize(k), v) for k, v in tags)
        return families.setdefault((prom, kind), []), prom, labels

    for stat in scalars:
        samples, name, labels = family(stat.name, "counter" if isinstance(stat, Counter) else "gauge")
        samples.append((name, labels, _num(stat.value)))
    for h in histograms:
        samples, name, labels = family(h.name, "histogram")
        for bound, cumulative in zip((*map(_le, h.bounds), "+Inf"), h.cumulative_buckets()):
            samples.append((name + "_bucket", (*labels, ("le", bound)), str(cumulative)))
        samples.append((name + "_sum", labels, _num(h.sum)))
        samples.append((name + "_count", labels, str(h.count)))
    ordered = sorted(families.items(), key=lambda kv: (_KIND_ORDER[kv[0][1]], kv[0][0]))
    return [(name, kind, samples) for (name, kind), samples in ordered]


def _label_text(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    escaped = (v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for _, v in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, escaped)) + "}"


def _envoy_text(families: list[tuple[str, str, list[tuple[str, tuple[tuple[str, str], ...], str]]]]) -> str:
    """Envoy's /stats/prometheus text (PrometheusStatsFormatter): `# TYPE name type` (no HELP), then the samples."""
    out: list[str] = []
    for name, kind, samples in families:
        out.append(f"# TYPE {name} {kind}\n")
        out.extend(f"{sample}{_label_text(labels)} {value}\n" for sample, labels, value in samples)
    return "".join(out)


def render_prometheus(stats: Stats, *, filter: str | re.Pattern[str] | None = None, used_only: bool = False,
                      extractors: tuple[TagExtractor, ...] = DEFAULT_TAG_EXTRACTORS) -> str:
    """Envoy's `/stats/prometheus`: Envoy's own text for the store's stats, then each extension's collector
    (Istio's families) in prometheus_client's exposition (`families_text`)."""
    return "".join(prometheus_pieces(stats, filter=filter, used_only=used_only, extractors=extractors))


# How long a scrape may hold the event loop before it lets requests run (render_prometheus_async)
PROMETHEUS_SLICE_S = 0.001


async def render_prometheus_async(stats: Stats, *, filter: str | re.Pattern[str] | None = None,
                                  used_only: bool = False, slice_s: float = PROMETHEUS_SLICE_S,
                                  clock: Callable[[], float] = time.monotonic) -> str:
    """`render_prometheus` for the admin server: the same text, but the event loop serves requests between
    pieces. A demo sidecar's scrape (~780 Envoy stats, Istio's histograms with 20 labels a sample: ~0.5 MB) took
    16-34 ms in one go, a stall every scrape for every request on that proxy (the sidecar pair's p99)."""
    out: list[str] = []
    since = clock()
    for piece in prometheus_pieces(stats, filter=filter, used_only=used_only):
        out.append(piece)
        if clock() - since >= slice_s:
            await asyncio.sleep(0)  # one loop iteration: the requests that arrived meanwhile run now
            since = clock()
    return "".join(out)


def prometheus_pieces(stats: Stats, *, filter: str | re.Pattern[str] | None = None, used_only: bool = False,
                      extractors: tuple[TagExtractor, ...] = DEFAULT_TAG_EXTRACTORS) -> Iterator[str]:
    """The /stats/prometheus text one family at a time (an extension's family in chunks of samples): each piece
    is a bounded amount of work, and the pieces joined are the whole text."""
    scalars, histograms = _select(stats, filter, used_only, "All")
    for family in _families(scalars, histograms, extractors):
        yield _envoy_text([family])
    pattern = _pattern(filter)
    for ext in list(stats.extensions.values()):
        collector = ext.collector() if hasattr(ext, "collector") else None
        if collector is not None:
            for m in collector.collect():
                if pattern is None or pattern.search(m.name):
                    yield from _family_pieces(m)


# Samples per piece of one of an extension's families (Istio's histogram samples carry ~20 labels)
PIECE_SAMPLES = 40


def _family_pieces(m: "MetricFamily") -> Iterator[str]:
    """One family's text in pieces: its `# HELP` / `# TYPE` lines, then its samples `PIECE_SAMPLES` at a time
    (`families_text` is these pieces joined). A family prometheus_client must write itself is one piece."""
    if m.type not in ("counter", "histogram") or not _LEGACY_METRIC_NAME.fullmatch(m.name) or any(
            not _LEGACY_LABEL_NAME.fullmatch(k) for _, labels, _ in m.samples for k in labels):
        yield _prometheus_client_text(m)
        return
    name = m.name + "_total" if m.type == "counter" else m.name
    doc = m.documentation.replace("\\", "\\\\").replace("\n", "\\n")
    yield f"# HELP {name} {doc}\n# TYPE {name} {m.type}\n"
    samples = m.samples
    for start in range(0, len(samples), PIECE_SAMPLES):
        yield "".join(f"{sample}{_label_text(tuple(sorted(labels.items())))} {go_float(value)}\n"
                      for sample, labels, value in samples[start:start + PIECE_SAMPLES])


class MetricFamily:
    """One family an extension's collector yields (Istio's): what prometheus_client's `Metric` holds (`name`
    without `_total` for a counter, `type`, `documentation`, `samples` of (name, labels, value)), without
    importing prometheus_client (1.4 MiB of a sidecar's RSS, about 2 MiB after its first scrape; measured)."""

    __slots__ = ("name", "documentation", "type", "samples")

    def __init__(self, name: str, documentation: str, typ: str):
        self.name, self.documentation, self.type = name, documentation, typ
        self.samples: list[tuple[str, dict[str, str], float]] = []

    def add_sample(self, name: str, labels: dict[str, str], value: float) -> None:
        self.samples.append((name, labels, value))


_LEGACY_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LEGACY_LABEL_NAME = re.compile(r"(?!__)[a-zA-Z_][a-zA-Z0-9_]*")


def go_float(value: float) -> str:
    """A sample value as prometheus_client writes it (its floatToGoString: Go's formatting of a float64)."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def families_text(families: Iterable[MetricFamily]) -> str:
    """The Prometheus text of counter and histogram families, byte for byte what prometheus_client's
    generate_latest writes for them (`# HELP`, `# TYPE`, a counter's `_total`, labels sorted by name). A family
    of another type, or with a name prometheus_client would escape, is written by prometheus_client itself."""
    return "".join(piece for m in families for piece in _family_pieces(m))


def _prometheus_client_text(m: MetricFamily) -> str:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.metrics_core import Metric

    family = Metric(m.name, m.documentation, m.type)
    for sample in m.samples:
        family.add_sample(*sample)
    return generate_latest(_OneFamily(family)).decode("utf-8")  # type: ignore[arg-type]


class _OneFamily:
    """A collector of one family (what generate_latest takes)."""

    def __init__(self, family: Any):
        self.family = family

    def collect(self) -> Iterator[Any]:
        yield self.family
