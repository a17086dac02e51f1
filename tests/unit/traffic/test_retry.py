"""RetryState: Envoy's retry_on semantics, x-envoy-* request headers, retry limits, the max_retries circuit
breaker, jittered exponential back-off, previous-hosts exclusion and timeouts."""
from __future__ import annotations

import random

import pytest

from pyproxy.config.decode import decode
from pyproxy.config.model import RetryPolicy, RouteConfiguration
from pyproxy.http.headers import Headers
from pyproxy.routing.retry import (
    JitteredExponentialBackoff,
    Outcome,
    RetryDecision,
    RetryOn,
    RetryState,
    Timeouts,
    parse_retry_on,
    retry_state_for,
)
from pyproxy.routing.table import RouteTable
from pyproxy.upstream.circuit_breaker import ResourceLimits


def policy(**fields) -> RetryPolicy:
    return decode(RetryPolicy, fields)


def state(retry_on="", headers=(), *, limits=None, start=0.0, route_timeout=0.0, method="GET", **fields):
    p = policy(retry_on=retry_on, **fields) if (retry_on or fields) else None
    return RetryState(p, Headers(headers), rng=random.Random(0), start=start, route_timeout=route_timeout,
                      method=method, limits=limits)


RESP = Outcome  # readability in tables
CASES = [
    # (retry_on, outcome, retried?)
    ("5xx", RESP(status=500), True),
    ("5xx", RESP(status=503), True),
    ("5xx", RESP(status=404), False),
    ("5xx", RESP(reset=True), True),  # no response at all counts as 5xx
    ("5xx", RESP(reset=True, connect_failure=True), True),
    ("5xx", RESP(reset=True, timeout=True), True),  # per-try timeout
    ("gateway-error", RESP(status=502), True),
    ("gateway-error", RESP(status=504), True),
    ("gateway-error", RESP(status=500), False),
    ("gateway-error", RESP(reset=True), True),
    ("reset", RESP(reset=True), True),
    ("reset", RESP(status=503), False),
    ("reset", RESP(reset=True, timeout=True), True),
    ("connect-failure", RESP(reset=True, connect_failure=True), True),
    ("connect-failure", RESP(reset=True), False),
    ("connect-failure", RESP(reset=True, timeout=True), False),  # Istio's default policy: per-try timeouts not retried
    ("connect-failure", RESP(status=503), False),
    ("refused-stream", RESP(reset=True, refused_stream=True), True),
    ("refused-stream", RESP(reset=True), False),
    ("reset-before-request", RESP(reset=True, request_started=False), True),
    ("reset-before-request", RESP(reset=True), False),
    ("retriable-4xx", RESP(status=409), True),
    ("retriable-4xx", RESP(status=429), False),
    ("envoy-ratelimited", RESP(status=429, headers=Headers([("x-envoy-ratelimited", "true")])), True),
    # x-envoy-ratelimited responses are retried only with envoy-ratelimited, even under 5xx
    ("5xx", RESP(status=503, headers=Headers([("x-envoy-ratelimited", "true")])), False),
    ("unavailable", RESP(status=200, headers=Headers([("grpc-status", "14")])), True),
    ("cancelled,internal", RESP(status=200, headers=Headers([("grpc-status", "13")])), True),
    ("deadline-exceeded", RESP(status=200, headers=Headers([("grpc-status", "14")])), False),
    ("resource-exhausted", RESP(status=200, headers=Headers([("grpc-status", "8")])), True),
    ("5xx,reset", RESP(reset=True, overflow=True), False),  # circuit-breaker overflow is never retried
    ("", RESP(status=503), False),
    # a reset of each kind is not retried by a token that does not cover it
    ("retriable-4xx", RESP(reset=True, connect_failure=True), False),
    ("retriable-4xx", RESP(reset=True, request_started=False), False),
    ("retriable-4xx", RESP(reset=True, refused_stream=True), False),
    ("5xx", RESP(status=599), True),
    ("5xx", RESP(status=600), False),
    ("gateway-error", RESP(status=503), True),
    ("5xx", RESP(status=409), False),  # 409 needs retriable-4xx
    ("unavailable", RESP(status=200), False),  # no headers, no grpc-status
    ("unavailable", RESP(status=200, headers=Headers([("grpc-status", "x")])), False),
]


@pytest.mark.parametrize("retry_on, outcome, expected", CASES)
def test_retry_on_tokens(retry_on, outcome, expected):
    s = state(retry_on or "retriable-status-codes")  # an empty policy still needs a state object
    if not retry_on:
        s.retry_on = RetryOn.NONE
    assert s.decide(outcome).retry is expected


def test_retriable_status_codes_from_policy_and_header():
    s = state("retriable-status-codes", retriable_status_codes=[418], num_retries=5)
    assert s.decide(Outcome(status=418)).retry
    assert not s.decide(Outcome(status=503)).retry
    s = state("retriable-status-codes", [("x-envoy-retriable-status-codes", "503, 504")], num_retries=5)
    assert s.decide(Outcome(status=504)).retry


def test_retriable_headers_from_policy_and_header_names():
    s = state("retriable-headers", retriable_headers=[{"name": "x-retry-me", "string_match": {"exact": "yes"}}])
    assert s.decide(Outcome(status=200, headers=Headers([("x-retry-me", "yes")]))).retry
    s = state("retriable-headers", [("x-envoy-retriable-header-names", "x-upstream-busy")])
    assert s.decide(Outcome(status=200, headers=Headers([("x-upstream-busy", "1")]))).retry
    assert not state("retriable-headers", [("x-envoy-retriable-header-names", "x-upstream-busy")]).decide(
        Outcome(status=200, headers=Headers())).retry


def test_retriable_request_headers_must_match_or_nothing_is_retried():
    only_get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    assert state("5xx", retriable_request_headers=only_get).decide(Outcome(status=503)).retry
    assert not state("5xx", method="POST", retriable_request_headers=only_get).decide(Outcome(status=503)).retry


def test_x_envoy_retry_on_header_is_or_ed_into_the_policy_and_consumed():
    headers = Headers([("x-envoy-retry-on", "retriable-4xx"), ("x-envoy-max-retries", "2"), ("x-keep", "1")])
    s = RetryState(policy(retry_on="5xx"), headers, rng=random.Random(0), start=0.0)
    assert s.retry_on == RetryOn.FIVE_XX | RetryOn.RETRIABLE_4XX
    assert s.retries_remaining == 2
    assert headers.items() == [("x-keep", "1")]  # x-envoy-* retry headers never reach the upstream


def test_retry_headers_alone_enable_retries_without_a_policy():
    s = state(headers=[("x-envoy-retry-on", "5xx")])
    assert s.enabled and s.retries_remaining == 1  # Envoy's default num_retries
    s = state(headers=[("x-envoy-retry-grpc-on", "unavailable,5xx")])
    assert s.retry_on == RetryOn.GRPC_UNAVAILABLE  # the gRPC header takes gRPC tokens only


def test_no_policy_and_no_headers_means_no_retry_state():
    t = RouteTable(decode(RouteConfiguration, {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/r"}, "route": {"cluster": "c", "retry_policy": {"retry_on": "5xx"}}},
        {"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]}))
    assert retry_state_for(t.match("h", "/", Headers()), Headers(), random.Random()) is None
    assert retry_state_for(t.match("h", "/r", Headers()), Headers(), random.Random()) is not None


def test_retry_state_for_a_route_takes_the_request_facts_it_is_given():
    t = RouteTable(decode(RouteConfiguration, {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "3s", "retry_policy": {
            "retry_on": "5xx", "retriable_request_headers": [{"name": ":method", "string_match": {"exact": "GET"}}]}}}]}]}))
    match = t.match("h", "/", Headers())
    rng, limits = random.Random(0), ResourceLimits(decode_thresholds(max_retries=1))
    s = retry_state_for(match, Headers(), rng, now=100.0, limits=limits)  # the method defaults to GET
    assert s.deadline == 103.0 and s.timeouts.global_timeout == 3.0
    assert s.limits is limits and s.backoff.rng is rng
    assert retry_state_for(match, Headers(), rng).deadline == 3.0
    assert retry_state_for(match, Headers(), rng, method="POST") is None  # retriable_request_headers says GET only


def test_a_routes_retry_plan_is_built_with_the_table_and_the_request_headers_still_override_it():
    t = RouteTable(decode(RouteConfiguration, {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "3s", "retry_policy": {
            "retry_on": "connect-failure,retriable-status-codes", "num_retries": 2, "retriable_status_codes": [503],
            "per_try_timeout": "1s", "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}],
            "host_selection_retry_max_attempts": 5}}}]}]}))
    match = t.match("h", "/", Headers())
    plan = match.retry_plan
    assert t.match("h", "/other", Headers()).retry_plan is plan  # one per route, shared by its requests
    assert plan.retry_on == RetryOn.CONNECT_FAILURE | RetryOn.RETRIABLE_STATUS_CODES and plan.num_retries == 2
    assert plan.retriable_status_codes == {503} and plan.exclude_previous and plan.host_selection_retries == 5
    assert plan.timeouts == Timeouts(3.0, 1.0)
    plain = retry_state_for(match, Headers([("x-other", "1")]), random.Random(0))
    assert (plain.retry_on, plain.retries_remaining, plain.retriable_status_codes) == (plan.retry_on, 2, {503})
    assert plain.timeouts is plan.timeouts and plain.host_selection_retries == 5
    headers = Headers([("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "4"),
                       ("x-envoy-retriable-status-codes", "502"), ("x-envoy-upstream-rq-timeout-ms", "500")])
    asked = retry_state_for(match, headers, random.Random(0))
    assert asked.retry_on == plan.retry_on | RetryOn.FIVE_XX and asked.retries_remaining == 4
    assert asked.retriable_status_codes == {502, 503} and asked.timeouts == Timeouts(0.5, 0.0)  # per-try ≥ global
    assert list(headers) == []  # consumed
    assert plan.retriable_status_codes == {503} and plan.num_retries == 2  # the plan itself is never edited


def test_num_retries_bounds_the_retries_then_limit_exceeded_sets_urx():
    s = state("5xx", num_retries=2)
    decisions = [s.decide(Outcome(status=503)) for _ in range(3)]
    assert [d.retry for d in decisions] == [True, True, False]
    assert decisions[0].stat == "upstream_rq_retry"
    assert decisions[2].stat == "upstream_rq_retry_limit_exceeded" and decisions[2].flag == "URX"
    assert s.exhausted


def test_success_after_a_retry_counts_retry_success():
    s = state("5xx", num_retries=3)
    s.decide(Outcome(status=503))
    assert s.decide(Outcome(status=200)).stat == "upstream_rq_retry_success"
    assert s.decide(Outcome(status=200)).stat is None


def test_max_retries_circuit_breaker_refuses_a_retry_with_uo():
    limits = ResourceLimits(decode_thresholds(max_retries=1))
    a, b = state("5xx", limits=limits, num_retries=3), state("5xx", limits=limits, num_retries=3)
    assert a.decide(Outcome(status=503)).retry  # a holds the only retry slot during its back-off and retry
    refused = b.decide(Outcome(status=503))
    assert not refused.retry and refused.flag == "UO"
    assert limits.stats["upstream_rq_retry_overflow"] == 1
    a.finish()  # a's request is over: its slot is free again
    assert limits.retries.count == 0
    assert b.decide(Outcome(status=503)).retry


def decode_thresholds(**fields):
    from pyproxy.config.model import Thresholds

    return decode(Thresholds, fields)


def test_backoff_is_fully_jittered_exponential_with_25ms_base_and_10x_cap():
    # the n-th back-off is uniform in [0, min(25 ms * 2^(n-1), 250 ms))
    rng = random.Random(42)
    maxima = [0.0] * 6
    for _ in range(400):
        b = JitteredExponentialBackoff(0.025, 0.25, rng)
        for i in range(6):
            maxima[i] = max(maxima[i], b.next())
    bounds = [0.025, 0.050, 0.100, 0.200, 0.250, 0.250]
    for got, bound in zip(maxima, bounds):
        assert got < bound
        assert got >= bound * 0.9  # 400 draws reach the top of each range


class _TopOfRange:
    """An rng that always draws the largest value of the range it is asked for, and records the range."""

    def __init__(self):
        self.ranges = []

    def randrange(self, n):
        self.ranges.append(n)
        return n - 1


def test_backoff_doubles_while_below_half_the_maximum_then_stays_at_the_maximum():
    """Envoy's JitteredExponentialBackOffStrategy: next = next < max/2 (integer ms) ? next * 2 : max."""
    rng = _TopOfRange()
    b = JitteredExponentialBackoff(0.025, 0.101, rng)
    assert [b.next() for _ in range(4)] == [0.024, 0.049, 0.1, 0.1]
    assert rng.ranges == [25, 50, 101, 101]


def test_retry_back_off_policy_sets_base_and_max():
    s = state("5xx", num_retries=10, retry_back_off={"base_interval": "0.1s", "max_interval": "0.15s"})
    delays = [s.decide(Outcome(status=503)).backoff for _ in range(10)]
    assert all(0 <= d < 0.15 for d in delays)
    s = state("5xx", num_retries=10, retry_back_off={"base_interval": "1s"})
    assert s.backoff.max_ms == 10_000  # max defaults to 10 x base


def test_previous_hosts_predicate_excludes_tried_hosts():
    s = state("5xx", retry_host_predicate=[{"name": "envoy.retry_host_predicates.previous_hosts"}],
              host_selection_retry_max_attempts=5)
    assert s.on_attempt("h1") == 1 and s.on_attempt("h2") == 2
    assert s.excluded_hosts == ("h1", "h2")
    assert s.host_selection_retries == 5
    plain = state("5xx")
    plain.on_attempt("h1")
    assert plain.excluded_hosts == ()


TIMEOUT_CASES = [
    # (route timeout, per_try, headers, global, per-try)
    (15.0, None, [], 15.0, 0.0),
    (0.0, "2s", [], 0.0, 2.0),
    (3.0, "2s", [], 3.0, 2.0),
    (3.0, "5s", [], 3.0, 0.0),  # a per-try timeout >= the global one is ignored
    (3.0, None, [("x-envoy-upstream-rq-timeout-ms", "500")], 0.5, 0.0),
    (3.0, "2s", [("x-envoy-upstream-rq-per-try-timeout-ms", "100")], 3.0, 0.1),
    (3.0, None, [("x-envoy-upstream-rq-timeout-ms", "junk")], 3.0, 0.0),
    (0.5, "0.5s", [], 0.5, 0.0),  # equal to a sub-second global timeout: ignored too
]


@pytest.mark.parametrize("route_timeout, per_try, headers, expected_global, expected_per_try", TIMEOUT_CASES)
def test_timeouts(route_timeout, per_try, headers, expected_global, expected_per_try):
    p = policy(retry_on="5xx", **({"per_try_timeout": per_try} if per_try else {}))
    t = Timeouts.compute(route_timeout, p, Headers(headers))
    assert (t.global_timeout, t.per_try_timeout) == (expected_global, expected_per_try)


def test_attempt_deadline_is_per_try_capped_by_the_global_deadline():
    s = state("5xx", start=100.0, route_timeout=3.0, per_try_timeout="1s")
    assert s.attempt_deadline(100.0) == 101.0
    assert s.attempt_deadline(102.5) == 103.0  # the route timeout covers every try and back-off
    assert state("5xx").attempt_deadline(5.0) is None  # Istio's default: no timeout at all


def test_nothing_is_retried_after_the_global_timeout():
    s = state("5xx", start=0.0, route_timeout=1.0, num_retries=5)
    assert s.decide(Outcome(status=503), now=0.5).retry
    assert not s.decide(Outcome(status=503), now=1.0).retry


def test_connect_failure_policy_ignores_a_503_then_retries_a_connect_failure_once():
    s = state("connect-failure", num_retries=1)
    assert not s.decide(Outcome(status=503, headers=Headers())).retry
    connect_failure = Outcome(reset=True, connect_failure=True, request_started=False)
    d = s.decide(connect_failure)
    assert d.retry and 0 <= d.backoff < 0.025
    assert not s.decide(connect_failure).retry and s.exhausted


def test_parse_retry_on_reports_unknown_tokens():
    assert parse_retry_on("5xx, bogus ,reset") == (RetryOn.FIVE_XX | RetryOn.RESET, ("bogus",))


def test_timeouts_without_a_policy_or_headers_and_the_hedge_header():
    assert Timeouts.compute(5.0, None) == Timeouts(5.0, 0.0, False)
    assert Timeouts.compute(5.0, None, Headers()).hedge is False
    hedged = Timeouts.compute(5.0, policy(retry_on="5xx", per_try_timeout="1s"),
                              Headers([("x-envoy-hedge-on-per-try-timeout", "true")]))
    assert hedged == Timeouts(5.0, 1.0, True) and hedged.expected_ms == 5000
    assert Timeouts.compute(5.0, None, Headers([("x-envoy-hedge-on-per-try-timeout", "false")])).hedge is False


def test_a_fresh_retry_state_and_its_defaults():
    p = policy(retry_on="5xx", num_retries=2, retriable_request_headers=[
        {"name": ":method", "string_match": {"exact": "GET"}}])
    s = RetryState(p, Headers([("x-envoy-upstream-rq-timeout-ms", "700")]), rng=random.Random(0))
    assert s.policy is p and s.enabled  # the method defaults to GET
    assert s.timeouts.global_timeout == 0.7 and s.deadline == 0.7  # start defaults to 0, the header sets the timeout
    assert RetryState(p, Headers(), rng=random.Random(0)).deadline is None  # route_timeout defaults to 0: none
    assert s.exhausted is False
    first = s.decide(Outcome(status=200))
    assert first.stat is None and first.retry is False  # nothing was retried yet: no retry_success
    no_policy = state(headers=[("x-envoy-retry-on", "5xx")])
    assert no_policy.host_selection_retries == 1


def test_exhausted_says_whether_the_last_retry_was_used():
    s = state("5xx", num_retries=2)
    assert s.decide(Outcome(status=503)).retry is True and s.exhausted is False
    assert s.decide(Outcome(status=503)).retry is True and s.exhausted is True
    d = s.decide(Outcome(status=503))
    assert d.retry is False and d.flag == "URX" and s.exhausted is True
    after = state("5xx", num_retries=1)
    after.decide(Outcome(status=503))
    assert after.decide(Outcome(status=200)) == type(d)(False, stat="upstream_rq_retry_success")


def test_retry_back_off_comes_from_the_back_off_strategy():
    s = RetryState(policy(retry_on="5xx", num_retries=2), Headers(), rng=_TopOfRange())
    assert s.decide(Outcome(status=503)).backoff == 0.024
    assert s.decide(Outcome(status=503)).backoff == 0.049


def test_a_refused_retry_is_false_with_uo_and_a_released_slot_is_released_once():
    limits = ResourceLimits(decode_thresholds(max_retries=1))
    a, b = state("5xx", limits=limits, num_retries=3), state("5xx", limits=limits, num_retries=3)
    assert a.decide(Outcome(status=503)).retry is True
    assert b.decide(Outcome(status=503)) == type(b.decide(Outcome(status=200)))(False, flag="UO")
    assert a.decide(Outcome(status=503)).retry is True  # releases its slot, then takes it again
    a.finish()
    a.finish()
    assert limits.retries.count == 0


def test_the_grpc_header_adds_to_the_policy_and_the_header_lists_split_on_commas():
    s = state("5xx,retriable-status-codes,retriable-headers", [
        ("x-envoy-retry-grpc-on", "unavailable"), ("x-envoy-retriable-status-codes", "418, 419"),
        ("x-envoy-retriable-header-names", "x-a,x-b")], num_retries=5)
    assert s.retry_on & RetryOn.FIVE_XX and s.retry_on & RetryOn.GRPC_UNAVAILABLE
    assert s.retriable_status_codes == {418, 419}
    assert s.would_retry(Outcome(status=200, headers=Headers([("x-b", "1")])))
    assert s.would_retry(Outcome(status=200, headers=Headers([("x-a", "1")])))
    assert not s.would_retry(Outcome(status=200, headers=Headers([("x-c", "1")])))


@pytest.mark.parametrize("name, value, request_line, retried", [
    (":method", "POST", {"method": "POST"}, True),
    (":authority", "a.example", {"authority": "a.example"}, True),
    (":authority", "a.example", {}, False),
    (":path", "/api/x", {"path": "/api/x"}, True),
    (":scheme", "https", {"scheme": "https"}, True),
    (":scheme", "https", {}, False),
    (":authority", "", {}, True),  # a request line not given is empty
    (":path", "", {}, True),
    (":scheme", "", {}, True),
    ("x-a", "1", {}, True),  # and the request's own headers
])
def test_retriable_request_headers_match_the_request_line_and_headers(name, value, request_line, retried):
    p = policy(retry_on="5xx", retriable_request_headers=[{"name": name, "string_match": {"exact": value}}])
    s = RetryState(p, Headers([("x-a", "1")]), rng=random.Random(0), **request_line)
    assert s.enabled is retried
    assert s.retry_on == (RetryOn.FIVE_XX if retried else RetryOn.NONE)


def test_retry_matchers_built_in_code_name_their_field():
    from pyproxy.config.decode import ConfigError
    from pyproxy.config.model import HeaderMatcher

    for field in ("retriable_headers", "retriable_request_headers"):
        p = RetryPolicy(retry_on="5xx", **{field: (HeaderMatcher(name=""),)})
        with pytest.raises(ConfigError) as e:
            RetryState(p, Headers(), rng=random.Random(0))
        assert e.value.path == f"retry_policy.{field}.name"


def test_retry_state_for_passes_the_request_line():
    def table_with(name, value):
        return RouteTable(decode(RouteConfiguration, {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "c", "retry_policy": {"retry_on": "5xx",
             "retriable_request_headers": [{"name": name, "string_match": {"exact": value}}]}}}]}]}))
    rng = random.Random(0)
    for name, given in ((":authority", {"authority": "a.example"}), (":path", {"path": "/p"}),
                        (":scheme", {"scheme": "https"})):
        match = table_with(name, next(iter(given.values()))).match("h", "/", Headers())
        assert retry_state_for(match, Headers(), rng, **given) is not None
        assert retry_state_for(match, Headers(), rng) is None
        assert retry_state_for(table_with(name, "").match("h", "/", Headers()), Headers(), rng) is not None


def test_retriable_headers_match_the_response_and_its_status():
    s = state("retriable-headers", retriable_headers=[{"name": ":status", "string_match": {"exact": "503"}}])
    assert s.would_retry(Outcome(status=503, headers=Headers()))
    assert not s.would_retry(Outcome(status=502, headers=Headers()))
    s = state("retriable-headers", retriable_headers=[{"name": ":authority", "present_match": True},
                                                      {"name": "x-retry", "present_match": True}])
    assert not s.would_retry(Outcome(status=200, headers=Headers()))  # a response has no :authority
    assert s.would_retry(Outcome(status=200, headers=Headers([("x-retry", "1")])))
    # without the retriable-headers token the matchers (here from the request header) are not consulted
    s = state("5xx", [("x-envoy-retriable-header-names", "x-retry")])
    assert not s.would_retry(Outcome(status=200, headers=Headers([("x-retry", "1")])))


def test_without_retriable_status_codes_in_retry_on_the_codes_are_not_consulted():
    s = state("5xx", [("x-envoy-retriable-status-codes", "418")])
    assert not s.would_retry(Outcome(status=418))


def test_a_per_try_timeout_without_a_global_one():
    s = state("5xx", start=100.0, per_try_timeout="1s")
    assert s.deadline is None and s.attempt_deadline(50.0) == 51.0


@pytest.mark.parametrize("base, maximum, ranges", [
    (0.001, 0.004, [1, 2, 4, 4]),
    (0.0001, 0.004, [1, 2, 4, 4]),  # below a millisecond: 1 ms
    (1.0, 10.0, [1000, 2000, 4000, 8000]),
])
def test_backoff_works_in_whole_milliseconds(base, maximum, ranges):
    rng = _TopOfRange()
    b = JitteredExponentialBackoff(base, maximum, rng)
    for _ in ranges:
        b.next()
    assert rng.ranges == ranges


def test_the_value_objects_print_their_fields_and_compare_by_value():
    assert repr(Outcome(status=503)) == ("Outcome(status=503, reset=False, connect_failure=False, refused_stream=False, "
                                         "overflow=False, timeout=False, request_started=True)")
    assert repr(Timeouts(1.5, 0.25)) == "Timeouts(1.5, 0.25, hedge=False)"
    assert Timeouts(1.0, 0.0) != (1.0, 0.0, False)  # only Timeouts compare equal to a Timeouts
    decision = RetryDecision(True, backoff=0.025, stat="upstream_rq_retry")
    assert decision == RetryDecision(True, 0.025, "upstream_rq_retry") and decision != RetryDecision(True, 0.025)
    assert decision != "retry"
    assert repr(decision) == "RetryDecision(retry=True, backoff=0.025, stat='upstream_rq_retry', flag=None)"
    s = state("5xx", route_timeout=2.0, per_try_timeout="0.5s")
    assert s.per_try_timeout == 0.5
    assert repr(s) == "RetryState(retry_on=1, remaining=1, attempts=0, timeouts=2.0s/0.5s)"


def test_empty_retry_on_tokens_are_skipped():
    assert parse_retry_on("5xx,, reset ,") == (RetryOn.FIVE_XX | RetryOn.RESET, ())


def test_override_headers_without_any_retry_on_read_no_max_retries_and_are_kept_when_not_consumed():
    headers = Headers([("x-envoy-max-retries", "7"), ("x-envoy-upstream-rq-timeout-ms", "250")])
    s = RetryState(None, headers, rng=random.Random(0), consume=False)
    assert s.retry_on == RetryOn.NONE and s.retries_remaining == 1  # no retry_on: x-envoy-max-retries not read
    assert s.timeouts == Timeouts(0.25, 0.0)
    assert [k for k, _ in headers] == ["x-envoy-max-retries", "x-envoy-upstream-rq-timeout-ms"]  # not consumed
