"""`DirectSSLObject`: the TLS object of a pyproxy connection, with no Python frame between uvloop and OpenSSL.

uvloop's (and asyncio's) TLS transport runs OpenSSL over memory BIOs through an `ssl.SSLObject`, made by
`SSLContext.wrap_bio` from the context's `sslobject_class`. The standard `ssl.SSLObject` is a pure-Python
wrapper: its `read`, `write` and `pending` only forward to the C object in `self._sslobj`. The transport calls
them several times per TLS record (`pending()` around each `read()`, and `read()` until SSLWantReadError), so
each record ran three or four interpreted frames, and each WantRead unwound through one: under wrk, 8 % of a
compiled client sidecar's CPU (`perf record --call-graph dwarf`, the interpreted frames under uvloop's
`SSLProtocol._do_read` and `_do_write`).

`DirectSSLObject` binds those three names, per object, to the C methods themselves: same arguments (uvloop and
asyncio pass them positionally), same results, same exceptions. Everything else (the handshake, `getpeercert`,
`unwrap`, ...) is the standard class's.
"""
from __future__ import annotations

import ssl
from typing import Any


class DirectSSLObject(ssl.SSLObject):
    """An ssl.SSLObject whose hot methods are the C object's own (see the module docstring)."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> "DirectSSLObject":
        self = super()._create(*args, **kwargs)
        c = self._sslobj
        self.read = c.read  # type: ignore[method-assign]
        self.write = c.write  # type: ignore[method-assign]
        self.pending = c.pending  # type: ignore[method-assign]
        return self


def use_direct_sslobject(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Make `ctx` wrap its connections in DirectSSLObject; returns it."""
    ctx.sslobject_class = DirectSSLObject
    return ctx
