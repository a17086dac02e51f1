"""envoy.config.core.v3.DataSource: inline text, inline bytes (base64 in JSON), a file, or an environment variable.

Envoy reads a DataSource when the config is loaded, never per request; so does pyproxy (direct response
bodies, access-log format sources). A source that cannot be read is a ConfigError naming the field.
"""
from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from .decode import ConfigError


def read_data_source(source: Any, where: str) -> str:
    if source.inline_string is not None:
        return source.inline_string
    if source.inline_bytes is not None:
        try:
            return base64.b64decode(source.inline_bytes, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}.inline_bytes", f"not base64 of UTF-8 text: {e}") from None
    if source.filename is not None:
        try:
            with open(source.filename, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise ConfigError(f"{where}.filename", f"cannot read {source.filename!r}: {e.strerror}") from None
    if source.environment_variable is not None:
        value = os.environ.get(source.environment_variable)
        if value is None:
            raise ConfigError(f"{where}.environment_variable",
                              f"environment variable {source.environment_variable!r} is not set")
        return value
    raise ConfigError(where, "empty DataSource")
