"""`meshctl authz check` (control/cli/authz.py): rows from the RBAC filters a proxy runs, as istioctl's
`x authz check` prints them, and the command against a real pyproxy admin port."""
from __future__ import annotations

import io
import json
from pathlib import Path

from control.cli import authz, meshctl

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "authz-policies" / "expected.json"


def test_rows_from_the_translated_policies_in_evaluation_order():
    listeners = json.loads(GOLDEN.read_text())["listeners"]
    rows = authz.authz_rows(listeners)
    assert rows[0] == ["AUDIT", "audit-posts.default", "1"]
    assert ["DENY", "deny-untrusted.istio-system", "1"] in rows and ["DENY", "deny-admin.default", "2"] in rows
    assert ["ALLOW", "app-full.default", "3"] in rows  # 4 rules; the one with an unknown `when` key is skipped
    assert ["ALLOW (dry-run)", "dry-allow.default", "1"] in rows
    # evaluation order: AUDIT, then DENY, then ALLOW (istiod's filter order)
    actions = [r[0] for r in rows]
    assert actions.index("AUDIT") < actions.index("DENY") < actions.index("ALLOW")


def test_no_inbound_rbac_means_everything_is_allowed():
    assert authz.authz_rows([{"name": "0.0.0.0_15001", "filter_chains": []}]) == []


def rbac_bootstrap(upstream_port: int) -> dict:
    from tests.support.proxy import bootstrap

    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "DENY", "policies": {"ns[default]-policy[deny-admin]-rule[0]": {
            "permissions": [{"url_path": {"path": {"prefix": "/admin"}}}], "principals": [{"any": True}]}}}}}
    b = bootstrap({"b": [upstream_port]}, listener_name="virtualInbound")
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [rbac, *hcm["http_filters"]]
    return b


async def test_authz_check_reads_a_running_proxys_config_dump(upstream, proxy_factory):
    import asyncio

    from pyproxy.admin.server import make_app, start_admin
    from tests.support.proxy import decode_bootstrap

    config = rbac_bootstrap(upstream.port)
    proxy = await proxy_factory(config)
    assert (await proxy.fetch("GET", "/admin/x")).status == 403  # the filter is really in force
    runner, port = await start_admin(make_app(proxy.server, bootstrap=decode_bootstrap(config)), "127.0.0.1", 0)
    try:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(meshctl.main, ["authz", "check", "--admin", f"127.0.0.1:{port}"], out, err)
    finally:
        await runner.cleanup()
    assert code == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["ACTION", "AuthorizationPolicy", "RULES"]
    assert lines[1].split() == ["DENY", "deny-admin.default", "1"]
