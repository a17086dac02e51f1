"""Control plane and data plane speak the same config: every golden Envoy resource decodes with pyproxy's
own decoder (`pyproxy.config.decode`) into its model class, and what pyproxy cannot run yet is refused by
name (ARCHITECTURE decision 1: unsupported fields are reported, never silently dropped).

Refused on purpose, each pinned below to the exact field the decoder names:
* `round_robin_lb_config` / `least_request_lb_config.slow_start_config` (DestinationRule `warmup`): pyproxy's
  load balancers have no slow start;
* `retry_priority` envoy.retry_priorities.previous_priorities (VirtualService `retryRemoteLocalities`):
  pyproxy has no locality priorities.
TLS contexts (UpstreamTlsContext / DownstreamTlsContext / tls_inspector) and the CORS filter decode, but the
data plane does not act on them yet (other issues); decoding is what this test proves.

"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyproxy.config.decode import ConfigError, decode, encode
from pyproxy.config.model import Cluster, ClusterLoadAssignment, Listener, RouteConfiguration
from tests.golden.envoy_schema import check_resource

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
FILES = sorted(p for p in GOLDEN.rglob("*.json"))
MODEL = {"listeners": Listener, "routes": RouteConfiguration, "clusters": Cluster, "endpoints": ClusterLoadAssignment}

# what pyproxy refuses, as (marker in the resource's JSON, the path/text the decoder's error must name)
REFUSED = (
    ('"slow_start_config"', "_lb_config: unknown or unsupported field"),
    ("envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
     "retry_priority.typed_config.@type: unsupported type"),
)


def _resources():
    """Each distinct resource once (the same cluster or listener appears in many golden files: decoding it again
    proves nothing new), with the first file that holds it as its id."""
    seen: set[str] = set()
    for path in FILES:
        doc = json.loads(path.read_text())
        for group, cls in MODEL.items():
            for resource in doc.get(group, ()):
                key = f"{group}:{json.dumps(resource, sort_keys=True)}"
                if key in seen:
                    continue
                seen.add(key)
                name = resource.get("name") or resource.get("cluster_name")
                yield pytest.param(cls, resource, id=f"{path.parent.name}/{path.stem}:{group}:{name}")


RESOURCES = list(_resources())
ALL_RESOURCES = sum(len(json.loads(p.read_text()).get(g, ())) for p in FILES for g in MODEL)


def _refusal(resource: dict, refused=REFUSED) -> str | None:
    text = json.dumps(resource)
    return next((expected for marker, expected in refused if marker in text), None)


def test_every_golden_file_is_covered():
    assert len(FILES) >= 30  # 7 hand cases, 21 bookinfo samples, 2 brief proxies
    assert ALL_RESOURCES > 800  # resources in all the golden files ...
    assert 150 < len(RESOURCES) < ALL_RESOURCES  # ... of which these are distinct (each decoded once below)
    assert sum(1 for p in RESOURCES if _refusal(p.values[1], REFUSED) is None) > 0.98 * len(RESOURCES)


@pytest.mark.parametrize("cls, resource", RESOURCES)
def test_golden_resource_decodes_with_pyproxy_or_is_refused_by_name(cls, resource):
    refusal = _refusal(resource)
    if refusal is not None:
        with pytest.raises(ConfigError) as err:
            decode(cls, resource)
        assert refusal in str(err.value)
        return
    model = decode(cls, resource)
    assert (getattr(model, "name", None) or model.cluster_name) == (resource.get("name") or resource["cluster_name"])
    # and pyproxy's encoder gives back a resource Envoy's own protos accept (what /config_dump shows)
    check_resource(encode(model, as_any=True))


def test_a_tcp_proxy_listener_decodes():
    listener = {"name": "0.0.0.0_3306", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 3306}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "x", "cluster": "x"}}]}]}
    tcp = decode(Listener, listener).filter_chains[0].tcp_proxy
    assert (tcp.stat_prefix, tcp.cluster, tcp.effective_idle_timeout) == ("x", "x", 3600.0)
