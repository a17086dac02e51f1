"""The admin port's own HTTP/1.1 server (pyproxy/admin/httpd.py) on real sockets: what aiohttp did for the admin
and what clients of the admin rely on (status texts, HEAD, keep-alive, pipelining, limits, a handler's bug)."""
from __future__ import annotations

import asyncio
import json

import pytest

from pyproxy.admin.httpd import MAX_BODY, App, Request, Response, StreamResponse, json_response, serve


async def _app_server():
    app = App()
    seen: list[Request] = []

    async def echo(req: Request) -> Response:
        seen.append(req)
        return json_response({"path": req.path, "query": req.query, "host": req.headers.get("HOST"),
                              "body": req.body.decode()})

    async def boom(_: Request) -> Response:
        raise RuntimeError("a bug in a handler")

    async def stream(req: Request) -> StreamResponse:
        resp = StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(req)
        for i in range(3):
            await resp.write(f"line {i}\n".encode())
        return resp

    app.add_get("/echo", echo)
    app.add_post("/echo", echo)
    app.add_get("/boom", boom)
    app.add_get("/stream", stream)
    runner, port = await serve(app, "127.0.0.1", 0)
    return runner, port, seen


@pytest.fixture
async def admin():
    runner, port, seen = await _app_server()
    yield port, seen
    await runner.cleanup()


async def _exchange(port: int, raw: bytes, *, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1) if until_close else reader.read(65536), 10)
    finally:
        writer.close()


def _responses(data: bytes, heads: tuple[int, ...] = ()) -> list[tuple[str, dict[str, str], bytes]]:
    """Split raw HTTP/1.1 responses with Content-Length bodies: [(status line, headers, body)]; the responses
    at indexes `heads` answer HEAD (no body whatever their Content-Length)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        n = 0 if len(out) in heads else int(headers.get("content-length", "0"))
        out.append((lines[0], headers, rest[:n]))
        data = rest[n:]
    return out


async def test_unknown_path_is_404_and_another_method_405_with_allow(admin):
    port, _ = admin
    data = await _exchange(port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    ((status, headers, body),) = _responses(data)
    assert (status, body) == ("HTTP/1.1 404 Not Found", b"404: Not Found")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    data = await _exchange(port, b"DELETE /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    ((status, headers, body),) = _responses(data)
    assert (status, body, headers["allow"]) == ("HTTP/1.1 405 Method Not Allowed", b"405: Method Not Allowed",
                                                "GET,HEAD,POST")


async def test_pipelined_keep_alive_requests_are_answered_in_order_with_query_and_body(admin):
    port, seen = admin
    raw = (b"GET /echo?usedonly&filter=a+b%2Fc&filter=second HTTP/1.1\r\nHost: one\r\n\r\n"
           b"POST /echo HTTP/1.1\r\nHost: two\r\nContent-Length: 5\r\n\r\nhello"
           b"HEAD /echo HTTP/1.1\r\nHost: three\r\n\r\n"
           b"GET /echo HTTP/1.1\r\nHost: four\r\nConnection: close\r\n\r\n")
    got = _responses(await _exchange(port, raw), heads=(2,))
    assert [s for s, _, _ in got] == ["HTTP/1.1 200 OK"] * 4
    first, second, head, last = got
    assert json.loads(first[2]) == {"path": "/echo", "query": {"usedonly": "", "filter": "a b/c"}, "host": "one",
                                    "body": ""}
    assert json.loads(second[2])["body"] == "hello" and json.loads(second[2])["host"] == "two"
    assert head[2] == b"" and int(head[1]["content-length"]) > 0  # HEAD: the GET's headers, no body
    assert first[1]["connection"] == "keep-alive" and last[1]["connection"] == "close"
    assert first[1]["content-type"] == "application/json; charset=utf-8"
    assert [r.headers["Host"] for r in seen] == ["one", "two", "three", "four"]


async def test_a_handlers_exception_is_a_500_and_the_server_keeps_serving(admin, caplog):
    port, _ = admin
    ((status, _, _),) = _responses(await _exchange(port, b"GET /boom HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert "a bug in a handler" in caplog.text
    ((status, _, _),) = _responses(await _exchange(port, b"GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK"


async def test_a_body_over_the_limit_is_413_and_garbage_is_400(admin):
    port, seen = admin
    big = MAX_BODY + 1
    head = f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\n\r\n".encode()
    ((status, _, _),) = _responses(await _exchange(port, head + b"x" * big))
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    data = await _exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert seen == []


async def test_a_stream_is_chunked_and_ends(admin):
    port, _ = admin
    data = await _exchange(port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Type: application/x-ndjson" in head
    assert body == b"7\r\nline 0\n\r\n7\r\nline 1\n\r\n7\r\nline 2\n\r\n0\r\n\r\n"


async def test_cleanup_closes_idle_keep_alive_connections_and_stops_listening():
    runner, port, _ = await _app_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200 OK")
    await asyncio.wait_for(runner.cleanup(), 10)
    rest = await asyncio.wait_for(reader.read(-1), 10)  # the body, then EOF: the server closed it
    assert b"/echo" in rest
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
