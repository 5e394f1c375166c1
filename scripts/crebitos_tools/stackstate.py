"""A running stack's record and its services: STATE/stack.env (what stack-up started and how),
STATE/pids/SVC.pid, and starting one API instance (or its PostgreSQL server) as stack-up does:
stack-up, the supervisor and `instance start` all start instances here."""
import os
import shlex

from . import SCRIPTS
from .cgroups import Cgroups
from .postgres import Postgres
from .processes import die, http_get, log, pidfile_alive, spawn, read_text, utc_now, write, write_pidfile

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

def pids(state):
    """{service: pid} of the stack's processes that still run, from its pid files."""
    d = os.path.join(state, "pids")
    found = {f[:-4]: pidfile_alive(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".pid")}
    return {svc: pid for svc, pid in found.items() if pid}
