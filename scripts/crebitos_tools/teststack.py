"""A stack of a test's own, driven through stack-up and stack-down: what the fault tests and
scripts/stack-test start, signal and stop."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from . import REPO, SCRIPTS
from .processes import (children, free_port, http_get, pid_running, proc_starttime, read_pidfile, read_text,
                        wait_gone, write)
from .stackstate import pidfile, stack_env

class Stack:
    """A stack of a test's own, driven through stack-up and stack-down: a fresh state dir under
    /tmp (the sockets' paths must fit in 108 bytes), a free port, a cgroup name of its own, the
    database in db_dir (default STATE/data), every command and its output appended to
    OUT/stack.log (and printed indented with echo). binary: the server to run (default
    STATE/bin/crebitos, the private copy harness.run makes); restart: stack-up's --restart (the
    fault tests restart what they kill themselves, when they choose); up_args: more of
    stack-up's options. `with` it, and it is stopped at the end whatever happens."""

    def __init__(self, out, sync="full", port=None, name="faults", state=None, store="sqlite", binary=None,
                 db_dir=None, restart="no", up_args=(), echo=False):
        self.state = state or tempfile.mkdtemp(prefix="crebitos-%s." % name, dir="/tmp")
        self.store, self.out, self.sync, self.restart, self.echo = store, out, sync, restart, echo
        self.up_args, self.stopped = [str(a) for a in up_args], False
        os.makedirs(os.path.join(self.state, "bin"), exist_ok=True)
        # SQLite: the file; PostgreSQL: the server's URL, known once up() has run.
        self.db_dir = db_dir or os.path.join(self.state, "data")
        self.db = os.path.join(self.db_dir, "rinha.db") if store == "sqlite" else None
        self.bin, self.port = binary or os.path.join(self.state, "bin", "crebitos"), port or free_port()
        self.cgroup, self.log_path = "crebitos-%s-%d" % (name, os.getpid()), os.path.join(out, "stack.log")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.stopped:
            self.down("--quiet", check=False)

    def _run(self, cmd, check=True, env=None):
        with open(self.log_path, "a") as fh:
            fh.write("$ %s\n" % " ".join(cmd))
            fh.flush()
            r = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
            fh.write(r.stdout)
        if self.echo:
            print("".join("    | " + line for line in r.stdout.splitlines(True)), end="", flush=True)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (exit %d): %s" % (" ".join(cmd[:2]), r.returncode, r.stdout[-1500:]))
        return r

    def up(self, check=True):
        r = self._run([os.path.join(SCRIPTS, "stack-up"), "--no-build", "--bin", self.bin,
                       "--state-dir", self.state, "--port", str(self.port), "--cgroup", self.cgroup,
                       "--synchronous", self.sync, "--restart", self.restart, "--store", self.store]
                      + (["--database", self.db] if self.store == "sqlite" else []) + self.up_args, check=check)
        self.stopped = r.returncode != 0
        if self.store == "postgres" and r.returncode == 0:
            self.db = stack_env(self.state)["CREBITOS_DATABASE"]
        return r

    def down(self, *args, check=True):
        self.stopped = True
        return self._run([os.path.join(SCRIPTS, "stack-down"), "--state-dir", self.state, *args], check=check)

    @property
    def env(self):
        """STATE/stack.env, what stack-up recorded ({} before it ran)."""
        return stack_env(self.state)

    def pid(self, svc):
        """(pid, start time) from STATE/pids/SVC.pid, or (None, None); the start time tells a reused pid apart."""
        return read_pidfile(pidfile(self.state, svc)) or (None, None)

    def running(self, svc):
        """SVC's pid if the process its pid file records still runs."""
        pid, start = self.pid(svc)
        return pid if pid is not None and pid_running(pid, start) else None

    def kill(self, svc, sig):
        """Sends sig to SVC (the pid its pid file names), waits up to 5 s until it is gone; returns the pid."""
        pid, start = self.pid(svc)
        if pid is not None and pid_running(pid, start):
            os.kill(pid, sig)
            wait_gone(5, pid, start)
        return pid

    def health(self, svc, timeout):
        """SVC's own GET /health as JSON (or None), straight to the socket or port stack.env names, not through nginx."""
        status, body = http_get(self.env.get(svc.upper() + "_LISTEN", ""), "/health", timeout)
        return json.loads(body) if status == 200 else None

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
