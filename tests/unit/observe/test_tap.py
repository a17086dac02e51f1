"""pyproxy.observe.tap: filters, the entry built from a StreamInfo, the bounded queue, the hub; and the admin
guard's treatment of /tap (pyproxy.admin.guard)."""
from __future__ import annotations

import pytest

from pyproxy.admin.guard import refusal
from pyproxy.http.headers import Headers
from pyproxy.observe.stats import Stats
from pyproxy.observe.stream_info import ResponseFlag, StreamInfo
from pyproxy.observe.tap import TapFilter, TapHub, TapSubscriber, tap_entry


class FakeTls:  # the two attributes a TlsSession offers the tap
    def __init__(self, sans):
        self.peer_uri_sans = sans


def info(method="GET", path="/a", authority="svc", code=200, headers=(), tls=None) -> StreamInfo:
    i = StreamInfo(start_time=1700000000.0, start_monotonic=10.0)
    i.method, i.path, i.authority, i.response_code = method, path, authority, code
    h = Headers()
    for k, v in headers:
        h.add(k, v)
    i.request_headers = h
    i.last_downstream_tx = 10.0125
    i.upstream_cluster, i.upstream_host = "outbound|9080||reviews.default.svc.cluster.local", "127.0.0.1:9"
    i.downstream_tls = tls
    return i


@pytest.mark.parametrize("flt,method,path,authority,expected", [
    (TapFilter(), "GET", "/x", "a", True),
    (TapFilter(path="/api"), "GET", "/api/v1", "a", True),
    (TapFilter(path="/api"), "GET", "/ap", "a", False),
    (TapFilter(path="/api"), "GET", None, "a", False),
    (TapFilter(method="POST"), "post", "/", "a", True),
    (TapFilter(method="POST"), "GET", "/", "a", False),
    (TapFilter(authority="reviews:9080"), "GET", "/", "Reviews:9080", True),
    (TapFilter(authority="reviews:9080"), "GET", "/", "reviews", False),
    (TapFilter("/p", "GET", "h"), "GET", "/p", "h", True),
    (TapFilter("/p", "GET", "h"), "GET", "/p", "x", False),
])
def test_filter_matches(flt, method, path, authority, expected):
    assert flt.matches(method, path, authority) is expected


def test_filter_from_query_normalises_and_names_a_bad_parameter():
    assert TapFilter.from_query({"path": "/a", "method": "get", "authority": "Svc:80"}) == TapFilter("/a", "GET", "svc:80")
    assert TapFilter.from_query({}) == TapFilter()
    with pytest.raises(ValueError, match="path='a'"):
        TapFilter.from_query({"path": "a"})
    with pytest.raises(ValueError, match="method='G ET'"):
        TapFilter.from_query({"method": "G ET"})
    assert TapFilter("/a", "GET").describe() == {"path": "/a", "method": "GET"}


def test_entry_carries_what_the_tap_shows():
    i = info(headers=[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                      ("x-request-id", "r1")], tls=FakeTls(("spiffe://cluster.local/ns/default/sa/a", "x")))
    i.response_flags |= ResponseFlag.UT
    i.response_flags |= ResponseFlag.URX
    e = tap_entry(i, "INBOUND")
    assert e == {
        "start_time": 1700000000.0, "direction": "inbound", "method": "GET", "authority": "svc", "path": "/a",
        "status": 200, "duration_ms": 12.5, "response_flags": "UT,URX",
        "peer": "spiffe://cluster.local/ns/default/sa/a", "mtls": True,
        "upstream_cluster": "outbound|9080||reviews.default.svc.cluster.local", "upstream_host": "127.0.0.1:9",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "request_id": "r1"}


def test_entry_of_a_stream_without_response_tls_or_trace():
    i = info(code=None, tls=FakeTls(()))
    i.last_downstream_tx = None
    e = tap_entry(i, "UNSPECIFIED")
    assert (e["status"], e["duration_ms"], e["peer"], e["mtls"], e["trace_id"], e["request_id"], e["direction"],
            e["response_flags"]) == (0, None, None, False, None, None, "-", "-")
    assert tap_entry(info(headers=[("x-b3-traceid", "463ac35c9f6413ad"), ("x-b3-spanid", "a2fb4a1d1a96d312")]),
                     "OUTBOUND")["trace_id"] == "0000000000000000463ac35c9f6413ad"  # 64-bit B3, widened


def test_a_full_queue_drops_new_entries_and_counts_them_without_waking_again():
    wakes = []
    sub = TapSubscriber(TapFilter(), capacity=2, wake=lambda: wakes.append(1))
    assert [sub.offer({"n": n}) for n in range(5)] == [True, True, False, False, False]
    assert sub.dropped == 3 and len(wakes) == 1  # woken when the queue went from empty to non-empty
    assert sub.drain() == [{"n": 0}, {"n": 1}] and not sub.queue
    assert sub.offer({"n": 5}) and len(wakes) == 2


@pytest.mark.parametrize("capacity", [0, 100_001])
def test_capacity_is_bounded(capacity):
    with pytest.raises(ValueError, match=f"buffer={capacity}"):
        TapSubscriber(TapFilter(), capacity)


def test_hub_builds_one_entry_for_the_subscribers_that_match_and_counts():
    stats = Stats()
    hub = TapHub(stats)
    api = hub.subscribe(TapSubscriber(TapFilter(path="/api"), 10))
    one = hub.subscribe(TapSubscriber(TapFilter(), 1))
    assert stats.gauge("tap.subscribers").value == 2
    hub.publish(info(path="/api/x"), "INBOUND")
    hub.publish(info(path="/other"), "INBOUND")
    assert hub.published == 2
    assert [e["path"] for e in api.queue] == ["/api/x"]
    assert [e["path"] for e in one.queue] == ["/api/x"] and one.dropped == 1
    assert api.queue[0] is one.queue[0]  # built once, shared
    assert stats.counter("tap.entries_queued").value == 2 and stats.counter("tap.entries_dropped").value == 1
    hub.unsubscribe(api)
    assert hub.subscribers == (one,) and stats.gauge("tap.subscribers").value == 1


def test_closing_the_hub_wakes_and_ends_every_subscriber():
    woken = []
    hub = TapHub()
    sub = hub.subscribe(TapSubscriber(TapFilter(), wake=lambda: woken.append(1)))
    hub.close()
    assert hub.subscribers == () and sub.closed and woken == [1]


@pytest.mark.parametrize("host,origin,refused", [
    ("127.0.0.1:15000", None, False),
    ("localhost:15000", "http://localhost:3000", False),
    ("evil.example:15000", None, True),  # DNS rebinding: a page's own name pointed at 127.0.0.1
    ("127.0.0.1:15000", "http://evil.example", True),
    ("127.0.0.1:15000", "null", True),
])
def test_the_guard_treats_tap_like_a_mutation_and_leaves_other_reads_alone(host, origin, refused):
    assert (refusal("GET", "/tap", host, origin, "127.0.0.1") is not None) is refused
    assert refusal("GET", "/stats", host, origin, "127.0.0.1") is None
