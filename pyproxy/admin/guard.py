"""Who may change the proxy through its admin port (pure: request facts in, a refusal reason or None out).

Envoy's admin interface trusts anyone who can reach it and only asks that mutations (`/quitquitquit`,
`/healthcheck/fail`, `/reset_counters`...) come as POST. A browser on the same machine can still send such a
POST: a "simple" cross-origin request (`Content-Type: text/plain`) needs no CORS preflight, so any web page
could stop the sidecar, and DNS rebinding lets a page reach 127.0.0.1 under a name of its own. pyproxy goes
beyond Envoy here (documented in docs/hardening.md): a state-changing request is refused (403) when it carries
an `Origin` that is not a loopback origin, or a `Host` that is neither loopback nor the admin's own bound
address. Reads (GET/HEAD) are unaffected, so `meshctl proxy-config` and Prometheus keep working from anywhere
the port is reachable, except the live tap (`/tap`): it streams other people's requests (paths, peers, request
ids), so a page rebound onto the admin's address must not read it either; it gets the same Origin/Host checks
as a mutation.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Envoy's admin handlers that change state; they require POST (Envoy answers 405 to other methods)
MUTATING_PATHS = frozenset({"/quitquitquit", "/healthcheck/fail", "/healthcheck/ok", "/reset_counters",
                            "/drain_listeners", "/logging", "/runtime_modify", "/cpuprofiler", "/heapprofiler"})
# reads that stream live traffic: checked like mutations (pyproxy.observe.tap)
SENSITIVE_READ_PATHS = frozenset({"/tap"})


def _host_only(authority: str) -> str:
    """`host[:port]` or `[v6]:port` -> host."""
    authority = authority.strip()
    if authority.startswith("["):
        end = authority.find("]")
        return authority[1:end] if end > 0 else authority
    if authority.count(":") == 1:
        return authority.split(":", 1)[0]
    return authority


def is_loopback_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(method: str, path: str, host: str | None, origin: str | None, bound_address: str) -> tuple[int, str] | None:
    """(status, reason) when the request must be refused, None when it may proceed."""
    if path in MUTATING_PATHS and method != "POST":
        return 405, f"Method {method} not allowed, POST required."
    if method in SAFE_METHODS and path not in SENSITIVE_READ_PATHS:
        return None
    if origin is not None and origin != "null":
        origin_host = urlsplit(origin).hostname or ""
        if not is_loopback_host(origin_host):
            return 403, f"admin: refusing {method} {path} from foreign origin {origin!r}"
    elif origin == "null":
        return 403, f"admin: refusing {method} {path} from an opaque origin"
    h = _host_only(host or "")
    if not (is_loopback_host(h) or (bound_address not in ("", "0.0.0.0", "::") and h == bound_address)):
        return 403, f"admin: refusing {method} {path} for host {host!r} (not loopback nor {bound_address})"
    return None
