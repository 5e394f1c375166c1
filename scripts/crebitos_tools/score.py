"""The contest's score of one load-test run, from the k6 script's record lines.

docs/API.md, "Scoring": the share of responses that are OK (expected status, every check
passed) *and* faster than 250 ms must be at least 98%, each percentage point below
costs USD 1,000; each inconsistent balance seen costs USD 803.01; the payout is
USD 100,000 minus the fines.

Arrivals that k6 could not start (``dropped_iterations``: no free virtual user) are
requests Gatling's open model would have sent; they count as failed requests.
"""
import json
import math
from collections import Counter

SLA_MS = 250.0
SLA_SHARE = 98.0
SLA_FINE_PER_POINT = 1000.0
INCONSISTENCY_FINE = 803.01
PAYOUT = 100000.0
PERCENTILES = (50, 90, 99, 99.9)
KINDS = {"v": "validations", "d": "debits", "c": "credits", "e": "statements"}


class Record:
    """One request as the k6 script saw it (see crebitos.js for the line format)."""

    __slots__ = ("phase", "t0", "rt", "status", "ok", "inc", "cliente", "tipo", "valor",
                 "descricao", "saldo", "instance", "reason")

    @classmethod
    def parse(cls, line):
        f = line.rstrip("\n").split("|")
        if len(f) < 14 or f[0] != "R":
            return None
        r = cls()
        r.phase = f[1]
        r.t0 = int(f[2])
        r.rt = float(f[3])
        r.status = int(f[4])
        r.ok = f[5] == "1"
        r.inc = f[6] == "1"
        r.cliente = int(f[7]) if f[7].lstrip("-").isdigit() else None
        r.tipo = f[8]
        r.valor = int(f[9]) if f[9].isdigit() else f[9]
        r.descricao = f[10]
        r.saldo = int(f[11]) if f[11].lstrip("-").isdigit() else None
        r.instance = f[12]
        # A reason may not contain '|', but be lenient with whatever follows.
        r.reason = "|".join(f[13:])
        return r

    @property
    def is_write(self):
        return self.tipo in ("c", "d")


def read_records(path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [r for r in (Record.parse(line) for line in fh) if r is not None]


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list (the value at or above p%)."""
    if not sorted_values:
        return None
    k = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(k, len(sorted_values)) - 1]


def latency_stats(values):
    v = sorted(values)
    out = {"count": len(v)}
    if not v:
        return out
    out["mean"] = round(sum(v) / len(v), 3)
    for p in PERCENTILES:
        out["p%s" % (str(p).replace(".", "_"))] = round(percentile(v, p), 3)
    out["max"] = round(v[-1], 3)
    out["min"] = round(v[0], 3)
    return out


def score(records, dropped=0, plateau_start_s=None):
    """Everything the summary reports about the requests; `plateau_start_s` is the
    offset of the plateau from the start of phase 3 (RAMP_S)."""
    total = len(records) + dropped
    ok = sum(1 for r in records if r.ok)
    ok_fast = sum(1 for r in records if r.ok and r.rt < SLA_MS)
    share = 100.0 * ok_fast / total if total else 0.0
    incons = sum(1 for r in records if r.inc)
    sla_fine = round(max(0.0, SLA_SHARE - share) * SLA_FINE_PER_POINT, 2)
    inc_fine = round(incons * INCONSISTENCY_FINE, 2)

    load = [r for r in records if r.phase != "v"]
    valid = [r for r in records if r.phase == "v"]
    out = {
        "requests": total,
        "responses": len(records),
        "dropped_arrivals": dropped,
        "ok": ok,
        "ok_under_250ms": ok_fast,
        "ok_under_250ms_pct": round(share, 4),
        "ko": total - ok,
        "inconsistencies": incons,
        "fines_usd": {"sla": sla_fine, "inconsistencies": inc_fine},
        "payout_usd": round(PAYOUT - sla_fine - inc_fine, 2),
        "latency_ms": latency_stats([r.rt for r in records]),
        "latency_ms_by_kind": {
            KINDS[k]: latency_stats([r.rt for r in records if r.phase == k]) for k in KINDS
        },
        "status_counts": dict(sorted(Counter(str(r.status) for r in records).items())),
        "ko_reasons": dict(Counter(r.reason or ("status %d" % r.status)
                                   for r in records if not r.ok).most_common(20)),
        "stricter_check_failures": dict(Counter(
            part for r in records for part in r.reason.split(";") if part.startswith("x:"))),
        "instances": dict(sorted(Counter(r.instance or "?" for r in records).items())),
        "debits_refused_422": sum(1 for r in load if r.phase == "d" and r.status == 422),
        "by_kind": {KINDS[k]: sum(1 for r in records if r.phase == k) for k in KINDS},
    }
    if valid:
        out["validations_ok"] = sum(1 for r in valid if r.ok)
        out["validations"] = len(valid)
        out["validations_failed"] = [
            {"cliente": r.cliente, "tipo": r.tipo, "status": r.status, "reason": r.reason}
            for r in valid if not r.ok][:20]
    if load:
        start = min(r.t0 for r in load)
        end = max(r.t0 + r.rt for r in load)
        secs = max(1e-3, (end - start) / 1000.0)
        per_second = Counter(int((r.t0 - start) // 1000) for r in load)
        out["load_seconds"] = round(secs, 3)
        out["rps_mean"] = round(len(load) / secs, 2)
        out["rps_peak_1s"] = max(per_second.values())
        if plateau_start_s is not None:
            plateau = [r for r in load if (r.t0 - start) / 1000.0 >= plateau_start_s]
            if plateau:
                psecs = max(1e-3, (end - start) / 1000.0 - plateau_start_s)
                out["rps_plateau"] = round(len(plateau) / psecs, 2)
                out["latency_ms_plateau"] = latency_stats([r.rt for r in plateau])
    return out


def read_cpu(path):
    """The runner's cpu.csv -> [(t_ms, stack_cpu_s|None, k6_cpu_s|None, machine_busy_s, machine_total_s)]."""
    rows = []
    try:
        with open(path) as fh:
            next(fh)
            for line in fh:
                f = line.strip().split(",")
                if len(f) < 5:
                    continue
                num = lambda x: float(x) if x else None
                # Interrupt time (6th column, newer runs) is nobody's program: leave it out.
                irq = float(f[5]) if len(f) > 5 and f[5] else 0.0
                rows.append((int(f[0]), num(f[1]), num(f[2]), float(f[3]) - irq, float(f[4])))
    except (OSError, StopIteration, ValueError):
        pass
    return rows


def others_per_interval(cpu_rows):
    """[(t_start_ms, t_end_ms, cores used by programs other than the stack and k6)]."""
    out = []
    for a, b in zip(cpu_rows, cpu_rows[1:]):
        dt = (b[0] - a[0]) / 1000.0
        if dt <= 0 or None in (a[1], b[1], a[2], b[2]):
            continue
        out.append((a[0], b[0], ((b[3] - a[3]) - (b[1] - a[1]) - (b[2] - a[2])) / dt))
    return out


def quiet_stats(records, cpu_rows, max_others=0.1):
    """Latency over the requests sent while other programs used less than `max_others`
    of a core: the machine is shared, and this is the part of a run it did not disturb."""
    iv = others_per_interval(cpu_rows)
    if not iv:
        return None
    quiet = [(a, b) for a, b, o in iv if o < max_others]
    sel = []
    j = 0
    qs = sorted(quiet)
    for r in sorted(records, key=lambda r: r.t0):
        while j < len(qs) and qs[j][1] <= r.t0:
            j += 1
        if j < len(qs) and qs[j][0] <= r.t0 < qs[j][1]:
            sel.append(r)
    return {
        "max_other_cores": max_others,
        "quiet_seconds": round(sum(b - a for a, b in quiet) / 1000.0, 1),
        "seconds": round(sum(b - a for a, b, _ in iv) / 1000.0, 1),
        "requests": len(sel),
        "ok_under_250ms_pct": round(100.0 * sum(1 for r in sel if r.ok and r.rt < SLA_MS) / len(sel), 4) if sel else None,
        "latency_ms": latency_stats([r.rt for r in sel]),
        "others_mean_cores": round(sum(o * (b - a) for a, b, o in iv) / max(1, sum(b - a for a, b, _ in iv)), 3),
    }


def dropped_arrivals(k6_summary_path):
    """k6's dropped_iterations count from its end-of-test summary JSON (0 if absent)."""
    try:
        with open(k6_summary_path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return 0
    m = data.get("metrics", {}).get("dropped_iterations", {})
    vals = m.get("values", m)
    return int(vals.get("count", 0) or 0)

