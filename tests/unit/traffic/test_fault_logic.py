"""Fault injection decisions: Envoy's fixed and header-driven delays and aborts, percentages, gates, per-route
override."""
from __future__ import annotations

import random

import pytest

from pyproxy.config.decode import decode
from pyproxy.config.model import HTTPFault, RouteConfiguration
from pyproxy.filters.fault_logic import FaultConfig, effective_fault_config
from pyproxy.http.headers import Headers
from pyproxy.routing.table import RouteTable

ALWAYS = {"numerator": 100}


def fault(**cfg) -> FaultConfig:
    return FaultConfig(decode(HTTPFault, cfg))


def run(fc, headers=(), cluster="c", active=0, n=1, seed=0):
    rng = random.Random(seed)
    return [fc.decide(Headers(headers), cluster, rng, active) for _ in range(n)]


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
    assert slow.decide(Headers(), "c", rng).delay == 3.0 and slow.decide(Headers(), "c", rng).abort_status is None
    assert plain.decide(Headers(), "c", rng).abort_status == 500
