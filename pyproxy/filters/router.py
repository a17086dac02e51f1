"""The router: the terminal HTTP filter that sends a request to a cluster and streams the answer back.

Order of work for one request (Envoy's router filter, `source/common/router/router.cc`):
1. match a route (`RouteTable.match` on Host + path + headers); none -> 404 NR;
2. direct responses and redirects are answered here; otherwise pick the cluster (`cluster`, or a
   `weighted_clusters` draw); unknown -> `cluster_not_found_response_code` with flag NC;
3. apply header mutations and rewrites, start the timers (route `timeout`, default 15 s, starts when
   the downstream request is complete; `per_try_timeout` per attempt);
4. ask the cluster's load balancer for a host (none -> 503 UH), check `max_requests` (-> 503 UO), and
   ask that host's pool for a connection (`on_pool_ready` / `on_pool_failure`);
5. forward the head and stream the body; stream the response back through `ActiveStream.encode_*`.
Retries (`retry_policy`) re-run steps 4-5 with the buffered request body (see `pyproxy.routing.retry`).

One `RouterFilter` per request; it holds the snapshot's route and cluster objects it started with.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..http import codec, local_reply
from ..http.headers import Headers
from ..observe.stream_info import ResponseFlag
from ..upstream.load_balancer import LbContext, compute_hash
from ..upstream.pool import PoolFailure
from ..routing.retry import Outcome, Timeouts
from ..routing.table import RouteMatchResult
from .shadow import ShadowRequest, shadow_headers, should_mirror

if TYPE_CHECKING:  # pragma: no cover
    from ..routing.table import RouteMatchResult
    from ..upstream.connection import UpstreamConnection
    from ..upstream.host import Host
    from ..http.connection import ActiveStream
    from ..upstream.cluster_manager import ClusterRuntime

# Request headers Envoy's router reads and removes (the timeout and retry ones: pyproxy.routing.retry)
ROUTER_CONSUMED = frozenset({"x-envoy-upstream-alt-stat-name", "x-envoy-upstream-rq-timeout-alt-response"})
# The x-envoy-* request headers on_request_headers reads itself (the retry ones: pyproxy.routing.retry), tested
# together in one set operation because most requests carry none of them
ROUTER_READS = ROUTER_CONSUMED | frozenset({"x-envoy-upstream-rq-timeout-ms", "x-envoy-upstream-rq-per-try-timeout-ms"})
# Request body kept for a retry; above this the request is not retried (Envoy: per_connection_buffer_limit_bytes, 1 MiB)
RETRY_BUFFER_LIMIT = 1024 * 1024
# The pick of a request with no hash policy and no retry state (LbContext is immutable: one shared instance)
_PLAIN_PICK = LbContext()
# Bytes buffered while waiting for an upstream connection before we stop reading the client
PENDING_BODY_HIGH_WATER = 256 * 1024


class RouterFilter:
    __slots__ = (
        "stream", "hcm", "match", "cluster", "host", "conn", "waiting_pool", "body", "body_bytes",
        "body_overflow", "request_chunked", "head", "timeout", "per_try_timeout", "deadline", "per_try_timer",
        "response_started", "done", "counted_request", "retry", "attempts",
        "buffered_while_waiting", "request_ended", "shadows", "timeout_alt_response",
    )

    def __init__(self, stream: "ActiveStream"):
        self.stream = stream
        self.hcm = stream.hcm
        self.match: Any = None
        self.cluster: ClusterRuntime | None = None
        self.host: Host | None = None
        self.conn: UpstreamConnection | None = None
        self.waiting_pool: Any = None
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.body_overflow = False
        self.buffered_while_waiting = 0
        self.request_chunked = False
        self.head = b""
        self.timeout = 0.0
        self.per_try_timeout = 0.0
        self.deadline: float | None = None  # the route timeout's, on the loop clock (the connection's timer)
        self.per_try_timer: asyncio.TimerHandle | None = None
        self.response_started = False
        self.done = False
        self.counted_request = False
        self.retry: Any = None
        self.attempts = 0
        self.request_ended = False  # on_request_end was delivered (the body, if any, is all here)
        self.shadows: list[ShadowRequest] | None = None
        self.timeout_alt_response = False  # x-envoy-upstream-rq-timeout-alt-response: a timeout answers 204

    # ------------------------------------------------------------ request headers: route and cluster
    def on_request_headers(self) -> None:
        stream = self.stream
        info = stream.info
        headers = stream.headers
        hcm = self.hcm
        self.request_chunked = stream.request_chunked
        # resolved by the connection manager before the filters ran (typed: its fields are read natively compiled)
        m: RouteMatchResult | None = stream.route_match
        if m is None:
            stream.send_local_reply(local_reply.NO_ROUTE)
            return
        self.match = m
        info.route_name = m.name or None
        if m.direct_response is not None:
            self._direct_response(m.direct_response)
            return
        if m.redirect is not None:
            self._redirect()
            return
        name = stream.cluster_name  # chosen with the route (weighted clusters draw there)
        cluster = hcm.clusters.get(name) if name else None
        info.upstream_cluster = name
        if cluster is None:
            not_found = m.action.cluster_not_found_response_code if m.action is not None else ""
            code = 404 if not_found == "NOT_FOUND" else (500 if not_found == "INTERNAL_SERVER_ERROR" else 503)
            stream.send_local_reply(local_reply.NO_CLUSTER, status=code)
            return
        self.cluster = cluster
        if stream.span is not None:
            stream.span.on_upstream(stream, name)  # spawn_upstream_span: the upstream span starts here
        # header mutations: route, then virtual host, then route configuration (Envoy's default order)
        m.apply_request_headers(headers, stream.cluster_weight)
        path = stream.path
        if m.rewrites_path:  # prefix_rewrite or regex_rewrite
            headers.set("x-envoy-original-path", path)
            path = m.rewrite_path(path)
        if m.host_rewrite:  # host_rewrite_literal
            # Envoy 1.40 keeps the client's authority in x-envoy-original-host (tests/differential route-host-rewrite)
            headers.set("x-envoy-original-host", headers.get("host") or "")
            headers.set("host", m.host_rewrite)
        self.timeout = m.timeout
        # one set test for the x-envoy-* request headers the router reads, instead of four `in` tests and a
        # scan when (as nearly always) none is there
        control = headers.has_any(ROUTER_READS)
        # consumed by Envoy's router (an external client's were removed by pyproxy.http.forwarded)
        if control:
            if "x-envoy-upstream-rq-timeout-alt-response" in headers:
                self.timeout_alt_response = True
            headers.remove_names(ROUTER_CONSUMED)
        # an upgrade handshake is not retried: its connection becomes the tunnel (pyproxy.http.tunnel)
        self.retry = hcm.make_retry_state(m, headers, cluster.limits, stream) if stream.upgrade is None else None
        timeouts = self.retry.timeouts if self.retry is not None else None
        if timeouts is None and control and ("x-envoy-upstream-rq-timeout-ms" in headers
                                             or "x-envoy-upstream-rq-per-try-timeout-ms" in headers):
            timeouts = Timeouts.compute(self.timeout, None, headers)  # honoured without a retry policy too
            headers.remove("x-envoy-upstream-rq-timeout-ms")
            headers.remove("x-envoy-upstream-rq-per-try-timeout-ms")
        if timeouts is not None:
            self.per_try_timeout = timeouts.per_try_timeout
            self.timeout = timeouts.global_timeout  # honours x-envoy-upstream-rq-timeout-ms
        # Envoy tells the upstream the time it has: the per-try timeout if set, else the global one
        expected_ms = timeouts.expected_ms if timeouts is not None else int(self.timeout * 1000)
        if expected_ms:
            headers.set("x-envoy-expected-rq-timeout-ms", str(expected_ms))
        self.head = codec.request_line(stream.method, path)
        if m.mirror_policies:
            self._start_shadows(m.mirror_policies, headers)
        self._start_attempt()

    def _start_shadows(self, policies: Any, headers: Headers) -> None:
        shadows = []
        for policy in policies:
            cluster = self.hcm.clusters.get(policy.cluster)
            if cluster is None or not should_mirror(policy, self.hcm.rng):
                continue
            h = shadow_headers(_with_chunked(headers) if self.request_chunked else headers)
            shadows.append(ShadowRequest(cluster, codec.encode_head(self.head, h), self.request_chunked,
                                         self.timeout))
        self.shadows = shadows or None

    def _direct_response(self, dr: Any) -> None:
        body = self.hcm.direct_bodies.get(dr, "")  # read at load time (inline, base64, file or env)
        h = Headers()
        self.match.apply_response_headers(h)
        self.stream.send_local_reply(local_reply.LocalReply(dr.status, body, "direct_response"), extra_headers=h)

    def _redirect(self) -> None:
        stream = self.stream
        location = self.match.redirect_location(stream.info.scheme, stream.info.authority, stream.path)
        h = Headers([("location", location)])
        self.match.apply_response_headers(h)  # Envoy: route, vhost and config response headers, redirects too
        status = self.match.redirect_status
        stream.send_local_reply(local_reply.LocalReply(status, "", "direct_response"), extra_headers=h)

    # ------------------------------------------------------------ attempts
    def _start_attempt(self) -> None:
        stream = self.stream
        cluster = self.cluster
        assert cluster is not None
        if not cluster.limits.can_create_request():
            cluster.limits.record_overflow("upstream_rq_pending_overflow")  # Envoy's name for max_requests too
            self._overflow()
            return
        retry = self.retry
        if retry is None and not self.match.hash_policies:
            ctx = _PLAIN_PICK  # saves ~0.6 us/request: building a frozen dataclass for the default facts
        else:
            ctx = LbContext(hash_key=compute_hash(self.match.hash_policies, stream.headers, stream.conn.remote_ip,
                                                  path=stream.path)
                            if self.match.hash_policies else None,
                            excluded=retry.excluded_hosts if retry is not None else (),
                            host_selection_retries=retry.host_selection_retries if retry is not None else 1)
        host = cluster.choose_host(ctx)
        if host is None:
            cluster.stats_cx_none_healthy.inc()
            self._fail(local_reply.NO_HEALTHY_UPSTREAM)
            return
        self.host = host
        self.attempts += 1
        if self.retry is not None:
            self.retry.on_attempt(host)
        stream.info.upstream_host = f"{host.address}:{host.port}"
        cluster.limits.inc_requests()
        self.counted_request = True
        cluster.stats_rq_total.inc()
        cluster.stats_rq_active.inc()
        host.active_requests += 1
        host.rq_total += 1
        self.waiting_pool = cluster.pool_for(host)
        self.waiting_pool.acquire(self)

    def on_pool_ready(self, conn: Any) -> None:
        self.waiting_pool = None
        if self.done:
            conn.pool.release(conn)
            return
        self.conn = conn
        stream = self.stream
        stream.info.upstream_local_address = conn.local_address  # this try's connection, as Envoy logs it
        headers = stream.headers
        if self.hcm.attempt_count_header(self.match):  # Envoy counts tries with or without a retry policy
            headers.set("x-envoy-attempt-count", str(self.attempts))
        if self.attempts > 1 and self.retry is not None and not self.per_try_timeout and self.timeout:
            # Envoy tells a retry the time left of the global timeout (FilterUtility::setTimeoutHeaders)
            info = stream.info
            spent_ms = int((time.monotonic() - (info.last_downstream_rx or info.start_monotonic)) * 1000)
            headers.set("x-envoy-expected-rq-timeout-ms", str(max(int(self.timeout * 1000) - spent_ms, 1)))
        if self.request_chunked:
            head = codec.encode_head(self.head, _with_chunked(headers))
        else:
            head = codec.encode_head(self.head, headers)
        conn.send(self, head, stream.head_request)
        if stream.upgrade is not None:
            conn.reusable = False  # whatever the answer, this connection never carries another request
        for chunk in self.body:
            conn.write(codec.encode_chunk(chunk) if self.request_chunked else chunk)
        if self.body_overflow or self.retry is None:
            self.body = []
        if self.buffered_while_waiting:
            self.buffered_while_waiting = 0
            stream.conn.resume_reading_for_upstream()
        if self.request_ended:
            self._write_request_end(conn)
            if self.per_try_timeout:
                self._arm_per_try_timer()  # Envoy: from pool-ready once the request is complete
        if stream.conn.write_paused:
            conn.pause_reading()

    def on_pool_failure(self, failure: PoolFailure) -> None:
        pool, self.waiting_pool = self.waiting_pool, None
        if self.done:
            return
        self._release_request()
        if failure is PoolFailure.OVERFLOW:
            self._overflow()
            return
        if failure is PoolFailure.TLS_FAILURE:
            reason = pool.transport_failure if pool is not None else ""
            self.stream.info.upstream_transport_failure_reason = reason
            self._attempt_failed(local_reply.tls_connect_failure(reason), connect_failure=True)
            return
        reply = local_reply.CONNECT_TIMEOUT if failure is PoolFailure.CONNECT_TIMEOUT else local_reply.CONNECT_FAILURE
        self._attempt_failed(reply, connect_failure=True)

    def _overflow(self) -> None:
        h = Headers([("x-envoy-overloaded", "true")])
        self.stream.send_local_reply(local_reply.OVERFLOW, extra_headers=h)

    # ------------------------------------------------------------ request body
    def on_request_data(self, chunk: bytes) -> None:
        if self.shadows is not None:
            for sh in self.shadows:
                sh.on_data(chunk)
        keep = self.retry is not None and not self.body_overflow
        if keep:
            self.body_bytes += len(chunk)
            if self.body_bytes > RETRY_BUFFER_LIMIT:
                self.body_overflow = True  # too big to replay: this request will not be retried
        conn = self.conn
        if conn is not None:
            conn.write(codec.encode_chunk(chunk) if self.request_chunked else chunk)
            if keep and not self.body_overflow:
                self.body.append(chunk)
        elif not self.done:
            self.body.append(chunk)
            self.buffered_while_waiting += len(chunk)
            if self.buffered_while_waiting > PENDING_BODY_HIGH_WATER:
                self.stream.conn.pause_reading_for_upstream()

    def on_request_end(self) -> None:
        self.request_ended = True
        if self.shadows is not None:
            for sh in self.shadows:
                sh.on_end()
        if self.done:
            return
        if self.timeout and self.deadline is None:
            self.stream.conn.arm_route_timeout(self, self.timeout)
        if self.per_try_timeout and self.per_try_timer is None and self.conn is not None:
            self._arm_per_try_timer()
        if self.conn is not None:
            self._write_request_end(self.conn)

    def _write_request_end(self, conn: UpstreamConnection) -> None:
        if self.request_chunked:
            conn.write(codec.LAST_CHUNK)
        conn.end_request()
        self.stream.info.last_upstream_tx = time.monotonic()  # %REQUEST_TX_DURATION%

    # ------------------------------------------------------------ response (from UpstreamConnection)
    def on_response_headers(self, status: int, headers: Headers) -> None:
        if self.done:
            return
        if status == 101:
            self._switch_protocols(headers)
            return
        self._record_host_outcome(status)  # every try's answer feeds outlier detection, retried or not
        if self.retry is not None and not self.body_overflow:
            if self._retry_decision(Outcome(status=status, headers=headers)):
                return
        self._cancel_per_try_timer()
        stream = self.stream
        info = stream.info
        self.response_started = True
        info.response_code_details = "via_upstream"
        info.first_upstream_rx = now = time.monotonic()  # %RESPONSE_DURATION%
        request_end = info.last_downstream_rx
        if stream.request_complete and request_end is not None:
            # Envoy times the upstream from the downstream request's end, earlier tries included
            # (Router::Filter::onUpstreamHeaders); an answer before the request's end gets none
            headers.set("x-envoy-upstream-service-time", str(int((now - request_end) * 1000)))
        if self.hcm.attempt_count_in_response(self.match):
            headers.set("x-envoy-attempt-count", str(self.attempts))

        self.match.apply_response_headers(headers, self.stream.cluster_weight)
        framed = "content-length" in headers and "transfer-encoding" not in headers
        self.cluster.count_response(status)  # type: ignore[union-attr]
        stream.encode_headers(status, headers, False, framed_length=framed)

    def _switch_protocols(self, headers: Headers) -> None:
        """The upstream accepted the upgrade: forward its 101 and hand both connections to the tunnel."""
        stream = self.stream
        tunnel = stream.conn.tunnel
        conn = self.conn
        if stream.upgrade is None or tunnel is None or conn is None:
            # 101 to a request that asked for no upgrade: an upstream protocol error (Envoy: 503 UPE)
            self._record_host_outcome(None, reset=True)
            if conn is not None:
                conn.detach()
            self.conn = None
            self._fail(local_reply.UPSTREAM_PROTOCOL_ERROR)
            return
        self._record_host_outcome(101)
        self._cancel_timers()  # the route timeout covers the handshake, not the tunnel (Envoy: idle timeout)
        self.response_started = True
        stream.info.response_code_details = "via_upstream"
        self.cluster.count_response(101)  # type: ignore[union-attr]
        self.match.apply_response_headers(headers, stream.cluster_weight)
        stream.encode_switching_protocols(headers)
        self.conn = None  # the tunnel owns the connection now; on_stream_done must not abort it
        hcm = self.hcm
        idle = self.match.action.idle_timeout
        if idle is None:
            idle = hcm.config.stream_idle_timeout if hcm.config.stream_idle_timeout is not None else 300.0
        tunnel.open(conn, idle, hcm.stats_upgrades_total, hcm.stats_upgrades_active)

    def on_response_data(self, data: bytes) -> None:
        if not self.done and self.response_started:
            self.stream.encode_data(data)

    def on_response_end(self) -> None:
        if self.done or not self.response_started:
            return  # e.g. the retried attempt's body
        self.conn = None
        self._cancel_timers()
        self._release_request()
        self.stream.encode_end()

    def on_upstream_reset(self, reason: str) -> None:
        self.conn = None
        if self.done:
            return
        self._release_request()
        cluster = self.cluster
        if self.response_started:
            cluster.stats_rq_rx_reset.inc()  # type: ignore[union-attr]
            self.stream.info.response_flags |= ResponseFlag.UC
            self._cancel_timers()
            self.stream.reset()
            return
        if reason == "protocol error":
            self._attempt_failed(local_reply.UPSTREAM_PROTOCOL_ERROR, reset=True)
        else:
            self._attempt_failed(local_reply.CONNECTION_TERMINATION, reset=True)

    def on_upstream_write_paused(self) -> None:
        self.stream.conn.pause_reading_for_upstream()

    def on_upstream_write_resumed(self) -> None:
        self.stream.conn.resume_reading_for_upstream()

    def pause_upstream_reading(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def resume_upstream_reading(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    # ------------------------------------------------------------ failures, retries, timeouts
    def _attempt_failed(self, reply: local_reply.LocalReply, *, connect_failure: bool = False,
                        reset: bool = False, timeout: bool = False) -> None:
        self._cancel_per_try_timer()
        self._record_host_outcome(None, connect_failure=connect_failure, reset=reset, timeout=timeout)
        if self.retry is not None and not self.body_overflow:
            outcome = Outcome(reset=True, connect_failure=connect_failure, timeout=timeout,
                              request_started=not connect_failure)
            if self._retry_decision(outcome):
                return
        self._fail(reply)

    def _retry_decision(self, outcome: Outcome) -> bool:
        """Ask the retry state (pure) about this try; start the retry if it says so. True = retrying."""
        d = self.retry.decide(outcome)
        if d.stat is not None and d.stat != "upstream_rq_retry":
            self.cluster.stats.counter(d.stat).inc()  # type: ignore[union-attr]
        if d.retry:
            self._retry_after(d.backoff)
            return True
        if d.flag == "URX":
            self.stream.info.response_flags |= ResponseFlag.URX
        elif d.flag == "UO":  # max_retries overflow: Envoy flags it and lets this try's answer through
            self.stream.info.response_flags |= ResponseFlag.UO
        return False

    def _fail(self, reply: local_reply.LocalReply) -> None:
        """The router's own reply (no healthy upstream, timeout, reset, overflow): Envoy's `modify_headers_`
        puts the route's, virtual host's and route configuration's response headers on it, then the
        attempt count."""
        self._cancel_timers()
        h = Headers()
        self.match.apply_response_headers(h, self.stream.cluster_weight)
        if self.attempts and self.hcm.attempt_count_in_response(self.match):
            h.set("x-envoy-attempt-count", str(self.attempts))
        if self.attempts > 1 and reply.body.startswith(local_reply.RESET_PREFIX):
            reply = local_reply.retried(reply)  # Envoy names the LATEST reset reason after retries
        self.stream.send_local_reply(reply, extra_headers=h)

    def _retry_after(self, delay: float) -> None:
        """Drop this attempt and start another after `delay` (jittered back-off)."""
        self._cancel_per_try_timer()
        if self.conn is not None:
            self.conn.detach()
            self.conn = None
        self._release_request()
        self.cluster.stats_rq_retry.inc()  # type: ignore[union-attr]
        # the max_retries slot is held by the RetryState until its next decision or finish() (Envoy)
        asyncio.get_running_loop().call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        if not self.done:
            self._start_attempt()

    def on_route_timeout(self) -> None:
        """The route timeout passed (called by the connection's route timer, `arm_route_timeout`)."""
        self.deadline = None
        if self.done:
            return
        self.cluster.stats_rq_timeout.inc()  # type: ignore[union-attr]
        self._abandon_attempt()
        self._record_host_outcome(None, timeout=True)
        self.stream.info.response_flags |= ResponseFlag.UT
        if self.response_started:
            self._cancel_timers()
            self.stream.reset()
        elif self.timeout_alt_response:
            self._fail(local_reply.LocalReply(204, "", local_reply.UPSTREAM_TIMEOUT.details, ResponseFlag.UT))
        else:
            self._fail(local_reply.UPSTREAM_TIMEOUT)

    def _arm_per_try_timer(self) -> None:
        self._cancel_per_try_timer()
        self.per_try_timer = self.stream.conn._loop.call_later(self.per_try_timeout, self._on_per_try_timeout)

    def _on_per_try_timeout(self) -> None:
        self.per_try_timer = None
        if self.done or self.response_started:
            return
        self.cluster.stats_rq_per_try_timeout.inc()  # type: ignore[union-attr]
        self._abandon_attempt()
        self._attempt_failed(local_reply.PER_TRY_TIMEOUT, timeout=True)

    def _abandon_attempt(self) -> None:
        if self.conn is not None:
            self.conn.detach()
            self.conn = None
            self.cluster.stats_rq_tx_reset.inc()  # type: ignore[union-attr]  # reset by us (Envoy's name)
        if self.waiting_pool is not None:
            self.waiting_pool.cancel(self)
            self.waiting_pool = None
        self._release_request()

    def _record_host_outcome(self, status: int | None, *, connect_failure: bool = False, reset: bool = False,
                             timeout: bool = False) -> None:
        cluster = self.cluster
        host = self.host
        if host is None or cluster is None:
            return
        cluster.record_outcome(host, status, connect_failure=connect_failure, reset=reset, timeout=timeout)

    def _release_request(self) -> None:
        if self.counted_request:
            self.counted_request = False
            cluster = self.cluster
            cluster.limits.dec_requests()  # type: ignore[union-attr]
            cluster.stats_rq_active.dec()  # type: ignore[union-attr]
            if self.host is not None:
                self.host.active_requests -= 1

    def _cancel_per_try_timer(self) -> None:
        if self.per_try_timer is not None:
            self.per_try_timer.cancel()
            self.per_try_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_per_try_timer()
        if self.deadline is not None:
            self.deadline = None
            self.stream.conn.disarm_route_timeout(self)

    def on_stream_done(self) -> None:
        """The downstream stream ended (normally, by local reply, or by reset): let go of everything."""
        if self.done:
            return
        self.done = True
        self._cancel_timers()
        # a connection still attached means the response did not complete (client gone, reset): unusable
        self._abandon_attempt()
        if self.retry is not None:
            self.retry.finish()  # give back a held max_retries slot
        self.stream.info.upstream_request_attempt_count = self.attempts


def _with_chunked(headers: Headers) -> Headers:
    h = headers.copy()
    h.remove("content-length")
    h.add("transfer-encoding", "chunked")
    return h
