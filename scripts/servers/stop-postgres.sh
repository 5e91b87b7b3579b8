#!/usr/bin/env bash
# stop-postgres.sh STATE_DIR [--purge]
#
# Stops the server start-postgres.sh started in STATE_DIR (pg_ctl stop -m fast). If that fails,
# signals that data dir's own postmaster PID only (TERM, then KILL); never servers by name.
#   --purge  then delete STATE_DIR (and its short socket dir, if it had one)
# Exits 0 when nothing runs.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || die 2 "usage: $0 STATE_DIR [--purge]"
STATE=${1%/}
PURGE=0
case ${2:-} in --purge) PURGE=1 ;; '') ;; *) die 2 "unknown option $2" ;; esac
DATA=$STATE/data
[ -d "$STATE" ] || { echo "stop-postgres: $STATE does not exist; nothing to do" >&2; exit 0; }
# Never touch, let alone delete, a directory start-postgres.sh did not make.
[ -f "$STATE/sockdir" ] || [ -f "$DATA/PG_VERSION" ] || die 2 "$STATE is not a start-postgres.sh state dir"

PG_BIN=$(sed -n 's/^PG_BIN=//p' "$STATE/pg.env" 2>/dev/null || true)
[ -n "$PG_BIN" ] || PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ "$(id -u)" = 0 ] && [ -d "$DATA" ]; then
  OS_USER=$(stat -c %U "$DATA")
  as_server() { env HOME="$STATE" setpriv --reuid="$OS_USER" --regid="$(id -gn "$OS_USER")" --init-groups -- "$@"; }
else
  as_server() { env HOME="$STATE" "$@"; }
fi

if [ -f "$DATA/postmaster.pid" ]; then
  PID=$(head -n 1 "$DATA/postmaster.pid")
  t=$(now)
  if [ -z "$PG_BIN" ] || ! as_server "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 30 -s >&2 2>&1; then
    # Only the postmaster of THIS data dir, by its PID.
    if [ -r "/proc/$PID/cmdline" ] && tr '\0' ' ' < "/proc/$PID/cmdline" | grep -qF -- "$DATA"; then
      echo "stop-postgres: pg_ctl stop failed; SIGTERM, then SIGKILL, to pid $PID" >&2
      kill -TERM "$PID" 2>/dev/null || true
      wait_gone "$PID" 5 || { kill -KILL "$PID" 2>/dev/null || true; wait_gone "$PID" 2 || true; }
    fi
  fi
  echo "stop-postgres: stopped pid $PID in $(since "$t")s" >&2
else
  echo "stop-postgres: no postmaster.pid in $DATA; not running" >&2
fi

if [ $PURGE = 1 ]; then
  SOCK_DIR=$(cat "$STATE/sockdir" 2>/dev/null || true)
  case $SOCK_DIR in /tmp/pg-sock-*) rm -rf -- "$SOCK_DIR" ;; esac
  rm -rf -- "$STATE"
  echo "stop-postgres: purged $STATE" >&2
fi
