#!/bin/sh
# mcs-postgres: PostgreSQL 15 in the foreground, on the data directory $PGDATA (a volume).
#
# First start (an empty $PGDATA): initdb with `mcs` as the cluster's superuser, its password from the
# file POSTGRES_PASSWORD_FILE (compose: the `postgres_password` secret) or else POSTGRES_PASSWORD, hashed
# with scram-sha-256; then the database `mcs`, owned by it. Connections over the network need that
# password (scram-sha-256, from any address); inside this container the Unix socket trusts local users
# (`docker compose exec postgres psql -U mcs`). Later starts keep the password they find: change it with
# ALTER ROLE, then in .env. No password on the first start: one line on stderr and exit 78 (EX_CONFIG).
#
# Extra arguments go to `postgres` (e.g. `-c max_connections=300`).
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}

fail() {
    echo "mcs-postgres: $*" >&2
    exit 78
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        [ -r "$POSTGRES_PASSWORD_FILE" ] || fail "cannot read POSTGRES_PASSWORD_FILE ($POSTGRES_PASSWORD_FILE)"
        password=$(head -n 1 "$POSTGRES_PASSWORD_FILE")
    else
        password=${POSTGRES_PASSWORD:-}
    fi
    [ -n "$password" ] || fail "set POSTGRES_PASSWORD in .env (e.g. openssl rand -hex 24): the first start needs the mcs role's password"
    # initdb reads the password from a file, never from its command line (which `ps` shows).
    pwfile=$(mktemp)
    trap 'rm -f "$pwfile"' EXIT
    printf '%s\n' "$password" > "$pwfile"
    unset password
    initdb --pgdata="$PGDATA" --username=mcs --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 > /dev/null
    rm -f "$pwfile"
    # initdb's host lines cover loopback only; other containers come from the compose network.
    {
        echo "host all all 0.0.0.0/0 scram-sha-256"
        echo "host all all ::/0 scram-sha-256"
    } >> "$PGDATA/pg_hba.conf"
    # Single-user mode: no server listens while the cluster is not ready (the healthcheck stays red).
    echo "CREATE DATABASE mcs OWNER mcs" | postgres --single -D "$PGDATA" postgres > /dev/null
    echo "mcs-postgres: initialised $PGDATA (role and database mcs)" >&2
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
