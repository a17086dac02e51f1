"""Path normalisation and admin mutations, seen from outside: raw requests in, the client's answer and the
origin's view checked (pyproxy.http.path, pyproxy.admin.guard)."""
from __future__ import annotations

import aiohttp
import pytest

from tests.support.client import request_bytes
from tests.support.proxy import bootstrap

ISTIO_DEFAULT = {"normalize_path": True}  # what istiod puts on every HCM (meshConfig pathNormalization DEFAULT)


async def send(proxy, target: str):
    c = await proxy.connect()
    await c.send(request_bytes("GET", target))
    r = await c.read_response()
    await c.aclose()
    return r


@pytest.mark.parametrize("target, seen", [
    ("/../../etc/passwd", "/etc/passwd"),
    ("/api/../admin", "/admin"),
    ("/api/%2e%2e/admin?x=/../y", "/admin?x=/../y"),
    ("/a/./b/../c", "/a/c"),
    ("/api/..\\admin", "/admin"),
])
async def test_normalize_path_rewrites_what_the_upstream_sees(upstream, proxy_factory, target, seen):
    proxy = await proxy_factory(bootstrap({"b": [upstream.port]}, hcm=ISTIO_DEFAULT))
    r = await send(proxy, target)
    assert r.status == 200
    assert [q.path for q in upstream.requests] == [seen]


async def test_without_normalize_path_the_path_is_forwarded_as_sent(upstream, proxy_factory):
    """Envoy's own default (normalize_path unset) leaves the path alone."""
    proxy = await proxy_factory(bootstrap({"b": [upstream.port]}))
    assert (await send(proxy, "/a/../b")).status == 200
    assert [q.path for q in upstream.requests] == ["/a/../b"]


async def test_routing_sees_the_normalised_path(upstream_factory, proxy_factory):
    """A route for /admin catches /public/../admin: matching happens after normalisation."""
    from tests.support.proxy import route

    public, admin = await upstream_factory("public"), await upstream_factory("admin")
    proxy = await proxy_factory(bootstrap({"public": [public.port], "admin": [admin.port]},
                                          routes=[route("/admin", "admin"), route("/", "public")],
                                          hcm=ISTIO_DEFAULT))
    r = await send(proxy, "/public/../admin/x")
    assert r.status == 200 and r.header("x-upstream") == "admin"
    assert [q.path for q in admin.requests] == ["/admin/x"] and public.requests == []


async def test_nul_escape_is_rejected_with_path_normalization_failed(upstream, proxy_factory, tmp_path):
    proxy = await proxy_factory(bootstrap({"b": [upstream.port]}, hcm=ISTIO_DEFAULT, access_log=tmp_path / "a.log"))
    c = await proxy.connect()
    await c.send(request_bytes("GET", "/a/%00/b"))
    r = await c.read_response()
    assert r.status == 400 and upstream.requests == []
    await c.assert_closed()  # Envoy closes after a path normalisation failure
    assert proxy.access_log()[0]["details"] == "path_normalization_failed"
    assert proxy.stat("http.ingress_http.downstream_rq_failed_path_normalization") == 1


@pytest.mark.parametrize("action, status, location", [
    ("REJECT_REQUEST", 400, None),
    ("UNESCAPE_AND_REDIRECT", 307, "/a/b"),
])
async def test_escaped_slash_actions(upstream, proxy_factory, action, status, location):
    proxy = await proxy_factory(bootstrap({"b": [upstream.port]},
                                          hcm={"path_with_escaped_slashes_action": action}))
    r = await send(proxy, "/a%2Fb")
    assert r.status == status and r.header("location") == location
    assert upstream.requests == []


async def test_unescape_and_forward(upstream, proxy_factory):
    proxy = await proxy_factory(bootstrap({"b": [upstream.port]},
                                          hcm={"path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD"}))
    assert (await send(proxy, "/a%2Fb")).status == 200
    assert [q.path for q in upstream.requests] == ["/a/b"]


# ---------------------------------------------------------------- admin: mutations from a browser

@pytest.fixture
async def admin_port(upstream, proxy_factory):
    from pyproxy.admin.server import make_app, start_admin

    proxy = await proxy_factory(bootstrap({"b": [upstream.port]}))
    quits: list[int] = []
    runner, port = await start_admin(make_app(proxy.server, on_quit=lambda: quits.append(1)), "127.0.0.1", 0)
    yield port, quits
    await runner.cleanup()


@pytest.mark.parametrize("headers, status", [
    ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, 403),  # a browser's simple request
    ({"Origin": "null"}, 403),
    ({"Host": "evil.example"}, 403),  # DNS rebinding: the page's own name, resolved to 127.0.0.1
    ({"Host": "rebind.example:15000", "Origin": "http://rebind.example:15000"}, 403),
    ({"Origin": "http://127.0.0.1:15000"}, 200),
    ({"Origin": "http://localhost"}, 200),
    ({}, 200),  # curl, meshctl: no Origin, loopback Host
])
async def test_admin_quit_refuses_foreign_origins_and_hosts(admin_port, headers, status):
    port, quits = admin_port
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/quitquitquit", headers=headers, data=b"x") as r:
            assert r.status == status
    assert quits == ([1] if status == 200 else [])


async def test_admin_mutation_needs_post_and_reads_stay_open(admin_port):
    port, quits = admin_port
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/quitquitquit") as r:
            assert r.status == 405
        async with s.get(f"http://127.0.0.1:{port}/ready", headers={"Host": "anything.example",
                                                                    "Origin": "http://evil.example"}) as r:
            assert r.status == 200
    assert quits == []


def test_admin_guard_allows_the_admins_own_bound_address_only():
    """A state change addressed to the admin's own (non-loopback) bound address is allowed; another host is not,
    and a wildcard bind (0.0.0.0) never makes a foreign Host acceptable."""
    from pyproxy.admin.guard import refusal

    assert refusal("POST", "/quitquitquit", "10.1.2.3:15000", None, "10.1.2.3") is None
    assert refusal("POST", "/quitquitquit", "10.9.9.9:15000", None, "10.1.2.3")[0] == 403
    assert refusal("POST", "/quitquitquit", "0.0.0.0:15000", None, "0.0.0.0")[0] == 403
