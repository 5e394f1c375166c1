"""What the fault and bad-input tests share: the options every one takes, a stack of its own
with a private copy of the server (a rebuild by someone else during the test changes
nothing), the list of checks with its closing "N passed, M failed", the stack stopped and its
logs kept whatever happens, and the checks several of them make. Each test's main says only
what is its own."""
import argparse
import asyncio
import datetime
import os
import shutil
import subprocess
import time
import traceback
from collections import Counter

from . import REPO, SCRIPTS, log, processes, serverbinary, stackstate, teststack
from .ledger import format_report, integrity
from .progress import Progress

SERVICES = ("nginx", "api01", "api02")
INSTANCES = ("api01", "api02")


def parser(doc):
    """An option parser with the options every test takes; the test adds its own."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="server binary (default: swift build -c release, then a private copy)")
    ap.add_argument("--no-build", action="store_true", help="use the last release build as it is")
    ap.add_argument("--out", help="where the records and the report go (runs/NAME-<time>)")
    ap.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    return ap


class Checks:
    """The test's verdicts (printed as they come when failed, or always with echo; the failures
    again above the closing count), and the dir its records and report go to (out)."""

    def __init__(self, out, echo=False):
        self.items, self.out, self.echo = [], out, echo

    def add(self, name, ok, detail):
        ok = bool(ok)
        self.items.append((name, ok, detail))
        if self.echo or not ok:
            log("  %s  %s%s" % ("ok  " if ok else "FAIL", name, ": " + detail if detail else ""))
        return ok

    def add_audit(self, res, title):
        """A ledger audit's report, and its checks as this test's."""
        log("\n" + format_report(res["checks"], title))
        self.items += [(c["check"], c["ok"], c["message"]) for c in res["checks"]]

    @property
    def failed(self):
        return [c for c in self.items if not c[1]]

    def close(self):
        if self.failed:
            log("\nfailures:")
            for name, _, detail in self.failed[:40]:
                log("  FAIL  %s%s" % (name, ": " + detail if detail else ""))
        log("\n%d passed, %d failed" % (len(self.items) - len(self.failed), len(self.failed)))
        return 1 if self.failed else 0


def run(name, args, body, after=None, echo=False, own_stack=True, **stack_options):
    """Runs one test: an out dir, a stack of its own (stack_options go to teststack.Stack),
    body(stack, checks) while it runs, then the stack stopped (unless --keep), after(stack,
    checks, what body returned) once it is down, its logs copied to the out dir, its state
    removed if everything held. Returns the exit code. Without own_stack body gets None (the
    test runs against a stack it was pointed at)."""
    out = os.path.abspath(args.out or os.path.join(
        REPO, "runs", "%s-%s" % (name, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))))
    os.makedirs(out, exist_ok=True)
    checks = Checks(out, echo)
    if not own_stack:
        body(None, checks)
        return checks.close()
    binary = args.bin or serverbinary.build_binary(args.no_build, log)
    stack = teststack.Stack(out, name=name, **stack_options)
    serverbinary.copy_binary(binary, stack.bin)
    log("  stack: 127.0.0.1:%d, state %s, report in %s" % (stack.port, stack.state, out))
    try:
        stack.up()
    except RuntimeError as e:
        checks.add("stack-up", False, str(e))
        stack.down(check=False)
        return checks.close()
    try:
        ctx = body(stack, checks)
    except Exception as e:  # the test itself broke: a failed check, and the stack is still stopped
        log(traceback.format_exc())
        checks.add("run", False, "%s: %s" % (type(e).__name__, e))
        after = None
    finally:
        if not args.keep:
            stack.down(check=False)
    if after:
        after(stack, checks, ctx)
    if not args.keep:
        shutil.copytree(os.path.join(stack.state, "logs"), os.path.join(out, "stack-logs"), dirs_exist_ok=True)
        log("stack logs: %s" % os.path.join(out, "stack-logs"))
        if not checks.failed:
            shutil.rmtree(stack.state, ignore_errors=True)
    return checks.close()


def pids(stack):
    return stackstate.pids(stack.state)  # {service: pid} of its running processes


def rss_mb(stack, svc):
    kb = processes.rss_kb(pids(stack).get(svc, 0))
    return kb / 1024 if kb else None


def audit_file(path):
    """scripts/audit --quiet on a database: (consistent, its verdict line)."""
    r = subprocess.run([os.path.join(SCRIPTS, "audit"), "--quiet", path], capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip()[-300:]


def check_closed_file(checks, db):
    """After stack-down: PRAGMA integrity_check, and scripts/audit, on the closed file."""
    integ = integrity(db)
    checks.add("closed file", integ == "ok", "after stack-down: PRAGMA integrity_check: %s" % integ[:200])
    checks.add("scripts/audit", *audit_file(db))


def log_lines(stack, svc, words):
    """The lines of an instance's log that hold any of `words`."""
    with open(os.path.join(stack.state, "logs", svc + ".log"), errors="replace") as fh:
        return [line.strip() for line in fh if any(w in line for w in words)]


def same_processes(checks, stack, before, services=SERVICES, name="%s still the same process"):
    """One check per service: it still runs with the pid it had before."""
    now = pids(stack)
    for svc in services:
        checks.add(name % svc, now.get(svc) == before.get(svc), "pid %s -> %s" % (before.get(svc), now.get(svc)))


def under_load(wl, seconds, faults, label):
    """Runs the workload for `seconds` while faults(progress) injects the test's faults,
    then waits up to 120 s for every request and retry to end. Returns how many had not."""
    progress = Progress(wl.take_finished, label=label)

    async def scenario():
        wl.t_start = time.monotonic()
        progress.start()
        load = asyncio.ensure_future(wl.run(seconds))
        await faults(progress)
        await load
        log("  load ended at t=%.1fs: %d transactions started, %d statements; waiting for retries"
            % (wl.now(), len(wl.intents), len(wl.statements)))
        progress.phase = "waiting for retries"
        left = await wl.drain(120)
        progress.stop()
        return left

    return asyncio.run(scenario())


def add_drain(checks, left):
    checks.add("drain", not left, "%d requests still running 120 s after the load" % left if left
               else "every request and retry ended")


def tally(keys):
    return dict(Counter(keys))  # {key: how many times}


def count(pairs):
    """'k: n, ...' of a dict of counts, sorted; 'none' when empty."""
    return ", ".join("%s: %d" % kv for kv in sorted(pairs.items(), key=str)) or "none"
