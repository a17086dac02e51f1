"""The bundled HTTP/1.1 load generator: open loop at a fixed rate (latency), or closed loop (throughput).

Small `GET`s over keep-alive connections (no pipelining: one request in flight per connection), responses
parsed with httptools (llhttp), uvloop when installed. Only loopback targets are accepted.

* **Open loop** (`--rate R`): requests are scheduled at fixed times `start + i/R`, independent of how fast
  answers come back. A request is sent at its time on an idle connection; when every connection is busy it
  waits in a queue. Its latency runs from the *scheduled* time to the last byte of the response, so a slow
  server is charged for the queueing it causes (no coordinated omission, unlike a closed-loop tool such as
  wrk). Timers in an event loop have millisecond granularity, so the pacer (`--pacer timer`, the default)
  sleeps on a Linux timerfd, which the loop polls like a socket, until 0.2 ms before a send, then polls the
  loop without blocking until the time comes. `--pacer spin` polls from 2 ms before instead: as precise, for
  the cost of one busy core, which `run.py` can afford when it pins the generator to a CPU of its own. How
  late sends actually left is reported as `send_lag`.
* **Closed loop** (`--closed`): each connection sends its next request as soon as the previous answer
  arrives, for `--duration` seconds (or `--max-requests`); this is what wrk does, and `run.py` uses it as the
  throughput tool when wrk is not installed.

Every run is bounded: by count and by `duration + --timeout` seconds of wall time, whatever the server does.

    python benchmarks/loadgen.py http://127.0.0.1:8080/ --rate 1000 --duration 5 --json
    python benchmarks/loadgen.py http://127.0.0.1:8080/ --closed --connections 32 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import ipaddress
import ctypes
import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httptools

if __package__ in (None, ""):  # run as a script: make `benchmarks.` importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from benchmarks.stats import LatencySummary, open_loop_schedule

# The pacer blocks in the event loop only while the next send is further away than this; closer than
# this it polls (event-loop timers have 1 ms resolution, so a blocking sleep could overshoot by ~1 ms).
SPIN_WINDOW_S = 0.002
TIMER_EARLY_S = 0.0002  # the timer pacer polls only this close to a send (a timerfd wakes within ~0.1 ms)
DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go: a loopback host and port, the path, and the Host header to send."""

    host: str
    port: int
    path: str
    authority: str

    def request_bytes(self) -> bytes:
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.authority}\r\nUser-Agent: pyproxy-bench-loadgen\r\n\r\n"
        ).encode("ascii")


def parse_target(url: str, host_header: str | None = None) -> Target:
    """`http://127.0.0.1:PORT/path` → Target. Only plain HTTP to loopback addresses is allowed. `host_header`: the
    Host header to send instead of the URL's (a sidecar's outbound port routes by it: `details:9080`)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"{url!r}: only http:// URLs are supported")
    host = parts.hostname or ""
    if host != "localhost":
        try:
            is_loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            is_loopback = False
        if not is_loopback:
            raise ValueError(f"{url!r}: the load generator only targets loopback (127.0.0.0/8, ::1, localhost)")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(host=host, port=port, path=path, authority=host_header or parts.netloc)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one run measured. `latency` is from scheduled (open) or actual (closed) send time."""

    mode: str  # "open" or "closed"
    url: str
    connections: int
    requested: int  # open: requests scheduled; closed: the request budget (max_requests)
    completed: int  # responses received, any status
    ok: int  # 2xx responses
    errors: dict[str, int]  # status (non-2xx), connect, read (connection lost mid-request), timeout
    duration_s: float
    achieved_rps: float
    target_rps: float | None
    latency: LatencySummary
    send_lag: LatencySummary | None = None
    samples_s: tuple[float, ...] = ()  # every latency, in completion order (only when asked for: --raw)

    def as_dict(self, *, raw: bool = False) -> dict:
        data = asdict(self)
        if not raw:
            del data["samples_s"]
        return data


@dataclass(slots=True)
class _Counters:
    completed: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=lambda: {"status": 0, "connect": 0, "read": 0, "timeout": 0})


class _Connection(asyncio.Protocol):
    """One keep-alive client connection with at most one request in flight."""

    def __init__(self, session: "_Session") -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.scheduled = 0.0  # when the in-flight request was due (open loop) or sent (closed loop)
        self.busy = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()  # connection_lost counts the in-flight request as a read error

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.session.on_lost(self)

    # httptools callbacks
    def on_message_complete(self) -> None:
        now = time.perf_counter()
        status = self.parser.get_status_code()
        keep_alive = self.parser.should_keep_alive()
        self.busy = False
        self.session.on_response(self, status, now, keep_alive)

    def send(self, scheduled: float, request: bytes) -> None:
        assert self.transport is not None
        self.busy = True
        self.scheduled = scheduled
        self.transport.write(request)


class _Session:
    """The shared state of one run: connections, the queue of due requests, and the samples."""

    def __init__(self, target: Target, *, connections: int, closed: bool, deadline: float) -> None:
        self.target = target
        self.request = target.request_bytes()
        self.want_connections = connections
        self.closed_loop = closed
        self.deadline = deadline  # perf_counter time after which nothing new is sent or awaited
        self.budget = 0  # closed loop: requests that may still be started
        self.loop = asyncio.get_running_loop()
        self.live: set[_Connection] = set()
        self.idle: collections.deque[_Connection] = collections.deque()
        self.pending: collections.deque[float] = collections.deque()
        self.outstanding = 0  # sent or queued, not yet answered or failed
        self.latencies: list[float] = []
        self.send_lags: list[float] = []
        self.counters = _Counters()
        self.drained = asyncio.Event()
        self.stopping = False
        self.last_connect_error = ""

    async def connect(self) -> None:
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self), self.target.host, self.target.port
            )
        except OSError as exc:
            self.counters.errors["connect"] += 1
            self.last_connect_error = f"{type(exc).__name__}: {exc}"
            return
        self.live.add(conn)
        self._idle(conn)

    def _replace(self) -> None:
        """A connection was lost: open another while requests may still come, or some wait in the queue (the
        last ones scheduled can be queued when sending ends, each to go out on a replacement)."""
        if (not self.stopping or self.pending) and time.perf_counter() < self.deadline:
            self.loop.create_task(self.connect())

    def _start(self, conn: _Connection, scheduled: float) -> None:
        if not self.closed_loop:
            self.send_lags.append(time.perf_counter() - scheduled)
        conn.send(scheduled, self.request)

    def _idle(self, conn: _Connection) -> None:
        """A connection is free: give it the oldest due request, or the next closed-loop one, or park it."""
        if self.pending:
            self._start(conn, self.pending.popleft())
        elif self.closed_loop and self.budget > 0 and not self.stopping and time.perf_counter() < self.deadline:
            self.budget -= 1
            self.outstanding += 1
            self._start(conn, time.perf_counter())
        else:
            self.idle.append(conn)
            self._check_drained()

    def dispatch(self, scheduled: float) -> None:
        """Open loop: a request is due now."""
        self.outstanding += 1
        while self.idle:
            conn = self.idle.popleft()
            if conn.transport is not None and not conn.transport.is_closing():
                self._start(conn, scheduled)
                return
        self.pending.append(scheduled)

    def on_response(self, conn: _Connection, status: int, now: float, keep_alive: bool) -> None:
        self.outstanding -= 1
        self.counters.completed += 1
        self.latencies.append(now - conn.scheduled)
        if 200 <= status < 300:
            self.counters.ok += 1
        else:
            self.counters.errors["status"] += 1
        if keep_alive and conn.transport is not None:
            self._idle(conn)
        elif conn.transport is not None:
            conn.transport.close()  # connection_lost replaces it

    def on_lost(self, conn: _Connection) -> None:
        self.live.discard(conn)
        if conn.busy:
            conn.busy = False
            self.outstanding -= 1
            self.counters.errors["read"] += 1
        self._replace()
        self._check_drained()

    def _check_drained(self) -> None:
        if self.outstanding == 0 and (self.stopping or self.closed_loop):
            self.drained.set()

    def finish_sending(self) -> None:
        self.stopping = True
        self._check_drained()

    async def wait_drained(self) -> None:
        remaining = self.deadline - time.perf_counter()
        if remaining > 0 and not self.drained.is_set():
            try:
                await asyncio.wait_for(self.drained.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        self.counters.errors["timeout"] += max(self.outstanding, 0)

    def close(self) -> None:
        self.stopping = True
        self.pending.clear()  # never sent: counted as timeouts; and no replacement connection is opened now
        for conn in list(self.live):
            if conn.transport is not None:
                conn.transport.abort()


async def _open_connections(session: _Session, connections: int) -> None:
    await asyncio.gather(*(session.connect() for _ in range(connections)))
    if not session.live:
        raise ConnectionError(
            f"cannot connect to {session.target.host}:{session.target.port}: {session.last_connect_error}"
        )


@contextlib.contextmanager
def _gc_paused():
    """No garbage collection during a run (a collection pause would show up as server latency)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _result(session: _Session, *, url: str, requested: int, elapsed: float, rate: float | None) -> LoadResult:
    counters = session.counters
    elapsed = max(elapsed, 1e-9)
    return LoadResult(
        mode="closed" if session.closed_loop else "open",
        url=url,
        connections=session.want_connections,
        requested=requested,
        completed=counters.completed,
        ok=counters.ok,
        errors=dict(counters.errors),
        duration_s=elapsed,
        achieved_rps=counters.completed / elapsed,
        target_rps=rate,
        latency=LatencySummary.of_seconds(session.latencies),
        send_lag=None if session.closed_loop else LatencySummary.of_seconds(session.send_lags),
        samples_s=tuple(session.latencies),
    )


class _TimerClock:
    """Sub-millisecond sleeps for the pacer, on a Linux timerfd the event loop polls like a socket.

    Event-loop timers round to whole milliseconds, so the old pacer polled the loop without blocking for the
    last 2 ms before each send: at 1,000 req/s that is one CPU at 100 %. On a small machine that CPU is taken
    from the proxies being measured: `perf sched` showed a sidecar pair's processes woken onto the generator's
    CPU and waiting there for a scheduler tick (3-4 ms), the tail of the pair's latency. A timerfd wakes the
    loop at the microsecond, so the generator sleeps until TIMER_EARLY_S before a send and polls only then.
    No signals (pytest-timeout owns SIGALRM) and no thread (a pacer thread waits for the GIL)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiter: asyncio.Future[None] | None = None
        self.fd = _timerfd_create()
        loop.add_reader(self.fd, self._ring)

    def _ring(self) -> None:
        try:
            os.read(self.fd, 8)  # the expiry count; reading it disarms the readiness
        except BlockingIOError:
            return
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def sleep(self, seconds: float) -> None:
        self.waiter = self.loop.create_future()
        _timerfd_arm(self.fd, max(int(seconds * 1e9), 1))  # 0 would disarm it
        await self.waiter

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        os.close(self.fd)


if hasattr(os, "timerfd_create"):  # Python 3.13+
    def _timerfd_create() -> int:
        return os.timerfd_create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)

    def _timerfd_arm(fd: int, ns: int) -> None:
        os.timerfd_settime_ns(fd, initial=ns)
else:  # the same two Linux calls through ctypes (timerfd_create(2), timerfd_settime(2))
    class _Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    class _Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]

    _TFD_NONBLOCK, _TFD_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC  # the kernel defines them so

    @functools.cache
    def _libc() -> ctypes.CDLL:
        """The C library, opened once (a dlopen per send would cost more than the send)."""
        return ctypes.CDLL(None, use_errno=True)

    def _timerfd_create() -> int:
        fd = _libc().timerfd_create(time.CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        return fd

    def _timerfd_arm(fd: int, ns: int) -> None:
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(ns // 1_000_000_000, ns % 1_000_000_000))
        if _libc().timerfd_settime(fd, 0, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")


def _timer_clock(loop: asyncio.AbstractEventLoop) -> _TimerClock | None:
    """A timerfd clock, or None where there is none (not Linux): the pacer then polls, as before."""
    try:
        return _TimerClock(loop)
    except (OSError, AttributeError, NotImplementedError):
        return None


async def run_open_loop(
    url: str, *, rate: float, count: int, connections: int = 16, timeout: float = DEFAULT_TIMEOUT_S,
    host: str | None = None, pacer: str = "timer",
) -> LoadResult:
    """Send `count` requests at `rate`/s; wait at most `timeout` s after the last one is due. `pacer`: "timer"
    (sleep on a timerfd until TIMER_EARLY_S before a send, then poll) or "spin" (poll from SPIN_WINDOW_S
    before: one CPU busy, what a generator on a CPU of its own can afford)."""
    session = _Session(parse_target(url, host), connections=connections, closed=False, deadline=float("inf"))
    clock = _timer_clock(session.loop) if pacer == "timer" else None
    window = TIMER_EARLY_S if clock is not None else SPIN_WINDOW_S
    with _gc_paused():
        try:
            await _open_connections(session, connections)
            start = time.perf_counter() + 0.01
            session.deadline = start + count / rate + timeout
            perf = time.perf_counter
            for due in open_loop_schedule(start=start, rate=rate, count=count):
                while True:
                    wait = due - perf()
                    if wait <= 0:
                        break
                    if wait <= window:
                        await asyncio.sleep(0)  # poll: answers that arrived meanwhile are read now
                    elif clock is not None:
                        await clock.sleep(wait - window)
                    else:
                        await asyncio.sleep(wait - window)
                if perf() > session.deadline:
                    break
                session.dispatch(due)
            session.finish_sending()
            await session.wait_drained()
            end = time.perf_counter()
        finally:
            session.close()
            if clock is not None:
                clock.close()
    errors = session.counters.errors
    never_sent = count - session.counters.completed - errors["read"] - errors["timeout"]
    errors["timeout"] += max(never_sent, 0)
    return _result(session, url=url, requested=count, elapsed=end - start, rate=rate)


async def run_closed_loop(
    url: str, *, connections: int, duration: float, max_requests: int = 10_000_000, timeout: float = DEFAULT_TIMEOUT_S
) -> LoadResult:
    """Keep `connections` requests in flight for `duration` s (at most `max_requests` in all)."""
    session = _Session(parse_target(url), connections=connections, closed=True, deadline=float("inf"))
    with _gc_paused():
        try:
            session.budget = max_requests
            session.deadline = time.perf_counter() + duration + timeout  # bound while connecting
            await _open_connections(session, connections)
            start = time.perf_counter()
            session.deadline = start + duration
            session.drained.clear()
            for conn in list(session.idle):
                session.idle.remove(conn)
                session._idle(conn)
            # No new request after start+duration; in-flight ones get up to `timeout` more to finish.
            try:
                await asyncio.wait_for(session.drained.wait(), duration)
            except asyncio.TimeoutError:
                pass
            end_of_sending = time.perf_counter()
            session.deadline = end_of_sending + timeout
            session.finish_sending()
            await session.wait_drained()
        finally:
            session.close()
    return _result(session, url=url, requested=max_requests, elapsed=end_of_sending - start, rate=None)


def format_result(result: LoadResult) -> str:
    lat = result.latency
    lines = [
        f"{result.mode}-loop {result.url} connections={result.connections}",
        f"  completed {result.completed} ({result.ok} 2xx) in {result.duration_s:.2f}s = {result.achieved_rps:,.0f} req/s"
        + (f" (target {result.target_rps:,.0f})" if result.target_rps else ""),
        f"  errors {result.errors}",
        f"  latency us: p50 {lat.p50_us:.0f}  p90 {lat.p90_us:.0f}  p99 {lat.p99_us:.0f}  "
        f"p99.9 {lat.p999_us:.0f}  max {lat.max_us:.0f}",
    ]
    if result.send_lag is not None:
        lag = result.send_lag
        lines.append(f"  send lag us: p50 {lag.p50_us:.0f}  p99 {lag.p99_us:.0f}  max {lag.max_us:.0f}")
    return "\n".join(lines)


def _run(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="http://127.0.0.1:PORT/path (loopback only)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--closed", action="store_true", help="closed loop: as fast as answers come back")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load (default 5)")
    parser.add_argument("--connections", type=int, default=None, help="keep-alive connections (16 open, 32 closed)")
    parser.add_argument("--max-requests", type=int, default=10_000_000, help="closed loop: request budget")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="extra seconds to wait for answers")
    parser.add_argument("--host", default=None, help="Host header to send (default: the URL's host:port)")
    parser.add_argument("--pacer", choices=("timer", "spin"), default="timer",
                        help="open loop: sleep on a timer until just before each send (default), or poll (one CPU busy)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--raw", action="store_true", help="with --json: include every latency (samples_s)")
    parser.add_argument("--json-file", default=None, metavar="PATH",
                        help="write the JSON object to PATH instead of printing it (what benchmarks/run.py reads)")
    args = parser.parse_args(argv)
    try:
        if args.closed:
            coro = run_closed_loop(
                args.url,
                connections=args.connections or 32,
                duration=args.duration,
                max_requests=args.max_requests,
                timeout=args.timeout,
            )
        else:
            coro = run_open_loop(
                args.url,
                rate=args.rate,
                count=max(1, round(args.rate * args.duration)),
                connections=args.connections or 16,
                timeout=args.timeout,
                host=args.host,
                pacer=args.pacer,
            )
        result = _run(coro)
    except (ValueError, ConnectionError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    if args.json_file:
        with open(args.json_file, "w") as out:
            json.dump(result.as_dict(raw=args.raw), out)
    else:
        print(json.dumps(result.as_dict(raw=args.raw)) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
