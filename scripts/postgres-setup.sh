#!/usr/bin/env bash
# Installs PostgreSQL when missing and starts a throwaway cluster on 127.0.0.1 for gpuserve's tests and benchmarks.
#
# Prints one line on stdout, for eval:  export GPUSERVE_TEST_POSTGRES=postgresql://gpuserve:gpuserve@127.0.0.1:PORT/gpuserve
# (the role may create databases: the store tests make one per test module). Progress goes to stderr.
#
#   eval "$(bash scripts/postgres-setup.sh)"          # install if missing, initdb, start, create role/database
#   bash scripts/postgres-setup.sh --stop             # stop that cluster (pg_ctl stop -m fast)
#
# Idempotent: a cluster already answering on the port is reused. As root (CI), initdb and the server run
# as the `postgres` account the distribution's package creates (PostgreSQL refuses to run as root).
# Environment: GPUSERVE_PG_PORT (default 55432), GPUSERVE_PG_DATA (default /tmp/gpuserve-postgres-PORT),
# GPUSERVE_PG_WAIT_S (default 30).
set -euo pipefail

PORT=${GPUSERVE_PG_PORT:-55432}
DATA=${GPUSERVE_PG_DATA:-/tmp/gpuserve-postgres-$PORT}
WAIT_S=${GPUSERVE_PG_WAIT_S:-30}
ROLE=gpuserve
URL="postgresql://$ROLE:$ROLE@127.0.0.1:$PORT/$ROLE"

log() { echo "postgres-setup: $*" >&2; }
die() { echo "postgres-setup: ERROR: $*" >&2; exit 1; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# 1. packages
BIN=$(pg_bin)
if [[ -z $BIN ]]; then
    [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed; run as root (or apt-get install postgresql) first"
    log "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    BIN=$(pg_bin)
    [[ -n $BIN ]] || die "apt-get install postgresql left no /usr/lib/postgresql/*/bin"
fi

# Run a PostgreSQL program as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [[ ${1:-} == --stop ]]; then
    if [[ -f $DATA/postmaster.pid ]]; then
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
    else
        log "no cluster running under $DATA"
    fi
    exit 0
fi

# 2. cluster
if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    if [[ ! -f $DATA/PG_VERSION ]]; then
        log "initdb $DATA"
        mkdir -p "$DATA"
        [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$DATA"
        chmod 700 "$DATA"
        # trust on 127.0.0.1 only: a test cluster, listening nowhere else; --no-sync: nothing in it outlives a
        # crash of this host, and its fsyncs cost seconds on a busy one.
        as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-locale --no-sync >/dev/null
    fi
    log "starting on 127.0.0.1:$PORT"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t "$WAIT_S" \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$DATA -c max_connections=300" \
        start >&2 || die "the server did not start; see $DATA/server.log"
fi

# 3. role and database (CREATEDB: the store tests make a throwaway database per test module)
psql_admin() { "$BIN/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tA "$@"; }
if [[ $(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'") != 1 ]]; then
    psql_admin -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$ROLE'"
fi
if [[ $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname='$ROLE'") != 1 ]]; then
    psql_admin -c "CREATE DATABASE $ROLE OWNER $ROLE"
fi
log "ready: $URL (postmaster pid $(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || echo unknown))"
echo "export GPUSERVE_TEST_POSTGRES=$URL"
