"""The native stack's controller: stack-up (stackup.py), stack-down, stack-status,
postgres-server (postgres.py), the supervisor and `instance start`; docs/STACK.md describes
the stack, its options and its files. Standard library only: it runs before the .venv exists.
Processes join their cgroup in a preexec_fn, only safe without threads: every command runs
single-threaded."""
import argparse
import os
import signal
import subprocess
import sys
import time

from .cgroups import Cgroups
from .postgres import postgres_main
from .processes import abspath, die, http_get, log, memory, pid_running, utc_now
from .stackstate import instance_health, launch_instance, running, stack_env, start_postgres
from .stackdown import down
from .stackup import up

# --- down and status ----------------------------------------------------------------------------

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

COMMANDS = {"up": up, "down": down_main, "status": status_main, "postgres": postgres_main,
            "instance": instance_main, "supervise": lambda argv: supervise(abspath(argv[0]))}

def main(argv):
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit("usage: python3 -m crebitos_tools.stackctl %s ..." % "|".join(COMMANDS))
    return COMMANDS[argv[0]](argv[1:])

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
