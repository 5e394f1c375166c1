"""Two narrower measurements beside the load test, subcommands of scripts/loadtest:

  instance  one API instance alone (no nginx) at a constant rate of the contest's blend over
            kept-alive connections: CPU and context switches per request (docs/BENCHMARKS.md).
            The binaries run back to back in each round, in alternating order, so that a slow
            spell of the shared machine hits all of them alike; then the medians.
  writes    the write path alone, two processes on one SQLite file: the group commit against
            the baseline, with the Benchmarks/ package's bench-writes (docs/ARCHITECTURE.md).
"""
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from . import PACKAGE, REPO, processes, venv
from .clients import RATES
from .loadrun import answers
from .score import percentile

# writes: two processes on one file (the stack's two instances); flat-out, 16 writers each; the
# strategies of bench-writes, NAME@MS adding the background WAL checkpointer every MS ms.
PROCESSES, CONCURRENCY, STRATEGIES = 2, 16, ("group-commit", "group-commit@100", "busy-timeout")
INSTANCE_COLUMNS = [("requests", "%8d requests"), ("failed", "%5d non-2xx"), ("cpu_us", "CPU %6.0f µs/req"),
                    ("switches", "%6.2f switches/req"), ("p50", "p50 %6.2f"), ("p99", "p99 %6.2f"), ("max", "max %7.1f ms")]


def context_switches(pid):
    total = 0
    for status in glob.glob("/proc/%d/task/*/status" % pid):
        try:
            with open(status) as fh:
                total += sum(int(line.split()[1]) for line in fh if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")))
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def k6_constant(base, rate, seconds):
    """crebitos.js's constant-rate probe (RATE set); k6's summary metrics."""
    with tempfile.TemporaryDirectory(prefix="crebitos-k6-") as d:
        env = dict(os.environ, BASE_URL=base, RATE=str(rate), SECONDS=str(seconds), RATES=json.dumps(RATES),
                   K6_NO_USAGE_REPORT="true",
                   SUMMARY_PATH=os.path.join(d, "summary.json"))
        r = subprocess.run([venv.tool("k6"), "run", "--quiet", "--no-usage-report", os.path.join(PACKAGE, "crebitos.js")],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode not in (0, 99):  # 99: a threshold failed, and none is set
            raise SystemExit("k6 failed: %s" % r.stderr[-2000:])
        with open(env["SUMMARY_PATH"]) as fh:
            return {k: v.get("values", {}) for k, v in json.load(fh)["metrics"].items()}


def measure_instance(label, binary, env, a):
    with tempfile.TemporaryDirectory(prefix="crebitos-instance-") as d:
        base = "http://127.0.0.1:%d" % processes.free_port()
        with open(os.path.join(d, "server.log"), "w") as log:
            server = subprocess.Popen([os.path.abspath(binary), "--database", os.path.join(d, "rinha.db"), "--listen",
                                       base[7:], "--synchronous", a.sync, "--instance", label],
                                      stdout=log, stderr=log, env=dict(os.environ, **env))
        try:
            if not answers(base, 10):
                raise SystemExit("%s did not answer on %s" % (label, base))
            cpu0, switches0 = processes.cpu_seconds_of(server.pid), context_switches(server.pid)
            m = k6_constant(base, a.rate, a.seconds)
            cpu1, switches1 = processes.cpu_seconds_of(server.pid), context_switches(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=15)
    n, full = m["http_reqs"]["count"], m["full_ms"]
    return {"requests": n, "failed": m.get("http_req_failed", {}).get("passes", 0), "cpu_us": (cpu1 - cpu0) / n * 1e6,
            "switches": (switches1 - switches0) / n, "p50": full["med"], "p99": full["p(99)"], "max": full["max"]}


def instance(a):
    binaries = dict(item.split("=", 1) for item in a.bin)
    envs = {label: {} for label in binaries}
    for item in a.env:  # LABEL:NAME=VALUE
        label, _, assignment = item.partition(":")
        envs[label].update([assignment.split("=", 1)])
    line = lambda label, r: "%-10s  %s" % (label, "  ".join(fmt % r[key] for key, fmt in INSTANCE_COLUMNS))
    print("rate %d/s, %d s per run, %d rounds, synchronous=%s, %s" % (
        a.rate, a.seconds, a.rounds, a.sync, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    results = {label: [] for label in binaries}
    for n in range(a.rounds):
        for label in list(binaries)[::1 if n % 2 == 0 else -1]:
            results[label].append(measure_instance(label, binaries[label], envs[label], a))
            print("round %d  %s" % (n + 1, line(label, results[label][-1])), flush=True)
    print("median over %d rounds:" % a.rounds)
    for label, runs in results.items():
        print("median   %s" % line(label, {key: statistics.median(r[key] for r in runs) for key, _ in INSTANCE_COLUMNS}))


def write_case(binary, variant, load, sync, a):
    """`processes` bench-writes on one fresh file; variant "group-commit@200": the group-commit
    strategy with the background checkpointer every 200 ms."""
    strategy, _, checkpoint_ms = variant.partition("@")
    with tempfile.TemporaryDirectory(prefix="crebitos-bench-") as directory:
        cmd = [binary, "--database", os.path.join(directory, "rinha.db"), "--strategy", strategy, "--synchronous", sync,
               "--writes", str(a.writes), "--checkpoint-ms", checkpoint_ms or "0"]
        cmd += ["--rate", str(a.rate)] if load == "paced" else ["--rate", "0", "--concurrency", str(CONCURRENCY)]
        children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(PROCESSES)]
        latencies, elapsed = [], []
        for child in children:
            out, err = child.communicate(timeout=900)
            if child.returncode != 0:
                raise SystemExit("bench-writes failed (%s, %s, %s): %s" % (strategy, load, sync, err.strip()[-2000:]))
            result = json.loads(out.strip().splitlines()[-1])
            latencies += result["latencies_ms"]
            elapsed.append(result["elapsed_s"])
    latencies.sort()
    return {"strategy": variant, "load": load, "synchronous": sync, "processes": PROCESSES, "writes": len(latencies),
            "writes_per_s": round(len(latencies) / max(elapsed), 1), "max": latencies[-1],
            **{key: percentile(latencies, p) for key, p in (("p50", 50), ("p99", 99), ("p99.9", 99.9))}}


def writes(a):
    binary = a.bin
    if not binary:
        build = ["swift", "build", "-c", "release", "--package-path", os.path.join(REPO, "Benchmarks")]
        subprocess.run(build + ["--product", "bench-writes"], check=True, stdout=subprocess.DEVNULL)
        binary = os.path.join(subprocess.run(build + ["--show-bin-path"], check=True, capture_output=True,
                                             text=True).stdout.strip(), "bench-writes")
    load_text = {"paced": "Poisson %g/s per process" % a.rate, "flat-out": "closed loop, %d writers per process" % CONCURRENCY}
    lines = ["%d processes x %d writes, one file; latency from submission to commit, ms." % (PROCESSES, a.writes), "",
             "| load | synchronous | strategy | p50 | p99 | p99.9 | max | writes/s |", "|---|---|---|---|---|---|---|---|"]
    results = []
    for load in ("paced", "flat-out"):
        for sync in ("full", "normal"):
            for strategy in STRATEGIES:
                r = write_case(binary, strategy, load, sync, a)
                results.append(r)
                print("  %-17s %-8s %-6s p50 %.2f  p99 %.2f  max %.1f ms  %s writes/s" % (
                    strategy, load, sync, r["p50"], r["p99"], r["max"], r["writes_per_s"]), file=sys.stderr, flush=True)
                lines.append("| %s | %s | %s | %.2f | %.2f | %.2f | %.1f | %.0f |" % (
                    load_text[load], sync.upper(), strategy, r["p50"], r["p99"], r["p99.9"], r["max"], r["writes_per_s"]))
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results, "table": table,
                   "machine": {"nproc": os.cpu_count(), "kernel": platform.release()}}, fh, indent=2)
