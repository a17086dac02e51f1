"""Check JSON against Envoy's own protobuf schemas (the `xds-protos` package).

`json_format.ParseDict` with `ignore_unknown_fields=False`: a field Envoy does not know is an error, so a
config that passes here is one real Envoy would load (modulo semantic checks Envoy does after parsing).
"""
from __future__ import annotations

import importlib
from typing import Any

from google.protobuf import json_format, symbol_database

from control.xds.protos import MODULES

# Importing these registers the message types that Any (`typed_config`) fields may name: the control plane's
# own list (what gRPC ADS converts with) plus the bootstrap and admin messages tests read.
_MODULES = [*MODULES, "envoy.config.bootstrap.v3.bootstrap_pb2", "envoy.admin.v3.config_dump_pb2"]
for _m in _MODULES:
    try:
        importlib.import_module(_m)
    except ImportError:  # an older xds-protos without that extension
        pass


def parse_envoy(message_name: str, data: dict[str, Any]):
    """Parse `data` as the Envoy message `message_name` (e.g. "envoy.config.cluster.v3.Cluster")."""
    cls = symbol_database.Default().GetSymbol(message_name)
    return json_format.ParseDict(data, cls(), ignore_unknown_fields=False)
