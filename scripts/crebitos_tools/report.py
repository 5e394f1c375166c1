#!/usr/bin/env python3
"""Markdown tables from finished runs, for docs/BENCHMARKS.md.

    scripts/loadtest-report RUN_DIR [RUN_DIR ...]

One column per run: the score, the latency percentiles (all requests, and the quiet
seconds), the rate, the stack's CPU per request and throttling, k6's CPU, the noise
from other programs and each process's peak RSS.
"""
import json
import os
import sys


from . import score


def load(d):
    with open(os.path.join(d, "result.json")) as fh:
        res = json.load(fh)
    if not res["score"].get("quiet"):  # runs made before the quiet-seconds statistic
        res["score"]["quiet"] = score.quiet_stats(score.read_records(os.path.join(d, "records.log")),
                                                  score.read_cpu(os.path.join(d, "cpu.csv")))
    return res


def ms(v):
    return "-" if v is None else ("%.2f" % v if v < 100 else "%.0f" % v)


def rows(res):
    s = res["score"]
    lat = s["latency_ms"]
    q = (s.get("quiet") or {})
    ql = q.get("latency_ms") or {}
    c = res.get("cpu") or {}
    k = res["k6"]
    wall = max(k["wall_s"], 1e-3)
    procs = {p["name"]: p["peak_rss_mb"] for p in res.get("processes") or []}
    g = c.get("groups") or {}
    out = [
        ("run", "%s (%s)" % (res["label"], res["started_at"])),
        ("synchronous", res["profile"]["sync"]),
        ("requests (dropped by k6)", "%d (%d)" % (s["requests"], s["dropped_arrivals"])),
        ("validations of phases 1-2", "%s/%s" % (s.get("validations_ok"), s.get("validations"))),
        ("OK and under 250 ms", "%.3f%%" % s["ok_under_250ms_pct"]),
        ("inconsistencies", str(s["inconsistencies"])),
        ("**payout**", "**USD {:,.2f}**".format(s["payout_usd"])),
        ("ledger audit", "clean" if (res.get("audit") or {}).get("ok") else "FAILED"),
        ("p50 / p90 ms", "%s / %s" % (ms(lat.get("p50")), ms(lat.get("p90")))),
        ("p99 / p99.9 ms", "%s / %s" % (ms(lat.get("p99")), ms(lat.get("p99_9")))),
        ("max ms", ms(lat.get("max"))),
        ("quiet seconds (others < 0.1 core)", "%s of %s s" % (q.get("quiet_seconds"), q.get("seconds"))),
        ("quiet p50 / p99 / p99.9 / max ms", "%s / %s / %s / %s" % (
            ms(ql.get("p50")), ms(ql.get("p99")), ms(ql.get("p99_9")), ms(ql.get("max")))),
        ("req/s on the plateau (mean over phase 3)", "%s (%s)" % (s.get("rps_plateau"), s.get("rps_mean"))),
        ("stack CPU per request", "%s µs" % c.get("stack_cpu_us_per_request")),
        ("stack CPU: nginx / api01 / api02 s", " / ".join(
            "%.1f" % (g.get(n) or {}).get("cpu_s", 0) for n in ("nginx", "api01", "api02"))),
        ("stack CPU, % of its 1.5 CPU quota", "%s%%" % c.get("stack_quota_used_pct")),
        ("throttled periods (s)", "%s (%s)" % (c.get("nr_throttled"), c.get("throttled_s"))),
        ("k6 CPU, % of one core", "%.0f%%" % (100 * k["cpu_s"] / wall)),
        ("other programs' CPU (noise), % of one core", "-" if res.get("others_cpu_s") is None
         else "%.0f%%" % (100 * res["others_cpu_s"] / wall)),
        ("peak RSS api01 / api02 MB", "%s / %s" % (procs.get("api01"), procs.get("api02"))),
        ("peak RSS nginx master / worker MB", "%s / %s" % (procs.get("nginx(master)"), procs.get("nginx(worker)"))),
    ]
    return out


def main():
    runs = [load(d) for d in sys.argv[1:]]
    if not runs:
        raise SystemExit(__doc__)
    table = [rows(r) for r in runs]
    print("| | " + " | ".join(r["label"] for r in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for i, (name, _) in enumerate(table[0]):
        print("| %s | %s |" % (name, " | ".join(t[i][1] for t in table)))


if __name__ == "__main__":
    main()
