#!/usr/bin/env bash
# gpuserve's multi-host layout on one machine, for trying it: PostgreSQL (the shared job store), two
# server replicas behind nginx (deploy/nginx.conf), workers on a local three-node Ray cluster with
# declared GPUs (scripts/ray-setup.sh). README.md, "Past one machine", explains each piece.
#
#   bash scripts/multihost-demo.sh           # bring it up; Ctrl-C brings it all down again
#   bash scripts/multihost-demo.sh --check   # bring it up, send jobs through the proxy and to each replica, bring it down
#
# The proxy listens on 127.0.0.1:PORT, the replicas on PORT+1 and PORT+2 (PORT: GPUSERVE_DEMO_PORT,
# default 8000). API key: sk-demo. PostgreSQL and Ray are stopped at the end only if this script
# started them. As root it installs what is missing (postgresql, nginx-light) from Debian's packages.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
PORT=${GPUSERVE_DEMO_PORT:-8000}
WORK=$(mktemp -d /tmp/gpuserve-demo-XXXXXX)
PY=${GPUSERVE_PYTHON:-}
if [[ -z $PY ]]; then
    if [[ -x $here/.venv/bin/python ]]; then PY=$here/.venv/bin/python; else PY=$(command -v python3); fi
fi
export GPUSERVE_PYTHON=$PY  # scripts/ray-setup.sh runs the cluster with the same interpreter
CHECK=0
[[ ${1:-} == --check ]] && CHECK=1
KEY=sk-demo

log() { echo "multihost-demo: $*" >&2; }
die() { echo "multihost-demo: ERROR: $*" >&2; exit 1; }

pids=()
started_pg=0
started_ray=0
cleanup() {
    set +e
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$pid" 2>/dev/null
    done
    ((started_ray)) && bash scripts/ray-setup.sh --stop >/dev/null 2>&1
    ((started_pg)) && bash scripts/postgres-setup.sh --stop >/dev/null 2>&1
    log "stopped; logs kept in $WORK"
}
trap cleanup EXIT

# 1. PostgreSQL, the one durable store every replica shares (its own cluster, port 55433 unless GPUSERVE_PG_PORT says).
export GPUSERVE_PG_PORT=${GPUSERVE_PG_PORT:-55433}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $pg_bin ]] || ! "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$GPUSERVE_PG_PORT"; then started_pg=1; fi
pg_env=$(bash scripts/postgres-setup.sh)
eval "$pg_env"
STORE=$GPUSERVE_TEST_POSTGRES

# 2. A Ray cluster: three nodes with 2 declared A100s each.
[[ -f ${GPUSERVE_RAY_DIR:-/tmp/gpuserve-ray}/address ]] || started_ray=1
ray_env=$(bash scripts/ray-setup.sh)
eval "$ray_env"

# 3. nginx
if ! command -v nginx >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "nginx is not installed; run as root (or apt-get install nginx-light) first"
    log "installing nginx-light"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \
        || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null; }
fi

# 4. An endpoint whose workers ask Ray for one A100 each.
cat >"$WORK/handler.py" <<'PY'
import os
from gpuserve import serverless

def handler(job):
    return {"echo": job["input"], "worker": os.environ["GPUSERVE_WORKER_ID"], "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}

serverless.start({"handler": handler})
PY
cat >"$WORK/endpoints.yaml" <<YAML
server:
  store: $STORE
  worker_url: http://127.0.0.1:$PORT   # the workers call nginx: any replica serves them, the next leader adopts them
  heartbeat_interval_s: 2
  drain_timeout_s: 5
  account_max_workers: null
api_keys: [$KEY]
endpoints:
  - id: demo
    handler: handler.py
    gpu_type: A100
    gpus_per_worker: 1
    scaling: {min_workers: 0, max_workers: 6, idle_timeout_s: 30}
YAML

# 5. Two replicas on the one store: each serves every route; one at a time runs the endpoint's Controller.
# The cluster's GPUs are declared, not real: --no-container-gpus, or an endpoint with an `image` added
# above would fail every start asking Docker for NVIDIA devices this host lacks.
for replica in 1 2; do
    port=$((PORT + replica))
    "$PY" -m gpuserve.cli serve "$WORK/endpoints.yaml" --host 127.0.0.1 --port "$port" --data-dir "$WORK/replica-$replica" \
        --backend ray --ray-address "$GPUSERVE_RAY_ADDRESS" --no-container-gpus --log-level warning >"$WORK/replica-$replica.log" 2>&1 &
    pids+=($!)
    log "replica $replica on 127.0.0.1:$port (log: $WORK/replica-$replica.log)"
done

# 6. nginx in front of them (the shipped config, on this run's ports).
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
sed -e "s/127.0.0.1:8000/127.0.0.1:$PORT/; s/127.0.0.1:8001/127.0.0.1:$((PORT + 1))/; s/127.0.0.1:8002/127.0.0.1:$((PORT + 2))/" \
    deploy/nginx.conf >"$WORK/nginx/nginx.conf"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" &
pids+=($!)

up() { curl -fsS -o /dev/null -H "Authorization: Bearer $KEY" "http://127.0.0.1:$1/v2/demo/health" 2>/dev/null; }
for _ in $(seq 1 240); do
    up "$((PORT + 1))" && up "$((PORT + 2))" && up "$PORT" && break
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || die "a process of the demo exited; see $WORK"; done
    sleep 0.5
done
up "$PORT" || die "the proxy did not answer within 120 s; see $WORK"
log "up: http://127.0.0.1:$PORT (API key $KEY), Ray at $GPUSERVE_RAY_ADDRESS, store $STORE"

if ((CHECK)); then
    "$PY" - "$PORT" "$KEY" <<'PY'
import sys
import time

import httpx

port, key = int(sys.argv[1]), sys.argv[2]
auth = {"Authorization": f"Bearer {key}"}
proxy, a, b = (f"http://127.0.0.1:{p}/v2/demo" for p in (port, port + 1, port + 2))
with httpx.Client(headers=auth, timeout=180) as http:
    # Through the proxy, which spreads requests over both replicas.
    for n in range(4):
        body = http.post(f"{proxy}/runsync?wait=120000", json={"input": {"n": n}}).json()
        assert body["status"] == "COMPLETED" and body["output"]["echo"] == {"n": n}, body
        print(f"job {n} via the proxy: COMPLETED on {body['output']['worker']} (GPU {body['output']['gpus']})")
    # Submitted to one replica, read from the other: one store.
    job = http.post(f"{a}/run", json={"input": {"n": "cross"}}).json()["id"]
    for _ in range(240):
        body = http.get(f"{b}/status/{job}").json()
        if body["status"] == "COMPLETED":
            break
        time.sleep(0.5)
    assert body["status"] == "COMPLETED", body
    print(f"job {job} submitted to replica 1, COMPLETED as read from replica 2")
PY
    log "check passed"
    exit 0
fi
log "Ctrl-C to stop"
wait "${pids[0]}"
