#!/usr/bin/env bash
# start-postgres.sh STATE_DIR [PORT|auto]
#
# A private, throwaway PostgreSQL for tests: data in STATE_DIR/data, TCP on 127.0.0.1:PORT only
# (auto: a free port, retried if another process takes it first), its UNIX socket in a private
# short dir, trust authentication for local and 127.0.0.1/32 only, and no durability
# (fsync, synchronous_commit, full_page_writes off). Creates the role $PG_APP_USER (LOGIN
# CREATEDB) owning the database $PG_DB. Restarting on an existing STATE_DIR keeps its data.
# PostgreSQL refuses to run as root: as root it runs as PG_OS_USER (default postgres, else
# nobody), so STATE_DIR must be reachable by that user: use `mktemp -d /tmp/pg-XXXXXX`.
#
# stdout, exactly two lines:
#   POSTGRES READY pid=<postmaster pid> url=postgresql+asyncpg://USER:PASSWORD@127.0.0.1:PORT/DB
#   STOP: <this dir>/stop-postgres.sh STATE_DIR [--purge]
# STATE_DIR/pg.env holds DATABASE_URL, PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE for `source`.
# Timings and errors go to stderr; the server log is STATE_DIR/postgres.log.
#
# Environment: PG_BIN (dir with initdb, pg_ctl, postgres, psql), PG_OS_USER, PG_DB (supportbot_test),
# PG_APP_USER (supportbot), PG_APP_PASSWORD (supportbot), PG_AUTH (trust | scram-sha-256),
# PG_MAX_CONNECTIONS (200).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || die 2 "usage: $0 STATE_DIR [PORT|auto]"
STATE=$1
PORT=${2:-auto}
PG_DB=${PG_DB:-supportbot_test}
PG_APP_USER=${PG_APP_USER:-supportbot}
PG_APP_PASSWORD=${PG_APP_PASSWORD:-supportbot}
PG_AUTH=${PG_AUTH:-trust}
PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-200}
case $PG_AUTH in trust | scram-sha-256) ;; *) die 2 "PG_AUTH must be trust or scram-sha-256" ;; esac
case $PORT in auto | 0) PORT=auto ;; *[!0-9]* | '') die 2 "PORT must be a number or auto" ;; esac
[[ $PG_DB =~ ^[a-z_][a-z0-9_]*$ && $PG_APP_USER =~ ^[a-z_][a-z0-9_]*$ ]] \
  || die 2 "PG_DB and PG_APP_USER must be plain lowercase identifiers"
[[ $PG_APP_PASSWORD =~ ^[A-Za-z0-9_.~-]+$ ]] || die 2 "PG_APP_PASSWORD may hold only letters, digits and _ . ~ -"
case $STATE in /*) ;; *) STATE=$(pwd)/$STATE ;; esac
STATE=${STATE%/}

# ---- the server's binaries (Debian keeps them in /usr/lib/postgresql/<version>/bin) -------------
if [ -z "${PG_BIN:-}" ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$PG_BIN" ] && command -v initdb >/dev/null 2>&1; then
    PG_BIN=$(dirname "$(readlink -f "$(command -v initdb)")")
  fi
  [ -n "$PG_BIN" ] || die 3 "PostgreSQL is not installed; $INSTALL_HINT"
fi
for tool in initdb pg_ctl postgres psql; do
  [ -x "$PG_BIN/$tool" ] || die 3 "$PG_BIN/$tool is missing (set PG_BIN?); $INSTALL_HINT"
done

# ---- the user the server runs as ---------------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
  OS_USER=${PG_OS_USER:-}
  if [ -z "$OS_USER" ]; then
    if id -u postgres >/dev/null 2>&1; then OS_USER=postgres; else OS_USER=nobody; fi
  fi
  id -u "$OS_USER" >/dev/null 2>&1 || die 2 "the OS user $OS_USER does not exist"
  [ "$(id -u "$OS_USER")" != 0 ] || die 2 "PG_OS_USER must not be root"
  OS_GROUP=$(id -gn "$OS_USER")
  as_server() { env HOME="$STATE" setpriv --reuid="$OS_USER" --regid="$OS_GROUP" --init-groups -- "$@"; }
else
  OS_USER=$(id -un)
  OS_GROUP=$(id -gn)
  as_server() { env HOME="$STATE" "$@"; }
fi

# ---- the state dir: made, handed to the server's user, and proven reachable -------------------
CREATED=0
[ -d "$STATE" ] || CREATED=1
mkdir -p "$STATE"
if [ "$(id -u)" = 0 ]; then
  chown "$OS_USER:$OS_GROUP" "$STATE"
  chmod 0700 "$STATE"
fi
if ! as_server test -w "$STATE" -a -x "$STATE"; then
  blockers=$(blocking_parents "$STATE" "$OS_USER")
  [ $CREATED = 1 ] && rmdir "$STATE" 2>/dev/null
  die 5 "user $OS_USER cannot reach $STATE; blocked by:
${blockers:-  ?}
  use a state dir directly under /tmp, e.g. \$(mktemp -d /tmp/pg-XXXXXX)"
fi

# A UNIX socket path may not exceed 107 bytes: a short dir of its own for a long STATE.
SOCK_DIR=$STATE/s
if [ ${#SOCK_DIR} -gt 80 ]; then
  if [ -s "$STATE/sockdir" ]; then SOCK_DIR=$(cat "$STATE/sockdir"); else SOCK_DIR=$(mktemp -d /tmp/pg-sock-XXXXXX); fi
fi
mkdir -p "$SOCK_DIR"
[ "$(id -u)" = 0 ] && chown "$OS_USER:$OS_GROUP" "$SOCK_DIR"
chmod 0700 "$SOCK_DIR"
echo "$SOCK_DIR" > "$STATE/sockdir"

DATA=$STATE/data
LOG=$STATE/postgres.log
touch "$LOG"
[ "$(id -u)" = 0 ] && chown "$OS_USER:$OS_GROUP" "$LOG"

if [ -f "$DATA/postmaster.pid" ] && as_server "$PG_BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; then
  die 4 "a server already runs on $DATA (pid $(head -n 1 "$DATA/postmaster.pid")); stop it first:
  $SERVERS_DIR/stop-postgres.sh $STATE"
fi

AUTO=0
if [ "$PORT" = auto ]; then
  AUTO=1
  PORT=$(pick_port) || die 6 "no free port found"
elif port_in_use "$PORT"; then
  die 6 "127.0.0.1:$PORT is already in use (pass another PORT, or auto)"
fi

# ---- initdb, once per state dir ---------------------------------------------------------------
if [ ! -f "$DATA/PG_VERSION" ]; then
  t=$(now)
  PASSWORD_ARGS=()
  if [ "$PG_AUTH" != trust ]; then
    printf '%s\n' "$PG_APP_PASSWORD" > "$STATE/.pw"
    chmod 600 "$STATE/.pw"
    [ "$(id -u)" = 0 ] && chown "$OS_USER" "$STATE/.pw"
    PASSWORD_ARGS=(--pwfile="$STATE/.pw")
  fi
  # english, not pg_catalog.english (that gives pg_catalog.pg_catalog.english), and not the
  # default of --no-locale ('simple': no stemming). --no-sync: the data is thrown away anyway.
  if ! as_server "$PG_BIN/initdb" -D "$DATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
      --text-search-config=english --auth-local=trust --auth-host="$PG_AUTH" \
      --no-sync --no-instructions "${PASSWORD_ARGS[@]}" >"$STATE/initdb.log" 2>&1; then
    tail -n 20 "$STATE/initdb.log" >&2
    die 6 "initdb failed (log: $STATE/initdb.log)"
  fi
  rm -f "$STATE/.pw"
  cat > "$DATA/pg_hba.conf" <<EOF
# TYPE  DATABASE USER ADDRESS       METHOD   (127.0.0.1 only: no ::1, no other hosts)
local   all      all                trust
host    all      all  127.0.0.1/32  $PG_AUTH
EOF
  cat >> "$DATA/postgresql.conf" <<EOF

# ---- scripts/servers/start-postgres.sh: a throwaway test server ----
listen_addresses = '127.0.0.1'
unix_socket_permissions = 0700
max_connections = $PG_MAX_CONNECTIONS
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
checkpoint_timeout = 30min
max_wal_size = 1GB
timezone = 'UTC'
log_timezone = 'UTC'
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
include_if_exists = 'runtime.conf'
EOF
  echo "start-postgres: initdb (${PG_BIN%/bin}, as $OS_USER): $(since "$t")s" >&2
fi

# ---- start; an auto port another process took meanwhile is replaced ---------------------------
for attempt in 1 2 3 4 5; do
  cat > "$DATA/runtime.conf" <<EOF
port = $PORT
unix_socket_directories = '$SOCK_DIR'
EOF
  [ "$(id -u)" = 0 ] && chown "$OS_USER:$OS_GROUP" "$DATA/runtime.conf"
  t=$(now)
  if as_server "$PG_BIN/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 -s >"$STATE/pg_ctl.log" 2>&1; then
    echo "start-postgres: pg_ctl start on 127.0.0.1:$PORT: $(since "$t")s" >&2
    break
  fi
  if [ $AUTO = 1 ] && [ $attempt -lt 5 ] && grep -q 'Address already in use' "$LOG"; then
    PORT=$(pick_port) || die 6 "no free port found"
    continue
  fi
  tail -n 20 "$STATE/pg_ctl.log" "$LOG" >&2
  die 6 "the server did not start (log: $LOG)"
done

# ---- role and database (idempotent) -------------------------------------------------------------
t=$(now)
if ! as_server "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK_DIR" -p "$PORT" -U postgres -d postgres \
    >/dev/null <<EOF; then
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', '$PG_APP_USER', '$PG_APP_PASSWORD')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_APP_USER') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_APP_USER')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
EOF
  tail -n 20 "$LOG" >&2
  die 6 "creating the role and the database failed"
fi
echo "start-postgres: role and database: $(since "$t")s" >&2

PID=$(head -n 1 "$DATA/postmaster.pid")
URL="postgresql+asyncpg://$PG_APP_USER:$PG_APP_PASSWORD@127.0.0.1:$PORT/$PG_DB"
cat > "$STATE/pg.env" <<EOF
DATABASE_URL='$URL'
PGHOST=127.0.0.1
PGPORT=$PORT
PGUSER=$PG_APP_USER
PGPASSWORD=$PG_APP_PASSWORD
PGDATABASE=$PG_DB
PG_PID=$PID
PG_BIN=$PG_BIN
PG_OS_USER=$OS_USER
PG_SOCK_DIR=$SOCK_DIR
EOF
echo "POSTGRES READY pid=$PID url=$URL"
echo "STOP: $SERVERS_DIR/stop-postgres.sh $STATE [--purge]"
