"""One run of the contest's load test (`scripts/loadtest`); `main` reads as its list of steps:
the options settled, a fresh stack, the ledger found, k6 with the measurement around it, the
score and the audit, the verdict, the picture and the summary.
"""
import datetime
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from . import REPO, PACKAGE, SCRIPTS, diskprobe, instancetimes, kernelwaits, ledger, loadtest_audit, loadcounters, plot, processes, report, score, stackstate, venv, wakeprobe
from .clients import LIMITS, RATES
from .progress import Progress, tail_records

OFFICIAL = {"ramp_s": 120, "plateau_s": 120}
QUICK = {"ramp_s": 15, "plateau_s": 15}


def log(msg):
    print("loadtest: %s" % msg, file=sys.stderr, flush=True)


def answers(base, seconds):
    """Whether GET BASE/clientes/1/extrato answers 200 within `seconds`."""
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(base + "/clientes/1/extrato", timeout=1) as r:
                if r.status == 200:
                    return True
        except Exception:
            pass
        if time.time() >= deadline:
            return False
        time.sleep(0.25)


def run_logged(cmd, env, log_path):
    log("$ %s" % " ".join(cmd))
    with open(log_path, "a") as out:
        return subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def tail(path, chars):
    with open(path) as fh:
        sys.stderr.write(fh.read()[-chars:])


def settle(args):
    """Fills in the profile, URL, state dir, database, label and run directory."""
    args.profile = dict(QUICK if args.quick else OFFICIAL)
    args.profile.update({k: v for k, v in (("ramp_s", args.ramp), ("plateau_s", args.plateau)) if v is not None})
    args.url = "http://127.0.0.1:%d" % args.port
    args.state_dir = os.path.join(REPO, args.state_dir)  # an absolute path stays as it is
    args.db = (args.db or (stackstate.stack_env(args.state_dir).get("CREBITOS_DATABASE") if args.no_stack else None)
               or os.path.join(REPO, "data", "rinha.db"))
    args.db = args.db if ledger.is_postgres(args.db) else os.path.abspath(args.db)
    args.started = datetime.datetime.now(datetime.timezone.utc)
    args.label = args.label or "x%g-%s-%s" % (args.scale, args.sync, "official" if args.profile == OFFICIAL
                                             else "%gs+%gs" % (args.profile["ramp_s"], args.profile["plateau_s"]))
    args.run_dir = os.path.abspath(args.out or os.path.join(
        REPO, "runs", args.started.strftime("%Y%m%d-%H%M%S") + "-" + args.label))
    os.makedirs(args.run_dir, exist_ok=True)
    args.env = dict(os.environ, CREBITOS_SYNCHRONOUS=args.sync, CREBITOS_DATABASE=args.db, STACK_DIR=args.state_dir,
                    STACK_PORT=str(args.port), STACK_CGROUP=args.cgroup)


def prepare_stack(args):
    """Unless --no-stack: stack-down, the database removed, stack-up. Returns whether the run
    starts on a fresh database."""
    if args.no_stack:
        return False
    stack_log = os.path.join(args.run_dir, "stack.log")
    run_logged([os.path.join(SCRIPTS, "stack-down")], args.env, stack_log)
    if not ledger.is_postgres(args.db):
        for f in [args.db + suffix for suffix in ("", "-wal", "-shm", "-journal") if os.path.exists(args.db + suffix)]:
            os.remove(f)
        log("removed %s (and its -wal/-shm)" % args.db)
    # --fresh as well: it is what empties a PostgreSQL stack's database (its cluster), which
    # the file removal above does not touch. Without it a second run on PostgreSQL started
    # on the first one's balances, and phases 1-2 failed their checks of untouched balances.
    rc = run_logged([os.path.join(SCRIPTS, "stack-up"), "--fresh"] + (args.stack_arg or []), args.env, stack_log)
    if rc != 0:
        tail(stack_log, 3000)
        raise SystemExit("loadtest: scripts/stack-up failed (exit %d), see %s" % (rc, stack_log))
    return True


def find_ledger(args, fresh):
    """The database to audit and its last row before the run: (exists, since_id)."""
    stack_env = stackstate.stack_env(args.state_dir)
    if not args.no_stack and stack_env.get("STACK_STORE") == "postgres" and stack_env.get("CREBITOS_DATABASE"):
        args.db = stack_env["CREBITOS_DATABASE"]  # the server's URL
        log("the stack's ledger is on PostgreSQL: auditing %s" % args.db)
    if not ledger.exists(args.db):
        return False, 0
    since_id = loadtest_audit.max_id(args.db)
    if since_id and not fresh:
        log("database already holds %d rows: the audit matches only rows after id %d" % (since_id, since_id))
    return True, since_id


class Measurement(threading.Thread):
    """The stack's cgroups, the machine's CPU and TCP counters before and after; once a second
    the stack's and k6's cumulative CPU into cpu.csv."""

    def __init__(self, state_dir, run_dir):
        super().__init__(daemon=True)
        self.groups, self.path = loadcounters.find_groups(state_dir), os.path.join(run_dir, "cpu.csv")
        self.k6_pid, self.stop_evt = None, threading.Event()
        loadcounters.reset_peaks(self.groups)
        self.before = self.counters()
        self.start()

    def counters(self):
        return loadcounters.snapshot(self.groups), loadcounters.tcp_counters(), loadcounters.machine_cpu_irq()

    def run(self):
        with open(self.path, "w") as out:
            out.write("t_ms,stack_cpu_s,k6_cpu_s,machine_busy_s,machine_total_s,irq_s\n")
            while not self.stop_evt.is_set():
                stack = loadcounters.cpu_seconds(self.groups) if self.groups else None
                k6 = processes.cpu_seconds_of(self.k6_pid) if self.k6_pid else None
                out.write("%d,%s,%s,%.3f,%.3f,%.3f\n" % ((time.time() * 1000, "" if stack is None else "%.4f" % stack,
                                                          "" if k6 is None else "%.3f" % k6) + loadcounters.machine_cpu_irq()))
                out.flush()
                self.stop_evt.wait(1.0)

    def stop(self):
        """The counters after the run, as soon as k6 has exited; sampling ends."""
        self.after = self.counters()
        self.stop_evt.set()
        self.join(2)

    def fields(self, requests, k6_usage):
        """The result's fields about CPU, TCP and processes."""
        (snap0, tcp0, (busy0, total0, irq0)), (snap1, tcp1, (busy1, total1, irq1)) = self.before, self.after
        cpu = (loadcounters.cpu_delta(snap0, snap1, requests, k6_usage["wall_s"]) if self.groups
               else {"why": "no stack cgroup found (a stack started with limits writes .stack/ pid files)"})
        busy, irq = busy1 - busy0, irq1 - irq0
        return {"machine_busy_pct": round(100.0 * busy / max(total1 - total0, 1e-9), 1), "irq_cpu_s": round(irq, 2),
                "cpu": cpu, "processes": loadcounters.processes(self.groups),
                "tcp": {k: tcp1[k] - tcp0[k] for k in tcp1} if tcp0 else None,
                # CPU that neither the stack nor k6 used: other programs on the machine (noise).
                "others_cpu_s": None if cpu.get("stack_cpu_s") is None else
                round(max(0.0, busy - irq - cpu["stack_cpu_s"] - k6_usage["cpu_s"]), 2)}


def probe_directory(args):
    """Where the disk probe writes: beside the SQLite file, else (PostgreSQL) in the state dir."""
    directory = os.path.dirname(args.db) if not ledger.is_postgres(args.db) else args.state_dir
    return directory if os.path.isdir(directory) else REPO


def progress_item(line):
    """(phase, ms, ok) of one k6 record line: "v" records are phases 1-2, the rest phase 3."""
    r = score.Record.parse(line)
    return None if r is None else ("1-2" if r.phase == "v" else "3 (open load)", r.rt, r.ok)


def run_k6(args, measurement):
    """crebitos.js under k6, a progress line every 5 s; returns (exit code, k6's own usage)."""
    k6 = venv.tool("k6")
    env = dict(os.environ, BASE_URL=args.url, SCALE=str(args.scale), RAMP_S=str(args.profile["ramp_s"]),
               PLATEAU_S=str(args.profile["plateau_s"]), SUMMARY_PATH=os.path.join(args.run_dir, "k6-summary.json"),
               LIMITS=json.dumps(LIMITS), RATES=json.dumps(RATES), K6_NO_USAGE_REPORT="true")
    records = os.path.join(args.run_dir, "records.log")
    for stale in (records, env["SUMMARY_PATH"]):  # k6 appends: a reused run directory must start empty
        if os.path.exists(stale):
            os.remove(stale)
    log("k6: scale x%g, ramp %ss, plateau %ss -> %s" % (args.scale, args.profile["ramp_s"], args.profile["plateau_s"], args.url))
    with open(os.path.join(args.run_dir, "k6.log"), "w") as out:
        t0 = time.time()
        p = subprocess.Popen([k6, "run", "--quiet", "--no-usage-report", "--log-format", "raw", "--console-output", records,
                              os.path.join(PACKAGE, "crebitos.js")], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        measurement.k6_pid = p.pid
        progress = Progress(tail_records(records, progress_item), label="loadtest")
        progress.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except KeyboardInterrupt:
            p.send_signal(signal.SIGINT)
            _, status, ru = os.wait4(p.pid, 0)
        wall = time.time() - t0
        progress.stop()
    return os.waitstatus_to_exitcode(status), {
        "wall_s": round(wall, 3), "user_s": round(ru.ru_utime, 3), "sys_s": round(ru.ru_stime, 3),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "max_rss_mb": round(ru.ru_maxrss / 1024.0, 1),
        "version": subprocess.run([k6, "version"], capture_output=True, text=True).stdout.strip()}


def provenance(args):
    """Which code, server binary (stack.env CREBITOS_BIN, read before k6: a rebuild may replace
    it) and machine the run measures."""
    git = lambda *a: subprocess.run(["git"] + list(a), cwd=REPO, capture_output=True, text=True).stdout.strip()
    with open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "?")
    path, binary = None if args.no_stack else stackstate.stack_env(args.state_dir).get("CREBITOS_BIN"), None
    if path and os.path.exists(path):
        with open(path, "rb") as fh:
            binary = {"path": path, "sha256": hashlib.sha256(fh.read()).hexdigest()[:16], "built_at": datetime.datetime.fromtimestamp(
                os.path.getmtime(path), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
    return {"git": (git("rev-parse", "--short", "HEAD") or "none") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""),
            "binary": binary, "machine": {"nproc": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
                                          "loadavg_before": os.getloadavg()[0]}}


def verdict(res, strict):
    """Sets res["verdict"] and res["verdict_line"]; returns the list of failures."""
    sc, audit, k6_exit = res["score"], res.get("audit"), res["k6"]["exit_code"]
    sla_miss = sc["payout_usd"] < 100000
    failures = [why for failed, why in (
        (sc["inconsistencies"], "%d inconsistencies" % sc["inconsistencies"]),
        (sc.get("validations") is not None and sc["validations_ok"] != sc["validations"],
         "%d validation(s) of phases 1-2 failed" % (sc.get("validations", 0) - sc.get("validations_ok", 0))),
        (audit and not audit["ok"], "ledger audit failed"),
        (not audit, "no audit"),
        (sc.get("dropped_arrivals") is None, "no k6 summary: arrivals k6 dropped are unknown"),
        (k6_exit != 0, "k6 exited %d" % k6_exit),
        (strict and sla_miss, "payout below USD 100,000 (--strict)")) if failed]
    res["verdict"] = "FAIL" if failures else "PASS"
    res["verdict_line"] = ("VERDICT: FAIL (%s)" % "; ".join(failures) if failures else
                           "VERDICT: PASS (payout USD {:,.2f}, 0 inconsistencies, audit clean{})".format(
                               sc["payout_usd"], "; SLA missed" if sla_miss else ""))
    return failures


def in_repo(path):
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path


def draw(res, records, run_dir):
    """run.png; a picture must never hide the verdict, so a failure is only logged."""
    s, prof = res["score"], res["profile"]
    subtitle = "payout USD {:,.2f} | OK<250ms {:.2f}% | inconsistencies {} | {} | audit {}".format(
        s["payout_usd"], s["ok_under_250ms_pct"], s["inconsistencies"], report.percentiles_ms(s["latency_ms"], ("p50", "p99", "p99_9", "max")),
        "clean" if (res.get("audit") or {}).get("ok") else "FAILED/skipped")
    try:
        res["png"] = in_repo(plot.render(
            records, os.path.join(run_dir, "run.png"), "crébitos load test: %s" % res["label"], prof["ramp_s"],
            prof["plateau_s"], prof["scale"], subtitle, score.read_cpu(os.path.join(run_dir, "cpu.csv")),
            (res.get("cpu") or {}).get("quota_cpus")))
    except Exception as e:
        log("plot failed: %s" % e)


def main(args):
    settle(args)
    fresh = prepare_stack(args)
    if not answers(args.url, 60):
        raise SystemExit("loadtest: nothing answers GET %s/clientes/1/extrato" % args.url)
    db_ok, since_id = find_ledger(args, fresh)
    measurement = Measurement(args.state_dir, args.run_dir)
    # The disk beside the stack: its syncs over the same seconds, in the database's directory
    # (a PostgreSQL stack's data directory is in the state dir, on the same disk here).
    probe = diskprobe.start(probe_directory(args), os.path.join(args.run_dir, "disk-probe.csv"))
    # And what a wake-up costs over the same seconds: each request is a chain of them, and
    # their price on this VM moves with the host's state more than with the code.
    wakes = wakeprobe.start(os.path.join(args.run_dir, "wake-probe.csv"))
    # And, when asked, which of the instances' threads waited in the kernel meanwhile, in what.
    waits = kernelwaits.start(lambda: stackstate.pids(args.state_dir)) if args.kernel_waits else None
    # And the instances' own time per request, from their histograms, to read the client's
    # tail against (what lies outside the instances: nginx, loopback TCP, k6, the shared cores).
    inside = instancetimes.Reading(args.state_dir).start()
    res = dict(provenance(args), label=args.label, command=" ".join(["scripts/loadtest"] + sys.argv[1:]),
               started_at=args.started.strftime("%Y-%m-%d %H:%M:%S UTC"), run_dir=in_repo(args.run_dir),
               profile={"scale": args.scale, "ramp_s": args.profile["ramp_s"], "plateau_s": args.profile["plateau_s"],
                        "sync": "as started by others" if args.no_stack else args.sync, "fresh": fresh, "url": args.url})
    k6_rc, k6_usage = run_k6(args, measurement)
    measurement.stop()
    disk = probe.stop()
    wake_ups = wakes.stop()
    kernel_waits = waits.stop(os.path.join(args.run_dir, "kernel-waits.txt")) if waits else None
    instance_times = inside.stop()

    path = lambda name: os.path.join(args.run_dir, name)
    records = score.read_records(path("records.log")) if os.path.exists(path("records.log")) else []
    if k6_rc != 0 or not records:
        tail(path("k6.log"), 4000)
        log("k6 exited %d: scoring what it recorded" % k6_rc if records else "k6 exited %d and recorded nothing" % k6_rc)
        if not records:
            return 2
    res["score"] = sc = score.score(records, score.dropped_arrivals(path("k6-summary.json")), args.profile["ramp_s"])
    sc["quiet"] = score.quiet_stats(records, score.read_cpu(path("cpu.csv")))
    res["k6"] = dict(k6_usage, exit_code=k6_rc)
    res.update(measurement.fields(sc["responses"], k6_usage))
    res["disk_probe"] = dict(disk, directory=in_repo(probe_directory(args)))
    res["wake_probe"] = wake_ups
    if kernel_waits:
        res["kernel_waits"] = kernel_waits
    if instance_times:
        res["instance_times"] = instance_times
    if db_ok:
        res["audit"] = loadtest_audit.audit(args.db, records, since_id)
    else:
        res["audit_skipped"] = "database file %s not found (use --db)" % args.db
    failures = verdict(res, args.strict)
    draw(res, records, args.run_dir)
    text = report.summary_text(res)
    for name, content in (("result.json", json.dumps(res, indent=2)), ("summary.txt", text)):
        with open(path(name), "w") as fh:
            fh.write(content)
    sys.stdout.write(text)
    if args.down and not args.no_stack:
        run_logged([os.path.join(SCRIPTS, "stack-down")], args.env, path("stack.log"))
    return 1 if failures else 0
