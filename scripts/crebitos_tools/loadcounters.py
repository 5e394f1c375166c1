"""What the kernel counted while a load test ran (scripts/loadtest): the stack's cgroups
(CPU, throttling, peak memory) before and after, each process's peak RSS, the TCP counters and
the machine's interrupt time."""
import os

from .cgroups import CLK_TCK, Cgroups, cgroup_pids, group_counters
from .processes import proc_status, read_text, write
from .stackstate import stack_env

def find_groups(state_dir):
    """The cgroups of a running stack, or None without limits:
    {"version", "parent": {ctrl: dir}, "children": {name: {ctrl: dir}}} (ctrl "v2" under v2)."""
    env = stack_env(state_dir)
    cg = Cgroups.of_stack(env)
    parents = {c: d for c, d in cg.dirs(env["STACK_CGROUP"]).items() if os.path.isdir(d)} if cg else None
    if not parents:
        return None
    kids = {}
    for c, d in parents.items():
        for child in sorted(n for n in os.listdir(d) if os.path.isdir(os.path.join(d, n))):
            kids.setdefault(child, {})[c] = os.path.join(d, child)
    return {"version": cg.version, "parent": parents, "children": kids}

def snapshot(groups):
    return dict({"_parent": group_counters(groups["parent"])},
                **{n: group_counters(d) for n, d in groups["children"].items()}) if groups else None

def cpu_seconds(groups):
    return group_counters(groups["parent"]).get("cpu_ns", 0) / 1e9

def _group_pids(dirs):
    return sorted({pid for d in dirs.values() for pid in cgroup_pids(d)})

def reset_peaks(groups):
    """Peak memory is reported for the run only: reset the cgroups' (v1) and processes' peaks."""
    for dirs in ([groups["parent"]] + list(groups["children"].values())) if groups else []:
        if "memory" in dirs:
            write(os.path.join(dirs["memory"], "memory.max_usage_in_bytes"), "0", optional=True)
    for dirs in groups["children"].values() if groups else []:
        for pid in _group_pids(dirs):
            write("/proc/%d/clear_refs" % pid, "5", optional=True)  # 5: reset VmHWM

def processes(groups):
    """Every process of the stack with its peak RSS (VmHWM) since the run started."""
    out = []
    for name, dirs in sorted(groups["children"].items()) if groups else []:
        group = _group_pids(dirs)
        for pid in group:
            kv = proc_status(pid)
            cmd = (read_text("/proc/%d/cmdline" % pid, "") or "").replace("\0", " ").strip()
            # nginx's processes are told apart by their titles: "nginx: master process ...", "nginx: worker ..."
            role = cmd.split(":", 1)[1].strip().split()[0] if cmd.startswith("nginx:") else kv.get("Name", "?")
            out.append({"name": name if len(group) < 2 else "%s(%s)" % (name, role), "pid": pid,
                        "comm": kv.get("Name"), "peak_rss_mb": round(int(kv.get("VmHWM") or 0) / 1024.0, 1),
                        "rss_mb": round(int(kv.get("VmRSS") or 0) / 1024.0, 1),
                        "threads": int(kv.get("Threads") or 0)})
    return out

def cpu_delta(before, after, requests, wall_s):
    if not before or not after:
        return {"why": "no cgroup snapshot"}

    def d(name):
        b, a = before.get(name, {}), after.get(name, {})
        less = lambda k: a.get(k, 0) - b.get(k, 0)  # noqa: E731
        peak, limit = a.get("mem_peak"), a.get("mem_limit")
        return {"cpu_s": round(less("cpu_ns") / 1e9, 3), "user_s": round(less("user_s"), 2),
                "system_s": round(less("system_s"), 2), "nr_periods": less("nr_periods"),
                "nr_throttled": less("nr_throttled"), "throttled_s": round(less("throttled_ns") / 1e9, 3),
                "quota_cpus": a.get("quota_cpus"), "mem_peak_mb": round(peak / 1048576.0, 1) if peak else None,
                "mem_limit_mb": round(limit / 1048576.0, 1) if limit and limit < 1 << 50 else None}

    parent, groups = d("_parent"), {n: d(n) for n in after if n != "_parent"}
    quota = parent.get("quota_cpus") or (sum(g["quota_cpus"] or 0 for g in groups.values()) or None)
    return {"stack_cpu_s": parent["cpu_s"],
            "stack_cpu_us_per_request": round(1e6 * parent["cpu_s"] / requests, 1) if requests else None,
            "quota_cpus": quota,
            "stack_quota_used_pct": (round(100.0 * parent["cpu_s"] / (quota * wall_s), 1)
                                     if quota and wall_s else None),
            "nr_periods": parent["nr_periods"],
            "nr_throttled": parent["nr_throttled"] + sum(g["nr_throttled"] for g in groups.values()),
            "throttled_s": round(parent["throttled_s"] + sum(g["throttled_s"] for g in groups.values()), 3),
            "parent": parent, "groups": groups}

TCP_COUNTERS = {"ActiveOpens": "active_opens", "PassiveOpens": "passive_opens",
                "AttemptFails": "attempt_fails", "RetransSegs": "retrans_segs",
                "ListenOverflows": "listen_overflows", "ListenDrops": "listen_drops"}

def tcp_counters():
    """Kernel TCP counters: connections opened (active/passive) and listen queue overflows."""
    out = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        lines = (read_text(path, "") or "").splitlines()
        for head, vals in zip(lines[0::2], lines[1::2]):
            if head.split()[0] in ("Tcp:", "TcpExt:"):
                out.update((TCP_COUNTERS[k], int(v)) for k, v in zip(head.split()[1:], vals.split()[1:])
                           if k in TCP_COUNTERS and v.lstrip("-").isdigit())
    return out

def machine_cpu_irq():
    """(busy, total, irq + softirq) seconds over all cores since boot, from /proc/stat.
    Interrupt time is no process's: on loopback it is mostly the test's own TCP traffic."""
    vals = [int(x) for x in (read_text("/proc/stat", "cpu 0") or "cpu 0").splitlines()[0].split()[1:]] + [0] * 8
    total = sum(vals[:8])
    return (total - vals[3] - vals[4]) / CLK_TCK, total / CLK_TCK, (vals[5] + vals[6]) / CLK_TCK
