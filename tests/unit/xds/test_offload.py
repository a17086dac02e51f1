"""Building a config off the event loop (pyproxy.runtime.offload, pyproxy.xds.wire): the same results as the
inline build, the same NACKs, requests answered while a large RDS update is being built, the replaced snapshot
freed. No timing thresholds: the "during the apply" test holds the apply's parse on its worker thread until
its request has been answered."""
from __future__ import annotations

import asyncio
import gc
import json
import threading
import weakref

import pytest

from benchmarks.apply_bench import HOST, rds_body, start_proxy
from pyproxy.config import model
from pyproxy.config.decode import decode
from pyproxy.http.headers import Headers
from pyproxy.routing.table import RouteTable
from pyproxy.runtime.offload import (
    Offload,
    gc_paused,
    release_gradually,
    snapshot_objects,
    sole_reference,
)
from pyproxy.server import HcmRuntime, compile_routes
from pyproxy.xds.state import RDS
from pyproxy.xds import wire
from pyproxy.xds.wire import parse_response

SMALL = {"name": "80", "virtual_hosts": [
    {"name": "a", "domains": ["a.example.com", "*.a.example.com"], "routes": [
        {"name": "api", "match": {"prefix": "/api", "headers": [{"name": "x-v", "exact_match": "2"}]},
         "route": {"cluster": "a-v2"}},
        {"name": "regex", "match": {"safe_regex": {"regex": "/items/[0-9]+"}}, "route": {"cluster": "items"}},
        {"name": "rest", "match": {"prefix": "/"}, "route": {"cluster": "a"}}]},
    {"name": "b", "domains": ["b.*"], "routes": [
        {"name": "exact", "match": {"path": "/x", "case_sensitive": False}, "route": {"cluster": "b"}}]},
    {"name": "default", "domains": ["*"], "routes": [
        {"name": "direct", "match": {"prefix": "/"}, "direct_response": {"status": 404}}]},
]}

REQUESTS = [  # (authority, path, headers)
    ("a.example.com", "/api/x", {"x-v": "2"}),
    ("a.example.com", "/api/x", {}),
    ("x.a.example.com", "/items/42", {}),
    ("x.a.example.com", "/items/4x", {}),
    ("b.local", "/X", {}),
    ("b.local", "/y", {}),
    ("other", "/", {}),
]


def _matches(table: RouteTable) -> list[tuple[str, str] | None]:
    out = []
    for authority, path, headers in REQUESTS:
        m = table.match(authority, path, Headers(list(headers.items())))
        out.append((m.virtual_host.name, m.name) if m else None)
    return out


async def test_a_route_table_compiled_off_the_loop_matches_as_the_inline_one():
    rc = decode(model.RouteConfiguration, SMALL)
    compiled = await Offload(off_loop=True).run(compile_routes, rc)
    assert _matches(compiled.route_table) == _matches(RouteTable(rc)) == [
        ("a", "api"), ("a", "rest"), ("a", "regex"), ("a", "rest"), ("b", "exact"), None, ("default", "direct")]


@pytest.mark.parametrize("text", [
    b'{"version_info": "1", "resources": [{"a": 1, "b": 1.5, "c": [true, null, "\\u00e9"], "a": 2}]}',
    b'{"nested": {"deep": [[[]], {}], "n": -1234567890123456789, "e": 1e3}}',
])
def test_the_incremental_parser_gives_what_json_loads_gives(text):
    assert parse_response(text) == json.loads(text)


@pytest.mark.parametrize("text", [b"", b"{", b'{"a": 1}x', b"{}{}", b"{'a': 1}"])
def test_a_body_that_is_not_one_json_document_is_a_value_error(text):
    with pytest.raises(ValueError):
        parse_response(text)


def test_gc_pause_nests_and_restores_the_collector():
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


class Leaf:
    """A weak-referenceable object the walk does not descend into (any non-config class)."""

    def __init__(self) -> None:
        self.children = [object()]


def test_gradual_release_walks_config_objects_only_and_frees_them():
    rc = decode(model.RouteConfiguration, SMALL)
    table = RouteTable(rc)
    leaf = Leaf()
    seen = weakref.ref(leaf)
    holder = [table, rc, {"extra": (leaf,)}]
    objs = snapshot_objects(holder)
    assert sum(1 for o in objs if isinstance(o, model.VirtualHost)) == 3  # each once, though shared
    assert leaf in objs and leaf.children not in objs  # a foreign object is a leaf: not walked into
    del objs, table, rc, leaf
    assert release_gradually(holder) > 20
    assert holder == [] and seen() is None


def test_sole_reference_reads_the_reference_count():
    obj = object()
    holder = [obj]
    assert not sole_reference(holder, 0)
    del obj
    assert sole_reference(holder, 0)


# ---------------------------------------------------------------- through the xDS client


async def _proxy(off_loop: bool = True):
    return await start_proxy(off_loop)


async def _get(port: int, host: str = HOST) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
        return await reader.read()
    finally:
        writer.close()


async def test_a_request_sent_while_a_large_rds_is_applied_is_answered_before_the_apply_ends(monkeypatch):
    """The apply's parse is held on its worker thread until the test's request has been answered: the loop
    answers meanwhile. Were the parse on the loop, the loop would be stuck in it (until the hang guard lets
    the parse go) and the request would be answered only after the apply."""
    parsing, release, parsed = threading.Event(), threading.Event(), threading.Event()

    def held_parse(body: bytes):
        parsing.set()
        release.wait(30)  # a hang guard: the test releases it as soon as its request was answered
        parsed.set()
        return parse_response(body)
    up, server, xds = await _proxy()
    monkeypatch.setattr(wire, "parse_response", held_parse)  # once the proxy has its first config
    try:
        port = server.listener_port("bench")
        apply = asyncio.get_running_loop().create_task(xds._receive(RDS, rds_body(1000, "v1")))
        assert await asyncio.to_thread(parsing.wait, 30)  # the apply is in its parse, on a worker thread
        response = await _get(port)
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"ok")
        assert not parsed.is_set(), "the response should have arrived while the parse was still running"
        release.set()
        await apply
        assert server.version == "v1" and xds.state.types[RDS].version == "v1"
        assert (await _get(port, "svc999.default")).startswith(b"HTTP/1.1 200")  # a host of the new table
    finally:
        release.set()
        await server.stop()
        up.close()


async def test_a_replaced_large_route_table_is_freed_gradually_once_nothing_uses_it():
    up, server, xds = await _proxy()
    try:
        await xds._receive(RDS, rds_body(1_500, "v1"))
        # by id among the live objects, not a weak reference: the compiled build's HcmRuntime takes none
        old = id(server.listeners["bench"].current)
        await server.release_retired()  # the one-host table it replaced is small: nothing retired
        await xds._receive(RDS, rds_body(1_500, "v2"))
        assert old != id(server.listeners["bench"].current)
        # the swap retired it and scheduled its release; let that finish (or run it, if it is not due yet)
        await asyncio.gather(*server._release_tasks)
        if server._retired:
            assert await server.release_retired() > 1_500 * 10
        assert server._retired == [] and old not in _alive(HcmRuntime)  # (no HcmRuntime was made since)
    finally:
        await server.stop()
        up.close()


def _alive(kind: type) -> set[int]:
    """The ids of the live objects of `kind` (the proxy gc.freeze()s its config after applying it: unfreeze, so
    the collector lists those objects again)."""
    gc.unfreeze()
    gc.collect()
    return {id(o) for o in gc.get_objects() if type(o) is kind}


BAD_ROUTES = [  # (what is wrong, RouteConfiguration "80")
    ("a duplicate domain", {"@type": RDS, "name": "80", "virtual_hosts": [
        {"name": "a", "domains": ["x"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]},
        {"name": "b", "domains": ["x"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]}),
    ("a bad regex", {"@type": RDS, "name": "80", "virtual_hosts": [
        {"name": "a", "domains": ["*"], "routes": [{"match": {"safe_regex": {"regex": "("}},
                                                    "route": {"cluster": "up"}}]}]}),
    ("an unknown field", {"@type": RDS, "name": "80", "virtual_hosts": [{"name": "a", "domainz": ["*"]}]}),
]


@pytest.mark.parametrize("what,resource", BAD_ROUTES, ids=[w for w, _ in BAD_ROUTES])
async def test_a_bad_route_configuration_is_nacked_with_the_same_text_as_inline(what, resource):
    body = json.dumps({"version_info": "bad", "resources": [resource], "nonce": "n"}).encode()
    errors = {}
    for off_loop in (False, True):
        up, server, xds = await _proxy(off_loop)
        try:
            await xds._receive(RDS, body)
            assert server.version == "0" and xds.state.types[RDS].version == "0"  # the last good one serves
            assert (await _get(server.listener_port("bench"))).startswith(b"HTTP/1.1 200")
            assert server.stats.counter("xds.rds.update_rejected").value == 1
            errors[off_loop] = xds.state.types[RDS].error
        finally:
            await server.stop()
            up.close()
    assert errors[True] == errors[False] and errors[True]
