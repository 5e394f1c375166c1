#!/usr/bin/env python3
"""One picture of a load-test run: requests per second and latency over time.

Top: responses per second, by kind (debits, credits, statements, validations), with the
arrival rate the profile asks for. Bottom: every response's latency as a faint dot,
and per second the median, p99 and max, on a log scale.

    plot.py RUN_DIR  (reads RUN_DIR/records.log and RUN_DIR/result.json, writes RUN_DIR/run.png)
    plot.py RECORDS OUT.png [--title TEXT] [--ramp S --plateau S --scale X]
"""
import argparse
import json
import os
from collections import defaultdict

from .score import percentile, read_cpu, read_records

RATES = {"d": 220, "c": 110, "e": 10}
NAMES = {"d": "debits", "c": "credits", "e": "statements", "v": "validations (phases 1-2)"}
COLORS = {"d": "#d62728", "c": "#2ca02c", "e": "#1f77b4", "v": "#7f7f7f"}


def render(records, out_png, title="", ramp=None, plateau=None, scale=1.0, subtitle="", cpu=None, quota=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        raise SystemExit("no records to plot")
    t_start = min(r.t0 for r in records)
    load = [r for r in records if r.phase != "v"]
    t_load = (min(r.t0 for r in load) - t_start) / 1000.0 if load else 0.0

    cpu = [c for c in (cpu or []) if c[1] is not None or c[2] is not None]
    if len(cpu) > 1:
        fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(12, 10), sharex=True,
                                            gridspec_kw={"height_ratios": [1, 1.3, 0.6]})
    else:
        ax3 = None
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 8), sharex=True,
                                       gridspec_kw={"height_ratios": [1, 1.3]})
    # Requests per second, by kind (bucketed on when each request was sent).
    width = 1.0
    counts = defaultdict(lambda: defaultdict(int))
    for r in records:
        counts[r.phase][int((r.t0 - t_start) / 1000.0 // width)] += 1
    last = int(max((r.t0 - t_start) / 1000.0 for r in records)) + 1
    xs = list(range(last + 1))
    bottom = [0] * len(xs)
    for k in ("v", "e", "c", "d"):
        if k not in counts:
            continue
        ys = [counts[k].get(x, 0) for x in xs]
        ax1.bar(xs, ys, width=1.0, bottom=bottom, color=COLORS[k], label=NAMES[k], align="edge", linewidth=0)
        bottom = [b + y for b, y in zip(bottom, ys)]
    if ramp is not None and plateau is not None:
        total = sum(RATES.values()) * scale
        px = [t_load, t_load + ramp, t_load + ramp + plateau]
        py = [3, total, total]
        ax1.plot(px, py, color="black", linestyle="--", linewidth=1, label="profile's arrival rate")
    ax1.set_ylabel("requests / s")
    ax1.legend(loc="upper left", fontsize=8)
    ax1.grid(alpha=0.3)

    # Latency: each response, and per-second p50 / p99 / max.
    for k in ("d", "c", "e", "v"):
        pts = [((r.t0 - t_start) / 1000.0, max(r.rt, 0.01)) for r in records if r.phase == k]
        if pts:
            ax2.scatter([p[0] for p in pts], [p[1] for p in pts], s=2, alpha=0.3, color=COLORS[k],
                        linewidths=0, rasterized=True)
    per_sec = defaultdict(list)
    for r in records:
        per_sec[int((r.t0 - t_start) / 1000.0)].append(r.rt)
    secs = sorted(per_sec)
    for p, style, lab in ((50, "-", "p50"), (99, "-", "p99"), (100, ":", "max")):
        ys = [percentile(sorted(per_sec[s]), p) for s in secs]
        ax2.plot([s + 0.5 for s in secs], ys, style, linewidth=1.2, label="%s per second" % lab,
                 color={50: "#000000", 99: "#ff7f0e", 100: "#9467bd"}[p])
    ax2.set_yscale("log")
    ax2.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
    ax2.text(0.0, 1.0, " 1 ms", color="gray", fontsize=8, va="bottom")
    ymax = max(r.rt for r in records)
    if ymax > 100:
        ax2.axhline(250.0, color="red", linewidth=0.8, linestyle="--")
        ax2.text(0.0, 250.0, " 250 ms (SLA)", color="red", fontsize=8, va="bottom")
    ax2.set_ylabel("latency, ms (log scale; dots = single requests)")
    ax2.legend(loc="upper left", fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    axes = [ax1, ax2]
    if ax3 is not None:
        # CPU use between samples, in % of one core.
        xs, stack, k6, mach = [], [], [], []
        for a, b in zip(cpu, cpu[1:]):
            dt = (b[0] - a[0]) / 1000.0
            if dt <= 0:
                continue
            xs.append(((a[0] + b[0]) / 2.0 - t_start) / 1000.0)
            stack.append(100 * (b[1] - a[1]) / dt if a[1] is not None and b[1] is not None else None)
            k6.append(100 * (b[2] - a[2]) / dt if a[2] is not None and b[2] is not None else None)
            mach.append(100 * (b[3] - a[3]) / dt)
        ax3.plot(xs, [v if v is not None else float("nan") for v in stack], color="#8c564b",
                 label="stack (nginx + api01 + api02)")
        ax3.plot(xs, [v if v is not None else float("nan") for v in k6], color="#17becf", label="k6 (load generator)")
        ax3.plot(xs, mach, color="gray", linestyle=":", label="whole machine")
        if quota:
            ax3.axhline(100 * quota, color="#8c564b", linestyle="--", linewidth=0.8)
            ax3.text(0.0, 100 * quota, " stack quota %.1f CPU" % quota, color="#8c564b", fontsize=8, va="bottom")
        ax3.set_ylabel("CPU, % of one core")
        ax3.set_ylim(bottom=0)
        ax3.legend(loc="upper right", fontsize=8)
        ax3.grid(alpha=0.3)
        axes.append(ax3)
    axes[-1].set_xlabel("seconds since the start of the run")
    for ax in axes:
        if load:
            ax.axvline(t_load, color="black", linewidth=0.6)
        if ramp and load:
            ax.axvline(t_load + ramp, color="black", linewidth=0.6, linestyle=":")
    fig.suptitle(title, fontsize=12)
    if subtitle:
        ax1.set_title(subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    _shrink(out_png)
    return out_png


def _shrink(path):
    """A 256-colour palette: a third of the bytes, the same picture to the eye."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            pal = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        pal.save(path, optimize=True)
    except Exception:  # keep the full-colour file
        pass


def render_run(run_dir):
    with open(os.path.join(run_dir, "result.json")) as fh:
        res = json.load(fh)
    recs = read_records(os.path.join(run_dir, "records.log"))
    prof = res.get("profile", {})
    s = res.get("score", {})
    lat = s.get("latency_ms", {})
    title = "crébitos load test: %s" % res.get("label", os.path.basename(run_dir.rstrip("/")))
    ms = lambda v: "-" if v is None else ("%.2f" % v if v < 100 else "%.0f" % v)
    sub = ("payout USD %s | OK<250ms %.2f%% | inconsistencies %s | p50 %s p99 %s p99.9 %s max %s ms | audit %s"
           % ("{:,.2f}".format(s.get("payout_usd", 0)), s.get("ok_under_250ms_pct", 0),
              s.get("inconsistencies"), ms(lat.get("p50")), ms(lat.get("p99")), ms(lat.get("p99_9")), ms(lat.get("max")),
              "clean" if res.get("audit", {}).get("ok") else "FAILED/skipped"))
    cpu = read_cpu(os.path.join(run_dir, "cpu.csv"))
    quota = (res.get("cpu") or {}).get("quota_cpus")
    return render(recs, os.path.join(run_dir, "run.png"), title, prof.get("ramp_s"), prof.get("plateau_s"),
                  prof.get("scale", 1.0), sub, cpu, quota)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="a run directory, or a records file")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--title", default="")
    ap.add_argument("--ramp", type=float)
    ap.add_argument("--plateau", type=float)
    ap.add_argument("--scale", type=float, default=1.0)
    a = ap.parse_args()
    if os.path.isdir(a.src):
        print(render_run(a.src))
    else:
        print(render(read_records(a.src), a.out or "run.png", a.title, a.ramp, a.plateau, a.scale))


if __name__ == "__main__":
    main()
