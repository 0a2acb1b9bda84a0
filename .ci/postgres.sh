#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on loopback for the tests and prints its URL.
# Installs PostgreSQL from Debian's packages where it is missing. Needs root.
set -euo pipefail

port="${METASEARCH_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")"
data="$(mktemp -d /tmp/metasearch-pg.XXXXXX)"
chown postgres:postgres "$data"
password="metasearch-ci"
echo "$password" > "$data.pw" && chown postgres "$data.pw"
runuser -u postgres -- "$bin/initdb" -D "$data/db" -U metasearch --pwfile="$data.pw" \
    --auth=scram-sha-256 >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$data/db" -l "$data/log" -w start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=200" >/dev/null
PGPASSWORD="$password" "$bin/createdb" -h 127.0.0.1 -p "$port" -U metasearch metasearch
echo "postgresql+psycopg://metasearch:$password@127.0.0.1:$port/metasearch"
