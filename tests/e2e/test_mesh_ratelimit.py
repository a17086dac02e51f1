"""Local rate limiting served live (docs/ratelimit.md): the control plane reads an EnvoyFilter written as Istio's
docs write it (the filter inserted into the inbound chain with only a stat_prefix, a TypedStruct bucket MERGEd
into the routes of `inbound|http|9080`), pushes it to the reviews sidecar, and that sidecar answers the fourth
request of a 3-token bucket with 429 `local_rate_limited` (flag RL: the `enforced` counter), through the
productpage sidecar to the app's client; editing the file then gives it a new, bigger bucket live. Processes: tests/support/mesh.py."""
from __future__ import annotations

import pytest

from tests.support.mesh import Mesh, bookinfo_config, call, client_session, poll

pytestmark = pytest.mark.timeout(60)

LRL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
ALL = {"runtime_key": "k", "default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def rate_limit_filter(app: str, max_tokens: int) -> dict:
    def typed(value: dict) -> dict:
        return {"@type": TYPED_STRUCT, "type_url": LRL, "value": value}
    bucket = {"stat_prefix": "http_local_rate_limiter", "filter_enabled": ALL, "filter_enforced": ALL,
              "token_bucket": {"max_tokens": max_tokens, "tokens_per_fill": max_tokens, "fill_interval": "3600s"},
              "response_headers_to_add": [{"append": False, "header": {"key": "x-local-rate-limit",
                                                                       "value": "true"}}]}
    hcm = {"filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager"}}}
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": "filter-local-ratelimit-svc", "namespace": "istio-system"},
            "spec": {"workloadSelector": {"labels": {"app": app}}, "configPatches": [
                {"applyTo": "HTTP_FILTER", "match": {"context": "SIDECAR_INBOUND", "listener": hcm},
                 "patch": {"operation": "INSERT_BEFORE", "value": {
                     "name": "envoy.filters.http.local_ratelimit",
                     "typed_config": typed({"stat_prefix": "http_local_rate_limiter"})}}},
                {"applyTo": "HTTP_ROUTE", "match": {"context": "SIDECAR_INBOUND", "routeConfiguration": {
                    "vhost": {"name": "inbound|http|9080", "route": {"action": "ANY"}}}},
                 "patch": {"operation": "MERGE", "value": {
                     "typed_per_filter_config": {"envoy.filters.http.local_ratelimit": typed(bucket)}}}}]}}


async def test_envoy_filter_rate_limit_served_to_a_sidecar(mesh: Mesh):
    bookinfo_config(mesh, {"v1": 100})
    mesh.write("ratelimit.yaml", rate_limit_filter("reviews", 3))
    await mesh.control_plane()
    client, server = await mesh.productpage_and_reviews()
    async with client_session() as session:
        answers = [await call(session, client.outbound_port, "reviews:9080", "/anything") for _ in range(5)]
    assert [a.status for a in answers] == [200, 200, 200, 429, 429], (answers, mesh.logs())
    assert [a.error for a in answers[3:]] == ["local_rate_limited"] * 2
    stats = await server.stats()
    prefix = "http_local_rate_limiter.http_local_rate_limit."
    assert {k: stats.get(prefix + k) for k in ("enabled", "ok", "rate_limited", "enforced")} == \
        {"enabled": 5, "ok": 3, "rate_limited": 2, "enforced": 2}
    # the productpage sidecar (not selected) limits nothing
    assert not any("http_local_rate_limit" in k for k in await client.stats())
    # editing the EnvoyFilter file is pushed live: a bigger bucket (a new one, full) lets requests through
    mesh.write("ratelimit.yaml", rate_limit_filter("reviews", 10))

    async def passes() -> bool:
        async with client_session() as session:
            return (await call(session, client.outbound_port, "reviews:9080", "/anything")).status == 200
    await poll("reviews answers 200 again after the EnvoyFilter edit", passes, timeout=20, interval=0.1,
               detail=mesh.logs)
