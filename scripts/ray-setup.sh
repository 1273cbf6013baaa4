#!/usr/bin/env bash
# Starts a local multi-node Ray cluster on 127.0.0.1 with declared GPUs, for gpuserve's Ray backend and cluster sweeps.
#
# Prints one line on stdout, for eval:  export GPUSERVE_RAY_ADDRESS=127.0.0.1:PORT  (progress goes to stderr)
#
#   eval "$(bash scripts/ray-setup.sh)"     # a head and NODES-1 more raylets, each declaring GPUS GPUs of GPU_TYPE
#   bash scripts/ray-setup.sh --stop        # stop that cluster (only the one this script started)
#
# Each node declares GPUS GPUs and the label resource {"gpu_type:GPU_TYPE": 1} (the Ray backend's
# convention, see gpuserve/backends/ray_backend.py); no GPU needs to exist, Ray counts what it is told.
# The cluster is held by scripts/ray_local_cluster.py (Ray's own Cluster utility: real raylets),
# since `ray start` would listen on every interface. Idempotent: a running one is reused.
# Environment: GPUSERVE_RAY_NODES (3), GPUSERVE_RAY_GPUS (2), GPUSERVE_RAY_GPU_TYPE (A100),
# GPUSERVE_RAY_OBJECT_STORE_BYTES (100000000 per node), GPUSERVE_RAY_DIR (/tmp/gpuserve-ray),
# GPUSERVE_RAY_WAIT_S (300), GPUSERVE_PYTHON (default .venv/bin/python, else python3).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
NODES=${GPUSERVE_RAY_NODES:-3}
GPUS=${GPUSERVE_RAY_GPUS:-2}
GPU_TYPE=${GPUSERVE_RAY_GPU_TYPE:-A100}
STORE_BYTES=${GPUSERVE_RAY_OBJECT_STORE_BYTES:-100000000}
DIR=${GPUSERVE_RAY_DIR:-/tmp/gpuserve-ray}
WAIT_S=${GPUSERVE_RAY_WAIT_S:-300}
PY=${GPUSERVE_PYTHON:-}
if [[ -z $PY ]]; then
    if [[ -x $here/.venv/bin/python ]]; then PY=$here/.venv/bin/python; else PY=$(command -v python3); fi
fi
PIDFILE=$DIR/holder.pid
ADDRFILE=$DIR/address

log() { echo "ray-setup: $*" >&2; }
die() { echo "ray-setup: ERROR: $*" >&2; exit 1; }
running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [[ ${1:-} == --stop ]]; then
    if running; then
        pid=$(cat "$PIDFILE")
        kill -TERM "$pid"
        for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        log "stopped the cluster held by pid $pid"
    else
        log "no cluster of this script running (no live pid in $PIDFILE)"
    fi
    rm -f "$PIDFILE" "$ADDRFILE"
    exit 0
fi

"$PY" -c "import ray" 2>/dev/null || die "$PY cannot import ray: pip install 'gpuserve[ray]' (or set GPUSERVE_PYTHON)"
mkdir -p "$DIR"
if running && [[ -s $ADDRFILE ]]; then
    log "a cluster is already up (pid $(cat "$PIDFILE")); reusing it"
else
    rm -f "$ADDRFILE"
    log "starting $NODES node(s), $GPUS x $GPU_TYPE each (log: $DIR/cluster.log)"
    setsid "$PY" "$here/scripts/ray_local_cluster.py" --nodes "$NODES" --gpus "$GPUS" --gpu-type "$GPU_TYPE" \
        --object-store-bytes "$STORE_BYTES" --address-file "$ADDRFILE" >"$DIR/cluster.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 $((WAIT_S * 2))); do
        [[ -s $ADDRFILE ]] && break
        running || die "the cluster did not start; see $DIR/cluster.log"
        sleep 0.5
    done
    [[ -s $ADDRFILE ]] || die "no cluster within $WAIT_S s; see $DIR/cluster.log"
fi
log "ready: $(cat "$ADDRFILE")"
echo "export GPUSERVE_RAY_ADDRESS=$(cat "$ADDRFILE")"
