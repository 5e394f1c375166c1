"""The narrower measurements beside the load test, each a subcommand of scripts/loadtest:

  floor      what one request costs k6 and the loopback alone: the same timing as the load
             test against a bare nginx answering a constant body, then the stack's read and
             write (docs/BENCHMARKS.md, "Where a request's time goes");
  transport  Unix sockets or TCP between nginx and the instances: two stacks side by side,
             wrk through nginx, closed loop (docs/STACK.md);
  instance   one API instance alone (no nginx) at a constant rate over keep-alive
             connections: CPU and context switches per request (docs/BENCHMARKS.md);
  writes     the write path alone, two processes on one SQLite file: the group commit against
             the baseline, with the Benchmarks/ package's bench-writes (docs/ARCHITECTURE.md).

Every comparison runs its variants back to back in each round, in alternating order, so that
a slow spell of the shared machine hits all of them alike, and ends with the medians.
"""
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from . import PACKAGE, REPO, SCRIPTS, venv, stack as stackctl, stack as stackinfo
from .loadrun import answers, process_cpu_seconds
from .score import percentile


def table_line(case, result, columns):
    return "  ".join(["%-10s" % c for c in case] + [fmt % result[key] for key, fmt in columns])


def alternate(rounds, cases, measure, columns):
    """Every case once a round, the order reversed every other round; a line per run, then
    each case's median over the rounds."""
    results = {case: [] for case in cases}
    for n in range(rounds):
        for case in cases if n % 2 == 0 else cases[::-1]:
            results[case].append(measure(case))
            print("round %d  %s" % (n + 1, table_line(case, results[case][-1], columns)), flush=True)
    print("median over %d rounds:" % rounds)
    for case in cases:
        medians = {key: statistics.median(r[key] for r in results[case]) for key, _ in columns}
        print("median   %s" % table_line(case, medians, columns))
    return results


def k6_constant(target, rate, seconds, method="GET", reuse=False):
    """crebitos.js at a constant rate (see its header); returns k6's summary metrics."""
    with tempfile.TemporaryDirectory(prefix="crebitos-k6-") as d:
        summary = os.path.join(d, "summary.json")
        env = dict(os.environ, RATE=str(rate), SECONDS=str(seconds), METHOD=method, REUSE="1" if reuse else "0",
                   SUMMARY_PATH=summary, K6_NO_USAGE_REPORT="true")
        env.update({"TARGET": "mix", "BASE_URL": target} if method == "mix" else {"TARGET": target})
        r = subprocess.run([venv.tool("k6"), "run", "--quiet", "--no-usage-report", os.path.join(PACKAGE, "crebitos.js")],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode not in (0, 99):  # 99: a threshold failed, which we do not set
            raise SystemExit("k6 failed: %s" % r.stderr[-2000:])
        with open(summary) as fh:
            return {k: v.get("values", {}) for k, v in json.load(fh)["metrics"].items()}


# -- floor -----------------------------------------------------------------------------------
def floor(a):
    with tempfile.TemporaryDirectory(prefix="crebitos-floor-") as d:
        port = stackctl.free_port()
        with open(os.path.join(d, "nginx.conf"), "w") as fh:
            fh.write("""worker_processes 1;
error_log %(d)s/error.log;
pid %(d)s/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(d)s; proxy_temp_path %(d)s; fastcgi_temp_path %(d)s; uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
  server { listen 127.0.0.1:%(port)d backlog=4096;
           location / { default_type application/json; return 200 '{"saldo":{"total":0,"limite":0}}'; } }
}
""" % {"d": d, "port": port})
        subprocess.run(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf")], check=True)
        try:
            targets = [("bare nginx, constant body", "http://127.0.0.1:%d/" % port, "GET"),
                       ("stack, statement (GET)", a.url + "/clientes/1/extrato", "GET"),
                       ("stack, transaction (POST)", a.url + "/clientes/1/transacoes", "POST")]
            print("%d requests/s for %d s, a new connection each; ms:" % (a.rate, a.seconds))
            print("%-28s %7s %7s %7s %7s  %s  %s" % ("", "p50", "p90", "p99", "max", "server (first byte) p50",
                                                    "k6 + TCP connect p50"))
            for name, url, method in targets:
                m = k6_constant(url, a.rate, a.seconds, method)
                full = m["full_ms"]
                print("%-28s %7.2f %7.2f %7.2f %7.2f  %23.2f  %20.2f" % (
                    name, full["med"], full["p(90)"], full["p(99)"], full["max"], m["http_req_waiting"]["med"],
                    m["http_req_connecting"]["med"] + m["http_req_blocked"]["med"]), flush=True)
        finally:
            with open(os.path.join(d, "nginx.pid")) as fh:
                os.kill(int(fh.read()), 15)


# -- transport -------------------------------------------------------------------------------
WRK_MIX = r"""-- The load test's proportions: 220 debits, 110 credits, 10 statements per second.
math.randomseed(os.time())
local chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
request = function()
  local r, id, t = math.random(340), math.random(5), {}
  if r <= 10 then return wrk.format("GET", "/clientes/" .. id .. "/extrato") end
  for i = 1, 10 do local k = math.random(#chars); t[i] = chars:sub(k, k) end
  local body = string.format('{"valor":%d,"tipo":"%s","descricao":"%s"}', math.random(10000),
                             (r <= 120) and "c" or "d", table.concat(t))
  return wrk.format("POST", "/clientes/" .. id .. "/transacoes", {["Content-Type"] = "application/json"}, body)
end
"""
WRK_GET = """request = function() return wrk.format("GET", "/clientes/" .. math.random(5) .. "/extrato") end\n"""


def wrk_ms(text, pct):
    """A percentile from wrk's --latency table (512.00us, 1.23ms, 1.01s), in ms."""
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\s*$" % pct, text, re.M)
    return float("nan") if not m else float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def need_wrk():
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk is missing: sudo apt-get install -y wrk")
    print("installing wrk (apt-get)", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=True, capture_output=True)


def transport(a):
    need_wrk()
    binary = os.path.abspath(a.bin or stackctl.build_binary(no_build=True))
    if not os.access(binary, os.X_OK):
        raise SystemExit("no server binary at %s (build it: swift build -c release)" % binary)
    work = tempfile.mkdtemp(prefix="crebitos-transport.")
    stacks = {}
    try:
        for mix, text in (("mix", WRK_MIX), ("get", WRK_GET)):
            with open(os.path.join(work, mix + ".lua"), "w") as fh:
                fh.write(text)
        # Both stacks run side by side for the whole measurement (an idle one costs nothing),
        # so the two runs of a pair are seconds apart.
        for t in ("uds", "tcp"):
            state, port = os.path.join(work, t), stackctl.free_port()
            subprocess.run([os.path.join(SCRIPTS, "stack-up"), "--no-build", "--bin", binary, "--state-dir", state,
                            "--database", os.path.join(state, "rinha.db"), "--port", str(port), "--transport", t,
                            "--api-ports", "%d,%d" % (stackctl.free_port(), stackctl.free_port()),
                            "--synchronous", a.synchronous, "--limits", a.limits,
                            "--cgroup", "crebitos-bench-%d-%s" % (os.getpid(), t)], check=True, stdout=subprocess.DEVNULL)
            stacks[t] = (port, stackinfo.find_groups(state))

        def measure(case):
            conns, mix, t = case
            port, groups = stacks[t]
            cpu0 = stackinfo.cpu_seconds(groups) if groups else None
            out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % a.seconds, "--latency", "-s",
                                  os.path.join(work, mix + ".lua"), "http://127.0.0.1:%d" % port],
                                 capture_output=True, text=True, check=True).stdout
            requests = int(re.search(r"^\s*(\d+) requests in", out, re.M).group(1))
            # CPU the whole stack (nginx + both instances) spent per request, from its cgroup:
            # less sensitive than throughput to other work on the machine.
            cpu_us = (1e6 * (stackinfo.cpu_seconds(groups) - cpu0) / requests) if groups and requests else float("nan")
            return {"rps": float(re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M).group(1)),
                    "p50": wrk_ms(out, 50), "p99": wrk_ms(out, 99), "cpu_us": cpu_us,
                    "errors": sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))}

        print("wrk: %ds per run, connections %s, 1 thread; each line: connections, mix, transport; synchronous=%s; limits %s; %d cores; %s" % (
            a.seconds, a.connections, a.synchronous, a.limits, os.cpu_count(), time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())))
        cases = [(int(c), mix, t) for c in a.connections.replace(",", " ").split() for mix in ("mix", "get") for t in ("uds", "tcp")]
        alternate(a.rounds, cases, measure,
                  [("rps", "%9.0f req/s"), ("p50", "p50 %7.3f ms"), ("p99", "p99 %7.3f ms"), ("cpu_us", "cpu %6.1f us/req"),
                   ("errors", "socket errors %d")])
    finally:
        for t in stacks:
            subprocess.run([os.path.join(SCRIPTS, "stack-down"), "--state-dir", os.path.join(work, t), "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


# -- instance --------------------------------------------------------------------------------
def context_switches(pid):
    total = 0
    for status in glob.glob("/proc/%d/task/*/status" % pid):
        try:
            with open(status) as fh:
                total += sum(int(line.split()[1]) for line in fh if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")))
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def instance(a):
    binaries = dict(item.split("=", 1) for item in a.bin)
    environments = {label: {} for label in binaries}
    for item in a.env:
        label, assignment = item.split(":", 1)
        name, value = assignment.split("=", 1)
        environments[label][name] = value

    def measure(case):
        label = case[0]
        with tempfile.TemporaryDirectory(prefix="crebitos-instance-") as d:
            port = stackctl.free_port()
            with open(os.path.join(d, "server.log"), "w") as log:
                server = subprocess.Popen([os.path.abspath(binaries[label]), "--database", os.path.join(d, "rinha.db"),
                                           "--listen", "127.0.0.1:%d" % port, "--synchronous", a.sync, "--instance", label],
                                          stdout=log, stderr=log, env=dict(os.environ, **environments[label]))
            try:
                base = "http://127.0.0.1:%d" % port
                if not answers(base, 10):
                    raise SystemExit("%s did not answer on %s" % (label, base))
                cpu0, switches0 = process_cpu_seconds(server.pid), context_switches(server.pid)
                m = k6_constant(base, a.rate, a.seconds, method="mix", reuse=True)
                cpu1, switches1 = process_cpu_seconds(server.pid), context_switches(server.pid)
            finally:
                server.terminate()
                server.wait(timeout=15)
        requests = m["http_reqs"]["count"]
        return {"requests": requests, "failed": m.get("http_req_failed", {}).get("passes", 0),
                "cpu_us": (cpu1 - cpu0) / requests * 1e6, "switches": (switches1 - switches0) / requests,
                "p50": m["full_ms"]["med"], "p99": m["full_ms"]["p(99)"], "max": m["full_ms"]["max"]}

    print("rate %d/s, %d s per run, %d rounds, synchronous=%s, %s" % (
        a.rate, a.seconds, a.rounds, a.sync, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    alternate(a.rounds, [(label,) for label in binaries], measure,
              [("requests", "%8d requests"), ("failed", "%5d non-2xx"), ("cpu_us", "CPU %6.0f µs/req"),
               ("switches", "%6.2f switches/req"), ("p50", "p50 %6.2f"), ("p99", "p99 %6.2f"), ("max", "max %7.1f ms")])


# -- writes ----------------------------------------------------------------------------------
def write_case(binary, variant, load, sync, a):
    # "group-commit@200": the group-commit strategy with the background checkpointer every 200 ms.
    strategy, _, checkpoint_ms = variant.partition("@")
    with tempfile.TemporaryDirectory(prefix="crebitos-bench-") as directory:
        cmd = [binary, "--database", os.path.join(directory, "rinha.db"), "--strategy", strategy, "--synchronous", sync,
               "--writes", str(a.writes), "--checkpoint-ms", checkpoint_ms or "0"]
        cmd += ["--rate", str(a.rate)] if load == "paced" else ["--rate", "0", "--concurrency", str(a.concurrency)]
        children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(a.processes)]
        latencies, elapsed = [], []
        for child in children:
            out, err = child.communicate(timeout=900)
            if child.returncode != 0:
                raise SystemExit("bench-writes failed (%s, %s, %s): %s" % (strategy, load, sync, err.strip()[-2000:]))
            result = json.loads(out.strip().splitlines()[-1])
            latencies += result["latencies_ms"]
            elapsed.append(result["elapsed_s"])
    latencies.sort()
    return {"strategy": variant, "load": load, "synchronous": sync, "processes": a.processes, "writes": len(latencies),
            "writes_per_s": round(len(latencies) / max(elapsed), 1), "max": latencies[-1],
            **{key: percentile(latencies, p) for key, p in (("p50", 50), ("p99", 99), ("p99.9", 99.9))}}


def writes(a):
    binary = a.bin
    if not binary:
        build = ["swift", "build", "-c", "release", "--package-path", os.path.join(REPO, "Benchmarks")]
        subprocess.run(build + ["--product", "bench-writes"], check=True, stdout=subprocess.DEVNULL)
        binary = os.path.join(subprocess.run(build + ["--show-bin-path"], check=True, capture_output=True,
                                             text=True).stdout.strip(), "bench-writes")
    load_text = {"paced": "Poisson %g/s per process" % a.rate, "flat-out": "closed loop, %d writers per process" % a.concurrency}
    lines = ["%d processes x %d writes, one file; latency from submission to commit, ms." % (a.processes, a.writes), "",
             "| load | synchronous | strategy | p50 | p99 | p99.9 | max | writes/s |", "|---|---|---|---|---|---|---|---|"]
    results = []
    for load in a.loads.split(","):
        for sync in a.syncs.split(","):
            for strategy in a.strategies.split(","):
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
        json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": {"nproc": os.cpu_count(), "kernel": platform.release()},
                   "results": results, "table": table}, fh, indent=2)
