"""Building and dropping a config snapshot off the event loop, so a huge xDS update does not stall traffic.

Where it sits: `XdsClient` parses and decodes a DiscoveryResponse, `ProxyServer.apply` compiles route tables;
both hand that CPU work to `Offload.run`, which runs it on a worker thread. Only the swap itself (and the small
wiring that touches stats, pools and sockets) stays on the loop. A pure function run on a worker thread still
shares the GIL with the loop, but CPython hands the GIL over every `sys.getswitchinterval()` (5 ms) of
bytecode, so the loop keeps answering requests while a 26,795-virtual-host RouteConfiguration is built.
Three things would still hold the GIL for a long time, and each has its answer here or next to it:

* one long C call: `json.loads` of 18 MB (~0.8 s). Answer: `pyproxy.xds.wire.parse_response` (ijson, fed in
  16 KiB chunks by a Python-level reader).
* a full cyclic-GC pass while millions of new objects exist: the collector walks them all in one C call.
  Answer: `gc_paused()` around the build; after the swap `freeze_after_swap()` moves the new snapshot to
  the permanent generation (what `pyproxy.cli` does at start) so no later pass walks it either.
* freeing the *old* snapshot: its last reference going away frees the whole tree in one C-level cascade
  (~270 ms for 26k virtual hosts). Answer: `release_gradually()` (below).

And one thing makes every loop wake-up slow while a worker runs: the GIL hand-over itself. A thread that wants
the GIL waits a whole switch interval before the holder is asked to let go, and the loop wants it back after
every `epoll` wait, i.e. several times per proxied request; with the default 5 ms a request took ~50 ms (p50)
during a build. `fine_switching()` lowers the interval to BUILD_SWITCH_INTERVAL while a worker builds or
frees a snapshot (measured: p99 ~7 ms at 0.2 ms; the build takes ~30% longer), and restores it after.

`Offload(off_loop=False)` runs the same functions inline on the loop: that is how pyproxy worked before, kept
so `benchmarks/apply_bench.py` can compare the two in one run.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import sys
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

BUILD_SWITCH_INTERVAL = 0.0002  # seconds; CPython's default is 0.005 (see above for the measurement)

_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


class gc_paused:
    """Context manager: no cyclic-GC pass while at least one build is inside it (nestable, thread-safe).
    The collector is re-enabled when the last build leaves, if it was enabled when the first one entered."""

    def __enter__(self) -> "gc_paused":
        global _gc_pausers, _gc_was_enabled
        with _gc_lock:
            if _gc_pausers == 0:
                _gc_was_enabled = gc.isenabled()
                gc.disable()
            _gc_pausers += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        global _gc_pausers
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


class fine_switching:
    """Context manager: GIL hand-over every BUILD_SWITCH_INTERVAL while at least one worker is inside it
    (nestable, thread-safe); the interval in force before the first one entered is restored after the last."""

    def __enter__(self) -> "fine_switching":
        global _switch_users, _switch_saved
        with _switch_lock:
            if _switch_users == 0:
                _switch_saved = sys.getswitchinterval()
                sys.setswitchinterval(min(_switch_saved, BUILD_SWITCH_INTERVAL))
            _switch_users += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        global _switch_users
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


def freeze_after_swap() -> None:
    """Move everything the collector tracks now (the new snapshot included) to the permanent generation, so the
    next gen-0 pass does not walk the millions of objects a paused build left in it. Trade-off, documented in
    docs/hardening.md: a reference cycle that became garbage since the last collection is kept, not freed."""
    gc.freeze()


class Offload:
    """Where config-building work runs: a worker thread (default) or inline on the loop (the old behaviour)."""

    def __init__(self, off_loop: bool = True):
        self.off_loop = off_loop

    def gc_paused(self) -> "gc_paused | contextlib.nullcontext[None]":
        """The collector paused around a whole build and swap (inline: left alone, as before)."""
        return gc_paused() if self.off_loop else contextlib.nullcontext()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`; off the loop with the cyclic GC paused. `fn` must be pure: it runs beside the loop."""
        if not self.off_loop:
            return fn(*args)
        return await asyncio.to_thread(_paused_call, fn, args)

    async def parse_json(self, body: bytes) -> Any:
        """A discovery response body → its JSON document; ValueError if it is not JSON."""
        if not self.off_loop:
            return json.loads(body)
        from pyproxy.xds.wire import parse_response

        return await self.run(parse_response, body)

    async def release(self, holder: list[Any]) -> int:
        """Drop the objects in `holder` (see `release_gradually`); returns how many objects were released."""
        if not self.off_loop:
            holder.clear()
            return 0
        return await asyncio.to_thread(_fine_call, release_gradually, (holder,))

    def __repr__(self) -> str:
        return f"Offload({'worker thread' if self.off_loop else 'inline'})"


def _paused_call(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    with gc_paused(), fine_switching():
        return fn(*args)


def _fine_call(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    with fine_switching():
        return fn(*args)


# ---------------------------------------------------------------- gradual release


_LEAVES = (str, bytes, int, float, bool, type(None))
_slots_cache: dict[type, tuple[str, ...]] = {}


def _slot_names(cls: type) -> tuple[str, ...]:
    names = _slots_cache.get(cls)
    if names is None:
        out: list[str] = []
        for klass in cls.__mro__:
            slots = klass.__dict__.get("__slots__", ())
            out.extend((slots,) if isinstance(slots, str) else slots)
        names = _slots_cache[cls] = tuple(out)
    return names


def _walkable(cls: type) -> bool:
    """Only immutable config objects: the frozen model dataclasses and the route table's compiled objects.
    Never live runtime objects (clusters, stats, connections): the loop mutates those while we walk."""
    module = cls.__module__
    if module == "pyproxy.config.model":
        return dataclasses.is_dataclass(cls)
    return module == "pyproxy.routing.table"


def snapshot_objects(roots: list[Any]) -> list[Any]:
    """The objects of a config snapshot reachable from `roots`, in pre-order (a parent before its children),
    each once. Descends into model dataclasses, the route table's objects, tuples, lists and dicts met on the
    way; anything else (functions, compiled regexes, strings) is a leaf, freed together with its parent."""
    out: list[Any] = []
    seen: set[int] = set()
    stack = list(reversed(roots))
    while stack:
        obj = stack.pop()
        if isinstance(obj, _LEAVES) or id(obj) in seen:
            continue
        seen.add(id(obj))
        out.append(obj)
        cls = type(obj)
        if cls is tuple or cls is list:
            children: Any = obj
        elif cls is dict:
            children = [*obj.keys(), *obj.values()]
        elif _walkable(cls):
            children = [getattr(obj, name, None) for name in _slot_names(cls)]
        else:
            continue
        stack.extend(reversed(children))
    return out


def release_gradually(holder: list[Any]) -> int:
    """Free a replaced snapshot one object at a time (run it on a worker thread).

    `holder` carries the roots (e.g. an old RouteTable and RouteConfiguration) and must be the last thing that
    references them. The objects are collected in pre-order, the roots are dropped, then the list entries are
    set to None from the front: each step frees one object (its children are still held further on), and the
    interpreter may hand the GIL to the loop between steps. Dropping the roots the ordinary way would free the
    whole tree in one C call. Anything still referenced elsewhere simply survives (reference counting decides,
    this only chooses the order), so the worst case is the ordinary cascade, later, wherever the last holder
    lets go. Returns the number of objects walked."""
    objs = snapshot_objects(holder)
    holder.clear()
    for i in range(len(objs)):
        objs[i] = None
    return len(objs)


def sole_reference(holder: list[Any], index: int) -> bool:
    """True if `holder[index]` is referenced by `holder` alone (CPython reference counts)."""
    return _refcount(holder, index) == _BASELINE


def _refcount(holder: list[Any], index: int) -> int:
    return sys.getrefcount(holder[index])


_BASELINE = _refcount([object()], 0)  # the count for an object that one list alone holds, read the same way
