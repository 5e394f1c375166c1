"""What the kernel measured about the stack during a run (for scripts/loadtest): cgroup CPU,
throttling and memory, the processes' peak memory, TCP counters, the machine's CPU.

The native stack (scripts/stack-up, crebitos_tools/stack.py) runs each service in a cgroup
PARENT/NAME with its CPU quota and memory limit (docs/STACK.md), and records where in
STATE_DIR/stack.env; cgroup v1 (cpuacct.usage, cpu.stat, memory.max_usage_in_bytes) and v2
(cpu.stat, memory.peak) are both read.
"""
import os

from .stack import Cgroups, cgroup_pids, group_counters, proc_status, read_text as _read, stack_env  # noqa: F401

CLK_TCK = os.sysconf("SC_CLK_TCK")


def find_groups(state_dir):
    """The cgroups of the stack whose state dir (stack-up --state-dir) is given, or None when
    it runs without limits. Returns {"version", "parent": {ctrl: dir}, "children": {name: {ctrl: dir}}}
    (ctrl "v2" under cgroup v2)."""
    env = stack_env(state_dir)
    cg = Cgroups.of_stack(env)
    if not cg:
        return None
    parents = {c: d for c, d in cg.dirs(env["STACK_CGROUP"]).items() if os.path.isdir(d)}
    if not parents:
        return None
    result = {"version": cg.version, "parent": parents, "children": {}}
    for c, d in parents.items():
        for child in sorted(os.listdir(d)):
            if os.path.isdir(os.path.join(d, child)):
                result["children"].setdefault(child, {})[c] = os.path.join(d, child)
    return result


def snapshot(groups):
    if not groups:
        return None
    out = {"_parent": group_counters(groups["parent"])}
    for name, dirs in groups["children"].items():
        out[name] = group_counters(dirs)
    return out


def cpu_seconds(groups):
    return group_counters(groups["parent"]).get("cpu_ns", 0) / 1e9


def _group_pids(dirs):
    return sorted({pid for d in dirs.values() for pid in cgroup_pids(d)})


def reset_peaks(groups):
    """Peak memory is reported for the run only: reset the cgroups' and processes' peaks."""
    if not groups:
        return
    all_dirs = [groups["parent"]] + list(groups["children"].values())
    for dirs in all_dirs:
        if "memory" in dirs:
            try:
                with open(os.path.join(dirs["memory"], "memory.max_usage_in_bytes"), "w") as fh:
                    fh.write("0")
            except OSError:
                pass
    for dirs in groups["children"].values():
        for pid in _group_pids(dirs):
            try:
                with open("/proc/%d/clear_refs" % pid, "w") as fh:
                    fh.write("5")  # 5: reset the peak resident set size (VmHWM)
            except OSError:
                pass


def processes(groups):
    """Every process of the stack with its peak RSS (VmHWM) since the run started."""
    if not groups:
        return []
    out = []
    for name, dirs in sorted(groups["children"].items()):
        pids = _group_pids(dirs)
        for pid in pids:
            kv = proc_status(pid)
            cmd = (_read("/proc/%d/cmdline" % pid, "") or "").replace("\0", " ").strip()
            label = name
            if len(pids) > 1:
                label = "%s(%s)" % (name, cmd.split(":", 1)[1].strip().split()[0] if cmd.startswith("nginx:")
                                    else kv.get("Name", "?"))
            out.append({
                "name": label,
                "pid": pid,
                "comm": kv.get("Name"),
                "peak_rss_mb": round(int(kv.get("VmHWM") or 0) / 1024.0, 1),
                "rss_mb": round(int(kv.get("VmRSS") or 0) / 1024.0, 1),
                "threads": int(kv.get("Threads", "0") or 0),
            })
    return out


def cpu_delta(before, after, requests, wall_s):
    if not before or not after:
        return {"why": "no cgroup snapshot"}

    def d(name):
        b, a = before.get(name, {}), after.get(name, {})
        peak = a.get("mem_peak")
        return {
            "cpu_s": round((a.get("cpu_ns", 0) - b.get("cpu_ns", 0)) / 1e9, 3),
            "user_s": round(a.get("user_s", 0) - b.get("user_s", 0), 2),
            "system_s": round(a.get("system_s", 0) - b.get("system_s", 0), 2),
            "nr_periods": a.get("nr_periods", 0) - b.get("nr_periods", 0),
            "nr_throttled": a.get("nr_throttled", 0) - b.get("nr_throttled", 0),
            "throttled_s": round((a.get("throttled_ns", 0) - b.get("throttled_ns", 0)) / 1e9, 3),
            "quota_cpus": a.get("quota_cpus"),
            "mem_peak_mb": round(peak / 1048576.0, 1) if peak else None,
            "mem_limit_mb": round(a["mem_limit"] / 1048576.0, 1) if a.get("mem_limit") and a["mem_limit"] < 1 << 50 else None,
        }

    parent = d("_parent")
    groups = {n: d(n) for n in after if n != "_parent"}
    quota = parent.get("quota_cpus") or (sum(g["quota_cpus"] or 0 for g in groups.values()) or None)
    out = {
        "stack_cpu_s": parent["cpu_s"],
        "stack_cpu_us_per_request": round(1e6 * parent["cpu_s"] / requests, 1) if requests else None,
        "quota_cpus": quota,
        "stack_quota_used_pct": round(100.0 * parent["cpu_s"] / (quota * wall_s), 1) if quota and wall_s else None,
        "nr_periods": parent["nr_periods"],
        "nr_throttled": parent["nr_throttled"] + sum(g["nr_throttled"] for g in groups.values()),
        "throttled_s": round(parent["throttled_s"] + sum(g["throttled_s"] for g in groups.values()), 3),
        "parent": parent,
        "groups": groups,
    }
    return out


def tcp_counters():
    """Kernel TCP counters: connections opened (active/passive) and listen queue overflows."""
    out = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        lines = (_read(path, "") or "").splitlines()
        for i in range(0, len(lines) - 1, 2):
            head, vals = lines[i].split(), lines[i + 1].split()
            if head[0] not in ("Tcp:", "TcpExt:"):
                continue
            kv = dict(zip(head[1:], vals[1:]))
            for key, name in (("ActiveOpens", "active_opens"), ("PassiveOpens", "passive_opens"),
                              ("AttemptFails", "attempt_fails"), ("RetransSegs", "retrans_segs"),
                              ("ListenOverflows", "listen_overflows"), ("ListenDrops", "listen_drops")):
                if key in kv and kv[key].lstrip("-").isdigit():
                    out[name] = int(kv[key])
    return out


def machine_cpu():
    """(busy seconds, total seconds) over all cores since boot, from /proc/stat."""
    busy, total, _ = machine_cpu_irq()
    return busy, total


def machine_cpu_irq():
    """(busy, total, irq + softirq) seconds over all cores since boot, from /proc/stat.
    Interrupt time is no process's: on loopback it is mostly the test's own TCP traffic."""
    f = (_read("/proc/stat", "cpu 0 0 0 0") or "cpu 0").splitlines()[0].split()[1:]
    vals = [int(x) for x in f] + [0] * 8
    total = sum(vals[:8])
    idle = vals[3] + vals[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK, (vals[5] + vals[6]) / CLK_TCK
