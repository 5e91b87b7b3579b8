#!/usr/bin/env bash
# start-dovecot.sh STATE_DIR PORT
#
# A private, throwaway Dovecot 2.3 on 127.0.0.1 only, for tests and benchmarks:
#   IMAP  (plain + STARTTLS) on PORT
#   IMAPS (implicit TLS)     on PORT+1  (or IMAPS_PORT)
#   LMTP  (final delivery)   on PORT+2  (or LMTP_PORT)
# Config, users, a self-signed certificate (STATE_DIR/cert.pem), Maildirs (STATE_DIR/mail/<user>),
# logs and the master's PID (STATE_DIR/dovecot.pid) all live in STATE_DIR; nothing is read from
# or written to /etc/dovecot.
#
# Users: DOVECOT_USERS="addr:password addr2:password2"
#        (default "support@example.test:secret other@example.test:secret").
# Every Dovecot process runs as one unprivileged user: the caller, or, when run as root,
# DOVECOT_RUN_USER (default nobody), who then owns STATE_DIR. So as root STATE_DIR must be
# reachable by that user: use `mktemp -d /tmp/dovecot-XXXXXX`, not pytest's tmp_path.
#
# On success prints one line "DOVECOT READY pid=... imap=... imaps=... lmtp=... state=..." and
# exits 0 with the daemon running. Stop it with stop-dovecot.sh STATE_DIR [--fast] [--purge].
# Exit codes: 2 usage, 3 not installed, 4 already running, 5 bad state dir/config, 6 did not start.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -eq 2 ] || die 2 "usage: $0 STATE_DIR PORT"
STATE=$1
PORT=$2
IMAPS_PORT=${IMAPS_PORT:-$((PORT + 1))}
LMTP_PORT=${LMTP_PORT:-$((PORT + 2))}
USERS=${DOVECOT_USERS:-"support@example.test:secret other@example.test:secret"}
READY_TIMEOUT=${DOVECOT_READY_TIMEOUT:-15}

DOVECOT=$(command -v dovecot || echo /usr/sbin/dovecot)
[ -x "$DOVECOT" ] || die 3 "Dovecot is not installed; $INSTALL_HINT"
VERSION=$("$DOVECOT" --version | cut -d' ' -f1)
case $VERSION in
  2.3.*) ;;
  *) die 3 "this script writes a Dovecot 2.3 configuration; found Dovecot $VERSION (2.4 changed the syntax)" ;;
esac

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd -P)
if [ -s "$STATE/dovecot.pid" ] && ! gone "$(cat "$STATE/dovecot.pid")"; then
  die 4 "a Dovecot already runs in $STATE (pid $(cat "$STATE/dovecot.pid")); stop-dovecot.sh it first"
fi

# ---- the user every Dovecot process runs as -----------------------------------------------------
if [ "$(id -u)" = 0 ]; then
  RUN_USER=${DOVECOT_RUN_USER:-nobody}
  RUN_UID=$(id -u "$RUN_USER")
  RUN_GID=$(id -g "$RUN_USER")
  AS_RUN_USER=(setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups --)
else
  RUN_USER=$(id -un)
  RUN_UID=$(id -u)
  RUN_GID=$(id -g)
  AS_RUN_USER=()
fi
RUN_GROUP=$(getent group "$RUN_GID" | cut -d: -f1 || true)
RUN_GROUP=${RUN_GROUP:-$RUN_GID}

# ---- layout -----------------------------------------------------------------------------------
mkdir -p "$STATE/mail" "$STATE/home" "$STATE/log" "$STATE/lib"
# base_dir holds UNIX sockets, whose paths may not exceed ~107 bytes: a short dir for a long STATE.
if [ -s "$STATE/base_dir" ] && [ -d "$(cat "$STATE/base_dir")" ]; then
  BASE=$(cat "$STATE/base_dir")
elif [ ${#STATE} -le 50 ]; then
  BASE=$STATE/run
else
  BASE=$(mktemp -d /tmp/dovecot-run-XXXXXX)
fi
mkdir -p "$BASE"
echo "$BASE" > "$STATE/base_dir"

: > "$STATE/users"
for entry in $USERS; do
  printf '%s:{PLAIN}%s::::::\n' "${entry%%:*}" "${entry#*:}" >> "$STATE/users"
done

# Self-signed certificate for STARTTLS and IMAPS (EC P-256 takes ~20 ms); kept across restarts.
if [ ! -s "$STATE/cert.pem" ]; then
  openssl req -x509 -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$STATE/key.pem" -out "$STATE/cert.pem" -days 30 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 \
    || die 5 "openssl could not make a certificate"
fi

if [ -n "${DOVECOT_AUTH_PENALTY:-}" ]; then PENALTY_MODE=0600; else PENALTY_MODE=0; fi

cat > "$STATE/dovecot.conf" <<EOF
# Written by scripts/servers/start-dovecot.sh: a private test instance on loopback only.
protocols = imap lmtp
listen = 127.0.0.1
base_dir = $BASE
state_dir = $STATE/lib
instance_name = supportbot-test-$PORT
log_path = $STATE/log/dovecot.log
info_log_path = $STATE/log/dovecot.log
debug_log_path = $STATE/log/dovecot.log

# Every process runs as $RUN_USER (no root, no dedicated system users).
default_login_user = $RUN_USER
default_internal_user = $RUN_USER
default_internal_group = $RUN_GROUP
first_valid_uid = 1
first_valid_gid = 0

service anvil {
  chroot =
  # After one failed login anvil delays every later login from 127.0.0.1 (2, 4, 8, 15 s), which
  # would slow every test after a negative one. Mode 0 switches that off; DOVECOT_AUTH_PENALTY=1 keeps it.
  unix_listener anvil-auth-penalty {
    mode = $PENALTY_MODE
  }
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = $PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}

ssl = yes
ssl_cert = <$STATE/cert.pem
ssl_key = <$STATE/key.pem

auth_mechanisms = plain login
disable_plaintext_auth = no
# Dovecot waits 2 s after each failed login; tests of refused logins need none.
auth_failure_delay = ${DOVECOT_AUTH_FAILURE_DELAY:-0 secs}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $STATE/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $STATE/users
  default_fields = uid=$RUN_UID gid=$RUN_GID home=$STATE/home/%u
}

mail_location = maildir:$STATE/mail/%u
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \Junk
    auto = subscribe
  }
}
# LMTP: RCPT TO:<support@example.test> delivers to the user support@example.test.
lmtp_save_to_detail_mailbox = no
recipient_delimiter = +
# IDLE is told of new mail by inotify; this is only the fallback check.
mailbox_idle_check_interval = 1 secs
EOF

chown -R "$RUN_UID:$RUN_GID" "$STATE" "$BASE"
chmod 700 "$STATE"
if ! "${AS_RUN_USER[@]}" test -w "$STATE/mail" -a -r "$STATE/dovecot.conf"; then
  die 5 "user $RUN_USER cannot reach $STATE; blocked by:
$(blocking_parents "$STATE" "$RUN_USER")
  use a state dir directly under /tmp, e.g. \$(mktemp -d /tmp/dovecot-XXXXXX)"
fi
if ! "${AS_RUN_USER[@]}" "$DOVECOT" -c "$STATE/dovecot.conf" -n >/dev/null 2>"$STATE/log/config-check.err"; then
  die 5 "Dovecot refused the configuration:
$(cat "$STATE/log/config-check.err")"
fi

STARTED=$(now)
# Dovecot daemonizes. Its stdio is detached, or a caller capturing our output would wait for ever.
rm -f "$BASE/master.pid"
"${AS_RUN_USER[@]}" "$DOVECOT" -c "$STATE/dovecot.conf" </dev/null >>"$STATE/log/startup.log" 2>&1 \
  || die 6 "Dovecot did not start:
$(cat "$STATE/log/startup.log")"

if ! wait_greeting "$PORT" "* OK" "$READY_TIMEOUT"; then
  [ -s "$BASE/master.pid" ] && kill -TERM "$(cat "$BASE/master.pid")" 2>/dev/null || true
  die 6 "Dovecot did not greet on 127.0.0.1:$PORT within ${READY_TIMEOUT}s; its log:
$(tail -n 30 "$STATE/log/dovecot.log" 2>/dev/null)"
fi
PID=$(cat "$BASE/master.pid")
echo "$PID" > "$STATE/dovecot.pid"
echo "DOVECOT READY pid=$PID imap=127.0.0.1:$PORT imaps=127.0.0.1:$IMAPS_PORT lmtp=127.0.0.1:$LMTP_PORT" \
     "state=$STATE run_as=$RUN_USER startup=$(since "$STARTED")s"
