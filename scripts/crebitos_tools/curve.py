#!/usr/bin/env python3
"""The saturation curve: scripts/loadtest at growing rate multipliers, one table, one picture.

    scripts/loadtest-curve --scales 1,2,4,6,8 [--ramp 30 --plateau 60] [--sync full]
                                [--out runs/curve-DATE] [-- extra scripts/loadtest options]

Each multiplier is a full scripts/loadtest run on a fresh stack (phases 1-2, then phase 3
at that multiple of 220/110/10 per second), kept in OUT/xN/. At the end OUT/curve.json,
OUT/curve.md (a Markdown table) and OUT/curve.png (p99 and payout against the multiplier,
with the stack's and k6's CPU). The curve stops early once a run pays less than
--stop-below (default USD 90,000): past the breaking point there is nothing more to learn.

Re-draw from finished runs without running anything: scripts/loadtest-curve --out DIR --replot.
"""
import argparse
import datetime
import glob
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def row(res, run_dir=None):
    s = res["score"]
    if not s.get("quiet") and run_dir:
        from . import score
        s["quiet"] = score.quiet_stats(score.read_records(os.path.join(run_dir, "records.log")),
                                       score.read_cpu(os.path.join(run_dir, "cpu.csv")))
    lat = s["latency_ms"]
    c = res.get("cpu") or {}
    k = res["k6"]
    return {
        "scale": res["profile"]["scale"],
        "sync": res["profile"]["sync"],
        "requests": s["requests"],
        "rps_plateau": s.get("rps_plateau"),
        "p50": lat.get("p50"), "p90": lat.get("p90"), "p99": lat.get("p99"),
        "p99_9": lat.get("p99_9"), "max": lat.get("max"),
        "ok_under_250ms_pct": s["ok_under_250ms_pct"],
        "quiet_seconds": (s.get("quiet") or {}).get("quiet_seconds"),
        "quiet_p99": ((s.get("quiet") or {}).get("latency_ms") or {}).get("p99"),
        "inconsistencies": s["inconsistencies"],
        "payout_usd": s["payout_usd"],
        "dropped": s["dropped_arrivals"],
        "stack_cpu_us_per_request": c.get("stack_cpu_us_per_request"),
        "stack_quota_used_pct": c.get("stack_quota_used_pct"),
        "nr_throttled": c.get("nr_throttled"),
        "throttled_s": c.get("throttled_s"),
        "k6_cpu_pct": round(100.0 * k["cpu_s"] / max(k["wall_s"], 1e-3), 1),
        "machine_busy_pct": res.get("machine_busy_pct"),
        "others_cpu_pct": None if res.get("others_cpu_s") is None
        else round(100.0 * res["others_cpu_s"] / max(k["wall_s"], 1e-3), 1),
        "audit": "clean" if (res.get("audit") or {}).get("ok") else "FAILED",
        "verdict": res.get("verdict"),
        "run_dir": res.get("run_dir"),
    }


def table(rows):
    head = ("| x | plateau req/s | p50 ms | p99 ms | p99.9 ms | max ms | quiet p99 ms (quiet s) | OK<250ms | payout USD | "
            "incons. | stack CPU µs/req | stack CPU % of 1.5 | throttled periods | k6 CPU % of a core | others' CPU % of a core | audit |")
    sep = "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"
    out = [head, sep]
    for r in rows:
        f = lambda v, fmt="%.2f": "-" if v is None else (fmt % v)
        out.append("| %g | %s | %s | %s | %s | %s | %s (%s) | %s%% | %s | %d | %s | %s | %s | %s | %s | %s |" % (
            r["scale"], f(r["rps_plateau"], "%.0f"), f(r["p50"]), f(r["p99"]), f(r["p99_9"]), f(r["max"], "%.1f"),
            f(r.get("quiet_p99")), f(r.get("quiet_seconds"), "%.0f"),
            f(r["ok_under_250ms_pct"], "%.2f"), "{:,.0f}".format(r["payout_usd"]), r["inconsistencies"],
            f(r["stack_cpu_us_per_request"], "%.0f"), f(r["stack_quota_used_pct"], "%.0f"),
            "-" if r["nr_throttled"] is None else r["nr_throttled"], f(r["k6_cpu_pct"], "%.0f"),
            f(r.get("others_cpu_pct"), "%.0f"), r["audit"]))
    return "\n".join(out) + "\n"


def draw(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["scale"] for r in rows]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True)
    for key, lab, st in (("p50", "p50", "o-"), ("p99", "p99", "s-"), ("p99_9", "p99.9", "^-"), ("max", "max", "x:")):
        a1.plot(xs, [r[key] for r in rows], st, label=lab)
    a1.set_yscale("log")
    a1.axhline(250, color="red", linestyle="--", linewidth=0.8)
    a1.text(0.01, 250, "250 ms SLA", color="red", fontsize=8, va="bottom", transform=a1.get_yaxis_transform())
    a1.axhline(1, color="gray", linestyle="--", linewidth=0.8)
    a1.set_ylabel("latency, ms (log)")
    a1.grid(alpha=0.3, which="both")
    a1b = a1.twinx()
    a1b.plot(xs, [r["payout_usd"] / 1000 for r in rows], "k--", linewidth=1, label="payout (k USD, right)")
    a1b.set_ylabel("payout, thousand USD")
    a1b.set_ylim(min(0, min(r["payout_usd"] / 1000 for r in rows)) - 5, 105)
    h1, l1 = a1.get_legend_handles_labels()
    h2, l2 = a1b.get_legend_handles_labels()
    a1.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    a2.plot(xs, [r["stack_quota_used_pct"] for r in rows], "o-", label="stack CPU, % of its 1.5 CPU quota")
    a2.plot(xs, [r["k6_cpu_pct"] for r in rows], "s-", label="k6 CPU, % of one core")
    a2.plot(xs, [r.get("others_cpu_pct") for r in rows], "^:", label="other programs (noise), % of one core")
    a2.set_ylabel("CPU %")
    a2.set_xlabel("rate multiplier (x1 = 220 debits + 110 credits + 10 statements per second)")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8, loc="upper left")
    a2b = a2.twinx()
    a2b.bar(xs, [r["stack_cpu_us_per_request"] or 0 for r in rows], width=0.3, alpha=0.25, color="purple")
    a2b.set_ylabel("stack CPU per request, µs (bars)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_compare(sets, path, title):
    """Several curves (label -> rows) on one picture: p99 and payout, then CPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    for (label, rows), col in zip(sets.items(), colors):
        xs = [r["scale"] for r in rows]
        a1.plot(xs, [r["p99"] for r in rows], "o-", color=col, label="%s p99" % label)
        a1.plot(xs, [r["p50"] for r in rows], "o:", color=col, alpha=0.6, label="%s p50" % label)
        a2.plot(xs, [r["payout_usd"] / 1000 for r in rows], "s-", color=col, label=label)
        a3.plot(xs, [r["stack_quota_used_pct"] for r in rows], "o-", color=col, label="%s: stack CPU, %% of its 1.5 CPU" % label)
        a3.plot(xs, [r["k6_cpu_pct"] for r in rows], "x--", color=col, alpha=0.6, label="%s: k6 CPU, %% of one core" % label)
        a3.plot(xs, [r.get("others_cpu_pct") for r in rows], "^:", color=col, alpha=0.5,
                label="%s: other programs (noise), %% of one core" % label)
    a1.set_yscale("log")
    a1.axhline(250, color="red", linestyle="--", linewidth=0.8)
    a1.text(0.01, 250, "250 ms SLA", color="red", fontsize=8, va="bottom", transform=a1.get_yaxis_transform())
    a1.set_ylabel("latency, ms (log)")
    a1.legend(fontsize=8, loc="lower right")
    a1.grid(alpha=0.3, which="both")
    a2.set_ylabel("payout, thousand USD")
    a2.set_ylim(0, 105)
    a2.legend(fontsize=8, loc="lower left")
    a2.grid(alpha=0.3)
    a3.set_ylabel("CPU %")
    a3.set_xlabel("rate multiplier (x1 = 220 debits + 110 credits + 10 statements per second)")
    a3.legend(fontsize=7, loc="upper left")
    a3.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def collect(out):
    rows = []
    for f in sorted(glob.glob(os.path.join(out, "x*", "result.json"))):
        with open(f) as fh:
            rows.append(row(json.load(fh), os.path.dirname(f)))
    rows.sort(key=lambda r: r["scale"])
    return rows


def finish(out, title):
    rows = collect(out)
    if not rows:
        raise SystemExit("no runs in %s" % out)
    with open(os.path.join(out, "curve.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    md = table(rows)
    with open(os.path.join(out, "curve.md"), "w") as fh:
        fh.write(md)
    try:
        draw(rows, os.path.join(out, "curve.png"), title)
    except ImportError:
        pass
    sys.stdout.write(md)


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="1,2,4,6,8")
    ap.add_argument("--ramp", type=float, default=30)
    ap.add_argument("--plateau", type=float, default=60)
    ap.add_argument("--sync", choices=["full", "normal"], default="full")
    ap.add_argument("--out")
    ap.add_argument("--stop-below", type=float, default=90000)
    ap.add_argument("--replot", action="store_true")
    ap.add_argument("--compare", nargs="+", metavar="LABEL=DIR",
                    help="draw OUT (a .png path) from finished curves, e.g. FULL=runs/c1 NORMAL=runs/c2")
    a = ap.parse_args(argv)
    if a.compare:
        sets = {}
        for item in a.compare:
            label, _, d = item.partition("=")
            sets[label] = collect(d)
        draw_compare(sets, a.out, "crébitos saturation curve (ramp %gs + plateau %gs per point)" % (a.ramp, a.plateau))
        print(a.out)
        return
    out = os.path.abspath(a.out or os.path.join(
        REPO, "runs", "curve-%s-%s" % (datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), a.sync)))
    title = "crébitos saturation: ramp %gs + plateau %gs per point, synchronous=%s" % (a.ramp, a.plateau, a.sync)
    if a.replot:
        return finish(out, title)
    os.makedirs(out, exist_ok=True)
    for sc in [float(x) for x in a.scales.split(",")]:
        d = os.path.join(out, "x%g" % sc)
        cmd = [os.path.join(REPO, "scripts", "loadtest"), "--scale", "%g" % sc, "--ramp", "%g" % a.ramp,
               "--plateau", "%g" % a.plateau, "--sync", a.sync, "--out", d, "--label", "x%g-%s" % (sc, a.sync)] + extra
        print("curve: %s" % " ".join(cmd), file=sys.stderr, flush=True)
        rc = subprocess.run(cmd, cwd=REPO).returncode
        try:
            with open(os.path.join(d, "result.json")) as fh:
                r = row(json.load(fh))
        except OSError:
            print("curve: x%g produced no result (exit %d); stopping" % (sc, rc), file=sys.stderr)
            break
        if r["payout_usd"] < a.stop_below:
            print("curve: x%g pays USD %.0f: past the breaking point, stopping" % (sc, r["payout_usd"]), file=sys.stderr)
            break
    finish(out, title)


if __name__ == "__main__":
    main()
