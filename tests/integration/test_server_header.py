"""What docs/engine.md promises about the headers the proxy itself puts on responses, over real sockets:

* `server`: `pyproxy` by default (Envoy says `envoy`, a documented deviation), the HCM's `server_name` when
  set, and `server_header_transformation` (OVERWRITE, APPEND_IF_ABSENT, PASS_THROUGH) deciding whether the
  upstream's own `server` survives;
* `x-envoy-upstream-service-time`: the upstream's time in whole milliseconds, on responses that came from an
  upstream, never on the proxy's own replies (a 404 without a route).
The values are Envoy's (its HCM and router); tests/differential compares the same headers' presence against
Envoy 1.40 on every row.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.support.proxy import bootstrap, route
from tests.support.upstream import _response


async def named_upstream(conn, req) -> bool:
    """An origin that names itself (`server: app`) on /named, and says nothing about itself elsewhere."""
    extra = [("server", "app")] if req.path.startswith("/named") else []
    conn.write(_response(200, [("content-length", "2"), *extra], b"ok"))
    return False


@pytest.mark.parametrize("hcm, path, server", [
    ({}, "/named", "pyproxy"),  # OVERWRITE by default: the proxy's name replaces the upstream's
    ({}, "/plain", "pyproxy"),
    ({"server_name": "edge"}, "/named", "edge"),
    ({"server_name": "edge", "server_header_transformation": "APPEND_IF_ABSENT"}, "/named", "app"),
    ({"server_name": "edge", "server_header_transformation": "APPEND_IF_ABSENT"}, "/plain", "edge"),
    ({"server_name": "edge", "server_header_transformation": "PASS_THROUGH"}, "/named", "app"),
    ({"server_name": "edge", "server_header_transformation": "PASS_THROUGH"}, "/plain", None),
])
async def test_server_header(upstream_factory, proxy_factory, hcm, path, server):
    up = await upstream_factory("named", handler=named_upstream)
    proxy = await proxy_factory(bootstrap({"app": [up.port]}, hcm=hcm))
    r = await proxy.fetch("GET", path)
    assert r.status == 200 and r.header_values("server") == ([server] if server else [])


async def test_a_local_reply_names_the_proxy_too(upstream, proxy_factory):
    proxy = await proxy_factory(bootstrap({"app": [upstream.port]}, routes=[route("/only", "app")],
                                          hcm={"server_name": "edge"}))
    r = await proxy.fetch("GET", "/elsewhere")
    assert (r.status, r.header("server")) == (404, "edge")
    assert r.header("x-envoy-upstream-service-time") is None  # no upstream answered


async def test_upstream_service_time_is_the_upstreams_time_in_milliseconds(upstream, proxy_factory):
    proxy = await proxy_factory(bootstrap({"app": [upstream.port]}))
    fast = await proxy.fetch("GET", "/")
    slow = await proxy.fetch("GET", "/delay/0.2")
    assert fast.status == slow.status == 200
    fast_ms, slow_ms = int(fast.header("x-envoy-upstream-service-time")), int(slow.header("x-envoy-upstream-service-time"))
    assert fast_ms >= 0 and slow_ms >= 200  # the origin waited 200 ms before its headers: never less
    assert len(fast.header_values("x-envoy-upstream-service-time")) == 1


async def test_upstream_service_time_counts_the_earlier_tries_of_a_retried_request(upstream_factory, proxy_factory):
    """Envoy's router measures it from the downstream request's end to the headers it forwards, so a retried
    request's service time includes the failed try before it (and the backoff), not only the answering one."""
    tries = []

    async def slow_failure_then_ok(conn, req) -> bool:
        tries.append(req.path)
        if len(tries) == 1:
            await asyncio.sleep(0.2)
            conn.write(_response(503, [("content-length", "0")]))
        else:
            conn.write(_response(200, [("content-length", "2")], b"ok"))
        return False

    up = await upstream_factory("flaky", handler=slow_failure_then_ok)
    retried = route("/", "app", retry_policy={"retry_on": "5xx", "num_retries": 1,
                                              "retry_back_off": {"base_interval": "0.001s"}})
    proxy = await proxy_factory(bootstrap({"app": [up.port]}, routes=[retried]))
    r = await proxy.fetch("GET", "/")
    assert (r.status, r.header("x-envoy-attempt-count"), len(tries)) == (200, None, 2)
    assert int(r.header("x-envoy-upstream-service-time")) >= 200  # the first try's 200 ms are in it
