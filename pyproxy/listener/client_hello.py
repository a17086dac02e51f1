"""What the listener filters learn from a connection's first bytes, without consuming them (sans-IO).

Envoy's `envoy.filters.listener.tls_inspector` peeks at the first bytes of a new connection: a TLS handshake
record carrying a ClientHello makes the connection's transport protocol `tls` and gives the requested server
name (SNI extension, RFC 6066 §3) and the offered application protocols (ALPN extension, RFC 7301); anything
else is `raw_buffer`. `envoy.filters.listener.http_inspector` does the same for plaintext: an HTTP/1.x request
line gives `http/1.0` or `http/1.1`, the HTTP/2 connection preface gives `h2c`. Filter-chain selection
(`pyproxy.listener.chain_match`) then uses those facts; this is how Istio's PERMISSIVE mode serves mTLS and
plaintext on one port.

This module only reads bytes: `inspect_tls(data)` and `inspect_http(data)` return a verdict or `NEED_MORE`.
It parses the TLS *record* and ClientHello framing (RFC 8446 §5.1, §4.1.2); no cryptography happens here.
A ClientHello split over several records is reassembled. Limits: Envoy's `max_client_hello_size` default
(16 KiB) bounds how much is read before giving up.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_CLIENT_HELLO = 16 * 1024  # tls_inspector max_client_hello_size default
MAX_HTTP_INSPECT = 64 * 1024  # http_inspector reads until the request line ends (bounded)

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16


class _NeedMore:
    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE = _NeedMore()  # not decided yet: peek again when more bytes have arrived


@dataclass(frozen=True, slots=True)
class TlsHello:
    """A ClientHello was found: transport protocol `tls`, with what it asked for."""

    server_name: str = ""
    alpn: tuple[str, ...] = ()


class _Short(Exception):
    pass


class _Reader:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None):
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise _Short
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def sub(self, n: int) -> "_Reader":
        if self.pos + n > self.end:
            raise _Short
        r = _Reader(self.data, self.pos, self.pos + n)
        self.pos += n
        return r

    @property
    def left(self) -> int:
        return self.end - self.pos


def _handshake_bytes(data: bytes) -> tuple[bytes, bool] | None:
    """Concatenate the payloads of the leading handshake records. Returns (payload, all_records_complete), or
    None when the bytes are not TLS handshake records."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        head = data[pos:pos + 5]
        if head[:1] and head[0] != _HANDSHAKE:
            return (bytes(out), True) if out else None
        if len(head) >= 2 and head[1] != 3:
            return None  # record version major must be 3 (TLS 1.0 .. 1.3 all write 0x03 0x0?)
        if len(head) < 5:
            return bytes(out), False
        length = int.from_bytes(head[3:5], "big")
        if length == 0 or length > 16384 + 2048:
            return None
        body = data[pos + 5:pos + 5 + length]
        out += body
        if len(body) < length:
            return bytes(out), False
        pos += 5 + length
    return bytes(out), True


def inspect_tls(data: bytes, limit: int = MAX_CLIENT_HELLO) -> TlsHello | None | _NeedMore:
    """tls_inspector on the bytes peeked so far: a `TlsHello`, None (not TLS: raw_buffer), or NEED_MORE."""
    if not data:
        return NEED_MORE
    found = _handshake_bytes(data[:limit + 5 * 8])
    if found is None:
        return None
    payload, _ = found
    r = _Reader(payload)
    try:
        if r.u8() != _CLIENT_HELLO:
            return None
        length = r.u24()
        if length > limit:
            return None  # Envoy: client_hello_too_large (the connection is not treated as TLS)
        hello = r.sub(length)
    except _Short:
        return NEED_MORE if len(data) < limit + 5 else None
    try:
        return _parse_client_hello(hello)
    except (_Short, UnicodeDecodeError):
        return None  # a malformed ClientHello: not TLS as far as chain selection goes


def _parse_client_hello(r: _Reader) -> TlsHello:
    r.take(2 + 32)  # legacy_version, random
    r.take(r.u8())  # legacy_session_id
    r.take(r.u16())  # cipher_suites
    r.take(r.u8())  # legacy_compression_methods
    server_name = ""
    alpn: tuple[str, ...] = ()
    if r.left == 0:
        return TlsHello()
    exts = r.sub(r.u16())
    while exts.left:
        ext_type = exts.u16()
        ext = exts.sub(exts.u16())
        if ext_type == _EXT_SERVER_NAME:
            names = ext.sub(ext.u16())
            while names.left:
                kind = names.u8()
                name = names.take(names.u16())
                if kind == 0 and not server_name:
                    server_name = name.decode("ascii").lower()
        elif ext_type == _EXT_ALPN:
            protos = ext.sub(ext.u16())
            got = []
            while protos.left:
                got.append(protos.take(protos.u8()).decode("ascii"))
            alpn = tuple(got)
    return TlsHello(server_name, alpn)


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def inspect_http(data: bytes, limit: int = MAX_HTTP_INSPECT) -> str | None | _NeedMore:
    """http_inspector: `http/1.1`, `http/1.0`, `h2c`, None (not HTTP), or NEED_MORE. Like Envoy, only the
    request line is looked at (method token, a target, `HTTP/1.x`)."""
    if _H2_PREFACE.startswith(data[:len(_H2_PREFACE)]):
        return "h2c" if len(data) >= len(_H2_PREFACE) else NEED_MORE
    end = data.find(b"\r\n")
    if end < 0:
        end = data.find(b"\n")
    if end < 0:
        if len(data) >= limit:
            return None
        first = data.split(b" ", 1)[0]
        return NEED_MORE if first.isalpha() or not data else None
    parts = data[:end].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not parts[0].isalpha():
        return None
    version = parts[2]
    if version == b"HTTP/1.1":
        return "http/1.1"
    if version == b"HTTP/1.0":
        return "http/1.0"
    return None
