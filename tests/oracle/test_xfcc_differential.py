"""Oracle: x-forwarded-client-cert over mTLS, real Envoy against pyproxy (`pyproxy run`, a real subprocess).

One listener terminating mTLS (require_client_certificate) with the HCM's forward_client_cert_details and
set_current_client_cert_details (Subject, URI, DNS: what Istio's inbound sidecar sets); a client with a SPIFFE
certificate sends three requests on one keep-alive connection: a forged XFCC, none, another forged one. What the
upstream receives must be the same byte for byte: pyproxy builds its own element once per TLS session, so this
also shows a client's header never leaks into a later request's value.
"""
from __future__ import annotations

import pytest

from tests.support.client import RawClient
from tests.support.envoy import require_envoy, start_either
from tests.support.pki import TestCA
from tests.support.proxy import bootstrap
from tests.support.tls import client_ctx, downstream_tls, with_chains
from tests.support.upstream import TestUpstream

SERVER_ID = "spiffe://cluster.local/ns/server/sa/httpbin"
CLIENT_ID = "spiffe://cluster.local/ns/client/sa/sleep"
FORGED = ("By=spiffe://evil;URI=spiffe://cluster.local/ns/x/sa/admin", None, "Hash=00;URI=spiffe://y")


@pytest.mark.parametrize("mode", ["APPEND_FORWARD", "SANITIZE_SET", "FORWARD_ONLY"])
async def test_the_upstream_gets_envoys_xfcc(tmp_path, mode):
    require_envoy()
    ca = TestCA("xfcc")
    server = ca.issue(uris=[SERVER_ID])
    client = ca.issue(uris=[CLIENT_ID], dns=["sleep.client"], common_name="sleep")
    seen = {}
    for who in ("envoy", "pyproxy"):
        d = tmp_path / who
        d.mkdir()
        upstream = await TestUpstream().start()
        chain = {"transport_socket": downstream_tls(server, ca.cert_pem, require_client=True),
                 "hcm": {"forward_client_cert_details": mode,
                         "set_current_client_cert_details": {"subject": True, "uri": True, "dns": True}}}
        config = with_chains(bootstrap({"backend": [upstream.port]}), [chain])
        proc, (port,) = await start_either(who, config, d)
        try:
            c = await RawClient.connect(port, ssl=client_ctx(ca.cert_pem, client))
            try:
                for forged in FORGED:
                    headers = [("x-forwarded-client-cert", forged)] if forged else []
                    assert (await c.request("GET", "/", headers=headers)).status == 200
            finally:
                c.writer.close()
            seen[who] = [r.header("x-forwarded-client-cert") for r in upstream.requests]
        finally:
            proc.stop()
            await upstream.close()
    if mode == "FORWARD_ONLY":  # the client's header as sent, none of the proxy's own
        assert seen["envoy"] == list(FORGED)
    else:  # the proxy's element on every request (after a forged one only for APPEND_FORWARD)
        assert all(f"URI={CLIENT_ID}" in v for v in seen["envoy"]), seen["envoy"]
    assert seen["pyproxy"] == seen["envoy"]
