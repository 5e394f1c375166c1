#!/usr/bin/env python3
"""The ledger audit: the database after a load test, against what the test saw.

Reads the SQLite file (read-only; safe while the stack runs) and the k6 record lines.
Checks, and exits 1 if any fails:

  clients    the five clients exist with the limits of SPEC.md;
  balances   for every client saldo == sum(credits) - sum(debits) over its stored rows,
             and saldo >= -limite;
  history    replaying each client's rows in commit order (transacoes.id) never goes
             below -limite: the invariant held at every commit, not only at the end;
  acked      every transaction answered 200 is stored (nothing acknowledged missing);
  extra      nothing is stored that was not answered 200: not twice, not a refused
             one, not one that was never sent (a row whose request got no answer or a
             5xx is reported, not failed: SPEC allows it to have committed);
  saldos     the balance each 200 returned equals the balance right after that row
             in the replay (matched one by one through the random `descricao`).

Rows are matched on (cliente_id, tipo, valor, descricao). Rows with id <= --since-id
(the database before the run) are left out of the matching, and a client's replay
starts from the balance those rows give.

    audit.py --db data/rinha.db --records RUN/records.log [--since-id N] [--json OUT]
"""
import argparse
import json
import sqlite3
import sys
from collections import Counter, defaultdict

from .score import read_records

from .clients import LIMITS
MAX_EXAMPLES = 10


def open_readonly(path):
    # mode=ro: a reader in WAL mode still sees every committed transaction.
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)


def max_id(db_path):
    with open_readonly(db_path) as db:
        return db.execute("SELECT coalesce(max(id), 0) FROM transacoes").fetchone()[0]


def audit(db_path, records, since_id=0):
    findings = []  # (check, ok, message)
    db = open_readonly(db_path)
    # One read transaction: clientes and transacoes from the same snapshot.
    db.execute("BEGIN")
    clientes = {cid: (lim, saldo) for cid, lim, saldo in
                db.execute("SELECT id, limite, saldo FROM clientes ORDER BY id")}
    rows = db.execute(
        "SELECT id, cliente_id, valor, tipo, descricao FROM transacoes ORDER BY id").fetchall()
    db.execute("COMMIT")
    db.close()

    def add(check, ok, msg):
        findings.append({"check": check, "ok": bool(ok), "message": msg})

    # clients
    wrong = {cid: clientes.get(cid) for cid in LIMITS if cid not in clientes or clientes[cid][0] != LIMITS[cid]}
    unknown = sorted(set(clientes) - set(LIMITS))
    add("clients", not wrong and not unknown,
        "5 clients with SPEC limits" if not wrong and not unknown
        else "wrong/missing: %s, unexpected ids: %s" % (wrong, unknown))

    # balances and history
    sums = defaultdict(int)
    bad_rows = [r for r in rows if r[3] not in ("c", "d") or r[2] <= 0]
    add("rows", not bad_rows, "%d rows, all tipo c/d and valor > 0" % len(rows) if not bad_rows
        else "%d malformed rows, e.g. %s" % (len(bad_rows), bad_rows[:3]))
    running = defaultdict(int)
    below = []
    after_row = {}  # row id -> balance right after it
    for rid, cid, valor, tipo, _ in rows:
        delta = valor if tipo == "c" else -valor
        sums[cid] += delta
        running[cid] += delta
        after_row[rid] = running[cid]
        lim = clientes.get(cid, (None, None))[0]
        if lim is not None and running[cid] < -lim:
            below.append((rid, cid, running[cid], lim))
    mism = []
    over = []
    for cid, (lim, saldo) in sorted(clientes.items()):
        if saldo != sums.get(cid, 0):
            mism.append("client %d: saldo %d, sum of rows %d" % (cid, saldo, sums.get(cid, 0)))
        if saldo < -lim:
            over.append("client %d: saldo %d < -%d" % (cid, saldo, lim))
    add("balances", not mism and not over,
        "saldo == credits - debits and saldo >= -limite for every client" if not mism and not over
        else "; ".join(mism + over))
    add("history", not below,
        "no prefix of any client's history goes below -limite" if not below
        else "%d rows leave a balance below -limite, first: id %d client %d balance %d limit %d"
        % ((len(below),) + below[0]))

    # matching: multisets keyed on (cliente, tipo, valor, descricao)
    new_rows = [r for r in rows if r[0] > since_id]
    stored = defaultdict(list)  # key -> row ids
    for rid, cid, valor, tipo, descr in new_rows:
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
        "clientes": {str(c): {"limite": l, "saldo": s} for c, (l, s) in clientes.items()},
        "findings": findings,
    }


def format_report(res):
    lines = ["audit: %s" % ("CLEAN" if res["ok"] else "FAILED")]
    for f in res["findings"]:
        lines.append("  [%s] %-10s %s" % ("ok" if f["ok"] else "FAIL", f["check"], f["message"]))
    return "\n".join(lines)


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
