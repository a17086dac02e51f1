"""The HTTP filter contract (Envoy: Http::StreamDecoderFilter), in its smallest useful form.

A filter's config is parsed once per config snapshot (`<Name>Config`); a filter object is made per request
(`<Name>Filter`) and sees the request headers in chain order (istiod's order: jwt_authn → rbac → fault → local
rate limit → router). It answers CONTINUE, or STOP when it has answered the request itself
(`stream.send_local_reply`) or will resume it later (`stream.continue_decoding()`, e.g. after a fault delay).
The router is the terminal filter and is not part of this list (`pyproxy.filters.router`).
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from ..http.connection import ActiveStream


class FilterStatus(enum.Enum):
    CONTINUE = 0
    STOP = 1


class HttpFilter:
    """Per-request filter object. Subclasses override `decode_headers` and, if they hold resources, `on_destroy`."""

    __slots__ = ()

    def decode_headers(self, stream: "ActiveStream") -> FilterStatus:
        return FilterStatus.CONTINUE

    def encode_headers(self, stream: "ActiveStream", headers: Any) -> None:
        """The response head is about to be written (upstream or local reply): a filter may edit it."""

    def on_destroy(self) -> None:
        """The stream ended (normally or not): release timers, counters."""


# A filter factory: made once per snapshot from the filter's typed_config; called once per request.
FilterFactory = Callable[[], HttpFilter]
# name -> (typed_config, stats scope, rng) -> FilterFactory
FactoryBuilder = Callable[[Any, Any, Any], FilterFactory]
