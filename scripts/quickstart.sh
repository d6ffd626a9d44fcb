#!/usr/bin/env bash
# A gateway in front of a throwaway PostgreSQL and a throwaway sshd, with the
# example policies. Prints ready-to-paste psql and ssh lines; Ctrl-C stops
# everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
echo "building portcullis..." >&2
cargo build --quiet --bin portcullis
BIN=target/debug/portcullis

PORT=${DEMO_PG_PORT:-55432}
trap 'kill ${GATEWAY:-} 2>/dev/null || true; pg_stop; sshd_stop' EXIT
exit_on_signals
pg_start "$PORT"
# The target's password: the gateway holds it, and nobody else needs it (an
# SSH session to demo-ssh runs on this machine, and could read a fixed one
# in this script).
APP_PASSWORD=$(openssl rand -hex 16)
psql -q -h "$PG_DIR" -p "$PORT" -U postgres -c "create user app password '$APP_PASSWORD'"
psql -q -h "$PG_DIR" -p "$PORT" -U postgres -c "create database app owner app"
PGPASSWORD=$APP_PASSWORD psql -q -h 127.0.0.1 -p "$PORT" -U app -d app -f examples/quickstart/seed.sql >/dev/null

export DEMO_PG_HOST=127.0.0.1 DEMO_PG_PORT=$PORT DEMO_PG_DATABASE=app DEMO_PG_USER=app DEMO_PG_PASSWORD=$APP_PASSWORD
# A throwaway sshd behind the `demo-ssh` target (exports DEMO_SSH_*).
sshd_start "${DEMO_SSH_PORT:-$(free_port)}"
export PORTCULLIS_DATA=${PORTCULLIS_DATA:-$(mktemp -d /tmp/portcullis-data.XXXXXX)}
CONFIG=examples/quickstart/portcullis.toml
LISTEN=${PORTCULLIS_PG_LISTEN:-127.0.0.1:15432}
SSH_LISTEN=${PORTCULLIS_SSH_LISTEN:-127.0.0.1:2222}

"$BIN" serve --config "$CONFIG" &
GATEWAY=$!
for _ in $(seq 50); do
  curl -fsS "http://${PORTCULLIS_ADMIN_LISTEN:-127.0.0.1:9090}/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done

ALICE=$("$BIN" dev token --config "$CONFIG" --user alice@example.com --groups eng --ttl 8h)
DANA=$("$BIN" dev token --config "$CONFIG" --user dana@example.com --groups eng,dba,pii-readers --ttl 8h)
OLGA=$("$BIN" dev token --config "$CONFIG" --user olga@example.com --groups ops --ttl 8h)
# alice's SSH key, with a certificate from the gateway: plain ssh logs in.
ssh-keygen -q -t ed25519 -N '' -C alice -f "$PORTCULLIS_DATA/alice_ed25519"
PORTCULLIS_TOKEN=$ALICE "$BIN" ssh-cert --config "$CONFIG" --key "$PORTCULLIS_DATA/alice_ed25519.pub" >/dev/null
SSH_LINE="ssh -i $PORTCULLIS_DATA/alice_ed25519 -o UserKnownHostsFile=$PORTCULLIS_DATA/known_hosts -o StrictHostKeyChecking=accept-new -p ${SSH_LISTEN##*:} demo-ssh@${SSH_LISTEN%:*}"
cat <<MSG

Portcullis is running in front of a throwaway PostgreSQL and a throwaway sshd
(data in $PORTCULLIS_DATA).

As alice (group eng: reads and writes, sees personal data masked):
  psql "host=${LISTEN%:*} port=${LISTEN##*:} dbname=demo user=alice password=$ALICE"

As dana (groups eng, dba, pii-readers: DDL and DCL too, personal data in clear):
  psql "host=${LISTEN%:*} port=${LISTEN##*:} dbname=demo user=dana password=$DANA"

Try:  select * from customers;   select email from customer_contacts;   select upper(email) from customers;
      delete from orders;   drop table orders;
alice's "delete from orders" is held for a DBA: psql waits. Approve it as dana:
  PORTCULLIS_TOKEN=$DANA $BIN requests --config $CONFIG
  PORTCULLIS_TOKEN=$DANA $BIN approve 1 --config $CONFIG --comment "test data"

SSH as alice, with the certificate made for her key. Commands sent with ssh are
decided one by one: read-only ones run, \`rm -rf /\` is refused, \`systemctl
restart\` waits for ops; forwarding is refused. Her interactive shell is
recorded, and what she types is audited, but not filtered:
  $SSH_LINE
  $SSH_LINE 'uptime; ls /tmp'
  $SSH_LINE 'sh -c "ls; rm -rf /"'
  $SSH_LINE 'systemctl restart cron'
Approve the restart as olga (group ops):
  PORTCULLIS_TOKEN=$OLGA $BIN approve N --config $CONFIG --comment "ok"   # N: the request ssh printed
(Without a certificate, ssh asks for a token: paste alice's.)

Then, in another terminal:
  PORTCULLIS_DATA=$PORTCULLIS_DATA $BIN audit tail --config $CONFIG
  PORTCULLIS_DATA=$PORTCULLIS_DATA $BIN audit verify --config $CONFIG
  PORTCULLIS_DATA=$PORTCULLIS_DATA $BIN audit export --config $CONFIG -o audit-0001.jsonl
  $BIN audit verify --key $PORTCULLIS_DATA/audit-signing.pub --export audit-0001.jsonl
  PORTCULLIS_DATA=$PORTCULLIS_DATA $BIN sessions --config $CONFIG
  PORTCULLIS_DATA=$PORTCULLIS_DATA $BIN replay --config $CONFIG <session id> --speed 0
  PORTCULLIS_DATA=$PORTCULLIS_DATA $BIN replay --config $CONFIG <ssh session id> --asciicast > shell.cast

Ctrl-C stops the gateway, the database and sshd.
MSG
wait $GATEWAY
