"""`envoy.filters.http.cors`: CORS preflights answered by the proxy, CORS response headers added.

The policy is per route (`typed_per_filter_config["envoy.filters.http.cors"]`, a CorsPolicy; most specific of
route / virtual host), which is where istiod puts a VirtualService `corsPolicy`. Envoy's behaviour:
- no `origin` header, or no policy, or the origin not allowed: the filter does nothing;
- a preflight (OPTIONS with `origin` and `access-control-request-method`) from an allowed origin is answered
  200 here with access-control-allow-origin/-methods/-headers/-max-age (and -credentials);
- any other request from an allowed origin gets access-control-allow-origin (and -credentials,
  -expose-headers) on its response.
Matching origins is pure (`origin_allowed`); the filter is the shell.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config.model import CorsPolicy
from ..http.headers import Headers
from ..http.local_reply import LocalReply
from ..routing.table import compile_string_matcher
from .base import FilterFactory, FilterStatus, HttpFilter

if TYPE_CHECKING:  # pragma: no cover
    from ..http.connection import ActiveStream

NAME = "envoy.filters.http.cors"
_MATCHERS: dict[int, tuple[Any, tuple]] = {}


def origin_allowed(policy: CorsPolicy, origin: str) -> bool:
    entry = _MATCHERS.get(id(policy))
    if entry is None or entry[0] is not policy:
        if len(_MATCHERS) > 4096:
            _MATCHERS.clear()
        entry = _MATCHERS[id(policy)] = (policy, tuple(compile_string_matcher(m) for m in
                                                        policy.allow_origin_string_match))
    return any(match(origin) for match in entry[1])


def preflight_headers(policy: CorsPolicy, origin: str) -> Headers:
    h = Headers([("access-control-allow-origin", origin)])
    if policy.allow_credentials:
        h.add("access-control-allow-credentials", "true")
    if policy.allow_methods:
        h.add("access-control-allow-methods", policy.allow_methods)
    if policy.allow_headers:
        h.add("access-control-allow-headers", policy.allow_headers)
    if policy.max_age:
        h.add("access-control-max-age", policy.max_age)
    return h


class CorsFilter(HttpFilter):
    __slots__ = ("origin", "policy")

    def __init__(self) -> None:
        self.origin: str | None = None
        self.policy: CorsPolicy | None = None

    def decode_headers(self, stream: "ActiveStream") -> FilterStatus:
        origin = stream.headers.get_first("origin")
        m = stream.route_match
        if not origin or m is None:
            return FilterStatus.CONTINUE
        policy = m.per_filter_config(NAME, stream.cluster_weight)
        if not isinstance(policy, CorsPolicy) or not origin_allowed(policy, origin):
            return FilterStatus.CONTINUE
        if policy.filter_enabled is not None and policy.filter_enabled.default_value is not None \
                and policy.filter_enabled.default_value.numerator == 0:
            return FilterStatus.CONTINUE
        if stream.method == "OPTIONS" and stream.headers.get_first("access-control-request-method"):
            stream.send_local_reply(LocalReply(200, "", "cors_response"),
                                    extra_headers=preflight_headers(policy, origin))
            return FilterStatus.STOP
        self.origin = origin
        self.policy = policy
        return FilterStatus.CONTINUE

    def encode_headers(self, stream: "ActiveStream", headers: Headers) -> None:
        if self.origin is None or self.policy is None:
            return
        headers.set("access-control-allow-origin", self.origin)
        if self.policy.allow_credentials:
            headers.set("access-control-allow-credentials", "true")
        if self.policy.expose_headers:
            headers.set("access-control-expose-headers", self.policy.expose_headers)


def build_factory(typed_config: Any, stats: Any, rng: Any) -> FilterFactory:
    return CorsFilter
