"""The ledger audit after a load test: the database (read-only; safe while the stack runs)
against what k6 recorded, each k6 write one transaction matched on (cliente_id, tipo, valor,
descricao): the invariants and the matching of ledger.py. Rows with id <= --since-id (the
database before the run) are left out of the matching. Exit 1 if any check fails.

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
        if r.is_write and isinstance(r.valor, int) and r.cliente in LIMITS:
            told = ledger.ACKED if r.status == 200 else ledger.REFUSED if 400 <= r.status < 500 else ledger.UNCLEAR
            yield (r.cliente, r.tipo, r.valor, r.descricao), told, [r.saldo] if r.status == 200 else []


def audit(db_path, records, since_id=0):
    snap = Snapshot(db_path)
    matched, m = ledger.compare(snap, sent_of(records), since_id)
    findings = snap.invariants() + matched
    return {"ok": all(f["ok"] for f in findings), "rows_total": len(snap.rows), "rows_this_run": m["rows"],
            "acked_200": m["acked"], "since_id": since_id, "findings": findings,
            "clientes": {str(c): {"limite": l, "saldo": s} for c, (l, s) in snap.clientes.items()}}


def format_report(res):
    return ledger.format_report(res["findings"], "audit")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--records", required=True)
    ap.add_argument("--since-id", type=int, default=0)
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args()
    res = audit(a.db, read_records(a.records), a.since_id)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=2)
    print(format_report(res))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
