"""The ledger audit's core, the one place the tooling checks a database file: one read
snapshot, the replay of every client's history, and the invariants of docs/API.md.

  clients    the five clients exist with their limits (clients.py), and no other
  rows       every transaction belongs to a client, valor is a whole number > 0, tipo is c
             or d, descricao has 1 to 10 characters
  balances   for every client saldo == credits - debits over its rows, and saldo >= -limite
  history    replaying each client's rows in commit order (transacoes.id) never goes below
             -limite: the invariant held at every commit, not only at the end

scripts/audit prints them for a file; the load test (loadtest_audit.py) and the fault tests
(ledger_audit.py) add their checks of what each request was answered against the same
snapshot and replay. Read-only, and safe while the stack runs (WAL: readers see every
committed transaction and block no writer).
"""
import sqlite3
from collections import defaultdict

from .clients import LIMITS

MAX_EXAMPLES = 5


def open_readonly(path):
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)


def max_id(path):
    with open_readonly(path) as db:
        return db.execute("SELECT coalesce(max(id), 0) FROM transacoes").fetchone()[0]


def integrity(path):
    db = open_readonly(path)
    try:
        return "; ".join(r[0] for r in db.execute("PRAGMA integrity_check"))
    finally:
        db.close()


class Snapshot:
    """clientes {id: (limite, saldo)}, rows [(id, cliente_id, valor, tipo, descricao,
    realizada_em)] in commit order, keys {key: (cliente_id, request, outcome, saldo)} (empty
    when the table does not exist), and after_row {row id: the client's balance right after
    that row}, all from one read transaction."""

    def __init__(self, path):
        db = open_readonly(path)
        try:
            db.execute("BEGIN")
            self.clientes = {cid: (lim, saldo) for cid, lim, saldo in
                             db.execute("SELECT id, limite, saldo FROM clientes ORDER BY id")}
            self.rows = db.execute("SELECT id, cliente_id, valor, tipo, descricao, realizada_em "
                                   "FROM transacoes ORDER BY id").fetchall()
            try:
                self.keys = {k: rest for k, *rest in db.execute(
                    "SELECT key, cliente_id, request, outcome, saldo FROM idempotency_keys")}
            except sqlite3.OperationalError:
                self.keys = {}
            db.execute("COMMIT")
        finally:
            db.close()
        self.sums, self.after_row, self.below = defaultdict(int), {}, []
        for rid, cid, valor, tipo, *_ in self.rows:
            self.sums[cid] += valor if tipo == "c" else -valor
            self.after_row[rid] = self.sums[cid]
            lim = self.clientes.get(cid, (None, None))[0]
            if lim is not None and self.sums[cid] < -lim:
                self.below.append((rid, cid, self.sums[cid], lim))

    def invariants(self):
        """[{check, ok, message}] for clients, rows, balances and history."""
        out = []

        def check(name, ok, msg):
            out.append({"check": name, "ok": bool(ok), "message": msg})

        wrong = {cid: self.clientes.get(cid) for cid in LIMITS
                 if cid not in self.clientes or self.clientes[cid][0] != LIMITS[cid]}
        extra = sorted(set(self.clientes) - set(LIMITS))
        check("clients", not wrong and not extra, "the 5 clients of docs/API.md with their limits"
              if not wrong and not extra else "wrong or missing: %s, unexpected ids: %s" % (wrong, extra))
        bad = [r[:5] for r in self.rows if r[1] not in self.clientes or not isinstance(r[2], int)
               or r[2] <= 0 or r[3] not in ("c", "d") or not isinstance(r[4], str) or not 1 <= len(r[4]) <= 10]
        check("rows", not bad, "%d rows, each of a client, valor > 0, tipo c/d, descricao of 1-10 characters"
              % len(self.rows) if not bad else "%d malformed rows, e.g. %s" % (len(bad), bad[:MAX_EXAMPLES]))
        wrong = ["client %d: saldo %d but its rows add up to %d" % (cid, saldo, self.sums.get(cid, 0))
                 for cid, (lim, saldo) in sorted(self.clientes.items()) if saldo != self.sums.get(cid, 0)]
        wrong += ["client %d: saldo %d below -%d" % (cid, saldo, lim)
                  for cid, (lim, saldo) in sorted(self.clientes.items()) if saldo < -lim]
        check("balances", not wrong, "saldo == credits - debits and saldo >= -limite for every client"
              if not wrong else "; ".join(wrong))
        check("history", not self.below, "no prefix of any client's history goes below -limite"
              if not self.below else "%d rows leave a balance below -limite, e.g. (id, client, balance, "
              "limit) %s" % (len(self.below), self.below[:3]))
        return out


def format_report(checks, title="ledger audit"):
    lines = ["%s: %s" % (title, "CLEAN" if all(c["ok"] for c in checks) else "FAILED")]
    lines += ["  [%s] %-10s %s" % ("ok" if c["ok"] else "FAIL", c["check"], c["message"]) for c in checks]
    return "\n".join(lines)
