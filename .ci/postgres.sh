#!/usr/bin/env bash
# Set up a PostgreSQL server for the examples' tests, and print its DSN.
#
#   export TEMPO_PG_DSN="$(bash .ci/postgres.sh)"
#
# Installs PostgreSQL from Debian's packages if it is missing, creates (once) a
# cluster named "tempo" that listens on 127.0.0.1 only, starts it if it is down,
# and creates (once) the role and database "tempo". Idempotent: a second run
# only checks that all of this is in place. Needs root. The DSN is the only line
# on stdout; progress goes to stderr.
#
# Settings (environment): TEMPO_PG_PORT (default 5433; used only when the
# cluster is created), TEMPO_PG_USER, TEMPO_PG_PASSWORD, TEMPO_PG_DB (all
# "tempo" by default).
set -euo pipefail
# psql and friends run as the postgres user, who cannot enter the caller's cwd.
cd /

CLUSTER=tempo
PORT="${TEMPO_PG_PORT:-5433}"
PGUSER_NAME="${TEMPO_PG_USER:-tempo}"
PGPASSWORD_VALUE="${TEMPO_PG_PASSWORD:-tempo}"
PGDB_NAME="${TEMPO_PG_DB:-tempo}"

log() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root"
    exit 1
fi

# 1. The server packages.
if ! command -v pg_createcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1
then
    log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi
VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"

# 2. The cluster: created once, on 127.0.0.1 only.
cluster_port() { pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c { print $3 }'; }
if [ -z "$(cluster_port)" ]; then
    log "creating cluster $VERSION/$CLUSTER on 127.0.0.1:$PORT"
    pg_createcluster "$VERSION" "$CLUSTER" --port "$PORT" >&2
fi
PORT="$(cluster_port)"
# Written on every run, so a half-done earlier run is repaired; conf.d is read
# after postgresql.conf. A throwaway test server: durability is not needed.
mkdir -p "/etc/postgresql/$VERSION/$CLUSTER/conf.d"
printf '%s\n' "listen_addresses = '127.0.0.1'" "fsync = off" \
    > "/etc/postgresql/$VERSION/$CLUSTER/conf.d/tempo.conf"

# 3. Running. /run/postgresql is a tmpfs on some machines: recreate it. A server
# killed a moment ago can still look alive (its pid not yet reaped), so keep
# looking until it answers, and start it whenever it is seen down.
install -d -o postgres -g postgres -m 2775 /var/run/postgresql
for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    if ! pg_ctlcluster "$VERSION" "$CLUSTER" status >/dev/null 2>&1; then
        log "starting cluster $VERSION/$CLUSTER"
        pg_ctlcluster "$VERSION" "$CLUSTER" start >&2 || true
    fi
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PORT" || { log "server on 127.0.0.1:$PORT is not ready"; exit 1; }

# 4. The role and the database, over the local socket as the superuser.
psql_admin() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres "$@"; }
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PGUSER_NAME'")" != 1 ]; then
    log "creating role $PGUSER_NAME"
    psql_admin -c "CREATE ROLE \"$PGUSER_NAME\" LOGIN PASSWORD '$PGPASSWORD_VALUE'" >&2
else
    psql_admin -c "ALTER ROLE \"$PGUSER_NAME\" LOGIN PASSWORD '$PGPASSWORD_VALUE'" >&2
fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PGDB_NAME'")" != 1 ]; then
    log "creating database $PGDB_NAME"
    psql_admin -c "CREATE DATABASE \"$PGDB_NAME\" OWNER \"$PGUSER_NAME\"" >&2
fi

DSN="postgresql://$PGUSER_NAME:$PGPASSWORD_VALUE@127.0.0.1:$PORT/$PGDB_NAME"
# Check the DSN itself: password authentication over TCP.
PGCONNECT_TIMEOUT=5 psql -X -q "$DSN" -tAc "SELECT 1" >/dev/null
log "ready"
echo "$DSN"
