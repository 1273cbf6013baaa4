#!/usr/bin/env bash
# Installs and starts a Docker engine when missing, then builds gpuserve's local images.
#
# Idempotent: every step checks first and is skipped when already done.
#   1. apt-get install docker.io debootstrap (as root, only when missing)
#   2. start `dockerd --bridge=none --iptables=false` in the background when `docker info` fails
#      (no bridge, no iptables: the engine creates no private-range network; containers use host networking)
#   3. gpuserve/base:bookworm   debootstrap minbase + python3 -> `docker import` (no registry is reachable)
#   4. gpuserve/worker:latest   FROM the base, gpuserve's worker SDK + httpx installed offline from wheels
#                               made on this host; rebuilt only when gpuserve's sources change (the hash
#                               and the build context come from gpuserve.backends.docker_images, the
#                               same code `gpuserve build` runs)
#   5. gpuserve/worker-runpod:latest  FROM gpuserve/worker, plus the runpod SDK (the version pyproject.toml pins,
#                               wheels made on this host): the image of the tests' runpod-SDK containers;
#                               rebuilt only when that version changes
# Environment: DOCKER_WAIT_S (default 60), DOCKERD_LOG (default /tmp/gpuserve-dockerd.log), PYTHON (host python).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=gpuserve/base:bookworm
WORKER_IMAGE=gpuserve/worker:latest
DOCKER_WAIT_S=${DOCKER_WAIT_S:-60}
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/gpuserve-dockerd.log}
PYTHON=${PYTHON:-$(command -v python3)}

log() { echo "docker-setup: $*"; }
die() { echo "docker-setup: ERROR: $*" >&2; exit 1; }

# 1. packages
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; run as root (or install them) first"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin:/sbin

# 2. engine
if ! docker info >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "no Docker engine answers and starting dockerd needs root"
    log "starting dockerd (log: $DOCKERD_LOG)"
    nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$DOCKERD_LOG" 2>&1 &
    deadline=$((SECONDS + DOCKER_WAIT_S))
    until docker info >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer \`docker info\` within ${DOCKER_WAIT_S}s (log: $DOCKERD_LOG)"
        fi
        sleep 0.5
    done
fi
log "engine up: $(docker version --format '{{.Server.Version}}')"

# 3. base image
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE present, reused"
else
    rootfs=$(mktemp -d /tmp/gpuserve-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "building $BASE_IMAGE with debootstrap (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv bookworm "$rootfs" \
        >/tmp/gpuserve-debootstrap.log 2>&1 || { tail -n 20 /tmp/gpuserve-debootstrap.log >&2; die "debootstrap failed"; }
    # Drop apt caches so the image stays small.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    log "$BASE_IMAGE built"
fi

# 4. worker image: rebuilt when gpuserve's sources (or its recipe, package data of gpuserve) change.
images() { PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m gpuserve.backends.docker_images "$@"; }
src_hash=$(images hash)
have_hash=$(docker image inspect -f '{{index .Config.Labels "gpuserve.source_hash"}}' "$WORKER_IMAGE" 2>/dev/null || true)
if [[ "$have_hash" == "$src_hash" ]]; then
    log "$WORKER_IMAGE up to date ($src_hash), reused"
else
    ctx=$(mktemp -d /tmp/gpuserve-worker-ctx.XXXXXX)
    trap 'rm -rf "$ctx"' EXIT
    log "building $WORKER_IMAGE (sources $src_hash)"
    images context "$ctx" >/dev/null
    DOCKER_BUILDKIT=0 docker build -q --label "gpuserve.source_hash=$src_hash" -t "$WORKER_IMAGE" "$ctx" >/dev/null
    rm -rf "$ctx"
    trap - EXIT
    log "$WORKER_IMAGE built"
fi
# 5. runpod-SDK worker image (tests/backends/test_docker_watchdog.py): the runpod version pyproject.toml pins.
RUNPOD_IMAGE=gpuserve/worker-runpod:latest
runpod_req=$(grep -o '"runpod==[^"]*"' pyproject.toml | head -n 1 | tr -d '"')
[[ -n "$runpod_req" ]] || die "pyproject.toml pins no runpod version"
have_req=$(docker image inspect -f '{{index .Config.Labels "gpuserve.runpod"}}' "$RUNPOD_IMAGE" 2>/dev/null || true)
if [[ "$have_req" == "$runpod_req" ]]; then
    log "$RUNPOD_IMAGE ($runpod_req) present, reused"
else
    ctx=$(mktemp -d /tmp/gpuserve-runpod-ctx.XXXXXX)
    trap 'rm -rf "$ctx"' EXIT
    log "building $RUNPOD_IMAGE ($runpod_req, about a minute)"
    "$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp \
        --platform manylinux2014_x86_64 -d "$ctx/wheels" "$runpod_req" || die "pip download $runpod_req failed"
    printf 'FROM %s\nCOPY wheels /tmp/wheels\nRUN pip install --no-cache-dir --no-index --find-links /tmp/wheels %s && rm -rf /tmp/wheels\n' \
        "$WORKER_IMAGE" "$runpod_req" >"$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q --label "gpuserve.runpod=$runpod_req" -t "$RUNPOD_IMAGE" "$ctx" >/dev/null
    rm -rf "$ctx"
    trap - EXIT
    log "$RUNPOD_IMAGE built"
fi
log "ready"
