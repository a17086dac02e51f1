"""`meshctl tap NAME`: the requests passing one sidecar, live (like `linkerd viz tap`), from its admin's GET /tap
stream (pyproxy.observe.tap).

    meshctl tap productpage-v1 [--path /api] [--method GET] [--authority A] [--max N] [--duration S] [-o json]

One line per finished request:
    inbound GET productpage:9080/productpage 200 12.3ms flags=- tls=true peer=spiffe://... \
        upstream=inbound|9080||/127.0.0.1:4242 trace=4bf9... id=0e1c...
`-o json` prints the entries as the proxy sends them, one JSON object a line. "tapping ..." on stderr says the
tap is attached (what comes after it is seen). The proxy is found as `meshctl proxy-config` finds it (the
control plane's registry, or --admin). Entries the proxy dropped because this reader was too slow are reported
on stderr. --max and --duration bound the run; Ctrl-C stops it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any, TextIO
from urllib.parse import urlencode

import aiohttp

from control.cli.proxy import CONTROL_HELP, CommandError, EXIT_BAD_INPUT, proxy_admin
from control.cli.term import print_styled, status_style


def entry_parts(e: dict[str, Any]) -> list[tuple[str, str]]:
    """One tap entry as (text, style) pieces of a line (pure: the plain line is their concatenation)."""
    status = int(e.get("status") or 0)
    duration = e.get("duration_ms")
    upstream = "/".join(x for x in (e.get("upstream_cluster"), e.get("upstream_host")) if x) or "-"
    return [
        (f"{e.get('direction', '-')} ", "dim"),
        (f"{e.get('method') or '-'} ", "bold"),
        (f"{(e.get('authority') or '') + (e.get('path') or '') or '-'} ", ""),
        (f"{status}", status_style(status)),
        (f" {duration:.1f}ms" if isinstance(duration, (int, float)) else " -", ""),
        (f" flags={e.get('response_flags') or '-'}", "red" if (e.get("response_flags") or "-") != "-" else ""),
        (f" tls={'true' if e.get('mtls') else 'false'}", ""),
        (f" peer={e.get('peer') or '-'}", "cyan"),
        (f" upstream={upstream}", ""),
        (f" trace={e.get('trace_id') or '-'}", "magenta"),
        (f" id={e.get('request_id') or '-'}", "dim"),
    ]


def entry_line(e: dict[str, Any]) -> str:
    return "".join(text for text, _ in entry_parts(e))


async def _tap(base: str, query: dict[str, str], args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    url = f"{base}/tap" + (f"?{urlencode(query)}" if query else "")
    deadline = time.monotonic() + args.duration if args.duration else None
    seen = 0
    timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise CommandError(f"{url}: HTTP {resp.status}: {(await resp.text()).strip()}")
                while args.max is None or seen < args.max:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    try:
                        async with asyncio.timeout(left):
                            line = await resp.content.readline()
                    except asyncio.TimeoutError:
                        break
                    if not line:
                        print("tap ended: the proxy closed the stream", file=err)
                        break
                    obj = json.loads(line)
                    if "tap" in obj:
                        shown = " ".join(f"{k}={v}" for k, v in obj["tap"].get("filter", {}).items())
                        print(f"tapping {args.name or args.admin} ({base}){' ' + shown if shown else ''}; "
                              f"Ctrl-C to stop", file=err, flush=True)
                    elif "dropped" in obj:
                        print(f"the proxy dropped {obj['dropped']} entries so far: this reader was too slow",
                              file=err, flush=True)
                    else:
                        seen += 1
                        if args.output == "json":
                            print(json.dumps(obj), file=out, flush=True)
                        else:
                            print_styled(entry_parts(obj), out)
    except aiohttp.ClientError as e:
        raise CommandError(f"{url}: cannot connect ({e})") from None
    except ValueError:
        raise CommandError(f"{url}: the stream is not newline-delimited JSON") from None
    return 0


def cmd_tap(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.name and not args.admin:
        print("Error: name the proxy (meshctl tap NAME) or give --admin HOST:PORT", file=err)
        return EXIT_BAD_INPUT
    query = {k: v for k, v in (("path", args.path), ("method", args.method), ("authority", args.authority),
                               ("buffer", str(args.buffer) if args.buffer else "")) if v}
    try:
        return asyncio.run(_tap(proxy_admin(args), query, args, out, err))
    except CommandError as exc:
        print(f"Error: {exc}", file=err)
        return EXIT_BAD_INPUT


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tap", help="the requests passing a sidecar, live (linkerd viz tap)")
    p.add_argument("name", nargs="?", help="the proxy (<pod>[.<namespace>]); not needed with --admin")
    p.add_argument("--path", default="", help="only requests whose path starts with this")
    p.add_argument("--method", default="", help="only this HTTP method")
    p.add_argument("--authority", default="", help="only this :authority (Host)")
    p.add_argument("--max", type=_positive_int, default=None, metavar="N", help="stop after N requests")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    p.add_argument("--buffer", type=_positive_int, default=None, metavar="N",
                   help="entries the proxy may queue for this reader before it drops (default 1000)")
    p.add_argument("-o", "--output", choices=("line", "json"), default="line")
    p.add_argument("--control", metavar="URL", help=CONTROL_HELP)
    p.add_argument("--admin", metavar="HOST:PORT", help="the proxy's admin address (skip the control plane)")
    p.set_defaults(func=cmd_tap)
