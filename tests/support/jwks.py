"""A JWKS server on 127.0.0.1 for the JWT tests: serves `keys` (changeable: rotation) and counts the fetches;
`jwk(key, kid)` is an RSA public key as a JWK."""
from __future__ import annotations

import json

import jwt as pyjwt
from aiohttp import web


def jwk(private_key, kid: str) -> dict:
    d = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    return {**d, "kid": kid, "alg": "RS256", "use": "sig"}


class JwksServer:
    """`await JwksServer().start()`, `.uri`, `.keys = [...]`, `.fetches`; `await .close()` (fixtures do)."""

    def __init__(self):
        self.keys: list[dict] = []
        self.fetches = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _serve(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response({"keys": self.keys})

    async def start(self) -> "JwksServer":
        app = web.Application()
        app.router.add_get("/jwks.json", self._serve)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"
