"""The fault tests' ledger audit (ledger_audit.py) and the PostgreSQL reading of ledger.py: a
clean run passes, and each check fails when its condition is broken. Stdlib only, no server:
the database is built from the server's schema (tests/schema.sql), the workload's intents and
psql's output are made by hand."""
import os
import subprocess
import tempfile
import types
import unittest
from unittest import mock

from crebitos_tools import ledger, ledger_audit
from crebitos_tools.clients import LIMITS
from crebitos_tools.tests import server_database
from crebitos_tools.workload import Attempt, Intent, Statement


def intent(n, client, valor, descricao, key, *answers):
    """answers: (status, replayed) per attempt; status 0 is "no answer"."""
    it = Intent(n, client, "c", valor, descricao, key, 0.0)
    for status, replayed in answers:
        a = Attempt(0.0)
        a.status, a.replayed, a.saldo = status, replayed, valor if status == 200 else None
        it.attempts.append(a)
    return it


class LateCommitTest(unittest.TestCase):
    """late_commits: which attempts answered 5xx or not at all were nonetheless stored."""

    def test_cases(self):
        stored = [("row",)]
        for key, answers, rows, late in [
            (None, [(504, False)], stored, 1),  # a plain client told 504, but stored
            (None, [(0, False)], stored, 1),  # a plain client without an answer, but stored
            (None, [(503, False)], [], 0),  # told 503, and nothing stored
            (None, [(200, False)], stored, 0),
            ("k", [(503, False), (200, False)], stored, 0),  # the 503 wrote nothing: the 200 is no replay
            ("k", [(504, False), (502, False), (200, True)], stored, 2),  # the replay shows a 5xx committed
            ("k", [(504, False), (0, False)], stored, 2)]:  # never got an answer, but stored
            with self.subTest(key=key, answers=answers, rows=rows):
                self.assertEqual(len(ledger_audit.late_commits(intent(0, 1, 10, "abcdefghij", key, *answers), rows)), late)


class FaultAuditTest(unittest.TestCase):
    def setUp(self):
        fd, self.path = tempfile.mkstemp(suffix=".db")
        os.close(fd)
        self.addCleanup(os.unlink, self.path)
        os.unlink(self.path)
        self.db = server_database(self.path)
        self.addCleanup(self.db.close)
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
        self.wl.intents.append(intent(len(self.wl.intents), client, valor, descricao, key, *answers))
        if stored:
            self.store(client, valor, descricao)
            if key:
                self.db.execute("INSERT INTO idempotency_keys (cliente_id, key, request, outcome, limite, saldo, created_at) "
                                "VALUES (?, ?, '', 'applied', ?, ?, 0)", (client, key, LIMITS[client], valor))

    def store(self, client, valor, descricao, tipo="c"):
        self.db.execute("INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em) VALUES (?,?,?,?,0)",
                        (client, valor, tipo, descricao))
        self.db.execute("UPDATE clientes SET saldo = saldo + ? WHERE id = ?", (valor if tipo == "c" else -valor, client))

    def failing(self, no_late=False, late_batches=0):
        return {c["check"] for c in ledger_audit.audit(self.path, self.wl, no_late=no_late,
                                                       late_batches=late_batches)["checks"] if not c["ok"]}

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

    def test_keyed_client_left_without_a_definitive_answer(self):
        self.send(5, 3, "keyed503", "k2", (504, False), (503, False), stored=False)
        self.assertEqual(self.failing(), {"keyed"})

    def test_two_clients_may_use_the_same_key(self):
        # The API's keys are per client: client 3's key k1 is another record than client 2's.
        self.send(3, 4, "samekey", "k1", (200, False))
        self.assertEqual(self.failing(), set())
        self.db.execute("DELETE FROM idempotency_keys WHERE cliente_id = 3")
        self.assertEqual(self.failing(), {"keys"})  # client 3's record is missing, not found under client 2

    def test_key_table_disagrees(self):
        self.db.execute("UPDATE idempotency_keys SET outcome = 'refused'")
        self.assertEqual(self.failing(), {"keys"})

    def test_statement_below_the_limit(self):
        self.wl.statements[0].total = -LIMITS[1] - 1
        self.assertEqual(self.failing(), {"statements"})

    def test_late_commit_fails_only_when_asked(self):
        self.assertEqual(self.failing(no_late=True), {"late"})

    def test_late_commits_of_one_batch_pass_only_when_a_batch_is_allowed(self):
        # keyedretry and lateplain, both told 504 and stored, share their realizada_em: one commit.
        self.assertEqual(self.failing(no_late=True, late_batches=1), set())
        self.db.execute("UPDATE transacoes SET realizada_em = 1 WHERE descricao = 'lateplain'")
        self.assertEqual(self.failing(no_late=True, late_batches=1), {"late"})  # two commits
        self.assertEqual(self.failing(no_late=True, late_batches=2), set())


def psql_result(*rows):
    """One statement's result as psql -A -t -F FS -R RS prints it."""
    return ledger.RS.join(ledger.FS.join(str(f) for f in row) for row in rows) + "\n"


class PostgresSnapshotTest(unittest.TestCase):
    def test_parse_splits_records_of_several_results_and_reads_null(self):
        out = psql_result(("C", 1, 100000, -5), ("C", 2, 80000, 0)) + psql_result(("T", 1, 1, 5, "d", "a b|c", 17))
        self.assertEqual(ledger.parse_psql(out), [["C", "1", "100000", "-5"], ["C", "2", "80000", "0"],
                                                  ["T", "1", "1", "5", "d", "a b|c", "17"]])
        self.assertEqual(ledger.parse_psql(psql_result(("K", "k", 1, "1 c 5 x", "applied", "\x01"))),
                         [["K", "k", "1", "1 c 5 x", "applied", None]])

    def test_snapshot_of_a_url_reads_the_three_tables_and_replays(self):
        rows = [["C", str(cid), str(lim), "-5" if cid == 1 else "0"] for cid, lim in sorted(LIMITS.items())]
        rows += [["T", "1", "1", "10", "d", "x", "1"], ["T", "2", "1", "5", "c", "y", "2"],
                 ["K", "k1", "1", "1 d 10 x", "applied", "-10"]]
        with mock.patch.object(ledger, "postgres_snapshot", return_value=rows):
            snap = ledger.Snapshot("postgres://u:p@127.0.0.1:5432/rinha")
        self.assertEqual((snap.clientes[1], snap.rows[0]), ((100000, -5), (1, 1, 10, "d", "x", 1)))
        self.assertEqual(snap.keys[(1, "k1")], ["1 d 10 x", "applied", -10])
        self.assertEqual(snap.after_row, {1: -10, 2: -5})
        self.assertTrue(all(c["ok"] for c in snap.invariants()), snap.invariants())

    def test_a_url_is_recognised(self):
        self.assertTrue(ledger.is_postgres("postgresql://x@h/d"))
        self.assertFalse(ledger.is_postgres("data/rinha.db"))

    def integrity(self, rows):
        with mock.patch.object(ledger, "psql", return_value=rows):
            return ledger.integrity("postgres://x@h/d")

    def test_integrity_on_postgres_is_amcheck_and_the_balances(self):
        indexes = [["I", name, ""] for name in ("clientes_pkey", "idempotency_keys_pkey", "idempotency_keys_por_idade",
                                                "transacoes_pkey", "transacoes_por_cliente")]
        balances = [["B", str(cid), "0", str(lim), "0"] for cid, lim in sorted(LIMITS.items())]
        self.assertEqual(self.integrity(indexes + balances), "ok")
        self.assertEqual(self.integrity(indexes + [["B", "1", "-5", "100000", "-4"]] + balances[1:]),
                         "client 1: saldo -5, its rows add up to -4")
        self.assertEqual(self.integrity(indexes[:2] + balances), "only 2 indexes and 5 clients found to check")

    def test_integrity_on_postgres_fails_when_the_check_cannot_run(self):
        failure = subprocess.CalledProcessError(3, "psql", stderr="ERROR:  permission denied for function bt_index_check\n")
        with mock.patch.object(ledger, "psql", side_effect=failure):
            self.assertEqual(ledger.integrity("postgres://x@h/d"), "psql: ERROR:  permission denied for function bt_index_check")


if __name__ == "__main__":
    unittest.main()
