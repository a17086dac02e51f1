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

It is also where an upstream connection resumes TLS (Envoy's UpstreamTlsContext `max_session_keys`, default 1:
the client context keeps its most recent session and offers it on the next handshake, to any host of the
cluster; a host that does not know it simply does a full handshake). asyncio's `create_connection` takes no
session, but every TLS layer (uvloop's, asyncio's) makes its object through `SSLContext.wrap_bio`, so a client
object created without a session takes the one its context holds. `remember_session` puts a resumable session
(one with a ticket: TLS 1.2 gets it in the handshake, TLS 1.3 with the first data after it) on the context; a
context is rebuilt when its certificates change, so a session never outlives the keys it was made with.
"""
from __future__ import annotations

import ssl
from typing import Any


class DirectSSLObject(ssl.SSLObject):
    """An ssl.SSLObject whose hot methods are the C object's own (see the module docstring)."""

    @classmethod
    def _create(cls, incoming: Any, outgoing: Any, server_side: bool = False, server_hostname: Any = None,
                session: Any = None, context: Any = None) -> "DirectSSLObject":
        if session is None:  # a client context's last session (see the module doc); a server's holds none
            session = getattr(context, RESUME_ATTR, None)
        self = super()._create(incoming, outgoing, server_side, server_hostname, session, context)
        c = self._sslobj
        self.read = c.read  # type: ignore[method-assign]
        self.write = c.write  # type: ignore[method-assign]
        self.pending = c.pending  # type: ignore[method-assign]
        return self


RESUME_ATTR = "pyproxy_resume_session"  # on a client SSLContext: the session its next handshake offers


def remember_session(ssl_object: Any) -> bool:
    """Keep `ssl_object`'s session on its context for the next connection if it can be resumed (it carries a
    ticket); True when it did. Only a client's session has a ticket: a server's stay in OpenSSL's own cache (and
    one set on a server context would make its next object refuse to start, `wrap_bio` refusing a session)."""
    if ssl_object is None:
        return False
    try:
        session = ssl_object.session
    except (ssl.SSLError, ValueError, AttributeError):  # a TLS object already torn down (called at close)
        return False
    if session is None or not session.has_ticket:
        return False
    setattr(ssl_object.context, RESUME_ATTR, session)
    return True


def use_direct_sslobject(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Make `ctx` wrap its connections in DirectSSLObject; returns it."""
    ctx.sslobject_class = DirectSSLObject
    return ctx
