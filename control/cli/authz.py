"""`meshctl authz check NAME`: the authorization policies in force on one proxy, read from its config dump
(istioctl's `x authz check`: ACTION, AuthorizationPolicy, RULES).

What the proxy enforces is what counts, not what the YAML says: the rows come from the
`envoy.filters.http.rbac` filters on the proxy's inbound listener (`virtualInbound`), whose policy names carry
istiod's `ns[<namespace>]-policy[<name>]-rule[<i>]` (control/translate/authz.py). The row logic is pure
(`authz_rows`); fetching the dump reuses `control.cli.proxy`.
"""
from __future__ import annotations

import argparse
import re
from typing import Iterable, TextIO

from control.cli.proxy import (CommandError, EXIT_BAD_INPUT, DEFAULT_CONTROL, dump_listeners, fetch_json,
                               proxy_admin, table)

RBAC = "envoy.filters.http.rbac"
POLICY_NAME = re.compile(r"^ns\[(?P<ns>[^\]]*)\]-policy\[(?P<name>[^\]]*)\]-rule\[(?P<rule>\d+)\]")
HEADER = ("ACTION", "AuthorizationPolicy", "RULES")


def _rbac_filters(listener: dict) -> list[dict]:
    """The RBAC filter configs of the listener's first HTTP chain that has any (the mTLS and plaintext chains of
    one port carry the same ones)."""
    for chain in listener.get("filter_chains") or ():
        for f in chain.get("filters") or ():
            http = (f.get("typed_config") or {}).get("http_filters") or ()
            found = [h.get("typed_config") or {} for h in http if h.get("name") == RBAC]
            if found:
                return found
    return []


def _policies(rules: dict) -> list[tuple[str, int]]:
    """(namespace/name as `name.namespace`, rule count) in the order the proxy evaluates them."""
    counts: dict[str, int] = {}
    for key in (rules.get("policies") or {}):
        m = POLICY_NAME.match(key)
        label = f"{m['name']}.{m['ns']}" if m else key
        counts[label] = counts.get(label, 0) + 1
    return list(counts.items())


def authz_rows(listeners: Iterable[dict]) -> list[list[str]]:
    rows: list[list[str]] = []
    for lis in listeners:
        if lis.get("name") != "virtualInbound" and lis.get("traffic_direction") != "INBOUND":
            continue
        for cfg in _rbac_filters(lis):
            rules = cfg.get("rules")
            if rules is not None:
                action = {"LOG": "AUDIT"}.get(rules.get("action", "ALLOW"), rules.get("action", "ALLOW"))
                rows += [[action, label, str(n)] for label, n in _policies(rules)]
            shadow = cfg.get("shadow_rules")
            if shadow is not None:
                action = {"LOG": "AUDIT"}.get(shadow.get("action", "ALLOW"), shadow.get("action", "ALLOW"))
                rows += [[f"{action} (dry-run)", label, str(n)] for label, n in _policies(shadow)]
    return rows


def cmd_authz_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        base = proxy_admin(args)
        rows = authz_rows(dump_listeners(fetch_json(f"{base}/config_dump")))
    except CommandError as exc:
        print(f"Error: {exc}", file=err)
        return EXIT_BAD_INPUT
    if not rows:
        print("no AuthorizationPolicy applies to this proxy: every request is allowed (Istio's default)", file=out)
        return 0
    print(table(HEADER, rows), end="", file=out)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("authz", help="authorization in force on a proxy (istioctl x authz)")
    sub = p.add_subparsers(dest="authz_command", metavar="COMMAND")
    sub.required = True
    c = sub.add_parser("check", help="the policies a proxy enforces, from its config dump")
    c.add_argument("name", nargs="?", help="the proxy (<pod>[.<namespace>]); not needed with --admin")
    c.add_argument("--control", metavar="URL", help=f"control plane xDS address (default {DEFAULT_CONTROL})")
    c.add_argument("--admin", metavar="HOST:PORT", help="the proxy's admin address (skip the control plane)")
    c.set_defaults(func=_checked)


def _checked(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.name and not args.admin:
        print("Error: name the proxy (meshctl authz check NAME) or give --admin HOST:PORT", file=err)
        return EXIT_BAD_INPUT
    return cmd_authz_check(args, out, err)
