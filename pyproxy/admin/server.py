"""The admin listener (Envoy's `admin.address`): what the proxy holds, read from the live objects.

Endpoints (Envoy's paths and shapes):
  /ready            200 "LIVE" once the first config is applied, else 503
  /server_info      version, state, uptime, pid, config version, workers
  /config_dump      the running config as Envoy v3 JSON (envoy.admin.v3.ConfigDump)
  /clusters         every host of every cluster with its counters; `?format=json` for ClusterStatuses
  /stats            counters and gauges, `name: value`; `?format=json`, `?filter=<regex>`, `?usedonly`
  /stats/prometheus the same in Prometheus text form (Envoy's tag extraction)
  /listeners        listener names and bound addresses
  /tap              a live stream of finished HTTP streams, newline-delimited JSON (pyproxy.observe.tap);
                    `?path=<prefix>&method=M&authority=A` filter, `buffer=N` bounds the queue (entries past
                    it are dropped and announced as `{"dropped": total}`). Not Envoy's POST /tap, see there.
  /quitquitquit     stop the proxy
Served by pyproxy.admin.httpd (asyncio and httptools, no web framework: aiohttp would cost a sidecar
9.5 MiB of RSS); the admin port is not the hot path.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from ..config.decode import encode
from ..observe import stats as stats_mod
from ..observe.tap import DEFAULT_CAPACITY, TapFilter, TapSubscriber
from ..runtime.waits import wait_event
from ..server import ProxyServer
from .guard import refusal
from .httpd import App, Handler, Request, Response, Runner, StreamResponse, json_response, serve


def _ts(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def config_dump(server: ProxyServer, bootstrap: Any = None) -> dict[str, Any]:
    """envoy.admin.v3.ConfigDump of what the server runs now."""
    updated = _ts(server.last_updated or server.started)
    static = server.version == "static"
    clusters = [{"cluster": encode(c, as_any=True), "last_updated": updated} for c in server.cluster_configs]
    listeners = []
    routes = []
    for lis in server.listener_configs:
        entry = {"listener": encode(lis, as_any=True), "last_updated": updated}
        if static:
            listeners.append(entry)
        else:
            listeners.append({"name": lis.name, "active_state": {"version_info": server.version, **entry}})
    seen: set[str] = set()
    for rt in server.listeners.values():
        for hcm in rt.hcms():
            rc = hcm.route_config
            if rc is None or hcm.config.rds is None or hcm.config.rds.route_config_name in seen:
                continue
            seen.add(hcm.config.rds.route_config_name)
            routes.append({"version_info": server.version, "route_config": encode(rc, as_any=True),
                           "last_updated": updated})
    configs: list[dict[str, Any]] = []
    if bootstrap is not None:
        configs.append({"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                        "bootstrap": encode(bootstrap), "last_updated": _ts(server.started)})
    cl: dict[str, Any] = {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"}
    ls: dict[str, Any] = {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"}
    if static:
        cl["static_clusters"] = clusters
        ls["static_listeners"] = listeners
    else:
        cl["version_info"] = server.version
        cl["dynamic_active_clusters"] = [{"version_info": server.version, **c} for c in clusters]
        ls["version_info"] = server.version
        ls["dynamic_listeners"] = listeners
    configs += [cl, ls]
    rd: dict[str, Any] = {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"}
    if routes:
        rd["dynamic_route_configs"] = routes
    configs.append(rd)
    if server.endpoint_configs:
        configs.append({"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
                        "dynamic_endpoint_configs": [
                            {"version_info": server.version, "endpoint_config": encode(cla, as_any=True),
                             "last_updated": updated} for cla in server.endpoint_configs.values()]})
    return {"configs": configs}


def clusters_text(server: ProxyServer) -> str:
    """Envoy's /clusters text: `cluster::host:port::stat::value` lines."""
    lines: list[str] = []
    if server.clusters is None:
        return ""
    for name, rt in server.clusters.clusters.items():
        limits = rt.limits
        for key, value in limits.describe().items():
            lines.append(f"{name}::default_priority::{key}::{value}")
        lines.append(f"{name}::added_via_api::{'false' if server.version == 'static' else 'true'}")
        for h in rt.hosts:
            hp = f"{name}::{h.address}:{h.port}"
            for key, value in h.describe().items():
                lines.append(f"{hp}::{key}::{value}")
    return "\n".join(lines) + "\n"


def clusters_json(server: ProxyServer) -> dict[str, Any]:
    """envoy.admin.v3.Clusters (subset)."""
    out = []
    if server.clusters is not None:
        for name, rt in server.clusters.clusters.items():
            hosts = []
            for h in rt.hosts:
                d = h.describe()
                hosts.append({
                    "address": {"socket_address": {"address": h.address, "port_value": h.port}},
                    "stats": [{"name": k, "value": str(v), "type": "COUNTER"} for k, v in d.items()
                              if isinstance(v, int)],
                    "health_status": {"eds_health_status": h.health_status,
                                      "failed_outlier_check": "/failed_outlier_check" in d["health_flags"]},
                    "weight": h.weight,
                })
            out.append({"name": name, "added_via_api": server.version != "static", "host_statuses": hosts})
    return {"cluster_statuses": out}


StatsSource = Callable[[], Awaitable[stats_mod.Stats]]


def render_stats(st: stats_mod.Stats, q: "stats_mod.StatsQuery") -> Response:
    """/stats in the format the query asks for (text, json, prometheus)."""
    if q.format == "json":
        return Response(text=stats_mod.render_json(st, filter=q.filter, used_only=q.used_only, type=q.type),
                            content_type="application/json")
    if q.format == "prometheus":
        return Response(text=stats_mod.render_prometheus(st, filter=q.filter, used_only=q.used_only))
    return Response(text=stats_mod.render_text(st, filter=q.filter, used_only=q.used_only, type=q.type))


def make_app(server: ProxyServer, *, bootstrap: Any = None, stats_source: StatsSource | None = None,
             extra_info: Callable[[], dict[str, Any]] | None = None,
             on_quit: Callable[[], None] | None = None) -> App:
    """The admin app. `stats_source` lets a multi-worker supervisor serve the sum of its workers' stats."""

    async def current_stats() -> stats_mod.Stats:
        return await stats_source() if stats_source is not None else server.collect_stats()

    async def ready(_: Request) -> Response:
        if server.ready:
            return Response(text="LIVE\n")
        return Response(status=503, text="PRE_INITIALIZING\n")

    async def server_info(_: Request) -> Response:
        info = server.server_info()
        if extra_info is not None:
            info.update(extra_info())
        return json_response(info)

    async def dump(_: Request) -> Response:
        return json_response(config_dump(server, bootstrap), dumps=lambda o: json.dumps(o, indent=2))

    async def clusters(req: Request) -> Response:
        if req.query.get("format") == "json":
            return json_response(clusters_json(server), dumps=lambda o: json.dumps(o, indent=2))
        return Response(text=clusters_text(server))

    async def stats(req: Request) -> Response:
        try:
            q = stats_mod.StatsQuery.from_params(req.query)
        except ValueError as e:
            return Response(status=400, text=f"{e}\n")
        return render_stats(await current_stats(), q)

    async def prometheus(_: Request) -> Response:
        st = await current_stats()  # rendered in slices: requests on this proxy run between them
        return Response(text=await stats_mod.render_prometheus_async(st), content_type="text/plain")

    async def listeners(req: Request) -> Response:
        items = [{"name": k, "local_address": {"socket_address": {
            "address": rt.config.address.socket_address.address, "port_value": rt.port}}}
            for k, rt in server.listeners.items()]
        if req.query.get("format") == "json":
            return json_response({"listener_statuses": items})
        return Response(text="".join(f"{i['name']}::{i['local_address']['socket_address']['address']}:"
                                         f"{i['local_address']['socket_address']['port_value']}\n" for i in items))

    async def tap(req: Request) -> Response | StreamResponse:
        return await tap_stream(server, req)

    async def quit_(_: Request) -> Response:
        if on_quit is not None:
            asyncio.get_running_loop().call_soon(on_quit)
        return Response(text="OK\n")

    async def index(_: Request) -> Response:
        paths = ["/ready", "/server_info", "/config_dump", "/clusters", "/stats", "/stats/prometheus",
                 "/listeners", "/tap", "/quitquitquit (POST)"]
        return Response(text="pyproxy admin\n" + "".join(f"  {p}\n" for p in paths))

    app = App()
    app.add_get("/", index)
    app.add_get("/ready", ready)
    app.add_get("/server_info", server_info)
    app.add_get("/config_dump", dump)
    app.add_get("/clusters", clusters)
    app.add_get("/stats", stats)
    app.add_get("/stats/prometheus", prometheus)
    app[PROMETHEUS_HANDLER] = prometheus
    app.add_get("/listeners", listeners)
    app.add_get("/tap", tap)

    async def end_taps(_: App) -> None:  # runs before cleanup waits for handlers to finish
        server.tap.close()

    app.on_shutdown.append(end_taps)
    app.add_post("/quitquitquit", quit_)
    return app


TAP_HEARTBEAT = 0.5  # seconds between checks that a quiet tap's client is still connected


def _ndjson(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":")) + "\n"


async def tap_stream(server: ProxyServer, req: Request) -> Response | StreamResponse:
    """GET /tap: subscribe, say so in a first line (`{"tap": {...}}`, so a client knows it is attached), then
    write queued entries as they come. The writer runs on the admin side of the loop: when the client reads
    slowly, `resp.write` waits here while the data path keeps offering to the bounded queue, which drops."""
    try:
        flt = TapFilter.from_query(req.query)
        capacity = int(req.query.get("buffer", DEFAULT_CAPACITY))
        wake = asyncio.Event()
        sub = TapSubscriber(flt, capacity, wake.set)
    except ValueError as e:
        return Response(status=400, text=f"tap: {e}\n")
    resp = StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
    await resp.prepare(req)
    server.tap.subscribe(sub)
    try:
        await resp.write(_ndjson({"tap": {"filter": flt.describe(), "buffer": capacity}}).encode())
        reported = 0
        while not sub.closed:
            if not sub.queue:
                wake.clear()
                if not await wait_event(wake, TAP_HEARTBEAT):  # not wait_for: pyproxy/runtime/waits.py
                    if req.transport is None or req.transport.is_closing():
                        break  # the client went away while nothing happened
                    continue
            lines = [_ndjson(e) for e in sub.drain()]
            if sub.dropped != reported:
                reported = sub.dropped
                lines.append(_ndjson({"dropped": reported}))
            if lines:
                await resp.write("".join(lines).encode())
    except ConnectionError:
        pass  # the client closed the stream: it is done listening
    finally:
        server.tap.unsubscribe(sub)
    return resp


PROMETHEUS_HANDLER = "prometheus"  # the admin app's /stats/prometheus handler, for make_prometheus_app


def make_prometheus_app(admin: App) -> App:
    """Istio's 15090: only GET /stats/prometheus, meant to be reachable by a Prometheus on the network while
    the admin port (everything else, mutations included) stays on loopback."""
    app = App()
    app.add_get("/stats/prometheus", admin[PROMETHEUS_HANDLER])
    return app


async def start_admin(app: App, host: str, port: int) -> tuple[Runner, int]:
    """Serve `app` on host:port (0: a free port) behind the mutation guard (pyproxy.admin.guard);
    (runner, bound port). OSError when the address cannot be bound."""
    async def guard(req: Request, handler: Handler) -> Response | StreamResponse:
        refused = refusal(req.method, req.path, req.headers.get("Host"), req.headers.get("Origin"), host)
        if refused is not None:
            return Response(status=refused[0], text=refused[1] + "\n")
        return await handler(req)

    return await serve(app, host, port, middleware=guard)
