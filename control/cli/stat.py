"""`meshctl stat deploy|pod|svc[/NAME] [NAME]`: per workload, pod or service success rate, requests/s, p50/p95/p99
latency and mTLS share, read from every sidecar's Istio metrics (like `linkerd viz stat`).

    meshctl stat deploy                 since each proxy started (one scrape; uptime from /server_info)
    meshctl stat svc --window 5         over 5 seconds (two scrapes)
    meshctl stat pod -n default --watch refreshed every --interval seconds, each frame over the last interval
    -o json                             the same rows as JSON (numbers, null where nothing was counted)

The proxies are the control plane's registered ones (/debug/syncz, found as `meshctl proxy-status` finds it:
--control, $MESHCTL_CONTROL, the running `make demo`), or `--admin HOST:PORT` (repeatable) directly. Each one's
/stats/prometheus is parsed with prometheus_client; the numbers are computed by control.viz.stat (pure). A proxy
that does not answer is a warning on stderr; none answering is exit code 1.
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence, TextIO

from control.cli.proxy import CONTROL_HELP, CommandError, EXIT_BAD_INPUT, _control, admin_url, fetch_json, fetch_text
from control.cli.term import LiveTable, print_table
from control.viz import stat as viz

RESOURCE_HELP = "deploy, pod or svc, optionally /NAME (kubectl's spellings: deployment, po, service...)"


class Target:
    """One proxy to scrape."""

    def __init__(self, name: str, namespace: str, admin: str):
        self.name, self.namespace, self.admin = name, namespace, admin


def parse_resource(text: str, name: str | None) -> tuple[str, str]:
    """`deploy/reviews-v1` or `deploy` + NAME -> ("deploy", "reviews-v1"); CommandError for an unknown kind."""
    kind, _, inline = text.partition("/")
    if kind.lower() not in viz.KINDS:
        raise CommandError(f"unknown resource {kind!r}: expected deploy, pod or svc")
    if inline and name:
        raise CommandError(f"give the name once: {text!r} and {name!r}")
    return viz.KINDS[kind.lower()], inline or name or ""


def uptime_seconds(server_info: dict) -> float:
    """Envoy's /server_info `uptime_current_epoch` is a protobuf JSON Duration (`"123s"`)."""
    text = str(server_info.get("uptime_current_epoch", "0s"))
    try:
        return float(text[:-1] if text.endswith("s") else text)
    except ValueError:
        return 0.0


def targets(args: argparse.Namespace) -> list[Target]:
    if args.admin:
        return [Target(a, "-", admin_url(a)) for a in args.admin]  # no registry: namespace unknown
    proxies = fetch_json(f"{_control(args)}/debug/syncz")
    return [Target(p["name"], p.get("namespace", ""), admin_url(p["admin"])) for p in proxies]


def scrape(t: Target) -> viz.Scrape:
    uptime = uptime_seconds(fetch_json(f"{t.admin}/server_info"))
    text = fetch_text(f"{t.admin}/stats/prometheus")
    at = time.monotonic()
    try:
        return viz.parse_scrape(text, proxy=t.name, namespace=t.namespace, at=at, uptime=uptime)
    except ValueError as e:
        raise CommandError(str(e)) from None


def scrape_all(ts: Sequence[Target], err: TextIO) -> dict[str, viz.Scrape]:
    """Every proxy at (nearly) the same moment; one that fails is a warning."""
    def one(t: Target) -> viz.Scrape | str:
        try:
            return scrape(t)
        except CommandError as e:
            return f"Warning: {t.name}: {e}"

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(ts)))) as pool:
        results = list(pool.map(one, ts))
    out = {}
    for r in results:
        if isinstance(r, str):
            print(r, file=err)
        else:
            out[r.proxy] = r
    if not out:
        raise CommandError("no proxy answered" if ts else "no proxy is registered with the control plane")
    return out


def rows_of(before: dict[str, viz.Scrape] | None, after: dict[str, viz.Scrape], args: argparse.Namespace,
            kind: str, name: str) -> list[viz.Row]:
    deltas = [viz.delta((before or {}).get(p), s) for p, s in after.items()]
    return viz.select(viz.group(deltas, kind, args.reporter), args.namespace, name)


def _emit(rows: list[viz.Row], args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    if args.output == "json":
        print(json.dumps(viz.json_rows(rows), indent=2), file=out, flush=True)
        return
    print_table(viz.HEADER, viz.table_rows(rows), out)
    if not rows:
        print("No traffic found.", file=err)


def cmd_stat(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        kind, name = parse_resource(args.resource, args.name)
        ts = targets(args)
        if args.watch:
            return _watch(ts, kind, name, args, out, err)
        first = scrape_all(ts, err)
        if args.window:
            time.sleep(args.window)
            rows = rows_of(first, scrape_all(ts, err), args, kind, name)
        else:
            rows = rows_of(None, first, args, kind, name)
    except CommandError as exc:
        print(f"Error: {exc}", file=err)
        return EXIT_BAD_INPUT
    _emit(rows, args, out, err)
    return 0


def _watch(ts: Sequence[Target], kind: str, name: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Frame 1 is since start, every later one over the interval before it; --frames bounds the count."""
    before: dict[str, viz.Scrape] | None = None
    with LiveTable(out) as live:
        for frame in range(args.frames or 1_000_000_000):
            if frame:
                time.sleep(args.interval)
            now = scrape_all(ts, err)
            rows = rows_of(before, now, args, kind, name)
            window = "since start" if before is None else f"last {args.interval:g}s"
            if args.output == "json":
                _emit(rows, args, out, err)
            else:
                live.update(viz.HEADER, viz.table_rows(rows), f"{kind} {window} at {time.strftime('%H:%M:%S')}")
            before = now
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stat", help="success rate, RPS, latency and mTLS per workload, pod or service (linkerd viz stat)",
        description="Per deploy (destination workload), pod (proxy) or svc (destination service): requests, success "
                    "rate (not 5xx), requests/s, p50/p95/p99 latency (Prometheus' histogram_quantile over "
                    "istio_request_duration_milliseconds) and mTLS share, from every sidecar's /stats/prometheus.")
    p.add_argument("resource", metavar="RESOURCE", help=RESOURCE_HELP)
    p.add_argument("name", nargs="?", help="only this one (also RESOURCE/NAME)")
    p.add_argument("-n", "--namespace", default=None, help="only this namespace (default: all)")
    p.add_argument("--reporter", choices=("source", "destination"), default=None,
                   help="whose metrics count: the server side (default for deploy, pod) or the client side "
                        "(default for svc)")
    p.add_argument("--window", type=_positive, default=None, metavar="SECONDS",
                   help="rates over this many seconds (two scrapes); default: since each proxy started")
    p.add_argument("-w", "--watch", action="store_true", help="refresh every --interval seconds (Ctrl-C stops)")
    p.add_argument("--interval", type=_positive, default=2.0, metavar="SECONDS", help="--watch refresh (default 2)")
    p.add_argument("--frames", type=int, default=0, metavar="N", help="--watch: stop after N frames")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--control", metavar="URL", help=CONTROL_HELP)
    p.add_argument("--admin", action="append", metavar="HOST:PORT",
                   help="a proxy's admin address (repeatable; skip the control plane)")
    p.set_defaults(func=cmd_stat)
