"""One run of the contest's load test (`scripts/loadtest`), step by step; `main` reads as
the list of steps: settle the options, a fresh stack, where the ledger is, the measurement
around k6, the score and the audit, the verdict, the picture and the summary.
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

from . import REPO, PACKAGE, SCRIPTS, ledger, loadtest_audit, plot, report, score, venv, stack as stackinfo
from .clients import LIMITS
from .progress import Progress, tail_records

OFFICIAL = {"ramp_s": 120, "plateau_s": 120}
QUICK = {"ramp_s": 15, "plateau_s": 15}


def log(msg):
    print("loadtest: %s" % msg, file=sys.stderr, flush=True)


def process_cpu_seconds(pid):
    """User + system CPU of a process so far (/proc/PID/stat), or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def answers(base, seconds):
    """Whether GET BASE/clientes/1/extrato answers 200 within `seconds`."""
    import urllib.request
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


# -- 1. the options, settled -----------------------------------------------------------------
def settle(args):
    """Fills in the profile, URL, state dir, database, label and run directory."""
    args.profile = dict(QUICK if args.quick else OFFICIAL)
    if args.duration is not None:
        args.profile = {"ramp_s": args.duration / 2.0, "plateau_s": args.duration / 2.0}
    if args.ramp is not None:
        args.profile["ramp_s"] = args.ramp
    if args.plateau is not None:
        args.profile["plateau_s"] = args.plateau
    args.url = args.url or "http://127.0.0.1:%d" % args.port
    args.state_dir = os.path.join(REPO, args.state_dir)  # an absolute path stays as it is
    if args.db is None and (args.no_fresh or args.no_stack):
        args.db = stackinfo.stack_env(args.state_dir).get("CREBITOS_DATABASE")
    args.db = args.db or os.path.join(REPO, "data", "rinha.db")
    if not ledger.is_postgres(args.db):
        args.db = os.path.abspath(args.db)
    args.started = datetime.datetime.now(datetime.timezone.utc)
    args.label = args.label or "x%g-%s-%s" % (args.scale, args.sync, "official" if args.profile == OFFICIAL
                                             else "%gs+%gs" % (args.profile["ramp_s"], args.profile["plateau_s"]))
    args.run_dir = os.path.abspath(args.out or os.path.join(
        REPO, "runs", args.started.strftime("%Y%m%d-%H%M%S") + "-" + args.label))
    os.makedirs(args.run_dir, exist_ok=True)
    args.env = dict(os.environ, CREBITOS_SYNCHRONOUS=args.sync, CREBITOS_DATABASE=args.db, STACK_DIR=args.state_dir,
                    STACK_PORT=str(args.port), STACK_CGROUP=args.cgroup)


# -- 2. the stack ------------------------------------------------------------------------------
def prepare_stack(args):
    """Unless --no-stack: stack-down, the database removed (unless --no-fresh), stack-up. Returns
    whether the run starts on a fresh database."""
    if args.no_stack:
        return False
    if args.no_fresh and answers(args.url, 1):
        log("stack already answering on %s: kept as it is (--no-fresh)" % args.url)
        return False
    stack_log = os.path.join(args.run_dir, "stack.log")
    run_logged([os.path.join(SCRIPTS, "stack-down")], args.env, stack_log)
    if not args.no_fresh and not ledger.is_postgres(args.db):
        for f in [args.db, args.db + "-wal", args.db + "-shm", args.db + "-journal"]:
            if os.path.exists(f):
                os.remove(f)
        log("removed %s (and its -wal/-shm)" % args.db)
    rc = run_logged([os.path.join(SCRIPTS, "stack-up")] + (args.stack_arg or []), args.env, stack_log)
    if rc != 0:
        with open(stack_log) as fh:
            sys.stderr.write(fh.read()[-3000:])
        raise SystemExit("loadtest: scripts/stack-up failed (exit %d), see %s" % (rc, stack_log))
    return not args.no_fresh


def find_ledger(args, fresh):
    """The database to audit and the last row before the run: (exists, since_id)."""
    stack_env = stackinfo.stack_env(args.state_dir)
    # A stack on PostgreSQL (stack-up --store postgres): its database is the server's URL.
    if not args.no_stack and stack_env.get("STACK_STORE") == "postgres" and stack_env.get("CREBITOS_DATABASE"):
        args.db = stack_env["CREBITOS_DATABASE"]
        log("the stack's ledger is on PostgreSQL: auditing %s" % args.db)
    if not ledger.exists(args.db):
        return False, 0
    since_id = loadtest_audit.max_id(args.db)
    if since_id and not fresh:
        log("database already holds %d rows: the audit matches only rows after id %d" % (since_id, since_id))
    return True, since_id


# -- 3. the measurement around k6 ----------------------------------------------------------
class Measurement(threading.Thread):
    """The stack's cgroups, the machine's CPU and TCP counters before and after, and once a
    second the stack's and k6's cumulative CPU into cpu.csv."""

    def __init__(self, state_dir, run_dir):
        super().__init__(daemon=True)
        self.groups = stackinfo.find_groups(state_dir)
        self.path = os.path.join(run_dir, "cpu.csv")
        self.k6_pid = None
        self.stop_evt = threading.Event()
        stackinfo.reset_peaks(self.groups)
        self.before = stackinfo.snapshot(self.groups), stackinfo.tcp_counters(), stackinfo.machine_cpu_irq()
        self.start()

    def run(self):
        with open(self.path, "w") as out:
            out.write("t_ms,stack_cpu_s,k6_cpu_s,machine_busy_s,machine_total_s,irq_s\n")
            while not self.stop_evt.is_set():
                stack = stackinfo.cpu_seconds(self.groups) if self.groups else None
                k6 = process_cpu_seconds(self.k6_pid) if self.k6_pid else None
                out.write("%d,%s,%s,%.3f,%.3f,%.3f\n" % ((time.time() * 1000, "" if stack is None else "%.4f" % stack,
                                                          "" if k6 is None else "%.3f" % k6) + stackinfo.machine_cpu_irq()))
                out.flush()
                self.stop_evt.wait(1.0)

    def stop(self):
        """The counters after the run, taken as soon as k6 has exited; sampling ends."""
        self.after = stackinfo.snapshot(self.groups), stackinfo.tcp_counters(), stackinfo.machine_cpu_irq()
        self.stop_evt.set()
        self.join(2)

    def fields(self, requests, k6_usage):
        """The result's fields about CPU, TCP and processes."""
        (snap0, tcp0, (busy0, total0, irq0)), (snap1, tcp1, (busy1, total1, irq1)) = self.before, self.after
        cpu = (stackinfo.cpu_delta(snap0, snap1, requests, k6_usage["wall_s"]) if self.groups
               else {"why": "no stack cgroup found (a stack started with limits writes .stack/ pid files)"})
        out = {"machine_busy_pct": round(100.0 * (busy1 - busy0) / max(total1 - total0, 1e-9), 1),
               "irq_cpu_s": round(irq1 - irq0, 2), "cpu": cpu, "processes": stackinfo.processes(self.groups),
               "tcp": {k: tcp1[k] - tcp0[k] for k in tcp1} if tcp0 else None,
               # CPU that neither the stack nor k6 used: other programs on the machine (noise).
               "others_cpu_s": None}
        if cpu.get("stack_cpu_s") is not None:
            out["others_cpu_s"] = round(max(0.0, (busy1 - busy0) - (irq1 - irq0) - cpu["stack_cpu_s"] - k6_usage["cpu_s"]), 2)
        return out


def run_k6(args, measurement):
    """crebitos.js under k6, a progress line every 5 s; returns (exit code, k6's own usage)."""
    k6 = venv.tool("k6")
    env = dict(os.environ, BASE_URL=args.url, SCALE=str(args.scale), RAMP_S=str(args.profile["ramp_s"]),
               PLATEAU_S=str(args.profile["plateau_s"]), SUMMARY_PATH=os.path.join(args.run_dir, "k6-summary.json"),
               LIMITS=json.dumps(LIMITS), K6_NO_USAGE_REPORT="true")
    records = os.path.join(args.run_dir, "records.log")
    # k6 appends to its console output: a reused run directory must start empty.
    for stale in (records, env["SUMMARY_PATH"]):
        if os.path.exists(stale):
            os.remove(stale)
    log("k6: scale x%g, ramp %ss, plateau %ss -> %s" % (args.scale, args.profile["ramp_s"], args.profile["plateau_s"], args.url))
    cmd = [k6, "run", "--quiet", "--no-usage-report", "--log-format", "raw", "--console-output", records,
           os.path.join(PACKAGE, "crebitos.js")]
    with open(os.path.join(args.run_dir, "k6.log"), "w") as out:
        t0 = time.time()
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
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


def progress_item(line):
    """(phase, ms, ok) of one k6 record line: "v" records are phases 1-2, the rest phase 3."""
    r = score.Record.parse(line)
    return None if r is None else ("1-2" if r.phase == "v" else "3 (open load)", r.rt, r.ok)


# -- 4. what the run is and what it saw ------------------------------------------------------
def machine_info():
    with open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "?")
    with open("/proc/meminfo") as fh:
        mem = int(fh.readline().split()[1]) // 1024
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
            "memory_mb": mem, "loadavg_before": os.getloadavg()[0]}


def git_rev():
    git = lambda *a: subprocess.run(["git"] + list(a), cwd=REPO, capture_output=True, text=True).stdout.strip()
    return (git("rev-parse", "--short", "HEAD") or "none") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def binary_info(state_dir):
    """The server binary the stack runs (stack.env CREBITOS_BIN): path, build time, sha256."""
    path = stackinfo.stack_env(state_dir).get("CREBITOS_BIN")
    if not path or not os.path.exists(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return {"path": path, "built_at": mtime.strftime("%Y-%m-%d %H:%M:%S UTC"), "sha256": h.hexdigest()[:16]}


def judge(args, records):
    """The score of the run, with the quiet seconds."""
    sc = score.score(records, score.dropped_arrivals(os.path.join(args.run_dir, "k6-summary.json")), args.profile["ramp_s"])
    sc["quiet"] = score.quiet_stats(records, score.read_cpu(os.path.join(args.run_dir, "cpu.csv")))
    return sc


def verdict(res, strict):
    """Sets res["verdict"] and res["verdict_line"]; returns the list of failures."""
    sc, audit = res["score"], res.get("audit")
    failures = []
    if sc["inconsistencies"]:
        failures.append("%d inconsistencies" % sc["inconsistencies"])
    if sc.get("validations") is not None and sc["validations_ok"] != sc["validations"]:
        failures.append("%d validation(s) of phases 1-2 failed" % (sc["validations"] - sc["validations_ok"]))
    if audit and not audit["ok"]:
        failures.append("ledger audit failed")
    if not audit:
        failures.append("no audit")
    if res["k6"]["exit_code"] != 0:
        failures.append("k6 exited %d" % res["k6"]["exit_code"])
    sla_miss = sc["payout_usd"] < 100000
    if strict and sla_miss:
        failures.append("payout below USD 100,000 (--strict)")
    res["verdict"] = "FAIL" if failures else "PASS"
    res["verdict_line"] = ("VERDICT: FAIL (%s)" % "; ".join(failures) if failures else
                           "VERDICT: PASS (payout USD {:,.2f}, 0 inconsistencies, audit clean{})".format(
                               sc["payout_usd"], "; SLA missed" if sla_miss else ""))
    return failures


def in_repo(path):
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path


def draw(res, records, run_dir):
    """run.png; a picture must never hide the verdict, so a failure is only logged."""
    s, lat, prof = res["score"], res["score"]["latency_ms"], res["profile"]
    subtitle = "payout USD {:,.2f} | OK<250ms {:.2f}% | inconsistencies {} | p50 {} p99 {} p99.9 {} max {} ms | audit {}".format(
        s["payout_usd"], s["ok_under_250ms_pct"], s["inconsistencies"], *[report.fmt_ms(lat.get(p)) for p in
                                                                           ("p50", "p99", "p99_9", "max")],
        "clean" if (res.get("audit") or {}).get("ok") else "FAILED/skipped")
    try:
        png = plot.render(records, os.path.join(run_dir, "run.png"), "crébitos load test: %s" % res["label"],
                          prof["ramp_s"], prof["plateau_s"], prof["scale"], subtitle,
                          score.read_cpu(os.path.join(run_dir, "cpu.csv")), (res.get("cpu") or {}).get("quota_cpus"))
        res["png"] = in_repo(png)
    except Exception as e:
        log("plot failed: %s" % e)


def write_summary(res, run_dir):
    with open(os.path.join(run_dir, "result.json"), "w") as fh:
        json.dump(res, fh, indent=2)
    text = report.summary_text(res)
    with open(os.path.join(run_dir, "summary.txt"), "w") as fh:
        fh.write(text)
    sys.stdout.write(text)


def main(args):
    settle(args)
    fresh = prepare_stack(args)
    if not answers(args.url, 60):
        raise SystemExit("loadtest: nothing answers GET %s/clientes/1/extrato" % args.url)
    db_ok, since_id = find_ledger(args, fresh)
    measurement = Measurement(args.state_dir, args.run_dir)
    machine = machine_info()
    binary = binary_info(args.state_dir) if not args.no_stack else None  # before: a rebuild may replace it
    k6_rc, k6_usage = run_k6(args, measurement)
    measurement.stop()

    records_path = os.path.join(args.run_dir, "records.log")
    records = score.read_records(records_path) if os.path.exists(records_path) else []
    if k6_rc != 0 or not records:
        with open(os.path.join(args.run_dir, "k6.log")) as fh:
            sys.stderr.write(fh.read()[-4000:])
        if not records:
            log("k6 exited %d and recorded nothing" % k6_rc)
            return 2
        log("k6 exited %d: scoring what it recorded" % k6_rc)
    sc = judge(args, records)
    res = {"label": args.label, "started_at": args.started.strftime("%Y-%m-%d %H:%M:%S UTC"), "git": git_rev(),
           "binary": binary, "command": " ".join(["scripts/loadtest"] + sys.argv[1:]), "machine": machine,
           "profile": {"scale": args.scale, "ramp_s": args.profile["ramp_s"], "plateau_s": args.profile["plateau_s"],
                       "sync": args.sync if not args.no_stack else "as started by others", "fresh": fresh, "url": args.url},
           "k6": dict(k6_usage, exit_code=k6_rc), "score": sc, "run_dir": in_repo(args.run_dir)}
    res.update(measurement.fields(sc["responses"], k6_usage))
    if db_ok:
        res["audit"] = loadtest_audit.audit(args.db, records, since_id)
    else:
        res["audit_skipped"] = "database file %s not found (use --db)" % args.db
    failures = verdict(res, args.strict)
    if not args.no_plot:
        draw(res, records, args.run_dir)
    write_summary(res, args.run_dir)
    if args.down and not args.no_stack:
        run_logged([os.path.join(SCRIPTS, "stack-down")], args.env, os.path.join(args.run_dir, "stack.log"))
    return 1 if failures else 0
