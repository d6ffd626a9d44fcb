#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine, as root: installs what
# the tests need, starts a throwaway PostgreSQL, runs the tests, stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
npm ci --prefix tests/console --no-audit --no-fund --loglevel=error

PORT=$(free_port)
trap 'pg_stop; moto_stop; sshd_stop' EXIT
exit_on_signals
pg_start "$PORT"
S3_PORT=$(free_port)
moto_start "$S3_PORT"
sshd_start "$(free_port)"

export PORTCULLIS_TEST_PG_HOST=127.0.0.1
export PORTCULLIS_TEST_PG_PORT=$PORT
export PORTCULLIS_TEST_PG_SUPERUSER=postgres
export PORTCULLIS_TEST_PG_SUPERPASSWORD=$PG_SUPERPASSWORD
export PORTCULLIS_TEST_PG_CA=$PG_CA
export PORTCULLIS_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
# The SSH target (sshd_start exported DEMO_SSH_*); the tests change its host
# key in a copy of its config, so they get the directory too.
export PORTCULLIS_TEST_SSHD_DIR=$SSHD_DIR

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
