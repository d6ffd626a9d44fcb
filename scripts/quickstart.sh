#!/usr/bin/env bash
# A gateway in front of a throwaway PostgreSQL, with the example policies.
# Prints ready-to-paste psql lines; Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
echo "building portcullis..." >&2
cargo build --quiet --bin portcullis
BIN=target/debug/portcullis

PORT=${DEMO_PG_PORT:-55432}
trap 'kill $GATEWAY 2>/dev/null || true; pg_stop' EXIT
pg_start "$PORT"
psql -q -h /tmp -p "$PORT" -U postgres -c "create user app password 'apppw'"
psql -q -h /tmp -p "$PORT" -U postgres -c "create database app owner app"
PGPASSWORD=apppw psql -q -h 127.0.0.1 -p "$PORT" -U app -d app -f examples/quickstart/seed.sql >/dev/null

export DEMO_PG_HOST=127.0.0.1 DEMO_PG_PORT=$PORT DEMO_PG_DATABASE=app DEMO_PG_USER=app DEMO_PG_PASSWORD=apppw
export PORTCULLIS_DATA=${PORTCULLIS_DATA:-$(mktemp -d /tmp/portcullis-data.XXXXXX)}
CONFIG=examples/quickstart/portcullis.toml
LISTEN=${PORTCULLIS_PG_LISTEN:-127.0.0.1:15432}

"$BIN" serve --config "$CONFIG" &
GATEWAY=$!
for _ in $(seq 50); do
  curl -fsS "http://${PORTCULLIS_ADMIN_LISTEN:-127.0.0.1:9090}/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done

ALICE=$("$BIN" dev token --config "$CONFIG" --user alice@example.com --groups eng --ttl 8h)
DANA=$("$BIN" dev token --config "$CONFIG" --user dana@example.com --groups eng,dba,pii-readers --ttl 8h)
cat <<MSG

Portcullis is running in front of a throwaway PostgreSQL (data in $PORTCULLIS_DATA).

As alice (group eng: reads and writes, sees personal data masked):
  psql "host=${LISTEN%:*} port=${LISTEN##*:} dbname=demo user=alice password=$ALICE"

As dana (groups eng, dba, pii-readers: DDL and DCL too, personal data in clear):
  psql "host=${LISTEN%:*} port=${LISTEN##*:} dbname=demo user=dana password=$DANA"

Try:  select * from customers;   select upper(email) from customer_contacts;
      delete from orders;   drop table orders;
alice's "delete from orders" is held for a DBA: psql waits. Approve it as dana:
  PORTCULLIS_TOKEN=$DANA $BIN requests --config $CONFIG
  PORTCULLIS_TOKEN=$DANA $BIN approve 1 --config $CONFIG --comment "test data"
Then, in another terminal:
  PORTCULLIS_DATA=$PORTCULLIS_DATA $BIN audit tail --config $CONFIG
  PORTCULLIS_DATA=$PORTCULLIS_DATA $BIN audit verify --config $CONFIG
  PORTCULLIS_DATA=$PORTCULLIS_DATA $BIN sessions --config $CONFIG
  PORTCULLIS_DATA=$PORTCULLIS_DATA $BIN replay --config $CONFIG <session id> --speed 0

Ctrl-C stops the gateway and the database.
MSG
wait $GATEWAY
