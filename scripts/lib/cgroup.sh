# CPU and memory limits for the native stack, as cgroups (sourced, not run).
#
# Layout, the same names under every controller:
#   <caller's cgroup>/<PARENT>           the whole stack: cpu usage, throttling and memory of
#                                        all three services together (limit: their sum)
#   <caller's cgroup>/<PARENT>/nginx     0.4 CPU, 50MB  (from docker-compose.yml)
#   <caller's cgroup>/<PARENT>/api01     0.55 CPU, 250MB
#   <caller's cgroup>/<PARENT>/api02     0.55 CPU, 250MB
# Under v1 the groups are made inside the cgroup the caller already runs in (not at the root of
# the hierarchy), so the stack stays accounted wherever the caller's session is accounted;
# under v2 they hang off the root (see cg_base). Only the v1 path has run on the machines this
# project was built on; the v2 path follows the kernel's cgroup-v2 documentation.
#
# cgroup v1: one directory per controller (cpu, cpuacct, memory); CPU as
# cpu.cfs_quota_us / cpu.cfs_period_us, memory as memory.limit_in_bytes.
# cgroup v2: one directory; CPU as cpu.max, memory as memory.max.

CG_VERSION=none     # v1 | v2 | none, set by cg_detect
CG_REASON=""        # why limits are not available, when CG_VERSION=none
CG_PERIOD_US=100000 # the CFS period docker and podman use

# cg_self CONTROLLER: the caller's own cgroup path in that v1 hierarchy ("" for the root).
cg_self() {
  local path
  path=$(awk -F: -v c="$1" '{ n = split($2, cs, ","); for (i = 1; i <= n; i++) if (cs[i] == c) { print $3; exit } }' /proc/self/cgroup)
  [ "$path" = / ] && path=""
  printf '%s\n' "$path"
}

# cg_mount CONTROLLER: where that v1 controller's hierarchy is mounted.
cg_mount() {
  awk -v c="$1" '$3 == "cgroup" { n = split($4, o, ","); for (i = 1; i <= n; i++) if (o[i] == c) { print $2; exit } }' /proc/mounts
}

cg_detect() {
  CG_VERSION=none
  if [ "$(id -u)" -ne 0 ]; then CG_REASON="not running as root"; return 1; fi
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    local base=/sys/fs/cgroup
    if ! grep -qw cpu /sys/fs/cgroup/cgroup.controllers || ! grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
      CG_REASON="cgroup v2 without the cpu and memory controllers"; return 1
    fi
    if [ ! -w "$base" ]; then CG_REASON="cgroup v2 at $base is not writable"; return 1; fi
    CG_VERSION=v2; return 0
  fi
  local c m
  for c in cpu cpuacct memory; do
    m=$(cg_mount "$c")
    if [ -z "$m" ]; then CG_REASON="cgroup v1 controller '$c' is not mounted"; return 1; fi
    if [ ! -w "$m$(cg_self "$c")" ]; then CG_REASON="cgroup v1 '$c' hierarchy is not writable"; return 1; fi
  done
  CG_VERSION=v1
}

# cg_base CONTROLLER: the directory the stack's groups are made in: the caller's own cgroup.
# stack-up records it (CG_BASE_CPU, CG_BASE_CPUACCT, CG_BASE_MEMORY in stack.env), so that
# stack-down finds the same groups even when it runs from another cgroup.
cg_base() {
  local var="CG_BASE_$(echo "$1" | tr a-z A-Z)"
  if [ -n "${!var:-}" ]; then printf '%s\n' "${!var}"; return; fi
  if [ "$CG_VERSION" = v2 ]; then
    # v2 forbids enabling controllers for children of a group that has processes of its own
    # (the caller's group has the caller), so under v2 the groups hang off the root.
    printf '/sys/fs/cgroup\n'
  else
    printf '%s%s\n' "$(cg_mount "$1")" "$(cg_self "$1")"
  fi
}

# cg_dir CONTROLLER GROUP: the directory of GROUP ("PARENT" or "PARENT/NAME").
# For v2 the controller does not matter: one directory holds every controller's files.
cg_dir() { printf '%s/%s\n' "$(cg_base "$1")" "$2"; }

# cg_quota_us CPUS: 0.6 -> 60000 (per 100 ms period).
cg_quota_us() { awk -v c="$1" -v p="$CG_PERIOD_US" 'BEGIN { printf "%d\n", c * p + 0.5 }'; }

# cg_create GROUP CPUS MEMORY_BYTES: create the group (and its parents) with these limits.
cg_create() {
  local group=$1 cpus=$2 bytes=$3 quota d
  quota=$(cg_quota_us "$cpus")
  if [ "$CG_VERSION" = v2 ]; then
    # A v2 group's controllers must be enabled in every ancestor's subtree_control.
    local parent rel="" part
    d=$(cg_base cpu)
    IFS=/ read -ra parts <<<"$group"
    for part in "${parts[@]}"; do
      echo "+cpu +memory" >"$d/${rel:+$rel/}cgroup.subtree_control" 2>/dev/null || true
      rel=${rel:+$rel/}$part
      mkdir -p "$d/$rel"
    done
    echo "$quota $CG_PERIOD_US" >"$d/$group/cpu.max"
    echo "$bytes" >"$d/$group/memory.max"
    echo 0 >"$d/$group/memory.swap.max" 2>/dev/null || true
    return 0
  fi
  d=$(cg_dir cpu "$group");     mkdir -p "$d"
  echo "$CG_PERIOD_US" >"$d/cpu.cfs_period_us"
  echo "$quota" >"$d/cpu.cfs_quota_us"
  d=$(cg_dir cpuacct "$group"); mkdir -p "$d"
  d=$(cg_dir memory "$group");  mkdir -p "$d"
  echo "$bytes" >"$d/memory.limit_in_bytes"
  # No swap beyond the limit either (where the kernel accounts swap), as docker does.
  echo "$bytes" >"$d/memory.memsw.limit_in_bytes" 2>/dev/null || true
}

# cg_join GROUP PID: move PID into GROUP under every controller. Children it forks later
# (nginx's master and worker) inherit the groups.
cg_join() {
  local c
  if [ "$CG_VERSION" = v2 ]; then echo "$2" >"$(cg_dir cpu "$1")/cgroup.procs"; return; fi
  for c in cpu cpuacct memory; do echo "$2" >"$(cg_dir "$c" "$1")/cgroup.procs"; done
}

# cg_procs GROUP: the pids still in GROUP (and its children for v1 memory, which is enough).
cg_procs() {
  local d
  if [ "$CG_VERSION" = v2 ]; then d=$(cg_dir cpu "$1"); else d=$(cg_dir memory "$1"); fi
  find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

# cg_remove PARENT: remove the stack's groups once they are empty (children first).
cg_remove() {
  local c d
  for c in cpu cpuacct memory; do
    d=$(cg_dir "$c" "$1")
    [ -d "$d" ] || continue
    find "$d" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
    rmdir "$d" 2>/dev/null || true
    if [ "$CG_VERSION" = v2 ]; then break; fi
  done
}

# cg_report GROUP: one line of what the kernel measured for GROUP.
cg_report() {
  local g=$1 cpu_ns thr thr_us mem peak lim
  if [ "$CG_VERSION" = v2 ]; then
    local d; d=$(cg_dir cpu "$g")
    cpu_ns=$(( $(awk '$1 == "usage_usec" {print $2}' "$d/cpu.stat") * 1000 ))
    thr=$(awk '$1 == "nr_throttled" {print $2}' "$d/cpu.stat")
    thr_us=$(awk '$1 == "throttled_usec" {print $2}' "$d/cpu.stat")
    mem=$(cat "$d/memory.current")
    peak=$(cat "$d/memory.peak" 2>/dev/null || echo "?")
    lim=$(cat "$d/memory.max")
  else
    cpu_ns=$(cat "$(cg_dir cpuacct "$g")/cpuacct.usage")
    thr=$(awk '$1 == "nr_throttled" {print $2}' "$(cg_dir cpu "$g")/cpu.stat")
    thr_us=$(( $(awk '$1 == "throttled_time" {print $2}' "$(cg_dir cpu "$g")/cpu.stat") / 1000 ))
    mem=$(cat "$(cg_dir memory "$g")/memory.usage_in_bytes")
    peak=$(cat "$(cg_dir memory "$g")/memory.max_usage_in_bytes")
    lim=$(cat "$(cg_dir memory "$g")/memory.limit_in_bytes")
  fi
  awk -v g="$g" -v cpu="$cpu_ns" -v thr="$thr" -v tus="$thr_us" -v mem="$mem" -v peak="$peak" -v lim="$lim" 'BEGIN {
    mb = 1048576
    printf "%-20s cpu %8.2fs  throttled %6d times (%7.2fs)  memory %6.1fMB  peak %6.1fMB  limit %sMB\n",
      g, cpu / 1e9, thr, tus / 1e6, mem / mb, (peak == "?" ? 0 : peak / mb), (lim == "max" ? "none" : sprintf("%.0f", lim / mb))
  }'
}
