#!/usr/bin/env bash
# start-postfix.sh STATE_DIR SMTP_PORT LMTP_PORT [DOMAINS]
#
# A private, throwaway Postfix listening on 127.0.0.1:SMTP_PORT only. Mail to any address in
# DOMAINS (default "example.test example.org") is delivered over LMTP to 127.0.0.1:LMTP_PORT
# (a Dovecot from start-dovecot.sh, or any LMTP server); every other destination is refused at
# RCPT TO, so nothing can leave the machine. No DNS. The mail log is STATE_DIR/maillog.
# Needs root: Postfix's master runs as root and its daemons as the `postfix` user.
#
# On success prints one line "POSTFIX READY pid=... smtp=... -> lmtp ..." and exits 0 with the
# master running (its PID in STATE_DIR/postfix.pid). Stop it with stop-postfix.sh STATE_DIR [--purge].
# POSTFIX_CHECK=1 runs Postfix's full (slow, ~2.5 s) integrity check first.
# Exit codes: 2 usage or not root, 3 not installed, 4 already running, 6 did not start.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 3 ] && [ $# -le 4 ] || die 2 "usage: $0 STATE_DIR SMTP_PORT LMTP_PORT [DOMAINS]"
STATE=$1
SMTP_PORT=$2
LMTP_PORT=$3
DOMAINS=${4:-"example.test example.org"}
READY_TIMEOUT=${POSTFIX_READY_TIMEOUT:-15}
[ "$(id -u)" = 0 ] || die 2 "Postfix's master must run as root; run this (and the tests that need it) as root"
command -v postfix >/dev/null 2>&1 || die 3 "Postfix is not installed; $INSTALL_HINT"
id -u postfix >/dev/null 2>&1 || die 3 "the postfix user is missing (a broken Postfix install?); $INSTALL_HINT"

mkdir -p "$STATE/etc" "$STATE/spool" "$STATE/data"
STATE=$(cd "$STATE" && pwd -P)
if [ -s "$STATE/postfix.pid" ] && ! gone "$(cat "$STATE/postfix.pid")"; then
  die 4 "a Postfix already runs in $STATE (pid $(cat "$STATE/postfix.pid")); stop-postfix.sh it first"
fi
# Postfix insists on a root-owned queue directory; it makes and owns the subdirectories itself.
chown root:root "$STATE" "$STATE/spool"
chmod 755 "$STATE" "$STATE/spool"
chown postfix:postfix "$STATE/data"

cat > "$STATE/etc/main.cf" <<EOF
# Written by scripts/servers/start-postfix.sh: a private test instance on loopback only.
compatibility_level = 3.6
queue_directory = $STATE/spool
data_directory = $STATE/data
maillog_file_prefixes = $STATE
maillog_file = $STATE/maillog
myhostname = mx.example.test
mydomain = example.test
myorigin = \$mydomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
smtpd_banner = \$myhostname ESMTP test-postfix
# Everything for DOMAINS goes to the LMTP server, which refuses unknown users (550).
virtual_mailbox_domains = $DOMAINS
virtual_mailbox_maps =
virtual_transport = lmtp:inet:127.0.0.1:$LMTP_PORT
# Nothing leaves loopback.
default_transport = error:outbound mail disabled in tests
relay_transport = error:outbound mail disabled in tests
local_transport = error:local delivery disabled in tests
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
# Quick retries and no penalties: tests should not wait on the queue manager.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
smtpd_error_sleep_time = 0
EOF

# The packaged master.cf, with its public smtp listener replaced by ours and no chroot.
MASTER_CF=$(ls /etc/postfix/master.cf /usr/share/postfix/master.cf.dist 2>/dev/null | head -n 1 || true)
[ -n "$MASTER_CF" ] || die 3 "no master.cf found in /etc/postfix or /usr/share/postfix; $INSTALL_HINT"
awk -v port="$SMTP_PORT" '
  /^smtp[ \t]+inet/          { print "127.0.0.1:" port " inet n - n - - smtpd"; next }
  /^#/ || /^[ \t]/ || NF == 0 { print; next }
  NF >= 8                    { $5 = "n"; print; next }
                             { print }' "$MASTER_CF" > "$STATE/etc/master.cf"

# Postfix re-reads a main.cf younger than ~2 s until it settles, costing ~2 s per command:
# backdate the files we just wrote.
touch -d "@$(( $(date +%s) - 60 ))" "$STATE/etc/main.cf" "$STATE/etc/master.cf"

STARTED=$(now)
if [ -n "${POSTFIX_CHECK:-}" ]; then
  postfix -c "$STATE/etc" check
else
  # Make the queue directories (~0.25 s) and skip postfix-script's slow checks, as postmulti does.
  postfix -c "$STATE/etc" post-install create-missing
  touch "$STATE/spool/quick-start"
fi
postfix -c "$STATE/etc" start </dev/null >>"$STATE/startup.log" 2>&1 \
  || die 6 "Postfix did not start:
$(cat "$STATE/startup.log")"
if ! wait_greeting "$SMTP_PORT" "220" "$READY_TIMEOUT"; then
  postfix -c "$STATE/etc" abort >/dev/null 2>&1 || true
  die 6 "Postfix did not greet on 127.0.0.1:$SMTP_PORT within ${READY_TIMEOUT}s; its log:
$(tail -n 30 "$STATE/maillog" 2>/dev/null)"
fi
PID=$(tr -d ' ' < "$STATE/spool/pid/master.pid")
echo "$PID" > "$STATE/postfix.pid"
echo "POSTFIX READY pid=$PID smtp=127.0.0.1:$SMTP_PORT -> lmtp 127.0.0.1:$LMTP_PORT domains=\"$DOMAINS\"" \
     "state=$STATE startup=$(since "$STARTED")s"
