# Starting one API instance of a native stack (sourced, not run): stack-up, the supervisor
# (lib/supervise) and crebitos_tools/instance all start instances through launch_instance, so
# a restarted instance has exactly the binary, environment, cgroup and pid file of the first.
# Needs common.sh and cgroup.sh, and the stack's stack.env sourced (STACK_DIR, CREBITOS_*,
# STACK_LIMITS, STACK_CGROUP, <SVC>_LISTEN).

# instance_listen SVC: the address SVC listens on (unix:/path.sock or host:port).
instance_listen() {
  local var
  var="$(printf '%s' "$1" | tr a-z A-Z)_LISTEN"
  printf '%s\n' "${!var}"
}

# instance_health SVC: GET /health straight from the instance (not through nginx).
instance_health() {
  local listen
  listen=$(instance_listen "$1")
  case $listen in
    unix:*) curl -fsS -m 2 --unix-socket "${listen#unix:}" http://localhost/health ;;
    *)      curl -fsS -m 2 "http://$listen/health" ;;
  esac
}

# launch_instance SVC [WHY]: start SVC detached (immune to the terminal's hangup, stdin from
# /dev/null), in its cgroup when limits are on, with the environment docker-compose.yml gives
# it, and record "PID STARTTIME" in its pid file. The subshell joins the cgroup and then execs,
# so the recorded pid is the server itself.
launch_instance() {
  local svc=$1 why=${2:-} logfile=$STACK_DIR/logs/$1.log pid
  [ -z "$why" ] || echo "--- $(date -u +%FT%T.%3NZ) $why" >>"$logfile"
  (
    [ "$STACK_LIMITS" = on ] && cg_join "$STACK_CGROUP/$svc" "$BASHPID"
    trap '' HUP
    CREBITOS_DATABASE=$CREBITOS_DATABASE CREBITOS_LISTEN=$(instance_listen "$svc") CREBITOS_INSTANCE=$svc \
    CREBITOS_SYNCHRONOUS=$CREBITOS_SYNCHRONOUS CREBITOS_LOG_LEVEL=${CREBITOS_LOG_LEVEL:-info} \
      exec "$CREBITOS_BIN" </dev/null >>"$logfile" 2>&1
  ) &
  pid=$!
  write_pidfile "$STACK_DIR/pids/$svc.pid" "$pid" || { log "$svc exited at once: see $logfile"; return 1; }
}
