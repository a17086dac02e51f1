"""Writing key material to disk: atomically (temp file + rename, so a reader never sees half a key) and with
the mode set explicitly whatever the umask (0600 for private keys). And `memory_file`: a path for OpenSSL's
file-only loaders (`load_cert_chain`) whose bytes never reach a disk."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def memory_file(data: bytes, name: str = "pyproxy-tls") -> Iterator[str]:
    """A path that reads as `data` while the block runs: an anonymous in-memory file (Linux `memfd_create`,
    `/proc/self/fd/N`), else a 0600 file in a private temporary directory, removed afterwards (`tempfile` is
    imported only then: with it come shutil, bz2 and lzma, about 1 MiB of RSS)."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create(name, getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        path = os.path.join(tmp, "data.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path


def write_file_atomic(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_private_dir(path: str | Path) -> Path:
    """Create `path` (and parents) with mode 0700 when missing."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
