#!/usr/bin/env bash
# stop-postfix.sh STATE_DIR [--purge]
#
# Stops the Postfix that start-postfix.sh started in STATE_DIR (`postfix -c STATE_DIR/etc stop`),
# waits until its master (the PID in STATE_DIR/postfix.pid) is gone, and SIGKILLs that PID only if
# it is still alive after 5 s. Other Postfix instances on the machine are left alone.
#   --purge  then delete STATE_DIR
# Exits 0 when nothing runs.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || die 2 "usage: $0 STATE_DIR [--purge]"
STATE=${1%/}
PURGE=0
case ${2:-} in --purge) PURGE=1 ;; '') ;; *) die 2 "unknown option $2" ;; esac
[ -d "$STATE" ] || { echo "stop-postfix: $STATE does not exist; nothing to do"; exit 0; }
[ -f "$STATE/etc/main.cf" ] || die 2 "$STATE is not a start-postfix.sh state dir"

if [ -s "$STATE/postfix.pid" ]; then
  PID=$(cat "$STATE/postfix.pid")
  if ! gone "$PID"; then
    postfix -c "$STATE/etc" stop >/dev/null 2>&1 || kill -TERM "$PID" 2>/dev/null || true
    if ! wait_gone "$PID" 5; then
      echo "stop-postfix: master $PID still alive after 5 s; SIGKILL" >&2
      kill -KILL "$PID" 2>/dev/null || true
      wait_gone "$PID" 2 || true
    fi
    echo "stop-postfix: stopped pid $PID"
  else
    echo "stop-postfix: pid $PID was not running"
  fi
  rm -f "$STATE/postfix.pid"
else
  echo "stop-postfix: no pid file in $STATE; not running"
fi

if [ $PURGE = 1 ]; then
  rm -rf -- "$STATE"
  echo "stop-postfix: purged $STATE"
fi
