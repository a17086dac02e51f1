"""The bookinfo demo apps (bookinfo/app.py) calling each other through a real pyproxy, as through a sidecar:
the call graph, the stars per reviews version, header propagation, and the failure texts."""
from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from bookinfo.app import Settings, make_app
from tests.support.proxy import bootstrap, file_access_log, route, virtual_host


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture
async def mesh(proxy_factory, tmp_path):
    """ratings, details, reviews (version chosen per test) behind one pyproxy routing by Host; productpage
    calls through it. Returns (start(reviews_version, with_ratings=True) -> productpage port, proxy)."""
    runners: list[web.AppRunner] = []
    state: dict = {}

    async def start(version: str, with_ratings: bool = True) -> int:
        from tests.support.mesh import free_ports

        proxy_port = free_ports(1)[0]  # the apps' "sidecar": they need its address before it can start
        outbound = f"http://127.0.0.1:{proxy_port}"
        ports = {}
        for svc in ("details", "reviews", "ratings"):
            if svc == "ratings" and not with_ratings:
                ports[svc] = 1  # nothing listens there: connection refused
                continue
            r, ports[svc] = await serve(make_app(Settings(svc, version if svc == "reviews" else "v1", outbound)))
            runners.append(r)
        vhosts = [virtual_host(s, [f"{s}:9080"], [route("/", s)]) for s in ports]
        clusters = {s: [p] for s, p in ports.items()}
        log = tmp_path / "access.log"
        cfg = bootstrap(clusters, virtual_hosts=vhosts, listener_port=proxy_port)
        cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] = [
            file_access_log(log, {"authority": "%REQ(:AUTHORITY)%", "code": "%RESPONSE_CODE%",
                                  "rid": "%REQ(X-REQUEST-ID)%", "user": "%REQ(END-USER)%"})]
        proxy = await proxy_factory(cfg)
        state["proxy"] = proxy
        r, pp = await serve(make_app(Settings("productpage", "v1", outbound)))
        runners.append(r)
        return pp

    yield start, state
    for r in runners:
        await r.cleanup()


async def get(port: int, path: str, headers=None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}{path}", headers=headers or {}) as r:
            return r.status, await r.text()


@pytest.mark.parametrize("version, color, calls_ratings", [("v1", None, False), ("v2", "black", True),
                                                           ("v3", "red", True)])
async def test_productpage_calls_details_and_reviews_which_calls_ratings(mesh, version, color, calls_ratings):
    start, state = mesh
    pp = await start(version)
    status, page = await get(pp, "/productpage", {"x-request-id": "trace-me-1"})
    assert status == 200 and "The Comedy of Errors" in page and "Reviewer1" in page
    assert ("★" in page) == calls_ratings
    if color:
        assert f"color:{color}" in page
    log = state["proxy"].access_log()
    called = sorted(e["authority"] for e in log)
    assert called == sorted(["details:9080", "reviews:9080"] + (["ratings:9080"] if calls_ratings else []))
    assert {e["rid"] for e in log} == {"trace-me-1"}  # the request id travels the whole call graph


async def test_login_is_forwarded_as_end_user(mesh):
    start, state = mesh
    pp = await start("v2")
    status, body = await get(pp, "/api/v1/products/0?u=jason")
    assert status == 200
    assert {e["user"] for e in state["proxy"].access_log()} == {"jason"}


async def test_ratings_down_shows_istios_message(mesh):
    start, _ = mesh
    pp = await start("v3", with_ratings=False)
    status, page = await get(pp, "/productpage")
    assert status == 200 and "Ratings service is currently unavailable" in page


async def test_every_service_answers_health():
    for svc in ("productpage", "details", "reviews", "ratings"):
        runner, port = await serve(make_app(Settings(svc, "v1", "http://127.0.0.1:1")))
        try:
            assert await get(port, "/health") == (200, '{"status": "ok"}')
        finally:
            await runner.cleanup()
