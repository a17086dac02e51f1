"""A REST-JSON xDS subscription: how a dynamic pyproxy (`pyproxy sidecar` / `gateway`) follows the control plane.

Envoy's `api_type: REST` polls `POST /v3/discovery:<type>` with a DiscoveryRequest; the control plane here
long-polls (docs/xds.md), so one outstanding request per type is enough for pushes to arrive at once.
Four loops run side by side (clusters, endpoints, listeners, routes); the control plane releases them in
ADS order (CDS → EDS → LDS → RDS), so a proxy learns a cluster before anything routes to it.

Each response is decoded (`pyproxy.config.decode`) and applied *together with the last accepted resources
of the other types* through `ProxyServer.apply()`, which builds the whole new runtime before swapping it
in. Any error (decode, validation, bind) keeps the last good config serving and NACKs the response with
`error_detail`; success ACKs it (the next request echoes version and nonce). When the control plane is
unreachable, the proxy keeps serving what it has and retries with jittered exponential back-off.

Over `https://` (the control plane's secure port, 15012) every request carries the proxy's credentials
(`pyproxy.xds.credentials`: the mesh root to verify the server, the service-account token, the workload
certificate once the agent has one). A 401/403 from the control plane (no valid credential, or an identity
that is not this node's) is logged once per distinct answer and kept in `refused` (shown on the admin
/server_info); the proxy keeps retrying with back-off, as for an unreachable control plane.

Delta xDS (the default, `mode="delta"`, `pyproxy sidecar --xds-mode delta|sotw`): the same four loops on
`POST /v3/delta_discovery:<type>` (the control plane's REST extension, docs/xds.md) with DeltaDiscoveryRequests
(`pyproxy.xds.state`): CDS and LDS subscribe as wildcard, EDS to the clusters of its CDS that use EDS and RDS
to the route configs its listeners name, so a registration sends each proxy the changed ClusterLoadAssignments
only. A response's added resources replace those of the same name and `removed_resources` leave; the whole
next config is built and swapped as in state of the world, and ACKed/NACKed per response (a NACK keeps every
resource of the type as it was). When the clusters or listeners change the names EDS/RDS need, that loop is
woken to send its new subscription at once. With VHDS (on by default in delta mode, pyproxy.xds.vhds) a fifth
loop subscribes to the virtual hosts of the route configs whose RDS says `vhds`, and the route configs applied
are assembled from both (warming until VHDS has answered). A 409 from the control plane (it does not know our
subscription: it restarted) or a broken connection starts the subscription again, declaring the versions held.

Parsing (`pyproxy.xds.wire`, incremental) and decoding run on a worker thread (`ProxyServer.offload`), with
the cyclic GC paused from the parse to the swap, so a huge update (26,795 virtual hosts, 18 MB of JSON) does
not stall the requests the proxy is serving meanwhile (docs/hardening.md, "Sidecar: applying a huge config").
"""
from __future__ import annotations

import asyncio
import functools
import logging
import random
from typing import Any

from ..config.decode import ConfigError, decode_any
from ..runtime.waits import wait_event
from ..server import BindFailed, ConfigRejected, ProxyServer, http_connection_manager_of
from .credentials import ControlPlaneCredentials, CredentialsError
from .http import HttpClient, HttpError, Reply
from .node import with_client_feature
from . import leds
from . import vhds as vhds_mod
from .state import CDS, EDS, LDS, LEDS, RDS, SHORT, TYPES, XdsState

log = logging.getLogger("pyproxy.xds")

BIND_RETRY_FIRST, BIND_RETRY_MAX = 1.0, 30.0  # seconds between tries of a config whose listener could not bind
BACKOFF_BASE = 0.1  # seconds; doubled per failure up to BACKOFF_MAX, each wait drawn in [base/2, base]
BACKOFF_MAX = 10.0
CONNECT_TIMEOUT = 5.0  # seconds to connect (and handshake) to the control plane; the long poll itself is unbounded
LEDS_WARMING = 5.0  # seconds an EDS ACK waits for the LEDS collections its assignments name (cluster warming)


def resource_name(obj: Any) -> str:
    for attr in ("name", "cluster_name"):
        value = getattr(obj, attr, None)
        if value:
            return value
    return ""


def rds_name(listener: Any) -> str | None:
    """The RDS route configuration an HTTP listener waits for; None for inline routes or a non-HTTP listener."""
    try:
        hcm = http_connection_manager_of(listener)
    except ConfigRejected:
        return None
    return hcm.rds.route_config_name if hcm.rds is not None else None


def decode_resources(type_url: str, resources: Any) -> dict[str, Any]:
    """DiscoveryResponse.resources -> {name: model object}; ConfigError names the resource and field."""
    if not isinstance(resources, list):
        raise ConfigError("resources", "expected a list")
    out: dict[str, Any] = {}
    for i, raw in enumerate(resources):
        if isinstance(raw, dict) and raw.get("@type") != type_url:
            raise ConfigError(f"resources[{i}].@type", f"{raw.get('@type')!r} in a {SHORT[type_url].upper()} "
                                                        f"response (want {type_url})")
        label = (raw.get("name") or raw.get("cluster_name")) if isinstance(raw, dict) else None
        kind = type_url.rsplit(".", 1)[-1]
        obj = decode_any(raw, f"resources[{i}] ({kind} {label!r})" if label else f"resources[{i}]")
        name = resource_name(obj)
        if not name:
            raise ConfigError(f"resources[{i}]", "resource without a name")
        if name in out:
            raise ConfigError(f"resources[{i}]", f"duplicate resource name {name!r}")
        out[name] = obj
    return out


def decode_delta(type_url: str, resources: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """DeltaDiscoveryResponse.resources (`Resource {name, version, resource}`) -> ({name: model object},
    {name: version}); ConfigError names the resource and field."""
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        raise ConfigError("resources", "expected a list of Resource objects {name, version, resource}")
    decoded = decode_resources(type_url, [r.get("resource") for r in resources])
    versions = {}
    for i, r in enumerate(resources):
        name = r.get("name")
        if name not in decoded:
            raise ConfigError(f"resources[{i}].name", f"{name!r} is not the name of its resource")
        versions[name] = str(r.get("version", ""))
    return decoded, versions


class Refused(Exception):
    """The control plane answered 401/403: this proxy's credentials do not let it act as its node."""


class Resync(Exception):
    """Delta: the control plane answered 409, it does not know this proxy's subscription (it restarted)."""


class XdsClient:
    def __init__(self, control_url: str, node: dict[str, Any], server: ProxyServer, *,
                 wait: float = 30.0, rng: random.Random | None = None,
                 credentials: ControlPlaneCredentials | None = None, mode: str = "delta", vhds: bool = True,
                 use_leds: bool = True):
        if mode not in ("delta", "sotw"):
            raise ValueError(f"xds mode: want 'delta' or 'sotw', got {mode!r}")
        self.mode = mode
        self.vhds = vhds and mode == "delta"  # VHDS (pyproxy.xds.vhds): announced on the node, delta only
        if self.vhds:
            node = with_client_feature(node, vhds_mod.FEATURE)
        self._assemble = vhds_mod.Assembler()
        # LEDS (pyproxy.xds.leds): endpoints as resources of their own, asked for in delta mode
        self.leds = use_leds and mode == "delta"
        if self.leds:
            node = with_client_feature(node, leds.FEATURE)
        self.url = control_url.rstrip("/")
        self.credentials = credentials
        self.refused: str | None = None  # the control plane's last 401/403 answer, until a request succeeds
        self.server = server
        self.state = XdsState(node, vhds=self.vhds, leds=self.leds)
        self.wait = wait
        self.rng = rng or random.Random()
        self.connected = False
        self._tasks: list[asyncio.Task] = []
        self._http: HttpClient | None = None
        self._apply_lock = asyncio.Lock()
        self._bind_retry: asyncio.Task | None = None
        # one loop each: the four of ADS, then VHDS and LEDS where used
        self._types = (TYPES + ((("virtual_hosts", vhds_mod.VHDS),) if self.vhds else ())
                       + (((leds.PATH, LEDS),) if self.leds else ()))
        self._kicks = {url: asyncio.Event() for _, url in self._types}  # set: end this long poll, ask again now
        self._complete: frozenset[str] = frozenset()  # LEDS collections the control plane has answered
        self._assembled: dict[str, Any] = {}  # the ClusterLoadAssignments last applied (LEDS: assembled)
        self._leds_progress = asyncio.Event()

    async def start(self) -> None:
        self._http = HttpClient(connect_timeout=CONNECT_TIMEOUT)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._loop(path, url), name=f"xds-{SHORT[url]}") for path, url in self._types]

    async def stop(self) -> None:
        if self._bind_retry is not None:
            self._tasks.append(self._bind_retry)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    def _names(self, type_url: str) -> list[str]:
        """resource_names: EDS asks for the EDS clusters it knows, RDS for the route configs its listeners use."""
        if type_url == EDS:
            out = []
            for c in self.state.resources(CDS).values():
                if c.type == "EDS":
                    out.append((c.eds_cluster_config.service_name if c.eds_cluster_config else "") or c.name)
            return sorted(out)
        if type_url == RDS:
            names = {rds_name(lis) for lis in self.state.resources(LDS).values()}
            return sorted(n for n in names if n is not None)
        if type_url == vhds_mod.VHDS:
            return vhds_mod.wanted(self.state.resources(RDS))
        if type_url == LEDS:
            return sorted(leds.collections(self.state.resources(EDS).values()))
        return []

    async def _loop(self, path: str, type_url: str) -> None:
        backoff = BACKOFF_BASE
        delta = self.mode == "delta"
        url = f"{self.url}/v3/{'delta_discovery' if delta else 'discovery'}:{path}"
        assert self._http is not None
        kick = self._kicks[type_url]
        loop = asyncio.get_running_loop()
        while True:
            if type_url == vhds_mod.VHDS and not self.state.types[type_url].nonce and not self._names(type_url):
                await kick.wait()  # no route configuration says vhds (yet): nothing to subscribe to
                kick.clear()
                continue
            if type_url == LEDS and not self._names(LEDS) and not self.state.types[LEDS].subscribed:
                await kick.wait()  # nothing to subscribe to until an assignment names a collection
                kick.clear()
                continue
            if delta:
                body = self.state.next_delta_request(type_url, None if type_url in (CDS, LDS) else
                                                     self._names(type_url))
            else:
                body = self.state.next_request(type_url, self._names(type_url))
            exchange = loop.create_task(self._exchange(url, body, type_url))
            kicked = loop.create_task(kick.wait())
            try:
                await asyncio.wait((exchange, kicked), return_when=asyncio.FIRST_COMPLETED)
            finally:
                kicked.cancel()
                abandoned = not exchange.done()
                if abandoned:
                    exchange.cancel()
            if abandoned:  # kicked: this type has something new to say (an ACK) before the long poll ends
                await asyncio.gather(exchange, return_exceptions=True)
                kick.clear()
                continue
            try:
                raw = exchange.result()
                if raw is not None:
                    # parsed off the loop; a body that is not JSON raises ValueError, handled as before (back off)
                    await self._receive(type_url, raw)
                    if type_url == EDS and self.leds:
                        await self._leds_warming()
            except asyncio.CancelledError:
                raise
            except Resync as e:
                log.info("xds %s: %s; subscribing again", SHORT[type_url], e)
                self.state.reset(type_url)
                await asyncio.sleep(BACKOFF_BASE * self.rng.random())
                continue
            except (Refused, CredentialsError) as e:
                if self.refused != str(e):
                    log.warning("xds %s: %s; retrying", SHORT[type_url], e)
                self.refused, self.connected = str(e), False
                await asyncio.sleep(backoff * (0.5 + self.rng.random() / 2))
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except (asyncio.TimeoutError, OSError, ValueError) as e:  # HttpError is an OSError
                if self.connected:
                    log.warning("xds %s: control plane unreachable (%s); serving the last good config",
                                SHORT[type_url], e)
                self.connected = False
                if delta:  # a new connection is a new session (the control plane may have restarted)
                    self.state.reset(type_url)
                await asyncio.sleep(backoff * (0.5 + self.rng.random() / 2))
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_BASE

    async def _exchange(self, url: str, body: dict[str, Any], type_url: str) -> bytes | None:
        """One DiscoveryRequest, long-polled: the response body, or None when the wait ended with nothing new."""
        assert self._http is not None
        extra = {} if self.credentials is None else {"headers": self.credentials.headers(),
                                                     "ssl_context": self.credentials.ssl_context()}
        resp = await self._http.post_json(url, body, params={"wait": str(self.wait)}, **extra)
        self.state.request_sent(type_url)
        if resp.status == 304:
            self.connected, self.refused = True, None
            return None
        if resp.status in (401, 403):
            raise Refused(self._refusal(resp))
        if resp.status == 409:
            raise Resync(resp.text()[:300])
        if resp.status != 200:
            raise HttpError(f"{url}: HTTP {resp.status} {resp.reason}: {resp.text()[:300]}")
        if resp.content_type != "application/json":
            raise HttpError(f"{url}: HTTP 200 with unexpected content type {resp.content_type!r}")
        return resp.body

    @staticmethod
    def _refusal(resp: Reply) -> str:
        """One line from a 401/403 answer (`{"error", "reason"}`, control.xds.secure)."""
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("error"):
            return f"control plane refused this proxy: HTTP {resp.status} {doc.get('reason', '')}: {doc['error']}"
        return f"control plane refused this proxy: HTTP {resp.status} {resp.reason}"

    async def _receive(self, type_url: str, raw: bytes) -> None:
        """A DiscoveryResponse body: parse it (ValueError if it is not JSON), decode and apply it.

        The collector stays paused from the parse to the swap, so no GC pass walks the half-built snapshot,
        and the parsed JSON (millions of small objects for a huge RDS) is freed gradually off the loop
        afterwards (pyproxy.runtime.offload)."""
        offload = self.server.offload
        with offload.gc_paused():
            parsed = [await offload.parse_json(raw)]
            self.connected, self.refused = True, None
            await self._handle(type_url, parsed[0])
            await offload.release(parsed)  # still paused: the collector never walks the parsed JSON

    async def _handle(self, type_url: str, data: dict[str, Any]) -> None:
        nonce = str(data.get("nonce", ""))
        delta = self.mode == "delta"
        version = str(data.get("system_version_info" if delta else "version_info", ""))
        self.state.received(type_url, nonce)
        versions = None
        try:
            if delta:
                # VHDS keys its virtual hosts by resource name, not by their own (pyproxy.xds.vhds); LEDS assembles
                decoder = (vhds_mod.decode_virtual_hosts if type_url == vhds_mod.VHDS else
                           leds.decode_lb_endpoints if type_url == LEDS else
                           leds.decode_assignments if type_url == EDS and self.leds else
                           functools.partial(decode_delta, type_url))
                added, added_versions = await self.server.offload.run(decoder, data.get("resources", []))
                removed = data.get("removed_resources") or []
                if not isinstance(removed, list) or not all(isinstance(n, str) for n in removed):
                    raise ConfigError("removed_resources", "expected a list of names")
                decoded, versions = self.state.after_delta(type_url, added, added_versions, removed)
                if not added and not removed and type_url != LEDS and self._bind_retry is None:
                    # nothing changed for us (a new snapshot version only): ACK without rebuilding anything
                    self.state.accepted(type_url, version, decoded, versions)
                    return
            else:
                decoded = await self.server.offload.run(decode_resources, type_url, data.get("resources", []))
        except ConfigError as e:
            self._reject(type_url, version, str(e))
            return
        if self._bind_retry is not None:  # a newer response supersedes the one waiting for its port
            self._bind_retry.cancel()
            self._bind_retry = None
        try:
            await self._apply(type_url, version, decoded, versions)
        except BindFailed as e:
            self._reject(type_url, version, str(e))
            self._bind_retry = asyncio.get_running_loop().create_task(
                self._retry_bind(type_url, version, decoded, versions), name=f"xds-{SHORT[type_url]}-bind-retry")
        except (ConfigRejected, ConfigError) as e:
            self._reject(type_url, version, str(e))

    async def _apply(self, type_url: str, version: str, decoded: dict[str, Any],
                     versions: dict[str, str] | None = None) -> None:
        """Apply one type's resources with the last accepted ones of the others; accepted (ACKed) on success.
        Delta: `versions` are the per-resource versions then held; a new set of EDS clusters or RDS names
        wakes that loop to subscribe to it."""
        async with self._apply_lock:
            sets = {url: self.state.resources(url) for _, url in self._types}
            sets[type_url] = decoded
            routes = sets[RDS]
            if self.vhds:  # route configurations that say vhds get their virtual hosts; warming until VHDS answers
                st = self.state.types[vhds_mod.VHDS]
                routes = self._assemble(routes, sets[vhds_mod.VHDS],
                                        st.subscribed if type_url == vhds_mod.VHDS else st.answered)
            listeners = self._warm(sets[LDS], routes)
            complete = self._complete
            if type_url == LEDS:  # this response answered the subscription: its collections are all here
                complete = frozenset(self.state.types[LEDS].subscribed)
            endpoints = (leds.assemble(sets[EDS], sets[LEDS], complete, self._assembled) if self.leds
                         else sets[EDS])
            await self.server.apply(
                listeners, sets[CDS].values(), version=version, routes=routes, endpoints=endpoints)
            self._assembled, self._complete = endpoints, complete
        self.state.accepted(type_url, version, decoded, versions)
        if type_url == LEDS:
            self._leds_progress.set()
        log.info("xds %s: applied version %s (%d resources)", SHORT[type_url], version, len(decoded))
        follower = {CDS: EDS, LDS: RDS, RDS: vhds_mod.VHDS if self.vhds else None,
                    EDS: LEDS if self.leds else None}.get(type_url)
        if self.mode == "delta" and follower is not None:
            st = self.state.types[follower]
            if frozenset(self._names(follower)) != (st.requested if st.requested is not None else st.subscribed):
                self._kicks[follower].set()

    async def _leds_warming(self) -> None:
        """Hold the EDS ACK (and so LDS, after it in ADS order) until the LEDS collections the assignments name
        have arrived, at most LEDS_WARMING seconds: Envoy's cluster warming, so listeners do not come up before
        the endpoints they route to."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEDS_WARMING
        while not self._complete.issuperset(self._names(LEDS)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("xds leds: collections still missing after %.0fs; acknowledging EDS anyway",
                            LEDS_WARMING)
                return
            self._leds_progress.clear()
            await wait_event(self._leds_progress, remaining)  # not wait_for: pyproxy/runtime/waits.py

    async def _retry_bind(self, type_url: str, version: str, decoded: dict[str, Any],
                          versions: dict[str, str] | None = None) -> None:
        """Envoy leaves a listener that failed to bind unserved until the next LDS update; a gateway whose port
        was taken (something else on 8080) would then wait for an unrelated config change. Instead the same
        config is tried again, 1 s, 2 s, ... up to every 30 s, until its port frees up (the next request then
        ACKs it) or a newer response replaces it. Each try is counted in `xds.<type>.bind_retry`."""
        delay = BIND_RETRY_FIRST
        while True:
            await asyncio.sleep(delay * (0.5 + self.rng.random() / 2))
            self.server.stats.counter(f"xds.{SHORT[type_url]}.bind_retry").inc()
            try:
                await self._apply(type_url, version, decoded, versions)
            except BindFailed:
                delay = min(delay * 2, BIND_RETRY_MAX)
                continue
            except (ConfigRejected, ConfigError) as e:  # something else changed meanwhile: stop trying
                log.warning("xds %s: retrying version %s: %s", SHORT[type_url], version, e)
            else:
                log.info("xds %s: the listener that could not bind is now serving (version %s)",
                         SHORT[type_url], version)
                self._kicks[type_url].set()  # ACK it now, not when the pending long poll ends
            self._bind_retry = None
            return

    def _warm(self, listeners: dict[str, Any], routes: dict[str, Any]) -> list[Any]:
        """Envoy's listener warming: a listener whose RDS route config has not arrived yet is not served;
        the previous version of it (if any) keeps serving until the routes arrive. (A non-HTTP listener has
        no RDS name: it goes through, and apply() rejects it with its message.)"""
        def ready(lis: Any) -> bool:
            name = rds_name(lis)
            return name is None or name in routes

        previous = {lis.name: lis for lis in self.server.listener_configs}
        out = []
        for name, lis in listeners.items():
            if ready(lis):
                out.append(lis)
            elif name in previous and ready(previous[name]):
                out.append(previous[name])
        return out

    def _reject(self, type_url: str, version: str, message: str) -> None:
        log.warning("xds %s: rejected version %s: %s", SHORT[type_url], version, message)
        self.state.rejected(type_url, message)
        self.server.stats.counter(f"xds.{SHORT[type_url]}.update_rejected").inc()
