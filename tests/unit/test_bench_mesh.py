"""benchmarks/mesh_bench.py's bookkeeping: the sidecars' CPU per request over the kept pair rounds."""
from __future__ import annotations

import os

from benchmarks import mesh_bench


def test_cpu_per_request_is_the_sum_over_kept_rounds_divided_by_their_requests():
    cpu = mesh_bench.SidecarCpu({"pids": {"productpage-v1-sidecar": 11, "details-v1-sidecar": 12}})
    assert cpu.pids == {"client": 11, "server": 12}
    cpu.add({"client": 1.0, "server": 2.0}, {"client": 1.2, "server": 2.5}, 1000)
    cpu.add({"client": 5.0, "server": 5.0}, {"client": 5.2, "server": 5.1}, 1000)
    assert round(cpu.per_request_us("client")) == 200
    assert round(cpu.per_request_us("server")) == 300


def test_a_state_without_pids_or_rounds_reports_nothing_rather_than_zero():
    assert mesh_bench.SidecarCpu({}).per_request_us("client") is None
    cpu = mesh_bench.SidecarCpu({"pids": {"productpage-v1-sidecar": 11}})
    assert cpu.per_request_us("client") is None  # no round kept yet
    cpu.add({"client": 0.0, "server": 0.0}, {"client": 0.1, "server": 0.0}, 100)
    assert (round(cpu.per_request_us("client")), cpu.per_request_us("server")) == (1000, None)


def test_a_snapshot_reads_the_processes_cpu_and_its_children():
    cpu = mesh_bench.SidecarCpu({"pids": {"productpage-v1-sidecar": os.getpid()}})
    sum(i * i for i in range(200_000))  # some CPU of our own
    first = cpu.snapshot()
    assert first["client"] > 0 and first["server"] == 0.0
