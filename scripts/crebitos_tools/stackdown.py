"""scripts/stack-down's work: stop exactly what stack-up started, then its PostgreSQL server and
cgroups, saying what each process used."""
import os
import signal
import time

from .cgroups import Cgroups, cgroup_pids
from .postgres import Postgres
from .processes import children, kill, log, memory, pid_running, proc_starttime, read_pidfile, wait_gone
from .stackstate import pidfile, running, stack_env


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
