"""`meshctl proxy-status` and `meshctl proxy-config`: what the control plane sent each proxy, and what a proxy
runs (istioctl's commands of the same names).

    meshctl proxy-status [NAME] [--control URL] [-o table|json]
        NAME  CDS  LDS  EDS  RDS  [VHDS  LEDS]  VERSION, one row per registered proxy, from the control plane's
        /debug/syncz: SYNCED (the last nonce sent was ACKed), STALE (not acknowledged; "STALE (NACK)" when the
        proxy rejected it, the error printed below the table), NOT SENT.
    meshctl proxy-config cluster|route|listener|endpoint|all NAME [-o table|json|yaml] [filters]
        read from the proxy's admin port (its /config_dump, and /clusters?format=json for endpoints) with
        istioctl's columns:
          cluster   SERVICE FQDN  PORT  SUBSET  DIRECTION  TYPE  DESTINATION RULE
          listener  ADDRESSES  PORT  MATCH  DESTINATION
          route     NAME  VHOST NAME  DOMAINS  MATCH  VIRTUAL SERVICE
          endpoint  ENDPOINT  STATUS  OUTLIER CHECK  CLUSTER
        `-o json` prints the Envoy resources themselves (`all -o json`: the whole Envoy ConfigDump).

NAME is `<pod>.<namespace>` or just `<pod>` when unique. The proxy's admin address comes from the control
plane (node metadata ADMIN_PORT on its INSTANCE_IP, docs/xds.md), or `--admin HOST:PORT` directly. The
control plane is `--control`, else $MESHCTL_CONTROL, else the running `make demo`'s (its state file,
pyproxy/demo_state.py), else http://127.0.0.1:15010 (istiod's plaintext port). Unreachable
addresses are one line on stderr and exit code 1. Table building is pure (`*_rows` functions).
"""
from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from typing import Any, Iterable, Sequence, TextIO

import yaml

from pyproxy.demo_state import read_state

EXIT_BAD_INPUT = 1
DEFAULT_CONTROL = "http://127.0.0.1:15010"
TIMEOUT = 5.0
CONTROL_HELP = f"control plane xDS address (default: $MESHCTL_CONTROL, the running make demo's, {DEFAULT_CONTROL})"
T = "type.googleapis.com/envoy.admin.v3."
TYPE_COLUMNS = (("CDS", "cds"), ("LDS", "lds"), ("EDS", "eds"), ("RDS", "rds"))  # istioctl's column order
# pyproxy's delta extras (docs/xds.md), shown when some proxy uses them
EXTRA_COLUMNS = (("VHDS", "vhds"), ("LEDS", "leds"))
KINDS = {"cluster": "cluster", "clusters": "cluster", "route": "route", "routes": "route",
         "listener": "listener", "listeners": "listener", "endpoint": "endpoint", "endpoints": "endpoint",
         "all": "all"}


class CommandError(Exception):
    """One line for the user (unreachable address, unknown proxy)."""


# --- tables ----------------------------------------------------------------------------------------------

def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """istioctl's tabwriter layout: columns left-aligned, separated by at least three spaces."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["   ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [list(header)] + rows]
    return "\n".join(lines) + "\n"


def status_cell(types: dict, short: str) -> str:
    state = types.get(short)
    if not state:
        return "NOT SENT"
    return "STALE (NACK)" if state.get("nacked") else state["status"]


def columns(proxies: Iterable[dict]) -> tuple[tuple[str, str], ...]:
    """istioctl's four type columns, then VHDS and LEDS when some proxy has that type (a proxy without it shows
    `-` there: it gets whole route configurations or assignments)."""
    used = {short for p in proxies for short in p.get("types", {})}
    return TYPE_COLUMNS + tuple(c for c in EXTRA_COLUMNS if c[1] in used)


def status_rows(proxies: Iterable[dict]) -> list[list[str]]:
    proxies = list(proxies)
    cols = columns(proxies)
    return [[p["name"]] + [status_cell(p.get("types", {}), s) if (c, s) in TYPE_COLUMNS or s in p.get("types", {})
                           else "-" for c, s in cols] + [p.get("version", "")]
            for p in sorted(proxies, key=lambda p: p["name"])]


def nack_lines(proxies: Iterable[dict]) -> list[str]:
    out = []
    for p in sorted(proxies, key=lambda p: p["name"]):
        for col, short in TYPE_COLUMNS + EXTRA_COLUMNS:
            state = p.get("types", {}).get(short) or {}
            if state.get("nacked"):
                nack = state["nack"]
                out.append(f"{p['name']} rejected {col} version {nack['version']}: {nack['error']}")
    return out


def _configs(dump: dict, kind: str) -> dict:
    for cfg in dump.get("configs", ()):
        if cfg.get("@type") == T + kind:
            return cfg
    return {}


def dump_clusters(dump: dict) -> list[dict]:
    cfg = _configs(dump, "ClustersConfigDump")
    return [c["cluster"] for c in cfg.get("static_clusters", []) + cfg.get("dynamic_active_clusters", [])]


def dump_listeners(dump: dict) -> list[dict]:
    cfg = _configs(dump, "ListenersConfigDump")
    out = [entry["listener"] for entry in cfg.get("static_listeners", [])]
    out += [entry["active_state"]["listener"] for entry in cfg.get("dynamic_listeners", []) if "active_state" in entry]
    return out


def dump_routes(dump: dict) -> list[dict]:
    cfg = _configs(dump, "RoutesConfigDump")
    return [r["route_config"] for r in cfg.get("static_route_configs", []) + cfg.get("dynamic_route_configs", [])]


def _istio_config_name(metadata: dict | None) -> str:
    """`/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews` -> `reviews.default`."""
    path = ((metadata or {}).get("filter_metadata", {}).get("istio", {}) or {}).get("config", "")
    parts = path.strip("/").split("/")
    if len(parts) >= 6 and parts[-4] == "namespaces":
        return f"{parts[-1]}.{parts[-3]}"
    return ""


def cluster_type(cluster: dict) -> str:
    """Envoy's discovery type: `type`, else a custom `cluster_type`'s name, else STATIC (the proto default, which
    a config dump that leaves defaults out does not write)."""
    if "type" in cluster:
        return str(cluster["type"])
    if cluster.get("cluster_type"):
        return str(cluster["cluster_type"].get("name", "-"))
    return "STATIC"


def cluster_rows(clusters: Iterable[dict], fqdn: str = "", port: int | None = None, subset: str = "",
                 direction: str = "") -> list[list[str]]:
    rows = []
    for c in sorted(clusters, key=lambda c: c.get("name", "")):
        parts = c.get("name", "").split("|")
        if len(parts) == 4:
            dir_, number, sub, host = parts
        else:
            dir_, number, sub, host = "-", "-", "-", c.get("name", "")
        if (fqdn and fqdn not in host) or (port is not None and number != str(port)) \
                or (subset and sub != subset) or (direction and dir_ != direction):
            continue
        rows.append([host, number, sub or "-", dir_, cluster_type(c), _istio_config_name(c.get("metadata"))])
    return rows


def _chain_match(chain: dict) -> str:
    m = chain.get("filter_chain_match") or {}
    parts = []
    if m.get("transport_protocol"):
        parts.append(f"Trans: {m['transport_protocol']}")
    if m.get("application_protocols"):
        parts.append(f"App: {','.join(m['application_protocols'])}")
    if m.get("server_names"):
        parts.append(f"SNI: {','.join(m['server_names'])}")
    if m.get("destination_port"):
        parts.append(f"Addr: *:{m['destination_port']}")
    return "; ".join(parts) or "ALL"


def _chain_destination(chain: dict) -> str:
    for f in chain.get("filters", []):
        tc = f.get("typed_config") or {}
        if "rds" in tc:
            return f"Route: {tc['rds'].get('route_config_name', '')}"
        if "route_config" in tc:
            routes = [r for vh in tc["route_config"].get("virtual_hosts", []) for r in vh.get("routes", [])]
            if len(routes) == 1 and "route" in routes[0] and "cluster" in routes[0]["route"]:
                return f"Inline Route: {match_text(routes[0].get('match', {}))} -> {routes[0]['route']['cluster']}"
            return f"Inline Route: {tc['route_config'].get('name', '')}"
        if "cluster" in tc:
            return f"Cluster: {tc['cluster']}"
    return "-"


def listener_rows(listeners: Iterable[dict], port: int | None = None) -> list[list[str]]:
    rows = []
    for lis in sorted(listeners, key=lambda l: l.get("address", {}).get("socket_address", {}).get("port_value", 0)):
        sa = lis.get("address", {}).get("socket_address", {})
        if port is not None and sa.get("port_value") != port:
            continue
        chains = list(lis.get("filter_chains", []))
        if lis.get("default_filter_chain"):
            chains.append(lis["default_filter_chain"])
        for chain in chains:
            rows.append([sa.get("address", ""), sa.get("port_value", ""), _chain_match(chain),
                         _chain_destination(chain)])
    return rows


def match_text(match: dict) -> str:
    """istioctl's MATCH: `/*` for prefix `/`, `/api*` for a prefix, the exact path, or the regex."""
    if "prefix" in match:
        text = f"{match['prefix']}*"
    elif "path" in match:
        text = match["path"]
    elif "safe_regex" in match:
        text = match["safe_regex"].get("regex", "")
    elif "path_separated_prefix" in match:
        text = f"{match['path_separated_prefix']}/*"
    else:
        text = "/*"
    if match.get("headers"):
        text += " (+headers)"
    return text


def domains_text(domains: Sequence[str]) -> str:
    """The shortest domain without a port, `+N more` for the rest (istioctl's DOMAINS)."""
    plain = [d for d in domains if ":" not in d] or list(domains)
    if not plain:
        return ""
    first = min(plain, key=len)
    return first if len(plain) == 1 else f"{first} +{len(plain) - 1} more..."


def route_rows(routes: Iterable[dict], name: str = "") -> list[list[str]]:
    rows = []
    for rc in sorted(routes, key=lambda r: r.get("name", "")):
        if name and rc.get("name") != name:
            continue
        for vh in rc.get("virtual_hosts", []):
            for r in vh.get("routes", []):
                rows.append([rc.get("name", ""), vh.get("name", ""), domains_text(vh.get("domains", [])),
                             match_text(r.get("match", {})), _istio_config_name(r.get("metadata")) or "-"])
    return rows


def endpoint_rows(clusters_json: dict, cluster: str = "") -> list[list[str]]:
    rows = []
    for c in clusters_json.get("cluster_statuses", []):
        if cluster and c.get("name") != cluster:
            continue
        for h in c.get("host_statuses", []):
            sa = h.get("address", {}).get("socket_address", {})
            health = h.get("health_status", {})
            rows.append([f"{sa.get('address')}:{sa.get('port_value')}", health.get("eds_health_status", "HEALTHY"),
                         "FAILED" if health.get("failed_outlier_check") else "OK", c.get("name", "")])
    return sorted(rows, key=lambda r: (r[3], r[0]))


CLUSTER_HEADER = ("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE")
LISTENER_HEADER = ("ADDRESSES", "PORT", "MATCH", "DESTINATION")
ROUTE_HEADER = ("NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE")
ENDPOINT_HEADER = ("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER")


# --- I/O -------------------------------------------------------------------------------------------------

def fetch_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as err:
        raise CommandError(f"{url}: HTTP {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CommandError(f"{url}: cannot connect ({reason})") from None
    except UnicodeDecodeError:
        raise CommandError(f"{url}: the answer is not text") from None


def fetch_json(url: str) -> Any:
    text = fetch_text(url)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise CommandError(f"{url}: the answer is not JSON") from None


def admin_url(address: str) -> str:
    """A proxy's admin base URL from `HOST:PORT` (or a URL)."""
    return address.rstrip("/") if address.startswith("http") else f"http://{address}"


def proxy_admin(args: argparse.Namespace) -> str:
    """The admin base URL of the proxy a command names: `--admin`, else `args.name` looked up in the control
    plane's registry (/debug/syncz)."""
    return admin_url(args.admin or find_proxy(fetch_json(f"{_control(args)}/debug/syncz"), args.name)["admin"])


def find_proxy(proxies: Sequence[dict], name: str) -> dict:
    exact = [p for p in proxies if p["name"] == name or p["proxy"] == name]
    loose = [p for p in proxies if p["name"].split(".", 1)[0] == name]
    found = exact or loose
    if len(found) == 1:
        return found[0]
    known = ", ".join(sorted(p["name"] for p in proxies)) or "none"
    if not found:
        raise CommandError(f"no proxy named {name!r} is registered with the control plane (known: {known})")
    raise CommandError(f"{name!r} is ambiguous: {', '.join(p['name'] for p in found)}; use <pod>.<namespace>")


def _control(args: argparse.Namespace) -> str:
    demo = read_state() or {}
    return (args.control or os.environ.get("MESHCTL_CONTROL") or demo.get("control") or DEFAULT_CONTROL).rstrip("/")


def _print(data: Any, output: str, out: TextIO) -> None:
    if output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="", file=out)
    else:
        print(json.dumps(data, indent=2), file=out)


def cmd_proxy_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        proxies = fetch_json(f"{_control(args)}/debug/syncz")
        if args.name:
            proxies = [find_proxy(proxies, args.name)]
    except CommandError as exc:
        print(f"Error: {exc}", file=err)
        return EXIT_BAD_INPUT
    if args.output == "json":
        _print(proxies, "json", out)
        return 0
    print(table(("NAME",) + tuple(c for c, _s in columns(proxies)) + ("VERSION",), status_rows(proxies)), end="",
          file=out)
    for line in nack_lines(proxies):
        print(line, file=out)
    return 0


def cmd_proxy_config(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    kind = KINDS[args.kind]
    try:
        base = proxy_admin(args)
        dump = fetch_json(f"{base}/config_dump") if kind != "endpoint" else None
        statuses = fetch_json(f"{base}/clusters?format=json") if kind in ("endpoint", "all") else None
    except CommandError as exc:
        print(f"Error: {exc}", file=err)
        return EXIT_BAD_INPUT
    if args.output in ("json", "yaml"):
        data = {"cluster": lambda: dump_clusters(dump), "listener": lambda: dump_listeners(dump),
                "route": lambda: dump_routes(dump), "endpoint": lambda: statuses,
                "all": lambda: dump}[kind]()
        _print(data, args.output, out)
        return 0
    sections = []
    if kind in ("cluster", "all"):
        sections.append(table(CLUSTER_HEADER, cluster_rows(dump_clusters(dump), args.fqdn, args.port, args.subset,
                                                           args.direction)))
    if kind in ("listener", "all"):
        sections.append(table(LISTENER_HEADER, listener_rows(dump_listeners(dump), args.port)))
    if kind in ("route", "all"):
        sections.append(table(ROUTE_HEADER, route_rows(dump_routes(dump), args.route_name)))
    if kind in ("endpoint", "all"):
        sections.append(table(ENDPOINT_HEADER, endpoint_rows(statuses, args.cluster)))
    print("\n".join(sections), end="", file=out)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("proxy-status", help="sync status of every proxy (istioctl proxy-status)")
    p.add_argument("name", nargs="?", help="only this proxy (<pod>[.<namespace>])")
    p.add_argument("--control", metavar="URL", help=CONTROL_HELP)
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_proxy_status)

    p = subparsers.add_parser("proxy-config", help="what a proxy runs, from its admin port (istioctl proxy-config)")
    p.add_argument("kind", choices=sorted(KINDS), metavar="{cluster,listener,route,endpoint,all}")
    p.add_argument("name", nargs="?", help="the proxy (<pod>[.<namespace>]); not needed with --admin")
    p.add_argument("--control", metavar="URL", help=CONTROL_HELP)
    p.add_argument("--admin", metavar="HOST:PORT", help="the proxy's admin address (skip the control plane)")
    p.add_argument("-o", "--output", choices=("table", "short", "json", "yaml"), default="table")
    p.add_argument("--fqdn", default="", help="clusters: only this service FQDN (substring)")
    p.add_argument("--port", type=int, default=None, help="clusters/listeners: only this port")
    p.add_argument("--subset", default="", help="clusters: only this subset")
    p.add_argument("--direction", default="", choices=("", "inbound", "outbound"), help="clusters: direction")
    p.add_argument("--name", dest="route_name", default="", help="routes: only this route configuration")
    p.add_argument("--cluster", default="", help="endpoints: only this cluster")
    p.set_defaults(func=_proxy_config_checked)


def _proxy_config_checked(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.name and not args.admin:
        print("Error: name the proxy (meshctl proxy-config KIND NAME) or give --admin HOST:PORT", file=err)
        return EXIT_BAD_INPUT
    return cmd_proxy_config(args, out, err)
