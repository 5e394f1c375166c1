#!/usr/bin/env python3
"""The ledger audit: the database after a load test, against what the test saw.

Reads the SQLite file (read-only; safe while the stack runs) and the k6 record lines.
Checks, and exits 1 if any fails: clients, rows, balances and history (ledger.py), and

  acked      every transaction answered 200 is stored (nothing acknowledged missing);
  extra      nothing is stored that was not answered 200: not twice, not a refused
             one, not one that was never sent (a row whose request got no answer or a
             5xx is reported, not failed: the contest allows it to have committed);
  saldos     the balance each 200 returned equals the balance right after that row
             in the replay (matched one by one through the random `descricao`).

Rows are matched on (cliente_id, tipo, valor, descricao). Rows with id <= --since-id
(the database before the run) are left out of the matching, and a client's replay
starts from the balance those rows give.

    cd scripts && python3 -m crebitos_tools.loadtest_audit --db ../data/rinha.db --records RUN/records.log
"""
import argparse
import json
import sys
from collections import Counter, defaultdict

from . import ledger
from .clients import LIMITS
from .ledger import MAX_EXAMPLES, Snapshot, max_id  # noqa: F401 (max_id: for scripts/loadtest)
from .score import read_records


def audit(db_path, records, since_id=0):
    snap = Snapshot(db_path)
    findings = snap.invariants()
    rows, after_row = snap.rows, snap.after_row

    def add(check, ok, msg):
        findings.append({"check": check, "ok": bool(ok), "message": msg})

    # matching: multisets keyed on (cliente, tipo, valor, descricao)
    new_rows = [r for r in rows if r[0] > since_id]
    stored = defaultdict(list)  # key -> row ids
    for rid, cid, valor, tipo, descr, _ in new_rows:
        stored[(cid, tipo, valor, descr)].append(rid)
    acked = defaultdict(list)   # key -> returned saldos
    refused = Counter()          # 4xx answers
    unknown_outcome = Counter()  # no answer (status 0) or 5xx
    for r in records:
        if not r.is_write or not isinstance(r.valor, int) or r.cliente not in LIMITS:
            continue
        key = (r.cliente, r.tipo, r.valor, r.descricao)
        if r.status == 200:
            acked[key].append(r.saldo)
        elif 400 <= r.status < 500:
            refused[key] += 1
        else:
            unknown_outcome[key] += 1
    n_acked = sum(len(v) for v in acked.values())
    missing, twice, refused_stored, never_sent, maybe = [], [], [], [], []
    for key in set(stored) | set(acked):
        s, a = len(stored.get(key, ())), len(acked.get(key, ()))
        if s < a:
            missing.append((key, a - s))
        elif s > a:
            extra = s - a
            explained = min(extra, unknown_outcome.get(key, 0))
            if explained:
                maybe.append((key, explained))
            extra -= explained
            if not extra:
                continue
            if a or unknown_outcome.get(key, 0):
                twice.append((key, extra))
            elif refused.get(key, 0):
                refused_stored.append((key, extra))
            else:
                never_sent.append((key, extra))
    fmt = lambda lst: ", ".join("%s x%d" % (k, n) for k, n in sorted(lst)[:MAX_EXAMPLES])
    add("count", len(new_rows) == n_acked + sum(n for _, n in maybe),
        "%d rows stored by the run, %d transactions answered 200%s"
        % (len(new_rows), n_acked, (", %d rows from requests without an answer" % sum(n for _, n in maybe)) if maybe else ""))
    add("acked", not missing, "every 200 is stored" if not missing
        else "%d acknowledged transactions missing: %s" % (sum(n for _, n in missing), fmt(missing)))
    add("extra", not (twice or refused_stored or never_sent),
        "nothing stored twice, refused or never sent" if not (twice or refused_stored or never_sent)
        else "; ".join(x for x in (
            twice and "%d stored twice: %s" % (sum(n for _, n in twice), fmt(twice)),
            refused_stored and "%d stored although refused: %s" % (sum(n for _, n in refused_stored), fmt(refused_stored)),
            never_sent and "%d never sent: %s" % (sum(n for _, n in never_sent), fmt(never_sent)),
        ) if x))
    if maybe:
        add("unanswered", True, "%d rows whose request got no answer or a 5xx (allowed: %s)"
            % (sum(n for _, n in maybe), fmt(maybe)))

    # saldos: the balance a 200 returned == the replayed balance after its row.
    wrong_saldo = []
    compared = 0
    for key, saldos in acked.items():
        ids = stored.get(key, [])
        if not ids:
            continue
        got = Counter(s for s in saldos if s is not None)
        want = Counter(after_row[i] for i in ids)
        compared += min(len(saldos), len(ids))
        if len(saldos) == len(ids) and got != want:
            wrong_saldo.append((key, sorted(got.elements()), sorted(want.elements())))
    add("saldos", not wrong_saldo,
        "%d returned balances equal the replayed ledger" % compared if not wrong_saldo
        else "%d keys whose returned saldo differs from the replay, e.g. %s"
        % (len(wrong_saldo), wrong_saldo[:3]))

    ok = all(f["ok"] for f in findings)
    return {
        "ok": ok,
        "rows_total": len(rows),
        "rows_this_run": len(new_rows),
        "acked_200": n_acked,
        "since_id": since_id,
        "clientes": {str(c): {"limite": l, "saldo": s} for c, (l, s) in snap.clientes.items()},
        "findings": findings,
    }


def format_report(res):
    return ledger.format_report(res["findings"], "audit")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--records", required=True)
    ap.add_argument("--since-id", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    res = audit(a.db, read_records(a.records), a.since_id)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=2)
    print(format_report(res))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
