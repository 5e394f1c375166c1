"""What finished load-test runs say, in words and tables: the summary a run ends with, the
Markdown table comparing runs (`scripts/loadtest report`) and the saturation curve
(`scripts/loadtest curve`: runs at growing rate multipliers, one table, one picture).
All of it reads RUN_DIR/result.json; `figures` is the one place its numbers are picked out.
"""
import datetime
import glob
import json
import os
import subprocess
import sys

from . import REPO, SCRIPTS, instancetimes, kernelwaits, loadtest_audit, plot
from .clients import RATES

PERCENTILES = ("p50", "p90", "p99", "p99_9", "max")
STOP_BELOW_USD = 90000  # a curve stops after a run that pays less


def fmt_ms(v):
    return "-" if v is None else ("%.2f" % v if v < 100 else "%.0f" % v)


def cell(v, fmt="%.2f"):
    return "-" if v is None else fmt % v


def percentiles_ms(lat, names=PERCENTILES):
    return "  ".join("%s %s" % (p.replace("_", "."), fmt_ms(lat.get(p))) for p in names) + " ms"


def percentiles_us(lat, names=("p50", "p99", "max")):
    return "  ".join("%s %s" % (p.replace("_", "."), cell(lat.get(p), "%.0f")) for p in names) + " us"


def wake_probe_line(wake):
    return "  wake-ups  %d round trips through a pipe to a sleeping process (two wake-ups each): %s%s" % (
        wake["count"], percentiles_us(wake), "; broke off: %s" % wake["error"] if wake.get("error") else "")


def load_run(run_dir):
    with open(os.path.join(run_dir, "result.json")) as fh:
        return json.load(fh)


def figures(res):
    """The numbers of one run that the tables and pictures show, flat."""
    s, c, k, quiet = res["score"], res.get("cpu") or {}, res["k6"], res["score"].get("quiet") or {}
    per_core = lambda cpu_s: None if cpu_s is None else round(100.0 * cpu_s / max(k["wall_s"], 1e-3), 1)
    f = {key: s.get(key) for key in ("requests", "rps_plateau", "rps_mean", "ok_under_250ms_pct", "inconsistencies",
                                      "payout_usd", "validations", "validations_ok")}
    f.update({p: s["latency_ms"].get(p) for p in PERCENTILES})
    f.update({key: c.get(key) for key in ("stack_cpu_us_per_request", "stack_quota_used_pct", "nr_throttled", "throttled_s")})
    f.update(label=res["label"], started_at=res["started_at"], scale=res["profile"]["scale"], sync=res["profile"]["sync"],
             dropped=s["dropped_arrivals"], quiet_seconds=quiet.get("quiet_seconds"), seconds=quiet.get("seconds"),
             quiet=quiet.get("latency_ms") or {}, quiet_p99=(quiet.get("latency_ms") or {}).get("p99"),
             k6_cpu_pct=per_core(k["cpu_s"]), irq_cpu_pct=per_core(res.get("irq_cpu_s")),
             others_cpu_pct=per_core(res.get("others_cpu_s")),
             group_cpu_s={n: (c.get("groups") or {}).get(n, {}).get("cpu_s", 0) for n in ("nginx", "api01", "api02")},
             rss={p["name"]: p["peak_rss_mb"] for p in res.get("processes") or []},
             audit="clean" if (res.get("audit") or {}).get("ok") else "FAILED", verdict=res.get("verdict"),
             run_dir=res.get("run_dir"), disk=res.get("disk_probe") or {}, wake=res.get("wake_probe") or {},
             statements=(s.get("latency_ms_by_kind") or {}).get("statements") or {},
             inside=instancetimes.from_json(res.get("instance_times") or {}))
    return f


def summary_text(res):
    s, f, p, m, c, k = res["score"], figures(res), res["profile"], res["machine"], res.get("cpu") or {}, res["k6"]
    kinds, q, b, t = s["by_kind"], s.get("quiet") or {}, res.get("binary"), res.get("tcp")
    lines = ["crébitos load test  %s" % res["label"], "  when      %s  (git %s)" % (res["started_at"], res["git"])]
    if b:
        lines.append("  server    %s, built %s, sha256 %s" % (os.path.relpath(b["path"], REPO), b["built_at"], b["sha256"]))
    lines += [
        "  machine   %d cores, %s, kernel %s" % (m["nproc"], m["cpu_model"], m["kernel"]),
        "  profile   x%g rates (debits %g/s, credits %g/s, statements %g/s), ramp %ss + plateau %ss, sync=%s, %s" % (
            p["scale"], RATES["d"] * p["scale"], RATES["c"] * p["scale"], RATES["e"] * p["scale"], p["ramp_s"], p["plateau_s"], p["sync"],
            "fresh database" if p["fresh"] else "database kept"), "",
        "  requests  %d (%d validations, %d debits, %d credits, %d statements, %s dropped by k6)" % (
            s["requests"], kinds["validations"], kinds["debits"], kinds["credits"], kinds["statements"],
            "unknown (no k6 summary)" if s["dropped_arrivals"] is None else s["dropped_arrivals"]),
        "  OK        %d OK, %d KO; OK under 250 ms: %.3f%%; debits refused (422): %d" % (
            s["ok"], s["ko"], s["ok_under_250ms_pct"], s["debits_refused_422"])]
    if s.get("validations"):
        lines.append("  phases 1-2 %d/%d validations passed" % (s["validations_ok"], s["validations"]))
    lines.append("  latency   %s (connection set-up included)" % percentiles_ms(s["latency_ms"]))
    for kind in ("debits", "credits", "statements"):
        by_kind = (s.get("latency_ms_by_kind") or {}).get(kind)
        if by_kind and by_kind.get("count"):
            lines.append("     %-10s %s" % (kind, percentiles_ms(by_kind)))
    disk = res.get("disk_probe")
    if disk and disk.get("count"):
        lines.append("  disk      %d syncs of a 4 KB append in %s over the same seconds: %s; %d over 50 ms" % (
            disk["count"], disk["directory"], percentiles_ms(disk), disk.get("over_50_ms", 0)))
    if (res.get("wake_probe") or {}).get("count"):
        lines.append(wake_probe_line(res["wake_probe"]))
    if res.get("instance_times"):
        lines.append("  inside    the instances' /metrics: parsed request to written answer, and from nginx's stamp to the parsed request: %s" % (
            instancetimes.headline(instancetimes.from_json(res["instance_times"]))))
    if res.get("kernel_waits"):
        lines.append("  waits     in the kernel (D state): %s; RUN_DIR/kernel-waits.txt" % kernelwaits.headline(res["kernel_waits"]))
    lines += [
              "  rate      %.1f req/s mean over phase 3%s, peak %d in one second" % (
                  f["rps_mean"] or 0, ", %.1f on the plateau" % f["rps_plateau"] if f["rps_plateau"] else "", s.get("rps_peak_1s", 0))]
    if q.get("requests"):
        lines.append("  quiet     over the %.0f of %.0f s when other programs used < %.0f%% of a core (%d requests): %s" % (
            q["quiet_seconds"], q["seconds"], 100 * q["max_other_cores"], q["requests"], percentiles_ms(q["latency_ms"])))
    if s["ko_reasons"]:
        lines.append("  KO        %s" % ", ".join("%s: %d" % kv for kv in list(s["ko_reasons"].items())[:6]))
    if s["stricter_check_failures"]:
        lines.append("  stricter  %s (not scored)" % s["stricter_check_failures"])
    lines.append("  instances %s" % ", ".join("%s %d" % kv for kv in s["instances"].items()))
    if c.get("stack_cpu_s") is None:
        lines.append("  stack CPU not measured (%s)" % c.get("why", "no cgroup found"))
    else:
        lines.append("  stack CPU %.2f s = %.1f µs per request (quota %s CPU; used %.0f%% of it on average); throttled %d of %d periods (%.2f s)" % (
            c["stack_cpu_s"], c["stack_cpu_us_per_request"], c.get("quota_cpus", "?"), c.get("stack_quota_used_pct") or 0,
            c["nr_throttled"], c["nr_periods"], c["throttled_s"]))
        lines += ["     %-7s %.2f s CPU (user %.2f, system %.2f), throttled %d periods (%.2f s), cgroup memory peak %.1f MB" % (
            g, d["cpu_s"], d.get("user_s", 0), d.get("system_s", 0), d["nr_throttled"], d["throttled_s"], d.get("mem_peak_mb") or 0)
            for g, d in sorted((c.get("groups") or {}).items())]
    lines.append("  k6        %.2f s CPU (%.0f%% of one core over %.0f s), max RSS %.0f MB; machine busy %.0f%% of %d cores%s" % (
        k["cpu_s"], f["k6_cpu_pct"], k["wall_s"], k["max_rss_mb"], res.get("machine_busy_pct", 0), m["nproc"],
        "" if f["others_cpu_pct"] is None else ", of which interrupts %.0f%% and other programs %.0f%% of one core (noise)" % (
            f["irq_cpu_pct"] or 0, f["others_cpu_pct"])))
    if res.get("processes"):
        lines.append("  peak RSS  %s" % ", ".join("%s %.1f MB" % kv for kv in f["rss"].items()))
    if t:
        lines.append("  tcp       %d connections accepted on this machine during the run, for %d requests%s" % (
            t.get("passive_opens", 0), s["responses"], "; listen queue overflowed %d times, %d segments retransmitted" % (
                t["listen_overflows"], t.get("retrans_segs", 0)) if t.get("listen_overflows") else ""))
    lines += ["", "  SCORE     payout USD {:,.2f}  (SLA fine USD {:,.2f}, inconsistency fines USD {:,.2f} for {} inconsistencies)".format(
        s["payout_usd"], s["fines_usd"]["sla"], s["fines_usd"]["inconsistencies"], s["inconsistencies"]),
        "  " + loadtest_audit.format_report(res["audit"]).replace("\n", "\n  ") if res.get("audit")
        else "  audit: skipped (%s)" % res.get("audit_skipped", "no database"),
        "  files     %s" % res["run_dir"], "", res["verdict_line"],
        "picture: %s" % res["png"] if res.get("png") else "picture: none (the plot failed)"]
    return "\n".join(lines) + "\n"


# (name, figures -> text): the rows of `report` (one column per run), then the columns of the curve.
COMPARE = [
    ("run", lambda f: "%s (%s)" % (f["label"], f["started_at"])), ("synchronous", lambda f: f["sync"]),
    ("requests (dropped by k6)", lambda f: "%d (%s)" % (f["requests"], "?" if f["dropped"] is None else f["dropped"])),
    ("validations of phases 1-2", lambda f: "%s/%s" % (f["validations_ok"], f["validations"])),
    ("OK and under 250 ms", lambda f: "%.3f%%" % f["ok_under_250ms_pct"]),
    ("inconsistencies", lambda f: str(f["inconsistencies"])), ("**payout**", lambda f: "**USD {:,.2f}**".format(f["payout_usd"])),
    ("ledger audit", lambda f: f["audit"]), ("p50 / p90 ms", lambda f: "%s / %s" % (fmt_ms(f["p50"]), fmt_ms(f["p90"]))),
    ("p99 / p99.9 ms", lambda f: "%s / %s" % (fmt_ms(f["p99"]), fmt_ms(f["p99_9"]))), ("max ms", lambda f: fmt_ms(f["max"])),
    ("statements (GET) p99 / max ms", lambda f: "%s / %s" % (fmt_ms(f["statements"].get("p99")), fmt_ms(f["statements"].get("max")))),
    ("statements inside the instances: p99 / max", lambda f: "%s / %s" % tuple(
        instancetimes.fmt_bound((f["inside"].get("statements") or {}).get(k)) for k in ("p99_le_ms", "max_le_ms"))),
    ("statements from nginx's stamp to the instances: p99 / max", lambda f: "%s / %s" % tuple(
        instancetimes.fmt_bound(((f["inside"].get("statements") or {}).get("from_nginx") or {}).get(k))
        for k in ("p99_le_ms", "max_le_ms"))),
    ("disk probe: sync p99 / p99.9 / max ms (over 50 ms)", lambda f: "%s / %s / %s (%s)" % (
        fmt_ms(f["disk"].get("p99")), fmt_ms(f["disk"].get("p99_9")), fmt_ms(f["disk"].get("max")), f["disk"].get("over_50_ms", "-"))),
    ("wake probe: a round trip's p50 / p99 µs (two wake-ups)", lambda f: "%s / %s" % (
        cell(f["wake"].get("p50"), "%.0f"), cell(f["wake"].get("p99"), "%.0f"))),
    ("quiet seconds (others < 0.1 core)", lambda f: "%s of %s s" % (f["quiet_seconds"], f["seconds"])),
    ("quiet p50 / p99 / p99.9 / max ms", lambda f: " / ".join(fmt_ms(f["quiet"].get(p)) for p in ("p50", "p99", "p99_9", "max"))),
    ("req/s on the plateau (mean over phase 3)", lambda f: "%s (%s)" % (f["rps_plateau"], f["rps_mean"])),
    ("stack CPU per request", lambda f: "%s µs" % f["stack_cpu_us_per_request"]),
    ("stack CPU: nginx / api01 / api02 s", lambda f: " / ".join("%.1f" % v for v in f["group_cpu_s"].values())),
    ("stack CPU, % of its 1.5 CPU quota", lambda f: "%s%%" % f["stack_quota_used_pct"]),
    ("throttled periods (s)", lambda f: "%s (%s)" % (f["nr_throttled"], f["throttled_s"])),
    ("k6 CPU, % of one core", lambda f: cell(f["k6_cpu_pct"], "%.0f%%")),
    ("other programs' CPU (noise), % of one core", lambda f: cell(f["others_cpu_pct"], "%.0f%%")),
    ("peak RSS api01 / api02 MB", lambda f: "%s / %s" % (f["rss"].get("api01"), f["rss"].get("api02"))),
    ("peak RSS nginx master / worker MB", lambda f: "%s / %s" % (f["rss"].get("nginx(master)"), f["rss"].get("nginx(worker)")))]
CURVE = [
    ("x", lambda f: "%g" % f["scale"]), ("plateau req/s", lambda f: cell(f["rps_plateau"], "%.0f"))] + [
    ("%s ms" % p.replace("_", "."), lambda f, p=p: cell(f[p], "%.1f" if p == "max" else "%.2f")) for p in ("p50", "p99", "p99_9", "max")] + [
    ("quiet p99 ms (quiet s)", lambda f: "%s (%s)" % (cell(f["quiet_p99"]), cell(f["quiet_seconds"], "%.0f"))),
    ("OK<250ms", lambda f: cell(f["ok_under_250ms_pct"]) + "%"), ("payout USD", lambda f: "{:,.0f}".format(f["payout_usd"])),
    ("incons.", lambda f: str(f["inconsistencies"])), ("stack CPU µs/req", lambda f: cell(f["stack_cpu_us_per_request"], "%.0f")),
    ("stack CPU % of 1.5", lambda f: cell(f["stack_quota_used_pct"], "%.0f")), ("throttled periods", lambda f: cell(f["nr_throttled"], "%d")),
    ("k6 CPU % of a core", lambda f: cell(f["k6_cpu_pct"], "%.0f")),
    ("others' CPU % of a core", lambda f: cell(f["others_cpu_pct"], "%.0f")), ("audit", lambda f: f["audit"])]


def markdown(rows, spec, column_per_run):
    """A Markdown table of figures rows: one column per run (`report`) or one row per run (the curve)."""
    if column_per_run:
        table = [[""] + [f["label"] for f in rows]] + [[name] + [text(f) for f in rows] for name, text in spec]
    else:
        table = [[name for name, _ in spec]] + [[text(f) for _, text in spec] for f in rows]
    table.insert(1, ["---"] * len(table[0]))
    return "".join("| %s |\n" % " | ".join(r) for r in table)


def report(run_dirs):
    sys.stdout.write(markdown([figures(load_run(d)) for d in run_dirs], COMPARE, True))


def curve_rows(out):
    return sorted((figures(load_run(os.path.dirname(f))) for f in glob.glob(os.path.join(out, "x*", "result.json"))),
                  key=lambda f: f["scale"])


def curve(a):
    """Each multiplier a full scripts/loadtest run on a fresh stack, kept in OUT/xN/; stops at
    the first that pays less than USD 90,000: past the breaking point there is nothing to learn."""
    title = "crébitos saturation: ramp %gs + plateau %gs per point, synchronous=%s" % (a.ramp, a.plateau, a.sync)
    if a.compare:
        plot.draw_curves({label: curve_rows(d) for label, _, d in (item.partition("=") for item in a.compare)}, a.out, title)
        return print(a.out)
    out = os.path.abspath(a.out or os.path.join(REPO, "runs", "curve-%s-%s" % (datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), a.sync)))
    for x in [] if a.replot else [float(v) for v in a.scales.split(",")]:
        d = os.path.join(out, "x%g" % x)
        cmd = [os.path.join(SCRIPTS, "loadtest"), "--scale", "%g" % x, "--ramp", "%g" % a.ramp, "--plateau", "%g" % a.plateau,
               "--sync", a.sync, "--out", d, "--label", "x%g-%s" % (x, a.sync)] + a.loadtest_args
        print("curve: %s" % " ".join(cmd), file=sys.stderr, flush=True)
        rc = subprocess.run(cmd, cwd=REPO).returncode
        if not os.path.exists(os.path.join(d, "result.json")):
            print("curve: x%g produced no result (exit %d); stopping" % (x, rc), file=sys.stderr)
            break
        payout = load_run(d)["score"]["payout_usd"]
        if payout < STOP_BELOW_USD:
            print("curve: x%g pays USD %.0f: past the breaking point, stopping" % (x, payout), file=sys.stderr)
            break
    rows = curve_rows(out)
    if not rows:
        raise SystemExit("no runs in %s" % out)
    with open(os.path.join(out, "curve.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    md = markdown(rows, CURVE, False)
    with open(os.path.join(out, "curve.md"), "w") as fh:
        fh.write(md)
    plot.draw_curves({"": rows}, os.path.join(out, "curve.png"), title)
    sys.stdout.write(md + "picture: %s\n" % os.path.join(out, "curve.png"))
