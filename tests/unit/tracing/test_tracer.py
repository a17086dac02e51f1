"""HttpTracer per request, without sockets: an unsampled request creates no span object at all (only the
propagation headers), a sampled one exactly one (two with spawn_upstream_span), and the decision is made once.
Spans are real opentelemetry-sdk spans; a real SpanProcessor counts every span the SDK starts."""
from __future__ import annotations

import types

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from pyproxy.config import model
from pyproxy.config.decode import decode
from pyproxy.http.connection import new_request_id
from pyproxy.http.headers import Headers
from pyproxy.observe.stream_info import StreamInfo
from pyproxy.tracing.tracer import HttpTracer


class Counting(SpanProcessor):
    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    def on_start(self, span, parent_context=None) -> None:
        self.started += 1

    def on_end(self, span) -> None:
        self.ended += 1


def tracer(pct: float, **extra) -> tuple[HttpTracer, Counting]:
    cfg = decode(model.HcmTracing, {"random_sampling": {"value": pct}, **extra})
    provider = TracerProvider()
    counting = Counting()
    provider.add_span_processor(counting)
    return HttpTracer(cfg, provider.get_tracer("t"), node_id="n", egress=False), counting


def stream(headers=()) -> types.SimpleNamespace:
    h = Headers([("x-request-id", new_request_id()), *headers])
    s = types.SimpleNamespace(headers=h, route_match=None, info=StreamInfo(0.0, 0.0))
    s.info.request_headers = h
    return s


def test_unsampled_requests_create_no_span_objects_only_headers():
    t, counting = tracer(0)
    for _ in range(1000):
        s = stream([("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])
        assert t.start(s) is None
        tp = s.headers.get("traceparent").split("-")
        assert (tp[1], tp[3]) == ("0af7651916cd43dd8448eb211c80319c", "00") and tp[2] != "b7ad6b7169203331"
    assert counting.started == 0


def test_sampled_request_one_span_and_spawn_upstream_two():
    t, counting = tracer(100)
    s = stream()
    active = t.start(s)
    active.on_upstream(s, "c")  # no upstream span without spawn_upstream_span
    active.finish(s)
    assert (counting.started, counting.ended) == (1, 1)
    t2, counting2 = tracer(100, spawn_upstream_span=True)
    s2 = stream()
    active2 = t2.start(s2)
    active2.on_upstream(s2, "c")
    active2.finish(s2)
    assert (counting2.started, counting2.ended) == (2, 2)


def test_the_decision_is_made_once_and_written_into_the_request_id():
    t, _ = tracer(50)
    for _ in range(200):
        s = stream()
        active = t.start(s)
        rid = s.headers.get("x-request-id")
        assert (active is not None) == (rid[14] == "9")
        again = stream([])
        again.headers.set("x-request-id", rid)  # the next hop sees the same id: the same answer
        assert (t.start(again) is not None) == (active is not None)


def test_http_url_cuts_the_path_at_max_path_tag_length():
    from pyproxy.tracing.tracer import downstream_tags
    t, _ = tracer(100, max_path_tag_length=5)
    s = stream()
    s.info.scheme, s.info.authority, s.info.path = "http", "a-long-host.example", "/0123456789"
    assert downstream_tags(t, s)["http.url"] == "http://a-long-host.example/0123"
