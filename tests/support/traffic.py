"""Helpers for the traffic-management black-box tests (tests/integration/test_traffic_*.py).

What the generic helpers in `proxy.py` / `upstream.py` lack for issue 3:

* `scripted(...)` — an upstream handler that plays a per-host script: the n-th request that reaches this
  upstream is answered as if it had asked for the n-th path of the script (`"/status/503"`,
  `"/reset-before-headers"`, `"/delay/0.3"` ... any path `TestUpstream` knows), then the request's own path.
  `always(path)` does one behaviour forever. The request is still recorded with its real path and headers.
* Cluster, route and filter builders with the Envoy v3 fields these tests need (weighted endpoints,
  circuit breakers, outlier detection, retry policies, the fault filter).
* `stats_text()` / `clusters_text()` — Envoy's /stats and /clusters text, after
  `server.collect_stats()` publishes what the pure modules count.
* `hosts_hit()` — which upstream answered each response (`x-upstream`), counted.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import Any, Callable, Iterable

from pyproxy.observe.stats import render_text

from .client import Response, fetch
from .proxy import HCM_TYPE, RunningProxy, socket_address
from .upstream import RecordedRequest, default_handler

FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
}


# ---------------------------------------------------------------- scripted upstream behaviour

def scripted(*paths: str) -> Callable:
    """A handler answering the n-th request as `paths[n]` would be answered, later ones by their own path."""
    queue = collections.deque(paths)

    async def handler(conn, req: RecordedRequest) -> bool:
        if queue:
            return await default_handler(conn, dataclasses.replace(req, path=queue.popleft()))
        return await default_handler(conn, req)

    return handler


def always(path: str) -> Callable:
    """A handler answering every request as `path` would be answered."""
    async def handler(conn, req: RecordedRequest) -> bool:
        return await default_handler(conn, dataclasses.replace(req, path=path))

    return handler


def by_attempt(paths: dict[str, str]) -> Callable:
    """A handler choosing the behaviour by the request's `x-envoy-attempt-count` ("1", "2", ...)."""
    async def handler(conn, req: RecordedRequest) -> bool:
        path = paths.get(req.header("x-envoy-attempt-count") or "", req.path)
        return await default_handler(conn, dataclasses.replace(req, path=path))

    return handler


# ---------------------------------------------------------------- config builders

def endpoints_cluster(name: str, ports: Iterable[int] | dict[int, int], **extra: Any) -> dict:
    """A STATIC cluster; `ports` may map port -> load_balancing_weight."""
    weights = ports if isinstance(ports, dict) else {p: None for p in ports}
    eps = []
    for port, weight in weights.items():
        ep: dict[str, Any] = {"endpoint": {"address": socket_address(port)}}
        if weight is not None:
            ep["load_balancing_weight"] = weight
        eps.append(ep)
    c: dict[str, Any] = {"name": name, "type": "STATIC", "connect_timeout": extra.pop("connect_timeout", "1s"),
                         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]}}
    c.update(extra)
    return c


def thresholds(**limits: int) -> dict:
    """`circuit_breakers` with one DEFAULT-priority thresholds entry."""
    return {"thresholds": [{"priority": "DEFAULT", **limits}]}


def outlier(**fields: Any) -> dict:
    """`outlier_detection` with fast timers for tests (interval 0.1 s, base ejection 0.5 s, 100 %)."""
    od = {"interval": "0.1s", "base_ejection_time": "0.5s", "max_ejection_percent": 100}
    od.update(fields)
    return od


def retry_policy(retry_on: str, num_retries: int = 1, **fields: Any) -> dict:
    """A retry_policy with a tiny back-off so retries are fast (base 1 ms, max 2 ms) unless overridden."""
    p: dict[str, Any] = {"retry_on": retry_on, "num_retries": num_retries,
                         "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.002s"}}
    p.update(fields)
    return p


def fault_filter(config: dict | None = None) -> dict:
    return {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT_TYPE, **(config or {})}}


def fault_config(config: dict) -> dict:
    """A per-route `typed_per_filter_config` entry for the fault filter."""
    return {"envoy.filters.http.fault": {"@type": FAULT_TYPE, **config}}


def percent(numerator: int, denominator: str = "HUNDRED") -> dict:
    return {"numerator": numerator, "denominator": denominator}


def with_filters(config: dict, filters: list[dict]) -> dict:
    """Put `filters` before the router of the (only) HTTP connection manager of a bootstrap dict."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["@type"] == HCM_TYPE
    hcm["http_filters"] = [*filters, *hcm["http_filters"]]
    return config


# ---------------------------------------------------------------- observing

def stats_text(proxy: RunningProxy, filter: str | None = None) -> str:
    """Envoy's /stats text."""
    return render_text(proxy.server.collect_stats(), filter=filter)


def clusters_text(proxy: RunningProxy) -> str:
    """Envoy's /clusters text, from the admin module."""
    from pyproxy.admin.server import clusters_text as render

    return render(proxy.server)


def host_line(text: str, cluster: str, port: int, key: str) -> str:
    """The value of `cluster::127.0.0.1:port::key::value` in /clusters text."""
    prefix = f"{cluster}::127.0.0.1:{port}::{key}::"
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):]
    raise AssertionError(f"no {prefix!r} line in /clusters:\n{text}")


def hosts_hit(responses: Iterable[Response]) -> collections.Counter:
    """How many responses each upstream (`x-upstream`) answered."""
    return collections.Counter(r.header("x-upstream") for r in responses)


async def fetch_many(proxy: RunningProxy, n: int, path: str = "/", headers=None, *, concurrent: bool = False,
                     host: str = "example.com") -> list[Response]:
    """`n` requests, each on its own connection; one after another, or all at once."""
    if concurrent:
        return list(await asyncio.gather(*(fetch(proxy.port, "GET", path, headers, host=host) for _ in range(n))))
    return [await fetch(proxy.port, "GET", path, headers, host=host) for _ in range(n)]


async def until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> None:
    """Poll a condition the engine reaches on its own timer (e.g. an outlier sweep), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)  # poll interval of a bounded wait


def binomial_bounds(n: int, p: float, sigmas: float = 6.0) -> tuple[float, float]:
    """[mean - k·σ, mean + k·σ] for a binomial(n, p) count."""
    mean = n * p
    sd = (n * p * (1 - p)) ** 0.5
    return mean - sigmas * sd, mean + sigmas * sd
