"""Processes and the small things every tool of the stack needs around them: a pid file holds
"PID STARTTIME" (field 22 of /proc/PID/stat), so nothing here signals a process it did not start
(a reused pid has another start time); spawn() starts one detached; reading and writing small
files; a free port; one GET to an instance. Standard library only: it runs before the .venv
exists."""
import asyncio
import os
import random
import signal
import subprocess
import sys
import time

from . import REPO, httpc
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
