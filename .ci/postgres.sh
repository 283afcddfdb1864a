#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries for tests/serve, which start a throwaway cluster
# from them (initdb + pg_ctl on a private Unix socket; see tests/serve/postgres_server.py).
# Never fails the build: without PostgreSQL those tests skip and print why.
# Call it from .ci/run before pytest:  bash .ci/postgres.sh
set -u

have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; }

if have_postgres; then
    echo "postgres.sh: found $(ls -d /usr/lib/postgresql/*/bin | tail -n 1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "postgres.sh: no apt-get here; the PostgreSQL tests will be skipped"
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        echo "postgres.sh: not root and no password-less sudo; the PostgreSQL tests will be skipped"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if timeout 600 $sudo apt-get update -qq \
    && timeout 900 $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null; then
    :
else
    echo "postgres.sh: installing postgresql failed; the PostgreSQL tests will be skipped"
fi
if have_postgres; then
    echo "postgres.sh: installed $(ls -d /usr/lib/postgresql/*/bin | tail -n 1)"
else
    echo "postgres.sh: still no PostgreSQL server binaries; the PostgreSQL tests will be skipped"
fi
exit 0
