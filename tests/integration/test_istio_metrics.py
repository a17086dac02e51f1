"""Istio's standard metrics from two pyproxies wired as sidecars: client app -> A (outbound, reporter source)
-> mTLS -> B (inbound, reporter destination) -> app. Both admin `/stats/prometheus` pages are scraped and
parsed with prometheus_client's parser; every check is on exact counts and the full label set.

The filter config is what the control plane renders (`control.translate.listeners.istio_stats_filter`), the
certificates come from a throwaway mesh CA, the node metadata from each bootstrap's `node`.
"""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from control.translate.listeners import istio_stats_filter
from pyproxy.admin.server import make_app, start_admin
from pyproxy.observe.istio_metrics import LABELS
from pyproxy.tls.secrets import TlsCertificate, ValidationContext
from tests.support.client import RawClient, fetch
from tests.support.pki import TestCA
from tests.support.proxy import bootstrap, cluster, route
from tests.support.tls import downstream_tls, upstream_tls, uri_san, with_chains
from tests.support.traffic import until

SERVER_ID = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
CLIENT_ID = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage"
SERVICE = "reviews.bookinfo.svc.cluster.local"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
ISTIO_META = {"filter_metadata": {"istio": {"services": [
    {"host": SERVICE, "name": "reviews", "namespace": "bookinfo"}]}}}


def node(name: str, app: str, version: str, sa: str) -> dict:
    return {"id": f"sidecar~127.0.0.1~{name}.bookinfo~bookinfo.svc.cluster.local", "cluster": f"{app}.bookinfo",
            "metadata": {"NAME": name, "NAMESPACE": "bookinfo", "SERVICE_ACCOUNT": sa, "CLUSTER_ID": "Kubernetes",
                         "LABELS": {"app": app, "version": version}}}


@pytest.fixture(scope="module")
def pki():
    ca = TestCA("mesh")
    return {"ca": ca, "server": ca.issue(uris=[SERVER_ID]), "client": ca.issue(uris=[CLIENT_ID])}


async def _admin(server, stack):
    runner, port = await start_admin(make_app(server), "127.0.0.1", 0)
    stack.append(runner)
    return port


async def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """{sample name: {label tuple (Istio order, `le` last for buckets): value}} of the istio_* samples."""
    r = await fetch(port, "GET", "/stats/prometheus", host=f"127.0.0.1:{port}")
    assert r.status == 200
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            if s.name.startswith("istio_"):
                key = tuple(s.labels[k] for k in LABELS) + ((s.labels["le"],) if "le" in s.labels else ())
                out.setdefault(s.name, {})[key] = s.value
    return out


def labels(reporter: str, *, code: str, flags: str = "-", security: str, server_seen: bool = True,
           source_principal: str | None = None, destination_principal: str | None = None,
           source_known: bool = True) -> tuple[str, ...]:
    """The expected label tuple for a request from productpage-v1 to reviews-v2 (Istio's order)."""
    src = ("productpage-v1", "productpage", "v1", "bookinfo", CLIENT_ID if source_principal is None
           else source_principal, "productpage", "v1", "Kubernetes") if source_known else \
        ("unknown", "unknown", "latest", "unknown", "unknown", "unknown", "unknown", "unknown")
    dst = ("reviews-v2", "bookinfo", SERVER_ID if destination_principal is None else destination_principal,
           "reviews", "v2") if server_seen else ("unknown", "unknown", destination_principal or "unknown",
                                                  "unknown", "unknown")
    dst_canon = ("reviews", "v2") if server_seen else ("unknown", "latest")
    dst_cluster = "Kubernetes" if server_seen else "unknown"
    return (reporter, src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
            dst[0], dst[1], dst[2], dst[3], dst[4], SERVICE, dst_canon[0], dst_canon[1], "reviews", "bookinfo",
            dst_cluster, "http", code, "", flags, security)


@pytest.fixture
async def mesh(pki, upstream, proxy_factory, tmp_path):
    """B: the reviews-v2 sidecar (inbound, STRICT mTLS); A: the productpage-v1 sidecar (outbound) with routes
    /fault (418 abort), /overflow (a cluster whose circuit breaker admits nothing), /delay/3 (200 ms route
    timeout), everything else to B. Yields (a, b, admin port of a, admin port of b)."""
    ca = pki["ca"]
    b_cfg = bootstrap([cluster(f"inbound|9080||{SERVICE}", [upstream.port], metadata=ISTIO_META)],
                      hcm={"http_filters": [istio_stats_filter(), ROUTER]})
    b_cfg = with_chains(b_cfg, [{"transport_socket": downstream_tls(None, cert_sds="default", ca_sds="ROOTCA",
                                                                    require_client=True)}])
    b_cfg["static_resources"]["listeners"][0]["traffic_direction"] = "INBOUND"
    b_cfg["node"] = node("reviews-v2", "reviews", "v2", "bookinfo-reviews")
    b = await proxy_factory(b_cfg)
    b.server.secrets.set("ROOTCA", ValidationContext(ca.cert_pem))
    b.server.secrets.set("default", TlsCertificate(pki["server"].chain_pem, pki["server"].key_pem))
    ts = upstream_tls(None, None, cert_sds="default", ca_sds="ROOTCA", sans=[uri_san(SERVER_ID)],
                      sni=f"outbound_.9080_._.{SERVICE}", alpn=["istio"])
    name = f"outbound|9080||{SERVICE}"
    clusters = [cluster(name, [b.port], transport_socket=ts, metadata=ISTIO_META),
                cluster("overflow", [b.port], transport_socket=ts, metadata=ISTIO_META,
                        circuit_breakers={"thresholds": [{"max_requests": 0, "max_pending_requests": 0}]})]
    fault = {"envoy.filters.http.fault": {"@type": FAULT, "abort": {
        "http_status": 418, "percentage": {"numerator": 100, "denominator": "HUNDRED"}}}}
    routes = [{**route("/fault", name), "typed_per_filter_config": fault}, route("/overflow", "overflow"),
              route("/delay/3", name, timeout="0.2s"), route("/", name)]
    a_cfg = bootstrap(clusters, routes=routes, hcm={"http_filters": [
        {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT}}, istio_stats_filter(),
        ROUTER]})
    a_cfg["static_resources"]["listeners"][0]["traffic_direction"] = "OUTBOUND"
    a_cfg["node"] = node("productpage-v1", "productpage", "v1", "bookinfo-productpage")
    a = await proxy_factory(a_cfg)
    a.server.secrets.install_workload_secret(type("W", (), {
        "root_bundle_pem": ca.cert_pem, "cert_chain_pem": pki["client"].chain_pem,
        "private_key_pem": pki["client"].key_pem})())
    runners: list = []
    try:
        yield a, b, await _admin(a.server, runners), await _admin(b.server, runners)
    finally:
        for r in runners:
            await r.cleanup()


async def test_a_200_is_counted_once_by_each_reporter_with_istio_labels(mesh, upstream):
    a, b, a_admin, b_admin = mesh
    for _ in range(3):
        r = await a.fetch("GET", "/status/200", host="reviews:9080")
        assert r.status == 200
        # each side strips the peer's metadata before its app sees it
        assert "x-envoy-peer-metadata" not in dict(r.headers)
    for req in upstream.requests:
        assert req.header("x-envoy-peer-metadata") is None and req.header("x-envoy-peer-metadata-id") is None
    client, server = await scrape(a_admin), await scrape(b_admin)
    assert client["istio_requests_total"] == {labels("source", code="200", security="unknown"): 3}
    assert server["istio_requests_total"] == {labels("destination", code="200", security="mutual_tls"): 3}
    for page in (client, server):
        (count,) = page["istio_request_duration_milliseconds_count"].values()
        assert count == 3


async def test_503_uo_and_418_fi_are_reported_by_the_source_only(mesh):
    a, b, a_admin, b_admin = mesh
    assert (await a.fetch("GET", "/overflow", host="reviews:9080")).status == 503
    assert (await a.fetch("GET", "/fault", host="reviews:9080")).status == 418
    assert (await a.fetch("GET", "/fault", host="reviews:9080")).status == 418
    client = await scrape(a_admin)
    # no upstream answered: the destination workload and its principal are unknown, the service is not
    assert client["istio_requests_total"] == {
        labels("source", code="503", flags="UO", security="unknown", server_seen=False,
               source_principal="unknown"): 1,
        labels("source", code="418", flags="FI", security="unknown", server_seen=False,
               source_principal="unknown"): 2,
    }
    assert "istio_requests_total" not in await scrape(b_admin)


async def test_504_ut_on_the_source_and_the_cut_request_on_the_destination(mesh):
    a, b, a_admin, b_admin = mesh
    r = await a.fetch("GET", "/delay/3", host="reviews:9080")
    assert r.status == 504
    client = await scrape(a_admin)
    assert client["istio_requests_total"] == {
        labels("source", code="504", flags="UT", security="unknown", server_seen=False,
               source_principal="unknown"): 1}
    # B sees its client (A) go away while its app is still answering: response code 0, flag DC. B records that
    # when it notices the closed connection, on its own schedule: wait for the record, then scrape
    ext = b.server.stats.extensions
    await until(lambda: "istio" in ext and bool(ext["istio"].series))
    server = await scrape(b_admin)
    assert server["istio_requests_total"] == {
        labels("destination", code="0", flags="DC", security="mutual_tls"): 1}


async def test_histograms_place_a_slow_request_and_known_sizes_in_their_buckets(mesh):
    a, b, a_admin, b_admin = mesh
    body = b"x" * 3000
    r = await a.fetch("POST", "/download/3000?framing=length", host="reviews:9080", body=body)
    assert r.status == 200 and len(r.body) == 3000
    r = await a.fetch("GET", "/delay/1.1", host="reviews:9080")
    assert r.status == 200
    for page, reporter, security in ((await scrape(a_admin), "source", "unknown"),
                                     (await scrape(b_admin), "destination", "mutual_tls")):
        key = labels(reporter, code="200", security=security)
        size_buckets = {le: v for (*lab, le), v in page["istio_request_bytes_bucket"].items() if tuple(lab) == key}
        # the POST: 3000 body bytes + headers; the GET: headers only (well under 1 KiB)
        assert (size_buckets["1000"], size_buckets["2500"], size_buckets["5000"]) == (1, 1, 2)
        resp = {le: v for (*lab, le), v in page["istio_response_bytes_bucket"].items() if tuple(lab) == key}
        assert (resp["1000"], resp["2500"], resp["5000"]) == (1, 1, 2)
        assert page["istio_request_bytes_sum"][key] > 3000
        durations = {le: v for (*lab, le), v in page["istio_request_duration_milliseconds_bucket"].items()
                     if tuple(lab) == key}
        # the delayed request took at least 1100 ms: above the 1000 bucket, the other one below it
        assert durations["1000"] == 1 and durations["+Inf"] == 2
        assert page["istio_request_duration_milliseconds_sum"][key] >= 1100


async def _plaintext_inbound(upstream, proxy_factory):
    """The reviews-v2 sidecar's inbound listener without TLS: (proxy, admin runners to clean up, admin port)."""
    cfg = bootstrap([cluster(f"inbound|9080||{SERVICE}", [upstream.port], metadata=ISTIO_META)],
                    hcm={"http_filters": [istio_stats_filter(), ROUTER]})
    cfg["static_resources"]["listeners"][0]["traffic_direction"] = "INBOUND"
    cfg["node"] = node("reviews-v2", "reviews", "v2", "bookinfo-reviews")
    b = await proxy_factory(cfg)
    runners: list = []
    return b, runners, await _admin(b.server, runners)


async def test_plaintext_inbound_reports_connection_security_none(upstream, proxy_factory):
    """A destination sidecar reached without TLS (PERMISSIVE's plaintext chain): `none`, principals unknown,
    and without the client's metadata the source is unknown too."""
    b, runners, port = await _plaintext_inbound(upstream, proxy_factory)
    try:
        r = await b.fetch("GET", "/status/200", host="reviews:9080")
        assert r.status == 200 and r.header("x-envoy-peer-metadata") is None  # not offered to a non-mesh client
        page = await scrape(port)
        assert page["istio_requests_total"] == {
            labels("destination", code="200", security="none", source_known=False, destination_principal="unknown",
                   ): 1}
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_a_hostile_peer_metadata_header_is_refused_and_the_request_still_reaches_the_app(upstream,
                                                                                                  proxy_factory):
    """A client's x-envoy-peer-metadata holding a protobuf Struct nested 500 deep (deeper than protobuf parses):
    the destination sidecar treats the peer as unknown, forwards the request without the header, and counts it."""
    from tests.unit.test_istio_metrics_logic import nested_struct

    b, runners, port = await _plaintext_inbound(upstream, proxy_factory)
    deep = nested_struct(500)
    try:
        r = await b.fetch("GET", "/status/200", [("x-envoy-peer-metadata", deep)], host="reviews:9080")
        assert r.status == 200
        (req,) = upstream.requests
        assert req.path == "/status/200" and req.header("x-envoy-peer-metadata") is None  # stripped, not passed on
        page = await scrape(port)
        assert page["istio_requests_total"] == {
            labels("destination", code="200", security="none", source_known=False, destination_principal="unknown",
                   ): 1}
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_peer_metadata_dimensions_name_the_other_workload_on_each_side(upstream, proxy_factory):
    """Istio's documented override (Classifying metrics / Customizing metrics): a CLIENT dimension from
    `filter_state.upstream_peer.app` and a SERVER one from `filter_state.downstream_peer.app`, filled from the
    metadata the two sidecars exchange; a request with no peer (a plain client straight to the server sidecar)
    gets `unknown`, and `has()` says whether a peer is there."""
    server_dims = [{"name": "requests_total", "dimensions": {
        "source_x": "filter_state.downstream_peer.app", "peer_ns": "filter_state.downstream_peer.namespace",
        "has_peer": "string(has(filter_state.downstream_peer))",
        "peer_version": "filter_state.downstream_peer.labels['version']"}}]
    client_dims = [{"name": "requests_total", "dimensions": {
        "destination_x": "filter_state.upstream_peer.app", "peer_workload": "filter_state.upstream_peer.workload"}}]
    b_cfg = bootstrap([cluster(f"inbound|9080||{SERVICE}", [upstream.port], metadata=ISTIO_META)],
                      hcm={"http_filters": [istio_stats_filter(server_dims), ROUTER]})
    b_cfg["static_resources"]["listeners"][0]["traffic_direction"] = "INBOUND"
    b_cfg["node"] = node("reviews-v2", "reviews", "v2", "bookinfo-reviews")
    b = await proxy_factory(b_cfg)
    a_cfg = bootstrap([cluster(f"outbound|9080||{SERVICE}", [b.port], metadata=ISTIO_META)],
                      routes=[route("/", f"outbound|9080||{SERVICE}")],
                      hcm={"http_filters": [istio_stats_filter(client_dims), ROUTER]})
    a_cfg["static_resources"]["listeners"][0]["traffic_direction"] = "OUTBOUND"
    a_cfg["node"] = node("productpage-v1", "productpage", "v1", "bookinfo-productpage")
    a = await proxy_factory(a_cfg)
    runners: list = []
    try:
        a_admin, b_admin = await _admin(a.server, runners), await _admin(b.server, runners)
        for _ in range(2):
            assert (await a.fetch("GET", "/status/200", host="reviews:9080")).status == 200
        assert (await b.fetch("GET", "/status/200", host="reviews:9080")).status == 200  # no peer
        pages = {}
        for side, port in (("client", a_admin), ("server", b_admin)):
            r = await fetch(port, "GET", "/stats/prometheus", host=f"127.0.0.1:{port}")
            pages[side] = [s for f in text_string_to_metric_families(r.body.decode()) for s in f.samples
                           if s.name == "istio_requests_total"]
    finally:
        for runner in runners:
            await runner.cleanup()
    client = {(s.labels["destination_x"], s.labels["peer_workload"]): s.value for s in pages["client"]}
    assert client == {("reviews", "reviews-v2"): 2.0}
    server = {(s.labels["source_x"], s.labels["peer_ns"], s.labels["has_peer"], s.labels["peer_version"]): s.value
              for s in pages["server"]}
    assert server == {("productpage", "bookinfo", "true", "v1"): 2.0, ("unknown", "unknown", "false", "unknown"): 1.0}
