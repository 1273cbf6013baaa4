#!/usr/bin/env bash
# Installs Debian's docker-registry when missing and starts a throwaway image registry on 127.0.0.1 for gpuserve's tests.
#
# Prints one line on stdout, for eval:
#   export GPUSERVE_TEST_REGISTRY=127.0.0.1:PORT GPUSERVE_TEST_REGISTRY_USER=gpuserve GPUSERVE_TEST_REGISTRY_PASSWORD=...
# Progress goes to stderr.
#
#   eval "$(bash scripts/registry-setup.sh)"     # install if missing, start (or reuse) the registry
#   bash scripts/registry-setup.sh --stop        # stop it and delete its storage
#
# The registry asks for a password (htpasswd, bcrypt), so the tests can check pulls with the Docker
# config's credentials and without them (unauthorized). Plain HTTP: the Docker engine treats
# 127.0.0.0/8 as an insecure registry by default (`docker info`: Insecure Registries), no TLS needed.
# Idempotent: a registry started earlier from the same state folder and still answering is reused.
# Environment: GPUSERVE_REGISTRY_DIR (default /tmp/gpuserve-registry), GPUSERVE_REGISTRY_PORT (default: a
# free port), GPUSERVE_REGISTRY_WAIT_S (default 30), PYTHON (host python, to find a free port and probe).
set -euo pipefail

DIR=${GPUSERVE_REGISTRY_DIR:-/tmp/gpuserve-registry}
WAIT_S=${GPUSERVE_REGISTRY_WAIT_S:-30}
PYTHON=${PYTHON:-$(command -v python3)}
USER_NAME=gpuserve
PASSWORD=gpuserve-registry  # a throwaway registry on loopback: the password only has to exist

log() { echo "registry-setup: $*" >&2; }
die() { echo "registry-setup: ERROR: $*" >&2; exit 1; }

running_pid() {
    [[ -f $DIR/pid ]] || return 1
    local pid
    pid=$(cat "$DIR/pid")
    kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == docker-registry* ]] || return 1
    echo "$pid"
}

# The registry's /v2/ answers 401 (it wants the password) once it listens.
answers() {
    "$PYTHON" - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=2)
except urllib.error.HTTPError as exc:
    sys.exit(0 if exc.code == 401 else 1)
except OSError:
    sys.exit(1)
sys.exit(1)  # 200: a registry without a password is not the one started here
EOF
}

if [[ ${1:-} == --stop ]]; then
    if pid=$(running_pid); then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        log "stopped (pid $pid)"
    else
        log "no registry running from $DIR"
    fi
    rm -rf "$DIR"
    exit 0
fi

# 1. packages
missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; run as root (or apt-get install them) first"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # The package's own service stays off (no init here; policy-rc.d may refuse it anyway): this script runs it.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

say_env() {
    echo "export GPUSERVE_TEST_REGISTRY=127.0.0.1:$1 GPUSERVE_TEST_REGISTRY_USER=$USER_NAME GPUSERVE_TEST_REGISTRY_PASSWORD=$PASSWORD"
}

# 2. reuse a running one
if pid=$(running_pid) && port=$(cat "$DIR/port" 2>/dev/null) && answers "$port"; then
    log "reusing the registry on 127.0.0.1:$port (pid $pid)"
    say_env "$port"
    exit 0
fi

# 3. configure and start
PORT=${GPUSERVE_REGISTRY_PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
rm -rf "$DIR"
mkdir -p "$DIR/storage"
htpasswd -Bbn "$USER_NAME" "$PASSWORD" >"$DIR/htpasswd" 2>/dev/null
cat >"$DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
auth:
  htpasswd:
    realm: gpuserve-test
    path: $DIR/htpasswd
EOF
log "starting docker-registry on 127.0.0.1:$PORT (log: $DIR/registry.log)"
setsid nohup docker-registry serve "$DIR/config.yml" >"$DIR/registry.log" 2>&1 </dev/null &
echo $! >"$DIR/pid"
echo "$PORT" >"$DIR/port"
deadline=$((SECONDS + WAIT_S))
until answers "$PORT"; do
    if ! kill -0 "$(cat "$DIR/pid")" 2>/dev/null || ((SECONDS >= deadline)); then
        tail -n 20 "$DIR/registry.log" >&2 || true
        die "docker-registry did not answer on 127.0.0.1:$PORT within ${WAIT_S}s"
    fi
    sleep 0.2
done
log "ready: 127.0.0.1:$PORT (pid $(cat "$DIR/pid"))"
say_env "$PORT"
