"""Admin stats against Envoy: `/stats` names and `/stats/prometheus` names, tags and `# TYPE`s.

Both proxies of the `sidecar` fragment get the same requests (a 200, a 404, a 503), then each admin is read.
Values are not compared (Envoy's admin counts its own requests, and the harness sends Envoy extra marker
requests for its access log); what a dashboard or an alert depends on is: the names, the label sets, the types.
Envoy creates many stats pyproxy has no use for, so each row checks that what pyproxy prints Envoy prints the
same way (pyproxy invents no name, no label, no type). Listener names carry the port: normalised to `PORT`.
Each row counts in the session's "N cases, M identical" line.
"""
from __future__ import annotations

import json
import re

import pytest

from tests.oracle.harness import Case, tally
from tests.oracle.proxies import admin_get

pytestmark = pytest.mark.asyncio(loop_scope="module")

PORT = re.compile(r"127\.0\.0\.1_\d+")


async def scrape(differential) -> tuple[dict[str, str], dict[str, str]]:
    """{'stats': text, 'prometheus': text} for (Envoy, pyproxy), after the same three requests to each."""
    pair = await differential.pair("sidecar")
    for path in ("/", "/status/404", "/status/503"):
        await pair.run(Case(f"stats-{path}", f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
    out = []
    for url in pair.admin_urls:
        out.append({"stats": PORT.sub("127.0.0.1_PORT", await admin_get(url, "/stats")),
                    "prometheus": PORT.sub("127.0.0.1_PORT", await admin_get(url, "/stats/prometheus"))})
    return out[0], out[1]


def stat_names(text: str) -> set[str]:
    return {line.split(": ", 1)[0] for line in text.splitlines() if ": " in line}


def prometheus_types(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M)}


def prometheus_series(text: str) -> set[str]:
    """Sample name + labels (label values kept, sample values dropped), from the envoy_* families only."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("envoy_")}


def verdict(case_id: str, extra: set | dict) -> None:
    tally(case_id, not extra)
    assert not extra, f"{case_id}: pyproxy prints what Envoy does not: {sorted(extra)[:40]}"


async def test_stats_names_are_envoys(differential):
    envoy, pyproxy = await scrape(differential)
    verdict("admin-stats-names", stat_names(pyproxy["stats"]) - stat_names(envoy["stats"]))


async def test_prometheus_types_are_envoys(differential):
    """Envoy types every counter `counter`, under its exact name (pyproxy printed `untyped` for the ones
    not ending in _total)."""
    envoy, pyproxy = await scrape(differential)
    theirs, ours = prometheus_types(envoy["prometheus"]), prometheus_types(pyproxy["prometheus"])
    ours = {name: kind for name, kind in ours.items() if name.startswith("envoy_")}
    verdict("admin-prometheus-types", {n: k for n, k in ours.items() if theirs.get(n) != k})
    assert "untyped" not in pyproxy["prometheus"]


async def test_prometheus_names_and_tags_are_envoys(differential):
    envoy, pyproxy = await scrape(differential)
    verdict("admin-prometheus-series", prometheus_series(pyproxy["prometheus"]) - prometheus_series(envoy["prometheus"]))


def _listeners_shape(text: str, as_json: str) -> tuple[str, object]:
    """`/listeners` and `/listeners?format=json` with each bound port replaced by PORT (the rest compared)."""
    def no_port(node):
        if isinstance(node, dict):
            return {k: ("PORT" if k == "port_value" else no_port(v)) for k, v in node.items()}
        return [no_port(v) for v in node] if isinstance(node, list) else node
    return re.sub(r":\d+$", ":PORT", text, flags=re.M), no_port(json.loads(as_json))


async def test_admin_listeners_are_envoys(differential):
    """The README's admin `/listeners`: `name::address:port` lines, and `listener_statuses` as JSON."""
    pair = await differential.pair("sidecar")
    envoy, pyproxy = [_listeners_shape(await admin_get(url, "/listeners"),
                                       await admin_get(url, "/listeners?format=json")) for url in pair.admin_urls]
    tally("admin-listeners", envoy == pyproxy)
    assert pyproxy == envoy
    assert pyproxy[0].count("::127.0.0.1:PORT\n") >= 1
