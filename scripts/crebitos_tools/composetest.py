"""scripts/compose-test: the compose files run for real, the way the contest runs an entry.

    scripts/compose-test [--file docker-compose.yml ...] [--keep]

For each compose file (both by default): `down -v` (a clean slate), `up -d --build`, wait until
nginx answers /health on :9999 from both instances, check the limits the engine applied against
the contest's budget (literal numbers below, not re-read from the file under test), run the
contract checks through :9999 (scripts/stack-test --url) and the ledger audit, then `down -v`,
`up -d` again on a fresh volume and the contest's load, shortened (scripts/loadtest --quick
--no-stack, which scores and audits the run), and finally `down -v` and check that no container
or volume of the project is left.

The engine: $COMPOSE (a command, e.g. "podman-compose" or a wrapper script), else `docker
compose` when a Docker daemon answers, else `podman-compose`. $CONTAINER_ENGINE (docker or
podman) inspects the containers; by default it follows the compose command. Without an engine
it says so and exits 3 (scripts/test counts that as a skip, and prints it in its summary).
"""
import argparse
import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import time

from . import REPO, SCRIPTS, httpc, log
from .harness import Checks

NO_ENGINE = 3
PORT = 9999
# The contest's budget, split as each compose file says: (CPUs, memory in MiB) per service.
# Literal on purpose: the test compares what the engine applied with these numbers, so a
# compose file edited past the budget fails here instead of agreeing with itself.
BUDGETS = {
    "docker-compose.yml": {"api01": (0.55, 250), "api02": (0.55, 250), "nginx": (0.4, 50)},
    "docker-compose.postgres.yml": {"api01": (0.3, 100), "api02": (0.3, 100), "nginx": (0.2, 50),
                                    "postgres": (0.7, 300)},
}
PROJECTS = {"docker-compose.yml": "crebitos", "docker-compose.postgres.yml": "crebitos-postgres"}
CONTEST_CPUS, CONTEST_MIB = 1.5, 550

checks = Checks(out=None, echo=True)  # the fault tests' list of verdicts, printed as they come


def check(name, ok, detail=""):
    return checks.add(name, ok, detail)


def engine_commands():
    """(compose argv, engine name) or None when no engine is there."""
    if os.environ.get("COMPOSE"):
        compose = shlex.split(os.environ["COMPOSE"])
        engine = os.environ.get("CONTAINER_ENGINE") or ("docker" if compose[0].endswith("docker") else "podman")
        return compose, engine
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0 \
            and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return ["docker", "compose"], os.environ.get("CONTAINER_ENGINE", "docker")
    if shutil.which("podman-compose") and shutil.which("podman"):
        return ["podman-compose"], os.environ.get("CONTAINER_ENGINE", "podman")
    return None


class ComposeStack:
    def __init__(self, compose, engine, file):
        self.compose, self.engine, self.file, self.project = compose, engine, file, PROJECTS[file]

    def run(self, *args, timeout=600, quiet=False):
        """compose -f FILE ARGS, output into the log unless it fails."""
        argv = self.compose + ["-f", self.file] + list(args)
        log("    $ " + " ".join(argv))
        try:
            r = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            log("".join("    | " + line for line in out.splitlines(True)[-30:]))
            log("    (timed out after %d s)" % timeout)
            return False
        if r.returncode != 0 or not quiet:
            log("".join("    | " + line for line in r.stdout.splitlines(True)[-(40 if r.returncode else 8):]))
        return r.returncode == 0

    def inspect(self, args):
        r = subprocess.run([self.engine] + args, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    def container(self, service):
        """The name of SERVICE's container (docker: crebitos-api01-1, podman-compose: crebitos_api01_1)."""
        names = self.inspect(["ps", "-a", "--filter", "label=com.docker.compose.project=" + self.project,
                              "--filter", "label=com.docker.compose.service=" + service, "--format", "{{.Names}}"])
        return names.split()[0] if names else None

    def leftovers(self):
        containers = self.inspect(["ps", "-a", "--filter", "label=com.docker.compose.project=" + self.project,
                                   "--format", "{{.Names}}"]).split()
        volumes = [v for v in self.inspect(["volume", "ls", "--format", "{{.Name}}"]).split()
                   if v.startswith(self.project + "_")]
        return containers + volumes

    def logs(self, service):
        name = self.container(service)
        if name:
            r = subprocess.run([self.engine, "logs", "--tail", "30", name], capture_output=True, text=True)
            log("".join("    %s| %s" % (service, line) for line in (r.stdout + r.stderr).splitlines(True)))

    def database(self):
        """What the audit reads: the SQLite file in the data volume, or the PostgreSQL URL."""
        if "postgres" in self.file:
            ip = self.inspect(["inspect", self.container("postgres") or "-", "--format",
                               "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"]).split()
            return "postgres://rinha:rinha@%s:5432/rinha" % ip[0] if ip else None
        mount = self.inspect(["volume", "inspect", self.project + "_data", "--format", "{{.Mountpoint}}"])
        return os.path.join(mount, "rinha.db") if mount else None


def wait_ready(seconds):
    """Until nginx on :9999 answers /health 200 from both instances; returns the seconds taken or None."""
    start = time.monotonic()
    seen = set()
    while time.monotonic() - start < seconds:
        try:
            r = asyncio.run(httpc.exchange(httpc.build("GET", "/health"), port=PORT, timeout=2))
            if r.status == 200:
                seen.add(r.instance)
        except (httpc.HTTPError, OSError):
            pass
        if {"api01", "api02"} <= seen:
            return time.monotonic() - start
        time.sleep(0.5)
    return None


def check_limits(stack):
    budget = BUDGETS[stack.file]
    cpus = sum(c for c, _ in budget.values())
    mib = sum(m for _, m in budget.values())
    check("%s: the budget adds up to the contest's %.1f CPU / %d MB (%.2f / %d)" % (stack.file, CONTEST_CPUS, CONTEST_MIB, cpus, mib),
          abs(cpus - CONTEST_CPUS) < 1e-9 and mib == CONTEST_MIB)
    for service, (want_cpus, want_mib) in sorted(budget.items()):
        name = stack.container(service)
        got = stack.inspect(["inspect", name or "-", "--format", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}"]).split()
        applied = (int(got[0]) / 1e9, int(got[1]) >> 20) if len(got) == 2 else None
        check("%s: %s runs with %s CPU / %s MB as the engine applied them (budget %.2f / %d)"
              % (stack.file, service, *(applied or ("?", "?")), want_cpus, want_mib),
              applied is not None and abs(applied[0] - want_cpus) < 1e-6 and applied[1] == want_mib,
              "container %s, inspect gave %r" % (name, got))
    # What the instance process itself holds: a container's capabilities, not root's.
    name = stack.container("api01")
    status = stack.inspect(["exec", name or "-", "cat", "/proc/1/status"])
    eff = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")), None)
    check("%s: api01 runs without CAP_NET_ADMIN (CapEff %s)" % (stack.file, None if eff is None else "%x" % eff),
          eff is not None and not eff & (1 << 12))


def script(name, *args, timeout=900):
    argv = [os.path.join(SCRIPTS, name)] + [str(a) for a in args]
    log("    $ scripts/" + " ".join([name] + argv[1:]))
    try:
        return subprocess.run(argv, cwd=REPO, stdin=subprocess.DEVNULL, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        log("    (timed out after %d s)" % timeout)
        return -1


def test_file(compose, engine, file, keep):
    log("\n== %s with %s" % (file, " ".join(compose)))
    stack = ComposeStack(compose, engine, file)
    stack.run("down", "-v", "--timeout", "5", quiet=True, timeout=180)
    started = time.monotonic()
    # podman-compose waits for ever on a depends_on service that exits: bounded here.
    if not check("%s: up -d --build" % file, stack.run("up", "-d", "--build", timeout=2400)):
        return stack.run("down", "-v", "--timeout", "5", timeout=180)
    log("    (built and started in %.0f s)" % (time.monotonic() - started))
    ready = wait_ready(180)
    if not check("%s: nginx on :%d answers /health from api01 and api02 (%s s after up)"
                 % (file, PORT, ready and "%.1f" % ready), ready is not None):
        for service in BUDGETS[file]:
            stack.logs(service)
        return stack.run("down", "-v", "--timeout", "5", timeout=180)
    check_limits(stack)
    database = stack.database()
    check("%s: the ledger is reachable from the host for the audit (%s)" % (file, database), database)
    rc = script("stack-test", "--url", "http://127.0.0.1:%d" % PORT, *(["--database", database] if database else []))
    check("%s: the contract checks through :%d (scripts/stack-test --url)" % (file, PORT), rc == 0, "exit %d" % rc)

    # The load on a fresh database: the contest's test reads the untouched balances first.
    stack.run("down", "-v", "--timeout", "5", quiet=True, timeout=180)
    check("%s: up -d again on a fresh volume" % file, stack.run("up", "-d", timeout=600, quiet=True))
    check("%s: ready again" % file, wait_ready(180) is not None)
    database = stack.database()
    rc = script("loadtest", "--quick", "--no-stack", "--port", PORT, "--label", "compose-" + stack.project,
                *(["--db", database] if database else []), timeout=900)
    check("%s: the contest's load, shortened, through :%d: no inconsistency, clean audit (scripts/loadtest)"
          % (file, PORT), rc == 0, "exit %d" % rc)
    if checks.failed:
        for service in BUDGETS[file]:
            stack.logs(service)
    if keep:
        log("    (--keep: left running)")
        return True
    check("%s: down -v" % file, stack.run("down", "-v", "--timeout", "10", timeout=300))
    left = stack.leftovers()
    check("%s: no container or volume of the project left" % file, not left, " ".join(left))
    return True


def main(argv):
    ap = argparse.ArgumentParser(prog="scripts/compose-test", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", action="append", choices=sorted(BUDGETS), help="a compose file (default: both)")
    ap.add_argument("--keep", action="store_true", help="leave the last stack running")
    args = ap.parse_args(argv)
    found = engine_commands()
    if not found:
        log("compose-test: no container engine here (docker compose with a daemon, podman-compose, or $COMPOSE): skipped")
        return NO_ENGINE
    compose, engine = found
    if httpc.port_open(PORT):
        log("compose-test: port %d is taken (a native stack? scripts/stack-down)" % PORT)
        return 2
    started = time.monotonic()
    for file in args.file or sorted(BUDGETS):
        test_file(compose, engine, file, args.keep)
    log("\ncompose-test took %.0f s" % (time.monotonic() - started))
    return checks.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
