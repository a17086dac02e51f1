"""A small httpbin-like demo backend (aiohttp): what the demo, examples and docs send traffic to.

  /anything[/...]   echo method, path, query, headers and body length as JSON (so does any other path)
  /status/<code>    answer with that status
  /delay/<seconds>  answer after a delay (max 10 s)
  /headers          the request headers as JSON
  /healthz          200 "ok"
  /call/<host:port>/<path>   call <path> on another service through this app's sidecar (outbound listener in
                    DEMO_APP_OUTBOUND, `127.0.0.1:15001`-style) with `Host: <host:port>`, copying the trace
                    headers Istio asks apps to propagate, as the bookinfo apps do; answers with the callee's JSON
"""
from __future__ import annotations

import argparse
import asyncio
import os

from aiohttp import ClientSession, web


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


# Istio's list of headers an application must copy from its inbound request to its outbound ones
# (istio.io FAQ "distributed tracing"): without it the sidecars cannot join the hops into one trace.
TRACE_HEADERS = ("x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
                 "x-b3-sampled", "x-b3-flags", "b3", "x-ot-span-context", "x-cloud-trace-context",
                 "grpc-trace-bin", "sw8", "x-client-trace-id")


async def call(req: web.Request) -> web.Response:
    outbound = os.environ.get("DEMO_APP_OUTBOUND")
    if not outbound:
        return web.Response(status=500, text="DEMO_APP_OUTBOUND is not set: this app has no sidecar to call through\n")
    headers = {name: req.headers[name] for name in TRACE_HEADERS if name in req.headers}
    headers["Host"] = req.match_info["target"]
    url = f"http://{outbound}/{req.match_info['rest']}"
    async with ClientSession(auto_decompress=False) as session:
        async with session.request(req.method, url, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            return web.Response(status=resp.status, body=body, content_type=resp.content_type)


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
    app.router.add_route("*", "/call/{target}/{rest:.*}", call)
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
