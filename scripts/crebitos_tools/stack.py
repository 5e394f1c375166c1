"""The native stack's controller, without containers: the release binary as api01, api02
(--instances N for more) on one SQLite file or a local PostgreSQL server, behind Debian's
nginx on 127.0.0.1:9999, each service in a cgroup with the limits docker-compose.yml declares.

    python3 -m crebitos_tools.stack up|down|status [options]     (scripts/stack-up, ...)
    python3 -m crebitos_tools.stack postgres start|stop|status|psql DIR ...   (scripts/postgres-server)
    python3 -m crebitos_tools.stack instance STATE start SERVICE [SECONDS]
    python3 -m crebitos_tools.stack supervise STATE

What it leaves on disk is what the other tools read (docs/STACK.md):
    STATE/stack.env          KEY=value lines, shell-quoted (bash can source them)
    STATE/pids/SVC.pid       "PID STARTTIME": the start time (field 22 of /proc/PID/stat)
                             tells our process apart from one that reused its pid, so nothing
                             here ever signals a process it did not start
    STATE/logs/SVC.log, STATE/nginx/nginx.conf, STATE/nginx/nginx.pid, STATE/run/SVC.sock

Only the standard library: it runs before the repository's .venv exists. Processes are started
with a preexec_fn (to join their cgroup before exec), which is only safe in a process without
threads: every command here runs single-threaded, and the fault tests call it as a
subprocess (crebitos_tools.stackctl).
"""
import argparse
import http.client
import inspect
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

from . import REPO, SCRIPTS
from .httpc import port_open as port_in_use

MIB = 1024 * 1024


def log(msg, out=None):
    print(msg, file=out or sys.stderr, flush=True)


def die(msg):
    raise SystemExit("error: %s" % msg)


def abspath(path):
    """PATH made absolute against the repository root (every relative path is, wherever the
    command is called from); a PostgreSQL URL is not a path."""
    if path.startswith(("/", "postgres://", "postgresql://")):
        return path
    return os.path.join(REPO, path)


def read_text(path, default=None):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return default


def utc_now():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (t % 1 * 1000)


# --- processes --------------------------------------------------------------------------------

def _stat_fields(pid):
    """/proc/PID/stat from field 3 on (the command name, field 2, may hold spaces)."""
    text = read_text("/proc/%d/stat" % pid)
    return text.rsplit(")", 1)[1].split() if text else None


def proc_starttime(pid):
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def is_zombie(pid):
    """Gone, or a zombie: finished, waiting only for its parent to collect it. The main
    thread of a multithreaded server shows Z as soon as it returns while the other threads
    still shut down (and hold the process in its cgroup): finished means every thread is Z."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return True
    for tid in tids:
        state = (read_text("/proc/%d/task/%s/stat" % (pid, tid)) or ")  Z").rsplit(")", 1)[1].split()
        if state and state[0] != "Z":
            return False
    return True


def pid_running(pid, starttime=None):
    now = proc_starttime(pid)
    return now is not None and (not starttime or now == starttime) and not is_zombie(pid)


def read_pidfile(path):
    """(pid, start time) from a pid file, or None."""
    parts = (read_text(path) or "").split()
    if not parts or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1] if len(parts) > 1 else None


def pidfile_alive(path):
    """The pid recorded in the pid file if that very process still runs, else None."""
    rec = read_pidfile(path)
    return rec[0] if rec and pid_running(*rec) else None


def write_pidfile(path, pid):
    st = proc_starttime(pid)
    if st is None:
        return False
    with open(path, "w") as fh:
        fh.write("%d %s\n" % (pid, st))
    return True


def pids(state):
    """{service: pid} of the stack's processes that still run, from its pid files."""
    d = os.path.join(state, "pids")
    found = {f[:-4]: pidfile_alive(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".pid")}
    return {svc: pid for svc, pid in found.items() if pid}


def wait_gone(seconds, pid, starttime=None):
    deadline = time.monotonic() + seconds
    while pid_running(pid, starttime):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def children(pid):
    """The pids whose parent is PID (nginx's workers, PostgreSQL's backends)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            fields = _stat_fields(int(d))
            if fields and fields[1] == str(pid):
                out.append(int(d))
    return out


def proc_status(pid):
    """/proc/PID/status as {key: first word of the value} ({} once the process is gone)."""
    out = {}
    for line in (read_text("/proc/%d/status" % pid) or "").splitlines():
        key, _, value = line.partition(":")
        out[key] = (value.split() or [""])[0]
    return out


def rss_kb(pid):
    value = proc_status(pid).get("VmRSS")
    return int(value) if value else None


def spawn(argv, logfile, enter=None, env=None):
    """Start argv detached from the caller (a session of its own, immune to hangups, stdin
    from /dev/null, output appended to logfile); enter() runs in the child before exec (to
    join a cgroup), so the pid returned is the program itself, already in its cgroup."""
    def child():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if enter:
            enter()
    with open(logfile, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=child, start_new_session=True)


# --- network ----------------------------------------------------------------------------------

def free_port():
    """A TCP port nobody listens on, from the range above the ephemeral default."""
    import random
    for _ in range(200):
        port = random.randint(20000, 31999)
        if not port_in_use(port):
            return port
    die("no free port found")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def http_get(address, path, timeout=2):
    """GET path at address (unix:/path.sock or host:port): (status, body), or (None, why)."""
    if address.startswith("unix:"):
        conn = _UnixHTTPConnection(address[len("unix:"):], timeout)
    else:
        host, port = address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as e:
        return None, str(e) or type(e).__name__
    finally:
        conn.close()


# --- Debian packages --------------------------------------------------------------------------

_apt_updated = False


def apt_install(pkg):
    """Install PKG from Debian (as root) with its services kept from starting: policy-rc.d
    answering 101 stops the maintainer scripts from starting the package's own service
    (Debian's nginx would start a system nginx on port 80, postgresql a cluster on 5432). The
    package lists are refreshed only if the first attempt fails: CI machines often come with
    stale or empty ones."""
    global _apt_updated
    policy = "/usr/sbin/policy-rc.d"
    created = not os.path.exists(policy)
    if created:
        with open(policy, "w") as fh:
            fh.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    try:
        if subprocess.run(cmd, env=env, **quiet).returncode != 0:
            if not _apt_updated:
                subprocess.run(["apt-get", "update", "-qq"], **quiet)
                _apt_updated = True
            if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                die("apt-get install %s failed" % pkg)
    finally:
        if created:
            os.remove(policy)


def need_cmd(cmd, pkg):
    """Make sure cmd exists: as root, install pkg; otherwise say what to install and stop."""
    if shutil.which(cmd):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        die("'%s' is missing: install it with: sudo apt-get install -y %s" % (cmd, pkg))
    log("installing %s (for %s)" % (pkg, cmd))
    apt_install(pkg)
    if not shutil.which(cmd):
        die("installed %s but '%s' is still missing" % (pkg, cmd))


# --- limits: the compose file is the single source ---------------------------------------------

def compose_limit(service, key, path):
    """deploy.resources.limits.KEY of SERVICE in the compose file at path; api01, api02, ...
    take theirs from the x-api block they merge. This reads the file's known layout (services
    indented by two spaces), not YAML in general."""
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
    """250MB -> 262144000: Docker reads "MB" in a compose file as 1024*1024 bytes (go-units
    RAMInBytes), and so does podman; the native cgroups use the same number."""
    value = value.rstrip("Bb")
    scale = {"g": 1024 ** 3, "m": MIB, "k": 1024}.get(value[-1:].lower())
    return int(value[:-1]) * scale if scale else int(value)


# --- cgroups ----------------------------------------------------------------------------------
# Layout, the same names under every controller:
#   BASE/PARENT          the whole stack (its limits: the sum of its services')
#   BASE/PARENT/SVC      one per service, with the compose file's CPU quota and memory limit
# cgroup v1: one hierarchy per controller (cpu, cpuacct, memory), BASE is the caller's own
# group in each, so the stack stays accounted wherever the caller's session is; CPU as
# cpu.cfs_quota_us / cpu.cfs_period_us, memory as memory.limit_in_bytes.
# cgroup v2: one directory; BASE is the root (v2 forbids enabling controllers for children of
# a group that has processes of its own, as the caller's has); CPU as cpu.max, memory as
# memory.max. Only the v1 path has run on the machines this project was built on.

CONTROLLERS = ("cpu", "cpuacct", "memory")
PERIOD_US = 100000  # the CFS period docker and podman use
V2_ROOT = "/sys/fs/cgroup"


class Cgroups:
    def __init__(self, version, bases):
        self.version = version  # "v1" or "v2"
        self.bases = bases      # controller -> the directory the stack's groups are made in

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
            return cls("v2", {c: V2_ROOT for c in CONTROLLERS}), ""
        mounts, own = {}, {}
        for line in (read_text("/proc/mounts") or "").splitlines():
            f = line.split()
            if len(f) > 3 and f[2] == "cgroup":
                for opt in f[3].split(","):
                    mounts.setdefault(opt, f[1])
        for line in (read_text("/proc/self/cgroup") or "").splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(","):
                own[c] = "" if path == "/" else path
        bases = {}
        for c in CONTROLLERS:
            if c not in mounts:
                return None, "cgroup v1 controller '%s' is not mounted" % c
            bases[c] = mounts[c] + own.get(c, "")
            if not os.access(bases[c], os.W_OK):
                return None, "cgroup v1 '%s' hierarchy is not writable" % c
        return cls("v1", bases), ""

    @classmethod
    def of_stack(cls, env):
        """The groups a stack's stack.env records, or None when it runs without limits."""
        if env.get("STACK_LIMITS") != "on" or env.get("CG_VERSION") not in ("v1", "v2"):
            return None
        return cls(env["CG_VERSION"], {c: env["CG_BASE_" + c.upper()] for c in CONTROLLERS})

    def dir(self, controller, group):
        return os.path.join(self.bases[controller], group)

    def dirs(self, group):
        """{controller: directory} of group, as stackinfo reads it ({"v2": dir} under v2)."""
        if self.version == "v2":
            return {"v2": self.dir("cpu", group)}
        return {c: self.dir(c, group) for c in CONTROLLERS}

    def env(self, parent):
        """stack.env's record of them: CG_BASE_* where they are made, CGROUP_* the parent."""
        out = {}
        for c in CONTROLLERS:
            out["CG_BASE_" + c.upper()] = self.bases[c]
            out["CGROUP_" + c.upper()] = self.dir(c, parent)
        return out

    def create(self, group, cpus, nbytes):
        quota = int(float(cpus) * PERIOD_US + 0.5)
        if self.version == "v2":
            # A v2 group's controllers must be enabled in every ancestor's subtree_control.
            rel = ""
            for part in group.split("/"):
                try:
                    _write(os.path.join(V2_ROOT, rel, "cgroup.subtree_control"), "+cpu +memory")
                except OSError:
                    pass
                rel = os.path.join(rel, part)
                os.makedirs(os.path.join(V2_ROOT, rel), exist_ok=True)
            d = os.path.join(V2_ROOT, group)
            _write(os.path.join(d, "cpu.max"), "%d %d" % (quota, PERIOD_US))
            _write(os.path.join(d, "memory.max"), str(nbytes))
            _write(os.path.join(d, "memory.swap.max"), "0", optional=True)
            return
        for c in CONTROLLERS:
            os.makedirs(self.dir(c, group), exist_ok=True)
        _write(os.path.join(self.dir("cpu", group), "cpu.cfs_period_us"), str(PERIOD_US))
        _write(os.path.join(self.dir("cpu", group), "cpu.cfs_quota_us"), str(quota))
        _write(os.path.join(self.dir("memory", group), "memory.limit_in_bytes"), str(nbytes))
        # No swap beyond the limit either (where the kernel accounts swap), as docker does.
        _write(os.path.join(self.dir("memory", group), "memory.memsw.limit_in_bytes"), str(nbytes), optional=True)

    def join(self, group, pid):
        """Move pid into group; the children it forks later (nginx's workers) inherit it."""
        for d in set(self.dirs(group).values()):
            _write(os.path.join(d, "cgroup.procs"), str(pid))

    def joiner(self, group):
        """What spawn() runs in the child to start it inside group."""
        return lambda: self.join(group, os.getpid())

    def procs(self, group):
        """The pids still in group or below it."""
        return cgroup_pids(self.dir("memory", group))

    def remove(self, parent):
        """Remove the stack's groups once they are empty, children first."""
        for d in sorted({self.dir(c, parent) for c in CONTROLLERS}):
            for root, _, _ in sorted(os.walk(d), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(root)
                except OSError:
                    pass

    def report(self, group):
        """One line of what the kernel measured for group, or None if it is gone."""
        dirs = self.dirs(group)
        if not all(os.path.isdir(d) for d in dirs.values()):
            return None
        s = group_counters(dirs)
        limit = s.get("mem_limit")
        return ("%-20s cpu %8.2fs  throttled %6d times (%7.2fs)  memory %6.1fMB  peak %6.1fMB  limit %sMB"
                % (group, s.get("cpu_ns", 0) / 1e9, s.get("nr_throttled", 0), s.get("throttled_ns", 0) / 1e9,
                   (s.get("mem_now") or 0) / MIB, (s.get("mem_peak") or 0) / MIB,
                   "%.0f" % (limit / MIB) if limit else "none"))


def _write(path, text, optional=False):
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError:
        if not optional:
            raise


def cgroup_pids(directory):
    """Every pid in the group at directory and in the groups below it."""
    found = set()
    for root, _, files in os.walk(directory):
        if "cgroup.procs" in files:
            found.update(int(p) for p in (read_text(os.path.join(root, "cgroup.procs")) or "").split())
    return sorted(found)


def _counters(path):
    out = {}
    for line in (read_text(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _int_file(path):
    value = read_text(path)
    return int(value) if value and value.isdigit() else None


def group_counters(dirs):
    """What the kernel counted for one group ({controller: dir}, or {"v2": dir}): CPU time
    (cpu_ns, user_s, system_s), throttling (nr_periods, nr_throttled, throttled_ns,
    quota_cpus) and memory (mem_now, mem_peak, mem_limit in bytes)."""
    clk_tck = os.sysconf("SC_CLK_TCK")
    s = {}
    if "v2" in dirs:
        d = dirs["v2"]
        st = _counters(os.path.join(d, "cpu.stat"))
        s.update(cpu_ns=st.get("usage_usec", 0) * 1000, user_s=st.get("user_usec", 0) / 1e6,
                 system_s=st.get("system_usec", 0) / 1e6, nr_periods=st.get("nr_periods", 0),
                 nr_throttled=st.get("nr_throttled", 0), throttled_ns=st.get("throttled_usec", 0) * 1000)
        quota = (read_text(os.path.join(d, "cpu.max")) or "max").split()
        if quota[0] != "max":
            s["quota_cpus"] = int(quota[0]) / int(quota[1])
        s.update(mem_peak=_int_file(os.path.join(d, "memory.peak")),
                 mem_now=_int_file(os.path.join(d, "memory.current")),
                 mem_limit=_int_file(os.path.join(d, "memory.max")))
        return s
    if "cpuacct" in dirs:
        s["cpu_ns"] = _int_file(os.path.join(dirs["cpuacct"], "cpuacct.usage")) or 0
        st = _counters(os.path.join(dirs["cpuacct"], "cpuacct.stat"))  # in USER_HZ ticks
        s.update(user_s=st.get("user", 0) / clk_tck, system_s=st.get("system", 0) / clk_tck)
    if "cpu" in dirs:
        st = _counters(os.path.join(dirs["cpu"], "cpu.stat"))
        s.update(nr_periods=st.get("nr_periods", 0), nr_throttled=st.get("nr_throttled", 0),
                 throttled_ns=st.get("throttled_time", 0))
        quota = read_text(os.path.join(dirs["cpu"], "cpu.cfs_quota_us"))
        period = _int_file(os.path.join(dirs["cpu"], "cpu.cfs_period_us"))
        if quota and quota.isdigit() and period:
            s["quota_cpus"] = int(quota) / period
    if "memory" in dirs:
        s.update(mem_peak=_int_file(os.path.join(dirs["memory"], "memory.max_usage_in_bytes")),
                 mem_now=_int_file(os.path.join(dirs["memory"], "memory.usage_in_bytes")),
                 mem_limit=_int_file(os.path.join(dirs["memory"], "memory.limit_in_bytes")))
    return s


# --- the binary -------------------------------------------------------------------------------

def release_binary(build=True, say=log, build_log=None):
    """Where `swift build -c release` puts the server, after running it unless build is false."""
    if not shutil.which("swift"):
        die("the Swift toolchain is needed to build (or pass --bin PATH)")
    if build:
        say("building: swift build -c release" + (" (log: %s)" % build_log if build_log else ""))
        r = subprocess.run(["swift", "build", "-c", "release"], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if build_log:
            with open(build_log, "w") as fh:
                fh.write(r.stdout)
        if r.returncode != 0:
            log("\n".join(r.stdout.splitlines()[-40:]))
            die("release build failed" + (" (full log: %s)" % build_log if build_log else ""))
    path = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=REPO,
                          capture_output=True, text=True).stdout.strip()
    return os.path.join(path, "crebitos")


# --- nginx ------------------------------------------------------------------------------------

def render_nginx_conf(src, dst, port, tmp, upstreams):
    """The native copy of the repository's nginx.conf (the single source): it differs only
    where a machine without containers must differ:
      - `listen 9999`        -> `listen 127.0.0.1:PORT` (only loopback, any free port for tests)
      - the two instance lines -> one line per upstream (unix:STATE/run/apiNN.sock or a TCP
                                port), each with the api01 line's parameters (max_fails, ...)
      - temp paths           -> inside the state dir, so nginx never writes /var/lib/nginx
      - `user root;` as root -> the state dir may sit under a home directory that nginx's
                                default worker user cannot traverse
    The pid file and the error log are given on nginx's command line, not in the file."""
    with open(src) as fh:
        text = fh.read()
    api01 = re.compile(r"^([ \t]*)server unix:/run/crebitos/api01\.sock([^;]*);", re.M)
    api02 = re.compile(r"^[ \t]*server unix:/run/crebitos/api02\.sock[ ;].*\n", re.M)
    listen = re.compile(r"^([ \t]*)listen 9999\b", re.M)
    if not (api01.search(text) and api02.search(text) and listen.search(text)):
        die("%s no longer has the 'listen 9999' and 'server unix:/run/crebitos/api0N.sock' lines "
            "that crebitos_tools/stack.py rewrites" % src)
    os.makedirs(tmp, exist_ok=True)
    # One temp path per module this nginx was built with; each must be writable at start-up.
    built = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
    temps = "".join("    %s_temp_path %s/%s;\n" % (m, tmp, m) for m in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                    if "--http-%s-temp-path" % m.replace("_", "-") in built)
    text = api01.sub(lambda m: "\n".join("%sserver %s%s;" % (m.group(1), up, m.group(2)) for up in upstreams), text)
    text = api02.sub("", text)
    text = listen.sub(lambda m: "%slisten 127.0.0.1:%d" % (m.group(1), port), text)
    text = re.sub(r"^http \{\n", lambda m: "http {\n    # scripts/stack-up: temp files in the state dir\n" + temps,
                  text, count=1, flags=re.M)
    head = "# GENERATED by scripts/stack-up from %s: edit that file, not this one.\n" % src
    with open(dst, "w") as fh:
        fh.write(head + ("user root;\n" if os.geteuid() == 0 else "") + text)


# --- PostgreSQL -------------------------------------------------------------------------------

class Postgres:
    """A local PostgreSQL server in DIR (scripts/postgres-server; stack-up --store postgres):
    Debian's binaries, the cluster in DIR/data run by the unprivileged postgres user when
    called as root (PostgreSQL refuses to run as root), 127.0.0.1 only, its socket in DIR,
    its port in DIR/port, its log in DIR/server.log."""
    DB = ROLE = PASSWORD = "rinha"

    def __init__(self, directory, out=None):
        self.dir = abspath(directory)
        self.data = os.path.join(self.dir, "data")
        self.out = out or sys.stderr  # progress, and what pg_ctl and initdb print
        self.bin = self.find_bin()

    @staticmethod
    def find_bin():
        """Debian's server binaries, the newest version installed, or None."""
        root = "/usr/lib/postgresql"
        versions = sorted((v for v in os.listdir(root) if v.replace(".", "").isdigit()), key=float,
                          reverse=True) if os.path.isdir(root) else []
        for v in versions:
            if os.access(os.path.join(root, v, "bin", "initdb"), os.X_OK):
                return os.path.join(root, v, "bin")
        return None

    def ensure_installed(self):
        if self.bin:
            return
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            die("PostgreSQL's server is missing: install it with: sudo apt-get install -y postgresql")
        log("installing postgresql", self.out)
        apt_install("postgresql")
        self.bin = self.find_bin() or die("installed postgresql but found no server binaries in /usr/lib/postgresql/*/bin")

    def as_server(self, argv):
        return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + argv

    def tool(self, name, *args, **kw):
        return subprocess.run(self.as_server([os.path.join(self.bin, name)] + list(args)), **kw)

    def port(self):
        return read_text(os.path.join(self.dir, "port"))

    def url(self):
        return "postgres://%s:%s@127.0.0.1:%s/%s" % (self.ROLE, self.PASSWORD, self.port(), self.DB)

    def running(self):
        return bool(self.bin) and os.path.exists(os.path.join(self.data, "postmaster.pid")) and self.tool(
            "pg_ctl", "-D", self.data, "status", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    def admin_sql(self, sql):
        r = self.tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p", self.port(), "-U", "postgres",
                      "-d", "postgres", "-Atc", sql, capture_output=True, text=True)
        if r.returncode != 0:
            die("psql: %s" % r.stderr.strip())
        return r.stdout.strip()

    def start(self, port=None, settings="", enter=None):
        """initdb if DIR has no cluster yet, start the server (on port, or the port of its last
        start if free, or a free one) and create the role and database rinha if missing; the
        server's URL. A server that already runs is left as it is. enter: see spawn()."""
        self.ensure_installed()
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
                             "--auth-local=trust", "--auth-host=scram-sha-256", stdout=fh, stderr=fh).returncode:
                    log(read_text(initdb_log), self.out)
                    die("initdb failed")
        last = self.port()
        if not port and last and not port_in_use(int(last)):
            port = last
        port = int(port or free_port())
        if port_in_use(port):
            die("port %d on 127.0.0.1 is already in use" % port)
        with open(os.path.join(self.dir, "port"), "w") as fh:
            fh.write("%d\n" % port)
        if os.geteuid() == 0:
            shutil.chown(os.path.join(self.dir, "port"), "postgres", "postgres")
        server_log = os.path.join(self.dir, "server.log")
        log("starting PostgreSQL on 127.0.0.1:%d (log: %s)" % (port, server_log), self.out)
        # Only 127.0.0.1 and the socket in DIR; fsync on, as a production server.
        options = "-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=on %s" % (port, self.dir, settings)
        if self.tool("pg_ctl", "-D", self.data, "-l", server_log, "-w", "-t", "60", "-o", options, "start",
                     stdout=self.out, stderr=self.out, preexec_fn=enter).returncode != 0:
            log("\n".join((read_text(server_log) or "").splitlines()[-20:]), self.out)
            die("PostgreSQL did not start")
        if self.admin_sql("SELECT 1 FROM pg_roles WHERE rolname = '%s'" % self.ROLE) != "1":
            log("creating the role %s" % self.ROLE, self.out)
            self.admin_sql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (self.ROLE, self.PASSWORD))
        if self.admin_sql("SELECT 1 FROM pg_database WHERE datname = '%s'" % self.DB) != "1":
            log("creating the database %s" % self.DB, self.out)
            self.admin_sql("CREATE DATABASE %s OWNER %s" % (self.DB, self.ROLE))
        log("PostgreSQL ready: %s" % self.url(), self.out)
        return self.url()

    def stop(self):
        """Fast shutdown; True if it stopped or was not running."""
        if not self.bin:
            log("no PostgreSQL installed: nothing to stop", self.out)
            return True
        if not (os.path.isdir(self.data) and self.running()):
            log("PostgreSQL in %s is not running" % self.dir, self.out)
            return True
        log("stopping PostgreSQL in %s" % self.dir, self.out)
        return self.tool("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop",
                         stdout=self.out, stderr=self.out).returncode == 0


def postgres_main(argv):
    ap = argparse.ArgumentParser(prog="scripts/postgres-server", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description=inspect.cleandoc(Postgres.__doc__) + """

  start DIR [PORT]   initdb into DIR/data if needed, start the server on PORT or a free port (the
                     port of the last start when DIR ran before), fsync on; create the role and
                     database rinha if missing. Progress goes to stderr; the LAST line on stdout
                     is the URL the API takes as CREBITOS_DATABASE:
                       postgres://rinha:rinha@127.0.0.1:PORT/rinha
                     A server that already runs only prints its URL again.
  stop DIR           stop the server of DIR (fast shutdown); nothing to do if it is not running
  status DIR         print the URL and exit 0 if it runs, else exit 3
  psql DIR [ARGS]    psql on the database rinha, as the role rinha

Installs the postgresql package with apt-get when it is missing and this runs as root.
Environment: POSTGRES_SERVER_SETTINGS  more `-c name=value` options for the server
(stack-up passes the memory settings of the stack's share here).""")
    ap.add_argument("command", choices=["start", "stop", "status", "psql"])
    ap.add_argument("dir")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="start: PORT; psql: psql's arguments")
    a = ap.parse_args(argv)
    pg = Postgres(a.dir)
    if a.command == "start":
        print(pg.start(a.args[0] if a.args else None, os.environ.get("POSTGRES_SERVER_SETTINGS", "")))
    elif a.command == "stop":
        return 0 if pg.stop() else 1
    elif a.command == "status":
        if not pg.running():
            log("PostgreSQL in %s is not running" % pg.dir)
            return 3
        print(pg.url())
    else:
        if not pg.running():
            die("PostgreSQL in %s is not running" % pg.dir)
        os.environ["PGPASSWORD"] = pg.PASSWORD
        os.execv(os.path.join(pg.bin, "psql"), ["psql", "-X", "-h", "127.0.0.1", "-p", pg.port(), "-U", pg.ROLE,
                                                 "-d", pg.DB] + a.args)
    return 0


# --- the stack's record -----------------------------------------------------------------------

def stack_env(state):
    """STATE/stack.env as {KEY: value}, or {}."""
    out = {}
    for line in (read_text(os.path.join(state, "stack.env"), "") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            try:
                words = shlex.split(value)
            except ValueError:
                words = [value]
            out[key] = words[0] if words else ""
    return out


def write_stack_env(state, env):
    with open(os.path.join(state, "stack.env"), "w") as fh:
        fh.writelines("%s=%s\n" % (k, shlex.quote(str(v))) for k, v in env.items())


def listen_of(env, svc):
    return env[svc.upper() + "_LISTEN"]


def launch_instance(state, env, svc, why=None):
    """Start one API instance detached, in its cgroup when limits are on, with the environment
    docker-compose.yml gives it, and record it in its pid file: up, the supervisor and
    `instance start` all start instances here, so a restarted one is exactly the first."""
    logfile = os.path.join(state, "logs", svc + ".log")
    if why:
        with open(logfile, "a") as fh:
            fh.write("--- %s %s\n" % (utc_now(), why))
    cg = Cgroups.of_stack(env)
    proc = spawn([env["CREBITOS_BIN"]], logfile, cg.joiner("%s/%s" % (env["STACK_CGROUP"], svc)) if cg else None,
                 dict(os.environ, CREBITOS_DATABASE=env["CREBITOS_DATABASE"], CREBITOS_LISTEN=listen_of(env, svc),
                      CREBITOS_INSTANCE=svc, CREBITOS_SYNCHRONOUS=env["CREBITOS_SYNCHRONOUS"],
                      CREBITOS_LOG_LEVEL=env.get("CREBITOS_LOG_LEVEL", "info")))
    if not write_pidfile(os.path.join(state, "pids", svc + ".pid"), proc.pid):
        die("%s exited at once: see %s" % (svc, logfile))
    return proc.pid


def instance_health(env, svc, timeout=2):
    """(True, body) if the instance's own /health (not through nginx) answers 200."""
    status, body = http_get(listen_of(env, svc), "/health", timeout)
    return status == 200, body.strip() if status == 200 else "HTTP %s %s" % (status, body.strip())


def start_postgres(state, env, out):
    """The PostgreSQL server of a --store postgres stack, in its cgroup, with its settings."""
    cg = Cgroups.of_stack(env)
    return Postgres(os.path.join(state, "postgres"), out).start(
        settings=env.get("POSTGRES_SERVER_SETTINGS", ""),
        enter=cg.joiner(env["STACK_CGROUP"] + "/postgres") if cg else None)


# --- up ---------------------------------------------------------------------------------------

UP_HELP = """Start the challenge's stack natively, without containers: the release binary twice
(api01, api02; --instances N for more) on one SQLite file, and Debian's nginx on 127.0.0.1:9999
balancing round-robin over them with the repository's nginx.conf. Returns once
GET /clientes/1/extrato answers through nginx; scripts/stack-down stops exactly what this
started.

Where the machine allows it (root, cgroup v1 or v2 writable), every service runs in its own
cgroup with the CPU quota and memory limit that docker-compose.yml declares for it, under one
parent cgroup for the whole stack. Elsewhere the stack runs unlimited, and says so. An instance
that exits is started again by a supervisor, as compose's `restart: unless-stopped` does.
Installs nginx and curl with apt-get when run as root and they are missing.

Each option also as the environment variable in brackets; relative paths are taken from the
repository root."""


def up_parser():
    e = os.environ.get
    ap = argparse.ArgumentParser(prog="scripts/stack-up", description=UP_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    opt = ap.add_argument
    opt("--port", type=int, default=int(e("STACK_PORT", "9999")), help="[STACK_PORT] nginx's port on 127.0.0.1 (%(default)s)")
    opt("--transport", choices=["uds", "tcp"], default=e("STACK_TRANSPORT", "uds"),
        help="[STACK_TRANSPORT] how nginx reaches the instances (%(default)s)")
    opt("--api-ports", default=e("STACK_API_PORTS", "9001,9002"),
        help="[STACK_API_PORTS] the instances' ports with tcp (%(default)s)")
    opt("--synchronous", choices=["full", "normal"], default=e("CREBITOS_SYNCHRONOUS", "full"),
        help="[CREBITOS_SYNCHRONOUS] SQLite's synchronous mode (%(default)s)")
    opt("--database", default=e("CREBITOS_DATABASE", "data/rinha.db"), help="[CREBITOS_DATABASE] the SQLite file (%(default)s)")
    opt("--state-dir", default=e("STACK_DIR", ".stack"),
        help="[STACK_DIR] pid files, logs, nginx config, sockets (%(default)s)")
    opt("--limits", choices=["auto", "on", "off"], default=e("STACK_LIMITS", "auto"),
        help="[STACK_LIMITS] cgroup limits; auto = where possible (%(default)s)")
    opt("--cgroup", default=e("STACK_CGROUP", "crebitos"), help="[STACK_CGROUP] the stack's parent cgroup (%(default)s)")
    opt("--log-level", default=e("CREBITOS_LOG_LEVEL", "info"), help="[CREBITOS_LOG_LEVEL] (%(default)s)")
    opt("--bin", default=e("CREBITOS_BIN") or None, help="[CREBITOS_BIN] run this binary, skip the build")
    opt("--no-build", dest="build", action="store_false", default=e("STACK_BUILD", "1") != "0",
        help="[STACK_BUILD=0] run the last release build as it is")
    opt("--ready-timeout", type=float, default=float(e("STACK_READY_TIMEOUT", "40")),
        help="[STACK_READY_TIMEOUT] give up after this many seconds (%(default)g)")
    opt("--fresh", action="store_true", default=e("STACK_FRESH", "0") == "1",
        help="[STACK_FRESH=1] drop the database first (its -wal, -shm and lock files too; with postgres its "
             "cluster), like `docker compose down -v`: the contest's test expects untouched balances")
    opt("--instances", type=int, default=int(e("STACK_INSTANCES", "2")),
        help="[STACK_INSTANCES] API instances behind nginx, 1 to 99 (%(default)s); they share the two x-api "
             "limits (each 2/N of them): the same total")
    opt("--restart", choices=["unless-stopped", "no"], default=e("STACK_RESTART", "unless-stopped"),
        help="[STACK_RESTART] (%(default)s)")
    opt("--nginx-conf", default=e("STACK_NGINX_CONF", "nginx.conf"),
        help="[STACK_NGINX_CONF] nginx's configuration, rendered for the native stack (%(default)s; another "
             "file: to measure a change to it side by side)")
    opt("--store", choices=["sqlite", "postgres"], default=e("STACK_STORE", "sqlite"),
        help="[STACK_STORE] where the ledger lives (%(default)s). postgres: a local PostgreSQL server in "
             "STATE_DIR/postgres (as scripts/postgres-server: Debian's postgresql, the unprivileged postgres "
             "user, 127.0.0.1 on a free port); the instances get its URL as CREBITOS_DATABASE, stack-down stops "
             "it, --fresh drops it. The limits are then docker-compose.postgres.yml's: PostgreSQL in a cgroup of "
             "its own (0.7 CPU, 300MB), with shared_buffers and max_connections sized to fit")
    return ap


def down_hint(state):
    return "scripts/stack-down" + ("" if state == os.path.join(REPO, ".stack") else " --state-dir %s" % state)


# PostgreSQL's memory sized for its 300MB share: 64MB of shared buffers, 30 connections (two
# instances of CREBITOS_POSTGRES_CONNECTIONS=6, plus psql).
PG_SETTINGS = "-c shared_buffers=64MB -c max_connections=30 -c work_mem=2MB -c max_wal_size=256MB"


def up(argv):
    a = up_parser().parse_args(argv)
    if not 1 <= a.instances <= 99:
        die("--instances must be a number from 1 to 99")
    instances = ["api%02d" % i for i in range(1, a.instances + 1)]
    limited = ["nginx"]  # the services with a cgroup of their own, besides the instances
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
        pid = pidfile_alive(os.path.join(state, "pids", svc + ".pid"))
        if pid:
            die("%s is already running from %s (pid %d): run %s first" % (svc, state, pid, down_hint(state)))
    if port_in_use(a.port):
        die("port %d on 127.0.0.1 is already in use" % a.port)
    if a.fresh and a.store == "postgres":
        shutil.rmtree(os.path.join(state, "postgres"), ignore_errors=True)
        log("--fresh: dropped the PostgreSQL cluster in %s/postgres" % state)
    elif a.fresh:
        for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
            if os.path.exists(database + suffix):
                os.remove(database + suffix)
        log("--fresh: dropped %s (and its -wal, -shm and lock files)" % database)
    need_cmd("nginx", "nginx")
    need_cmd("curl", "curl")  # not for this script: the health commands it prints use it

    binary = abspath(a.bin) if a.bin else release_binary(a.build, build_log=os.path.join(state, "logs", "build.log"))
    if not os.access(binary, os.X_OK):
        die("no server binary at %s" % binary)

    # The sockets live in the state dir (in compose: on the volume nginx and the instances
    # share). A Unix socket path must fit in 108 bytes (sun_path).
    listen = {}
    ports = a.api_ports.split(",")
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
    if cg:
        env.update(cg.env(a.cgroup))

    ok = False
    # From here on, a failure (or Ctrl-C, or SIGTERM) stops whatever was already started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        write_stack_env(state, env)
        limits = {}
        if cg:
            # The instances share what the compose file gives its two: with --instances N each
            # gets 2/N of the x-api limits, so the stack's total stays the compose file's.
            api_cpus, api_mem = float(compose_limit("x-api", "cpus", compose)), mb_to_bytes(compose_limit("x-api", "memory", compose))
            for svc in limited:
                limits[svc] = (compose_limit(svc, "cpus", compose), mb_to_bytes(compose_limit(svc, "memory", compose)))
            for svc in instances:
                limits[svc] = ("%.4g" % (2 * api_cpus / a.instances), 2 * api_mem // a.instances)
            cg.remove(a.cgroup)  # leftovers of a stack that was killed rather than stopped
            # The parent holds the sum: the stack as a whole is held to the challenge's budget.
            cg.create(a.cgroup, sum(float(c) for c, _ in limits.values()), sum(m for _, m in limits.values()))
            for svc, (cpus, nbytes) in limits.items():
                cg.create("%s/%s" % (a.cgroup, svc), cpus, nbytes)

        if a.store == "postgres":
            os.chmod(state, os.stat(state).st_mode | 0o001)  # the postgres user must reach its directory
            with open(os.path.join(state, "logs", "postgres.log"), "w") as out:
                try:
                    env["CREBITOS_DATABASE"] = database = start_postgres(state, env, out)
                except SystemExit as e:
                    log(str(e), out)
                    die("PostgreSQL did not start: see %s/logs/postgres.log and %s/postgres/server.log" % (state, state))
            write_stack_env(state, env)

        t0 = time.monotonic()
        for svc in instances:
            open(os.path.join(state, "logs", svc + ".log"), "w").close()
            launch_instance(state, env, svc)

        nginx_dir = os.path.join(state, "nginx")
        conf = os.path.join(nginx_dir, "nginx.conf")
        render_nginx_conf(nginx_conf, conf, a.port, os.path.join(nginx_dir, "tmp"), [listen[s] for s in instances])
        nginx_log = os.path.join(state, "logs", "nginx-error.log")
        nginx_pid = os.path.join(nginx_dir, "nginx.pid")
        nginx_args = ["nginx", "-p", nginx_dir + "/", "-c", conf, "-e", nginx_log, "-g", "pid %s;" % nginx_pid]
        if subprocess.run(nginx_args[:1] + ["-t", "-q"] + nginx_args[1:]).returncode != 0:
            die("nginx rejects %s" % conf)
        if os.path.exists(nginx_pid):
            os.remove(nginx_pid)
        # nginx daemonizes: the process started forks the master and exits; the master's pid
        # comes from nginx's own pid file.
        starter = spawn(nginx_args, nginx_log, cg.joiner(a.cgroup + "/nginx") if cg else None)
        if starter.wait() != 0:
            die("nginx failed to start: see %s" % nginx_log)
        for _ in range(50):
            if read_text(nginx_pid):
                break
            time.sleep(0.1)
        master = read_pidfile(nginx_pid) or die("nginx wrote no pid file: see %s" % nginx_log)
        write_pidfile(os.path.join(state, "pids", "nginx.pid"), master[0])

        deadline = time.monotonic() + a.ready_timeout
        while True:
            for svc in instances + ["nginx"]:
                if not pidfile_alive(os.path.join(state, "pids", svc + ".pid")):
                    die("%s exited during start-up: see %s/logs/%s.log" % (svc, state, svc))
            if all(instance_health(env, svc, 1)[0] for svc in instances) \
                    and http_get("127.0.0.1:%d" % a.port, "/clientes/1/extrato", 1)[0] == 200:
                break
            if time.monotonic() > deadline:
                die("the stack did not answer GET /clientes/1/extrato within %gs (logs in %s/logs)"
                    % (a.ready_timeout, state))
            time.sleep(0.05)
        if a.restart == "unless-stopped":
            supervisor_log = os.path.join(state, "logs", "supervisor.log")
            proc = spawn([sys.executable, "-m", "crebitos_tools.stack", "supervise", state], supervisor_log,
                         env=dict(os.environ, PYTHONPATH=SCRIPTS))
            if not write_pidfile(os.path.join(state, "pids", "supervisor.pid"), proc.pid):
                die("the supervisor exited at once: see %s" % supervisor_log)
        ready_ms = (time.monotonic() - t0) * 1000
        ok = True
    except KeyboardInterrupt:
        raise SystemExit(130)
    finally:
        if not ok:
            log("start-up failed: stopping what was started (logs in %s/logs)" % state)
            down(state, quiet=True, env=env)

    pid_of = {svc: read_pidfile(os.path.join(state, "pids", svc + ".pid")) for svc in instances + ["nginx", "supervisor"]}
    lines = ["stack ready in %d ms: http://127.0.0.1:%d  (GET /clientes/1/extrato answers 200)" % (ready_ms, a.port),
             "  nginx   pid %d   config %s" % (pid_of["nginx"][0], conf)]
    for svc in instances:
        health = ("curl --unix-socket %s http://localhost/health" % listen[svc][len("unix:"):]
                  if a.transport == "uds" else "curl http://%s/health" % listen[svc])
        lines.append("  %-7s pid %-7d listen %s   health: %s" % (svc, pid_of[svc][0], listen[svc], health))
    lines.append("  restart   " + ("unless-stopped: supervisor pid %d, log %s/logs/supervisor.log"
                                   % (pid_of["supervisor"][0], state) if a.restart == "unless-stopped" else "no"))
    lines.append("  database  %s  (%s; audit: scripts/audit %s)" % (
        database, "PostgreSQL in %s/postgres, log %s/postgres/server.log" % (state, state)
        if a.store == "postgres" else "synchronous=%s" % a.synchronous, database))
    lines += ["  binary    %s" % binary, "  logs      %s/logs/" % state]
    if cg:
        lines.append("  limits    ON (cgroup %s), the same as %s:" % (cg.version, os.path.basename(compose)))
        for svc, (cpus, nbytes) in limits.items():
            lines.append("    %-6s %s CPU %dMB   %s" % (svc, cpus, nbytes // MIB, cg.dir("memory", "%s/%s" % (a.cgroup, svc))))
        lines.append("    stack: cpu %s  cpuacct %s  memory %s" % tuple(cg.dir(c, a.cgroup) for c in CONTROLLERS))
    else:
        lines.append("  limits    OFF: the stack runs unlimited (%s)" % why_not)
    lines.append("stop it with: %s" % down_hint(state))
    print("\n".join(lines), flush=True)
    return 0


# --- down -------------------------------------------------------------------------------------

def state_parser(prog, description):
    ap = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state-dir", default=os.environ.get("STACK_DIR", ".stack"),
                    help="[STACK_DIR] the state dir stack-up used (%(default)s)")
    return ap


def stack_groups(env, cg):
    parent = env.get("STACK_CGROUP", "crebitos")
    return [parent] + ["%s/%s" % (parent, s) for s in (["postgres"] if env.get("STACK_STORE") == "postgres" else [])
                       + ["nginx"] + env["INSTANCES"].split()]


def down(state, quiet=False, env=None):
    """Stop what up started: exactly the processes named in the pid files, each checked
    against its recorded start time, the supervisor first (it would start the instances
    again), then nginx (no new request reaches a stopping instance), the instances, the
    PostgreSQL server; then the cgroups. True if everything stopped."""
    if not os.path.isdir(os.path.join(state, "pids")):
        log("nothing to stop: no stack state in %s" % state)
        return True
    env = dict({"STACK_CGROUP": "crebitos", "INSTANCES": "api01 api02"}, **(env or stack_env(state)))
    instances = env["INSTANCES"].split()
    cg = Cgroups.of_stack(env)
    say = (lambda msg: None) if quiet else print
    say("peak memory of each process (VmHWM) and now (VmRSS):")
    for svc in ["nginx"] + instances:
        pid = pidfile_alive(os.path.join(state, "pids", svc + ".pid"))
        for p in ([pid] + (children(pid) if svc == "nginx" else [])) if pid else []:
            st = proc_status(p)
            if st:
                say("  %-6s pid %-7d peak %7.1f MB   now %7.1f MB" % (svc, p, int(st.get("VmHWM") or 0) / 1024,
                                                                   int(st.get("VmRSS") or 0) / 1024))
    if cg and os.path.isdir(cg.dir("memory", env["STACK_CGROUP"])):
        say("cgroups (cpu time, throttling, memory incl. page cache):")
        for g in stack_groups(env, cg):
            say("  " + (cg.report(g) or "%s: gone" % g))

    failed = False

    def stop(svc, sig, grace, with_children=False):
        """Signal svc's recorded process, SIGKILL it if it is still there after grace seconds;
        with_children: its children too (nginx's workers; not the supervisor's, which are
        the instances it restarted, stopped gracefully on their own below)."""
        nonlocal failed
        path = os.path.join(state, "pids", svc + ".pid")
        rec = read_pidfile(path)
        if rec and pid_running(*rec):
            pid, st = rec
            kids = {k: proc_starttime(k) for k in children(pid)} if with_children else {}
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            if not wait_gone(grace, pid, st):
                log("%s (pid %d) still running %ds after %s: SIGKILL" % (svc, pid, grace, sig.name))
                os.kill(pid, signal.SIGKILL)
                if not wait_gone(5, pid, st):
                    log("%s (pid %d) survived SIGKILL" % (svc, pid))
                    failed = True
                    return
            for k, kst in kids.items():
                if not wait_gone(5, k, kst):
                    os.kill(k, signal.SIGKILL)
                    if not wait_gone(5, k, kst):
                        log("%s child %d survived SIGKILL" % (svc, k))
                        failed = True
            say("stopped %s (pid %d)" % (svc, pid))
        if os.path.exists(path):
            os.remove(path)

    # SIGQUIT is nginx's graceful stop (the requests in flight finish); the instances stop
    # cleanly on SIGTERM.
    stop("supervisor", signal.SIGTERM, 5)
    stop("nginx", signal.SIGQUIT, 10, with_children=True)
    for svc in instances:
        stop(svc, signal.SIGTERM, 15)
    if env.get("STACK_STORE") == "postgres":
        if Postgres(os.path.join(state, "postgres")).stop():
            say("stopped PostgreSQL (%s/postgres)" % state)
        else:
            log("PostgreSQL in %s/postgres did not stop" % state)
            failed = True
    if cg:
        left = cg.procs(env["STACK_CGROUP"])
        for _ in range(20):  # a process that just exited may take a moment to leave its cgroup
            if not left:
                break
            time.sleep(0.1)
            left = cg.procs(env["STACK_CGROUP"])
        if left:
            log("processes still in cgroup %s: %s" % (env["STACK_CGROUP"], " ".join(map(str, left))))
            failed = True
        else:
            cg.remove(env["STACK_CGROUP"])
    return not failed


def down_main(argv):
    ap = state_parser("scripts/stack-down", """Stop the native stack that scripts/stack-up started: exactly the processes named
in its pid files (each checked against its recorded start time, so a pid reused by another
program is never signalled), then its PostgreSQL server and cgroups. Never looks processes up
by name. Prints each process's peak memory (VmHWM) and the cgroups' counters before stopping.
Exits non-zero if something it started could not be stopped.""")
    ap.add_argument("--quiet", action="store_true", help="do not print the memory and CPU report")
    a = ap.parse_args(argv)
    return 0 if down(abspath(a.state_dir), a.quiet) else 1


# --- status -----------------------------------------------------------------------------------

def status_main(argv):
    a = state_parser("scripts/stack-status", """Show the native stack's state: whether each process runs, its memory now and at its
peak, each instance's /health (asked directly, not through nginx), and the cgroups' CPU time,
throttling and memory. Exits 0 if nginx and every instance run and answer, 1 otherwise.
For a load test: the cgroups' directories are in <state dir>/stack.env (CGROUP_CPU,
CGROUP_CPUACCT, CGROUP_MEMORY; docs/STACK.md).""").parse_args(argv)
    state = abspath(a.state_dir)
    env = stack_env(state)
    if not env:
        print("no stack state in %s" % state)
        return 1
    ok = True
    print("stack in %s: http://127.0.0.1:%s (nginx -> %s)" % (state, env["STACK_PORT"], env["STACK_TRANSPORT"]))
    for svc in ["nginx"] + env["INSTANCES"].split():
        pid = pidfile_alive(os.path.join(state, "pids", svc + ".pid"))
        if not pid:
            print("  %-6s not running" % svc)
            ok = False
            continue
        st = proc_status(pid)
        mem = "rss %6.1f MB  peak %6.1f MB" % (int(st.get("VmRSS") or 0) / 1024, int(st.get("VmHWM") or 0) / 1024)
        if svc == "nginx":
            status = http_get("127.0.0.1:" + env["STACK_PORT"], "/clientes/1/extrato")[0]
            health = "GET /clientes/1/extrato -> %s" % (status or "000")
        else:
            healthy, health = instance_health(env, svc)
            if not healthy:
                health, ok = "UNHEALTHY: " + health, False
        print("  %-6s pid %-7d %s  %s" % (svc, pid, mem, health))
    cg = Cgroups.of_stack(env)
    if cg:
        print("cgroups (%s):" % cg.version)
        for g in stack_groups(env, cg):
            print("  " + (cg.report(g) or "%s: missing" % g))
    else:
        print("limits: off (unlimited)")
    pid = pidfile_alive(os.path.join(state, "pids", "supervisor.pid"))
    if pid:
        print("supervisor: pid %d restarts an instance that exits (%s/logs/supervisor.log)" % (pid, state))
    else:
        print("supervisor: not running (STACK_RESTART=%s)" % env.get("STACK_RESTART", "no"))
    return 0 if ok else 1


# --- the supervisor ---------------------------------------------------------------------------

def supervise(state):
    """Restart an API instance that exited, as compose's `restart: unless-stopped` does: each
    instance's pid file is checked twice a second; one that is gone (crashed, killed with -9,
    out of memory) is started again by launch_instance, after a pause that doubles while it
    keeps dying (0.5 s up to 8 s, reset once it has run for 10 s), as Docker backs off a
    restart loop. stack-down stops the supervisor first, so a stopped stack stays stopped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    env = stack_env(state)
    instances = env["INSTANCES"].split()
    pause = {svc: 0.5 for svc in instances}
    since = {svc: time.monotonic() for svc in instances}
    while os.path.exists(os.path.join(state, "stack.env")):
        _reap()
        for svc in instances:
            pidfile = os.path.join(state, "pids", svc + ".pid")
            if pidfile_alive(pidfile):
                if time.monotonic() - since[svc] >= 10:
                    pause[svc] = 0.5
                continue
            log("%s %s is not running: restarting it in %g s" % (utc_now(), svc, pause[svc]))
            time.sleep(pause[svc])
            if pidfile_alive(pidfile):
                continue  # someone else started it
            try:
                pid = launch_instance(state, env, svc, "restarted by the supervisor (restart: unless-stopped)")
                log("%s %s restarted: pid %d" % (utc_now(), svc, pid))
            except (SystemExit, OSError, subprocess.SubprocessError) as e:
                log("%s %s did not start: %s" % (utc_now(), svc, e))
            since[svc] = time.monotonic()
            pause[svc] = min(pause[svc] * 2, 8)
        time.sleep(0.5)
    return 0


def _reap():
    """Collect the supervisor's children that exited: a zombie holds its pid until then."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


# --- one instance again -----------------------------------------------------------------------

def instance_main(argv):
    ap = argparse.ArgumentParser(prog="python3 -m crebitos_tools.stack instance", description="""Start ONE service of a
running native stack again, exactly as stack-up started it (the same binary, environment,
cgroup and pid file, so stack-down still stops it): the fault tests kill instances themselves
and restart them with this (crebitos_tools.stackctl). Returns once the instance's /health
answers and prints one line with its pid and how long it took.""")
    ap.add_argument("state")
    ap.add_argument("action", choices=["start"])
    ap.add_argument("service", help="apiNN, or postgres: the PostgreSQL server of a --store postgres stack")
    ap.add_argument("seconds", nargs="?", type=float, default=40, help="give up after this long (%(default)g)")
    a = ap.parse_args(argv)
    state = abspath(a.state)
    env = stack_env(state) or die("no stack state in %s" % state)
    t0 = time.monotonic()
    if a.service == "postgres":
        # Crash recovery runs in start; the server goes back into its cgroup.
        if env.get("STACK_STORE") != "postgres":
            die("this stack has no PostgreSQL server")
        with open(os.path.join(state, "logs", "postgres.log"), "a") as out:
            try:
                start_postgres(state, env, out)
            except SystemExit as e:
                log(str(e), out)
                die("PostgreSQL did not start: see %s/postgres/server.log" % state)
        print("postgres: started, ready after %d ms" % ((time.monotonic() - t0) * 1000))
        return 0
    instances = env["INSTANCES"].split()
    if a.service not in instances:
        die("SERVICE must be one of: %s" % " ".join(instances))
    pid = pidfile_alive(os.path.join(state, "pids", a.service + ".pid"))
    if pid:
        die("%s is already running (pid %d)" % (a.service, pid))
    pid = launch_instance(state, env, a.service, "restarted by crebitos_tools.stack instance")
    deadline = t0 + a.seconds
    while not instance_health(env, a.service)[0]:
        if not pid_running(pid):
            die("%s exited during start-up: see %s/logs/%s.log" % (a.service, state, a.service))
        if time.monotonic() > deadline:
            die("%s did not answer /health within %gs" % (a.service, a.seconds))
        time.sleep(0.02)
    print("%s: started pid %d, /health answers after %d ms" % (a.service, pid, (time.monotonic() - t0) * 1000))
    return 0


COMMANDS = {"up": up, "down": down_main, "status": status_main, "postgres": postgres_main,
            "instance": instance_main, "supervise": lambda argv: supervise(abspath(argv[0]))}


def main(argv):
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit("usage: python3 -m crebitos_tools.stack %s ..." % "|".join(COMMANDS))
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
