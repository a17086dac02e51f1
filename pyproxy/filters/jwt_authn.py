"""`envoy.filters.http.jwt_authn`: verify the request's JWTs against each provider's keys, before RBAC.

Where it sits: on an inbound (or gateway) connection manager, before `envoy.filters.http.rbac` (istiod's
order), so RBAC's `requestPrincipals` / `request.auth.*` matchers read the payload this filter leaves in
dynamic metadata `envoy.filters.http.jwt_authn` under the provider's `payload_in_metadata` (Istio: `payload`).

Per request: the first `rules[]` entry whose `match` fits picks a requirement (none: pass). Each provider the
requirement names extracts its tokens; a provider with a token whose remote JWKS is missing or older than
`cache_duration` (default 10 min) has its keys fetched first (asynchronously; the request waits, as Envoy
waits without `async_fetch`; one fetch is shared by the requests that wait for it). Then the pure verifier
(`jwt_authn_logic`) decides. Allowed: payload to metadata, `forward: false` removes the token's header (or
query parameter),
`forward_payload_header`, `claim_to_headers`, and `clear_route_cache` re-picks the route (JWT claim routing).
Denied: Envoy's local reply, 401 (403 for audiences) with the status text as body, `www-authenticate:
Bearer realm="<original uri>", error="invalid_token"` (no error part when the token is missing) and details
`jwt_authn_access_denied{<text>}`. A CORS preflight passes untouched with `bypass_cors_preflight`.

Verified tokens are cached per provider (Envoy's default JWT cache, 100 tokens, `jwt_authn_logic.VerifiedTokens`):
a hit skips parsing and the signature, and re-checks issuer, time and audiences.
Stats under `http.<stat_prefix>.jwt_authn.<filter stat_prefix>`: `allowed`, `denied`, `cors_preflight_bypassed`,
`jwks_fetch_success`, `jwks_fetch_failed`, `jwt_cache_hit`, `jwt_cache_miss` (Envoy's names). Not implemented:
`requirement_map` / per-route `PerRouteConfig`, `header_in_metadata`,
`failed_status_in_metadata`, JWKS in PEM form, `async_fetch` (accepted; the fetch happens on first use), and
fetching through `http_uri.cluster`: the URI is fetched directly (documented in docs/authz.md).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable


from ..config.datasource import read_data_source
from ..config.model import JwtAuthentication, JwtProvider
from ..http.headers import Headers
from ..http.local_reply import LocalReply
from ..routing.table import RequestView, _compile_path, compile_header_matcher, parse_query
from .base import FilterFactory, FilterStatus, HttpFilter
from .jwt_authn_logic import (Jwks, Jwt, ProviderSpec, Requirement, Status, VerifiedTokens, check_claims, check_config,
                              claim_value, compile_requirement, extract_tokens, normalise_payload, original_uri,
                              parse_jwks, remove_query_param, verify_token, www_authenticate)

if TYPE_CHECKING:  # pragma: no cover
    from ..http.connection import ActiveStream

NAME = "envoy.filters.http.jwt_authn"
DEFAULT_CACHE_DURATION = 600.0  # RemoteJwks.cache_duration: "If not specified, default cache duration is 10 minutes"
log = logging.getLogger("pyproxy.jwt_authn")

Fetch = Callable[[str, float], Awaitable[str]]


MAX_JWKS_BYTES = 1 << 20  # a JWKS is a few KiB; a server sending more is refused rather than buffered


async def http_get(uri: str, timeout: float) -> str:
    """GET a JWKS document over HTTP(S) (aiohttp: off the request path, a few times an hour), at most
    MAX_JWKS_BYTES. aiohttp's failures come back as OSError naming the URI."""
    import aiohttp  # only when a config fetches remote JWKS: a proxy without one does not load aiohttp (9.5 MiB)

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(uri) as resp:
                if resp.status != 200:
                    raise OSError(f"JWKS fetch {uri}: HTTP {resp.status}")
                body = await resp.content.read(MAX_JWKS_BYTES + 1)
                if len(body) > MAX_JWKS_BYTES:
                    raise OSError(f"JWKS fetch {uri}: more than {MAX_JWKS_BYTES} bytes")
                return body.decode("utf-8")
    except aiohttp.ClientError as e:
        raise OSError(f"JWKS fetch {uri}: {type(e).__name__}: {e}") from e


class RemoteJwksCache:
    """One provider's `remote_jwks`: the keys and when they go stale; one shared fetch at a time."""

    def __init__(self, uri: str, timeout: float, cache_duration: float, config: "JwtAuthnFilterConfig"):
        self.uri = uri
        self.timeout = timeout
        self.cache_duration = cache_duration
        self.config = config
        self.jwks: Jwks | None = None
        self.expires_at = 0.0
        self._pending: asyncio.Future | None = None

    def current(self) -> Jwks | None:
        """The keys while fresh; None when they must be fetched (again)."""
        if self.jwks is not None and self.config.monotonic() < self.expires_at:
            return self.jwks
        return None

    def refresh(self) -> asyncio.Future:
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._fetch())
        return self._pending

    async def _fetch(self) -> None:
        cfg = self.config
        try:
            jwks = parse_jwks(await cfg.fetch(self.uri, self.timeout))
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            log.warning("JWKS fetch %s failed: %r", self.uri, e)
            jwks = None
        finally:
            self._pending = None
        if jwks is None or not jwks.keys:
            cfg.jwks_fetch_failed.inc()
            self.jwks = None  # Envoy answers `Jwks remote fetch is failed` until a fetch succeeds
            return
        cfg.jwks_fetch_success.inc()
        self.jwks = jwks
        self.expires_at = cfg.monotonic() + self.cache_duration

    def __repr__(self) -> str:
        return f"RemoteJwksCache({self.uri!r}, {self.jwks!r}, ttl={self.cache_duration}s)"


class ProviderRuntime:
    """A provider compiled once: its checks, its keys (inline, or a remote cache), what success writes."""

    def __init__(self, name: str, p: JwtProvider, config: "JwtAuthnFilterConfig"):
        self.name = name
        self.provider = p
        self.spec = ProviderSpec.of(name, p)
        self.local: Jwks | None = None
        self.remote: RemoteJwksCache | None = None
        if p.remote_jwks is not None:
            uri = p.remote_jwks.http_uri
            duration = p.remote_jwks.cache_duration
            self.remote = RemoteJwksCache(uri.uri, uri.timeout or 1.0,
                                          DEFAULT_CACHE_DURATION if duration is None else duration, config)
        else:
            text = read_data_source(p.local_jwks, f"providers[{name}].local_jwks") if p.local_jwks else "{}"
            self.local = parse_jwks(text)
        self.space_delimited = p.normalize_payload_in_metadata.space_delimited_claims \
            if p.normalize_payload_in_metadata is not None else ()
        self.verified = VerifiedTokens(p.jwt_cache_config.jwt_cache_size if p.jwt_cache_config else 0)

    def jwks(self) -> Jwks | None:
        return self.local if self.remote is None else self.remote.current()

    def apply(self, stream: "ActiveStream", token: Jwt, located: Any) -> None:
        """What a verified token leaves on the request (JwtProvider payload_in_metadata, forward, headers)."""
        p = self.provider
        h = stream.headers
        if p.payload_in_metadata:
            stream.info.set_dynamic_metadata(NAME, {
                p.payload_in_metadata: normalise_payload(token.payload, self.space_delimited)})
        if not p.forward and located.kind == "header":
            h.remove(located.name)
        elif not p.forward and located.kind == "param":
            stream.path = remove_query_param(stream.path, located.name)
        if p.forward_payload_header:
            b64 = token.payload_b64.rstrip("=")
            h.set(p.forward_payload_header, b64 + "=" * (-len(b64) % 4) if p.pad_forward_payload_header else b64)
        for c in p.claim_to_headers:
            value = claim_value(token.payload, c.claim_name)
            if value is not None:
                h.set(c.header_name, value)


class JwtAuthnFilterConfig:
    """Parsed once per snapshot: providers, rules, counters. `clock` (epoch) and `monotonic` are injected."""

    def __init__(self, cfg: JwtAuthentication, stats: Any, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, fetch: Fetch = http_get):
        self.cfg = cfg
        self.clock = clock
        self.monotonic = monotonic
        self.fetch = fetch
        st = stats.scope(f"jwt_authn.{cfg.stat_prefix}")
        self.allowed = st.counter("allowed")
        self.denied = st.counter("denied")
        self.cors_preflight_bypassed = st.counter("cors_preflight_bypassed")
        self.jwks_fetch_success = st.counter("jwks_fetch_success")
        self.jwks_fetch_failed = st.counter("jwks_fetch_failed")
        self.jwt_cache_hit = st.counter("jwt_cache_hit")
        self.jwt_cache_miss = st.counter("jwt_cache_miss")
        providers = dict(cfg.providers or {})
        self.providers = {name: ProviderRuntime(name, p, self) for name, p in sorted(providers.items())}
        check_config(cfg)
        rules = []
        for i, rule in enumerate(cfg.rules):
            path_ok, _ = _compile_path(rule.match, f"rules[{i}].match")
            checks = tuple(compile_header_matcher(hm, f"rules[{i}].match.headers[{j}]")
                           for j, hm in enumerate(rule.match.headers))
            req = compile_requirement(rule.requires, providers, f"rules[{i}].requires")
            rules.append((path_ok, checks, req, tuple(sorted(req.providers()))))
        self.rules = tuple(rules)
        self.clear_route_cache = any(p.clear_route_cache for p in providers.values())

    def requirement_for(self, view: RequestView) -> tuple[Requirement, tuple[str, ...]] | None:
        """The first matching rule's requirement and the providers it names."""
        for path_ok, checks, req, names in self.rules:
            if path_ok(view) and all(c(view) for c in checks):
                return req, names
        return None

    def __repr__(self) -> str:
        return f"JwtAuthnFilterConfig(providers={list(self.providers)}, rules={len(self.rules)})"


def _is_cors_preflight(stream: "ActiveStream") -> bool:
    h = stream.headers
    return stream.method == "OPTIONS" and bool(h.get("origin")) and bool(h.get("access-control-request-method"))


class JwtAuthnFilter(HttpFilter):
    __slots__ = ("config", "stream", "requirement", "tokens")

    def __init__(self, config: JwtAuthnFilterConfig):
        self.config = config
        self.stream: "ActiveStream | None" = None
        self.requirement: Requirement | None = None
        self.tokens: dict[str, list] = {}

    def decode_headers(self, stream: "ActiveStream") -> FilterStatus:
        config = self.config
        if config.cfg.bypass_cors_preflight and _is_cors_preflight(stream):
            config.cors_preflight_bypassed.inc()
            return FilterStatus.CONTINUE
        view = RequestView(stream.headers, stream.info.authority or "", stream.path, stream.method,
                           stream.info.scheme or "http")
        found = config.requirement_for(view)
        if found is None:
            config.allowed.inc()
            return FilterStatus.CONTINUE
        self.requirement, names = found
        query = parse_query(stream.path) if "?" in stream.path else {}
        headers = stream.headers
        for name in names:
            self.tokens[name] = extract_tokens(config.providers[name].spec.locations, headers.get_all, query)
        stale = [config.providers[n].remote for n, toks in self.tokens.items()
                 if toks and config.providers[n].remote is not None and config.providers[n].jwks() is None]
        if stale:
            self.stream = stream
            fut = asyncio.gather(*(cache.refresh() for cache in stale))  # type: ignore[union-attr]
            fut.add_done_callback(self._keys_ready)
            return FilterStatus.STOP
        return self._decide(stream)

    def _keys_ready(self, fut: asyncio.Future) -> None:
        stream = self.stream
        self.stream = None
        if stream is None or stream.response_complete:
            return
        if self._decide(stream) is FilterStatus.CONTINUE:
            stream.continue_decoding()

    def _decide(self, stream: "ActiveStream") -> FilterStatus:
        config = self.config
        now = config.clock()
        results: dict[tuple[str, Any], tuple[Status, Any, Any]] = {}

        def check(name: str, audiences: tuple[str, ...] | None) -> tuple[Status, Any]:
            key = (name, audiences)
            found = results.get(key)
            if found is None:
                found = self._check_provider(config.providers[name], audiences, now)
                results[key] = found
            return found[0], found[1]

        assert self.requirement is not None
        status = self.requirement.evaluate(check)
        if status is not Status.OK:
            config.denied.inc()
            info = stream.info
            uri = original_uri(info.scheme or "http", info.authority or "", stream.path)
            extra = Headers([("www-authenticate", www_authenticate(status, uri))])
            stream.send_local_reply(LocalReply(status.http_status, status.value, status.details), extra_headers=extra)
            return FilterStatus.STOP
        config.allowed.inc()
        for (name, _), (s, token, located) in results.items():
            if s is Status.OK and token is not None:
                config.providers[name].apply(stream, token, located)
        if config.clear_route_cache:
            stream.clear_route_cache()
        return FilterStatus.CONTINUE

    def _check_provider(self, provider: ProviderRuntime, audiences: tuple[str, ...] | None,
                        now: float) -> tuple[Status, Any, Any]:
        """Every token at the provider's locations must verify (authenticator.cc); none -> JwtMissed."""
        tokens = self.tokens.get(provider.name) or []
        if not tokens:
            return Status.JwtMissed, None, None
        jwks = provider.jwks()
        result: tuple[Status, Any, Any] = (Status.JwtMissed, None, None)
        spec, config = provider.spec, self.config
        for text, located in tokens:
            if jwks is None:  # a remote fetch that failed
                return Status.JwksFetchFail, None, None
            token = provider.verified.get(text, jwks)
            if token is not None:  # signature known good: only the claims that depend on now / the requirement
                config.jwt_cache_hit.inc()
                status = check_claims(token, spec.issuer, spec.audiences if audiences is None else audiences, now,
                                      spec.clock_skew)
            else:
                config.jwt_cache_miss.inc()
                status, token = verify_token(spec, text, jwks, now, audiences)
                if status is Status.OK:
                    provider.verified.put(text, jwks, token)
            if status is not Status.OK:
                return status, None, None
            result = (status, token, located)
        return result

    def on_destroy(self) -> None:
        self.stream = None


def build_factory(typed_config: Any, stats: Any, rng: Any) -> FilterFactory:
    config = JwtAuthnFilterConfig(typed_config if typed_config is not None else JwtAuthentication(), stats)
    return lambda: JwtAuthnFilter(config)


__all__ = ["NAME", "JwtAuthnFilterConfig", "JwtAuthnFilter", "RemoteJwksCache", "build_factory", "http_get"]
