#!/usr/bin/env bash
# Start a private PostgreSQL on 127.0.0.1 for the tests (installing the Debian package if absent)
# and print its URL. Used by .ci/run; safe to run by hand: `eval $(bash .ci/postgres.sh)`.
set -euo pipefail
PORT="${MEMGEN_PG_PORT:-55432}"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing postgresql (Debian package)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) >&2
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DATA="${MEMGEN_PG_DATA:-/tmp/memgen-pg-$PORT}"
RUN_AS=()
if [ "$(id -u)" = 0 ]; then RUN_AS=(runuser -u postgres --); fi
if ! "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  rm -rf "$DATA"; mkdir -p "$DATA"
  [ "$(id -u)" = 0 ] && chown postgres "$DATA"
  "${RUN_AS[@]}" "$PGBIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
  "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$DATA/log" -w \
    -o "-p $PORT -h 127.0.0.1 -k /tmp" start >/dev/null
fi
# MLflow and Optuna each keep an alembic_version table: one database each
for db in memgen memgen_optuna; do
  "${RUN_AS[@]}" "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tc \
    "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 \
    || "${RUN_AS[@]}" "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$db"
done
echo "export MEMGEN_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PORT/memgen"
