"""Tests of the load test's judges: the score (score.py), the ledger audit (loadtest_audit.py)
and the verdict (loadrun.py). Stdlib only: the record format is checked against lines
crebitos.js wrote in a real run (tests/k6-records.sample) and against crebitos.js itself;
the database is built from the server's schema (tests/schema.sql)."""
import os
import re
import tempfile
import unittest

from crebitos_tools import loadrun, loadtest_audit as audit, score
from crebitos_tools.clients import LIMITS
from crebitos_tools.tests import server_database


def line(phase="d", t0=1000, rt=1.0, status=200, ok=1, inc=0, cliente=1, tipo="d", valor=10,
         descricao="abcdefghij", saldo=-10, instance="api01", reason=""):
    return "R|%s|%d|%.3f|%d|%d|%d|%s|%s|%s|%s|%s|%s|%s" % (
        phase, t0, rt, status, ok, inc, cliente, tipo, valor, descricao,
        "" if saldo is None else saldo, instance, reason)


def records(*lines):
    return [score.Record.parse(x) for x in lines]


SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k6-records.sample")


def sample_lines():
    """The record lines crebitos.js wrote in a real run (tests/k6-records.sample)."""
    with open(SAMPLE) as fh:
        return [x.rstrip("\n") for x in fh if x.startswith("R|")]


class RecordFormatTest(unittest.TestCase):
    """The format is what crebitos.js writes, not what this file thinks it writes."""

    def test_real_records_parse_into_what_they_hold(self):
        got = [(r.phase, r.t0, r.rt, r.status, r.ok, r.inc, r.cliente, r.tipo, r.valor, r.descricao, r.saldo,
                r.instance, r.reason) for r in map(score.Record.parse, sample_lines())]
        self.assertEqual(got, [
            ("v", 1796305600625, 581.491, 200, True, False, 1, "d", 1, "validacao", -4, "api02", ""),
            ("d", 1796305601683, 5.369, 200, True, False, 2, "d", 9459, "CvttJxGN42", -9458, "api02", ""),
            ("d", 1796305604615, 28.965, 422, True, False, 2, "d", 3716, "QNDSOHigEV", None, "api01", ""),
            ("c", 1796305601734, 27.791, 200, True, False, 1, "c", 7525, "aAeKKWOp8O", 7526, "api01", ""),
            ("e", 1796305602130, 8.918, 200, True, False, 3, "e", "", "", 1, "api02", ""),
            ("v", 1796305601119, 0.937, 404, True, False, 6, "e", "", "", None, "api01", "")])
        self.assertEqual([r.is_write for r in map(score.Record.parse, sample_lines())], [True] * 4 + [False] * 2)
        self.assertIsNone(score.Record.parse("some k6 warning"))

    def test_the_sample_has_the_fields_crebitos_js_documents_and_writes(self):
        with open(os.path.join(os.path.dirname(SAMPLE), "..", "crebitos.js")) as fh:
            js = fh.read()
        documented = re.search(r"^//   (R\|[a-z0-9_|]+)$", js, re.M)[1].split("|")
        template = re.search(r"console\.log\(`(R\|.*?)`\);", js, re.S)[1]
        self.assertEqual(template.count("|"), len(documented) - 1)
        for real in sample_lines():
            self.assertEqual(len(real.split("|")), len(documented), real)

    def test_line_builds_exactly_what_crebitos_js_writes(self):
        # line() makes the records of the tests below: it must write the real format.
        names = ("phase", "t0", "rt", "status", "ok", "inc", "cliente", "tipo", "valor", "descricao", "saldo",
                 "instance", "reason")
        for real in sample_lines():
            f = dict(zip(names, real.split("|")[1:]))
            built = line(**dict(f, t0=int(f["t0"]), rt=float(f["rt"]), status=int(f["status"]), ok=int(f["ok"]),
                                inc=int(f["inc"]), saldo=f["saldo"] or None))
            self.assertEqual(built, real)


class ScoreTest(unittest.TestCase):
    def test_parse_round_trip(self):
        r = score.Record.parse(line(descricao="XyZ0123456", saldo=-42, reason="x:limite"))
        self.assertEqual((r.phase, r.status, r.ok, r.cliente, r.tipo, r.valor, r.descricao, r.saldo, r.reason),
                         ("d", 200, True, 1, "d", 10, "XyZ0123456", -42, "x:limite"))

    def test_percentile_is_nearest_rank(self):
        v = list(range(1, 101))
        self.assertEqual([score.percentile(v, 50), score.percentile(v, 99), score.percentile(v, 99.9),
                          score.percentile([7], 99.9), score.percentile([], 50)], [50, 99, 100, 7, None])

    def test_perfect_run_pays_everything(self):
        recs = records(*[line(t0=1000 + i, descricao="d%09d" % i) for i in range(100)])
        s = score.score(recs)
        self.assertEqual((s["ok_under_250ms_pct"], s["payout_usd"]), (100.0, 100000.0))

    def test_sla_fine_per_point_below_98(self):
        # 95 fast OK, 3 slow, 2 KO: 95% -> (98 - 95) * 1000 = 3000.
        lines = [line(t0=i) for i in range(95)] + [line(rt=250.0) for _ in range(3)] + \
                [line(status=500, ok=0, reason="status 500") for _ in range(2)]
        s = score.score(records(*lines))
        self.assertEqual((s["ok_under_250ms_pct"], s["fines_usd"]["sla"], s["payout_usd"], s["ko"]), (95.0, 3000.0, 97000.0, 2))

    def test_dropped_arrivals_count_as_failed(self):
        s = score.score(records(*[line() for _ in range(98)]), dropped=2)
        self.assertEqual((s["requests"], s["ok_under_250ms_pct"], s["fines_usd"]["sla"]), (100, 98.0, 0.0))

    def test_inconsistency_fine(self):
        lines = [line() for _ in range(999)] + [line(ok=0, inc=1, saldo=-100001, reason="limite ultrapassado")]
        s = score.score(records(*lines))
        self.assertEqual((s["inconsistencies"], s["fines_usd"]["inconsistencies"], s["payout_usd"]), (1, 803.01, 99196.99))


class VerdictTest(unittest.TestCase):
    def verdict(self, lines, audit_ok=True, k6_exit=0, strict=False):
        res = {"score": score.score(records(*lines)), "k6": {"exit_code": k6_exit}}
        if audit_ok is not None:
            res["audit"] = {"ok": audit_ok}
        return loadrun.verdict(res, strict), res["verdict_line"]

    def test_clean_run_passes_even_below_the_sla_unless_strict(self):
        slow = [line(rt=300.0) for _ in range(10)]
        self.assertEqual(self.verdict(slow)[0], [])
        self.assertIn("SLA missed", self.verdict(slow)[1])
        self.assertEqual(self.verdict(slow, strict=True)[0], ["payout below USD 100,000 (--strict)"])

    def test_a_missing_k6_summary_is_no_zero(self):
        missing = os.path.join(self.enterContext(tempfile.TemporaryDirectory()), "k6-summary.json")
        self.assertIsNone(score.dropped_arrivals(missing))
        res = {"score": score.score(records(line()), score.dropped_arrivals(missing)), "k6": {"exit_code": 0},
               "audit": {"ok": True}}
        self.assertEqual(loadrun.verdict(res, False), ["no k6 summary: arrivals k6 dropped are unknown"])
        with open(missing, "w") as fh:
            fh.write('{"metrics": {"dropped_iterations": {"values": {"count": 7}}}}')
        self.assertEqual(score.dropped_arrivals(missing), 7)
        with open(missing, "w") as fh:
            fh.write('{"metrics": {"http_reqs": {"values": {"count": 9}}}}')
        self.assertEqual(score.dropped_arrivals(missing), 0)  # a summary without the metric: k6 dropped nothing

    def test_each_failure_is_named(self):
        self.assertEqual(self.verdict([line(ok=0, inc=1, reason="limite ultrapassado")])[0], ["1 inconsistencies"])
        self.assertEqual(self.verdict([line(phase="v", ok=0)])[0], ["1 validation(s) of phases 1-2 failed"])
        self.assertEqual(self.verdict([line()], audit_ok=False)[0], ["ledger audit failed"])
        self.assertEqual(self.verdict([line()], audit_ok=None)[0], ["no audit"])
        self.assertEqual(self.verdict([line()], k6_exit=107)[0], ["k6 exited 107"])


class AuditTest(unittest.TestCase):
    def setUp(self):
        self.path = os.path.join(self.enterContext(tempfile.TemporaryDirectory()), "rinha.db")
        self.db = server_database(self.path)  # autocommit: the audit reads each row at once
        self.addCleanup(self.db.close)
        self.saldo = {c: 0 for c in LIMITS}
        self.recs = []

    def store(self, cliente, tipo, valor, descricao, update_saldo=True):
        self.db.execute("INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em) VALUES (?,?,?,?,0)",
                        (cliente, valor, tipo, descricao))
        if update_saldo:
            self.saldo[cliente] += valor if tipo == "c" else -valor
            self.db.execute("UPDATE clientes SET saldo = ? WHERE id = ?", (self.saldo[cliente], cliente))
        return self.saldo[cliente]

    def tx(self, cliente, tipo, valor, descricao, status=200, stored=True):
        """A transaction the test sent; stored (and acknowledged with its saldo) as asked."""
        saldo = self.store(cliente, tipo, valor, descricao) if stored else None
        self.recs.append(line(phase=tipo, cliente=cliente, tipo=tipo, valor=valor, descricao=descricao,
                              status=status, saldo=saldo if status == 200 else None))

    def run_audit(self, since_id=0):
        res = audit.audit(self.path, records(*self.recs), since_id)
        return res, {f["check"]: f["ok"] for f in res["findings"]}

    def assert_extra(self, phrase):
        """The audit fails its `extra` check and says why with `phrase`."""
        res, checks = self.run_audit()
        self.assertFalse(checks["extra"])
        self.assertIn(phrase, audit.format_report(res))

    def clean_history(self):
        for i in range(20):
            self.tx(1 + i % 5, "c" if i % 3 else "d", 100 + i, "r%09d" % i)
        for _ in range(3):  # non-unique descricao, as in phase 1
            self.tx(1, "d", 1, "validacao")

    def test_clean(self):
        self.clean_history()
        self.tx(2, "d", 10**6, "refused", status=422, stored=False)
        res, checks = self.run_audit()
        self.assertTrue(res["ok"], audit.format_report(res))
        self.assertEqual(res["acked_200"], 23)

    def test_missing_acknowledged(self):
        self.clean_history()
        self.recs.append(line(cliente=3, tipo="c", valor=5, descricao="lostlostlo", saldo=1))
        res, checks = self.run_audit()
        self.assertFalse(checks["acked"] or res["ok"])

    def test_stored_twice(self):
        self.clean_history()
        self.tx(4, "c", 7, "twicetwice")
        self.store(4, "c", 7, "twicetwice")
        self.assert_extra("stored twice")

    def test_refused_but_stored(self):
        self.clean_history()
        self.store(5, "d", 3, "refusedxyz")
        self.recs.append(line(cliente=5, tipo="d", valor=3, descricao="refusedxyz", status=422, saldo=None))
        self.assert_extra("although refused")

    def test_never_sent(self):
        self.clean_history()
        self.store(1, "c", 1, "fantasma")
        self.assert_extra("never sent")

    def test_unanswered_request_may_have_committed(self):
        self.clean_history()
        self.store(2, "c", 9, "timeoutxyz")
        self.recs.append(line(cliente=2, tipo="c", valor=9, descricao="timeoutxyz", status=0, ok=0, saldo=None))
        res, checks = self.run_audit()
        self.assertTrue(res["ok"], audit.format_report(res))
        self.assertIn("unanswered", checks)

    def test_balance_not_sum_of_rows(self):
        self.clean_history()
        self.store(3, "c", 50, "nosaldoupd", update_saldo=False)
        self.recs.append(line(cliente=3, tipo="c", valor=50, descricao="nosaldoupd", saldo=self.saldo[3] + 50))
        res, checks = self.run_audit()
        self.assertFalse(checks["balances"])

    def test_history_below_limit_even_if_final_balance_is_fine(self):
        # The server's CHECK keeps saldo itself from going below -limite; the rows can still
        # tell a history that did: the debit and the credit land in one update of saldo.
        self.store(2, "d", 80001, "overdrawnn", update_saldo=False)
        self.store(2, "c", 80001, "refilledxx", update_saldo=False)
        for tipo, descricao, saldo in (("d", "overdrawnn", -80001), ("c", "refilledxx", 0)):
            self.recs.append(line(phase=tipo, cliente=2, tipo=tipo, valor=80001, descricao=descricao, saldo=saldo))
        res, checks = self.run_audit()
        self.assertTrue(checks["balances"])
        self.assertFalse(checks["history"])

    def test_returned_saldo_must_match_replay(self):
        self.clean_history()
        self.store(1, "c", 20, "wrongsaldo")
        self.recs.append(line(cliente=1, tipo="c", valor=20, descricao="wrongsaldo", saldo=self.saldo[1] + 1))
        res, checks = self.run_audit()
        self.assertFalse(checks["saldos"])

    def test_rows_before_the_run_are_left_out(self):
        self.store(1, "c", 500, "oldoldoldo")
        since = audit.max_id(self.path)
        self.clean_history()
        res, checks = self.run_audit(since_id=since)
        self.assertTrue(res["ok"], audit.format_report(res))
        self.assertEqual(res["rows_this_run"], 23)

    def test_wrong_limit(self):
        self.db.execute("UPDATE clientes SET limite = 1 WHERE id = 4")
        res, checks = self.run_audit()
        self.assertFalse(checks["clients"])

