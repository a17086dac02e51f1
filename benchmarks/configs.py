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


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for one TLS side: our certificate chain and key, and the CA that verifies the peer (or None)."""

    cert_chain: str
    private_key: str
    trusted_ca: str | None = None


DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def _common_tls_context(files: TlsFiles, peer_uri: str | None = None) -> dict:
    common: dict = {"tls_certificates": [{"certificate_chain": {"filename": files.cert_chain},
                                          "private_key": {"filename": files.private_key}}]}
    if files.trusted_ca is not None:
        validation: dict = {"trusted_ca": {"filename": files.trusted_ca}}
        if peer_uri is not None:
            validation["match_typed_subject_alt_names"] = [{"san_type": "URI", "matcher": {"exact": peer_uri}}]
        common["validation_context"] = validation
    return common


def pyproxy_bootstrap(*, listen_port: int, admin_port: int, backend_port: int,
                      downstream_tls: TlsFiles | None = None, upstream_tls: TlsFiles | None = None,
                      upstream_peer_uri: str | None = None) -> dict:
    """An Envoy v3 Bootstrap: listener on `listen_port` → cluster `backend` (127.0.0.1:`backend_port`).

    `downstream_tls`: the listener's filter chain terminates TLS (`DownstreamTlsContext`, a client certificate
    is required when it has a `trusted_ca`). `upstream_tls`: the cluster originates TLS with that client
    certificate (`UpstreamTlsContext`), verifying the origin with `trusted_ca` and its URI SAN
    `upstream_peer_uri`, as a sidecar's outbound cluster does with ISTIO_MUTUAL."""
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
    chain: dict = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if downstream_tls is not None:
        context = {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": _common_tls_context(downstream_tls)}
        if downstream_tls.trusted_ca is not None:
            context["require_client_certificate"] = True
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": context}
    cluster_tls: dict = {}
    if upstream_tls is not None:
        context = {"@type": UPSTREAM_TLS_TYPE,
                   "common_tls_context": _common_tls_context(upstream_tls, upstream_peer_uri)}
        cluster_tls["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": context}
    return {
        "admin": {"address": _socket_address(admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "listener_0",
                    "address": _socket_address(listen_port),
                    "filter_chains": [chain],
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
                    **cluster_tls,
                }
            ],
        },
    }


# A client sidecar's outbound node (Istio's node metadata): istio.stats reads its workload labels from here.
SIDECAR_NODE = {"id": "sidecar~127.0.0.1~bench-v1.default~default.svc.cluster.local", "cluster": "bench.default",
                "metadata": {"NAME": "bench-v1", "NAMESPACE": "default", "SERVICE_ACCOUNT": "bench",
                             "CLUSTER_ID": "Kubernetes", "LABELS": {"app": "bench", "version": "v1"}}}


def sidecar_bootstrap(*, listen_port: int, admin_port: int, backend_port: int, access_log_path: str,
                      upstream_tls: TlsFiles | None = None, upstream_peer_uri: str | None = None,
                      istio_stats: bool = True) -> dict:
    """`pyproxy_bootstrap` with what a client sidecar's outbound side runs on every request, as istiod emits it
    (control/translate/): Istio's default retry policy on the route (`retry_on` connect-failure,refused-stream,
    unavailable,cancelled,retriable-status-codes, 2 retries, previous_hosts predicate), Istio's stats filter
    (`istio.stats`, reporter source on an OUTBOUND listener), Istio's default text access log to a file
    (meshConfig.accessLogFile) and, with `upstream_tls`, mutual TLS to the origin with its URI SAN checked
    (ISTIO_MUTUAL). `istio_stats=False` for upstream Envoy, which has no istio.stats (istio-proxy's build has)."""
    from control.translate.accesslog import FILE_ACCESS_LOG, log_format
    from control.translate.common import PREVIOUS_HOSTS
    from control.translate.listeners import istio_stats_filter
    from control.translate.routes import DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_ON, HOST_SELECTION_RETRY_MAX_ATTEMPTS

    b = pyproxy_bootstrap(listen_port=listen_port, admin_port=admin_port, backend_port=backend_port,
                          upstream_tls=upstream_tls, upstream_peer_uri=upstream_peer_uri)
    b["node"] = SIDECAR_NODE
    listener = b["static_resources"]["listeners"][0]
    listener["traffic_direction"] = "OUTBOUND"
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"] = {
        "retry_on": DEFAULT_RETRY_ON, "num_retries": DEFAULT_RETRY_ATTEMPTS,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                  "typed_config": {"@type": PREVIOUS_HOSTS}}],
        "host_selection_retry_max_attempts": HOST_SELECTION_RETRY_MAX_ATTEMPTS}
    if istio_stats:
        hcm["http_filters"] = [istio_stats_filter(), *hcm["http_filters"]]
    hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": FILE_ACCESS_LOG, "path": access_log_path, "log_format": log_format("TEXT", "")}}]
    return b


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


def _ssl_server(files: TlsFiles) -> list[Directive]:
    """`ssl_certificate` & co. for a server block; a `trusted_ca` makes the client certificate required."""
    out = [directive("ssl_certificate", files.cert_chain), directive("ssl_certificate_key", files.private_key)]
    if files.trusted_ca is not None:
        out += [directive("ssl_client_certificate", files.trusted_ca), directive("ssl_verify_client", "on")]
    return out


def nginx_origin_config(*, workdir: str, port: int, mtls_port: int | None = None,
                        mtls: TlsFiles | None = None) -> list[Directive]:
    """nginx as the backend: `return 200 "hello world\\n"` on 127.0.0.1:`port`, and with `mtls_port` the same
    answer over TLS that requires a client certificate (`ssl_verify_client on`), as a STRICT sidecar's inbound."""
    location = directive("location", "/", block=[directive("default_type", "text/plain"), directive("return", 200, BODY)])
    servers = [directive("server", block=[directive("listen", f"{LOOPBACK}:{port}"), location])]
    if mtls_port is not None:
        assert mtls is not None and mtls.trusted_ca is not None, "an mTLS origin needs its certificate and a CA"
        servers.append(directive("server", block=[directive("listen", f"{LOOPBACK}:{mtls_port}", "ssl"),
                                                  *_ssl_server(mtls), location]))
    return _nginx_main(workdir, "origin", servers)


def nginx_proxy_config(*, workdir: str, port: int, backend_port: int, role: str = "proxy",
                       downstream_tls: TlsFiles | None = None, upstream_tls: TlsFiles | None = None) -> list[Directive]:
    """nginx as the proxy under test: 127.0.0.1:`port` → upstream `backend` with pooled keep-alive.
    `downstream_tls`: `listen ... ssl` with that certificate. `upstream_tls`: `proxy_pass https://` presenting
    that client certificate and verifying the origin with its `trusted_ca` (`proxy_ssl_verify on`); upstream
    keep-alive holds the TLS connections as it holds plaintext ones."""
    upstream = directive(
        "upstream",
        "backend",
        block=[
            directive("server", f"{LOOPBACK}:{backend_port}"),
            directive("keepalive", UPSTREAM_KEEPALIVE),
            directive("keepalive_requests", KEEPALIVE_REQUESTS),
        ],
    )
    proxy = [
        directive("proxy_pass", "https://backend" if upstream_tls else "http://backend"),
        directive("proxy_http_version", "1.1"),
        directive("proxy_set_header", "Connection", ""),
    ]
    if upstream_tls is not None:
        proxy += [directive("proxy_ssl_certificate", upstream_tls.cert_chain),
                  directive("proxy_ssl_certificate_key", upstream_tls.private_key)]
        if upstream_tls.trusted_ca is not None:
            proxy += [directive("proxy_ssl_trusted_certificate", upstream_tls.trusted_ca),
                      directive("proxy_ssl_verify", "on"), directive("proxy_ssl_name", "localhost")]
    listen = directive("listen", f"{LOOPBACK}:{port}", *(("ssl",) if downstream_tls else ()))
    tls = _ssl_server(downstream_tls) if downstream_tls else []
    server = directive("server", block=[listen, *tls, directive("location", "/", block=proxy)])
    return _nginx_main(workdir, role, [upstream, server])


def user_bootstrap(data: dict, *, listen_port: int, admin_port: int) -> dict:
    """A user's bootstrap made runnable side by side: its first listener moved to 127.0.0.1:`listen_port`, its
    admin to 127.0.0.1:`admin_port` (two proxies run it at once, each on its own ports). Raises ValueError
    when it has no listener, or when a cluster endpoint is not a loopback address: the bench only talks to
    127.0.0.1."""
    import copy
    import ipaddress

    b = copy.deepcopy(data)
    listeners = b.get("static_resources", {}).get("listeners") or []
    if not listeners:
        raise ValueError("the bootstrap has no static listener to send requests to")
    listeners[0]["address"] = _socket_address(listen_port)
    b["admin"] = {**b.get("admin", {}), "address": _socket_address(admin_port)}
    for cluster in b.get("static_resources", {}).get("clusters") or []:
        for group in (cluster.get("load_assignment") or {}).get("endpoints") or []:
            for lb in group.get("lb_endpoints") or []:
                address = lb.get("endpoint", {}).get("address", {}).get("socket_address", {}).get("address", "")
                try:
                    loopback = address == "localhost" or ipaddress.ip_address(address).is_loopback
                except ValueError:
                    loopback = False
                if not loopback:
                    raise ValueError(f"cluster {cluster.get('name')!r} sends to {address!r}: the bench only talks "
                                     "to 127.0.0.1 (point the cluster at a local origin)")
    return b
