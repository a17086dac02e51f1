#!/bin/sh
# `make compose-up` / `make compose-down`: docker-compose.yml (bookinfo, mTLS STRICT, Prometheus) on any Debian
# machine, with or without a running Docker and with or without Docker Hub. What `up` does, in order:
#   1. checks the tools it needs and says in one line what is missing and the apt command that installs it
#   2. uses the Docker daemon that answers (DOCKER_HOST or the default socket); when none does, starts one of its own
#      (own socket, data and exec folders under $WORK; needs root) and fails within seconds if it cannot start
#   3. picks the base image: $BASE_IMAGE if set, else python:3.12-slim (from Docker Hub), else, when Docker Hub is
#      out of reach, a Debian bookworm made with debootstrap (cached in $CACHE) and Prometheus from Debian's package
#   4. builds the image (context copied outside the repository), `compose up -d`, waits until a product shows its
#      details, reviews and ratings through the gateway
# It works with `docker compose` (v2) and `docker-compose` (1.29). `down` removes containers, networks and volumes
# and stops the daemon it started, by its PID. Exit codes: 1 failed, 2 usage, 3 no Docker daemon can run here,
# 4 a prerequisite is missing (tests/docker/test_compose_demo.py skips on 3 and 4, fails on anything else).
#   scripts/compose-demo.sh up|down      environment: WORK, CACHE, GATEWAY_PORT, PROMETHEUS_PORT, XDS_PORT,
#                                        COMPOSE_PROJECT_NAME, BASE_IMAGE, PYPROXY_IMAGE
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/pyproxy-compose}
CACHE=${CACHE:-/tmp/pyproxy-compose-cache}   # debootstrap rootfs and (when free) the daemon's image store
HUB_BASE=python:3.12-slim
LOCAL_BASE=localbase:bookworm
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-pyproxymesh}
export COMPOSE_FILE="$ROOT/docker-compose.yml"
export PYPROXY_IMAGE=${PYPROXY_IMAGE:-pyproxy-mesh:local}
APT="apt-get install -y"
[ "$(id -u)" = 0 ] || APT="sudo apt-get install -y"

say() { echo "[compose] $*"; }
die() { code=$1; shift; echo "[compose] error: $*" >&2; exit "$code"; }
missing() { die 4 "$1 is missing; install it with: $APT $2"; }

compose_cmd() {
    if docker compose version >/dev/null 2>&1; then echo "docker compose"
    elif command -v docker-compose >/dev/null 2>&1; then echo "docker-compose"
    else missing "docker compose (v2 plugin) or docker-compose (1.29)" docker-compose; fi
}

daemon_answers() { timeout 10 docker info >/dev/null 2>&1; }

# Start a dockerd of our own. Its image store lives in $CACHE when no other daemon of ours uses it (images and
# build layers then survive `down`), else in $WORK.
start_daemon() {
    command -v dockerd >/dev/null 2>&1 || missing "dockerd (no Docker daemon answers and none is installed)" docker.io
    [ "$(id -u)" = 0 ] || die 3 "no Docker daemon answers and starting one needs root: run 'sudo make compose-up' (or start Docker: sudo systemctl start docker)"
    mkdir -p "$WORK" "$CACHE"
    data="$CACHE/docker-data"
    if [ -f "$CACHE/docker-data.owner" ] && kill -0 "$(cat "$CACHE/docker-data.owner")" 2>/dev/null; then
        data="$WORK/docker-data"
    fi
    export DOCKER_HOST="unix://$WORK/docker.sock"
    dockerd --host "$DOCKER_HOST" --data-root "$data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
        --bridge none >"$WORK/dockerd.log" 2>&1 &
    pid=$!
    echo "$pid" >"$WORK/dockerd.started"
    [ "$data" != "$CACHE/docker-data" ] || echo "$pid" >"$CACHE/docker-data.owner"
    i=0
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            die 3 "dockerd could not start here: $(grep -v '^\s*$' "$WORK/dockerd.log" | tail -n 1) (log: $WORK/dockerd.log)"
        fi
        i=$((i + 1))
        [ $i -lt 60 ] || die 1 "dockerd did not answer within 30 s (log: $WORK/dockerd.log)"
        sleep 0.5
    done
    say "started dockerd (PID $pid) on $DOCKER_HOST"
}

# A Debian bookworm image made without a registry: debootstrap once per machine (rootfs cached in $CACHE).
local_base() {
    docker image inspect "$LOCAL_BASE" >/dev/null 2>&1 && return 0
    if [ ! -d "$CACHE/rootfs-bookworm" ]; then
        command -v debootstrap >/dev/null 2>&1 || missing "debootstrap (Docker Hub is out of reach: the base image is made locally)" debootstrap
        say "Docker Hub is out of reach: making a Debian base image with debootstrap (about a minute, cached in $CACHE)" >&2
        # into a directory of its own, renamed when complete: a run beside ours, or one cut short, leaves no half
        tmp=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$tmp" \
            >"$WORK/debootstrap.log" 2>&1 || { rm -rf "$tmp"; die 1 "debootstrap failed (log: $WORK/debootstrap.log)"; }
        mv -T "$tmp" "$CACHE/rootfs-bookworm" 2>/dev/null || rm -rf "$tmp"
    fi
    tar -C "$CACHE/rootfs-bookworm" -c . | docker import - "$LOCAL_BASE" >/dev/null
}

choose_base() {
    if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
    if docker image inspect "$HUB_BASE" >/dev/null 2>&1 || timeout 30 docker pull -q "$HUB_BASE" >/dev/null 2>&1; then
        echo "$HUB_BASE"
    else
        local_base
        echo "$LOCAL_BASE"
    fi
}

build() {
    base=$1
    ctx="$WORK/context"
    rm -rf "$ctx" && mkdir -p "$ctx/examples"
    cp "$ROOT/Dockerfile" "$ROOT/pyproject.toml" "$ROOT/README.md" "$ctx/"
    cp -r "$ROOT/pyproxy" "$ROOT/control" "$ROOT/bookinfo" "$ctx/"
    cp -r "$ROOT/examples/mesh" "$ctx/examples/"
    find "$ctx" -name __pycache__ -prune -exec rm -rf {} +
    # Only for a locally made base: pip inside the build trusts what this machine trusts (never in git).
    if [ "$base" = "$LOCAL_BASE" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$ctx/build-ca.crt"
    fi
    say "building $PYPROXY_IMAGE on $base"
    docker build -q --network host --build-arg "BASE_IMAGE=$base" -t "$PYPROXY_IMAGE" "$ctx" >"$WORK/build.log" 2>&1 \
        || { tail -n 20 "$WORK/build.log" >&2; die 1 "docker build failed (log: $WORK/build.log)"; }
    if [ "$base" = "$LOCAL_BASE" ] && [ -z "${PROMETHEUS_IMAGE:-}" ]; then
        export PROMETHEUS_IMAGE=pyproxy-prometheus:local
        say "building $PROMETHEUS_IMAGE (Debian's prometheus package; the official image is out of reach)"
        docker build -q --network host --build-arg "BASE_IMAGE=$base" -t "$PROMETHEUS_IMAGE" "$ROOT/deploy/prometheus" \
            >"$WORK/build-prometheus.log" 2>&1 \
            || { tail -n 20 "$WORK/build-prometheus.log" >&2; die 1 "docker build of Prometheus failed (log: $WORK/build-prometheus.log)"; }
    fi
}

# "Up" means the whole of bookinfo answers through the gateway, not only productpage: a product (as jason, whom
# the demo routes to reviews v2, which asks ratings) with its details, its reviews and their ratings. A sidecar
# that has not received its endpoints yet makes productpage answer 200 with an error in place of them.
READY_CHECK='
import json, sys, urllib.request
p = json.load(urllib.request.urlopen(sys.argv[1], timeout=3))
d, r = p["details"], p["reviews"]
sys.exit("error" in d or "error" in r or any("error" in x.get("rating", {}) for x in r.get("reviews", [])))
'

wait_for_gateway() {
    url="http://127.0.0.1:${GATEWAY_PORT:-8080}/api/v1/products/0?u=jason"
    i=0
    until python3 -c "$READY_CHECK" "$url" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 120 ] || die 1 "$url did not show details, reviews and ratings within 2 minutes; see: $COMPOSE logs"
        sleep 1
    done
}

up() {
    command -v docker >/dev/null 2>&1 || missing "docker (the Docker CLI)" docker.io
    command -v python3 >/dev/null 2>&1 || missing python3 python3
    mkdir -p "$WORK"
    if [ -z "${DOCKER_HOST:-}" ] && [ -S "$WORK/docker.sock" ]; then export DOCKER_HOST="unix://$WORK/docker.sock"; fi
    daemon_answers || start_daemon
    COMPOSE=$(compose_cmd)
    base=$(choose_base)
    build "$base"
    echo "DOCKER_HOST=${DOCKER_HOST:-} PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-} COMPOSE='$COMPOSE'" >"$WORK/env"
    say "starting the mesh ($COMPOSE, project $COMPOSE_PROJECT_NAME)"
    $COMPOSE up -d --no-build --remove-orphans >"$WORK/up.log" 2>&1 \
        || { tail -n 20 "$WORK/up.log" >&2; die 1 "$COMPOSE up failed (log: $WORK/up.log)"; }
    wait_for_gateway
    say "up: bookinfo at http://127.0.0.1:${GATEWAY_PORT:-8080}/productpage, Prometheus at http://127.0.0.1:${PROMETHEUS_PORT:-9090}"
    say "by hand: export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock} COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME COMPOSE_FILE=$COMPOSE_FILE; $COMPOSE ps"
}

down() {
    if [ -f "$WORK/env" ]; then
        eval "$(cat "$WORK/env")"
        [ -z "$DOCKER_HOST" ] || export DOCKER_HOST
        [ -z "$PROMETHEUS_IMAGE" ] || export PROMETHEUS_IMAGE
        $COMPOSE down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || say "warning: $COMPOSE down failed"
    fi
    if [ -f "$WORK/dockerd.started" ]; then
        pid=$(cat "$WORK/dockerd.started")
        kill "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 60 ]; do i=$((i + 1)); sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
        [ "$(cat "$CACHE/docker-data.owner" 2>/dev/null)" != "$pid" ] || rm -f "$CACHE/docker-data.owner"
        say "stopped dockerd (PID $pid)"
    fi
    # dockerd leaves its network-namespace bind mounts under the exec root
    grep -o " $WORK/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null || true; done
    rm -rf "$WORK"
    say "down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
