"""Differential harness: the same bootstrap and the same client bytes through Envoy and through pyproxy.

Envoy is the oracle: where pyproxy claims to behave like the Envoy sidecar, what a real Envoy does with
the same config and the same bytes is the expected answer. One `Case` is a bootstrap `group` (which HCM
options), the raw bytes a client writes on one TCP connection, and how many responses to read. For each
proxy the harness writes the bytes, reads the responses, learns whether the proxy closed the connection,
and asks a `CapturingUpstream` behind it what reached the origin: every request as parsed (method, path,
version, headers, body) and the exact bytes per upstream connection. The result is an `Observation`.

`Observation.normalised()` is pure: it drops what legitimately differs between two proxies (`server`,
`date`, `x-request-id` and `x-envoy-upstream-service-time` values, the order of header fields) and keeps
everything a client or an origin could rely on. Two normalised observations are compared with `==`, and
`difference()` renders the fields that differ for the failure message.

Closed or not: after the last response, a `connection: close` response or an EOF means the proxy closes
(EOF awaited with a bound); otherwise a probe request (`GET /__probe`) is written on the same connection
and the connection counts as open if it is answered. The upstream view is captured before the probe.
"""
from __future__ import annotations

import asyncio
import json
import pathlib
from dataclasses import dataclass, field, replace
from typing import Any

import httptools

from tests.support.client import PeerClosed, RawClient
from tests.support.upstream import TestUpstream, _Conn, _response, default_handler

READ_TIMEOUT = 3.0  # per response: a proxy that waits for more bytes is recorded as "no response"
PROBE_TIMEOUT = 5.0  # an open connection must answer the probe within this (a hang guard, generous for load)
CLOSE_TIMEOUT = 3.0  # hang guard for an announced close
PROBE = b"GET /__probe HTTP/1.1\r\nHost: probe\r\n\r\n"
MARK_PREFIX = "/__oracle_mark/"

# Response/request fields whose VALUE may differ between two faithful proxies (presence still compared).
VOLATILE_VALUES = frozenset({"server", "date", "x-request-id", "x-envoy-upstream-service-time"})


# ------------------------------------------------------------------ what is compared (pure)

@dataclass(frozen=True)
class Reply:
    """One response as the client saw it; `raw` is set instead when it was not HTTP (or nothing came)."""

    status: int = 0
    version: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    raw: str = ""

    def normalised(self, volatile: frozenset[str] = VOLATILE_VALUES) -> "Reply":
        return replace(self, headers=normalise_headers(self.headers, volatile))

    def summary(self) -> str:
        return self.raw or f"{self.status}"


@dataclass(frozen=True)
class UpstreamRequest:
    """One request as the origin parsed it."""

    method: str
    path: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    complete: bool
    connection: int  # index of its upstream connection within this case (0, 1, ...)

    def normalised(self, volatile: frozenset[str] = VOLATILE_VALUES) -> "UpstreamRequest":
        return replace(self, headers=normalise_headers(self.headers, volatile))

    def header(self, name: str) -> str | None:
        vals = [v for k, v in self.headers if k == name]
        return ",".join(vals) if vals else None


@dataclass(frozen=True)
class Observation:
    """What one proxy did with one case."""

    replies: tuple[Reply, ...]
    closed: bool
    upstream: tuple[UpstreamRequest, ...]
    upstream_bytes: tuple[bytes, ...] = ()  # exact bytes per upstream connection (not compared: framing)
    access_log: tuple[dict, ...] = ()  # Envoy only (not compared)
    startup_error: str = ""

    def normalised(self, volatile: frozenset[str] = VOLATILE_VALUES) -> "Observation":
        return Observation(tuple(r.normalised(volatile) for r in self.replies), self.closed,
                           tuple(u.normalised(volatile) for u in self.upstream), startup_error=self.startup_error)

    @property
    def upstream_connections(self) -> int:
        return len({u.connection for u in self.upstream})

    def summary(self) -> str:
        if self.startup_error:
            return f"config refused: {self.startup_error}"
        replies = ", ".join(r.summary() for r in self.replies) or "no response"
        return f"{replies}{'; closed' if self.closed else ''}"

    def upstream_summary(self) -> str:
        if not self.upstream:
            return "nothing"
        parts = [f"{u.method} {u.path} host={u.header('host')}" + (" te=chunked" if u.header("transfer-encoding") else "")
                 + (f" body={len(u.body)}B" if u.body else "") + ("" if u.complete else " (incomplete)")
                 for u in self.upstream]
        return f"{'; '.join(parts)} [{self.upstream_connections} conn]"


def normalise_headers(headers, volatile: frozenset[str] = VOLATILE_VALUES) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, "<v>" if k in volatile else v) for k, v in headers))


def difference(expected: Observation, actual: Observation, volatile: frozenset[str] = VOLATILE_VALUES) -> str:
    """Human-readable lines for the fields where `actual` (pyproxy) differs from `expected` (Envoy)."""
    e, a = expected.normalised(volatile), actual.normalised(volatile)
    lines = []
    if e.startup_error != a.startup_error:
        lines.append(f"startup: envoy {e.startup_error or 'ok'!r} pyproxy {a.startup_error or 'ok'!r}")
    if e.closed != a.closed:
        lines.append(f"connection closed: envoy {e.closed} pyproxy {a.closed}")
    for i in range(max(len(e.replies), len(a.replies))):
        re, ra = _at(e.replies, i), _at(a.replies, i)
        if re != ra:
            lines.append(f"response {i}: {_diff_fields(re, ra)}")
    for i in range(max(len(e.upstream), len(a.upstream))):
        ue, ua = _at(e.upstream, i), _at(a.upstream, i)
        if ue != ua:
            lines.append(f"upstream request {i}: {_diff_fields(ue, ua)}")
    return "\n".join(lines)


def _at(seq, i):
    return seq[i] if i < len(seq) else None


def _diff_fields(e, a) -> str:
    if e is None or a is None:
        return f"envoy {e!r}\n    pyproxy {a!r}"
    out = []
    for name in e.__dataclass_fields__:
        ve, va = getattr(e, name), getattr(a, name)
        if ve != va:
            if name == "headers":
                only_e = sorted(set(ve) - set(va))
                only_a = sorted(set(va) - set(ve))
                out.append(f"headers only in envoy {only_e}, only in pyproxy {only_a}")
            else:
                out.append(f"{name}: envoy {ve!r} pyproxy {va!r}")
    return "; ".join(out)


@dataclass(frozen=True)
class Case:
    """One differential probe. `send` is written on one new client connection; `reads` responses are read
    (fewer if the proxy closes). `method` frames the first response (HEAD: no body). `then` is written
    on a NEW connection afterwards (e.g. to see whether a poisoned upstream connection gets reused)."""

    id: str
    send: bytes
    group: str = "default"
    reads: int = 1
    method: str = "GET"
    then: bytes = b""
    envoy_status: tuple[int, ...] | None = None  # what Envoy answers (pins the oracle); None: no response
    note: str = ""
    # written afterwards, each on a NEW connection, its response appended to the replies (after `settle`)
    after: tuple[bytes, ...] = ()
    # a stat name (Envoy's, e.g. `cluster.backend.outlier_detection.ejections_active`) each proxy's admin
    # must show non-zero before `after` is sent: sequencing on what the proxy did, not on a sleep
    settle: str = ""
    # header names whose VALUES this row does not compare (beyond VOLATILE_VALUES), e.g. a time left
    volatile: tuple[str, ...] = ()

    @property
    def volatile_values(self) -> frozenset[str]:
        return VOLATILE_VALUES | frozenset(self.volatile)


# ------------------------------------------------------------------ the origin behind each proxy

class _CapturingConn(_Conn):
    """`TestUpstream`'s connection that also keeps the exact bytes and each request's body, answers an
    upgrade request with 101 (then records the tunnelled bytes), and answers `/early*` as soon as the
    request headers arrive (before any body)."""

    def __init__(self, upstream: "CapturingUpstream", cid: int):
        super().__init__(upstream, cid)
        self.raw = bytearray()
        upstream.raw_by_conn[cid] = self.raw
        self.tunnel = False

    def data_received(self, data):
        self.raw += data
        if self.tunnel:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.tunnel = True
            self.write(_response(101, [("upgrade", self.cur.header("upgrade") or ""), ("connection", "upgrade")],
                                 reason="Switching Protocols"))
        except httptools.HttpParserError:
            self.up.parse_errors += 1
            self.write(_response(400, [("content-length", "0"), ("connection", "close")]))
            self.transport.close()

    def on_headers_complete(self):
        super().on_headers_complete()
        self.cur.body = b""
        if self.cur.path.startswith("/early"):
            self.cur.answered_early = True
            self.write(_response(200, [("x-upstream", self.up.name), ("content-length", "5")], b"early"))

    def on_body(self, body):
        super().on_body(body)
        self.cur.body += body


async def _answer_unless_early(conn: _Conn, req) -> bool:
    if getattr(req, "answered_early", False):
        return False
    if req.path.startswith("/with-headers?"):  # /with-headers?h=name:value&h=...: those response headers
        from urllib.parse import parse_qsl, urlsplit
        extra = [tuple(v.split(":", 1)) for k, v in parse_qsl(urlsplit(req.path).query) if k == "h" and ":" in v]
        conn.write(_response(200, [("x-upstream", conn.up.name), *extra, ("content-length", "2")], b"ok"))
        return False
    if req.path.startswith("/flaky/"):  # /flaky/<n>/<code>[?...]: the first n requests of this path get <code>
        _, _, n, code = req.path.split("?")[0].split("/")[:4]
        seen = conn.up.flaky[req.path] = conn.up.flaky.get(req.path, 0) + 1
        if seen <= int(n):
            conn.write(_response(int(code), [("x-upstream", conn.up.name), ("content-length", "5")], b"flaky"))
            return False
    return await default_handler(conn, req)


class CapturingUpstream(TestUpstream):
    """A `TestUpstream` (paths select its behaviour, anything else gets 200 "ok"; `/flaky/<n>/<code>` answers
    <code> to the first n requests of that exact path, then 200; `/with-headers?h=name:value` answers 200 with
    those response headers) that keeps raw bytes."""

    __test__ = False

    def __init__(self, name: str = "oracle-upstream"):
        super().__init__(name=name, handler=_answer_unless_early)
        self.raw_by_conn: dict[int, bytearray] = {}
        self.flaky: dict[str, int] = {}  # /flaky/ path -> requests seen

    def _accept(self) -> _Conn:
        self.connections += 1
        return _CapturingConn(self, next(self._ids))

    def snapshot(self, since: int) -> tuple[tuple[UpstreamRequest, ...], tuple[bytes, ...]]:
        """Requests received after the first `since` (probes and marks excluded), conns renumbered 0.."""
        reqs = [r for r in self.requests[since:] if not _internal(r.path)]
        order: dict[int, int] = {}
        for r in reqs:
            order.setdefault(r.connection_id, len(order))
        view = tuple(UpstreamRequest(r.method, r.path, r.version, tuple(r.headers), getattr(r, "body", b""),
                                     r.complete, order[r.connection_id]) for r in reqs)
        return view, tuple(bytes(self.raw_by_conn.get(cid, b"")) for cid in order)


def _internal(path: str) -> bool:
    return path.startswith("/__probe") or path.startswith(MARK_PREFIX)


# ------------------------------------------------------------------ one exchange (I/O)

async def exchange(port: int, upstream: CapturingUpstream, case: Case, settle=None) -> Observation:
    """Play `case` against the proxy listening on `port`, with `upstream` behind it. `settle`: awaited
    before `case.after` is sent (the pair waits there for `case.settle` on the proxy's admin)."""
    since = len(upstream.requests)
    client = await RawClient.connect(port)
    replies: list[Reply] = []
    closed = False
    try:
        await client.send(case.send)
        for i in range(case.reads):
            reply, closed = await _read_reply(client, case.method if i == 0 else "GET")
            if reply is not None:
                replies.append(reply)
            if closed or reply is None or reply.raw:
                break
        if not closed:
            if replies and dict(replies[-1].headers).get("connection", "").lower() == "close":
                closed = await _closes(client)
        if case.then:
            await _then(port, case.then)
        if case.after and settle is not None:
            await settle()
        for data in case.after:
            replies.append(await _after(port, data))
        view, raw = upstream.snapshot(since)
        if not closed and replies and not replies[-1].raw and replies[-1].status != 101:  # 101: a tunnel now
            closed = not await _answers_probe(client)
    finally:
        client.close()
    return Observation(tuple(replies), closed, view, raw)


async def _read_reply(client: RawClient, method: str) -> tuple[Reply | None, bool]:
    """(reply or None, closed)."""
    try:
        r = await client.read_response(method=method, timeout=READ_TIMEOUT)
    except PeerClosed as e:
        return (Reply(raw=f"closed after {e.partial[:60]!r}") if e.partial else None), True
    except asyncio.TimeoutError:
        return Reply(raw="no response (timeout)"), False
    except AssertionError as e:  # not an HTTP status line
        return Reply(raw=str(e)[:80]), False
    return Reply(r.status, r.version, tuple(r.headers), r.body), False


async def _closes(client: RawClient) -> bool:
    try:
        return await client.read_until_close(CLOSE_TIMEOUT) == b""
    except asyncio.TimeoutError:
        return False


async def _answers_probe(client: RawClient) -> bool:
    try:
        await client.send(PROBE)
        await client.read_response(timeout=PROBE_TIMEOUT)
    except (PeerClosed, ConnectionError, asyncio.TimeoutError, AssertionError):
        return False
    return True


async def _after(port: int, data: bytes) -> Reply:
    c = await RawClient.connect(port)
    try:
        await c.send(data)
        reply, _ = await _read_reply(c, "GET")
        return reply or Reply(raw="no response")
    finally:
        c.close()


async def _then(port: int, data: bytes) -> None:
    c = await RawClient.connect(port)
    try:
        await c.send(data)
        await c.read_response(timeout=READ_TIMEOUT)
    except (PeerClosed, ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        c.close()


async def mark(port: int, n: int) -> None:
    """A request whose access log line separates one case's lines from the next."""
    c = await RawClient.connect(port)
    try:
        await c.request("GET", f"{MARK_PREFIX}{n}", host="oracle-mark", timeout=READ_TIMEOUT)
    finally:
        c.close()


def read_json_lines(path: pathlib.Path) -> list[dict[str, Any]]:
    """The complete lines written so far: a proxy may be mid-write, so text after the last newline is left for
    the next read (the callers poll until the line they wait for is there)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]


def lines_before_mark(lines: list[dict[str, Any]], n: int, start: int) -> tuple[list[dict], int] | None:
    """The lines from `start` up to the mark `n` (excluded) and the index after the mark; None if unseen."""
    for i in range(start, len(lines)):
        if lines[i].get("path") == f"{MARK_PREFIX}{n}":
            return [ln for ln in lines[start:i] if not _internal(str(ln.get("path") or ""))], i + 1
    return None


class Differs(AssertionError):
    """pyproxy's observation differs from Envoy's (the only failure an xfail mark may absorb)."""


def judge(c: Case, envoy: Observation, pyproxy: Observation, docs: str) -> None:
    """One row's verdict: Envoy must answer what the row pins (else a plain AssertionError: the oracle moved,
    update the row and `docs`); the row is tallied; pyproxy must match Envoy (else `Differs`)."""
    got = tuple(r.status for r in envoy.replies if not r.raw) or None
    assert got == c.envoy_status, (
        f"the oracle moved: Envoy now answers {envoy.summary()} (expected {c.envoy_status}); "
        f"access log {list(envoy.access_log)}; update the row and {docs}")
    volatile = c.volatile_values
    logs = log_view(envoy), log_view(pyproxy)
    identical = envoy.normalised(volatile) == pyproxy.normalised(volatile) and logs[0] == logs[1]
    tally(c.id, identical)
    if not identical:
        log_diff = f"\naccess log (code, flags, details): envoy {logs[0]} pyproxy {logs[1]}" if logs[0] != logs[1] else ""
        raise Differs(f"{c.id}: pyproxy differs from Envoy\n{difference(envoy, pyproxy, volatile)}{log_diff}\n"
                      f"Envoy access log: {list(envoy.access_log)}")


def log_view(obs: Observation) -> tuple[tuple, ...]:
    """What the access log says of each request: %RESPONSE_CODE%, %RESPONSE_FLAGS%, %RESPONSE_CODE_DETAILS%."""
    return tuple((line.get("code"), line.get("flags"), line.get("details")) for line in obs.access_log)


# case id -> identical (True) or not: what the session's summary line counts (tests/conftest.py)
TALLY: dict[str, bool] = {}


def tally(case_id: str, identical: bool) -> None:
    TALLY[case_id] = identical


def tally_line() -> str | None:
    """"differential: N cases, M identical", or None when no differential case ran."""
    if not TALLY:
        return None
    return f"differential (pyproxy vs Envoy): {len(TALLY)} cases, {sum(TALLY.values())} identical"


@dataclass
class LogCursor:
    """Where the previous case's access log lines ended, and the next mark number."""

    start: int = 0
    next_mark: int = 0
