"""The xDS REST client's HTTP/1.1 (pyproxy/xds/http.py) against small raw servers on 127.0.0.1: whole bodies
(Content-Length, chunked, to the end of the connection), idle keep-alive reuse, and every failure one
HttpError line naming the server."""
from __future__ import annotations

import asyncio
import json
import ssl

import pytest

from pyproxy.xds.http import HttpClient, HttpError


class RawServer:
    """Answers each request with `answer(request_head_and_body) -> bytes | None` (None: close the connection);
    counts connections."""

    def __init__(self, answer, *, close_after_answer: bool = False):
        self.answer = answer
        self.close_after_answer = close_after_answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()

    async def start(self) -> "RawServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                out = self.answer(request)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed.set()

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def _ok(body: bytes, ctype: str = "application/json") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (ctype.encode(), len(body), body)


async def test_bodies_by_length_and_chunked_with_the_connection_kept_for_the_next_request():
    answers = iter([
        _ok(b'{"n": 1}'),
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\n{\"n\r\n5\r\n\": 2}\r\n0\r\n\r\n",
        b"HTTP/1.1 409 Conflict\r\nContent-Length: 4\r\n\r\nwho?",
    ])
    server = await RawServer(lambda _req: next(answers)).start()
    client = HttpClient()
    try:
        url = f"http://127.0.0.1:{server.port}/v3/discovery:clusters"
        first = await client.post_json(url, {"node": {"id": "a"}}, params={"wait": "30"}, headers={"X-T": "1"})
        second = await client.post_json(url, {"node": {"id": "b"}})
        third = await client.post_json(url, {})
    finally:
        await client.close()
        await server.close()
    assert (first.status, first.json(), first.content_type) == (200, {"n": 1}, "application/json")
    assert (second.json(), second.content_type) == ({"n": 2}, "application/json")
    assert (third.status, third.reason, third.text()) == (409, "Conflict", "who?")
    assert server.connections == 1  # one keep-alive connection for all three
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v3/discovery:clusters?wait=30 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}".encode() in head and b"X-T: 1" in head
    assert b"Content-Type: application/json" in head and json.loads(body) == {"node": {"id": "a"}}


async def test_a_body_delimited_by_the_end_of_the_connection_is_read():
    server = await RawServer(lambda _req: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}",
                             close_after_answer=True).start()
    client = HttpClient()
    try:
        reply = await client.post_json(f"http://127.0.0.1:{server.port}/x", {})
    finally:
        await client.close()
        await server.close()
    assert (reply.status, reply.json()) == (200, {})


@pytest.mark.parametrize("answer, says", [
    (None, "connection closed before the response ended"),  # closed without a word
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "connection closed before the response ended"),
    (b"SMTP ready\r\n\r\n", "not an HTTP/1.1 response"),
], ids=["closed", "short-body", "not-http"])
async def test_failures_are_one_http_error_naming_the_url(answer, says):
    server = await RawServer(lambda _req: answer, close_after_answer=True).start()
    client = HttpClient()
    url = f"http://127.0.0.1:{server.port}/v3/discovery:listeners"
    try:
        with pytest.raises(HttpError) as info:
            await asyncio.wait_for(client.post_json(url, {}), 10)
    finally:
        await client.close()
        await server.close()
    assert str(info.value).startswith(url) and says in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


async def test_a_refused_connection_and_a_stalled_handshake_name_the_server():
    with pytest.raises(HttpError) as refused:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        await HttpClient().post_json(f"http://127.0.0.1:{port}/v3/x", {})
    assert str(refused.value).startswith(f"http://127.0.0.1:{port}/v3/x: cannot connect to 127.0.0.1:{port}")
    # a TCP peer that never answers the TLS ClientHello: the connect timeout covers the handshake
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()
    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        with pytest.raises(HttpError, match=f"cannot connect to 127.0.0.1:{port} in 0.2s"):
            await HttpClient(connect_timeout=0.2).post_json(f"https://127.0.0.1:{port}/v3/x", {},
                                                            ssl_context=ssl.create_default_context())
    finally:
        silent.close()
        await silent.wait_closed()


async def test_a_cancelled_request_closes_its_connection_instead_of_reusing_it():
    held = asyncio.Event()

    def answer(_req):
        held.set()
        return b""  # nothing: a long poll the server holds
    server = await RawServer(answer).start()
    client = HttpClient()
    try:
        task = asyncio.ensure_future(client.post_json(f"http://127.0.0.1:{server.port}/v3/x", {}))
        await asyncio.wait_for(held.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.closed.wait(), 10)  # the client closed it
        server.answer = lambda _req: _ok(b"{}")
        reply = await client.post_json(f"http://127.0.0.1:{server.port}/v3/x", {})
    finally:
        await client.close()
        await server.close()
    assert reply.status == 200 and server.connections == 2
