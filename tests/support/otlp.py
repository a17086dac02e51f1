"""An in-test trace collector on 127.0.0.1: OTLP/HTTP protobuf (`POST /v1/traces`) and Zipkin JSON v2
(`POST /api/v2/spans`), decoded with the real `opentelemetry-proto` messages, kept as plain `Span` rows.

Tests wait for spans with `await collector.wait_for(n)` (an asyncio.Condition, bounded only to avoid hangs).
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

KIND_NAMES = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    attributes: dict[str, Any]
    service_name: str
    format: str = "otlp"
    resource: dict[str, Any] = field(default_factory=dict)


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


def decode_otlp(body: bytes) -> list[Span]:
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        resource = {a.key: _value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(Span(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                                KIND_NAMES.get(s.kind, str(s.kind)),
                                {a.key: _value(a.value) for a in s.attributes},
                                str(resource.get("service.name", "")), "otlp", resource))
    return out


def decode_zipkin(body: bytes) -> list[Span]:
    return [Span(s["traceId"], s["id"], s.get("parentId", ""), s["name"], s.get("kind", ""),
                 dict(s.get("tags", {})), s.get("localEndpoint", {}).get("serviceName", ""), "zipkin")
            for s in json.loads(body)]


class Collector:
    """Receives spans over real HTTP; `spans` grows as exports arrive."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.posts = 0
        self.port = 0
        self._cond: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> "Collector":
        self._cond = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/v1/traces", self._otlp)
        app.router.add_post("/api/v2/spans", self._zipkin)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def _add(self, spans: list[Span]) -> None:
        assert self._cond is not None
        async with self._cond:
            self.posts += 1
            self.spans.extend(spans)
            self._cond.notify_all()

    async def _otlp(self, request: web.Request) -> web.Response:
        await self._add(decode_otlp(await request.read()))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def _zipkin(self, request: web.Request) -> web.Response:
        await self._add(decode_zipkin(await request.read()))
        return web.Response(status=202)

    async def wait_for(self, n: int, timeout: float = 20.0) -> list[Span]:
        """At least `n` spans (the bound only stops a hang; it is no timing assertion)."""
        return await self.wait_until(lambda spans: len(spans) >= n, timeout)

    async def wait_until(self, predicate: Any, timeout: float = 20.0) -> list[Span]:
        """The spans once `predicate(spans)` holds."""
        assert self._cond is not None

        async def enough() -> None:
            async with self._cond:
                await self._cond.wait_for(lambda: predicate(self.spans))
        await asyncio.wait_for(enough(), timeout)
        return list(self.spans)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
