#!/usr/bin/env bash
# A PostgreSQL for the master's tests (peng3dnet-master/tests/postgres.rs); prints its URL
# on stdout (everything else goes to stderr):
#   export PENG3DNET_TEST_POSTGRES="$(bash scripts/ensure-postgres.sh)"
# 1. A server already answering on 127.0.0.1:5432 as user postgres without a password
#    (trust), database `test` (created when missing): used as it is.
# 2. Else Debian's postgresql is installed when missing, its cluster started, user
#    postgres given a password, database `test` created.
# Each test run makes a schema of its own in it, so runs do not see each other.
set -euo pipefail

log() { echo "ensure-postgres: $*" >&2; }

answers() { (echo >/dev/tcp/127.0.0.1/5432) >/dev/null 2>&1; }

try_url() {
    local url="$1"
    if PGCONNECT_TIMEOUT=5 psql "$url" -Atc 'select 1' >/dev/null 2>&1; then
        echo "$url"
        return 0
    fi
    local base="${url%/test}/postgres"
    if PGCONNECT_TIMEOUT=5 psql "$base" -Atc 'create database test' >/dev/null 2>&1 \
        && PGCONNECT_TIMEOUT=5 psql "$url" -Atc 'select 1' >/dev/null 2>&1; then
        echo "$url"
        return 0
    fi
    return 1
}

TRUST_URL="postgres://postgres@127.0.0.1:5432/test"
PASSWORD_URL="postgres://postgres:peng3dnet@127.0.0.1:5432/test"

if answers && command -v psql >/dev/null 2>&1; then
    if try_url "$TRUST_URL" || try_url "$PASSWORD_URL"; then
        log "using the server on 127.0.0.1:5432"
        exit 0
    fi
fi

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    log "installing Debian's postgresql"
    bash "$(dirname "${BASH_SOURCE[0]}")/ensure-debian-packages.sh" \
        pg_ctlcluster=postgresql psql=postgresql-client >&2
fi

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        sudo -u postgres "$@"
    fi
}

if ! answers; then
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
    if [ -z "$version" ]; then
        log "error: postgresql is installed but has no cluster under /etc/postgresql"
        exit 1
    fi
    log "starting cluster $version/main"
    if [ "$(id -u)" -eq 0 ]; then
        pg_ctlcluster "$version" main start >&2
    else
        sudo pg_ctlcluster "$version" main start >&2
    fi
    for _ in $(seq 1 50); do
        answers && break
        sleep 0.2
    done
fi
if ! answers; then
    log "error: PostgreSQL does not answer on 127.0.0.1:5432"
    exit 1
fi

# Local socket as the postgres user (peer auth), to set a password for TCP.
as_postgres psql -q -c "ALTER USER postgres PASSWORD 'peng3dnet'" >&2
as_postgres psql -Atc "select 1 from pg_database where datname = 'test'" | grep -q 1 \
    || as_postgres createdb test >&2
if try_url "$TRUST_URL" || try_url "$PASSWORD_URL"; then
    exit 0
fi
log "error: cannot connect to PostgreSQL on 127.0.0.1:5432 as postgres"
exit 1
