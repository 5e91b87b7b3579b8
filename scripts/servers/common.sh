# Helpers shared by the start-/stop- scripts in this folder (sourced, not run).
# shellcheck shell=bash

SERVERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INSTALL_HINT="run scripts/install-servers as root (scripts/test does so when run as root), or:
  apt-get install -y --no-install-recommends dovecot-imapd dovecot-lmtpd postfix postgresql"

die() {  # die EXIT_CODE MESSAGE...
  local code=$1; shift
  echo "$(basename "$0"): $*" >&2
  exit "$code"
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# A process is gone when /proc has no entry for it, or only a zombie (PID 1 may reap it late).
gone() {
  [ ! -e "/proc/$1" ] || [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

# wait_gone PID SECONDS: 0 once the process is gone, 1 if it still runs after SECONDS.
wait_gone() {
  local pid=$1 steps=$(( $2 * 50 ))
  for _ in $(seq "$steps"); do
    gone "$pid" && return 0
    sleep 0.02
  done
  gone "$pid"
}

# wait_greeting PORT PREFIX SECONDS: 0 once 127.0.0.1:PORT greets with a line starting with PREFIX.
wait_greeting() {
  local port=$1 prefix=$2 deadline=$(( $(date +%s) + $3 )) line
  while [ "$(date +%s)" -le "$deadline" ]; do
    if exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
      line=""
      IFS= read -r -t 2 line <&3 || true
      exec 3<&- 3>&- || true
      [[ $line == "$prefix"* ]] && return 0
    fi
    sleep 0.05
  done
  return 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port nobody listens on right now (the caller retries if one is taken before it binds).
pick_port() {
  local p
  for _ in $(seq 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    port_in_use "$p" || { echo "$p"; return 0; }
  done
  return 1
}

# A state dir must be reachable by the unprivileged user a server runs as; pytest's tmp_path as
# root (/tmp/pytest-of-root/..., mode 0700) is not. Prints the blocking parents, if any.
blocking_parents() {  # blocking_parents DIR USER
  local p=$1 user=$2
  while [ "$p" != / ]; do
    p=$(dirname "$p")
    if [ "$(stat -c %U "$p")" != "$user" ] && [ $(( 0$(stat -c %a "$p") & 1 )) = 0 ]; then
      echo "  $p ($(stat -c '%A %U:%G' "$p"))"
    fi
  done
}
