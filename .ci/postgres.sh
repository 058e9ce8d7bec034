#!/usr/bin/env bash
# Makes a local PostgreSQL 15 available for the PostgreSQL store's tests, and
# prints its URL as the last line on stdout (everything else goes to stderr):
#
#   export JWKS_TEST_DATABASE_URL=$(.ci/postgres.sh | tail -1)
#
# Idempotent; runs as root (Debian's pg_ctlcluster / pg_createcluster, and
# `su postgres` for the superuser work). If nothing answers on
# 127.0.0.1:5432 it starts cluster 15/main (creating it if missing, installing
# PostgreSQL with apt-get if it is not there at all), waits until it accepts
# connections, makes sure the login role jwks (password jwks, CREATEDB)
# exists, and checks that a password login over TCP to 127.0.0.1 works.
# PostgreSQL is left running.
set -euo pipefail

PG_VERSION=15
PG_CLUSTER=${JWKS_PG_CLUSTER:-main}   # overridable to test this script on a
PG_PORT=${JWKS_PG_PORT:-5432}         # scratch cluster beside the real one
PG_HOST=127.0.0.1
ROLE=jwks
PASSWORD=jwks
URL="postgres://$ROLE:$PASSWORD@$PG_HOST:$PG_PORT/postgres"
WAIT_SECONDS=30

log() { echo "postgres.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ $(id -u) == 0 ]] || die "run me as root (I use pg_ctlcluster and su postgres)"

# psql as the postgres superuser over the local socket (peer auth).
as_postgres() {
    su postgres -s /bin/sh -c "cd / && psql -X -q -v ON_ERROR_STOP=1 -p $PG_PORT $*"
}

accepting() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

if ! command -v pg_ctlcluster >/dev/null || [[ ! -x /usr/lib/postgresql/$PG_VERSION/bin/postgres ]]; then
    log "PostgreSQL $PG_VERSION is not installed; installing it with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq >&2
    timeout 600 apt-get install -y -qq "postgresql-$PG_VERSION" postgresql-client >&2
fi

if accepting; then
    log "PostgreSQL already accepts connections on $PG_HOST:$PG_PORT"
else
    # pg_isready exits 2 when nothing answers at all; 1 while a server is
    # starting up (then only wait for it).
    rc=0
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1 || rc=$?
    if [[ $rc == 2 ]]; then
        if ! pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { found = 1 } END { exit !found }'; then
            log "creating cluster $PG_VERSION/$PG_CLUSTER on port $PG_PORT"
            pg_createcluster -p "$PG_PORT" "$PG_VERSION" "$PG_CLUSTER" >&2
        fi
        cluster_port=$(pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { print $3 }')
        [[ $cluster_port == "$PG_PORT" ]] ||
            die "cluster $PG_VERSION/$PG_CLUSTER is configured for port $cluster_port, not $PG_PORT"
        log "starting cluster $PG_VERSION/$PG_CLUSTER"
        # pg_ctlcluster fails if the cluster is already up (e.g. started by a
        # concurrent run) - the wait below is what decides.
        timeout 60 pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2 ||
            log "pg_ctlcluster start exited non-zero; waiting for the server anyway"
    fi
    deadline=$((SECONDS + WAIT_SECONDS))
    until accepting; do
        if ((SECONDS >= deadline)); then
            log "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within ${WAIT_SECONDS}s"
            tail -n 20 "/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.5
    done
    log "PostgreSQL accepts connections on $PG_HOST:$PG_PORT"
fi

# The role: created once, its password and attributes re-asserted every run
# (the password is hashed with the server's password_encryption, scram-sha-256
# by default on 15).
as_postgres >&2 <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
    RAISE NOTICE 'created role $ROLE';
  ELSE
    ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
  END IF;
END
\$\$;
SQL

tcp_login() { PGCONNECT_TIMEOUT=5 psql -X -At "$URL" -c 'select 1' 2>&1; }

# Debian's pg_hba.conf allows scram-sha-256 logins from 127.0.0.1/32; if this
# one has been changed so that the role cannot log in over TCP, put a rule for
# it first and reload.
if ! out=$(tcp_login) || [[ $out != 1 ]]; then
    hba_file=$(as_postgres -At -c "'show hba_file'")
    rule="host all $ROLE $PG_HOST/32 scram-sha-256"
    log "password login over TCP failed ($out); adding '$rule' to the top of $hba_file"
    grep -qxF "$rule" "$hba_file" || sed -i "1i $rule" "$hba_file"
    as_postgres -c "'select pg_reload_conf()'" >/dev/null
    sleep 1
    out=$(tcp_login) || die "password login over TCP still fails: $out"
    [[ $out == 1 ]] || die "unexpected answer to 'select 1': $out"
fi
log "role $ROLE logs in over TCP with its password; it may create databases"

echo "$URL"
