"""Trace headers (W3C, B3 multi and single) and the x-request-id trace decision, as tables."""
from __future__ import annotations

import pytest

from pyproxy.http.headers import Headers
from pyproxy.tracing import context as tc
from pyproxy.tracing.sampling import (SamplingConfig, TraceReason, decide, percent_to_ten_thousandths,
                                      sampling_value, trace_reason)

T = "0af7651916cd43dd8448eb211c80319c"
S = "b7ad6b7169203331"


@pytest.mark.parametrize("value,expected", [
    (f"00-{T}-{S}-01", (int(T, 16), int(S, 16), True)),
    (f"00-{T}-{S}-00", (int(T, 16), int(S, 16), False)),
    (f"00-{T.upper()}-{S}-03", (int(T, 16), int(S, 16), True)),  # other flag bits ignored
    (f"01-{T}-{S}-01-future", (int(T, 16), int(S, 16), True)),  # a later version may add fields
    (f"00-{T}-{S}-01-extra", None),  # version 00 has exactly four
    (f"ff-{T}-{S}-01", None),
    (f"00-{'0' * 32}-{S}-01", None),  # all-zero trace id
    (f"00-{T}-{'0' * 16}-01", None),
    (f"00-{T[:-1]}-{S}-01", None),
    (f"00-{T}-{S}-1", None),
    ("garbage", None),
])
def test_traceparent(value, expected):
    ctx = tc.parse_traceparent(value)
    assert (None if ctx is None else (ctx.trace_id, ctx.span_id, ctx.sampled)) == expected


@pytest.mark.parametrize("headers,expected", [
    ({"x-b3-traceid": T, "x-b3-spanid": S, "x-b3-sampled": "1"}, (int(T, 16), int(S, 16), True, "b3")),
    ({"x-b3-traceid": T[16:], "x-b3-spanid": S}, (int(T[16:], 16), int(S, 16), None, "b3")),  # 64-bit id
    ({"x-b3-traceid": T, "x-b3-spanid": S, "x-b3-sampled": "0"}, (int(T, 16), int(S, 16), False, "b3")),
    ({"x-b3-traceid": T, "x-b3-spanid": S, "x-b3-flags": "1"}, (int(T, 16), int(S, 16), True, "b3")),  # debug
    ({"b3": f"{T}-{S}-1-{S}"}, (int(T, 16), int(S, 16), True, "b3-single")),
    ({"b3": f"{T}-{S}"}, (int(T, 16), int(S, 16), None, "b3-single")),
    ({"b3": f"{T}-{S}-d"}, (int(T, 16), int(S, 16), True, "b3-single")),
    ({"b3": "1"}, None),
    ({"x-b3-traceid": "xyz", "x-b3-spanid": S}, None),
    ({"x-b3-traceid": T}, None),
])
def test_b3(headers, expected):
    ctx = tc.extract_b3(Headers(list(headers.items())))
    assert (None if ctx is None else (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.source)) == expected


def test_w3c_wins_over_b3_and_tracestate_rides_along():
    h = Headers([("traceparent", f"00-{T}-{S}-01"), ("tracestate", "a=1"), ("x-b3-traceid", "1" * 32),
                 ("x-b3-spanid", "2" * 16)])
    ctx = tc.extract(h)
    assert (ctx.trace_id, ctx.tracestate, ctx.source) == (int(T, 16), "a=1", "w3c")


def test_inject_b3_replaces_every_b3_header():
    h = Headers([("b3", "junk"), ("x-b3-flags", "1"), ("x-b3-parentspanid", "9" * 16)])
    tc.inject_b3(h, int(T, 16), int(S, 16), 0, True)
    assert sorted(h.items()) == sorted([("x-b3-traceid", T), ("x-b3-spanid", S), ("x-b3-sampled", "1")])


def test_inject_b3_64bit_trace_id_when_asked():
    h = Headers()
    tc.inject_b3(h, int(T[16:], 16), int(S, 16), 5, False, trace_id_128bit=False)
    assert (h.get("x-b3-traceid"), h.get("x-b3-parentspanid"), h.get("x-b3-sampled")) == (T[16:], f"{5:016x}", "0")


RID = "00001234-aaaa-4aaa-8aaa-aaaaaaaaaaaa"  # sampling value 0x1234 % 10000 = 4660


@pytest.mark.parametrize("rid,cfg,flags,reason", [
    (RID, SamplingConfig(random=4661), {}, TraceReason.SAMPLED),  # 4660 < 4661
    (RID, SamplingConfig(random=4660), {}, TraceReason.NOT_TRACEABLE),  # strict <
    (RID, SamplingConfig(random=0), {"client_trace_id": True}, TraceReason.CLIENT),
    (RID, SamplingConfig(random=0, client=4660), {"client_trace_id": True}, TraceReason.NOT_TRACEABLE),
    (RID, SamplingConfig(random=0), {"force_trace": True}, TraceReason.FORCED),
    (RID, SamplingConfig(overall=4660), {"force_trace": True}, TraceReason.NOT_TRACEABLE),  # overall caps all
    (RID[:14] + "9" + RID[15:], SamplingConfig(random=0), {}, TraceReason.SAMPLED),  # upstream said sampled
    ("not-a-uuid", SamplingConfig(), {"client_trace_id": True}, TraceReason.NOT_TRACEABLE),
    ("deadbeef-not-a-uuid", SamplingConfig(), {}, TraceReason.NOT_TRACEABLE),  # hex first, but not a UUID
    (RID, SamplingConfig(), {"client_trace_id": True}, TraceReason.CLIENT),  # not turned into `sampled`
    (RID, SamplingConfig(), {"force_trace": True}, TraceReason.FORCED),
    (RID, SamplingConfig(client=0), {"client_trace_id": True, "force_trace": True}, TraceReason.NOT_TRACEABLE),
    (RID[:14] + "1" + RID[15:], SamplingConfig(random=0), {}, TraceReason.NOT_TRACEABLE),  # unknown reason nibble
    (RID[:14] + "a" + RID[15:], SamplingConfig(random=0, overall=4661), {}, TraceReason.FORCED),  # 4660 < 4661
    (None, SamplingConfig(), {}, TraceReason.NOT_TRACEABLE),
])
def test_decision_from_request_id(rid, cfg, flags, reason):
    got, new_rid = decide(rid, cfg, **flags)
    assert got is reason
    if rid is not None and got is not trace_reason(rid):
        assert new_rid == rid[:14] + reason.value + rid[15:]
    else:
        assert new_rid is None


def test_the_trace_reason_of_an_id_that_is_not_a_uuid_is_not_traceable():
    """Envoy's UUID request-id extension reads the reason only from a UUID: 36 characters, dashes at 8, 13, 18, 23."""
    assert trace_reason(None) is TraceReason.NOT_TRACEABLE
    assert trace_reason("deadbeef-aaaa-9aaa") is TraceReason.NOT_TRACEABLE
    assert trace_reason(RID[:14] + "9" + RID[15:]) is TraceReason.SAMPLED
    for dash in (8, 13, 18, 23):
        assert trace_reason(RID[:dash] + "0" + RID[dash + 1:14] + "9" + RID[15:] if dash < 14 else
                            RID[:14] + "9" + RID[15:dash] + "0" + RID[dash + 1:]) is TraceReason.NOT_TRACEABLE
    assert trace_reason(RID[:14] + "9" + RID[15:] + "0") is TraceReason.NOT_TRACEABLE  # 37 characters
    assert SamplingConfig() == SamplingConfig(10000, 10000, 10000)  # HCM default: 100 % each
    assert [TraceReason(c).traced for c in "49ab"] == [False, True, True, True]


def test_percent_conversion_and_value():
    assert [percent_to_ten_thousandths(v) for v in (None, 0, 1.0, 0.01, 100, 33.333)] == [10000, 0, 100, 1, 10000, 3333]
    assert sampling_value("ffffffff-0000-4000-8000-000000000000") == 0xFFFFFFFF % 10000
    assert sampling_value("zzzzzzzz-0000-4000-8000-000000000000") is None


@pytest.mark.parametrize("fraction, want", [
    (None, 10000),                                    # unset: Envoy's route default, 100 %
    ({"numerator": 25, "denominator": "HUNDRED"}, 2500),
    ({"numerator": 7, "denominator": "TEN_THOUSAND"}, 7),
    ({"numerator": 12345, "denominator": "MILLION"}, 123),  # rounded to 1/10,000 (a documented deviation)
    ({"numerator": 250, "denominator": "HUNDRED"}, 10000),  # more than all is all
    ({"numerator": 0, "denominator": "HUNDRED"}, 0),
])
def test_a_route_fraction_on_the_hcm_scale(fraction, want):
    from pyproxy.config.model import FractionalPercent
    from pyproxy.tracing.sampling import fraction_to_ten_thousandths

    fp = None if fraction is None else FractionalPercent(**fraction)
    assert fraction_to_ten_thousandths(fp) == want
