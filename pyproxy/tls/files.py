"""Writing key material to disk: atomically (temp file + rename, so a reader never sees half a key) and with
the mode set explicitly whatever the umask (0600 for private keys)."""
from __future__ import annotations

import os
from pathlib import Path


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
