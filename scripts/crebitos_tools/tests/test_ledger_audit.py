"""The fault tests' ledger audit (ledger_audit.audit): a clean run passes, and each check fails
when its condition is broken. Stdlib only, no server: the database is built by hand with the
server's tables, the workload's intents and statements by hand too."""
import os
import sqlite3
import tempfile
import types
import unittest

from crebitos_tools import ledger_audit
from crebitos_tools.clients import LIMITS
from crebitos_tools.workload import Attempt, Intent, Statement


class FaultAuditTest(unittest.TestCase):
    def setUp(self):
        fd, self.path = tempfile.mkstemp(suffix=".db")
        os.close(fd)
        self.addCleanup(os.unlink, self.path)
        self.db = sqlite3.connect(self.path)
        self.db.executescript("""
            CREATE TABLE clientes (id INTEGER PRIMARY KEY, limite INTEGER NOT NULL, saldo INTEGER NOT NULL);
            CREATE TABLE transacoes (id INTEGER PRIMARY KEY, cliente_id INTEGER NOT NULL, valor INTEGER NOT NULL,
                tipo TEXT NOT NULL, descricao TEXT NOT NULL, realizada_em INTEGER NOT NULL);
            CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, cliente_id INTEGER, request TEXT, outcome TEXT,
                saldo INTEGER);""")
        self.db.executemany("INSERT INTO clientes VALUES (?, ?, 0)", LIMITS.items())
        self.wl = types.SimpleNamespace(intents=[], statements=[])
        # A plain 200, a keyed 504 whose retry replayed its commit, a plain 422, a plain 504 that committed.
        self.send(1, 10, "plainacked", None, (200, False))
        self.send(2, 5, "keyedretry", "k1", (504, False), (200, True))
        self.send(3, 10 ** 9, "refusedxyz", None, (422, False), stored=False)
        self.send(4, 7, "lateplain", None, (504, False))
        st = Statement(0.0, 1)
        st.status, st.total, st.limite = 200, 10, LIMITS[1]
        self.wl.statements.append(st)

    def send(self, client, valor, descricao, key, *answers, stored=True):
        it = Intent(len(self.wl.intents), client, "c", valor, descricao, key, 0.0)
        for status, replayed in answers:
            a = Attempt(0.0)
            a.status, a.replayed, a.saldo = status, replayed, valor if status == 200 else None
            it.attempts.append(a)
        self.wl.intents.append(it)
        if stored:
            self.store(client, valor, descricao)
            if key:
                self.db.execute("INSERT INTO idempotency_keys VALUES (?, ?, '', 'applied', ?)", (key, client, valor))
        return it

    def store(self, client, valor, descricao, tipo="c"):
        self.db.execute("INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em) VALUES (?,?,?,?,0)",
                        (client, valor, tipo, descricao))
        self.db.execute("UPDATE clientes SET saldo = saldo + ? WHERE id = ?", (valor if tipo == "c" else -valor, client))

    def failing(self, no_late=False):
        self.db.commit()
        return {c["check"] for c in ledger_audit.audit(self.path, self.wl, no_late=no_late)["checks"] if not c["ok"]}

    def test_clean(self):
        self.assertEqual(self.failing(), set())

    def test_acknowledged_but_missing(self):
        self.db.execute("DELETE FROM transacoes WHERE descricao = 'plainacked'")
        self.db.execute("UPDATE clientes SET saldo = 0 WHERE id = 1")
        self.assertEqual(self.failing(), {"acked", "count"})

    def test_stored_twice_refused_never_sent_or_changed(self):
        for row in [(1, 10, "plainacked"), (3, 10 ** 9, "refusedxyz"), (5, 1, "fantasma"), (4, 8, "lateplain")]:
            with self.subTest(row=row):
                self.setUp()
                self.store(*row)
                self.assertIn("extra", self.failing())

    def test_returned_saldo_differs_from_the_replay(self):
        self.wl.intents[0].attempts[0].saldo = 11
        self.assertEqual(self.failing(), {"saldos"})

    def test_keyed_client_left_with_a_409(self):
        self.send(5, 3, "keyed409", "k2", (504, False), (409, False), stored=False)
        self.assertEqual(self.failing(), {"keyed"})

    def test_key_table_disagrees(self):
        self.db.execute("UPDATE idempotency_keys SET outcome = 'refused'")
        self.assertEqual(self.failing(), {"keys"})

    def test_statement_below_the_limit(self):
        self.wl.statements[0].total = -LIMITS[1] - 1
        self.assertEqual(self.failing(), {"statements"})

    def test_late_commit_fails_only_when_asked(self):
        self.assertEqual(self.failing(no_late=True), {"late"})


if __name__ == "__main__":
    unittest.main()
