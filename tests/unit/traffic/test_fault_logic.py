"""Fault injection decisions: Envoy's fixed and header-driven delays and aborts, percentages, gates, per-route
override."""
from __future__ import annotations

import random

import pytest

from pyproxy.config.decode import decode
from pyproxy.config.model import HTTPFault, RouteConfiguration
from pyproxy.filters.fault_logic import FaultConfig, FaultDecision, effective_fault_config
from pyproxy.http.headers import Headers
from pyproxy.routing.table import RouteTable
from tests.support.draws import FixedDraws

ALWAYS = {"numerator": 100}


def fault(**cfg) -> FaultConfig:
    return FaultConfig(decode(HTTPFault, cfg))


def ask(fc, headers=(), rng=None, *, cluster="c", active=0, method="GET", authority="h", path="/", scheme="http"):
    """One request's decision (`headers`: a list of pairs or a Headers)."""
    headers = headers if isinstance(headers, Headers) else Headers(list(headers))
    return fc.decide(headers, cluster, rng if rng is not None else random.Random(0), active, method=method,
                     authority=authority, path=path, scheme=scheme)


def run(fc, headers=(), cluster="c", active=0, n=1, seed=0):
    rng = random.Random(seed)
    return [ask(fc, headers, rng, cluster=cluster, active=active) for _ in range(n)]


CASES = [
    # (config, request headers, (delay, abort_status, grpc_status))
    ({"delay": {"fixed_delay": "2s", "percentage": ALWAYS}}, [], (2.0, None, None)),
    ({"abort": {"http_status": 503, "percentage": ALWAYS}}, [], (0.0, 503, None)),
    ({"abort": {"grpc_status": 14, "percentage": ALWAYS}}, [], (0.0, None, 14)),
    ({"delay": {"fixed_delay": "1s", "percentage": ALWAYS}, "abort": {"http_status": 500, "percentage": ALWAYS}},
     [], (1.0, 500, None)),
    ({"delay": {"fixed_delay": "2s"}}, [], (0.0, None, None)),  # percentage unset ⇒ 0 %
    ({"delay": {"header_delay": {}, "percentage": ALWAYS}}, [("x-envoy-fault-delay-request", "250")], (0.25, None, None)),
    ({"delay": {"header_delay": {}, "percentage": ALWAYS}}, [], (0.0, None, None)),
    ({"delay": {"header_delay": {}, "percentage": ALWAYS}}, [("x-envoy-fault-delay-request", "x")], (0.0, None, None)),
    ({"abort": {"header_abort": {}, "percentage": ALWAYS}}, [("x-envoy-fault-abort-request", "429")], (0.0, 429, None)),
    ({"abort": {"header_abort": {}, "percentage": ALWAYS}}, [("x-envoy-fault-abort-request", "700")], (0.0, None, None)),
    ({"abort": {"header_abort": {}, "percentage": ALWAYS}}, [("x-envoy-fault-abort-grpc-request", "4")], (0.0, None, 4)),
    # header percentage may only lower the configured one
    ({"abort": {"header_abort": {}, "percentage": ALWAYS}},
     [("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-request-percentage", "0")], (0.0, None, None)),
    ({"abort": {"header_abort": {}, "percentage": {"numerator": 0}}},
     [("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-request-percentage", "100")], (0.0, None, None)),
]


@pytest.mark.parametrize("cfg, headers, expected", CASES)
def test_fault_decisions(cfg, headers, expected):
    (d,) = run(fault(**cfg), headers)
    assert (d.delay, d.abort_status, d.grpc_status) == expected


def test_percentage_is_drawn_per_request():
    fc = fault(abort={"http_status": 503, "percentage": {"numerator": 25}})
    aborted = sum(d.abort_status == 503 for d in run(fc, n=2000, seed=3))
    assert 420 <= aborted <= 580


def test_fractional_percentages_per_million():
    fc = fault(delay={"fixed_delay": "1s", "percentage": {"numerator": 500_000, "denominator": "MILLION"}})
    delayed = sum(d.delay == 1.0 for d in run(fc, n=2000, seed=5))
    assert 900 <= delayed <= 1100


def test_delay_and_abort_are_independent_draws_and_flags():
    fc = fault(delay={"fixed_delay": "1s", "percentage": {"numerator": 50}},
               abort={"http_status": 500, "percentage": {"numerator": 50}})
    ds = run(fc, n=2000, seed=1)
    both = sum(1 for d in ds if d.delay and d.abort_status)
    assert 400 <= both <= 600  # 25 %
    assert ds[[i for i, d in enumerate(ds) if d.delay and d.abort_status][0]].response_flags == ("DI", "FI")


GATES = [
    ({"upstream_cluster": "reviews"}, [], "ratings", False),
    ({"upstream_cluster": "reviews"}, [], "reviews", True),
    ({"downstream_nodes": ["frontend"]}, [("x-envoy-downstream-service-node", "frontend")], "c", True),
    ({"downstream_nodes": ["frontend"]}, [], "c", False),
    ({"headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]}, [("end-user", "jason")], "c", True),
    ({"headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]}, [("end-user", "bob")], "c", False),
]


@pytest.mark.parametrize("gate, headers, cluster, faulted", GATES)
def test_gates(gate, headers, cluster, faulted):
    fc = fault(abort={"http_status": 418, "percentage": ALWAYS}, **gate)
    (d,) = run(fc, headers, cluster=cluster)
    assert d.faulted is faulted


def test_max_active_faults_overflow():
    fc = fault(abort={"http_status": 503, "percentage": ALWAYS}, max_active_faults=2)
    assert run(fc, active=1)[0].abort_status == 503
    d = run(fc, active=2)[0]
    assert d.overflow and not d.faulted


def test_per_route_config_replaces_the_filter_config():
    filter_cfg = decode(HTTPFault, {"abort": {"http_status": 500, "percentage": ALWAYS}})
    route_fault = {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                   "delay": {"fixed_delay": "3s", "percentage": ALWAYS}}
    t = RouteTable(decode(RouteConfiguration, {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/slow"}, "route": {"cluster": "c"},
         "typed_per_filter_config": {"envoy.filters.http.fault": route_fault}},
        {"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]}))
    slow = FaultConfig(effective_fault_config(filter_cfg, t.match("h", "/slow", Headers())))
    plain = FaultConfig(effective_fault_config(filter_cfg, t.match("h", "/", Headers())))
    rng = random.Random(0)
    assert ask(slow, rng=rng).delay == 3.0 and ask(slow, rng=rng).abort_status is None
    assert ask(plain, rng=rng).abort_status == 500


@pytest.mark.parametrize("percentage, draw, faulted", [
    ({"numerator": 30}, 29, True),
    ({"numerator": 30}, 30, False),  # featureEnabled: draw % denominator < numerator, strictly
    ({"numerator": 1}, 0, True),
    ({"numerator": 0}, 0, False),
    (None, 0, False),  # unset: 0 %
    ({"numerator": 1, "denominator": "TEN_THOUSAND"}, 0, True),
    ({"numerator": 1, "denominator": "TEN_THOUSAND"}, 1, False),
    ({"numerator": 999_999, "denominator": "MILLION"}, 10**9, False),  # the largest draw, 999,999, is not below
    ({"numerator": 100}, 10**9, True),  # 100 % of HUNDRED: the largest draw, 99, is below
])
@pytest.mark.parametrize("kind", ["delay", "abort"])
def test_a_fault_is_applied_when_the_draw_is_below_its_percentage(percentage, draw, faulted, kind):
    spec = {"fixed_delay": "0.5s"} if kind == "delay" else {"http_status": 503}
    if percentage is not None:
        spec["percentage"] = percentage
    d = ask(fault(**{kind: spec}), rng=FixedDraws(draw))
    assert d.faulted is faulted
    assert (d.delay, d.abort_status) == ((0.5 if faulted else 0.0, None) if kind == "delay" else
                                         (0.0, 503 if faulted else None))


@pytest.mark.parametrize("headers, expected", [
    ([("x-envoy-fault-abort-request", "200")], 200),  # Envoy takes 200..599
    ([("x-envoy-fault-abort-request", "599")], 599),
    ([("x-envoy-fault-abort-request", "199")], None),
    ([("x-envoy-fault-abort-request", "600")], None),
    ([("x-envoy-fault-abort-request", " 503 ")], 503),
    ([("x-envoy-fault-abort-request", "²")], None),  # a digit, but not an ASCII one
    ([("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-request", "404")], 503),  # the first only
    ([("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-grpc-request", "14")], 503),
])
def test_a_header_abort_takes_an_http_status_from_200_to_599(headers, expected):
    d = ask(fault(abort={"header_abort": {}, "percentage": ALWAYS}), headers, FixedDraws(0))
    assert (d.abort_status, d.grpc_status) == (expected, None)


@pytest.mark.parametrize("header_percentage, draw, faulted", [
    ("30", 29, True), ("30", 30, False), ("0", 0, False),
    ("90", 49, True), ("90", 50, False),  # never above the configured 50 %
])
def test_the_request_percentage_header_can_only_lower_the_configured_one(header_percentage, draw, faulted):
    fc = fault(delay={"header_delay": {}, "percentage": {"numerator": 50}},
               abort={"header_abort": {}, "percentage": {"numerator": 50}})
    headers = Headers([("x-envoy-fault-delay-request", "100"), ("x-envoy-fault-abort-request", "503"),
                       ("x-envoy-fault-delay-request-percentage", header_percentage),
                       ("x-envoy-fault-abort-request-percentage", header_percentage)])
    d = ask(fc, headers, FixedDraws(draw))
    assert (d.delay, d.abort_status) == ((0.1, 503) if faulted else (0.0, None))


@pytest.mark.parametrize("decision, faulted, flags", [
    (FaultDecision(delay=0.25), True, ("DI",)),
    (FaultDecision(abort_status=503), True, ("FI",)),
    (FaultDecision(grpc_status=14), True, ("FI",)),
    (FaultDecision(delay=0.001, grpc_status=0), True, ("DI", "FI")),
    (FaultDecision(), False, ()),
    (FaultDecision(overflow=True), False, ()),
])
def test_what_a_decision_reports(decision, faulted, flags):
    assert (decision.faulted, decision.response_flags) == (faulted, flags)


def test_header_matchers_see_the_request_line():
    """`headers` matchers on pseudo-headers read the request's method, authority, path and scheme."""
    fc = fault(abort={"http_status": 418, "percentage": ALWAYS},
               headers=[{"name": ":method", "string_match": {"exact": "POST"}},
                        {"name": ":authority", "string_match": {"exact": "api"}},
                        {"name": ":path", "string_match": {"prefix": "/v1"}},
                        {"name": ":scheme", "string_match": {"exact": "http"}}])
    rng = FixedDraws(0)
    assert ask(fc, rng=rng, method="POST", authority="api", path="/v1/x").abort_status == 418
    for other in ({"method": "GET"}, {"authority": "web"}, {"path": "/v2"}, {"scheme": "https"}):
        req = {"method": "POST", "authority": "api", "path": "/v1/x", **other}
        assert not ask(fc, rng=rng, **req).faulted


def test_a_weighted_cluster_config_is_the_most_specific():
    """typed_per_filter_config on the weighted cluster the request went to beats the route's."""
    route_fault = {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                   "delay": {"fixed_delay": "3s", "percentage": ALWAYS}}
    cluster_fault = {**route_fault, "delay": {"fixed_delay": "5s", "percentage": ALWAYS}}
    t = RouteTable(decode(RouteConfiguration, {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "typed_per_filter_config": {"envoy.filters.http.fault": route_fault},
         "route": {"weighted_clusters": {"clusters": [
             {"name": "a", "weight": 1, "typed_per_filter_config": {"envoy.filters.http.fault": cluster_fault}},
             {"name": "b", "weight": 1}]}}}]}]}))
    match = t.match("h", "/", Headers())
    a, b = match.action.weighted_clusters.clusters
    assert effective_fault_config(None, match, a).delay.fixed_delay == 5.0
    assert effective_fault_config(None, match, b).delay.fixed_delay == 3.0
    assert effective_fault_config(None, match).delay.fixed_delay == 3.0
    assert effective_fault_config(None) is None


def test_a_bad_header_matcher_is_refused_with_its_place():
    from pyproxy.config.decode import ConfigError

    with pytest.raises(ConfigError) as e:
        fault(abort={"http_status": 503, "percentage": ALWAYS},
              headers=[{"name": "a", "present_match": True}, {"name": "", "present_match": True}])
    assert e.value.path == "headers[1].name"
