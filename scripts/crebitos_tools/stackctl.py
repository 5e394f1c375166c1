"""The native stack's controller: stack-up, stack-down, stack-status, postgres-server, the
supervisor and `instance start` (docs/STACK.md describes the stack, its options and its files).
Also for the other tools: Stack (a test's own stack) and the kernel's counters of a stack.
A pid file holds "PID STARTTIME" (field 22 of /proc/PID/stat), so nothing here signals a process
it did not start. Standard library only: it runs before the .venv exists. Processes join their
cgroup in a preexec_fn, only safe without threads: every command runs single-threaded."""
import argparse
import asyncio
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import REPO, SCRIPTS, httpc
from .httpc import port_open as port_in_use

MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

def log(msg, out=None):
    print(msg, file=out or sys.stderr, flush=True)

def die(msg):
    raise SystemExit("error: %s" % msg)

def abspath(path):
    """Relative paths are the repository root's, wherever the command runs; a URL is no path."""
    return path if path.startswith(("/", "postgres://", "postgresql://")) else os.path.join(REPO, path)

def read_text(path, default=None):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return default

def write(path, text, optional=False):
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError:
        if not optional:
            raise

def utc_now():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (t % 1 * 1000)

# --- processes --------------------------------------------------------------------------------

def stat_fields(pid):
    text = read_text("/proc/%d/stat" % pid)  # from field 3 on: field 2, the name, may hold spaces
    return text.rsplit(")", 1)[1].split() if text else None

def proc_starttime(pid):
    return (stat_fields(pid) or [None] * 20)[19]

def cpu_seconds_of(pid):
    """User + system CPU of a process so far, or None once it is gone."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else None

def is_zombie(pid):
    """Gone or finished. A multithreaded server's main thread shows Z while its other threads still
    shut down (and keep it in its cgroup): finished means every thread is Z."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return True
    stats = (read_text("/proc/%d/task/%s/stat" % (pid, t)) or ") Z" for t in tids)
    return all(stat.rsplit(")", 1)[1].split()[:1] in ([], ["Z"]) for stat in stats)

def pid_running(pid, starttime=None):
    now = proc_starttime(pid)
    return now is not None and (not starttime or now == starttime) and not is_zombie(pid)

def read_pidfile(path):
    parts = (read_text(path) or "").split()
    return (int(parts[0]), parts[1] if len(parts) > 1 else None) if parts and parts[0].isdigit() else None

def pidfile_alive(path):
    """The pid recorded in the pid file if that very process still runs, else None."""
    rec = read_pidfile(path)
    return rec[0] if rec and pid_running(*rec) else None

def write_pidfile(path, pid):
    st = proc_starttime(pid)
    if st is not None:
        write(path, "%d %s\n" % (pid, st))
    return st is not None

def pids(state):
    """{service: pid} of the stack's processes that still run, from its pid files."""
    d = os.path.join(state, "pids")
    found = {f[:-4]: pidfile_alive(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".pid")}
    return {svc: pid for svc, pid in found.items() if pid}

def kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # it exited meanwhile
        pass

def wait_gone(seconds, pid, starttime=None, step=0.1):
    deadline = time.monotonic() + seconds
    while pid_running(pid, starttime):
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True

def children(pid):
    return [int(d) for d in os.listdir("/proc")
            if d.isdigit() and (stat_fields(int(d)) or [0, 0])[1] == str(pid)]

def proc_status(pid):
    """/proc/PID/status as {key: first word of the value} ({} once the process is gone)."""
    lines = (read_text("/proc/%d/status" % pid) or "").splitlines()
    return {k: (v.split() or [""])[0] for k, _, v in (line.partition(":") for line in lines)}

def rss_kb(pid):
    value = proc_status(pid).get("VmRSS")
    return int(value) if value else None

def memory(pid):
    st = proc_status(pid)
    return "rss %6.1f MB  peak %6.1f MB" % (int(st.get("VmRSS") or 0) / 1024, int(st.get("VmHWM") or 0) / 1024)

def spawn(argv, logfile, enter=None, env=None):
    """argv detached (own session, hangups ignored, stdin /dev/null, output appended to logfile); enter()
    runs in the child before exec (to join a cgroup), so the pid is the program's, already in its group."""
    def child():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if enter:
            enter()
    with open(logfile, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=child, start_new_session=True)

def free_port():
    """A TCP port nobody listens on, above the ephemeral range's default."""
    return next((p for p in (random.randint(20000, 31999) for _ in range(200)) if not port_in_use(p)), None) \
        or die("no free port found")

def http_get(address, path, timeout=2):
    """GET path at address (unix:/path.sock or host:port): (status, body), or (None, why)."""
    host, _, port = address.rpartition(":")
    unix = address[len("unix:"):] if address.startswith("unix:") else None
    try:
        request = httpc.build("GET", path)
        r = asyncio.run(httpc.exchange(request, host, 80 if unix else int(port), unix, timeout))
        return r.status, r.body.decode("utf-8", "replace")
    except (httpc.HTTPError, OSError, ValueError) as e:
        return None, str(e) or type(e).__name__

def apt_install(pkg):
    """Install pkg from Debian (as root). policy-rc.d answering 101 keeps the package's own service
    from starting (a system nginx on port 80, a cluster on 5432); the package lists are refreshed
    only if installing fails."""
    policy = "/usr/sbin/policy-rc.d"
    created = not os.path.exists(policy)
    if created:
        write(policy, "#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                die("apt-get install %s failed" % pkg)
    finally:
        if created:
            os.remove(policy)

def need(pkg, found, what, out=None):
    """found()'s answer; if none, install pkg as root, else say what to install."""
    if not found():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            die("%s is missing: install it with: sudo apt-get install -y %s" % (what, pkg))
        log("installing %s (for %s)" % (pkg, what), out)
        apt_install(pkg)
    return found() or die("installed %s but %s is still missing" % (pkg, what))

# --- limits: the compose file is the single source ---------------------------------------------

def compose_limit(service, key, path):
    """deploy.resources.limits.KEY of SERVICE in the compose file (apiNN: the x-api block's).
    Reads the file's known layout (services indented by two spaces), not YAML in general."""
    section = top = None
    with open(path) as fh:
        for line in fh:
            if re.match(r"[^ #\n]", line):
                section = top = line.split(":")[0]
            elif top == "services" and re.match(r"  [A-Za-z0-9_-]+:", line):
                section = line.split(":")[0].strip()
            words = line.split()
            if section == service and len(words) >= 2 and words[0] == key + ":":
                return words[1].strip('"')
    if service.startswith("api"):
        return compose_limit("x-api", key, path)
    die("no %s limit for %s in %s" % (key, service, path))

def mb_to_bytes(value):
    """250MB -> 262144000: Docker and podman read "MB" in a compose file as 1024*1024 bytes."""
    value = value.rstrip("Bb")
    scale = {"g": 1024 ** 3, "m": MIB, "k": 1024}.get(value[-1:].lower())
    return int(value[:-1]) * scale if scale else int(value)

# --- cgroups ----------------------------------------------------------------------------------
# BASE/PARENT holds the whole stack (the sum of its services' limits), BASE/PARENT/SVC one
# service with the compose file's CPU quota and memory limit. v1: one hierarchy per controller,
# BASE the caller's own group in each (the stack stays accounted wherever the caller's session
# is). v2: BASE is the root, as v2 forbids controllers below a group with processes of its own.

CONTROLLERS = ("cpu", "cpuacct", "memory")
PERIOD_US = 100000  # the CFS period docker and podman use
V2_ROOT = "/sys/fs/cgroup"

class Cgroups:
    def __init__(self, version, bases):
        self.version, self.bases = version, bases  # "v1"/"v2"; controller -> where groups are made

    @classmethod
    def detect(cls):
        """(Cgroups, "") where this process may create limited groups, else (None, why not)."""
        if os.geteuid() != 0:
            return None, "not running as root"
        controllers = read_text(os.path.join(V2_ROOT, "cgroup.controllers"))
        if controllers is not None:
            if not {"cpu", "memory"} <= set(controllers.split()):
                return None, "cgroup v2 without the cpu and memory controllers"
            if not os.access(V2_ROOT, os.W_OK):
                return None, "cgroup v2 at %s is not writable" % V2_ROOT
            return cls("v2", dict.fromkeys(CONTROLLERS, V2_ROOT)), ""
        mounts, own = {}, {}
        for f in (line.split() for line in (read_text("/proc/mounts") or "").splitlines()):
            if len(f) > 3 and f[2] == "cgroup":
                for opt in f[3].split(","):
                    mounts.setdefault(opt, f[1])
        for line in (read_text("/proc/self/cgroup") or "").splitlines():
            _, ctrls, path = line.split(":", 2)
            own.update(dict.fromkeys(ctrls.split(","), "" if path == "/" else path))
        for c in CONTROLLERS:
            if c not in mounts:
                return None, "cgroup v1 controller '%s' is not mounted" % c
            if not os.access(mounts[c] + own.get(c, ""), os.W_OK):
                return None, "cgroup v1 '%s' hierarchy is not writable" % c
        return cls("v1", {c: mounts[c] + own.get(c, "") for c in CONTROLLERS}), ""

    @classmethod
    def of_stack(cls, env):
        """The groups a stack.env records, or None when the stack runs without limits."""
        if env.get("STACK_LIMITS") != "on" or env.get("CG_VERSION") not in ("v1", "v2"):
            return None
        return cls(env["CG_VERSION"], {c: env["CG_BASE_" + c.upper()] for c in CONTROLLERS})

    def dir(self, controller, group):
        return os.path.join(self.bases[controller], group)

    def dirs(self, group):
        """{controller: directory} of group ({"v2": dir} under v2)."""
        if self.version == "v2":
            return {"v2": self.dir("cpu", group)}
        return {c: self.dir(c, group) for c in CONTROLLERS}

    def env(self, parent):
        """stack.env's record: CG_BASE_* where the groups are made, CGROUP_* the parent."""
        return dict(kv for c in CONTROLLERS for kv in (("CG_BASE_" + c.upper(), self.bases[c]),
                                                         ("CGROUP_" + c.upper(), self.dir(c, parent))))

    def create(self, group, cpus, nbytes):
        quota = int(float(cpus) * PERIOD_US + 0.5)
        if self.version == "v2":
            rel = ""
            for part in group.split("/"):  # v2: the controllers enabled in every ancestor
                write(os.path.join(V2_ROOT, rel, "cgroup.subtree_control"), "+cpu +memory", optional=True)
                rel = os.path.join(rel, part)
                os.makedirs(os.path.join(V2_ROOT, rel), exist_ok=True)
            files = {"cpu.max": "%d %d" % (quota, PERIOD_US), "memory.max": nbytes, "memory.swap.max?": 0}
        else:
            for c in CONTROLLERS:
                os.makedirs(self.dir(c, group), exist_ok=True)
            # memsw: no swap beyond the limit either (where the kernel accounts swap), as docker.
            files = {"cpu.cfs_period_us": PERIOD_US, "cpu.cfs_quota_us": quota, "memory.limit_in_bytes": nbytes,
                     "memory.memsw.limit_in_bytes?": nbytes}
        for name, value in files.items():  # NAME? is written where the kernel has that file
            path = os.path.join(self.dir(name.split(".")[0], group), name.rstrip("?"))
            write(path, str(value), optional=name.endswith("?"))

    def joiner(self, group):
        """What spawn() runs in the child to start it inside group (its children inherit it)."""
        dirs = set(self.dirs(group).values())
        return lambda: [write(os.path.join(d, "cgroup.procs"), str(os.getpid())) for d in dirs]

    def remove(self, parent):
        """Remove the stack's groups once they are empty, children first."""
        for d in sorted({self.dir(c, parent) for c in CONTROLLERS}):
            for root, _, _ in sorted(os.walk(d), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(root)
                except OSError:
                    pass

    def report(self, env, missing):
        """One line per group of the stack: what the kernel measured."""
        parent = env.get("STACK_CGROUP", "crebitos")
        services = ["postgres"] if env.get("STACK_STORE") == "postgres" else []
        services += ["nginx"] + env["INSTANCES"].split()
        for g in [parent] + ["%s/%s" % (parent, s) for s in services]:
            dirs = self.dirs(g)
            if not all(os.path.isdir(d) for d in dirs.values()):
                yield "  %s: %s" % (g, missing)
                continue
            s = group_counters(dirs)
            limit = "%.0f" % (s["mem_limit"] / MIB) if s["mem_limit"] else "none"
            yield ("  %-20s cpu %8.2fs  throttled %6d times (%7.2fs)  memory %6.1fMB  peak %6.1fMB  limit %sMB"
                   % (g, s["cpu_ns"] / 1e9, s["nr_throttled"], s["throttled_ns"] / 1e9,
                      (s["mem_now"] or 0) / MIB, (s["mem_peak"] or 0) / MIB, limit))

def cgroup_pids(directory):
    """Every pid in the group at directory and in the groups below it."""
    return sorted({int(p) for root, _, files in os.walk(directory) if "cgroup.procs" in files
                   for p in (read_text(os.path.join(root, "cgroup.procs")) or "").split()})

# What group_counters reads, per cgroup version: counter -> (file, key in it or None for the
# whole file, scale to the counter's unit). v1 keeps each file in its controller's hierarchy
# (the file name's first word); cpuacct.stat counts USER_HZ ticks.
COUNTER_FILES = {
    "v2": {"cpu_ns": ("cpu.stat", "usage_usec", 1000), "user_s": ("cpu.stat", "user_usec", 1e-6),
           "system_s": ("cpu.stat", "system_usec", 1e-6), "throttled_ns": ("cpu.stat", "throttled_usec", 1000),
           "nr_periods": ("cpu.stat", "nr_periods", 1), "nr_throttled": ("cpu.stat", "nr_throttled", 1),
           "mem_now": ("memory.current", None, 1), "mem_peak": ("memory.peak", None, 1),
           "mem_limit": ("memory.max", None, 1)},
    "v1": {"cpu_ns": ("cpuacct.usage", None, 1), "user_s": ("cpuacct.stat", "user", 1 / CLK_TCK),
           "system_s": ("cpuacct.stat", "system", 1 / CLK_TCK),
           "throttled_ns": ("cpu.stat", "throttled_time", 1),
           "nr_periods": ("cpu.stat", "nr_periods", 1), "nr_throttled": ("cpu.stat", "nr_throttled", 1),
           "mem_now": ("memory.usage_in_bytes", None, 1), "mem_peak": ("memory.max_usage_in_bytes", None, 1),
           "mem_limit": ("memory.limit_in_bytes", None, 1)},
}

def group_counters(dirs):
    """What the kernel counted for one group ({controller: dir}, or {"v2": dir}): the counters of
    COUNTER_FILES (memory in bytes: None where the kernel has no such file or no limit), and
    quota_cpus where the group has a CPU quota."""
    version = "v2" if "v2" in dirs else "v1"
    def read(name):
        return (read_text(os.path.join(dirs.get("v2") or dirs[name.split(".")[0]], name)) or "").split()
    s = {}
    for counter, (name, key, scale) in COUNTER_FILES[version].items():
        words = read(name)
        value = dict(zip(words[0::2], words[1::2])).get(key) if key else (words or [None])[0]
        if value is not None and value.isdigit():
            s[counter] = int(value) * scale
        else:
            s[counter] = None if counter.startswith("mem_") else 0
    words = read("cpu.max") if version == "v2" else read("cpu.cfs_quota_us") + read("cpu.cfs_period_us")
    quota, period = (words + ["", ""])[:2]  # v2 "max 100000", v1 "-1": no quota
    if quota.isdigit() and period.isdigit():
        s["quota_cpus"] = int(quota) / int(period)
    return s

# --- what the kernel measured during a load test (scripts/loadtest) ---------------------------

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

# --- the binary and nginx's configuration -------------------------------------------------------

def build_binary(no_build=False, log=log, build_log=None):
    """Where `swift build -c release` puts the server, after running it unless no_build."""
    if not shutil.which("swift"):
        die("the Swift toolchain is needed to build (or pass --bin PATH)")
    if not no_build:
        log("building: swift build -c release" + (" (log: %s)" % build_log if build_log else ""))
        r = subprocess.run(["swift", "build", "-c", "release"], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if build_log:
            write(build_log, r.stdout)
        if r.returncode != 0:
            print("\n".join(r.stdout.splitlines()[-40:]), file=sys.stderr)
            die("release build failed" + (" (full log: %s)" % build_log if build_log else ""))
    return os.path.join(subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=REPO,
                                       capture_output=True, text=True).stdout.strip(), "crebitos")

def copy_binary(src, dst):
    """Copies the server binary whole: the shared .build may be relinked by another build at
    any moment, and a half-written binary hangs or crashes."""
    for _ in range(40):
        try:
            before = os.stat(src)
            if time.time() - before.st_mtime > 2:
                shutil.copy2(src, dst)
                after = os.stat(src)
                if (before.st_size, before.st_mtime) == (after.st_size, after.st_mtime) \
                        and os.path.getsize(dst) == before.st_size \
                        and subprocess.run([dst, "--help"], capture_output=True, timeout=20).returncode == 0:
                    return
        except (OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(3)
    raise SystemExit("could not get a stable copy of %s (is a build rewriting it?)" % src)

def render_nginx_conf(src, dst, port, tmp, upstreams):
    """The native copy of the repository's nginx.conf differs only where it must (docs/STACK.md):
    listen on 127.0.0.1:PORT; one server line per upstream with the api01 line's parameters;
    temp paths in the state dir; `user root;` as root (the state dir may be under a home nginx's
    default user cannot traverse). Pid file and error log go on nginx's command line."""
    with open(src) as fh:
        text = fh.read()
    api01 = re.compile(r"^([ \t]*)server unix:/run/crebitos/api01\.sock([^;]*);", re.M)
    api02 = re.compile(r"^[ \t]*server unix:/run/crebitos/api02\.sock[ ;].*\n", re.M)
    listen = re.compile(r"^([ \t]*)listen 9999\b", re.M)
    if not (api01.search(text) and api02.search(text) and listen.search(text)):
        die("%s no longer has the 'listen 9999' and 'server unix:/run/crebitos/api0N.sock' lines "
            "that crebitos_tools/stackctl.py rewrites" % src)
    os.makedirs(tmp, exist_ok=True)
    # One temp path per module this nginx was built with; each must be writable at start-up.
    built = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
    temps = "".join("    %s_temp_path %s/%s;\n" % (m, tmp, m)
                    for m in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                    if "--http-%s-temp-path" % m.replace("_", "-") in built)
    text = api01.sub(lambda m: "\n".join("%sserver %s%s;" % (m.group(1), up, m.group(2)) for up in upstreams),
                     text)
    text = listen.sub(lambda m: "%slisten 127.0.0.1:%d" % (m.group(1), port), api02.sub("", text))
    temps = "    # scripts/stack-up: temp files in the state dir\n" + temps
    text = re.sub(r"^http \{\n", lambda m: "http {\n" + temps, text, count=1, flags=re.M)
    write(dst, "# GENERATED by scripts/stack-up from %s: edit that file, not this one.\n" % src
          + ("user root;\n" if os.geteuid() == 0 else "") + text)

# --- PostgreSQL -------------------------------------------------------------------------------

class Postgres:
    """A local PostgreSQL server in DIR: Debian's binaries, the cluster in DIR/data, run by the
    postgres user when called as root (PostgreSQL refuses root), 127.0.0.1 only, its socket in
    DIR, its port in DIR/port, its log in DIR/server.log, fsync on."""
    DB = ROLE = PASSWORD = "rinha"

    def __init__(self, directory, out=None):
        self.dir, self.out = abspath(directory), out or sys.stderr  # out: progress, pg_ctl's output
        self.data, self.bin = os.path.join(self.dir, "data"), self.find_bin()

    @staticmethod
    def find_bin():
        """Debian's server binaries of the newest version installed, or None."""
        root = "/usr/lib/postgresql"
        versions = sorted((v for v in os.listdir(root) if v.replace(".", "").isdigit()), key=float,
                          reverse=True) if os.path.isdir(root) else []
        return next((os.path.join(root, v, "bin") for v in versions
                     if os.access(os.path.join(root, v, "bin", "initdb"), os.X_OK)), None)

    def tool(self, name, *args, **kw):
        return subprocess.run((["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else [])
                              + [os.path.join(self.bin, name)] + list(args), **kw)

    def port(self):
        return read_text(os.path.join(self.dir, "port"))

    def url(self):
        return "postgres://%s:%s@127.0.0.1:%s/%s" % (self.ROLE, self.PASSWORD, self.port(), self.DB)

    def running(self):
        return (bool(self.bin) and os.path.exists(os.path.join(self.data, "postmaster.pid"))
                and self.tool("pg_ctl", "-D", self.data, "status", stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0)

    def admin_sql(self, sql, database="postgres"):
        r = self.tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p", self.port(),
                      "-U", "postgres", "-d", database, "-Atc", sql, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else die("psql: %s" % r.stderr.strip())

    def start(self, port=None, settings="", enter=None):
        """initdb if DIR has no cluster, start the server (on port, or its last port if free, or a
        free one), create the role and database rinha if missing; its URL. A running server is
        left as it is. enter: see spawn()."""
        self.bin = need("postgresql", self.find_bin, "PostgreSQL's server", self.out)
        if self.running():
            log("PostgreSQL in %s is already running (port %s)" % (self.dir, self.port()), self.out)
            return self.url()
        os.makedirs(self.dir, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o700)
            if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", self.dir]).returncode != 0:
                die("the postgres user cannot reach %s: every directory above it must be searchable by "
                    "others (chmod o+x)" % self.dir)
        if not read_text(os.path.join(self.data, "PG_VERSION")):
            log("initdb: a new cluster in %s" % self.data, self.out)
            initdb_log = os.path.join(self.dir, "initdb.log")
            with open(initdb_log, "w") as fh:
                if self.tool("initdb", "-D", self.data, "-U", "postgres", "--encoding=UTF8", "--locale=C",
                             "--auth-local=trust", "--auth-host=scram-sha-256",
                             stdout=fh, stderr=fh).returncode:
                    log(read_text(initdb_log), self.out)
                    die("initdb failed")
        last = self.port()
        port = int(port or (last if last and not port_in_use(int(last)) else free_port()))
        if port_in_use(port):
            die("port %d on 127.0.0.1 is already in use" % port)
        write(os.path.join(self.dir, "port"), "%d\n" % port)
        if os.geteuid() == 0:
            shutil.chown(os.path.join(self.dir, "port"), "postgres", "postgres")
        server_log = os.path.join(self.dir, "server.log")
        log("starting PostgreSQL on 127.0.0.1:%d (log: %s)" % (port, server_log), self.out)
        options = "-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=on %s" % (port, self.dir, settings)
        if self.tool("pg_ctl", "-D", self.data, "-l", server_log, "-w", "-t", "60", "-o", options, "start",
                     stdout=self.out, stderr=self.out, preexec_fn=enter).returncode != 0:
            log("\n".join((read_text(server_log) or "").splitlines()[-20:]), self.out)
            die("PostgreSQL did not start")
        for what, table, column, create in (
                ("role", "pg_roles", "rolname", "ROLE %s LOGIN PASSWORD '%s'" % (self.ROLE, self.PASSWORD)),
                ("database", "pg_database", "datname", "DATABASE %s OWNER %s" % (self.DB, self.ROLE))):
            if self.admin_sql("SELECT 1 FROM %s WHERE %s = 'rinha'" % (table, column)) != "1":
                log("creating the %s rinha" % what, self.out)
                self.admin_sql("CREATE " + create)
        # The ledger audit's integrity check (ledger.postgres_integrity) runs amcheck as rinha.
        self.admin_sql("CREATE EXTENSION IF NOT EXISTS amcheck; "
                       "GRANT EXECUTE ON FUNCTION bt_index_check(regclass, boolean) TO %s" % self.ROLE, self.DB)
        log("PostgreSQL ready: %s" % self.url(), self.out)
        return self.url()

    def stop(self):
        """Fast shutdown; True if it stopped or was not running."""
        if not (os.path.isdir(self.data) and self.running()):
            log("PostgreSQL in %s is not running" % self.dir, self.out)
            return True
        log("stopping PostgreSQL in %s" % self.dir, self.out)
        return self.tool("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop",
                         stdout=self.out, stderr=self.out).returncode == 0

def postgres_main(argv):
    ap = argparse.ArgumentParser(prog="scripts/postgres-server", description=Postgres.__doc__ + " start: "
                                 "prints its URL last; status: the URL, or exit 3. POSTGRES_SERVER_SETTINGS: more "
                                 "`-c name=value`. See docs/STACK.md.")
    ap.add_argument("command", choices=["start", "stop", "status", "psql"])
    ap.add_argument("dir")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="start: PORT; psql: psql's arguments")
    a = ap.parse_args(argv)
    pg = Postgres(a.dir)
    if a.command == "start":
        print(pg.start(a.args[0] if a.args else None, os.environ.get("POSTGRES_SERVER_SETTINGS", "")))
    elif a.command == "stop":
        return 0 if pg.stop() else 1
    elif not pg.running():
        log("PostgreSQL in %s is not running" % pg.dir)
        return 3 if a.command == "status" else 1
    elif a.command == "status":
        print(pg.url())
    else:
        os.environ["PGPASSWORD"] = pg.PASSWORD
        os.execv(os.path.join(pg.bin, "psql"), ["psql", "-X", "-h", "127.0.0.1", "-p", pg.port(), "-U", pg.ROLE,
                                                 "-d", pg.DB] + a.args)
    return 0

# --- the stack's record and its services ---------------------------------------------------------

def stack_env(state):
    """STATE/stack.env as {KEY: value}, or {}."""
    lines = (read_text(os.path.join(state, "stack.env")) or "").splitlines()
    pairs = (line.partition("=") for line in lines)
    return {key: (shlex.split(value) or [""])[0] for key, sep, value in pairs if sep}

def write_stack_env(state, env):
    text = "".join("%s=%s\n" % (k, shlex.quote(str(v))) for k, v in env.items())
    write(os.path.join(state, "stack.env"), text)

def pidfile(state, svc):
    return os.path.join(state, "pids", svc + ".pid")

def running(state, svc):
    """svc's pid if the process its pid file records still runs, else None."""
    return pidfile_alive(pidfile(state, svc))

def launch_instance(state, env, svc, why=None):
    """Start one API instance detached, in its cgroup, with docker-compose.yml's environment, and
    record its pid file: up, the supervisor and `instance start` all start instances here."""
    logfile = os.path.join(state, "logs", svc + ".log")
    if why:
        with open(logfile, "a") as fh:
            fh.write("--- %s %s\n" % (utc_now(), why))
    cg = Cgroups.of_stack(env)
    server_env = dict(os.environ, CREBITOS_DATABASE=env["CREBITOS_DATABASE"], CREBITOS_INSTANCE=svc,
                      CREBITOS_LISTEN=env[svc.upper() + "_LISTEN"],
                      CREBITOS_SYNCHRONOUS=env["CREBITOS_SYNCHRONOUS"],
                      CREBITOS_LOG_LEVEL=env.get("CREBITOS_LOG_LEVEL", "info"))
    enter = cg.joiner("%s/%s" % (env["STACK_CGROUP"], svc)) if cg else None
    # With a container's capabilities, not root's: what would fail in a container fails here too.
    proc = spawn([os.path.join(SCRIPTS, "with-container-capabilities"), env["CREBITOS_BIN"]], logfile, enter, server_env)
    if not write_pidfile(pidfile(state, svc), proc.pid):
        die("%s exited at once: see %s" % (svc, logfile))
    return proc.pid

def instance_health(env, svc, timeout=2):
    """(True, body) if the instance's own /health (not through nginx) answers 200."""
    status, body = http_get(env[svc.upper() + "_LISTEN"], "/health", timeout)
    return status == 200, body.strip() if status == 200 else "HTTP %s %s" % (status, body.strip())

def start_postgres(state, env, mode, hint):
    """The PostgreSQL server of a --store postgres stack, in its cgroup, with its settings."""
    cg = Cgroups.of_stack(env)
    with open(os.path.join(state, "logs", "postgres.log"), mode) as out:
        try:
            return Postgres(os.path.join(state, "postgres"), out).start(
                settings=env.get("POSTGRES_SERVER_SETTINGS", ""),
                enter=cg.joiner(env["STACK_CGROUP"] + "/postgres") if cg else None)
        except SystemExit as e:
            log(str(e), out)
            die("PostgreSQL did not start: see %s" % hint)

# --- up ---------------------------------------------------------------------------------------

# flag, environment variable, default, type (a list: the choices; a string: a switch that this
# value of the variable turns on), help. docs/STACK.md's table explains them.
UP_OPTIONS = [
    ("--port", "STACK_PORT", "9999", int, "nginx's port on 127.0.0.1"),
    ("--transport", "STACK_TRANSPORT", "uds", ["uds", "tcp"], "how nginx reaches the instances"),
    ("--api-ports", "STACK_API_PORTS", "9001,9002", str, "the instances' ports with tcp"),
    ("--synchronous", "CREBITOS_SYNCHRONOUS", "full", ["full", "normal"], "SQLite's synchronous mode"),
    ("--database", "CREBITOS_DATABASE", "data/rinha.db", str, "the SQLite file"),
    ("--state-dir", "STACK_DIR", ".stack", str, "pid files, logs, nginx config, sockets"),
    ("--limits", "STACK_LIMITS", "auto", ["auto", "on", "off"], "cgroup limits; auto: where possible"),
    ("--cgroup", "STACK_CGROUP", "crebitos", str, "the stack's parent cgroup"),
    ("--log-level", "CREBITOS_LOG_LEVEL", "info", str, "the instances' log level"),
    ("--bin", "CREBITOS_BIN", None, str, "run this binary, skip the build"),
    ("--no-build", "STACK_BUILD", None, "0", "run the last release build as it is"),
    ("--ready-timeout", "STACK_READY_TIMEOUT", "40", float, "give up after this many seconds"),
    ("--fresh", "STACK_FRESH", None, "1", "drop the database first (postgres: its cluster)"),
    ("--instances", "STACK_INSTANCES", "2", int, "API instances, 1 to 99, sharing the two x-api limits"),
    ("--restart", "STACK_RESTART", "unless-stopped", ["unless-stopped", "no"], "restart an exited instance"),
    ("--nginx-conf", "STACK_NGINX_CONF", "nginx.conf", str, "nginx's configuration, rendered for this stack"),
    ("--store", "STACK_STORE", "sqlite", ["sqlite", "postgres"], "postgres: a server in STATE_DIR/postgres"),
]

def up_parser():
    ap = argparse.ArgumentParser(prog="scripts/stack-up", description="Start the native stack and wait until "
                                 "GET /clientes/1/extrato answers through nginx (docs/STACK.md). Each option is "
                                 "also the [environment variable]; relative paths are the repository root's.")
    for flag, var, default, kind, text in UP_OPTIONS:
        if isinstance(kind, str):
            ap.add_argument(flag, action="store_true", default=os.environ.get(var) == kind,
                            help="[%s=%s] %s" % (var, kind, text))
        else:
            choices = kind if isinstance(kind, list) else None
            ap.add_argument(flag, default=os.environ.get(var) or default, type=None if choices else kind,
                            choices=choices,
                            help="[%s] %s" % (var, text) + (" (%(default)s)" if default else ""))
    return ap

def down_hint(state):
    return "scripts/stack-down" + ("" if state == os.path.join(REPO, ".stack") else " --state-dir %s" % state)

# PostgreSQL's memory sized for its 300MB share: 64MB of shared buffers, 30 connections (two
# instances of CREBITOS_POSTGRES_CONNECTIONS=6, plus psql).
PG_SETTINGS = "-c shared_buffers=64MB -c max_connections=30 -c work_mem=2MB -c max_wal_size=256MB"

def listen_addresses(a, state, instances):
    """{instance: address}. The sockets live in the state dir (in compose: on the volume nginx and
    the instances share); a Unix socket path must fit in 108 bytes (sun_path)."""
    listen, ports = {}, a.api_ports.split(",")
    for i, svc in enumerate(instances):
        if a.transport == "uds":
            listen[svc] = "unix:%s/run/%s.sock" % (state, svc)
            if len(listen[svc]) >= 100:
                die("socket path %s is too long for a Unix socket: use a shorter --state-dir" % listen[svc])
        else:
            port = int(ports[i]) if i < len(ports) and ports[i] else int(ports[0]) + i
            if port_in_use(port):
                die("port %d on 127.0.0.1 is already in use" % port)
            listen[svc] = "127.0.0.1:%d" % port
    return listen

def create_cgroups(cg, parent, compose, services, instances):
    """The stack's groups with the compose file's limits; {service: (cpus, bytes)}. With
    --instances N each instance gets 2/N of the x-api limits: the compose file's total."""
    def limit(svc):
        return compose_limit(svc, "cpus", compose), mb_to_bytes(compose_limit(svc, "memory", compose))
    api_cpus, api_bytes = limit("x-api")
    limits = {svc: limit(svc) for svc in services}
    limits.update((svc, ("%.4g" % (2 * float(api_cpus) / len(instances)), 2 * api_bytes // len(instances)))
                  for svc in instances)
    cg.remove(parent)  # leftovers of a stack that was killed rather than stopped
    # The parent holds the sum: the stack as a whole is held to the challenge's budget.
    cg.create(parent, sum(float(c) for c, _ in limits.values()), sum(m for _, m in limits.values()))
    for svc, (cpus, nbytes) in limits.items():
        cg.create("%s/%s" % (parent, svc), cpus, nbytes)
    return limits

def start_nginx(state, src, port, upstreams, enter):
    """Render src for this stack, start nginx and record its master's pid; the rendered file."""
    nginx_dir, nginx_log = os.path.join(state, "nginx"), os.path.join(state, "logs", "nginx-error.log")
    conf, nginx_pid = os.path.join(nginx_dir, "nginx.conf"), os.path.join(nginx_dir, "nginx.pid")
    render_nginx_conf(src, conf, port, os.path.join(nginx_dir, "tmp"), upstreams)
    nginx_args = ["nginx", "-p", nginx_dir + "/", "-c", conf, "-e", nginx_log, "-g", "pid %s;" % nginx_pid]
    if subprocess.run(nginx_args[:1] + ["-t", "-q"] + nginx_args[1:]).returncode != 0:
        die("nginx rejects %s" % conf)
    if os.path.exists(nginx_pid):
        os.remove(nginx_pid)
    # nginx daemonizes: the process started forks the master and exits; the master's pid
    # comes from nginx's own pid file.
    if spawn(nginx_args, nginx_log, enter).wait() != 0:
        die("nginx failed to start: see %s" % nginx_log)
    for _ in range(50):
        if read_text(nginx_pid):
            break
        time.sleep(0.1)
    master = read_pidfile(nginx_pid) or die("nginx wrote no pid file: see %s" % nginx_log)
    write_pidfile(pidfile(state, "nginx"), master[0])
    return conf

def wait_ready(state, env, instances, port, timeout):
    deadline = time.monotonic() + timeout
    while not (all(instance_health(env, svc, 1)[0] for svc in instances)
               and http_get("127.0.0.1:%d" % port, "/clientes/1/extrato", 1)[0] == 200):
        for svc in instances + ["nginx"]:
            if not running(state, svc):
                die("%s exited during start-up: see %s/logs/%s.log" % (svc, state, svc))
        if time.monotonic() > deadline:
            die("the stack did not answer GET /clientes/1/extrato within %gs (logs in %s/logs)"
                % (timeout, state))
        time.sleep(0.05)

def start_supervisor(state):
    supervisor_log = os.path.join(state, "logs", "supervisor.log")
    proc = spawn([sys.executable, "-m", "crebitos_tools.stackctl", "supervise", state], supervisor_log,
                 env=dict(os.environ, PYTHONPATH=SCRIPTS))
    if not write_pidfile(pidfile(state, "supervisor"), proc.pid):
        die("the supervisor exited at once: see %s" % supervisor_log)

def up(argv):
    a = up_parser().parse_args(argv)
    if not 1 <= a.instances <= 99:
        die("--instances must be a number from 1 to 99")
    instances = ["api%02d" % i for i in range(1, a.instances + 1)]
    limited = ["nginx"]
    compose = os.environ.get("COMPOSE_LIMITS_FILE") or os.path.join(REPO, "docker-compose.yml")
    if a.store == "postgres":
        compose, limited = os.path.join(REPO, "docker-compose.postgres.yml"), ["postgres", "nginx"]
    state, nginx_conf, database = abspath(a.state_dir), abspath(a.nginx_conf), abspath(a.database)
    if not os.path.isfile(nginx_conf):
        die("no nginx configuration at %s" % nginx_conf)
    for d in ("pids", "logs", "run", "nginx"):
        os.makedirs(os.path.join(state, d), exist_ok=True)
    if a.store == "sqlite":
        os.makedirs(os.path.dirname(database), exist_ok=True)
    # One stack per state dir: refuse to start over a running one (its pid files would be lost).
    for svc in ["supervisor", "nginx"] + instances:
        pid = running(state, svc)
        if pid:
            die("%s is already running from %s (pid %d): run %s first" % (svc, state, pid, down_hint(state)))
    if port_in_use(a.port):
        die("port %d on 127.0.0.1 is already in use" % a.port)
    if a.fresh and a.store == "postgres":
        shutil.rmtree(os.path.join(state, "postgres"), ignore_errors=True)
        log("--fresh: dropped the PostgreSQL cluster in %s/postgres" % state)
    elif a.fresh:
        for path in (database + suffix for suffix in ("", "-wal", "-shm", "-journal", ".lock")):
            if os.path.exists(path):
                os.remove(path)
        log("--fresh: dropped %s (and its -wal, -shm and lock files)" % database)
    # Not for this script: the commands it prints (curl) and the README's way to look into the
    # ledger (the sqlite3 CLI) are what a user runs next.
    for cmd in ("nginx", "curl", "sqlite3"):
        need(cmd, lambda: shutil.which(cmd), "'%s'" % cmd)
    build_log = os.path.join(state, "logs", "build.log")
    binary = abspath(a.bin) if a.bin else build_binary(a.no_build, build_log=build_log)
    if not os.access(binary, os.X_OK):
        die("no server binary at %s" % binary)
    listen = listen_addresses(a, state, instances)
    cg, why_not = (None, "--limits off") if a.limits == "off" else Cgroups.detect()
    if not cg and a.limits == "on":
        die("--limits on, but cgroups are not usable here: %s" % why_not)

    # What stack-down, stack-status, the supervisor and the tests read back.
    env = {"STACK_PORT": a.port, "STACK_TRANSPORT": a.transport, "STACK_DIR": state,
           "CREBITOS_DATABASE": database if a.store == "sqlite" else "", "CREBITOS_SYNCHRONOUS": a.synchronous,
           "CREBITOS_BIN": binary, "CREBITOS_LOG_LEVEL": a.log_level, "INSTANCES": " ".join(instances),
           "STACK_RESTART": a.restart, "STACK_STORE": a.store}
    env.update((svc.upper() + "_LISTEN", listen[svc]) for svc in instances)
    if a.store == "postgres":
        env["POSTGRES_SERVER_SETTINGS"] = PG_SETTINGS
    env.update(COMPOSE_LIMITS_FILE=compose, STACK_LIMITS="on" if cg else "off",
               CG_VERSION=cg.version if cg else "none", STACK_CGROUP=a.cgroup)
    env.update(cg.env(a.cgroup) if cg else {})

    ok, limits = False, {}
    # From here on, a failure (or Ctrl-C, or SIGTERM) stops whatever was already started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        write_stack_env(state, env)
        if cg:
            limits = create_cgroups(cg, a.cgroup, compose, limited, instances)
        if a.store == "postgres":
            os.chmod(state, os.stat(state).st_mode | 0o001)  # the postgres user must reach its directory
            env["CREBITOS_DATABASE"] = database = start_postgres(
                state, env, "w", "%s/logs/postgres.log and %s/postgres/server.log" % (state, state))
            write_stack_env(state, env)
        t0 = time.monotonic()
        for svc in instances:
            open(os.path.join(state, "logs", svc + ".log"), "w").close()
            launch_instance(state, env, svc)
        conf = start_nginx(state, nginx_conf, a.port, list(listen.values()),
                           cg.joiner(a.cgroup + "/nginx") if cg else None)
        wait_ready(state, env, instances, a.port, a.ready_timeout)
        if a.restart == "unless-stopped":
            start_supervisor(state)
        ready_ms, ok = (time.monotonic() - t0) * 1000, True
    except KeyboardInterrupt:
        raise SystemExit(130)
    finally:
        if not ok:
            log("start-up failed: stopping what was started (logs in %s/logs)" % state)
            down(state, quiet=True, env=env)

    pid_of = {svc: running(state, svc) or 0 for svc in instances + ["nginx", "supervisor"]}
    store = ("PostgreSQL in %s/postgres, log %s/postgres/server.log" % (state, state) if a.store == "postgres"
             else "synchronous=" + a.synchronous)
    lines = ["stack ready in %d ms: http://127.0.0.1:%d  (GET /clientes/1/extrato answers 200)"
             % (ready_ms, a.port), "  nginx   pid %d   config %s" % (pid_of["nginx"], conf)]
    for svc, address in listen.items():
        health = ("--unix-socket %s http://localhost" % address[5:] if a.transport == "uds"
                  else "http://" + address)
        lines.append("  %-7s pid %-7d listen %s   health: curl %s/health" % (svc, pid_of[svc], address, health))
    lines += ["  restart   " + ("unless-stopped: supervisor pid %d, log %s/logs/supervisor.log"
                                % (pid_of["supervisor"], state) if a.restart == "unless-stopped" else "no"),
              "  database  %s  (%s; audit: scripts/audit %s)" % (database, store, database),
              "  binary    %s" % binary, "  logs      %s/logs/" % state]
    if cg:
        lines.append("  limits    ON (cgroup %s), the same as %s:" % (cg.version, os.path.basename(compose)))
        lines += ["    %-6s %s CPU %dMB   %s" % (svc, c, m // MIB, cg.dir("memory", "%s/%s" % (a.cgroup, svc)))
                  for svc, (c, m) in limits.items()]
        lines.append("    stack: cpu %s  cpuacct %s  memory %s"
                     % tuple(cg.dir(c, a.cgroup) for c in CONTROLLERS))
    else:
        lines.append("  limits    OFF: the stack runs unlimited (%s)" % why_not)
    print("\n".join(lines + ["stop it with: %s" % down_hint(state)]), flush=True)
    return 0

# --- down and status ----------------------------------------------------------------------------

def stop(state, svc, sig, grace, with_children, say):
    """Signal svc's recorded process, SIGKILL it if it is still there after grace seconds; with
    its children too (nginx's workers; not the supervisor's: the instances, stopped on their own).
    True if all of it is gone."""
    rec = read_pidfile(pidfile(state, svc))
    if not (rec and pid_running(*rec)):
        return None
    kids = [(k, proc_starttime(k)) for k in children(rec[0])] if with_children else []
    kill(rec[0], sig)
    gone = True
    for what, pid, st, wait in [(svc, rec[0], rec[1], grace)] + [(svc + " child", k, st, 5) for k, st in kids]:
        if not wait_gone(wait, pid, st):
            log("%s (pid %d) still running %ds after %s: SIGKILL" % (what, pid, wait, sig.name))
            kill(pid, signal.SIGKILL)
            if not wait_gone(5, pid, st):
                log("%s (pid %d) survived SIGKILL" % (what, pid))
                gone = False
    if gone:
        say("stopped %s (pid %d)" % (svc, rec[0]))
    return gone

def down(state, quiet=False, env=None):
    """Stop what up started: exactly the processes in the pid files, each checked against its
    start time: the supervisor first (it would start the instances again), nginx (no new request
    reaches a stopping instance), the instances, PostgreSQL; then the cgroups. True if all stopped."""
    if not os.path.isdir(os.path.join(state, "pids")):
        log("nothing to stop: no stack state in %s" % state)
        return True
    env = dict({"STACK_CGROUP": "crebitos", "INSTANCES": "api01 api02"}, **(env or stack_env(state)))
    cg, say = Cgroups.of_stack(env), (lambda msg: None) if quiet else print
    say("memory of each process now and at its peak (VmRSS, VmHWM):")
    for svc in ["nginx"] + env["INSTANCES"].split():
        pid = running(state, svc)
        for p in ([pid] + (children(pid) if svc == "nginx" else [])) if pid else []:
            say("  %-6s pid %-7d %s" % (svc, p, memory(p)))
    if cg and os.path.isdir(cg.dir("memory", env["STACK_CGROUP"])):
        say("cgroups (cpu time, throttling, memory incl. page cache):")
        for line in cg.report(env, "gone"):
            say(line)
    failed = False
    # SIGQUIT is nginx's graceful stop (the requests in flight finish); the instances stop
    # cleanly on SIGTERM.
    for svc, sig, grace in [("supervisor", signal.SIGTERM, 5), ("nginx", signal.SIGQUIT, 10)] + [
            (svc, signal.SIGTERM, 15) for svc in env["INSTANCES"].split()]:
        gone = stop(state, svc, sig, grace, svc == "nginx", say)
        failed |= gone is False
        if gone is not False and os.path.exists(pidfile(state, svc)):
            os.remove(pidfile(state, svc))
    if env.get("STACK_STORE") == "postgres":
        if Postgres(os.path.join(state, "postgres")).stop():
            say("stopped PostgreSQL (%s/postgres)" % state)
        else:
            log("PostgreSQL in %s/postgres did not stop" % state)
            failed = True
    if cg:
        for _ in range(20):  # a process that just exited may take a moment to leave its cgroup
            left = cgroup_pids(cg.dir("memory", env["STACK_CGROUP"]))
            if not left:
                break
            time.sleep(0.1)
        if left:
            log("processes still in cgroup %s: %s" % (env["STACK_CGROUP"], " ".join(map(str, left))))
            failed = True
        else:
            cg.remove(env["STACK_CGROUP"])
    return not failed

def state_args(argv, prog, description, *extra):
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--state-dir", default=os.environ.get("STACK_DIR", ".stack"),
                    help="[STACK_DIR] the state dir stack-up used (%(default)s)")
    for flag, text in extra:
        ap.add_argument(flag, action="store_true", help=text)
    return ap.parse_args(argv)

def down_main(argv):
    a = state_args(argv, "scripts/stack-down", "Stop exactly what scripts/stack-up started, then its PostgreSQL "
                   "server and cgroups (docs/STACK.md); exit 1 if something would not stop.",
                   ("--quiet", "do not print the memory and CPU report"))
    return 0 if down(abspath(a.state_dir), a.quiet) else 1

def status_main(argv):
    state = abspath(state_args(argv, "scripts/stack-status", "Show the native stack's processes, memory, each "
                               "instance's /health and the cgroups' counters; exit 0 if all run and answer.").state_dir)
    env = stack_env(state)
    if not env:
        print("no stack state in %s" % state)
        return 1
    ok = True
    print("stack in %s: http://127.0.0.1:%s (nginx -> %s)" % (state, env["STACK_PORT"], env["STACK_TRANSPORT"]))
    for svc in ["nginx"] + env["INSTANCES"].split():
        pid = running(state, svc)
        if not pid:
            print("  %-6s not running" % svc)
            ok = False
            continue
        if svc == "nginx":
            status = http_get("127.0.0.1:" + env["STACK_PORT"], "/clientes/1/extrato")[0]
            health = "GET /clientes/1/extrato -> %s" % (status or "000")
        else:
            healthy, health = instance_health(env, svc)
            health, ok = (health, ok) if healthy else ("UNHEALTHY: " + health, False)
        print("  %-6s pid %-7d %s  %s" % (svc, pid, memory(pid), health))
    cg = Cgroups.of_stack(env)
    print("\n".join(["cgroups (%s):" % cg.version, *cg.report(env, "missing")]) if cg
          else "limits: off (unlimited)")
    pid = running(state, "supervisor")
    print("supervisor: pid %d restarts an instance that exits (%s/logs/supervisor.log)" % (pid, state) if pid
          else "supervisor: not running (STACK_RESTART=%s)" % env.get("STACK_RESTART", "no"))
    return 0 if ok else 1

# --- the supervisor and one instance again ------------------------------------------------------

def supervise(state):
    """Restart an API instance that exited, as compose's `restart: unless-stopped`: twice a
    second each pid file is checked; a gone instance starts again after a pause that doubles
    while it keeps dying (0.5 s up to 8 s, reset once it has run 10 s), as Docker backs off."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    env = stack_env(state)
    instances = env["INSTANCES"].split()
    pause, since = dict.fromkeys(instances, 0.5), dict.fromkeys(instances, time.monotonic())
    while os.path.exists(os.path.join(state, "stack.env")):
        try:  # collect the children that exited: a zombie holds its pid until then
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        for svc in instances:
            if running(state, svc):
                if time.monotonic() - since[svc] >= 10:
                    pause[svc] = 0.5
                continue
            log("%s %s is not running: restarting it in %g s" % (utc_now(), svc, pause[svc]))
            time.sleep(pause[svc])
            if running(state, svc):
                continue  # someone else started it
            try:
                pid = launch_instance(state, env, svc, "restarted by the supervisor (restart: unless-stopped)")
                log("%s %s restarted: pid %d" % (utc_now(), svc, pid))
            except (SystemExit, OSError, subprocess.SubprocessError) as e:
                log("%s %s did not start: %s" % (utc_now(), svc, e))
            since[svc], pause[svc] = time.monotonic(), min(pause[svc] * 2, 8)
        time.sleep(0.5)
    return 0

def instance_main(argv):
    ap = argparse.ArgumentParser(prog="python3 -m crebitos_tools.stackctl instance",
                                 description="Start one service of a running stack again as stack-up did.")
    ap.add_argument("state")
    ap.add_argument("action", choices=["start"])
    ap.add_argument("service", help="apiNN, or postgres (of a --store postgres stack)")
    ap.add_argument("seconds", nargs="?", type=float, default=40, help="give up after this long (%(default)g)")
    a = ap.parse_args(argv)
    state = abspath(a.state)
    env, t0 = stack_env(state) or die("no stack state in %s" % state), time.monotonic()
    if a.service == "postgres":  # crash recovery runs in start; the server goes back into its cgroup
        if env.get("STACK_STORE") != "postgres":
            die("this stack has no PostgreSQL server")
        start_postgres(state, env, "a", "%s/postgres/server.log" % state)
        print("postgres: started, ready after %d ms" % ((time.monotonic() - t0) * 1000))
        return 0
    if a.service not in env["INSTANCES"].split():
        die("SERVICE must be one of: %s" % env["INSTANCES"])
    pid = running(state, a.service)
    if pid:
        die("%s is already running (pid %d)" % (a.service, pid))
    pid = launch_instance(state, env, a.service, "restarted by crebitos_tools.stackctl instance")
    while not instance_health(env, a.service)[0]:
        if not pid_running(pid):
            die("%s exited during start-up: see %s/logs/%s.log" % (a.service, state, a.service))
        if time.monotonic() > t0 + a.seconds:
            die("%s did not answer /health within %gs" % (a.service, a.seconds))
        time.sleep(0.02)
    print("%s: started pid %d, /health answers after %d ms" % (a.service, pid, (time.monotonic() - t0) * 1000))
    return 0

# --- a stack of a test's own ----------------------------------------------------------------------

class Stack:
    """A stack for the fault tests, driven through stack-up/stack-down: a fresh state dir under
    /tmp (the sockets' paths must fit in 108 bytes), a free port, a cgroup name of its own."""

    def __init__(self, out, sync="full", port=None, name="faults", state=None, store="sqlite"):
        self.state = state or tempfile.mkdtemp(prefix="crebitos-%s." % name)
        self.store, self.out, self.sync = store, out, sync
        os.makedirs(os.path.join(self.state, "bin"), exist_ok=True)
        # SQLite: the file; PostgreSQL: the server's URL, known once up() has run.
        self.db = os.path.join(self.state, "data", "rinha.db") if store == "sqlite" else None
        self.bin, self.port = os.path.join(self.state, "bin", "crebitos"), port or free_port()
        self.cgroup, self.log_path = "crebitos-%s-%d" % (name, os.getpid()), os.path.join(out, "stack.log")

    def _run(self, cmd, check=True, env=None):
        with open(self.log_path, "a") as fh:
            fh.write("$ %s\n" % " ".join(cmd))
            fh.flush()
            r = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
            fh.write(r.stdout)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (exit %d): %s" % (" ".join(cmd[:2]), r.returncode, r.stdout[-1500:]))
        return r

    def up(self):
        # --restart no: the fault tests restart what they kill themselves, when they choose.
        r = self._run([os.path.join(SCRIPTS, "stack-up"), "--no-build", "--bin", self.bin,
                       "--state-dir", self.state, "--port", str(self.port), "--cgroup", self.cgroup,
                       "--synchronous", self.sync, "--restart", "no"]
                      + (["--database", self.db] if self.store == "sqlite" else ["--store", self.store]))
        if self.store == "postgres":
            self.db = stack_env(self.state)["CREBITOS_DATABASE"]
        return r

    def down(self, check=True):
        return self._run([os.path.join(SCRIPTS, "stack-down"), "--state-dir", self.state], check=check)

    def instance(self, action, svc, *extra):
        """`instance start` in a process of its own: it forks the instance from a single thread."""
        r = self._run([sys.executable, "-m", "crebitos_tools.stackctl", "instance", self.state, action, svc,
                       *extra], env=dict(os.environ, PYTHONPATH=SCRIPTS))
        return (r.stdout.strip().splitlines() or [""])[-1]

    @staticmethod
    def _wait_gone(victims, sig, t0):
        """Waits until every (name, pid, start time) signalled at t0 has gone."""
        for name, pid, st in victims:
            if not wait_gone(20 - (time.monotonic() - t0), pid, st, step=0.005):
                raise RuntimeError("%s (pid %d) still runs 20 s after signal %d" % (name, pid, sig))
        return "gone after %d ms" % ((time.monotonic() - t0) * 1000)

    def kill_postgres(self):
        """kill -9 of the postmaster, then waits for its backends too: a new postmaster refuses
        to start while they still hold the old shared memory."""
        pid = int(open(os.path.join(self.state, "postgres", "data", "postmaster.pid")).readline())
        st, kids = proc_starttime(pid), children(pid)
        victims = [("postgres", pid, st)] + [("postgres backend", k, proc_starttime(k)) for k in kids]
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        return ["postgres: SIGKILL postmaster pid %d (started %s), it and its %d backends %s"
                % (pid, st, len(kids), self._wait_gone(victims, signal.SIGKILL, t0))]

    def patch_upstreams(self, opts):
        """Experiment: add parameters (e.g. "max_fails=0") to the upstream servers of THIS stack's
        rendered nginx.conf and reload nginx; the repository's nginx.conf is not touched."""
        conf = os.path.join(self.state, "nginx", "nginx.conf")
        text = re.sub(r"(server unix:[^;]*api0[12]\.sock)[^;]*;", r"\1 %s;" % opts, read_text(conf))
        write(conf, text + "\n")
        master = read_pidfile(os.path.join(self.state, "nginx", "nginx.pid"))[0]
        os.kill(master, signal.SIGHUP)  # reload
        time.sleep(0.5)

    def signal(self, svcs, sig):
        """Sends sig to the instances straight from here (so it lands while requests are in
        flight), each checked against its pid file's start time; waits for KILL and TERM."""
        victims = []
        for svc in svcs:
            pid, st = read_pidfile(pidfile(self.state, svc)) or (0, None)
            if not pid or proc_starttime(pid) != st:
                raise RuntimeError("%s (pid %s) is not running" % (svc, pid))
            victims.append((svc, pid, st))
        t0 = time.monotonic()
        for _, pid, _ in victims:
            os.kill(pid, sig)
        gone = ", " + self._wait_gone(victims, sig, t0) if sig in (signal.SIGKILL, signal.SIGTERM) else ""
        return ["%s: %s pid %d%s" % (svc, signal.Signals(sig).name, pid, gone) for svc, pid, _ in victims]

    def wal_bytes(self):
        wal = self.db + "-wal"
        return os.path.getsize(wal) if os.path.exists(wal) else None

COMMANDS = {"up": up, "down": down_main, "status": status_main, "postgres": postgres_main,
            "instance": instance_main, "supervise": lambda argv: supervise(abspath(argv[0]))}

def main(argv):
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit("usage: python3 -m crebitos_tools.stackctl %s ..." % "|".join(COMMANDS))
    return COMMANDS[argv[0]](argv[1:])

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
