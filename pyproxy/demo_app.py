"""A small httpbin-like demo backend (aiohttp): what the demo, examples and docs send traffic to.

  /anything[/...]   echo method, path, query, headers and body length as JSON (so does any other path)
  /status/<code>    answer with that status
  /delay/<seconds>  answer after a delay (max 10 s)
  /headers          the request headers as JSON
  /healthz          200 "ok"
"""
from __future__ import annotations

import argparse
import asyncio
import os

from aiohttp import web


async def anything(req: web.Request) -> web.Response:
    body = await req.read()
    return web.json_response({
        "method": req.method,
        "path": req.path,
        "query": dict(req.query),
        "headers": dict(req.headers),
        "body_length": len(body),
        "served_by": os.environ.get("DEMO_APP_NAME", f"demo-app pid {os.getpid()}"),
    })


async def status(req: web.Request) -> web.Response:
    try:
        code = int(req.match_info["code"])
    except ValueError:
        return web.Response(status=400, text="bad status\n")
    if not 200 <= code <= 599:
        return web.Response(status=400, text="status must be 200..599\n")
    return web.Response(status=code, text=f"{code}\n")


async def delay(req: web.Request) -> web.Response:
    try:
        seconds = min(float(req.match_info["seconds"]), 10.0)
    except ValueError:
        return web.Response(status=400, text="bad delay\n")
    await asyncio.sleep(max(seconds, 0.0))
    return web.json_response({"delayed": seconds})


async def headers(req: web.Request) -> web.Response:
    return web.json_response({"headers": dict(req.headers)})


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/anything", anything)
    app.router.add_route("*", "/anything/{tail:.*}", anything)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/delay/{seconds}", delay)
    app.router.add_get("/headers", headers)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", anything)  # any other path echoes too (e.g. /productpage)
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pyproxy.demo_app")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args(argv)
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
