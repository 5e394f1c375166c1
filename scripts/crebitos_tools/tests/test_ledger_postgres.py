"""Reading the PostgreSQL store's snapshot from psql's unaligned output (ledger.parse_psql,
Snapshot on a postgres:// URL). Stdlib only, no server: psql's output is made by hand."""
import unittest
from unittest import mock

from crebitos_tools import ledger

FS, RS, NULL = ledger.FS, ledger.RS, "\x01"


def result(*rows):
    """One statement's result as psql -A -t -F FS -R RS prints it."""
    return RS.join(FS.join(str(f) for f in row) for row in rows) + "\n"


class PostgresSnapshotTest(unittest.TestCase):
    def test_parse_splits_records_of_several_results(self):
        out = result(("C", 1, 100000, -5), ("C", 2, 80000, 0)) + result(("T", 1, 1, 5, "d", "a b|c", 17))
        self.assertEqual(ledger.parse_psql(out), [["C", "1", "100000", "-5"], ["C", "2", "80000", "0"],
                                                  ["T", "1", "1", "5", "d", "a b|c", "17"]])

    def test_null_is_none(self):
        self.assertEqual(ledger.parse_psql(result(("K", "k", 1, "1 c 5 x", "applied", NULL))),
                         [["K", "k", "1", "1 c 5 x", "applied", None]])

    def test_snapshot_of_a_url_reads_the_three_tables_and_replays(self):
        rows = [["C", str(cid), str(lim), "0"] for cid, lim in [(1, 100000), (2, 80000), (3, 1000000),
                                                                 (4, 10000000), (5, 500000)]]
        rows[0][3] = "-5"
        rows += [["T", "1", "1", "10", "d", "x", "1"], ["T", "2", "1", "5", "c", "y", "2"],
                 ["K", "k1", "1", "1 d 10 x", "applied", "-10"]]
        with mock.patch.object(ledger, "postgres_snapshot", return_value=rows):
            snap = ledger.Snapshot("postgres://u:p@127.0.0.1:5432/rinha")
        self.assertEqual(snap.clientes[1], (100000, -5))
        self.assertEqual(snap.rows[0], (1, 1, 10, "d", "x", 1))
        self.assertEqual(snap.keys["k1"], [1, "1 d 10 x", "applied", -10])
        self.assertEqual(snap.after_row, {1: -10, 2: -5})
        self.assertTrue(all(c["ok"] for c in snap.invariants()), snap.invariants())

    def test_a_url_is_recognised_and_has_no_file_to_check(self):
        self.assertTrue(ledger.is_postgres("postgresql://x@h/d"))
        self.assertFalse(ledger.is_postgres("data/rinha.db"))
        self.assertEqual(ledger.integrity("postgres://x@h/d"), "ok")


if __name__ == "__main__":
    unittest.main()
