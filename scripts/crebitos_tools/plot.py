"""The load test's pictures (matplotlib, from .venv).

A run (`render`): responses per second by kind (debits, credits, statements, validations),
with the arrival rate the profile asks for; every response's latency as a faint dot, and per
second the median, p99 and max, on a log scale; the stack's, k6's and the machine's CPU.
A saturation curve (`draw_curves`): latency, payout and CPU against the rate multiplier,
one or several curves on one picture.
"""
from collections import defaultdict

from .score import percentile

RATES = {"d": 220, "c": 110, "e": 10}
NAMES = {"d": "debits", "c": "credits", "e": "statements", "v": "validations (phases 1-2)"}
COLORS = {"d": "#d62728", "c": "#2ca02c", "e": "#1f77b4", "v": "#7f7f7f"}


def render(records, out_png, title="", ramp=None, plateau=None, scale=1.0, subtitle="", cpu=None, quota=None):
    plt = _pyplot()
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
        _sla_line(ax2)
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _sla_line(ax):
    ax.axhline(250, color="red", linestyle="--", linewidth=0.8)
    ax.text(0.01, 250, "250 ms SLA", color="red", fontsize=8, va="bottom", transform=ax.get_yaxis_transform())


def draw_curves(sets, path, title):
    """Curves (label -> rows of report.figures, by rate multiplier) on one picture: latency,
    payout, then CPU. A single curve may have the label ""."""
    plt = _pyplot()
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    for (label, rows), col in zip(sets.items(), ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]):
        name = lambda what: ("%s: %s" % (label, what)) if label else what
        xs = [r["scale"] for r in rows]
        for key, what, style in (("p50", "p50", "o:"), ("p99", "p99", "o-"), ("p99_9", "p99.9", "^--")):
            a1.plot(xs, [r[key] for r in rows], style, color=col, label=name(what))
        a2.plot(xs, [r["payout_usd"] / 1000 for r in rows], "s-", color=col, label=name("payout"))
        a3.plot(xs, [r["stack_quota_used_pct"] for r in rows], "o-", color=col, label=name("stack CPU, % of its 1.5 CPU"))
        a3.plot(xs, [r["k6_cpu_pct"] for r in rows], "x--", color=col, alpha=0.6, label=name("k6 CPU, % of one core"))
        a3.plot(xs, [r["others_cpu_pct"] for r in rows], "^:", color=col, alpha=0.5,
                label=name("other programs (noise), % of one core"))
    a1.set_yscale("log")
    _sla_line(a1)
    a1.set_ylabel("latency, ms (log)")
    a1.grid(alpha=0.3, which="both")
    a2.set_ylabel("payout, thousand USD")
    a2.set_ylim(min([0] + [r["payout_usd"] / 1000 for rows in sets.values() for r in rows]) - 5, 105)
    a2.grid(alpha=0.3)
    a3.set_ylabel("CPU %")
    a3.set_xlabel("rate multiplier (x1 = 220 debits + 110 credits + 10 statements per second)")
    a3.grid(alpha=0.3)
    for ax in (a1, a2, a3):
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
