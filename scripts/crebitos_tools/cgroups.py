"""The stack's CPU and memory limits: read from the compose file (its single source), applied
as cgroups (v1 or v2), and what the kernel counted in each group."""
import os
import re

from .processes import die, read_text, write

MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

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
