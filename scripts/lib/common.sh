# Helpers shared by the stack scripts (sourced, not run).
# Everything here is plain bash plus coreutils, so a fresh Debian with the Swift toolchain can
# run it; the few other tools are installed on demand by need_cmd.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

log()  { printf '%s\n' "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# need_cmd COMMAND PACKAGE: make sure COMMAND exists. As root, install PACKAGE from Debian
# (refreshing the package lists only if the first attempt fails, since CI machines often come
# with stale or empty lists); otherwise say exactly what to install and stop.
_apt_updated=0
need_cmd() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "'$cmd' is missing: install it with: sudo apt-get install -y $pkg"
  fi
  log "installing $pkg (for $cmd)"
  apt_install "$pkg"
  command -v "$cmd" >/dev/null 2>&1 || die "installed $pkg but '$cmd' is still missing"
}

# apt_install PACKAGE: install PACKAGE from Debian (as root), with its services kept from
# starting.
apt_install() {
  local pkg=$1
  # policy-rc.d answering 101 stops Debian's maintainer scripts from starting the package's
  # own service (Debian's nginx would otherwise start a system nginx on port 80 that this
  # stack did not ask for). It is removed again right after.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1; then
    if [ "$_apt_updated" -eq 0 ]; then
      apt-get update -qq >/dev/null 2>&1 || true
      _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
      || { [ "$created_policy" -eq 1 ] && rm -f "$policy"; die "apt-get install $pkg failed"; }
  fi
  [ "$created_policy" -eq 1 ] && rm -f "$policy"
  return 0
}

# abspath PATH: PATH made absolute against the repository root (the scripts' working
# directory for every relative path, whatever directory they are called from).
abspath() {
  case "$1" in
    /*|postgres://*|postgresql://*) printf '%s\n' "$1" ;;   # a PostgreSQL URL is not a path
    *)  printf '%s\n' "$REPO_ROOT/$1" ;;
  esac
}

# --- processes -------------------------------------------------------------------------------
# A pid file here holds "PID STARTTIME": the start time (field 22 of /proc/PID/stat, in clock
# ticks since boot) tells our process apart from an unrelated one that reused the pid after
# ours died, so stack-down never signals a process it did not start.

proc_starttime() { # PID -> start time, or nothing if the process is gone
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # The command name (field 2) may contain spaces: cut after its closing parenthesis.
  stat=${stat##*) }
  set -- $stat
  printf '%s\n' "${20}"
}

write_pidfile() { # FILE PID
  local st
  st=$(proc_starttime "$2") || return 1
  printf '%s %s\n' "$2" "$st" >"$1"
}

# pidfile_alive FILE: prints the pid and succeeds if the process recorded in FILE still runs.
pidfile_alive() {
  local pid st now
  [ -s "$1" ] || return 1
  read -r pid st <"$1" || return 1
  now=$(proc_starttime "$pid") || return 1
  [ -z "$st" ] || [ "$now" = "$st" ] || return 1
  # A zombie has finished: it only waits for its parent to collect it.
  [ "$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" != "Z" ] || return 1
  printf '%s\n' "$pid"
}

pid_running() { # PID [STARTTIME]
  local now
  now=$(proc_starttime "$1") || return 1
  [ -z "${2:-}" ] || [ "$now" = "$2" ] || return 1
  [ "$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" != "Z" ]
}

# wait_gone SECONDS PID [STARTTIME]: wait until the process has exited.
wait_gone() {
  local deadline=$(( $(date +%s) + $1 ))
  while pid_running "$2" "${3:-}"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# --- network ---------------------------------------------------------------------------------

port_in_use() { # PORT: something accepts connections on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port: a TCP port nobody listens on, from the range above the ephemeral default.
free_port() {
  local p tries=0
  while [ $tries -lt 200 ]; do
    p=$(( 20000 + RANDOM % 12000 ))
    port_in_use "$p" || { printf '%s\n' "$p"; return 0; }
    tries=$(( tries + 1 ))
  done
  return 1
}

# --- limits: docker-compose.yml is the single source -----------------------------------------
# compose_limit SERVICE cpus|memory: the value of deploy.resources.limits for SERVICE in
# docker-compose.yml ($COMPOSE_LIMITS_FILE when set: a stack on PostgreSQL reads
# docker-compose.postgres.yml). api01 and api02 take theirs from the x-api anchor they merge. This reads
# the file's known layout (two-space indented services), not YAML in general.
compose_limit() {
  local service=$1 key=$2 file=${COMPOSE_LIMITS_FILE:-$REPO_ROOT/docker-compose.yml} value
  value=$(awk -v want="$service" -v key="$key" '
    /^[^ #]/            { sect = $1; sub(":.*", "", sect) }        # top-level key
    /^  [A-Za-z0-9_-]+:/ && top == "services" { sect = $1; sub(":.*", "", sect) }
    /^services:/        { top = "services" }
    /^[^ #]/ && !/^services:/ { top = "" }
    $1 == key ":" && sect == want { v = $2; gsub(/"/, "", v); print v; exit }
  ' "$file")
  if [ -z "$value" ] && [ "$service" != x-api ]; then
    case $service in api*) value=$(compose_limit x-api "$key") ;; esac
  fi
  [ -n "$value" ] || die "no $key limit for $service in $file"
  printf '%s\n' "$value"
}

# mb_to_bytes 250MB -> 262144000. Docker reads "MB" in a compose file as 1024*1024 bytes
# (go-units RAMInBytes), and so does podman: the native cgroups use the same number.
mb_to_bytes() {
  local v=${1%[Bb]}
  case $v in
    *[Gg]) echo $(( ${v%[Gg]} * 1024 * 1024 * 1024 )) ;;
    *[Mm]) echo $(( ${v%[Mm]} * 1024 * 1024 )) ;;
    *[Kk]) echo $(( ${v%[Kk]} * 1024 )) ;;
    *)     echo "$v" ;;
  esac
}

# release_bin: where `swift build -c release` puts the server (crebitos_tools/stack.py
# build_binary is the Python side of the same question).
release_bin() {
  printf '%s/crebitos\n' "$(cd "$REPO_ROOT" && swift build -c release --show-bin-path)"
}
