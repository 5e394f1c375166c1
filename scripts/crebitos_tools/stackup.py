"""scripts/stack-up: start the native stack (docs/STACK.md describes it, its options and its
files). Processes join their cgroup in a preexec_fn, only safe without threads: it runs
single-threaded."""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

from . import REPO, SCRIPTS
from .cgroups import CONTROLLERS, MIB, Cgroups, compose_limit, mb_to_bytes
from .nginxconf import render_nginx_conf
from .prerequisites import need
from .processes import abspath, die, http_get, log, port_in_use, read_pidfile, read_text, spawn, write_pidfile
from .serverbinary import build_binary
from .stackdown import down
from .stackstate import instance_health, launch_instance, pidfile, running, start_postgres, write_stack_env

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
    binary = abspath(a.bin) if a.bin else build_binary(a.no_build, build_log=build_log,
                                                      postgres=a.store == "postgres")
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
