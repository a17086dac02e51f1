"""The benchmark's figures as one SVG: people compare proxies by looking. Pure: rows in, SVG text out.

Four panels of horizontal bars, one bar per row (direct, floor, pyproxy, Envoy, nginx; a row without the
figure is left out of that panel): requests/s (closed loop), proxy CPU µs per request, p99 added over direct
at each fixed rate, and RSS after the run. Written by hand (a few rectangles and labels) rather than with
matplotlib, which would be a new dependency for four bar charts. Colours are fixed per proxy so the eye finds
the same proxy in every panel.
"""
from __future__ import annotations

from html import escape
from typing import Callable

from benchmarks.report import Row, added_latency

COLOURS = {"direct": "#9e9e9e", "floor": "#8d6e63", "pyproxy": "#1e88e5", "pyproxy-compiled": "#3949ab", "envoy": "#e53935", "nginx": "#43a047"}
WIDTH, BAR_H, GAP, LABEL_W, VALUE_W = 760, 18, 6, 90, 110
PANEL_TITLE_H = 26


def _panel(y: int, title: str, bars: list[tuple[str, float, str]]) -> tuple[list[str], int]:
    """SVG elements for one panel starting at `y`, and the y after it. `bars`: (name, value, label)."""
    out = [f'<text x="10" y="{y + 18}" font-size="14" font-weight="bold">{escape(title)}</text>']
    y += PANEL_TITLE_H
    span = max((abs(v) for _, v, _ in bars), default=0) or 1.0
    usable = WIDTH - LABEL_W - VALUE_W - 20
    for name, value, label in bars:
        length = max(1.0, usable * abs(value) / span)
        colour = COLOURS.get(name, "#607d8b")
        out.append(f'<text x="{LABEL_W}" y="{y + 13}" font-size="12" text-anchor="end">{escape(name)}</text>')
        out.append(f'<rect x="{LABEL_W + 8}" y="{y}" width="{length:.1f}" height="{BAR_H}" fill="{colour}"/>')
        out.append(f'<text x="{LABEL_W + 14 + length:.1f}" y="{y + 13}" font-size="12">{escape(label)}</text>')
        y += BAR_H + GAP
    if not bars:
        out.append(f'<text x="{LABEL_W}" y="{y + 13}" font-size="12" fill="#777">not measured</text>')
        y += BAR_H + GAP
    return out, y + 10


def _bars(rows: list[Row], value: Callable[[Row], float | None], unit: Callable[[float], str]
          ) -> list[tuple[str, float, str]]:
    found = ((row.name, value(row)) for row in rows)
    return [(name, v, unit(v)) for name, v in found if v is not None]


def render_svg(rows: list[Row], rates: list[float], title: str = "") -> str:
    """The SVG document for `rows` (the same rows as the markdown report)."""
    panels: list[tuple[str, list[tuple[str, float, str]]]] = [
        ("requests/s (closed loop, one worker each; higher is better)",
         _bars(rows, lambda r: r.throughput.rps if r.throughput else None, lambda v: f"{v:,.0f}/s")),
        ("proxy CPU µs per request (lower is better)",
         _bars([r for r in rows if r.name != "direct"],
               lambda r: r.throughput.proxy_cpu_us if r.throughput else None, lambda v: f"{v:,.1f} µs")),
    ]
    for rate in rates:
        def added(row: Row, rate: float = rate) -> float | None:
            a = added_latency(rows, row.name, rate=rate)
            return a[2] if a is not None else None
        panels.append((f"p99 added over direct at {rate:,.0f} req/s, open loop (lower is better)",
                       _bars([r for r in rows if r.name != "direct"], added, lambda v: f"{v:+,.0f} µs")))
    panels.append(("RSS after the run (lower is better)",
                   _bars(rows, lambda r: r.rss_bytes, lambda v: f"{v / 1e6:,.1f} MB")))
    body: list[str] = []
    y = 40
    for heading, bars in panels:
        elements, y = _panel(y, heading, bars)
        body += elements
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y + 10}" '
            f'viewBox="0 0 {WIDTH} {y + 10}" font-family="sans-serif">',
            f'<rect width="{WIDTH}" height="{y + 10}" fill="white"/>',
            '<text x="10" y="22" font-size="16" font-weight="bold">pyproxy vs Envoy vs nginx (make bench)</text>',
            f'<text x="{WIDTH - 10}" y="22" font-size="11" text-anchor="end" fill="#555">{escape(title)}</text>']
    return "\n".join(head + body + ["</svg>"]) + "\n"
