"""Route decorators (span names) as istiod writes them: getRouteOperation and telemetry.TraceOperation."""
from __future__ import annotations

import pytest

from control.translate.routes import route_operation, trace_operation

ONE = "outbound|9080|v1|reviews.default.svc.cluster.local"


@pytest.mark.parametrize("route, want", [
    ({"match": {"prefix": "/"}, "route": {"cluster": ONE}}, "reviews.default.svc.cluster.local:9080/*"),
    ({"match": {"prefix": "/api"}, "route": {"cluster": ONE}}, "reviews.default.svc.cluster.local:9080/api*"),
    ({"match": {"path": "/login"}, "route": {"cluster": ONE}}, "reviews.default.svc.cluster.local:9080/login"),
    ({"match": {"safe_regex": {"regex": "/v[0-9]+"}}, "route": {"cluster": ONE}},
     "reviews.default.svc.cluster.local:9080/v[0-9]+"),
    ({"match": {"headers": []}, "route": {"cluster": ONE}}, "reviews.default.svc.cluster.local:9080/*"),
    # several clusters (weights), a redirect, a direct response: the VirtualService's name and the listener port
    ({"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": []}}}, "reviews-vs:8080/*"),
    ({"match": {"path": "/old"}, "redirect": {"path_redirect": "/new"}}, "reviews-vs:8080/old"),
    ({"match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster"}}, "reviews-vs:8080/*"),
    ({"match": {"prefix": "/"}, "route": {"cluster": "outbound|http|v1|x"}}, "reviews-vs:8080/*"),
])
def test_route_operation_names_the_one_service_else_the_virtual_service(route, want):
    assert route_operation(route, "reviews-vs", 8080) == want


def test_trace_operation_is_host_port_and_everything():
    assert trace_operation("ratings.default.svc.cluster.local", 9080) == "ratings.default.svc.cluster.local:9080/*"
