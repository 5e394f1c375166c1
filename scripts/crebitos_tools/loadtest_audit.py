#!/usr/bin/env python3
"""The ledger audit after a load test: the database against what k6 recorded.

Reads the database (read-only; safe while the stack runs) and the k6 record lines, and
exits 1 if any check fails: clients, rows, balances and history (ledger.py), and the
matching of ledger.compare, each k6 write one transaction:

  count, acked   every transaction answered 200 is stored, and the rows are those;
  extra      nothing is stored that was not answered 200: not twice, not a refused
             one, not one that was never sent (a row whose request got no answer or a
             5xx is reported as `unanswered`, not failed: the contest allows it to have
             committed);
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

from . import ledger
from .clients import LIMITS
from .ledger import Snapshot, max_id  # noqa: F401 (max_id: for scripts/loadtest)
from .score import read_records


def sent_of(records):
    """ledger.compare's (request, outcome, saldos) for each k6 write record."""
    for r in records:
        if not r.is_write or not isinstance(r.valor, int) or r.cliente not in LIMITS:
            continue
        request = (r.cliente, r.tipo, r.valor, r.descricao)
        if r.status == 200:
            yield request, ledger.ACKED, [r.saldo]
        elif 400 <= r.status < 500:
            yield request, ledger.REFUSED, []
        else:
            yield request, ledger.UNCLEAR, []


def audit(db_path, records, since_id=0):
    snap = Snapshot(db_path)
    matched, m = ledger.compare(snap, sent_of(records), since_id)
    findings = snap.invariants() + matched
    return {
        "ok": all(f["ok"] for f in findings),
        "rows_total": len(snap.rows),
        "rows_this_run": m["rows"],
        "acked_200": m["acked"],
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
