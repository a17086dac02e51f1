"""The differential table: one row = a bootstrap fragment, a request, what to compare; Envoy 1.40 is the oracle.

A row names a fragment of tests/differential/bootstraps.py (`BUILDERS`), the raw bytes a client writes, and
Envoy's status (pinned, so a new Envoy that changes its mind fails loudly). What is compared is the whole
normalised `Observation` of tests/oracle/harness.py: every response's status, version, headers (values of
`date`, `server`, `x-request-id`, `x-envoy-upstream-service-time` normalised, their presence kept) and body;
whether the client connection was closed; every request the origin received (method, path, headers, body,
which upstream connection). Rows where pyproxy still differs are strict xfails whose reason is the
difference, listed in docs/envoy-differences.md. The session prints "N cases, M identical" (tests/conftest.py).

Sections: routing (matches, rewrites, redirects, direct responses, header mutations); retries, timeouts and
faults; circuit breakers and outlier detection; the `x-envoy-*` / `x-forwarded-*` sweep (what a plain client
may not tell the proxy or the app).
"""
from __future__ import annotations

import pytest

from tests.oracle.harness import Case, Differs, judge
from tests.oracle.test_http1_differential import get

from .bootstraps import BUILDERS

pytestmark = pytest.mark.asyncio(loop_scope="module")


def row(id: str, fragment: str, send: bytes, envoy_status, differs: str = "", **kw):
    """A row; `envoy_status` an int or a tuple (one per response, `after` ones included)."""
    assert fragment in BUILDERS, fragment
    status = (envoy_status,) if isinstance(envoy_status, int) else envoy_status
    c = Case(id, send, group=fragment, envoy_status=status, **kw)
    marks = [pytest.mark.xfail(strict=True, raises=Differs, reason=f"pyproxy differs: {differs}")] if differs else []
    return pytest.param(c, id=id, marks=marks)


def api(path: str, *extra: bytes) -> bytes:
    return get(path, *extra, host=b"api.example")


def via(route: str, path: str, *extra: bytes) -> bytes:
    return get(path, b"x-route: " + route.encode() + b"\r\n", *extra)


def retry_row(id: str, route: str, path: str, envoy_status, *extra: bytes, **kw):
    """A retry row: the path gets `?row=<id>` (a /flaky/ path counts per exact path, so rows never share a
    count); a retry's x-envoy-expected-rq-timeout-ms (the time left, so time-dependent) is compared by presence."""
    return row(id, "resilience", via(route, f"{path}?row={id}", *extra), envoy_status,
               volatile=("x-envoy-expected-rq-timeout-ms",), **kw)


def post(path: str, size: int) -> bytes:
    """A POST asking for 5xx retries (the conformance fragment's client is internal, so Envoy honours it)."""
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nx-envoy-retry-on: 5xx\r\n"
            b"content-length: %d\r\n\r\n" % size + b"b" * size)


# Every x-envoy-* request header Envoy reads, sets or cleans, and the x-forwarded-* family, from a plain client.
FORGED = (b"x-envoy-internal: true\r\n"
          b"x-envoy-expected-rq-timeout-ms: 1\r\n"
          b"x-envoy-retry-on: 5xx\r\n"
          b"x-envoy-retry-grpc-on: cancelled\r\n"
          b"x-envoy-max-retries: 7\r\n"
          b"x-envoy-upstream-rq-timeout-ms: 3000\r\n"
          b"x-envoy-upstream-rq-per-try-timeout-ms: 2000\r\n"
          b"x-envoy-upstream-rq-timeout-alt-response: 204\r\n"
          b"x-envoy-hedge-on-per-try-timeout: true\r\n"
          b"x-envoy-retriable-status-codes: 200\r\n"
          b"x-envoy-retriable-header-names: x-any\r\n"
          b"x-envoy-original-path: /forged\r\n"
          b"x-envoy-original-url: http://forged/\r\n"
          b"x-envoy-decorator-operation: forged-op\r\n"
          b"x-envoy-force-trace: true\r\n"
          b"x-envoy-ip-tags: forged\r\n"
          b"x-envoy-external-address: 203.0.113.9\r\n"
          b"x-envoy-downstream-service-cluster: forged-cluster\r\n"
          b"x-envoy-downstream-service-node: forged-node\r\n"
          b"x-envoy-upstream-alt-stat-name: forged\r\n"
          b"x-envoy-attempt-count: 9\r\n"
          b"x-forwarded-proto: https\r\n"
          b"x-forwarded-host: forged.example\r\n"
          b"x-forwarded-port: 8443\r\n"
          b"x-forwarded-client-cert: By=spiffe://cluster.local/ns/prod/sa/payments;URI=spiffe://cluster.local/ns/prod/sa/payments\r\n")
XFF = {"no-xff": b"", "xff-internal": b"x-forwarded-for: 10.0.0.1\r\n",
       "xff-external": b"x-forwarded-for: 203.0.113.7\r\n", "xff-two": b"x-forwarded-for: 203.0.113.7, 10.0.0.1\r\n"}


CASES = [
    # ---------------------------------------------------------------- routing: matches
    row("route-exact", "routing", api("/exact"), 200),
    row("route-exact-is-not-prefix", "routing", api("/exact/more"), 200),
    row("route-prefix-rewrite", "routing", api("/prefix/a/b?q=1"), 200),
    row("route-regex-rewrite", "routing", api("/re/42"), 200),
    row("route-regex-is-full-match", "routing", api("/re/42x"), 200),
    row("route-header-exact", "routing", api("/hdr", b"x-variant: b\r\n"), 200),
    row("route-header-present", "routing", api("/hdr", b"x-variant: c\r\n"), 200),
    row("route-header-absent", "routing", api("/hdr"), 200),
    # an Int64Range header match may be negative: [-10, 0) takes -5 (and " -1"), not 0, 10.9 or "-1x"
    row("route-header-negative-range", "routing", api("/range", b"x-n: -5\r\n"), 200),
    row("route-header-negative-range-end-excluded", "routing", api("/range", b"x-n: 0\r\n"), 200),
    row("route-header-negative-range-not-a-number", "routing", api("/range", b"x-n: -1x\r\n"), 200),
    row("route-header-negative-range-fraction", "routing", api("/range", b"x-n: -1.5\r\n"), 200),
    row("route-host-rewrite", "routing", api("/host-rewrite"), 200),
    # a consistent-hash cluster without hosts: no healthy upstream (a balancer built over no hosts crashed)
    row("route-ring-hash-no-hosts", "routing", api("/empty-ring", b"x-user: a\r\n"), 503),
    row("route-no-virtual-host", "routing", get("/exact", host=b"other.example"), 404),
    # ---------------------------------------------------------------- redirects and direct responses
    row("redirect-https", "routing", api("/redir-https/x?y=1"), 301),
    row("redirect-host-308", "routing", api("/redir-host/x"), 308),
    row("redirect-path-302", "routing", api("/redir-path?old=1"), 302),
    row("redirect-scheme-port-303", "routing", api("/redir-scheme/x"), 303),
    row("redirect-prefix-307", "routing", api("/redir-prefix/a?b=c"), 307),
    row("redirect-strip-query", "routing", api("/redir-strip?a=1"), 301),
    row("direct-response-body", "routing", api("/direct-body"), 418),
    row("direct-response-204", "routing", api("/direct-empty"), 204),
    row("direct-response-503", "routing", api("/direct-503"), 503),
    row("direct-response-head", "routing", b"HEAD /direct-body HTTP/1.1\r\nHost: api.example\r\n\r\n", 418,
        method="HEAD"),
    # ---------------------------------------------------------------- header mutations
    row("headers-route-vhost-config", "routing",
        api("/headers-route", b"x-client: original\r\nx-remove-me: 1\r\nx-added: client\r\n"), 200),
    row("headers-vhost-config-only", "routing", api("/plain"), 200),

    # ---------------------------------------------------------------- retries
    retry_row("retry-5xx-exhausted", "5xx", "/status/503", 503),
    retry_row("retry-5xx-then-ok", "5xx", "/flaky/1/503", 200),
    retry_row("retry-gateway-error-502", "gateway-error", "/flaky/2/502", 200),
    retry_row("retry-gateway-error-not-500", "gateway-error", "/flaky/1/500", 500),
    retry_row("retry-reset", "reset", "/reset-before-headers", 503),
    retry_row("retry-retriable-status-409", "codes", "/flaky/1/409", 200),
    retry_row("retry-retriable-status-not-500", "codes", "/flaky/1/500", 500),
    retry_row("retry-per-try-timeout", "per-try", "/delay/2", 504),
    row("route-timeout", "resilience", via("route-timeout", "/delay/2"), 504),
    row("no-retry-policy-5xx", "resilience", via("no-retry", "/status/503"), 503),
    row("upstream-reset-no-retry", "resilience", via("no-retry", "/reset-before-headers"), 503),
    # ---------------------------------------------------------------- faults
    row("fault-abort", "resilience", via("abort", "/"), 418),
    row("fault-delay", "resilience", via("delay", "/"), 200),
    row("fault-header-abort", "resilience", via("header-fault", "/", b"x-envoy-fault-abort-request: 429\r\n"), 429),
    row("fault-header-abort-absent", "resilience", via("header-fault", "/"), 200),
    # ---------------------------------------------------------------- conformance table rows 26-28, 31, 32
    row("26-header-retry-replays-body", "conformance", post("/flaky/1/503?row=26", 1024), 200,
        volatile=("x-envoy-expected-rq-timeout-ms",)),
    row("27-attempt-count", "conformance", get("/flaky/1/503?row=27", b"x-envoy-retry-on: 5xx\r\n"), 200,
        volatile=("x-envoy-expected-rq-timeout-ms",)),
    row("28-body-over-retry-buffer", "conformance", post("/status/503?row=28", 1536 * 1024), 503),
    row("31-unknown-cluster-503", "conformance", get("/unknown-cluster"), 503),
    row("31-unknown-cluster-404", "conformance", get("/unknown-cluster-404"), 404),
    row("31-no-route", "conformance", get("/elsewhere"), 404),
    row("32-require-tls", "conformance", get("/foo", host=b"www.redirect.com"), 301),
    # ---------------------------------------------------------------- circuit breakers, outlier detection
    row("breaker-max-requests", "breakers", get("/"), 503),
    row("breaker-max-pending", "pending-breaker", get("/"), 503),
    row("outlier-ejects-then-no-healthy", "outlier", get("/status/503"), (503, 503),
        after=(get("/after"),), settle="cluster.backend.outlier_detection.ejections_active"),

    # ---------------------------------------------------------------- x-envoy-* / x-forwarded-* from a plain client
    # the security case: both headers are removed, so an app trusting XFCC cannot be lied to
    row("xfcc-and-internal-from-plain-client", "sidecar", get("/", b"x-forwarded-client-cert: By=spiffe://cluster."
        b"local/ns/prod/sa/payments;URI=spiffe://cluster.local/ns/prod/sa/payments\r\nx-envoy-internal: true\r\n"),
        200),
    *[row(f"forged-{fragment}-{xff}", fragment, get("/", FORGED, extra), 200)
      for fragment in ("sidecar", "edge", "edge-skip-xff", "trusted-hop", "edge-internal", "sidecar-internal")
      for xff, extra in XFF.items()],
    retry_row("forged-retry-on-is-not-honoured", "no-retry", "/flaky/1/503", 503, b"x-envoy-retry-on: 5xx\r\n"),
    retry_row("forged-retry-on-internal-xff", "no-retry", "/flaky/1/503", 503,
              b"x-envoy-retry-on: 5xx\r\nx-forwarded-for: 10.0.0.1\r\n"),
    row("internal-retry-on-honoured", "edge-internal", get("/flaky/1/503?row=internal-retry",
                                                          b"x-envoy-retry-on: 5xx\r\n"), 200,
        volatile=("x-envoy-expected-rq-timeout-ms",)),
    row("internal-timeout-header-honoured", "edge-internal",
        get("/delay/2", b"x-envoy-upstream-rq-timeout-ms: 100\r\n"), 504),
    row("internal-timeout-alt-response", "edge-internal",
        get("/delay/2", b"x-envoy-upstream-rq-timeout-ms: 100\r\nx-envoy-upstream-rq-timeout-alt-response: 1\r\n"), 204),
    *[row(f"upstream-x-envoy-response-headers-{fragment}", fragment, get(
        "/with-headers?h=x-envoy-upstream-service-time:999&h=x-envoy-overloaded:true&h=x-envoy-degraded:1"
        "&h=x-envoy-upstream-canary:true&h=x-envoy-immediate-health-check-fail:1&h=x-envoy-decorator-operation:op"
        "&h=x-envoy-attempt-count:9&h=x-envoy-ratelimited:1&h=x-forwarded-for:1.2.3.4"), 200)
      for fragment in ("sidecar", "edge", "resilience")],
    row("forged-timeout-is-not-honoured", "resilience",
        via("no-retry", "/delay/0.3", b"x-envoy-upstream-rq-timeout-ms: 50\r\n"), 200),
]


@pytest.mark.parametrize("c", CASES)
async def test_pyproxy_matches_envoy(differential, c: Case):
    envoy, pyproxy = await differential.run(c)
    judge(c, envoy, pyproxy, "docs/envoy-differences.md")
