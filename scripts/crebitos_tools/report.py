"""What a finished load-test run says, in words and tables: the summary a run ends with,
the Markdown table comparing runs (`scripts/loadtest report`) and the saturation curve
(`scripts/loadtest curve`: runs at growing rate multipliers, one table, one picture).

Everything reads RUN_DIR/result.json as scripts/loadtest writes it; `figures` is the one
place its numbers are picked out and derived (per-core shares, the quiet seconds of runs
made before that statistic existed).
"""
import datetime
import glob
import json
import os
import subprocess
import sys

from . import REPO, SCRIPTS, loadtest_audit, plot, score


def fmt_ms(v):
    return "-" if v is None else ("%.2f" % v if v < 100 else "%.0f" % v)


def load_run(run_dir):
    with open(os.path.join(run_dir, "result.json")) as fh:
        res = json.load(fh)
    if not res["score"].get("quiet"):  # runs made before the quiet-seconds statistic
        res["score"]["quiet"] = score.quiet_stats(score.read_records(os.path.join(run_dir, "records.log")),
                                                  score.read_cpu(os.path.join(run_dir, "cpu.csv")))
    return res


def figures(res):
    """The numbers of one run that the tables and pictures show, flat."""
    s, c, k = res["score"], res.get("cpu") or {}, res["k6"]
    lat = s["latency_ms"]
    quiet = s.get("quiet") or {}
    per_core = lambda cpu_s: None if cpu_s is None else round(100.0 * cpu_s / max(k["wall_s"], 1e-3), 1)
    return {
        "scale": res["profile"]["scale"], "sync": res["profile"]["sync"], "requests": s["requests"],
        "rps_plateau": s.get("rps_plateau"), "rps_mean": s.get("rps_mean"),
        "p50": lat.get("p50"), "p90": lat.get("p90"), "p99": lat.get("p99"), "p99_9": lat.get("p99_9"),
        "max": lat.get("max"), "ok_under_250ms_pct": s["ok_under_250ms_pct"],
        "quiet_seconds": quiet.get("quiet_seconds"), "quiet_p99": (quiet.get("latency_ms") or {}).get("p99"),
        "inconsistencies": s["inconsistencies"], "payout_usd": s["payout_usd"], "dropped": s["dropped_arrivals"],
        "stack_cpu_us_per_request": c.get("stack_cpu_us_per_request"),
        "stack_quota_used_pct": c.get("stack_quota_used_pct"),
        "nr_throttled": c.get("nr_throttled"), "throttled_s": c.get("throttled_s"),
        "k6_cpu_pct": per_core(k["cpu_s"]), "irq_cpu_pct": per_core(res.get("irq_cpu_s")),
        "others_cpu_pct": per_core(res.get("others_cpu_s")),
        "audit": "clean" if (res.get("audit") or {}).get("ok") else "FAILED",
        "verdict": res.get("verdict"), "run_dir": res.get("run_dir"),
    }


def percentiles_ms(lat):
    return "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s ms" % tuple(
        fmt_ms(lat.get(p)) for p in ("p50", "p90", "p99", "p99_9", "max"))


# -- the summary a run ends with -----------------------------------------------------------
def summary_text(res):
    s, f, p = res["score"], figures(res), res["profile"]
    machine = res["machine"]
    lines = ["crébitos load test  %s" % res["label"],
             "  when      %s  (git %s)" % (res["started_at"], res["git"])]
    if res.get("binary"):
        b = res["binary"]
        lines.append("  server    %s, built %s, sha256 %s" % (os.path.relpath(b["path"], REPO), b["built_at"], b["sha256"]))
    lines += [
        "  machine   %d cores, %s, kernel %s" % (machine["nproc"], machine["cpu_model"], machine["kernel"]),
        "  profile   x%g rates (debits %g/s, credits %g/s, statements %g/s), ramp %ss + plateau %ss, sync=%s, %s" % (
            p["scale"], 220 * p["scale"], 110 * p["scale"], 10 * p["scale"], p["ramp_s"], p["plateau_s"],
            p["sync"], "fresh database" if p["fresh"] else "database kept"),
        "",
        "  requests  %d (%d validations, %d debits, %d credits, %d statements, %d dropped by k6)" % (
            s["requests"], s["by_kind"]["validations"], s["by_kind"]["debits"], s["by_kind"]["credits"],
            s["by_kind"]["statements"], s["dropped_arrivals"]),
        "  OK        %d OK, %d KO; OK under 250 ms: %.3f%%; debits refused (422): %d" % (
            s["ok"], s["ko"], s["ok_under_250ms_pct"], s["debits_refused_422"])]
    if s.get("validations"):
        lines.append("  phases 1-2 %d/%d validations passed" % (s["validations_ok"], s["validations"]))
    lines.append("  latency   %s (connection set-up included)" % percentiles_ms(s["latency_ms"]))
    lines.append("  rate      %.1f req/s mean over phase 3%s, peak %d in one second" % (
        f["rps_mean"] or 0, (", %.1f on the plateau" % f["rps_plateau"]) if f["rps_plateau"] else "",
        s.get("rps_peak_1s", 0)))
    q = s.get("quiet")
    if q and q.get("requests"):
        lines.append("  quiet     over the %.0f of %.0f s when other programs used < %.0f%% of a core (%d requests): %s" % (
            q["quiet_seconds"], q["seconds"], 100 * q["max_other_cores"], q["requests"], percentiles_ms(q["latency_ms"])))
    if s["ko_reasons"]:
        lines.append("  KO        %s" % ", ".join("%s: %d" % kv for kv in list(s["ko_reasons"].items())[:6]))
    if s["stricter_check_failures"]:
        lines.append("  stricter  %s (not scored)" % s["stricter_check_failures"])
    lines.append("  instances %s" % ", ".join("%s %d" % kv for kv in s["instances"].items()))
    c = res.get("cpu") or {}
    if c.get("stack_cpu_s") is not None:
        lines.append("  stack CPU %.2f s = %.1f µs per request (quota %s CPU; used %.0f%% of it on average); throttled %d of %d periods (%.2f s)" % (
            c["stack_cpu_s"], c["stack_cpu_us_per_request"], c.get("quota_cpus", "?"),
            c.get("stack_quota_used_pct") or 0, c["nr_throttled"], c["nr_periods"], c["throttled_s"]))
        for g, d in sorted((c.get("groups") or {}).items()):
            lines.append("     %-7s %.2f s CPU (user %.2f, system %.2f), throttled %d periods (%.2f s), cgroup memory peak %.1f MB" % (
                g, d["cpu_s"], d.get("user_s", 0), d.get("system_s", 0), d["nr_throttled"], d["throttled_s"],
                d.get("mem_peak_mb") or 0))
    else:
        lines.append("  stack CPU not measured (%s)" % c.get("why", "no cgroup found"))
    k = res["k6"]
    lines.append("  k6        %.2f s CPU (%.0f%% of one core over %.0f s), max RSS %.0f MB; machine busy %.0f%% of %d cores%s" % (
        k["cpu_s"], f["k6_cpu_pct"], k["wall_s"], k["max_rss_mb"], res.get("machine_busy_pct", 0), machine["nproc"],
        "" if f["others_cpu_pct"] is None else ", of which interrupts %.0f%% and other programs %.0f%% of one core (noise)" % (
            f["irq_cpu_pct"] or 0, f["others_cpu_pct"])))
    if res.get("processes"):
        lines.append("  peak RSS  %s" % ", ".join("%s %.1f MB" % (p["name"], p["peak_rss_mb"]) for p in res["processes"]))
    t = res.get("tcp")
    if t:
        lines.append("  tcp       %d connections accepted on this machine during the run, for %d requests%s" % (
            t.get("passive_opens", 0), s["responses"],
            "; listen queue overflowed %d times, %d segments retransmitted" % (
                t.get("listen_overflows", 0), t.get("retrans_segs", 0)) if t.get("listen_overflows") else ""))
    lines += ["", "  SCORE     payout USD {:,.2f}  (SLA fine USD {:,.2f}, inconsistency fines USD {:,.2f} for {} inconsistencies)".format(
        s["payout_usd"], s["fines_usd"]["sla"], s["fines_usd"]["inconsistencies"], s["inconsistencies"])]
    if res.get("audit"):
        lines.append("  " + loadtest_audit.format_report(res["audit"]).replace("\n", "\n  "))
    else:
        lines.append("  audit: skipped (%s)" % res.get("audit_skipped", "no database"))
    lines += ["  files     %s" % res["run_dir"], "", res["verdict_line"],
              "picture: %s" % res["png"] if res.get("png") else "picture: none (--no-plot, or the plot failed)"]
    return "\n".join(lines) + "\n"


# -- runs side by side -----------------------------------------------------------------------
def compare_table(runs):
    """One Markdown column per run (for docs/BENCHMARKS.md)."""
    columns = []
    for res in runs:
        s, f, c = res["score"], figures(res), res.get("cpu") or {}
        ql = (s.get("quiet") or {}).get("latency_ms") or {}
        groups = c.get("groups") or {}
        rss = {p["name"]: p["peak_rss_mb"] for p in res.get("processes") or []}
        pct = lambda v: "-" if v is None else "%.0f%%" % v
        columns.append([
            ("run", "%s (%s)" % (res["label"], res["started_at"])),
            ("synchronous", f["sync"]),
            ("requests (dropped by k6)", "%d (%d)" % (f["requests"], f["dropped"])),
            ("validations of phases 1-2", "%s/%s" % (s.get("validations_ok"), s.get("validations"))),
            ("OK and under 250 ms", "%.3f%%" % f["ok_under_250ms_pct"]),
            ("inconsistencies", str(f["inconsistencies"])),
            ("**payout**", "**USD {:,.2f}**".format(f["payout_usd"])),
            ("ledger audit", f["audit"]),
            ("p50 / p90 ms", "%s / %s" % (fmt_ms(f["p50"]), fmt_ms(f["p90"]))),
            ("p99 / p99.9 ms", "%s / %s" % (fmt_ms(f["p99"]), fmt_ms(f["p99_9"]))),
            ("max ms", fmt_ms(f["max"])),
            ("quiet seconds (others < 0.1 core)", "%s of %s s" % (f["quiet_seconds"], (s.get("quiet") or {}).get("seconds"))),
            ("quiet p50 / p99 / p99.9 / max ms", " / ".join(fmt_ms(ql.get(p)) for p in ("p50", "p99", "p99_9", "max"))),
            ("req/s on the plateau (mean over phase 3)", "%s (%s)" % (f["rps_plateau"], f["rps_mean"])),
            ("stack CPU per request", "%s µs" % f["stack_cpu_us_per_request"]),
            ("stack CPU: nginx / api01 / api02 s", " / ".join(
                "%.1f" % (groups.get(n) or {}).get("cpu_s", 0) for n in ("nginx", "api01", "api02"))),
            ("stack CPU, % of its 1.5 CPU quota", "%s%%" % f["stack_quota_used_pct"]),
            ("throttled periods (s)", "%s (%s)" % (f["nr_throttled"], f["throttled_s"])),
            ("k6 CPU, % of one core", pct(f["k6_cpu_pct"])),
            ("other programs' CPU (noise), % of one core", pct(f["others_cpu_pct"])),
            ("peak RSS api01 / api02 MB", "%s / %s" % (rss.get("api01"), rss.get("api02"))),
            ("peak RSS nginx master / worker MB", "%s / %s" % (rss.get("nginx(master)"), rss.get("nginx(worker)"))),
        ])
    lines = ["| | " + " | ".join(r["label"] for r in runs) + " |", "|---|" + "---|" * len(runs)]
    for i, (name, _) in enumerate(columns[0]):
        lines.append("| %s | %s |" % (name, " | ".join(col[i][1] for col in columns)))
    return "\n".join(lines) + "\n"


def report(run_dirs):
    sys.stdout.write(compare_table([load_run(d) for d in run_dirs]))


# -- the saturation curve --------------------------------------------------------------------
def curve_table(rows):
    head = ("| x | plateau req/s | p50 ms | p99 ms | p99.9 ms | max ms | quiet p99 ms (quiet s) | OK<250ms | payout USD | "
            "incons. | stack CPU µs/req | stack CPU % of 1.5 | throttled periods | k6 CPU % of a core | others' CPU % of a core | audit |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        f = lambda v, fmt="%.2f": "-" if v is None else (fmt % v)
        out.append("| %g | %s | %s | %s | %s | %s | %s (%s) | %s%% | %s | %d | %s | %s | %s | %s | %s | %s |" % (
            r["scale"], f(r["rps_plateau"], "%.0f"), f(r["p50"]), f(r["p99"]), f(r["p99_9"]), f(r["max"], "%.1f"),
            f(r["quiet_p99"]), f(r["quiet_seconds"], "%.0f"), f(r["ok_under_250ms_pct"]), "{:,.0f}".format(r["payout_usd"]),
            r["inconsistencies"], f(r["stack_cpu_us_per_request"], "%.0f"), f(r["stack_quota_used_pct"], "%.0f"),
            f(r["nr_throttled"], "%d"), f(r["k6_cpu_pct"], "%.0f"), f(r["others_cpu_pct"], "%.0f"), r["audit"]))
    return "\n".join(out) + "\n"


def curve_rows(out):
    rows = [figures(load_run(os.path.dirname(f))) for f in glob.glob(os.path.join(out, "x*", "result.json"))]
    return sorted(rows, key=lambda r: r["scale"])


def curve_title(a):
    return "crébitos saturation: ramp %gs + plateau %gs per point, synchronous=%s" % (a.ramp, a.plateau, a.sync)


def finish_curve(out, title):
    rows = curve_rows(out)
    if not rows:
        raise SystemExit("no runs in %s" % out)
    with open(os.path.join(out, "curve.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    md = curve_table(rows)
    with open(os.path.join(out, "curve.md"), "w") as fh:
        fh.write(md)
    plot.draw_curves({"": rows}, os.path.join(out, "curve.png"), title)
    sys.stdout.write(md + "picture: %s\n" % os.path.join(out, "curve.png"))


def curve(a):
    """Each multiplier a full scripts/loadtest run on a fresh stack, kept in OUT/xN/; stops at
    the first that pays less than --stop-below: past the breaking point there is nothing to learn."""
    if a.compare:
        sets = {label: curve_rows(d) for label, _, d in (item.partition("=") for item in a.compare)}
        plot.draw_curves(sets, a.out, curve_title(a))
        print(a.out)
        return
    out = os.path.abspath(a.out or os.path.join(
        REPO, "runs", "curve-%s-%s" % (datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), a.sync)))
    if not a.replot:
        os.makedirs(out, exist_ok=True)
        for x in [float(v) for v in a.scales.split(",")]:
            d = os.path.join(out, "x%g" % x)
            cmd = [os.path.join(SCRIPTS, "loadtest"), "--scale", "%g" % x, "--ramp", "%g" % a.ramp,
                   "--plateau", "%g" % a.plateau, "--sync", a.sync, "--out", d, "--label", "x%g-%s" % (x, a.sync)] + a.loadtest_args
            print("curve: %s" % " ".join(cmd), file=sys.stderr, flush=True)
            rc = subprocess.run(cmd, cwd=REPO).returncode
            if not os.path.exists(os.path.join(d, "result.json")):
                print("curve: x%g produced no result (exit %d); stopping" % (x, rc), file=sys.stderr)
                break
            payout = load_run(d)["score"]["payout_usd"]
            if payout < a.stop_below:
                print("curve: x%g pays USD %.0f: past the breaking point, stopping" % (x, payout), file=sys.stderr)
                break
    finish_curve(out, curve_title(a))
