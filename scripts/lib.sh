# Shared shell helpers for the quickstart, the tests and the benchmarks.
# Sourced, not run. Everything here works as root on a fresh Debian machine.

# Signals end the script as an ordinary exit would, so that its EXIT trap
# stops what it started: bash runs that trap on Ctrl-C, but not when it is
# killed by a TERM or a HUP (a closed terminal) it does not trap.
exit_on_signals() {
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
}

# Installs what the project needs to build and to run its tests, once.
ensure_packages() {
  local missing=()
  command -v psql >/dev/null || missing+=(postgresql-client)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || missing+=(postgresql-contrib)
  command -v clang >/dev/null || missing+=(clang)
  [ -e /usr/lib/llvm-*/lib/libclang.so ] 2>/dev/null || dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
  command -v node >/dev/null || missing+=(nodejs npm)
  command -v cc >/dev/null || missing+=(build-essential)
  [ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  # git (with `git daemon` and `git http-backend`) serves policy repositories
  # in the tests; python3 runs the CGI server in front of http-backend.
  command -v git >/dev/null || missing+=(git)
  command -v python3 >/dev/null || missing+=(python3)
  # python3-venv: the recording tests run `moto` (S3) from a virtualenv.
  python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  # Debian's Chromium (/usr/bin/chromium), driven by playwright-core in the
  # web console's browser test (tests/console); nothing downloads a browser.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  # OpenSSH: the SSH target (sshd) and the clients the SSH tests drive
  # (ssh, scp, sftp); tmux types into an interactive shell as a person would.
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh >/dev/null || missing+=(openssh-client)
  command -v tmux >/dev/null || missing+=(tmux)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # The packaged cluster is not used; stop it if the package started one.
  command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
    pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
  done
  return 0
}

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1
}

# pg_start PORT: a throwaway cluster under a temp dir, as the postgres user,
# with a superuser `postgres` (a random password, in PG_SUPERPASSWORD) and
# SCRAM on TCP. Its socket is in PG_DIR, which only root and postgres can
# enter: the SSH target of the quickstart is an account on this machine, and
# must reach the database through the gateway only. Sets PG_DIR and
# PG_SUPERPASSWORD; stop it with pg_stop.
pg_start() {
  local port=$1 bin
  bin=$(pg_bin)
  PG_DIR=$(mktemp -d /tmp/portcullis-pg.XXXXXX)
  chown postgres:postgres "$PG_DIR"
  chmod 700 "$PG_DIR"
  PG_SUPERPASSWORD=$(openssl rand -hex 16)
  echo "$PG_SUPERPASSWORD" > "$PG_DIR.pw"
  chown postgres "$PG_DIR.pw"
  su postgres -c "$bin/initdb -D $PG_DIR -U postgres --pwfile=$PG_DIR.pw --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8" >/dev/null
  rm -f "$PG_DIR.pw"
  # The roles portcullis_md5 and portcullis_password log in with those
  # methods, so the gateway's support for them is tested against the real server.
  sed -i '/^# TYPE/a host all portcullis_md5 127.0.0.1/32 md5\nhost all portcullis_password 127.0.0.1/32 password' "$PG_DIR/pg_hba.conf"
  # A test CA and a server certificate it signs for 127.0.0.1, so TLS to the
  # target can be verified for real; PG_CA (the CA) is readable by anyone.
  PG_CA="$PG_DIR.ca.pem"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=portcullis-test-ca -keyout "$PG_DIR.ca.key" -out "$PG_CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
    -keyout "$PG_DIR/server.key" -out "$PG_DIR.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$PG_DIR.ext"
  openssl x509 -req -in "$PG_DIR.csr" -CA "$PG_CA" -CAkey "$PG_DIR.ca.key" -CAcreateserial \
    -days 2 -extfile "$PG_DIR.ext" -out "$PG_DIR/server.crt" 2>/dev/null
  rm -f "$PG_DIR.csr" "$PG_DIR.ext" "$PG_DIR.ca.key" "$PG_DIR.ca.srl"
  chown postgres:postgres "$PG_DIR/server.key" "$PG_DIR/server.crt"
  chmod 600 "$PG_DIR/server.key"
  chmod 644 "$PG_CA"
  su postgres -c "$bin/pg_ctl -D $PG_DIR -l $PG_DIR/server.log -w -t 30 start -o '-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c ssl=on'" >/dev/null
}

pg_stop() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ]; then
    su postgres -c "$(pg_bin)/pg_ctl -D $PG_DIR -m fast -w stop" >/dev/null 2>&1 || true
    rm -rf "$PG_DIR" "$PG_DIR.ca.pem"
  fi
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# An S3-compatible server for the recording tests: `moto` from PyPI in a
# virtualenv under ~/.cache (made once), on loopback. Sets MOTO_PID; stop it
# with moto_stop.
moto_start() { # PORT
  local port=$1 venv=${PORTCULLIS_MOTO_VENV:-$HOME/.cache/portcullis/moto-venv}
  if [ ! -x "$venv/bin/moto_server" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' >/dev/null
  fi
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "moto did not start on port $port" >&2
  return 1
}

# sshd_start PORT: a throwaway OpenSSH server on loopback, logging in the
# user `portcullis-target` (made if missing) with a key made for the gateway.
# Exports DEMO_SSH_HOST, DEMO_SSH_PORT, DEMO_SSH_USER, DEMO_SSH_KEY_FILE (the
# gateway's private key for it) and DEMO_SSH_HOST_KEY (its public host key);
# sets SSHD_DIR. Stop it with sshd_stop.
sshd_start() { # PORT
  local port=$1 user=portcullis-target
  SSHD_DIR=$(mktemp -d /tmp/portcullis-sshd.XXXXXX)
  chmod 755 "$SSHD_DIR"
  mkdir -p /run/sshd && chmod 755 /run/sshd
  ssh-keygen -q -t ed25519 -N '' -C target-host -f "$SSHD_DIR/hostkey"
  ssh-keygen -q -t ed25519 -N '' -C portcullis-gateway -f "$SSHD_DIR/gateway"
  id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
  # No password, but not locked: sshd refuses locked accounts without PAM.
  usermod -p '*' "$user"
  # The key is authorized in this server's own directory, not the user's
  # home, so that several servers (tests, the quickstart) can run at once;
  # that directory is under /tmp, hence StrictModes off (a throwaway server).
  install -m 644 "$SSHD_DIR/gateway.pub" "$SSHD_DIR/authorized_keys"
  printf '%s\n' "Port $port" "ListenAddress 127.0.0.1" "HostKey $SSHD_DIR/hostkey" \
    "AuthorizedKeysFile $SSHD_DIR/authorized_keys" "StrictModes no" \
    "PidFile $SSHD_DIR/sshd.pid" "PubkeyAuthentication yes" "PasswordAuthentication no" \
    "KbdInteractiveAuthentication no" "UsePAM no" "PermitRootLogin no" "AllowUsers $user" \
    "AllowTcpForwarding yes" "GatewayPorts no" "MaxSessions 64" "MaxStartups 64" \
    "Subsystem sftp internal-sftp" > "$SSHD_DIR/sshd_config"
  /usr/sbin/sshd -t -f "$SSHD_DIR/sshd_config"
  /usr/sbin/sshd -f "$SSHD_DIR/sshd_config" -E "$SSHD_DIR/sshd.log"
  export DEMO_SSH_HOST=127.0.0.1 DEMO_SSH_PORT=$port DEMO_SSH_USER=$user
  export DEMO_SSH_KEY_FILE=$SSHD_DIR/gateway
  DEMO_SSH_HOST_KEY=$(cat "$SSHD_DIR/hostkey.pub")
  export DEMO_SSH_HOST_KEY
  for _ in $(seq 50); do
    [ -s "$SSHD_DIR/sshd.pid" ] && return 0
    sleep 0.1
  done
  echo "sshd did not start on port $port (see $SSHD_DIR/sshd.log)" >&2
  return 1
}

sshd_stop() {
  if [ -n "${SSHD_DIR:-}" ] && [ -d "$SSHD_DIR" ]; then
    [ -s "$SSHD_DIR/sshd.pid" ] && kill "$(cat "$SSHD_DIR/sshd.pid")" 2>/dev/null || true
    rm -rf "$SSHD_DIR"
  fi
}

moto_stop() {
  if [ -n "${MOTO_PID:-}" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
}
