"""The ledger audit's core, the one place the tooling checks a database: one read snapshot,
the replay of every client's history, and the invariants of docs/API.md (clients, rows,
balances, history: see Snapshot.invariants), which scripts/audit prints. compare() matches
the rows against what a test sent and was answered, for the load test's audit
(loadtest_audit.py, from k6's records) and the fault tests' (ledger_audit.py). Read-only and
safe while the stack runs (WAL readers block no writer). A database is a SQLite file's path
or a postgres:// URL, read with psql in one REPEATABLE READ, READ ONLY transaction.
"""
import os
import sqlite3
import subprocess
from collections import Counter, defaultdict
from contextlib import closing

from .clients import LIMITS

MAX_EXAMPLES = 5


def is_postgres(path):
    return path.lower().startswith(("postgres://", "postgresql://"))


def exists(path):
    """Whether there is a database to read: a file, or a PostgreSQL server that answers."""
    if not is_postgres(path):
        return os.path.isfile(path)
    try:
        psql(path, "SELECT 1")
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


# Field and record separators for psql's unaligned output: control characters, which no
# stored text can hold (the API refuses them in descricao, and keys are printable ASCII).
FS, RS = "\x1f", "\x1e"


def psql(url, sql):
    """Rows of the last statements' results as lists of strings (None for NULL)."""
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", FS, "-R", RS,
                          "-P", "null=\x01", "-d", url, "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return parse_psql(out)


def parse_psql(out):
    """psql's unaligned output (FS between fields, RS between records) as lists of strings.
    Records end with RS, except the last of each statement's result, which ends with a
    newline (no stored text holds one either); \\x01 stands for NULL."""
    return [[None if f == "\x01" else f for f in rec.split(FS)] for rec in out.replace("\n", RS).split(RS) if rec]


def postgres_snapshot(url):
    """The three tables from one snapshot, tagged C, T and K by table."""
    return psql(url, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                     "SELECT 'C', id, limite, saldo FROM clientes ORDER BY id; "
                     "SELECT 'T', id, cliente_id, valor, tipo, descricao, realizada_em FROM transacoes ORDER BY id; "
                     "SELECT 'K', key, cliente_id, request, outcome, saldo FROM idempotency_keys; COMMIT")


def open_readonly(path):
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)


def max_id(path):
    if is_postgres(path):
        return int(psql(path, "SELECT coalesce(max(id), 0) FROM transacoes")[0][0])
    with open_readonly(path) as db:
        return db.execute("SELECT coalesce(max(id), 0) FROM transacoes").fetchone()[0]


# PostgreSQL's own check of the ledger, in one snapshot: amcheck's bt_index_check (with
# heapallindexed: every row of the table is found in the index) on each index of the three
# tables, then the balance invariant computed by the server, not by the replay in Python:
# each client's saldo equals the sum of its transactions, and saldo >= -limite. amcheck is a
# contrib extension that only a superuser creates: scripts/postgres-server creates it in the
# rinha database and grants its check to the rinha role (postgres.py's Postgres.start).
PG_INTEGRITY = """BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT 'I', c.relname, public.bt_index_check(c.oid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid IN ('clientes'::regclass, 'transacoes'::regclass, 'idempotency_keys'::regclass) ORDER BY 2;
SELECT 'B', c.id, c.saldo, c.limite, coalesce(sum(CASE t.tipo WHEN 'c' THEN t.valor ELSE -t.valor END), 0)
  FROM clientes c LEFT JOIN transacoes t ON t.cliente_id = c.id GROUP BY c.id ORDER BY c.id;
COMMIT"""


def postgres_integrity(url):
    """'ok', or what is wrong: the indexes amcheck checked, and each client's balance."""
    try:
        rows = psql(url, PG_INTEGRITY)
    except subprocess.CalledProcessError as e:
        return "psql: %s" % (e.stderr or "").strip().replace("\n", " ")[:300]
    indexes = [r[1] for r in rows if r[0] == "I"]
    balances = [tuple(map(int, r[1:])) for r in rows if r[0] == "B"]
    wrong = ["client %d: saldo %d, its rows add up to %d%s" % (cid, saldo, total, ", below -%d" % lim if saldo < -lim else "")
             for cid, saldo, lim, total in balances if saldo != total or saldo < -lim]
    if wrong:
        return "; ".join(wrong)
    if len(indexes) < 5 or not balances:  # the schema's 3 primary keys and 2 indexes
        return "only %d indexes and %d clients found to check" % (len(indexes), len(balances))
    return "ok"


def integrity(path):
    """'ok', or what the store's own check found: PRAGMA integrity_check on a SQLite file;
    amcheck and the balance invariant on PostgreSQL (postgres_integrity)."""
    if is_postgres(path):
        return postgres_integrity(path)
    with closing(open_readonly(path)) as db:
        return "; ".join(r[0] for r in db.execute("PRAGMA integrity_check"))


def integrity_check_name(path):
    return "amcheck bt_index_check and saldo == sum of rows" if is_postgres(path) else "PRAGMA integrity_check"


def read_sqlite(path):
    """(clientes, rows, keys) as Snapshot holds them, from one read transaction."""
    with closing(open_readonly(path)) as db:
        db.execute("BEGIN")
        clientes = {cid: (lim, saldo) for cid, lim, saldo in db.execute("SELECT id, limite, saldo FROM clientes ORDER BY id")}
        rows = db.execute("SELECT id, cliente_id, valor, tipo, descricao, realizada_em FROM transacoes ORDER BY id").fetchall()
        try:
            keys = {(cid, k): rest for cid, k, *rest in db.execute(
                "SELECT cliente_id, key, request, outcome, saldo FROM idempotency_keys")}
        except sqlite3.OperationalError:  # a database from before the table existed
            keys = {}
        return clientes, rows, keys


def read_postgres(url):
    clientes, rows, keys = {}, [], {}
    for tag, *f in postgres_snapshot(url):
        if tag == "C":
            clientes[int(f[0])] = (int(f[1]), int(f[2]))
        elif tag == "T":
            rows.append((int(f[0]), int(f[1]), int(f[2]), f[3], f[4], int(f[5])))
        else:
            keys[(int(f[1]), f[0])] = [f[2], f[3], None if f[4] is None else int(f[4])]
    return clientes, rows, keys


class Snapshot:
    """clientes {id: (limite, saldo)}, rows [(id, cliente_id, valor, tipo, descricao,
    realizada_em)] in commit order, keys {(cliente_id, key): (request, outcome, saldo)} (keys
    are per client: two clients may use the same one; empty when the table does not exist), all from one read transaction; sums {client: balance its
    rows give}, after_row {row id: the client's balance right after that row}, below (the rows
    that left a balance under -limite)."""

    def __init__(self, path):
        self.clientes, self.rows, self.keys = (read_postgres if is_postgres(path) else read_sqlite)(path)
        self.sums, self.after_row, self.below = defaultdict(int), {}, []
        for rid, cid, valor, tipo, *_ in self.rows:
            self.sums[cid] += valor if tipo == "c" else -valor
            self.after_row[rid] = self.sums[cid]
            lim = self.clientes.get(cid, (None, None))[0]
            if lim is not None and self.sums[cid] < -lim:
                self.below.append((rid, cid, self.sums[cid], lim))

    def invariants(self):
        """clients: the five of docs/API.md with their limits, no other; rows: each of a
        client, valor a whole number > 0, tipo c or d, descricao of 1 to 10 characters;
        balances: saldo == credits - debits and saldo >= -limite; history: replaying each
        client's rows in commit order never goes below -limite."""
        wrong = {cid: self.clientes.get(cid) for cid in LIMITS
                 if cid not in self.clientes or self.clientes[cid][0] != LIMITS[cid]}
        extra = sorted(set(self.clientes) - set(LIMITS))
        bad = [r[:5] for r in self.rows if r[1] not in self.clientes or not isinstance(r[2], int)
               or r[2] <= 0 or r[3] not in ("c", "d") or not isinstance(r[4], str) or not 1 <= len(r[4]) <= 10]
        saldos = sorted(self.clientes.items())
        off = ["client %d: saldo %d but its rows add up to %d" % (cid, saldo, self.sums.get(cid, 0))
               for cid, (lim, saldo) in saldos if saldo != self.sums.get(cid, 0)]
        off += ["client %d: saldo %d below -%d" % (cid, saldo, lim) for cid, (lim, saldo) in saldos if saldo < -lim]
        return [
            finding("clients", not wrong and not extra, "the 5 clients of docs/API.md with their limits"
                    if not wrong and not extra else "wrong or missing: %s, unexpected ids: %s" % (wrong, extra)),
            finding("rows", not bad, "%d rows, each of a client, valor > 0, tipo c/d, descricao of 1-10 characters"
                    % len(self.rows) if not bad else "%d malformed rows, e.g. %s" % (len(bad), bad[:MAX_EXAMPLES])),
            finding("balances", not off, "saldo == credits - debits and saldo >= -limite for every client"
                    if not off else "; ".join(off)),
            finding("history", not self.below, "no prefix of any client's history goes below -limite"
                    if not self.below else "%d rows leave a balance below -limite, e.g. (id, client, balance, "
                    "limit) %s" % (len(self.below), self.below[:3]))]


def format_report(checks, title="ledger audit"):
    lines = ["%s: %s" % (title, "CLEAN" if all(c["ok"] for c in checks) else "FAILED")]
    lines += ["  [%s] %-10s %s" % ("ok" if c["ok"] else "FAIL", c["check"], c["message"]) for c in checks]
    return "\n".join(lines)


ACKED, REFUSED, UNCLEAR = "acked", "refused", "unclear"


def finding(check, ok, message):
    return {"check": check, "ok": bool(ok), "message": message}


def compare(snap, sent, since_id=0):
    """The rows after since_id against what a test sent: (request, outcome, saldos) per
    transaction, request = (cliente, tipo, valor, descricao), outcome ACKED (answered 200,
    saldos what it returned), REFUSED (a 4xx) or UNCLEAR (no answer or a 5xx: it may have
    committed). Findings: count (rows == the 200s + the unclear ones that committed), acked
    (every 200 stored), extra (nothing stored twice, refused, never sent, or with another
    client, tipo or valor), unanswered (when some: rows of unclear requests, allowed),
    saldos (each returned balance is the replay's right after its row). Returns (findings,
    {"stored": {request: [row ids]}, "rows", "acked", "missing", "twice": counts})."""
    new_rows = [r for r in snap.rows if r[0] > since_id]
    stored = defaultdict(list)
    for rid, cid, valor, tipo, descr, _ in new_rows:
        stored[(cid, tipo, valor, descr)].append(rid)
    acked, told = defaultdict(list), defaultdict(Counter)
    for request, outcome, saldos in sent:
        told[outcome][request] += 1
        if outcome == ACKED:
            acked[request] += saldos
    n_acked = sum(len(v) for v in acked.values())
    missing, maybe = [], []
    extra = {"stored twice": [], "stored although refused": [], "never sent": []}
    for request in set(stored) | set(acked):
        s, a, unclear = len(stored.get(request, ())), len(acked.get(request, ())), told[UNCLEAR][request]
        explained = min(max(s - a, 0), unclear)
        if s < a:
            missing.append((request, a - s))
        if explained:
            maybe.append((request, explained))
        if s - a - explained > 0:
            kind = "stored twice" if a or unclear else "stored although refused" if told[REFUSED][request] else "never sent"
            extra[kind].append((request, s - a - explained))

    def many(lst):
        return sum(n for _, n in lst)

    def fmt(lst):
        return ", ".join("%s x%d" % (k, n) for k, n in sorted(lst)[:MAX_EXAMPLES])

    out = [finding("count", len(new_rows) == n_acked + many(maybe), "%d rows stored by the run, %d transactions answered "
                   "200%s" % (len(new_rows), n_acked, ", %d rows from requests without an answer" % many(maybe) if maybe else "")),
           finding("acked", not missing, "every 200 is stored" if not missing
                   else "%d acknowledged transactions missing: %s" % (many(missing), fmt(missing))),
           finding("extra", not any(extra.values()), "; ".join("%d %s: %s" % (many(v), k, fmt(v)) for k, v in extra.items() if v)
                   or "nothing stored twice, refused or never sent")]
    if maybe:
        out.append(finding("unanswered", True, "%d rows whose request got no answer or a 5xx (allowed: %s)"
                           % (many(maybe), fmt(maybe))))
    wrong_saldo, compared = [], 0
    for request, saldos in acked.items():
        ids = stored.get(request, [])
        got, want = Counter(x for x in saldos if x is not None), Counter(snap.after_row[i] for i in ids)
        compared += min(len(saldos), len(ids))
        if ids and len(saldos) == len(ids) and got != want:
            wrong_saldo.append((request, sorted(got.elements()), sorted(want.elements())))
    out.append(finding("saldos", not wrong_saldo, "%d returned balances equal the replayed ledger" % compared
                       if not wrong_saldo else "%d transactions whose returned saldo differs from the replay, e.g. %s"
                       % (len(wrong_saldo), wrong_saldo[:3])))
    return out, {"stored": stored, "rows": len(new_rows), "acked": n_acked, "missing": many(missing),
                 "twice": many(extra["stored twice"])}
