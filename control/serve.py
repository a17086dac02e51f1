"""The serving control plane (istiod's discovery server minus the sockets): config in, per-proxy snapshots out.

    files --load/validate--> last good resources ----+
                                                     +--> MeshRegistry + build_mesh --> SnapshotBuilder
    proxies' DiscoveryRequests --> LiveRegistry -----+         (per connected proxy) --> XdsCache --> waiters

* **Config.** `reload()` loads every YAML/JSON file under the config directory, one file at a time (a file
  whose size, mtime and inode are unchanged is not parsed again). A file
  with an Error finding (YAML syntax, schema) keeps its last good resources serving; the error is logged,
  counted (`galley_validation_failed`, `pilot_config_errors`) and shown at `/debug/configz` (and
  `meshctl analyze` on the directory prints it with file:line). Accepted changes count
  `pilot_k8s_cfg_events{type,event}`.
* **Registration.** Each request's node registers or refreshes its proxy (control.registry.live); a proxy
  with no request in flight for the grace period is removed by `expire()`. With a `state_file`, the set is
  saved on every change and restored at start, so a control-plane restart does not drop the endpoints of
  proxies that have not reconnected yet (they get the grace period to come back, as istiod's persisted
  auto-registered WorkloadEntries do).
* **Push.** Config changes are debounced (`debounce`, istiod's PILOT_DEBOUNCE_AFTER 100ms); registrations
  (proxies coming and going) are not, unless `eds_debounce` (istiod's PILOT_ENABLE_EDS_DEBOUNCE, on there by
  default): they come from proxies' requests, not from an editor's burst of file writes, their push computes
  only the assignments of the services they move, and those arriving while a push runs still join the next
  one (pushes run one at a time), which batches a rollout without making every new replica wait. Then
  one mesh is built and every registered proxy's snapshot regenerated (renders shared by workload shape);
  only proxies whose snapshot changed are woken. A push after changes that only move endpoints (proxies
  registering or leaving, WorkloadEntry edits) reuses the shapes' CDS/LDS/RDS and computes EDS alone
  (istiod's incremental EDS push): `config_generation` counts the other changes, and
  control.xds.generate.endpoint_identities turns it full when the service accounts behind a service change;
  of EDS, only the assignments of the services whose endpoints moved are computed (EndpointTable.advance).
  A push after changes of VirtualServices only, with the same proxies, carries the last push's mesh over
  (MeshSnapshot.with_virtual_services): only what the edit touches is built and serialized again.
  Long-polls wait on a per-proxy event, woken by a new snapshot or by an ACK (which may open the next type in ADS order, see control.xds.cache).

Time: `clock` (monotonic seconds) is injected for registration and convergence; waiting uses the event loop.
The aiohttp shell is control.xds.server; the command is control.cli.control.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

from pyproxy.runtime.offload import Offload, freeze_after_swap
from pyproxy.runtime.waits import wait_event

from control.istio.load import LoadLimits, LoadResult, expand_paths, load_paths
from control.istio.messages import Level
from control.istio.resources import Resource
from control.mesh import MeshConfig, MeshSnapshot, build_mesh
from control.metrics import ControlMetrics
from control.registry.files import FileRegistry, RegistryError
from control.registry.live import DEFAULT_GRACE, LiveRegistry, MeshRegistry
from control.translate import Options, TranslateError, kept_across_virtual_service_edit
from control.xds.cache import DiscoveryRequest, DiscoveryResponse, Outcome, RequestKind, XdsCache, XdsType
from control.xds.admission import Admission
from control.xds.cache import EDS, VHDS, ProxySnapshot
from control.xds.delta import DeltaResponse, DeltaSessions, DeltaSubscription, DiffCache, PayloadIndex
from control.xds.delta import due as delta_due
from control.xds.leds import LedsSessions, LedsViews, eds_response, wants_leds
from control.xds.vhds import ResourceMemo, VhdsSubscription
from control.xds.generate import EndpointTable, GenerateError, ShapeCache, SnapshotBuilder
from control.xds.node import ProxyNode, node_dict, parse_node

log = logging.getLogger("pyproxy.control")


def load_one(path: str, *, strict: bool, limits: LoadLimits) -> LoadResult:
    """One config file's resources and findings (control.istio.load.load_paths on that file alone)."""
    return load_paths([path], strict=strict, limits=limits)

DEFAULT_DEBOUNCE = 0.1  # seconds; istiod PILOT_DEBOUNCE_AFTER
DEFAULT_LONG_POLL = 30.0  # seconds a long-poll waits before 304
ENDPOINT_KINDS = ("WorkloadEntry",)
# kinds whose changes alter endpoints' metadata (auto-mTLS: PeerAuthentication DISABLE and DestinationRule tls
# decide whether an endpoint carries tlsMode: istio), so EDS is computed again
ENDPOINT_POLICY_KINDS = ("PeerAuthentication", "DestinationRule")  # config kinds whose changes only move endpoints (EDS)


@dataclass(frozen=True, slots=True)
class PushResult:
    """One push cycle: `full` = shapes rendered again (a config change), else endpoint-only (EDS computed,
    CDS/LDS/RDS reused); `renders` = shapes rendered; `assignments` = ClusterLoadAssignments computed (0 when
    no endpoint moved); `serialized` = clusters and virtual hosts serialized (not found serialized from the
    last push: a VirtualService edit carries the mesh over, so only what it changed); `seconds` = wall time."""

    full: bool
    proxies: int
    changed: int
    renders: int
    assignments: int
    seconds: float
    serialized: int = 0

    def as_dict(self) -> dict:
        return {"full": self.full, "proxies": self.proxies, "changed": self.changed, "renders": self.renders,
                "assignments": self.assignments, "serialized": self.serialized, "seconds": round(self.seconds, 4)}


@dataclass(frozen=True, slots=True)
class ConfigRead:
    """One read of the config directory (made in a worker thread, applied on the loop): the files' last good
    resources, their registry (None when it cannot be built), the errors, and the per-file parse cache."""

    files: dict[str, tuple[Resource, ...]]
    resources: tuple[Resource, ...]
    registry: FileRegistry | None
    errors: tuple[str, ...]
    parsed: dict[str, tuple]  # path -> (stat key, resources, error findings)
    events: tuple[tuple[str, str], ...] = ()  # against the config applied when read (config_events)
    same_services: bool = True
    same_workloads: bool = True


@dataclass(frozen=True, slots=True)
class PushInputs:
    """What a push renders from, taken on the loop at once so the worker thread sees one consistent state."""

    files: FileRegistry
    resources: tuple[Resource, ...]
    config_generation: int
    registry_generation: int
    nodes: tuple[ProxyNode, ...]
    members: frozenset[str]
    live_generation: int
    changed_at: float
    # only VirtualServices changed in the files since the last push: its mesh is carried over
    # (MeshSnapshot.with_virtual_services) instead of built again
    virtual_services_only: bool = False


@dataclass(frozen=True, slots=True)
class Rendered:
    """A push's snapshots: per node (node, snapshot or None on error, notes, seconds to render)."""

    full: bool
    renders: int
    assignments: int
    proxies: tuple[tuple[ProxyNode, ProxySnapshot | None, tuple[str, ...], float], ...]
    serialized: int = 0


def _identity(res: Resource) -> tuple:
    return (res.spec, dict(res.labels), dict(res.annotations))


def config_events(old: Iterable[Resource], new: Iterable[Resource]) -> tuple[tuple[str, str], ...]:
    """(kind, event) for each resource added, updated or deleted between two configs (pilot_k8s_cfg_events)."""
    before = {(r.kind, r.namespace, r.name): r for r in old}
    after = {(r.kind, r.namespace, r.name): r for r in new}
    events = [(k[0], "add") for k in after if k not in before]
    events += [(k[0], "update") for k in after if k in before and _identity(after[k]) != _identity(before[k])]
    events += [(k[0], "delete") for k in before if k not in after]
    return tuple(sorted(events))


def hand_over(loop: asyncio.AbstractEventLoop, callback: Callable[[Any], Any]) -> Callable[[Any], None]:
    """A function a worker thread calls to have `callback(item)` run on `loop`; a no-op once the loop is
    closed (the control plane stopped while a push was computing: nobody is left to tell)."""
    def call(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(callback, item)
        except RuntimeError:
            pass
    return call


class ControlPlane:
    """Config, registry, snapshots and waiters of one control-plane process."""

    def __init__(self, config_dir: str, *, clock: Callable[[], float] = time.monotonic,
                 grace: float = DEFAULT_GRACE, debounce: float = DEFAULT_DEBOUNCE,
                 long_poll_timeout: float = DEFAULT_LONG_POLL, nonce_prefix: str | None = None,
                 metrics: ControlMetrics | None = None, options: Options = Options(),
                 state_file: str | None = None, limits: LoadLimits = LoadLimits(),
                 load_file: Callable[[str], LoadResult] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, eds_debounce: bool = False):
        # the heavy parts of a reload and a push run on a worker thread with the cyclic GC paused until the
        # result is frozen (pyproxy.runtime.offload), so xDS keeps answering: a collector pass over a 10 MB
        # config's objects would otherwise hold the GIL for hundreds of milliseconds
        self.offload = Offload()
        self.config_dir = config_dir
        self.limits = limits
        # one file -> resources and findings; called in a worker thread (tests wrap it to hold a reload)
        self.load_file = load_file or functools.partial(load_one, strict=False, limits=limits)
        self.state_file = state_file
        self.clock = clock
        self.debounce = debounce
        self.eds_debounce = eds_debounce  # registrations wait out `debounce` too (istiod PILOT_ENABLE_EDS_DEBOUNCE)
        self._config_pending = False  # a change other than a registration awaits the next push
        self._virtual_services_only = False  # the files changed only in VirtualServices since the last push
        self._mesh: tuple[tuple, MeshSnapshot] | None = None  # the last push's (registry state, mesh)
        self._fragments: dict[int, list] = {}  # the last full push's serialized pieces (SnapshotBuilder)
        self._vh_resources = ResourceMemo()  # VHDS resources of those pieces (control.xds.vhds)
        self.sleep = sleep  # how the push loop waits out the debounce (tests hold it on an event)
        self.long_poll_timeout = long_poll_timeout
        self.options = options
        self.metrics = metrics or ControlMetrics()
        prefix = nonce_prefix if nonce_prefix is not None else secrets.token_hex(3) + "-"
        self.cache = XdsCache(prefix)
        self.leds = LedsSessions(prefix)  # REST LEDS subscriptions (control.xds.leds)
        # REST delta xDS subscriptions (gRPC keeps its own per stream); VHDS subscribes by route configuration glob
        self.delta = DeltaSessions(kinds={VHDS.short: VhdsSubscription})
        self.delta_index = PayloadIndex()  # per-resource versions of the payloads delta responses are cut from
        self.delta_diffs = DiffCache()  # what moves clients from one payload to the next, once per pair
        self.leds_views = LedsViews(self.delta_index)  # EDS payloads in the LEDS form (control.xds.leds)
        self.live = LiveRegistry(grace)
        self.errors: tuple[str, ...] = ()  # error findings of the last reload
        self.notes: dict[str, tuple[str, ...]] = {}  # per proxy: what translation could not honour
        self.pushes = 0  # completed push cycles
        self.config_generation = 0  # bumped by every config change that is not endpoint-only
        self.registry_generation = 0  # bumped when the files' services or workloads change
        self._shapes = ShapeCache()
        self._endpoints = EndpointTable()
        self.last_push: PushResult | None = None
        self._good_files: dict[str, tuple[Resource, ...]] = {}
        self._parsed: dict[str, tuple] = {}  # path -> (stat key, resources, error findings)
        self._resources: tuple[Resource, ...] = ()
        self._files = FileRegistry((), ())
        self._events: dict[str, asyncio.Event] = {}
        self._stopping = False
        self._dirty: asyncio.Event | None = None
        self._change_at: float | None = None
        self._tasks: list[asyncio.Task] = []
        self._push_done: asyncio.Condition | None = None
        self._stop_watch: asyncio.Event | None = None
        self._reload_lock = asyncio.Lock()
        m = self.metrics.gauges
        m.set_source("pilot_xds", lambda: sum(1 for n in self.live.nodes() if self.live.connected(n.id)))
        m.set_source("pilot_services", lambda: len(self._files.services()))
        m.set_source("pilot_virt_services", lambda: sum(1 for r in self._resources if r.kind == "VirtualService"))
        m.set_source("pilot_config_errors", lambda: len(self.errors))

    def __repr__(self) -> str:
        return (f"ControlPlane({self.config_dir!r}, resources={len(self._resources)}, errors={len(self.errors)}, "
                f"{self.live!r}, {self.cache!r})")

    @property
    def resources(self) -> tuple[Resource, ...]:
        return self._resources

    # --- config ------------------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the config directory here and now. True when the serving config changed (a push is
        scheduled). The serving process uses `refresh`, which reads in a worker thread."""
        return self._apply(self._read())

    async def refresh(self) -> bool:
        """Reload with the reading, parsing and validation in a worker thread, so the event loop keeps
        answering xDS meanwhile; the result is swapped in whole, here on the loop. Never raises: a failure
        (a bug: hostile files are findings, see control.istio.load.LoadLimits) is logged and shown at
        /debug/configz, and the last good config keeps serving."""
        async with self._reload_lock:
            with self.offload.gc_paused():
                # the collector stays paused from the read until the new resources are frozen: a pass in between
                # would walk every object of a big config in one go (measured: 0.5 s for 22,000 VirtualServices)
                try:
                    read = await asyncio.to_thread(self._read)
                except Exception as err:  # noqa: BLE001 - see the docstring
                    log.exception("config: reload of %s failed; keeping the last good config", self.config_dir)
                    self.errors = (*self.errors, f"Error: reload failed: {type(err).__name__}: {err} "
                                                 "(keeping the last good config)")
                    self.metrics.validation_failed()
                    return False
                changed = self._apply(read)
                freeze_after_swap()  # the new resources join the permanent generation: later passes skip them
                return changed

    def _read(self) -> "ConfigRead":
        """Read every file of the config directory (those unchanged since the last read are not parsed
        again) and build its registry. Reads the last applied state, changes nothing: safe in a thread."""
        paths, problems = expand_paths([self.config_dir])
        errors = [str(f) for f in problems]
        if problems:  # the directory itself is gone (being replaced?): nothing was deleted on purpose
            errors.append(f"{self.config_dir}: keeping the last good config ({len(self._resources)} resources)")
            return ConfigRead(self._good_files, self._resources, None, tuple(errors), self._parsed)
        files: dict[str, tuple[Resource, ...]] = {}
        parsed: dict[str, tuple] = {}
        for path in paths:
            parsed[path] = self._parse(path)
            _key, resources, bad = parsed[path]
            if bad:
                errors += [str(f) for f in bad]
                if path in self._good_files:
                    files[path] = self._good_files[path]
                    errors.append(f"{path}: keeping its last good version ({len(files[path])} resources)")
            else:
                files[path] = resources
        resources = tuple(r for path in sorted(files) for r in files[path])
        try:
            registry = FileRegistry.from_resources(resources, MeshConfig.from_resources(resources).domain)
        except RegistryError as err:
            errors.append(f"Error: {err} (keeping the last good config)")
            return ConfigRead(files, resources, None, tuple(errors), parsed)
        return ConfigRead(files, resources, registry, tuple(errors), parsed, config_events(self._resources, resources),
                          registry.services() == self._files.services(),
                          registry.workloads() == self._files.workloads())

    def _parse(self, path: str) -> tuple:
        """(stat key, resources, error findings) of one file; the last read's when its size, mtime and
        inode are unchanged."""
        try:
            st = os.stat(path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            key = None
        cached = self._parsed.get(path)
        if key is not None and cached is not None and cached[0] == key:
            return cached
        result = self.load_file(path)
        for f in result.findings:
            if f.level < Level.ERROR:
                log.debug("%s", f)
        return key, result.resources, [f for f in result.findings if f.level >= Level.ERROR]

    def _apply(self, read: "ConfigRead") -> bool:
        """Swap in what `_read` found (on the loop). True when the serving config changed."""
        self._parsed = {path: entry for path, entry in read.parsed.items() if entry[0] is not None}
        self.errors = read.errors
        if read.errors:
            self.metrics.validation_failed()
            for e in read.errors:
                log.error("config: %s", e)
        if read.registry is None:
            return False
        registry, resources, events = read.registry, read.resources, read.events
        self._good_files = read.files
        same_services, same_workloads = read.same_services, read.same_workloads
        if not events and same_services and same_workloads:
            return False
        if same_services and same_workloads and all(kind == "VirtualService" for kind, _event in events):
            registry = self._files  # the same services and workloads: the objects the last mesh indexed
        else:
            self._virtual_services_only = False
        for kind, event in events:
            self.metrics.config_event(kind, event)
        if any(kind not in ENDPOINT_KINDS for kind, _event in events) or not same_services:
            self.config_generation += 1  # the next push renders again; else it is endpoint-only
        if not (same_services and same_workloads) or any(kind in ENDPOINT_POLICY_KINDS for kind, _e in events):
            self.registry_generation += 1  # endpoints may have moved, or their tlsMode metadata changed
        self._resources, self._files = resources, registry
        log.info("config: %d resources from %s (%d changes)", len(resources), self.config_dir, len(events))
        self.schedule_push()
        return True

    # --- pushes ------------------------------------------------------------------------------------------
    def schedule_push(self, registration: bool = False) -> None:
        """Note a change; the push loop rebuilds after the debounce delay, or at once when only proxies
        registered or left and `eds_debounce` is off (no-op before `start`)."""
        if not registration:
            self._config_pending = True
        if self._change_at is None:
            self._change_at = self.clock()
        if self._dirty is not None:
            self._dirty.set()

    async def _push_loop(self) -> None:
        assert self._dirty is not None and self._push_done is not None
        while True:
            await self._dirty.wait()
            if self._config_pending or self.eds_debounce:
                await self.sleep(self.debounce)  # changes arriving meanwhile join this push
            self._dirty.clear()
            self._config_pending = False
            changed_at, self._change_at = self._change_at, None
            try:
                await self.push(changed_at if changed_at is not None else self.clock())
            except Exception:  # a bug of ours must not stop future pushes; the last snapshots keep serving
                log.exception("push failed")
            async with self._push_done:
                self.pushes += 1
                self._push_done.notify_all()

    async def push(self, changed_at: float) -> PushResult:
        """Regenerate every connected proxy's snapshot (in a worker thread: the heavy part of a push, so
        long-polls and registrations keep being answered); set them and wake the changed ones on the loop, each
        as soon as it is computed (the first proxies' responses go out while the later shapes render)."""
        started_push = time.perf_counter()
        inputs = PushInputs(self._files, self._resources, self.config_generation, self.registry_generation,
                            self.live.nodes(), self.live.members(), self.live.generation, changed_at,
                            self._virtual_services_only)
        self._virtual_services_only = True  # until a change says otherwise
        loop = asyncio.get_running_loop()
        installed: dict[str, bool] = {}  # node id -> its snapshot changed

        def install(item: tuple) -> None:  # on the loop
            if item[0].id not in installed:
                installed[item[0].id] = self._install(*item)

        with self.offload.gc_paused():  # paused from the render until the result is frozen
            rendered = await asyncio.to_thread(self._render, inputs, hand_over(loop, install))
            for item in rendered.proxies:  # (each was handed over already: the loop runs them in order)
                install(item)
            changed = sum(installed.values())
            self.delta_index.retain(p.hash for pid in self.cache.proxy_ids()
                                    if (snap := self.cache.snapshot(pid)) is not None for p in snap.payloads.values())
            self.leds_views.retain(snap.payloads["eds"].hash for pid in self.cache.proxy_ids()
                                   if (snap := self.cache.snapshot(pid)) is not None)
            freeze_after_swap()  # the new snapshots join the permanent generation (see pyproxy.runtime.offload)
        self.last_push = PushResult(rendered.full, len(rendered.proxies), changed, rendered.renders,
                                    rendered.assignments, time.perf_counter() - started_push, rendered.serialized)
        log.debug("%s", self.last_push)
        return self.last_push

    def _install(self, node: ProxyNode, snapshot: ProxySnapshot | None, notes: tuple[str, ...],
                 seconds: float) -> bool:
        """Set one proxy's new snapshot and wake it; False when it is unchanged (or gone, or failed)."""
        if self.live.node(node.id) is None:  # expired while we were rendering
            return False
        self.notes[node.id] = notes
        if snapshot is None:
            return False
        self.metrics.push_time.observe(seconds)
        if not self.cache.set_snapshot(node.id, snapshot):
            return False
        self._notify(node.id)
        return True

    def _render(self, inputs: "PushInputs", deliver: Callable[[tuple], Any] | None = None) -> "Rendered":
        """Mesh, endpoints and every node's snapshot from `inputs`, taken on the loop (this runs in a worker
        thread; pushes run one at a time, so the shape and endpoint caches are its alone meanwhile). In a full
        push, each node's (node, snapshot, notes, seconds) goes to `deliver` as soon as it is computed: the
        shapes take ~50 ms each to render, and the loop sends the first proxies theirs meanwhile. Not in an
        endpoint-only push: it computes for tens of milliseconds only, and the loop writing responses
        while it runs slows both (measured: a registration's p99 285 -> 700 ms), as the two threads hand
        the GIL back and forth."""
        endpoints_key = (inputs.registry_generation, inputs.live_generation)
        if inputs.virtual_services_only and self._mesh is not None and self._mesh[0] == endpoints_key:
            last = self._mesh[1]
            mesh = last.with_virtual_services(inputs.resources, kept_across_virtual_service_edit(
                r for r in inputs.resources if r.kind == "VirtualService"))
            registry = mesh.registry
            assert isinstance(registry, MeshRegistry)
        else:
            # nothing of the last mesh can be found again: let it and the pieces serialized from it go before the
            # new one is built (they would double the peak memory of the push)
            self._mesh, self._fragments = None, {}
            registry = MeshRegistry(inputs.files, inputs.nodes, inputs.members)
            mesh = build_mesh(inputs.resources, registry=registry)
        self._mesh = (endpoints_key, mesh)
        self._endpoints = self._endpoints.advance(endpoints_key, mesh, registry)
        key = (inputs.config_generation, self._endpoints.identities)
        full = key != self._shapes.key
        if full:
            self._shapes = ShapeCache(key, previous=self._shapes)
        builder = SnapshotBuilder(mesh, registry, self.options, self._shapes, self._endpoints, self._fragments,
                                  self._vh_resources)
        if not full:
            deliver = None
        built = self._endpoints.built
        proxies = []
        for node in inputs.nodes:
            started = time.perf_counter()
            try:
                snapshot, notes = builder.snapshot(node, inputs.changed_at)
            except (TranslateError, RegistryError, GenerateError) as err:
                log.error("translate %s: %s", node.short, err)
                item = (node, None, (f"error: {err} (keeping its last config)",), 0.0)
            else:
                item = (node, snapshot, notes, time.perf_counter() - started)
            proxies.append(item)
            if deliver is not None:
                deliver(item)
        for node, snapshot, _notes, _seconds in proxies:  # LEDS forms of the new EDS, here rather than on the loop
            if snapshot is not None and wants_leds(node.client_features):
                self.leds_views(snapshot.payloads["eds"])
        self._shapes.retain(builder.used, (node.id for node in inputs.nodes))
        if builder.renders:
            self._fragments = builder.fragments  # those this push used: the next may find the same objects
            self._vh_resources.retain()
        return Rendered(full, builder.renders, builder.endpoints.built - built, tuple(proxies), builder.serialized)

    async def wait_push(self, after: int, timeout: float = 10.0) -> None:
        """Wait until more than `after` push cycles completed (tests, benchmarks)."""
        assert self._push_done is not None

        async with asyncio.timeout(timeout):
            async with self._push_done:
                await self._push_done.wait_for(lambda: self.pushes > after)

    def _notify(self, proxy_id: str) -> None:
        event = self._events.pop(proxy_id, None)
        if event is not None:
            event.set()

    # --- registration ------------------------------------------------------------------------------------
    def connect(self, node: ProxyNode, admission: Admission = Admission(True)) -> None:
        """A request from `node` began: register or refresh it; as an endpoint only if `admission` says so
        (control.xds.admission), else it only reads config."""
        if self.live.connect(node, self.clock(), member=admission.register):
            if admission.register:
                log.info("proxy %s registered (%s %s, labels %s)", node.short, node.type, node.ip,
                         dict(node.labels))
            else:
                log.info("proxy %s connected, not registered: %s", node.short, admission.reason)
            self.save_registrations()
            self.schedule_push(registration=True)

    def release(self, node_id: str) -> None:
        self.live.release(node_id, self.clock())

    def expire(self) -> tuple[ProxyNode, ...]:
        """Remove proxies gone for the grace period; their endpoints leave EDS at the next push."""
        gone = self.live.expire(self.clock())
        for node in gone:
            self.cache.remove(node.id)
            self.delta.remove(node.id)
            self.leds.remove(node.id)
            self.notes.pop(node.id, None)
            self._notify(node.id)
            log.info("proxy %s removed (no request for %.1fs)", node.short, self.live.grace)
        if gone:
            self.save_registrations()
            self.schedule_push(registration=True)
        return gone

    # --- registrations across restarts -------------------------------------------------------------------
    def save_registrations(self) -> None:
        """Write the registered proxies to `state_file` (atomically), if one is set."""
        if not self.state_file:
            return
        members = self.live.members()
        data = {"kind": "pyproxy-control registrations",
                "proxies": [node_dict(n) for n in self.live.nodes() if n.id in members]}
        tmp = f"{self.state_file}.tmp"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.state_file)), exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.state_file)
        except OSError as err:
            log.warning("cannot save registrations to %s: %s", self.state_file, err)

    def load_registrations(self) -> int:
        """Re-register the proxies of `state_file` (see LiveRegistry.restore). Unreadable state is a warning."""
        if not self.state_file or not os.path.exists(self.state_file):
            return 0
        try:
            with open(self.state_file, encoding="utf-8") as fh:
                nodes = [parse_node(n) for n in json.load(fh).get("proxies", ())]
        except (OSError, ValueError, AttributeError) as err:
            log.warning("ignoring registrations in %s: %s", self.state_file, err)
            return 0
        added = self.live.restore(nodes, self.clock())
        if added:
            log.info("restored %d registered proxies from %s (removed unless they reconnect within %.1fs)",
                     added, self.state_file, self.live.grace)
        return added

    async def _expire_loop(self) -> None:
        period = max(0.05, min(1.0, self.live.grace / 4))
        while True:
            await asyncio.sleep(period)
            try:
                self.expire()
            except Exception:  # a bug of ours must not end expiry for good (a dead task says nothing)
                log.exception("expiring proxies failed; trying again in %.2fs", period)

    # --- xDS ---------------------------------------------------------------------------------------------
    def receive(self, node: ProxyNode, xds_type: XdsType, request: DiscoveryRequest) -> Outcome:
        outcome = self.cache.receive(node.id, xds_type, request, self.clock())
        if outcome.kind is RequestKind.NACK:
            self.metrics.rejected(xds_type.short)
            log.warning("proxy %s rejected %s version %s: %s", node.short, xds_type.short.upper(),
                        self.cache.type_state(node.id, xds_type).nack_version, request.error_detail)
        elif outcome.kind in (RequestKind.ACK, RequestKind.RESUME):
            self._notify(node.id)  # may open the next type in ADS order
        self._observe(outcome)
        return outcome

    def _observe(self, outcome: Outcome) -> None:
        if outcome.converged_after is not None:
            self.metrics.convergence.observe(outcome.converged_after)

    # A long-poll waits with pyproxy.runtime.waits.wait_event, never asyncio.wait_for: aiohttp cancels the handler
    # when the proxy's connection closes, and wait_for could drop that cancellation (see waits.py), leaving the
    # proxy counted in flight and kept in every EDS for up to the long-poll's 30 s.
    async def next_response(self, node_id: str, xds_type: XdsType, wait: float) -> DiscoveryResponse | None:
        """The response due for this proxy and type, waiting up to `wait` seconds; None if nothing is due."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not self.cache.ready(node_id, xds_type):
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopping:
                return None  # 304: poll again (after a stop, the proxy reconnects to the next control plane)
            await wait_event(self._events.setdefault(node_id, asyncio.Event()), remaining)
        return self.respond(node_id, xds_type)

    async def next_delta(self, node_id: str, xds_type: XdsType, sub: DeltaSubscription, ticket: int,
                         wait: float) -> DeltaResponse | None:
        """The delta response due for this proxy and type (control.xds.delta.due), waiting up to `wait` seconds;
        None if nothing became due, or a newer request of the same type superseded this one (`ticket`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if not self.delta.current(node_id, xds_type.short, ticket):
                return None
            snapshot = self.cache.snapshot(node_id)
            if snapshot is not None and xds_type.short in snapshot.payloads:  # (VHDS: once the node asked for it)
                payload = snapshot.payloads[xds_type.short]
                node = self.live.node(node_id) if xds_type is EDS else None
                view = self.leds_views(payload) if node is not None and wants_leds(node.client_features) else None
                index = self.delta_index(payload) if view is None else view.index
                update = delta_due(self.cache, node_id, xds_type, sub, index.versions, ordered_stream=False,
                                   diffs=self.delta_diffs)
                if update is not None and not update and view is not None and not sub.changed:
                    outcome = self.cache.unchanged(node_id, xds_type, self.clock())
                    if outcome is not None:  # only endpoints moved: they go on LEDS, no empty EDS round trip
                        self._observe(outcome)
                        self._notify(node_id)  # may open the next type in ADS order, as an ACK does
                        update = None
                if update is not None:
                    response = self.respond(node_id, xds_type)
                    if view is not None:  # its assignments in the LEDS form, endpoints on /lb_endpoints
                        response = eds_response(response, view)
                    sub.sent(response.nonce, update, index.versions)
                    return DeltaResponse(response, update, index)
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopping:
                return None
            await wait_event(self._events.setdefault(node_id, asyncio.Event()), remaining)

    def respond(self, node_id: str, xds_type: XdsType) -> DiscoveryResponse:
        """The response due now for this proxy and type (`cache.ready` said so), counted as pushed."""
        self.metrics.pushed(xds_type.short)
        return self.cache.respond(node_id, xds_type)

    def change_event(self, node_id: str) -> asyncio.Event:
        """Set at the proxy's next new snapshot or ACK (what may make a response due): a gRPC ADS stream waits
        on it, as a long-poll does in `next_response`."""
        return self._events.setdefault(node_id, asyncio.Event())

    @property
    def stopping(self) -> bool:
        return self._stopping

    # --- views -------------------------------------------------------------------------------------------
    def syncz(self) -> list[dict]:
        """Per proxy and type: sync status, last sent/acked version and nonce, last NACK (/debug/syncz)."""
        out = []
        known = set(self.cache.proxy_ids())
        for node in self.live.nodes():
            entry = {
                "proxy": node.id, "name": node.short, "type": node.type, "ip": node.ip,
                "namespace": node.namespace, "labels": dict(node.labels),
                "admin": f"{node.ip}:{node.admin_port}", "istio_version": node.version,
                "connected": self.live.connected(node.id), **self.live.info(node.id),
                "notes": list(self.notes.get(node.id, ())),
            }
            entry.update(self.cache.describe(node.id) if node.id in known else {"version": "", "types": {}})
            leds_sub = self.leds.get(node.id)
            if leds_sub is not None and leds_sub.started:  # LEDS keeps its own subscriptions (control.xds.leds)
                entry["types"] = {**entry["types"], "leds": leds_sub.describe()}
            out.append(entry)
        return out

    def configz(self) -> dict:
        return {
            "config_dir": self.config_dir,
            "files": sorted(self._good_files),
            "resources": len(self._resources),
            "services": len(self._files.services()),
            "errors": list(self.errors),
            "pushes": self.pushes,
            "last_push": self.last_push.as_dict() if self.last_push else None,
        }

    # --- lifecycle ---------------------------------------------------------------------------------------
    async def start(self, watch: bool = True) -> None:
        """Load the config, then run the push, expiry and (optionally) file-watch loops."""
        self._dirty = asyncio.Event()
        self._push_done = asyncio.Condition()
        if not os.path.exists(self.config_dir):
            raise FileNotFoundError(f"{self.config_dir}: no such file or directory")
        await self.refresh()  # a bad file is reported and skipped; the rest serves
        self.load_registrations()
        self._dirty.set()
        self._tasks = [asyncio.create_task(self._push_loop(), name="push"),
                       asyncio.create_task(self._expire_loop(), name="expire")]
        if watch:
            self._stop_watch = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._watch_loop(self._stop_watch), name="watch"))

    async def _watch_loop(self, stop: asyncio.Event, retry_after: float = 1.0) -> None:
        """Watch the config directory and refresh on changes until `stop`. A reload never ends the watch
        (`refresh` does not raise). The watch does end when the directory goes away (inotify forgets it) or
        the watcher fails; then the directory is looked for every `retry_after` seconds, and once it is
        there again it is reloaded and watched anew."""
        from control.watch import watch_config

        async def on_change(_changed: set[str]) -> bool:
            await self.refresh()
            return os.path.isdir(self.config_dir)  # False ends this watch

        while not stop.is_set():
            if os.path.isdir(self.config_dir):
                try:
                    await watch_config([self.config_dir], on_change, stop)
                except Exception as err:  # noqa: BLE001 - the watcher must outlive any one failure
                    log.error("config watcher failed (%s: %s); restarting it", type(err).__name__, err)
                if not stop.is_set():
                    log.warning("config: %s is gone; watching for it to come back", self.config_dir)
            while not await wait_event(stop, retry_after):
                if os.path.isdir(self.config_dir):
                    await self.refresh()  # what changed while nobody watched
                    break

    async def stop(self) -> None:
        self._stopping = True  # long-polls end now instead of when their wait expires
        if self._stop_watch is not None:
            self._stop_watch.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        for event in self._events.values():
            event.set()
        self._events.clear()
