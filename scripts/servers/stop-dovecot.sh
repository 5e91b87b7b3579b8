#!/usr/bin/env bash
# stop-dovecot.sh STATE_DIR [--fast] [--purge]
#
# Stops the Dovecot that start-dovecot.sh started in STATE_DIR, by its master's PID only
# (STATE_DIR/dovecot.pid); never by name, so other Dovecots on the machine are left alone.
#   default  SIGTERM to the master: graceful, ~1 s (the master pauses for its log process)
#   --fast   SIGKILL to the instance's process group (the master leads it): ~40 ms
#   --purge  then delete STATE_DIR (and its short socket dir, if it had one)
# Exits 0 when nothing runs.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 1 ] || die 2 "usage: $0 STATE_DIR [--fast] [--purge]"
STATE=${1%/}
shift
FAST=0
PURGE=0
for arg in "$@"; do
  case $arg in
    --fast) FAST=1 ;;
    --purge) PURGE=1 ;;
    *) die 2 "unknown option $arg" ;;
  esac
done
[ -d "$STATE" ] || { echo "stop-dovecot: $STATE does not exist; nothing to do"; exit 0; }
[ -f "$STATE/dovecot.conf" ] || die 2 "$STATE is not a start-dovecot.sh state dir"

if [ -s "$STATE/dovecot.pid" ]; then
  PID=$(cat "$STATE/dovecot.pid")
  if ! gone "$PID" && grep -q dovecot "/proc/$PID/cmdline" 2>/dev/null; then
    if [ $FAST = 1 ]; then
      kill -KILL -- "-$PID" 2>/dev/null || kill -KILL "$PID" 2>/dev/null || true
    else
      kill -TERM "$PID" 2>/dev/null || true
    fi
    if ! wait_gone "$PID" 5; then
      echo "stop-dovecot: master $PID still alive after 5 s; SIGKILL to its process group" >&2
      kill -KILL -- "-$PID" 2>/dev/null || true
      wait_gone "$PID" 2 || true
    fi
    # Its children share the process group: wait for those too.
    for _ in $(seq 200); do
      alive=""
      for child in $(pgrep -g "$PID" 2>/dev/null || true); do
        gone "$child" || alive=1
      done
      [ -z "$alive" ] && break
      sleep 0.01
    done
    echo "stop-dovecot: stopped pid $PID"
  else
    echo "stop-dovecot: pid $PID was not running"
  fi
  rm -f "$STATE/dovecot.pid"
  # Dovecot refuses to start while master.pid names a live PID, and a killed master may linger
  # as a zombie for a while: the file goes, so a restart on this state dir works at once.
  BASE=$(cat "$STATE/base_dir" 2>/dev/null || true)
  [ -n "$BASE" ] && rm -f "$BASE/master.pid"
else
  echo "stop-dovecot: no pid file in $STATE; not running"
fi

if [ $PURGE = 1 ]; then
  BASE=$(cat "$STATE/base_dir" 2>/dev/null || true)
  case $BASE in /tmp/dovecot-run-*) rm -rf -- "$BASE" ;; esac
  rm -rf -- "$STATE"
  echo "stop-dovecot: purged $STATE"
fi
