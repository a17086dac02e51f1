"""Reading a bootstrap file: Envoy v3 YAML/JSON -> `model.Bootstrap`, errors naming file and field.

`pyproxy run -c front-proxy.yaml` and `envoy -c front-proxy.yaml` take the same file. Envoy picks the
parser by extension (.yaml/.yml/.json); YAML is a superset of JSON so we parse both with PyYAML.
"""
from __future__ import annotations

import pathlib

from .config.decode import ConfigError, decode
from .config.model import Bootstrap


class BootstrapError(Exception):
    """A bootstrap that cannot be used; the message is meant for the user, with file and field."""


def load_bootstrap(path: str) -> Bootstrap:
    """Read and decode `path`; every failure is one BootstrapError line naming the file (and line, field)."""
    p = pathlib.Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise BootstrapError(f"{path}: cannot read: {e.strerror or e}") from None
    nul = raw.find(b"\0")
    if nul >= 0:
        raise BootstrapError(f"{path}: a binary file (NUL byte at offset {nul}), not an Envoy bootstrap in YAML "
                             "or JSON") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BootstrapError(f"{path}: not UTF-8 text (byte {e.start}); an Envoy bootstrap is YAML or JSON") from None
    if not text.strip():
        raise BootstrapError(f"{path}: the file is empty (expected an Envoy Bootstrap: static_resources, admin...)")
    import yaml  # only for a bootstrap file: a sidecar (config over xDS) does not load PyYAML (0.4 MiB)

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = " ".join((getattr(e, "problem", None) or str(e)).split())  # one line, always
        raise BootstrapError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        raise BootstrapError(f"{path}: expected a mapping at the top (an Envoy Bootstrap), got {kind}")
    try:
        return decode(Bootstrap, data)
    except ConfigError as e:
        raise BootstrapError(f"{path}: {e}") from None
