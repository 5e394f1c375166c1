"""What the kernel measured about the stack during a run: cgroup CPU, throttling, memory.

The native stack (scripts/stack-up) runs nginx, api01 and api02 each in a cgroup
PARENT/NAME with its CPU quota and memory limit (docs/STACK.md). stack-up writes the
parent's directories into STATE_DIR/stack.env; failing that, the groups are found from
the processes themselves: the pid files under STATE_DIR name the processes, and
/proc/PID/cgroup names their groups, wherever the caller of stack-up was accounted.
CREBITOS_CGROUP=/path/of/PARENT (as in /proc/PID/cgroup) overrides the search.

cgroup v1 (cpuacct.usage, cpu.stat, memory.max_usage_in_bytes) and v2 (cpu.stat,
memory.peak) are both read.
"""
import glob
import os
from collections import Counter

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path, default=None):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return default


def _mounts():
    """controller -> mount point (v1), and 'unified' -> the v2 mount if there is one."""
    out = {}
    for line in (_read("/proc/mounts", "") or "").splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        if parts[2] == "cgroup":
            for opt in parts[3].split(","):
                out.setdefault(opt, parts[1])
        elif parts[2] == "cgroup2":
            out.setdefault("unified", parts[1])
    return out


def _pid_groups(pid):
    """controller -> group path for a pid; '' key for the v2 line."""
    out = {}
    for line in (_read("/proc/%d/cgroup" % pid, "") or "").splitlines():
        try:
            _, ctrls, path = line.split(":", 2)
        except ValueError:
            continue
        for c in (ctrls.split(",") if ctrls else [""]):
            out[c] = path
    return out


def _stack_pids(state_dir):
    pids = []
    for f in glob.glob(os.path.join(state_dir, "**", "*.pid"), recursive=True):
        tok = (_read(f, "") or "").split()
        if tok and tok[0].isdigit() and os.path.exists("/proc/%s" % tok[0]):
            pids.append(int(tok[0]))
    return pids


def stack_env(state_dir):
    """STATE_DIR/stack.env as written by scripts/stack-up (KEY=value lines), or {}."""
    out = {}
    import shlex
    for line in (_read(os.path.join(state_dir, "stack.env"), "") or "").splitlines():
        key, sep, val = line.partition("=")
        if sep:
            try:
                parts = shlex.split(val)
            except ValueError:
                parts = [val]
            out[key] = parts[0] if parts else ""
    return out


def _groups_from_env(env):
    """The groups stack-up recorded in stack.env (CGROUP_CPU, CGROUP_CPUACCT, CGROUP_MEMORY)."""
    if env.get("STACK_LIMITS") != "on":
        return None
    if env.get("CG_VERSION") == "v2":
        d = env.get("CGROUP_CPU") or env.get("CGROUP_MEMORY")
        parents = {"v2": d} if d else {}
    else:
        parents = {c: env.get("CGROUP_" + c.upper()) for c in ("cpuacct", "cpu", "memory")}
    parents = {c: d for c, d in parents.items() if d and os.path.isdir(d)}
    if not parents:
        return None
    result = {"version": env.get("CG_VERSION", "v1"), "parent": parents, "children": {}}
    for c, d in parents.items():
        for child in sorted(os.listdir(d)):
            if os.path.isdir(os.path.join(d, child)):
                result["children"].setdefault(child, {})[c] = os.path.join(d, child)
    return result


def find_groups(state_dir):
    """The cgroups of the stack whose state dir (stack-up --state-dir) is given, or None. Returns {"version", "parent": {ctrl: dir}, "children": {name: {ctrl: dir}}}."""
    if not os.environ.get("CREBITOS_CGROUP"):
        g = _groups_from_env(stack_env(state_dir))
        if g:
            return g
    mounts = _mounts()
    parent_path = os.environ.get("CREBITOS_CGROUP")
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    if not parent_path:
        parents = Counter()
        for pid in _stack_pids(state_dir):
            g = _pid_groups(pid)
            path = g.get("" if v2 else "cpuacct")
            if path and path not in ("/", ""):
                parents[os.path.dirname(path)] += 1
        if not parents:
            return None
        parent_path = parents.most_common(1)[0][0]
        # The memory hierarchy may sit elsewhere (v1 controllers are mounted separately
        # and the caller may be in different groups in each): find it the same way.
    result = {"version": "v2" if v2 else "v1", "parent": {}, "children": {}}
    ctrls = [""] if v2 else ["cpuacct", "cpu", "memory"]
    for c in ctrls:
        if v2:
            mount = "/sys/fs/cgroup"
            path = parent_path
        else:
            mount = mounts.get(c)
            if not mount:
                continue
            path = parent_path
            if not os.environ.get("CREBITOS_CGROUP"):
                # Per-controller path from a stack process.
                cand = Counter()
                for pid in _stack_pids(state_dir):
                    p = _pid_groups(pid).get(c)
                    if p and p != "/":
                        cand[os.path.dirname(p)] += 1
                if cand:
                    path = cand.most_common(1)[0][0]
        d = mount + path
        if not os.path.isdir(d):
            continue
        result["parent"][c or "v2"] = d
        for child in sorted(os.listdir(d)):
            cd = os.path.join(d, child)
            if os.path.isdir(cd):
                result["children"].setdefault(child, {})[c or "v2"] = cd
    return result if result["parent"] else None


def _stat_kv(path):
    out = {}
    for line in (_read(path, "") or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _group_snapshot(dirs):
    s = {}
    if "v2" in dirs:
        d = dirs["v2"]
        st = _stat_kv(os.path.join(d, "cpu.stat"))
        s["cpu_ns"] = st.get("usage_usec", 0) * 1000
        s["user_s"] = st.get("user_usec", 0) / 1e6
        s["system_s"] = st.get("system_usec", 0) / 1e6
        s["nr_periods"] = st.get("nr_periods", 0)
        s["nr_throttled"] = st.get("nr_throttled", 0)
        s["throttled_ns"] = st.get("throttled_usec", 0) * 1000
        mx = (_read(os.path.join(d, "cpu.max"), "max") or "max").split()
        if mx and mx[0] != "max":
            s["quota_cpus"] = int(mx[0]) / int(mx[1])
        peak = _read(os.path.join(d, "memory.peak"))
        s["mem_peak"] = int(peak) if peak and peak.isdigit() else None
        cur = _read(os.path.join(d, "memory.current"))
        s["mem_now"] = int(cur) if cur and cur.isdigit() else None
        return s
    if "cpuacct" in dirs:
        v = _read(os.path.join(dirs["cpuacct"], "cpuacct.usage"))
        s["cpu_ns"] = int(v) if v and v.isdigit() else 0
        st = _stat_kv(os.path.join(dirs["cpuacct"], "cpuacct.stat"))  # in USER_HZ ticks
        s["user_s"] = st.get("user", 0) / CLK_TCK
        s["system_s"] = st.get("system", 0) / CLK_TCK
    if "cpu" in dirs:
        st = _stat_kv(os.path.join(dirs["cpu"], "cpu.stat"))
        s["nr_periods"] = st.get("nr_periods", 0)
        s["nr_throttled"] = st.get("nr_throttled", 0)
        s["throttled_ns"] = st.get("throttled_time", 0)
        q = _read(os.path.join(dirs["cpu"], "cpu.cfs_quota_us"))
        p = _read(os.path.join(dirs["cpu"], "cpu.cfs_period_us"))
        if q and p and q.lstrip("-").isdigit() and int(q) > 0:
            s["quota_cpus"] = int(q) / int(p)
    if "memory" in dirs:
        peak = _read(os.path.join(dirs["memory"], "memory.max_usage_in_bytes"))
        s["mem_peak"] = int(peak) if peak and peak.isdigit() else None
        cur = _read(os.path.join(dirs["memory"], "memory.usage_in_bytes"))
        s["mem_now"] = int(cur) if cur and cur.isdigit() else None
        lim = _read(os.path.join(dirs["memory"], "memory.limit_in_bytes"))
        s["mem_limit"] = int(lim) if lim and lim.isdigit() else None
    return s


def snapshot(groups):
    if not groups:
        return None
    out = {"_parent": _group_snapshot(groups["parent"])}
    for name, dirs in groups["children"].items():
        out[name] = _group_snapshot(dirs)
    return out


def cpu_seconds(groups):
    d = groups["parent"]
    if "v2" in d:
        return _stat_kv(os.path.join(d["v2"], "cpu.stat")).get("usage_usec", 0) / 1e6
    v = _read(os.path.join(d.get("cpuacct", "/nonexistent"), "cpuacct.usage"))
    return int(v) / 1e9 if v and v.isdigit() else None


def _group_pids(dirs):
    pids = set()
    for d in dirs.values():
        for f in glob.glob(os.path.join(d, "**", "cgroup.procs"), recursive=True):
            for tok in (_read(f, "") or "").split():
                if tok.isdigit():
                    pids.add(int(tok))
    return sorted(pids)


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
            status = _read("/proc/%d/status" % pid, "") or ""
            kv = {}
            for line in status.splitlines():
                k, _, v = line.partition(":")
                kv[k] = v.strip()
            cmd = (_read("/proc/%d/cmdline" % pid, "") or "").replace("\0", " ").strip()
            label = name
            if len(pids) > 1:
                label = "%s(%s)" % (name, cmd.split(":", 1)[1].strip().split()[0] if cmd.startswith("nginx:")
                                    else kv.get("Name", "?"))
            out.append({
                "name": label,
                "pid": pid,
                "comm": kv.get("Name"),
                "peak_rss_mb": round(int((kv.get("VmHWM", "0 kB").split() or ["0"])[0]) / 1024.0, 1),
                "rss_mb": round(int((kv.get("VmRSS", "0 kB").split() or ["0"])[0]) / 1024.0, 1),
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
