"""The load test's pictures (matplotlib, from .venv).

A run (`render`): responses per second by kind, with the arrival rate the profile asks for;
every response's latency as a faint dot and, per second, the median, p99 and max on a log
scale; the stack's, k6's and the machine's CPU. A saturation curve (`draw_curves`): latency,
payout and CPU against the rate multiplier, one or several curves on one picture.
"""
from collections import defaultdict

from .clients import RATES
from .score import percentile

KINDS = [("v", "validations (phases 1-2)", "#7f7f7f"), ("e", "statements", "#1f77b4"), ("c", "credits", "#2ca02c"),
         ("d", "debits", "#d62728")]


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def sla_line(ax):
    ax.axhline(250, color="red", linestyle="--", linewidth=0.8)
    ax.text(0.01, 250, "250 ms SLA", color="red", fontsize=8, va="bottom", transform=ax.get_yaxis_transform())


def save(fig, path, dpi):
    """Saved with a 256-colour palette: a third of the bytes, the same picture to the eye."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    try:
        from PIL import Image
        with Image.open(path) as im:
            pal = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        pal.save(path, optimize=True)
    except Exception:  # keep the full-colour file
        pass
    return path


def render(records, out_png, title="", ramp=None, plateau=None, scale=1.0, subtitle="", cpu=None, quota=None):
    if not records:
        raise SystemExit("no records to plot")
    t_start = min(r.t0 for r in records)
    sec = lambda t_ms: (t_ms - t_start) / 1000.0
    load = [r for r in records if r.phase != "v"]
    t_load = sec(min(r.t0 for r in load)) if load else 0.0
    cpu = [c for c in cpu or [] if c[1] is not None or c[2] is not None]
    heights = [1, 1.3, 0.6] if len(cpu) > 1 else [1, 1.3]
    fig, axes = pyplot().subplots(len(heights), 1, figsize=(12, 4 + 2 * len(heights)), sharex=True,
                                  gridspec_kw={"height_ratios": heights})
    ax1, ax2 = axes[:2]
    # Requests per second by kind, stacked, bucketed on when each request was sent.
    counts = defaultdict(lambda: defaultdict(int))
    for r in records:
        counts[r.phase][int(sec(r.t0))] += 1
    xs = list(range(int(max(sec(r.t0) for r in records)) + 2))
    bottom = [0] * len(xs)
    for k, name, color in KINDS:
        if k in counts:
            ys = [counts[k].get(x, 0) for x in xs]
            ax1.bar(xs, ys, width=1.0, bottom=bottom, color=color, label=name, align="edge", linewidth=0)
            bottom = [b + y for b, y in zip(bottom, ys)]
    if ramp is not None and plateau is not None:
        total = sum(RATES.values()) * scale
        ax1.plot([t_load, t_load + ramp, t_load + ramp + plateau], [3, total, total], color="black", linestyle="--",
                 linewidth=1, label="profile's arrival rate")
    ax1.set_ylabel("requests / s")
    # Latency: each response a dot, and per second p50 / p99 / max.
    per_sec = defaultdict(list)
    for k, _, color in KINDS:
        pts = [(sec(r.t0), max(r.rt, 0.01)) for r in records if r.phase == k]
        if pts:
            ax2.scatter(*zip(*pts), s=2, alpha=0.3, color=color, linewidths=0, rasterized=True)
    for r in records:
        per_sec[int(sec(r.t0))].append(r.rt)
    secs = sorted(per_sec)
    for p, style, lab, color in ((50, "-", "p50", "#000000"), (99, "-", "p99", "#ff7f0e"), (100, ":", "max", "#9467bd")):
        ax2.plot([s + 0.5 for s in secs], [percentile(sorted(per_sec[s]), p) for s in secs], style, linewidth=1.2,
                 label="%s per second" % lab, color=color)
    ax2.set_yscale("log")
    ax2.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
    ax2.text(0.0, 1.0, " 1 ms", color="gray", fontsize=8, va="bottom")
    if max(r.rt for r in records) > 100:
        sla_line(ax2)
    ax2.set_ylabel("latency, ms (log scale; dots = single requests)")
    if len(axes) > 2:
        # CPU between samples, in % of one core.
        ax3 = axes[2]
        rate = lambda a, b, i: float("nan") if a[i] is None or b[i] is None else 100 * (b[i] - a[i]) / ((b[0] - a[0]) / 1000.0)
        pairs = [(a, b) for a, b in zip(cpu, cpu[1:]) if b[0] > a[0]]
        xs = [sec((a[0] + b[0]) / 2.0) for a, b in pairs]
        for i, label, style in ((1, "stack (nginx + api01 + api02)", dict(color="#8c564b")),
                                (2, "k6 (load generator)", dict(color="#17becf")),
                                (3, "whole machine", dict(color="gray", linestyle=":"))):
            ax3.plot(xs, [rate(a, b, i) for a, b in pairs], label=label, **style)
        if quota:
            ax3.axhline(100 * quota, color="#8c564b", linestyle="--", linewidth=0.8)
            ax3.text(0.0, 100 * quota, " stack quota %.1f CPU" % quota, color="#8c564b", fontsize=8, va="bottom")
        ax3.set_ylabel("CPU, % of one core")
        ax3.set_ylim(bottom=0)
    axes[-1].set_xlabel("seconds since the start of the run")
    for ax in axes:
        ax.legend(loc="upper right" if ax is axes[-1] and len(axes) > 2 else "upper left", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        if load:
            ax.axvline(t_load, color="black", linewidth=0.6)
            if ramp:
                ax.axvline(t_load + ramp, color="black", linewidth=0.6, linestyle=":")
    fig.suptitle(title, fontsize=12)
    if subtitle:
        ax1.set_title(subtitle, fontsize=9)
    return save(fig, out_png, 110)


def draw_curves(sets, path, title):
    """Curves (label -> rows of report.figures, by rate multiplier) on one picture: latency,
    payout, then CPU. A single curve may have the label ""."""
    fig, (a1, a2, a3) = pyplot().subplots(3, 1, figsize=(9, 10), sharex=True)
    for (label, rows), col in zip(sets.items(), ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]):
        xs = [r["scale"] for r in rows]
        for ax, key, what, style, extra in (
                (a1, "p50", "p50", "o:", {}), (a1, "p99", "p99", "o-", {}), (a1, "p99_9", "p99.9", "^--", {}),
                (a2, "payout_usd", "payout", "s-", {}), (a3, "stack_quota_used_pct", "stack CPU, % of its 1.5 CPU", "o-", {}),
                (a3, "k6_cpu_pct", "k6 CPU, % of one core", "x--", dict(alpha=0.6)),
                (a3, "others_cpu_pct", "other programs (noise), % of one core", "^:", dict(alpha=0.5))):
            ys = [r[key] / 1000 if key == "payout_usd" else r[key] for r in rows]
            ax.plot(xs, ys, style, color=col, label="%s: %s" % (label, what) if label else what, **extra)
    a1.set_yscale("log")
    sla_line(a1)
    a1.set_ylabel("latency, ms (log)")
    a2.set_ylabel("payout, thousand USD")
    a2.set_ylim(min([0] + [r["payout_usd"] / 1000 for rows in sets.values() for r in rows]) - 5, 105)
    a3.set_ylabel("CPU %")
    a3.set_xlabel("rate multiplier (x1 = %d debits + %d credits + %d statements per second)" % (RATES["d"], RATES["c"], RATES["e"]))
    for ax in (a1, a2, a3):
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=11)
    return save(fig, path, 100)
