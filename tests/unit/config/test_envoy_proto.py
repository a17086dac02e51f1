"""Every example bootstrap is a valid Envoy v3 Bootstrap (Envoy's own protos, unknown fields rejected),
and what pyproxy re-encodes for /config_dump is valid Envoy JSON too."""
from __future__ import annotations

import pathlib

import pytest
import yaml

from pyproxy.config.decode import decode, encode
from pyproxy.config.model import Bootstrap

pytest.importorskip("envoy.config.bootstrap.v3.bootstrap_pb2")
from tests.envoy_protos import parse_envoy  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[3]
BOOTSTRAPS = sorted((ROOT / "examples").rglob("*.yaml"))
BOOTSTRAPS = [p for p in BOOTSTRAPS if "static_resources" in p.read_text() or "admin:" in p.read_text()]


@pytest.mark.parametrize("path", BOOTSTRAPS, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_bootstrap_parses_as_envoy_bootstrap(path):
    parse_envoy("envoy.config.bootstrap.v3.Bootstrap", yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("path", BOOTSTRAPS, ids=lambda p: str(p.relative_to(ROOT)))
def test_pyproxy_decodes_example_and_reencodes_valid_envoy_json(path):
    model = decode(Bootstrap, yaml.safe_load(path.read_text()))
    parse_envoy("envoy.config.bootstrap.v3.Bootstrap", encode(model))


def test_there_are_examples():
    assert any(p.name == "front-proxy.yaml" for p in BOOTSTRAPS)
