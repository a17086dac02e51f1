"""pyproxy.agent.health: Istio's readiness decision (pilot-agent status/ready/probe.go) from Envoy's admin /stats."""
from __future__ import annotations

from pyproxy.agent.health import ReadinessProbe, config_received, envoy_live, parse_stats

LIVE = {"server.state": 0, "listener_manager.workers_started": 1}
CONFIG = {"cluster_manager.cds.update_success": 1, "listener_manager.lds.update_success": 1}


def test_stats_text_is_parsed_and_histograms_skipped():
    text = ("server.state: 3\nlistener_manager.workers_started: 0\n"
            "cluster_manager.cds.update_time: P0(nan,1) P25(nan,2)\n")
    assert parse_stats(text) == {"server.state": 3, "listener_manager.workers_started": 0}


def test_config_received_needs_one_cds_and_one_lds_update_accepted_or_rejected():
    assert config_received(CONFIG) is None
    rejected = {"cluster_manager.cds.update_rejected": 1, "listener_manager.lds.update_rejected": 2}
    assert config_received(rejected) is None
    reason = config_received({"cluster_manager.cds.update_success": 1})
    assert reason == ("config not received from XDS server (is the control plane running?): cds updates: 1 "
                      "successful, 0 rejected; lds updates: 0 successful, 0 rejected")


def test_envoy_must_be_live_with_its_workers_started():
    assert envoy_live(LIVE) is None
    assert envoy_live({**LIVE, "server.state": 3}) == "server is not live, current state is: INITIALIZING"
    assert envoy_live({**LIVE, "server.state": 1}) == "server is not live, current state is: DRAINING"
    assert envoy_live({**LIVE, "listener_manager.workers_started": 0}) == "workers have not yet started"
    assert envoy_live({}) == "server.state not reported by Envoy"


def test_the_probe_remembers_config_once_seen_but_asks_liveness_every_time():
    probe = ReadinessProbe()
    assert probe.check(LIVE).startswith("config not received")
    assert probe.check({**LIVE, **CONFIG}) is None
    assert probe.check(LIVE) is None  # config counters are not asked again (Istio's atleastOnceReady)
    assert probe.check({**CONFIG, "server.state": 1}).startswith("server is not live")
