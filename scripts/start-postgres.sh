#!/usr/bin/env bash
# Make sure a local PostgreSQL server answers with a database for the tests; start Debian's
# default cluster if it is down (there is no init system on the test/CI machines).
# Prints the URL of the test database on stdout (the password is the fixed test password:
# the server listens on localhost only).
#
# Usage: scripts/start-postgres.sh
# Env:   PG_WAIT  seconds to wait for the server to answer (default 60)
set -euo pipefail

prog=${0##*/}
die() { echo "$prog: error: $*" >&2; exit 1; }

[ $# -eq 0 ] || die "takes no arguments (usage: $prog)"
[ "$(id -u)" -eq 0 ] || die "must run as root (it starts the cluster as user postgres)"
command -v pg_lsclusters >/dev/null || die "no PostgreSQL on this machine (apt-get install postgresql)"

wait_s=${PG_WAIT:-60}
user=corral_test password=corral_test db=corral_test

cluster=$(pg_lsclusters --no-header | awk 'NR == 1 {print $1 " " $2}')
if [ -z "$cluster" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    [ -n "$version" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
    pg_createcluster "$version" main >/dev/null || die "pg_createcluster $version main failed"
    cluster="$version main"
fi
read -r version name <<<"$cluster"
port=$(pg_lsclusters --no-header | awk -v v="$version" -v n="$name" '$1 == v && $2 == n {print $3}')

if ! pg_lsclusters --no-header | awk -v v="$version" -v n="$name" '$1 == v && $2 == n {print $4}' |
        grep -q online; then
    pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start >&2 ||
        die "could not start cluster $version/$name (see /var/log/postgresql/)"
fi

psql_() { su postgres -c "psql -p $port -XqAt -v ON_ERROR_STOP=1 $*"; }
for _ in $(seq "$wait_s"); do
    psql_ "-c 'SELECT 1'" >/dev/null 2>&1 && break
    sleep 1
done
psql_ "-c 'SELECT 1'" >/dev/null 2>&1 || die "PostgreSQL on port $port did not answer within ${wait_s}s"

if [ "$(psql_ "-c \"SELECT 1 FROM pg_roles WHERE rolname = '$user'\"")" != 1 ]; then
    psql_ "-c \"CREATE ROLE $user LOGIN PASSWORD '$password'\"" >/dev/null
fi
if [ "$(psql_ "-c \"SELECT 1 FROM pg_database WHERE datname = '$db'\"")" != 1 ]; then
    psql_ "-c \"CREATE DATABASE $db OWNER $user\"" >/dev/null
fi
echo "postgresql://$user:$password@127.0.0.1:$port/$db"
