"""`make compose-up` on a machine that lacks something: one line naming what and the apt command, at once.

scripts/compose-demo.sh runs with a PATH holding only the basic tools it needs plus, per case, stand-ins for
`docker` (whose daemon never answers) and `dockerd` (which exits at once, as it does where it may not run). The
real Docker path is tests/docker/test_compose_demo.py.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compose-demo.sh"
BASICS = ("sh", "id", "dirname", "timeout", "mkdir", "cat", "grep", "tail", "sleep", "rm", "sort", "python3")
APT = "apt-get install -y" if os.geteuid() == 0 else "sudo apt-get install -y"


@pytest.fixture
def bin_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    d = tmp_path / "bin"
    d.mkdir()
    for tool in BASICS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run this test"
        (d / tool).symlink_to(found)
    return d


def fake(bin_dir: pathlib.Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def up(bin_dir: pathlib.Path, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    env = {"PATH": str(bin_dir), "WORK": str(tmp_path / "work"), "CACHE": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}
    return subprocess.run(["sh", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=60)


def test_without_docker_it_names_the_package(bin_dir, tmp_path):
    done = up(bin_dir, tmp_path)
    assert done.returncode == 4
    assert done.stderr == f"[compose] error: docker (the Docker CLI) is missing; install it with: {APT} docker.io\n"


def test_without_a_daemon_or_dockerd_it_names_the_package(bin_dir, tmp_path):
    fake(bin_dir, "docker", "exit 1")  # no daemon answers
    done = up(bin_dir, tmp_path)
    assert done.returncode in (3, 4), done.stderr
    if os.geteuid() == 0:
        assert done.stderr == ("[compose] error: dockerd (no Docker daemon answers and none is installed) is "
                               f"missing; install it with: {APT} docker.io\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a daemon is tried only as root")
def test_a_dockerd_that_cannot_start_fails_at_once_with_its_reason(bin_dir, tmp_path):
    fake(bin_dir, "docker", "exit 1")
    fake(bin_dir, "dockerd", "echo 'failed to start daemon: operation not permitted' >&2; exit 1")
    done = up(bin_dir, tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("[compose] error: dockerd could not start here: failed to start daemon: "
                                  "operation not permitted (log: ")


def test_without_any_compose_it_names_the_package(bin_dir, tmp_path):
    fake(bin_dir, "docker", 'case "$1" in info) exit 0;; *) exit 1;; esac')  # a daemon, but no compose plugin
    done = up(bin_dir, tmp_path)
    assert done.returncode == 4
    assert done.stderr == ("[compose] error: docker compose (v2 plugin) or docker-compose (1.29) is missing; "
                           f"install it with: {APT} docker-compose\n")


def test_usage():
    done = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.startswith("usage:")
