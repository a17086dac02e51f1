"""AuthorizationPolicy enforced by a pyproxy over real mTLS: the policy goes through the control plane's
translation (control.translate.authz) into `envoy.filters.http.rbac` filters on an mTLS-only listener, and clients
with certificates from a throwaway mesh CA call it.

The brief's policy: `my-app` is callable by the service account `default/my-app-sa` on `GET|POST /api/*` and by
namespace `monitoring` on `GET /metrics|/health`; plus a DENY on `/admin` to show that path normalisation
(`normalize_path`, as istiod sets it) runs before RBAC: `/api/../admin` is denied by the DENY policy.
"""
from __future__ import annotations

import pytest

from control.istio.load import load_text
from control.translate.authz import build_filters
from tests.support.client import RawClient
from tests.support.pki import TestCA
from tests.support.proxy import bootstrap
from tests.support.tls import client_ctx, downstream_tls, with_chains

POLICIES = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: my-app-authz, namespace: default}
spec:
  selector: {matchLabels: {app: my-app}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/my-app-sa"]}}]
    to: [{operation: {methods: ["GET", "POST"], paths: ["/api/*"]}}]
  - from: [{source: {namespaces: ["monitoring"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/metrics", "/health"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin", "/admin/*"]}}]}]
"""
SERVER_ID = "spiffe://cluster.local/ns/default/sa/my-app"
IDS = {"allowed-sa": "spiffe://cluster.local/ns/default/sa/my-app-sa",
       "other-sa": "spiffe://cluster.local/ns/default/sa/other",
       "monitoring": "spiffe://cluster.local/ns/monitoring/sa/prometheus"}
ALLOW_NONE = "rbac_access_denied_matched_policy[none]"
DENY_ADMIN = "rbac_access_denied_matched_policy[ns[default]-policy[deny-admin]-rule[0]]"


def _expected(who: str, method: str, path: str) -> tuple[int, str]:
    if path == "/admin":
        return 403, DENY_ADMIN
    if who == "allowed-sa" and method in ("GET", "POST") and path == "/api/x":
        return 200, "via_upstream"
    if who == "monitoring" and method == "GET" and path in ("/metrics", "/health"):
        return 200, "via_upstream"
    return 403, ALLOW_NONE


TABLE = [(who, method, path, *_expected(who, method, path))
         for who in IDS for method in ("GET", "POST", "DELETE") for path in ("/api/x", "/metrics", "/health", "/admin")]


@pytest.fixture(scope="module")
def pki():
    ca = TestCA("mesh")
    return {"ca": ca, "server": ca.issue(uris=[SERVER_ID]),
            **{who: ca.issue(uris=[uri]) for who, uri in IDS.items()}}


@pytest.fixture
async def proxy(pki, upstream, proxy_factory, tmp_path):
    result = load_text(POLICIES, "policies.yaml")
    filters = build_filters([r for r in result.resources if r.kind == "AuthorizationPolicy"])
    assert [f["typed_config"]["rules"].get("action", "ALLOW") for f in filters] == ["DENY", "ALLOW"]
    b = bootstrap({"backend": [upstream.port]}, access_log=tmp_path / "access.log",
                  hcm={"stat_prefix": "inbound_0.0.0.0_8080", "normalize_path": True})
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = filters + hcm["http_filters"]
    hcm["access_log"][0]["typed_config"]["log_format"]["json_format"] = {
        "code": "%RESPONSE_CODE%", "details": "%RESPONSE_CODE_DETAILS%", "peer": "%DOWNSTREAM_PEER_URI_SAN%"}
    chain = {"transport_socket": downstream_tls(pki["server"], pki["ca"].cert_pem, require_client=True)}
    return await proxy_factory(with_chains(b, [chain]))


async def _call(proxy, pki, who: str, method: str, path: str):
    c = await RawClient.connect(proxy.port, ssl=client_ctx(pki["ca"].cert_pem, pki[who]))
    try:
        return await c.request(method, path)
    finally:
        c.writer.close()


async def test_brief_policy_table_over_mtls(proxy, pki, upstream):
    got = []
    for who, method, path, _, _ in TABLE:
        r = await _call(proxy, pki, who, method, path)
        got.append((who, method, path, r.status, r.body if r.status == 403 else b""))
    assert got == [(w, m, p, s, b"RBAC: access denied" if s == 403 else b"") for w, m, p, s, _ in TABLE]
    log = proxy.access_log()
    assert [(e["code"], e["details"], e["peer"]) for e in log] == [(s, d, IDS[w]) for w, _, _, s, d in TABLE]
    allowed = sum(1 for row in TABLE if row[3] == 200)
    assert [upstream_req.path for upstream_req in upstream.requests] == \
        [p for _, _, p, s, _ in TABLE if s == 200]
    # DENY filter: everything not /admin passes it; ALLOW filter: sees the rest
    admin = sum(1 for row in TABLE if row[2] == "/admin")
    prefix = "http.inbound_0.0.0.0_8080.rbac."
    assert proxy.stat(prefix + "allowed") == (len(TABLE) - admin) + allowed
    assert proxy.stat(prefix + "denied") == admin + (len(TABLE) - admin - allowed)


NORMALISED = [
    ("/api/../admin", 403, DENY_ADMIN),
    ("/api/./x/../../admin/", 403, DENY_ADMIN),
    ("/metrics/../admin/users", 403, DENY_ADMIN),
    ("/api/../api/x", 200, "via_upstream"),
]


@pytest.mark.parametrize("path,status,details", NORMALISED, ids=[n[0] for n in NORMALISED])
async def test_paths_are_normalised_before_rbac(proxy, pki, path, status, details):
    r = await _call(proxy, pki, "allowed-sa", "GET", path)
    (entry,) = proxy.access_log()
    assert (r.status, entry["details"]) == (status, details)
