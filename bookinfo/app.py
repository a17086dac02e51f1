"""Bookinfo, Istio's sample application, as four small aiohttp services for the demo mesh.

    productpage  --->  details
         |
         +-------->  reviews v1            (no stars)
                     reviews v2 --> ratings (black stars)
                     reviews v3 --> ratings (red stars)

As in Istio's bookinfo, the apps know nothing about TLS, retries or metrics: each calls the others by service
name (`details:9080`, `reviews:9080`, `ratings:9080`) through its own sidecar's outbound listener (the
`--outbound` address; in a Kubernetes mesh iptables would send the traffic there), and forwards the request's
tracing and routing headers (`x-request-id`, W3C `traceparent`/`tracestate`, B3, `end-user`) so the mesh can join
one request's spans into one trace and route on them. A failed call shows up on the page the way Istio's
productpage shows it ("Error fetching product reviews!", "Ratings service is currently unavailable").

Run one service: `python -m bookinfo.app --service reviews --version v2 --port 9081 --outbound http://127.0.0.1:15001`.
Every service answers `/health` and `/headers` (what it received, as httpbin's); productpage serves `/productpage` (HTML, `?u=jason` logs in as jason) and
`/api/v1/products/<id>` (JSON); details `/details/<id>`, reviews `/reviews/<id>`, ratings `/ratings/<id>`.
"""
from __future__ import annotations

import argparse
import html
import os
import socket
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

# Headers an app must copy from its inbound request to the requests it makes (Istio's bookinfo list)
FORWARDED = ("x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
             "x-b3-sampled", "x-b3-flags", "b3", "x-ot-span-context", "x-cloud-trace-context", "grpc-trace-bin",
             "sw8", "end-user", "user-agent", "cookie")
CALL_TIMEOUT = aiohttp.ClientTimeout(total=3.0)

BOOK = {"id": 0, "title": "The Comedy of Errors", "author": "William Shakespeare", "year": 1595,
        "type": "paperback", "pages": 200, "publisher": "PublisherA", "language": "English",
        "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"}
REVIEWS = [("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
           ("Reviewer2", "Absolutely fun and entertaining. The play lacks thematic depth when compared to other "
                         "plays by Shakespeare.")]
RATINGS = {"Reviewer1": 5, "Reviewer2": 4}
STAR_COLOR = {"v2": "black", "v3": "red"}
SETTINGS: web.AppKey["Settings"] = web.AppKey("settings")
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session")


@dataclass(frozen=True)
class Settings:
    service: str
    version: str
    outbound: str  # the sidecar's outbound listener, e.g. http://127.0.0.1:15001

    @property
    def instance(self) -> str:
        return os.environ.get("POD_NAME") or f"{self.service}-{self.version}-{socket.gethostname()}"


def forwarded_headers(req: web.Request) -> dict[str, str]:
    """The headers to propagate, plus `end-user` from productpage's login (query `u` or cookie `user`)."""
    out = {k: v for k, v in req.headers.items() if k.lower() in FORWARDED}
    user = req.query.get("u") or req.cookies.get("user")
    if user:
        out["end-user"] = user
    return out


async def call(req: web.Request, service: str, path: str) -> tuple[int, Any]:
    """GET `service`:9080`path` through the sidecar; (status, JSON or None). Status 0 = not reachable."""
    settings: Settings = req.app[SETTINGS]
    session: aiohttp.ClientSession = req.app[SESSION]
    headers = {**forwarded_headers(req), "Host": f"{service}:9080"}
    try:
        async with session.get(settings.outbound + path, headers=headers, timeout=CALL_TIMEOUT) as resp:
            body = await resp.json(content_type=None) if resp.status == 200 else None
            return resp.status, body
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, None


# ---------------------------------------------------------------- the services

async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def headers(req: web.Request) -> web.Response:
    """What this app received (httpbin's /headers): how the demo shows the `x-forwarded-client-cert` that the
    server-side sidecar adds, the caller's identity from mTLS, without the app knowing anything of TLS."""
    return web.json_response({"headers": dict(req.headers)})


async def details(req: web.Request) -> web.Response:
    return web.json_response({**BOOK, "id": int(req.match_info.get("id", "0") or 0)})


async def ratings(req: web.Request) -> web.Response:
    return web.json_response({"id": int(req.match_info.get("id", "0") or 0), "ratings": RATINGS})


async def reviews(req: web.Request) -> web.Response:
    settings: Settings = req.app[SETTINGS]
    pid = int(req.match_info.get("id", "0") or 0)
    out: list[dict[str, Any]] = [{"reviewer": who, "text": text} for who, text in REVIEWS]
    color = STAR_COLOR.get(settings.version)
    if color is not None:  # v2 and v3 ask ratings; v1 never does (as in Istio)
        status, body = await call(req, "ratings", f"/ratings/{pid}")
        for r in out:
            if status == 200 and body:
                r["rating"] = {"stars": body["ratings"].get(r["reviewer"], 0), "color": color}
            else:
                r["rating"] = {"error": "Ratings service is currently unavailable"}
    return web.json_response({"id": pid, "podname": settings.instance, "version": settings.version,
                              "reviews": out})


async def product_api(req: web.Request) -> web.Response:
    pid = int(req.match_info.get("id", "0") or 0)
    return web.json_response(await _product(req, pid))


async def _product(req: web.Request, pid: int) -> dict[str, Any]:
    d_status, d_body = await call(req, "details", f"/details/{pid}")
    r_status, r_body = await call(req, "reviews", f"/reviews/{pid}")
    return {
        "id": pid,
        "details": d_body if d_status == 200 else {"error": "Error fetching product details!",
                                                    "status": d_status},
        "reviews": r_body if r_status == 200 else {"error": "Error fetching product reviews!",
                                                    "status": r_status},
        "user": forwarded_headers(req).get("end-user"),
    }


async def productpage(req: web.Request) -> web.Response:
    p = await _product(req, 0)
    d, r = p["details"], p["reviews"]
    rows = []
    if "error" in r:
        rows.append(f"<p class='error'>{html.escape(r['error'])} (status {r['status']})</p>")
    else:
        for rev in r["reviews"]:
            rating = rev.get("rating")
            stars = ""
            if rating and "stars" in rating:
                stars = (f"<span style='color:{rating['color']}'>" + "★" * rating["stars"]
                         + "☆" * (5 - rating["stars"]) + "</span>")
            elif rating:
                stars = f"<span class='error'>{html.escape(rating['error'])}</span>"
            rows.append(f"<blockquote><p>{html.escape(rev['text'])}</p><small>{rev['reviewer']}</small> {stars}"
                        "</blockquote>")
        rows.append(f"<p><small>Reviews served by: {html.escape(r['podname'])} ({r['version']})</small></p>")
    info = (f"<p class='error'>{html.escape(d['error'])}</p>" if "error" in d else
            "<dl>" + "".join(f"<dt>{k}</dt><dd>{html.escape(str(d[k]))}</dd>"
                             for k in ("type", "pages", "publisher", "language", "ISBN-10", "ISBN-13")) + "</dl>")
    user = p["user"]
    page = (f"<!doctype html><html><head><title>Simple Bookstore App</title></head><body>"
            f"<h1>{BOOK['title']}</h1><p>{'Signed in as ' + html.escape(user) if user else 'Not signed in'}</p>"
            f"<h2>Book Details</h2>{info}<h2>Book Reviews</h2>{''.join(rows)}</body></html>")
    return web.Response(text=page, content_type="text/html")


ROUTES = {
    "productpage": [("/productpage", productpage), ("/api/v1/products/{id}", product_api)],
    "details": [("/details/{id}", details)],
    "reviews": [("/reviews/{id}", reviews)],
    "ratings": [("/ratings/{id}", ratings)],
}


def make_app(settings: Settings) -> web.Application:
    if settings.service not in ROUTES:
        raise ValueError(f"unknown bookinfo service {settings.service!r} (one of {', '.join(ROUTES)})")
    app = web.Application()
    app[SETTINGS] = settings
    for path, handler in ROUTES[settings.service]:
        app.router.add_get(path, handler)
    app.router.add_get("/health", health)
    app.router.add_get("/headers", headers)

    async def session_ctx(app: web.Application):
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bookinfo.app", description="one bookinfo service")
    ap.add_argument("--service", required=True, choices=sorted(ROUTES))
    ap.add_argument("--version", default="v1")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9080)
    ap.add_argument("--outbound", default="http://127.0.0.1:15001",
                    help="this workload's sidecar outbound listener (where calls to other services go)")
    args = ap.parse_args(argv)
    web.run_app(make_app(Settings(args.service, args.version, args.outbound.rstrip("/"))),
                host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
