"""Start, stop and hurt a native stack of this project's own (scripts/stack-up) for the
fault tests: a fresh state dir under /tmp (the instances' Unix sockets must fit in 108
bytes), a free port, a cgroup name of its own, and a private copy of the server binary.
"""
import os
import re
import shutil
import signal as _signal
import subprocess
import sys
import tempfile
import time

from . import SCRIPTS, REPO
# The controller's own process helpers, re-exported for the tests that import them from here.
from .stack import children, stack_env, free_port, is_zombie, pids, proc_starttime, read_pidfile, release_binary, rss_kb  # noqa: F401


class Stack:
    def __init__(self, out, sync="full", port=None, name="faults", state=None, store="sqlite"):
        self.state = state or tempfile.mkdtemp(prefix="crebitos-%s." % name)
        self.store = store
        os.makedirs(os.path.join(self.state, "bin"), exist_ok=True)
        self.out = out
        self.sync = sync
        # SQLite: the file; PostgreSQL: the server's URL, known once up() has run.
        self.db = os.path.join(self.state, "data", "rinha.db") if store == "sqlite" else None
        self.bin = os.path.join(self.state, "bin", "crebitos")
        self.port = port or free_port()
        self.cgroup = "crebitos-%s-%d" % (name, os.getpid())
        self.log_path = os.path.join(out, "stack.log")

    def _run(self, cmd, check=True, env=None):
        with open(self.log_path, "a") as fh:
            fh.write("$ %s\n" % " ".join(cmd))
            fh.flush()
            r = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            fh.write(r.stdout)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (exit %d): %s" % (" ".join(cmd[:2]), r.returncode, r.stdout[-1500:]))
        return r

    def up(self):
        store = ["--database", self.db] if self.store == "sqlite" else ["--store", self.store]
        r = self._run([os.path.join(SCRIPTS, "stack-up"), "--no-build", "--bin", self.bin,
                       "--state-dir", self.state, "--port", str(self.port),
                       "--cgroup", self.cgroup, "--synchronous", self.sync,
                       # The fault tests restart what they kill themselves, at the moment
                       # they choose: no supervisor racing them.
                       "--restart", "no"] + store)
        if self.store == "postgres":
            self.db = stack_env(self.state)["CREBITOS_DATABASE"]
        return r

    def kill_postgres(self):
        """kill -9 of the PostgreSQL postmaster (the first line of its postmaster.pid), then
        waits until its backends have noticed and exited too: a new postmaster refuses to
        start while they still hold the old shared memory."""
        pid = int(open(os.path.join(self.state, "postgres", "data", "postmaster.pid")).readline())
        st, kids = proc_starttime(pid), children(pid)
        t0 = time.monotonic()
        os.kill(pid, _signal.SIGKILL)
        while any(proc_starttime(p) is not None and not is_zombie(p) for p in [pid] + kids):
            if time.monotonic() - t0 > 20:
                raise RuntimeError("postgres (pid %d) or its backends still run 20 s after kill -9" % pid)
            time.sleep(0.005)
        return ["postgres: SIGKILL postmaster pid %d (started %s), it and its %d backends gone after %d ms"
                % (pid, st, len(kids), (time.monotonic() - t0) * 1000)]

    def down(self, check=True):
        return self._run([os.path.join(SCRIPTS, "stack-down"), "--state-dir", self.state], check=check)

    def instance(self, action, svc, *extra):
        """Starts one service again exactly as stack-up started it (crebitos_tools.stack
        instance), in a process of its own: it forks the instance from a single thread."""
        r = self._run([sys.executable, "-m", "crebitos_tools.stack", "instance", self.state, action, svc] + list(extra),
                      env=dict(os.environ, PYTHONPATH=SCRIPTS))
        return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""

    def patch_upstreams(self, opts):
        """Experiment: add parameters (e.g. "max_fails=0" or "fail_timeout=2s") to the two
        upstream servers of THIS stack's rendered nginx.conf and reload nginx. The
        repository's nginx.conf is not touched."""
        conf = os.path.join(self.state, "nginx", "nginx.conf")
        text = open(conf).read()
        text = re.sub(r"(server unix:[^;]*api0[12]\.sock)[^;]*;", r"\1 %s;" % opts, text)
        open(conf, "w").write(text)
        pid = int(open(os.path.join(self.state, "nginx", "nginx.pid")).read().split()[0])
        os.kill(pid, 1)  # SIGHUP: nginx re-reads its configuration
        time.sleep(0.5)

    def signal(self, svcs, sig):
        """Sends `sig` to the instances straight from here (no helper process in between, so
        the signal lands while the burst's requests are in flight), each checked against the
        start time in its pid file; then waits until they are gone (for KILL and TERM)."""
        victims = []
        for svc in svcs:
            pid, st = read_pidfile(os.path.join(self.state, "pids", svc + ".pid")) or (0, None)
            if not pid or proc_starttime(pid) != st:
                raise RuntimeError("%s (pid %s) is not running" % (svc, pid))
            victims.append((svc, pid, st))
        t0 = time.monotonic()
        for _, pid, _ in victims:
            os.kill(pid, sig)
        out = []
        for svc, pid, st in victims:
            if sig in (_signal.SIGKILL, _signal.SIGTERM):
                while proc_starttime(pid) == st and not is_zombie(pid):
                    if time.monotonic() - t0 > 20:
                        raise RuntimeError("%s (pid %d) still runs 20 s after signal %d" % (svc, pid, sig))
                    time.sleep(0.005)
            out.append("%s: %s pid %d%s" % (svc, _signal.Signals(sig).name, pid,
                       ", gone after %d ms" % ((time.monotonic() - t0) * 1000)
                       if sig in (_signal.SIGKILL, _signal.SIGTERM) else ""))
        return out

    def wal_bytes(self):
        try:
            return os.path.getsize(self.db + "-wal")
        except OSError:
            return None






def copy_binary(src, dst):
    """Copies the server binary, making sure the copy is whole: the shared .build may be
    relinked by another build at any moment, and a half-written binary hangs or crashes."""
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


def build_binary(no_build=False, log=print):
    """The release binary's path, after `swift build -c release` unless no_build."""
    return release_binary(not no_build, log)
