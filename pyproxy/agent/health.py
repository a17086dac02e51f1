"""The agent's status server (istio-agent's 15020): `GET /healthz/ready` answers 200 once Envoy is live and has
received its config, 503 with the reason otherwise. Envoy's static listener on 15021 routes `/healthz/ready` here
(pyproxy.agent.bootstrap), as Istio's readiness probe goes.

The decision is Istio's (pilot/cmd/pilot-agent/status/ready/probe.go), pure in `readiness`: from Envoy's admin
`/stats` (`server.state`, `listener_manager.workers_started`, `cluster_manager.cds.update_success|rejected`,
`listener_manager.lds.update_success|rejected`):

* config received: at least one CDS and one LDS update, accepted or rejected (Istio: "config not received from
  XDS server (is Istiod running?): cds updates: N successful, N rejected; lds updates: ..."); once seen, not
  asked again (`atleastOnceReady`);
* `server.state` 0 (LIVE; 1 DRAINING, 2 PRE_INITIALIZING, 3 INITIALIZING: Envoy waits in INITIALIZING for its
  first clusters and listeners, their endpoints and their SDS secrets) and the workers started.

Envoy unreachable is not ready either (the message names the admin address).
"""
from __future__ import annotations

import logging
from typing import Mapping

import aiohttp
from aiohttp import web

log = logging.getLogger("pyproxy.agent")

READY_STATS = ("server.state", "listener_manager.workers_started", "cluster_manager.cds.update_success",
               "cluster_manager.cds.update_rejected", "listener_manager.lds.update_success",
               "listener_manager.lds.update_rejected")
STATS_QUERY = "/stats?usedonly&filter=^(server\\.state|listener_manager\\.workers_started|" \
              "cluster_manager\\.cds\\.update_(success|rejected)|listener_manager\\.lds\\.update_(success|rejected))$"
SERVER_STATES = {0: "LIVE", 1: "DRAINING", 2: "PRE_INITIALIZING", 3: "INITIALIZING"}


def parse_stats(text: str) -> dict[str, int]:
    """Envoy admin `/stats` text (`name: value` lines) -> the integer values (histograms are skipped)."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            out[name.strip()] = int(value)
    return out


def config_received(stats: Mapping[str, int]) -> str | None:
    """None when CDS and LDS were each updated at least once (accepted or rejected), else Istio's message."""
    cds_ok, cds_bad = (stats.get(f"cluster_manager.cds.update_{k}", 0) for k in ("success", "rejected"))
    lds_ok, lds_bad = (stats.get(f"listener_manager.lds.update_{k}", 0) for k in ("success", "rejected"))
    if (cds_ok or cds_bad) and (lds_ok or lds_bad):
        return None
    return (f"config not received from XDS server (is the control plane running?): cds updates: {cds_ok} "
            f"successful, {cds_bad} rejected; lds updates: {lds_ok} successful, {lds_bad} rejected")


def envoy_live(stats: Mapping[str, int]) -> str | None:
    """None when `server.state` is LIVE and the workers started, else the reason."""
    state = stats.get("server.state")
    if state is None:
        return "server.state not reported by Envoy"
    if state != 0:
        return f"server is not live, current state is: {SERVER_STATES.get(state, state)}"
    if stats.get("listener_manager.workers_started", 0) != 1:
        return "workers have not yet started"
    return None


class ReadinessProbe:
    """Istio's probe: the config check once true stays true; liveness is asked every time."""

    def __init__(self) -> None:
        self.config_seen = False

    def check(self, stats: Mapping[str, int]) -> str | None:
        """None = ready, else why not."""
        if not self.config_seen:
            reason = config_received(stats)
            if reason is not None:
                return reason
            self.config_seen = True
        return envoy_live(stats)


def status_app(admin_port: int, probe: ReadinessProbe | None = None) -> web.Application:
    """`GET /healthz/ready` from Envoy's admin on 127.0.0.1:`admin_port`."""
    probe = probe or ReadinessProbe()
    timeout = aiohttp.ClientTimeout(total=2)

    async def ready(_request: web.Request) -> web.Response:
        url = f"http://127.0.0.1:{admin_port}{STATS_QUERY}"
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(url) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        return web.Response(status=503, text=f"Envoy admin /stats answered {resp.status}\n")
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            return web.Response(status=503, text=f"Envoy admin 127.0.0.1:{admin_port} not reachable: {err}\n")
        reason = probe.check(parse_stats(text))
        if reason is not None:
            return web.Response(status=503, text=reason + "\n")
        return web.Response(status=200, text="")

    app = web.Application()
    app.router.add_get("/healthz/ready", ready)
    return app
