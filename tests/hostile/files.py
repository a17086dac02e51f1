"""Hostile config files for the control plane (the security tester's items 6 and 7 and their relatives), each
as bytes, made here (never committed), with what a clear report of it contains."""
from __future__ import annotations

import random

from control.istio.load import LoadLimits

MIB = 1024 * 1024
CAP_BYTES = 512 * MIB  # RLIMIT_AS for the processes that read the alias bomb

VALID_VS = b"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: [details]
  http:
  - route:
    - {destination: {host: details, subset: v1}}
    timeout: %ds
"""


def valid_vs(timeout: int) -> bytes:
    """A valid VirtualService whose route timeout (`<timeout>s`) shows which version is served."""
    return VALID_VS % timeout


def deep_nesting(levels: int = 500) -> bytes:
    """The tester's 1.1 KB VirtualService with 500 nested `[` (RecursionError escaped the reload)."""
    return valid_vs(50).replace(b"hosts: [details]", b"hosts: " + b"[" * levels + b"details" + b"]" * levels)


def alias_bomb(levels: int = 9, fan: int = 9) -> bytes:
    """A ~500-byte 'billion laughs' (RSS grew from 46 MB to 1.16 GB before)."""
    rows = [b'  l0: &l0 [' + b",".join([b'"lol"'] * fan) + b"]"]
    rows += [b"  l%d: &l%d [" % (i, i) + b",".join([b"*l%d" % (i - 1)] * fan) + b"]" for i in range(1, levels + 1)]
    return b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n" + b"\n".join(rows) + b"\n"


def garbage(size: int = 4096, seed: int = 6) -> bytes:
    """Random bytes without NUL (so it is not caught as binary): the YAML reader or decoder must refuse it."""
    return bytes(b or 1 for b in random.Random(seed).randbytes(size))


def binary() -> bytes:
    """The start of an ELF executable (NUL bytes): a binary file dropped in the config directory."""
    return b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 16


def many_documents() -> bytes:
    return b"---\n" * (LoadLimits().max_documents + 1)


# name -> (bytes or a size for a sparse file over the size limit, what the one-line report says)
HOSTILE: dict[str, tuple[bytes | int, str]] = {
    "deep.yaml": (deep_nesting(), "nesting deeper than 100 levels"),
    "bomb.yaml": (alias_bomb(), "YAML aliases expand to"),
    "garbage.yaml": (garbage(), "not UTF-8 text"),
    "binary.yaml": (binary(), "a binary file (NUL byte at offset 7)"),
    "huge.yaml": (LoadLimits().max_file_bytes + 1, "larger than the limit of 16,777,216 bytes"),
    "many.yaml": (many_documents(), "more than 50,000 documents in one file"),
    "recursive.yaml": (b"a: &a [1, *a]\n", "an alias refers to a node that contains it"),
    "latin1.yaml": ("kind: caf\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 9)"),
}


def write(path, content: bytes | int) -> None:
    """Write hostile content; an int is the size of a sparse file (NUL bytes; nothing is read: too big)."""
    if isinstance(content, int):
        with open(path, "wb") as fh:
            fh.truncate(content)
    else:
        path.write_bytes(content)
