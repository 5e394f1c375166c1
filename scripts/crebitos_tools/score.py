"""The contest's score of one load-test run, from crebitos.js's record lines.

docs/API.md, "Scoring": the share of responses that are OK (expected status, every check
passed) *and* faster than 250 ms must be at least 98%, each percentage point below costs
USD 1,000; each inconsistent balance seen costs USD 803.01; the payout is USD 100,000 minus
the fines. Arrivals k6 could not start (`dropped_iterations`: no free virtual user) are
requests Gatling's open model would have sent: they count as failed.
"""
import bisect
import json
import math
from collections import Counter

SLA_MS, SLA_SHARE, SLA_FINE_PER_POINT, INCONSISTENCY_FINE, PAYOUT = 250.0, 98.0, 1000.0, 803.01, 100000.0
KINDS = {"v": "validations", "d": "debits", "c": "credits", "e": "statements"}


def int_or(text, otherwise=None):
    return int(text) if text.lstrip("-").isdigit() else otherwise


class Record:
    """One request as crebitos.js saw it (its header gives the line format)."""
    __slots__ = ("phase", "t0", "rt", "status", "ok", "inc", "cliente", "tipo", "valor", "descricao", "saldo",
                 "instance", "reason")

    @classmethod
    def parse(cls, line):
        f = line.rstrip("\n").split("|")
        if len(f) < 14 or f[0] != "R":
            return None
        r = cls()
        r.phase, r.t0, r.rt, r.status, r.ok, r.inc = f[1], int(f[2]), float(f[3]), int(f[4]), f[5] == "1", f[6] == "1"
        r.cliente, r.tipo, r.valor, r.descricao, r.saldo, r.instance = int_or(f[7]), f[8], int_or(f[9], f[9]), f[10], int_or(f[11]), f[12]
        r.reason = "|".join(f[13:])  # a reason has no '|'; whatever follows is kept all the same
        return r

    @property
    def is_write(self):
        return self.tipo in ("c", "d")


def read_records(path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [r for r in map(Record.parse, fh) if r is not None]


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list (the value at or above p%)."""
    if not sorted_values:
        return None
    return sorted_values[min(max(1, math.ceil(p / 100.0 * len(sorted_values))), len(sorted_values)) - 1]


def latency_stats(values):
    v = sorted(values)
    if not v:
        return {"count": 0}
    out = {"count": len(v), "mean": round(sum(v) / len(v), 3), "min": round(v[0], 3), "max": round(v[-1], 3)}
    out.update(("p%s" % str(p).replace(".", "_"), round(percentile(v, p), 3)) for p in (50, 90, 99, 99.9))
    return out


def score(records, dropped=0, plateau_start_s=None):
    """Everything the summary says about the requests; `plateau_start_s`: where the plateau
    starts, in seconds from the start of phase 3 (RAMP_S)."""
    total = len(records) + (dropped or 0)  # None: unknown (no k6 summary), which verdict() fails
    ok = sum(r.ok for r in records)
    ok_fast = sum(r.ok and r.rt < SLA_MS for r in records)
    share = 100.0 * ok_fast / total if total else 0.0
    incons = sum(r.inc for r in records)
    fines = {"sla": round(max(0.0, SLA_SHARE - share) * SLA_FINE_PER_POINT, 2),
             "inconsistencies": round(incons * INCONSISTENCY_FINE, 2)}
    load = [r for r in records if r.phase != "v"]
    valid = [r for r in records if r.phase == "v"]
    out = {
        "requests": total, "responses": len(records), "dropped_arrivals": dropped, "ok": ok, "ko": total - ok,
        "ok_under_250ms": ok_fast, "ok_under_250ms_pct": round(share, 4), "inconsistencies": incons,
        "fines_usd": fines, "payout_usd": round(PAYOUT - fines["sla"] - fines["inconsistencies"], 2),
        "latency_ms": latency_stats([r.rt for r in records]),
        "latency_ms_by_kind": {name: latency_stats([r.rt for r in records if r.phase == k]) for k, name in KINDS.items()},
        "ko_reasons": dict(Counter(r.reason or "status %d" % r.status for r in records if not r.ok).most_common(20)),
        "stricter_check_failures": dict(Counter(p for r in records for p in r.reason.split(";") if p.startswith("x:"))),
        "instances": dict(sorted(Counter(r.instance or "?" for r in records).items())),
        "debits_refused_422": sum(r.phase == "d" and r.status == 422 for r in load),
        "by_kind": {name: sum(r.phase == k for r in records) for k, name in KINDS.items()},
    }
    if valid:
        out.update(validations_ok=sum(r.ok for r in valid), validations=len(valid), validations_failed=[
            {"cliente": r.cliente, "tipo": r.tipo, "status": r.status, "reason": r.reason} for r in valid if not r.ok][:20])
    if load:
        start, end = min(r.t0 for r in load), max(r.t0 + r.rt for r in load)
        secs = max(1e-3, (end - start) / 1000.0)
        out.update(load_seconds=round(secs, 3), rps_mean=round(len(load) / secs, 2),
                   rps_peak_1s=max(Counter(int((r.t0 - start) // 1000) for r in load).values()))
        plateau = [r for r in load if plateau_start_s is not None and (r.t0 - start) / 1000.0 >= plateau_start_s]
        if plateau:
            out["rps_plateau"] = round(len(plateau) / max(1e-3, secs - plateau_start_s), 2)
            out["latency_ms_plateau"] = latency_stats([r.rt for r in plateau])
    return out


def read_cpu(path):
    """cpu.csv -> [(t_ms, stack_cpu_s|None, k6_cpu_s|None, machine_busy_s less interrupts, machine_total_s)]:
    interrupt time is nobody's program."""
    num = lambda x: float(x) if x else None
    try:
        with open(path) as fh:
            rows = [line.strip().split(",") for line in fh][1:]
        return [(int(f[0]), num(f[1]), num(f[2]), float(f[3]) - float(f[5]), float(f[4])) for f in rows]
    except (OSError, IndexError, ValueError):
        return []


def quiet_stats(records, cpu_rows, max_others=0.1):
    """Latency over the requests sent while other programs than the stack and k6 used less than
    `max_others` of a core: the machine is shared, and this is the part of a run it did not disturb."""
    iv = [(a[0], b[0], ((b[3] - a[3]) - (b[1] - a[1]) - (b[2] - a[2])) / ((b[0] - a[0]) / 1000.0))
          for a, b in zip(cpu_rows, cpu_rows[1:]) if b[0] > a[0] and None not in (a[1], b[1], a[2], b[2])]
    if not iv:
        return None
    quiet = [(a, b) for a, b, others in iv if others < max_others]
    starts = [a for a, _ in quiet]
    sel = [r for r in records if bisect.bisect_right(starts, r.t0) and r.t0 < quiet[bisect.bisect_right(starts, r.t0) - 1][1]]
    seconds = sum(b - a for a, b, _ in iv)
    return {
        "max_other_cores": max_others, "quiet_seconds": round(sum(b - a for a, b in quiet) / 1000.0, 1),
        "seconds": round(seconds / 1000.0, 1), "requests": len(sel),
        "ok_under_250ms_pct": round(100.0 * sum(r.ok and r.rt < SLA_MS for r in sel) / len(sel), 4) if sel else None,
        "latency_ms": latency_stats([r.rt for r in sel]),
        "others_mean_cores": round(sum(o * (b - a) for a, b, o in iv) / max(1, seconds), 3),
    }


def dropped_arrivals(k6_summary_path):
    """k6's dropped_iterations from its end-of-test summary: 0 when the summary has no such
    metric (k6 dropped nothing), None when there is no readable summary (unknown: the verdict
    fails rather than count it as 0)."""
    try:
        with open(k6_summary_path) as fh:
            return int(json.load(fh)["metrics"].get("dropped_iterations", {}).get("values", {}).get("count", 0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
