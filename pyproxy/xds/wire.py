"""A DiscoveryResponse body (JSON bytes) → a dict, built so that a worker thread can do it without freezing the loop.

Why not `json.loads`: it is one C call, and a C call holds the GIL from start to end, so parsing an 18 MB RDS
response (26,795 virtual hosts) on *any* thread stops the event loop for ~0.8 s. ijson's yajl2 C backend parses
the same text incrementally: it pulls `CHUNK` bytes at a time from a file-like object, and because `_Chunks.read`
is a Python method, the interpreter checks for a pending GIL hand-over between chunks (every 5 ms by default,
`sys.getswitchinterval()`). The loop thread gets the GIL back after each chunk instead of after the whole body.

The result matches `json.loads` for the JSON the control plane sends: integers stay `int`, other numbers become
`float` (`use_float=True`), a repeated key keeps its last value. Malformed JSON raises ValueError, as
`json.loads` (and aiohttp's `resp.json()`) does.
"""
from __future__ import annotations

from typing import Any

import ijson

CHUNK = 16 * 1024  # bytes per read: small enough that one chunk's C work is well under a millisecond


class _Chunks:
    """A file-like view of `body` whose `read` runs as Python bytecode (the point: see the module docstring)."""

    __slots__ = ("_view", "_pos")

    def __init__(self, body: bytes):
        self._view = memoryview(body)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        start = self._pos
        end = len(self._view) if n is None or n < 0 else min(start + n, len(self._view))
        self._pos = end
        return bytes(self._view[start:end])


def parse_response(body: bytes) -> Any:
    """The JSON document in `body`. Safe to run on a worker thread; ValueError if it is not JSON."""
    try:
        docs = list(ijson.items(_Chunks(body), "", use_float=True, buf_size=CHUNK))
    except ijson.JSONError as e:
        raise ValueError("invalid JSON in discovery response: " + " ".join(str(e).split())) from None
    if len(docs) != 1:
        raise ValueError("a discovery response must be exactly one JSON document")
    return docs[0]
