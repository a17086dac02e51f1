"""The configs the benchmark runs: pyproxy's Envoy v3 bootstrap and nginx's two roles (origin and proxy).

Pure functions from ports and paths to config; `run.py` writes them to files. The three setups are meant to be
equivalent where it matters for small keep-alive requests:

* pyproxy: one listener with one `envoy.filters.network.http_connection_manager` (no access log), a route
  `prefix: /` to the STATIC cluster `backend` (one endpoint), `envoy.filters.http.router`. The bootstrap is a
  plain dict (dumped with PyYAML), so the same file can be handed to real Envoy.
* nginx as proxy: one worker, access log off, `proxy_http_version 1.1` with `Connection ""` and an
  `upstream` block with `keepalive 64`, i.e. pooled keep-alive connections to the backend as Envoy has.
* nginx as origin (the backend when nginx is available): one worker, `return 200 "hello world\\n"`.

`keepalive_requests` is raised on nginx's side (default 1000 per connection since nginx 1.19.10) because
Envoy's `max_requests_per_connection` is unlimited by default; otherwise nginx rows would re-open
connections every 1000 requests and pyproxy rows would not.

nginx has no data format of its own besides its config syntax, so `render_nginx` serializes a tree of
`Directive`s (quoting every argument that needs it) instead of filling a text template.
"""

from __future__ import annotations

from dataclasses import dataclass

BODY = "hello world\n"
# Envoy defaults max_requests_per_connection to unlimited; nginx needs a number. Large enough for any run.
KEEPALIVE_REQUESTS = 10_000_000
UPSTREAM_KEEPALIVE = 64

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
LOOPBACK = "127.0.0.1"


def _socket_address(port: int) -> dict:
    return {"socket_address": {"address": LOOPBACK, "port_value": port}}


def pyproxy_bootstrap(*, listen_port: int, admin_port: int, backend_port: int) -> dict:
    """An Envoy v3 Bootstrap: listener on `listen_port` → cluster `backend` (127.0.0.1:`backend_port`)."""
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}],
                }
            ],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    return {
        "admin": {"address": _socket_address(admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "listener_0",
                    "address": _socket_address(listen_port),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "lb_policy": "ROUND_ROBIN",
                    "load_assignment": {
                        "cluster_name": "backend",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(backend_port)}}]}],
                    },
                }
            ],
        },
    }


@dataclass(frozen=True, slots=True)
class Directive:
    """One nginx directive: `name args...;` or, with a block, `name args... { children }`."""

    name: str
    args: tuple[str, ...] = ()
    block: tuple["Directive", ...] | None = None


def directive(name: str, *args: object, block: list[Directive] | tuple[Directive, ...] | None = None) -> Directive:
    return Directive(name, tuple(str(a) for a in args), None if block is None else tuple(block))


_NEEDS_QUOTES = set(" \t\r\n;{}\"'\\#$")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote_nginx(arg: str) -> str:
    """An nginx argument: bare when safe, else double-quoted with nginx's escapes (\\" \\\\ \\n \\r \\t)."""
    if arg and not (set(arg) & _NEEDS_QUOTES):
        return arg
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in arg) + '"'


def render_nginx(directives: list[Directive] | tuple[Directive, ...], indent: int = 0) -> str:
    pad = "    " * indent
    lines: list[str] = []
    for d in directives:
        head = " ".join([d.name, *(quote_nginx(a) for a in d.args)])
        if d.block is None:
            lines.append(f"{pad}{head};")
        else:
            lines.append(f"{pad}{head} {{")
            inner = render_nginx(d.block, indent + 1)
            if inner:
                lines.append(inner)
            lines.append(f"{pad}}}")
    return "\n".join(lines)


def _nginx_main(workdir: str, role: str, http_block: list[Directive]) -> list[Directive]:
    """Everything both roles share: one worker, foreground, files under `workdir`, no access log."""
    return [
        directive("worker_processes", 1),
        directive("daemon", "off"),
        directive("pid", f"{workdir}/{role}.pid"),
        directive("error_log", f"{workdir}/{role}.error.log", "warn"),
        directive("events", block=[directive("worker_connections", 4096)]),
        directive(
            "http",
            block=[
                directive("access_log", "off"),
                directive("keepalive_requests", KEEPALIVE_REQUESTS),
                directive("client_body_temp_path", f"{workdir}/{role}.client_body"),
                directive("proxy_temp_path", f"{workdir}/{role}.proxy"),
                *http_block,
            ],
        ),
    ]


def nginx_origin_config(*, workdir: str, port: int) -> list[Directive]:
    """nginx as the backend: `return 200 "hello world\\n"` on 127.0.0.1:`port`."""
    server = directive(
        "server",
        block=[
            directive("listen", f"{LOOPBACK}:{port}"),
            directive("location", "/", block=[directive("default_type", "text/plain"), directive("return", 200, BODY)]),
        ],
    )
    return _nginx_main(workdir, "origin", [server])


def nginx_proxy_config(*, workdir: str, port: int, backend_port: int) -> list[Directive]:
    """nginx as the proxy under test: 127.0.0.1:`port` → upstream `backend` with pooled keep-alive."""
    upstream = directive(
        "upstream",
        "backend",
        block=[
            directive("server", f"{LOOPBACK}:{backend_port}"),
            directive("keepalive", UPSTREAM_KEEPALIVE),
            directive("keepalive_requests", KEEPALIVE_REQUESTS),
        ],
    )
    server = directive(
        "server",
        block=[
            directive("listen", f"{LOOPBACK}:{port}"),
            directive(
                "location",
                "/",
                block=[
                    directive("proxy_pass", "http://backend"),
                    directive("proxy_http_version", "1.1"),
                    directive("proxy_set_header", "Connection", ""),
                ],
            ),
        ],
    )
    return _nginx_main(workdir, "proxy", [upstream, server])
