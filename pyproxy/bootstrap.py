"""Reading a bootstrap file: Envoy v3 YAML/JSON -> `model.Bootstrap`, errors naming file and field.

`pyproxy run -c front-proxy.yaml` and `envoy -c front-proxy.yaml` take the same file. Envoy picks the
parser by extension (.yaml/.yml/.json); YAML is a superset of JSON so we parse both with PyYAML.
"""
from __future__ import annotations

import pathlib

import yaml

from .config.decode import ConfigError, decode
from .config.model import Bootstrap


class BootstrapError(Exception):
    """A bootstrap that cannot be used; the message is meant for the user, with file and field."""


def load_bootstrap(path: str) -> Bootstrap:
    p = pathlib.Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise BootstrapError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(e, "problem", None) or str(e)
        raise BootstrapError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise BootstrapError(f"{path}: expected a mapping at the top (an Envoy Bootstrap), got {type(data).__name__}")
    try:
        return decode(Bootstrap, data)
    except ConfigError as e:
        raise BootstrapError(f"{path}: {e}") from None
