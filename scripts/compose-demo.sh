#!/bin/sh
# The docker-compose demo on a machine without Docker Hub (as tests/docker/test_compose_demo.py does it):
# starts a dockerd of its own, makes a Debian base image with debootstrap, builds the project image on it
# and runs `docker-compose up -d`. With a normal Docker, just run `docker compose up --build` instead.
#   sudo scripts/compose-demo.sh up      then: curl http://127.0.0.1:8080/productpage
#   sudo scripts/compose-demo.sh down    compose down -v, then stops the daemon by its PID
# Needs: apt-get install -y docker.io docker-compose debootstrap. State lives in $WORK (default /tmp/pyproxy-compose).
set -eu
WORK=${WORK:-/tmp/pyproxy-compose}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export DOCKER_HOST="unix://$WORK/docker.sock"
export PYPROXY_IMAGE=pyproxy-mesh:local
COMPOSE="docker-compose -p pyproxydemo -f $ROOT/docker-compose.yml"

up() {
    mkdir -p "$WORK"
    if [ ! -S "$WORK/docker.sock" ]; then
        dockerd --host "$DOCKER_HOST" --data-root "$WORK/data" --exec-root "$WORK/exec" \
            --pidfile "$WORK/dockerd.pid" --bridge none >"$WORK/dockerd.log" 2>&1 &
        i=0; until docker info >/dev/null 2>&1; do i=$((i + 1)); [ $i -lt 60 ] || { echo "dockerd did not start; see $WORK/dockerd.log"; exit 1; }; sleep 1; done
    fi
    if ! docker image inspect localbase:bookworm >/dev/null 2>&1; then
        [ -d "$WORK/rootfs" ] || debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs"
        tar -C "$WORK/rootfs" -c . | docker import - localbase:bookworm
    fi
    # A build context outside the repository: this machine's CA bundle goes into it, never into git.
    rm -rf "$WORK/context" && mkdir -p "$WORK/context/examples"
    cp "$ROOT/Dockerfile" "$ROOT/pyproject.toml" "$ROOT/README.md" "$WORK/context/"
    cp -r "$ROOT/pyproxy" "$ROOT/control" "$WORK/context/"
    cp -r "$ROOT/examples/mesh" "$WORK/context/examples/"
    [ ! -f /etc/ssl/certs/ca-certificates.crt ] || cp /etc/ssl/certs/ca-certificates.crt "$WORK/context/build-ca.crt"
    docker build --network host --build-arg BASE_IMAGE=localbase:bookworm -t "$PYPROXY_IMAGE" "$WORK/context"
    $COMPOSE up -d --no-build
    echo "up: curl http://127.0.0.1:${GATEWAY_PORT:-8080}/productpage ; DOCKER_HOST=$DOCKER_HOST $COMPOSE ps"
}

down() {
    [ ! -S "$WORK/docker.sock" ] || $COMPOSE down -v --remove-orphans --timeout 10 || true
    if [ -f "$WORK/dockerd.pid" ]; then
        pid=$(cat "$WORK/dockerd.pid"); kill "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 1; done
    fi
    # dockerd leaves its network-namespace bind mount under the exec root
    grep -o " $WORK/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount "$m" || true; done
    rm -rf "$WORK"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
