#!/usr/bin/env python3
"""A stand-in for the crébitos stack, to test the load test's own tooling.

Python stdlib only: the SPEC.md API on a SQLite file with the Swift server's schema
(clientes, transacoes with realizada_em in microseconds), answering as api01/api02 in
turn. Not fast and not the product: it lets scripts/loadtest, score.py and audit.py be
exercised before the real stack exists, and it can break the ledger on purpose
(--fault) so the tests can show that the audit notices.

    fake_server.py --db /tmp/x.db --port 9999 [--fault lose|dup|ghost|overdraw --every N]
"""
import argparse
import json
import re
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIMITS = {1: 100000, 2: 80000, 3: 1000000, 4: 10000000, 5: 500000}
PATH = re.compile(r"^/clientes/([^/]+)/(transacoes|extrato)$")


def init_db(path):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS clientes (id INTEGER PRIMARY KEY, limite INTEGER NOT NULL,
            saldo INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE IF NOT EXISTS transacoes (id INTEGER PRIMARY KEY, cliente_id INTEGER NOT NULL,
            valor INTEGER NOT NULL, tipo TEXT NOT NULL, descricao TEXT NOT NULL,
            realizada_em INTEGER NOT NULL);
        """
    )
    for cid, lim in LIMITS.items():
        db.execute("INSERT OR IGNORE INTO clientes (id, limite, saldo) VALUES (?, ?, 0)", (cid, lim))
    db.close()


class State:
    def __init__(self, db_path, fault, every):
        self.db_path = db_path
        self.fault = fault
        self.every = every
        self.lock = threading.Lock()
        self.writes = 0
        self.served = 0
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = sqlite3.connect(self.db_path, isolation_level=None, timeout=10)
            c.execute("PRAGMA synchronous=NORMAL")
            self.local.c = c
        return c

    def tick(self):
        with self.lock:
            self.writes += 1
            return self.fault and self.writes % self.every == 0

    def instance(self):
        with self.lock:
            self.served += 1
            return "api01" if self.served % 2 else "api02"


def validate(body):
    try:
        p = json.loads(body)
    except ValueError:
        return None, 400
    if not isinstance(p, dict):
        return None, 422
    v, t, d = p.get("valor"), p.get("tipo"), p.get("descricao")
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v > 2**53:
        return None, 422
    if t not in ("c", "d") or not isinstance(d, str) or not 1 <= len(d) <= 10:
        return None, 422
    return (v, t, d), 200


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    state: State = None

    def log_message(self, *a):
        pass

    def answer(self, status, obj=None):
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-instance", self.state.instance())
        self.end_headers()
        self.wfile.write(data)

    def client(self):
        m = PATH.match(self.path)
        if not m:
            return None, None
        try:
            cid = int(m.group(1))
        except ValueError:
            return None, m.group(2)
        return (cid if cid in LIMITS else None), m.group(2)

    def do_GET(self):
        cid, what = self.client()
        if what != "extrato":
            return self.answer(404)
        if cid is None:
            return self.answer(404)
        c = self.state.conn()
        c.execute("BEGIN")
        lim, saldo = c.execute("SELECT limite, saldo FROM clientes WHERE id=?", (cid,)).fetchone()
        rows = c.execute(
            "SELECT valor, tipo, descricao, realizada_em FROM transacoes WHERE cliente_id=? "
            "ORDER BY id DESC LIMIT 10", (cid,)).fetchall()
        c.execute("COMMIT")
        iso = lambda us: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us / 1e6)) + ".%06dZ" % (us % 1000000)
        self.answer(200, {
            "saldo": {"total": saldo, "data_extrato": iso(int(time.time() * 1e6)), "limite": lim},
            "ultimas_transacoes": [
                {"valor": v, "tipo": t, "descricao": d, "realizada_em": iso(r)} for v, t, d, r in rows],
        })

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n)
        cid, what = self.client()
        if what != "transacoes" or cid is None:
            return self.answer(404)
        tx, status = validate(raw)
        if tx is None:
            return self.answer(status)
        valor, tipo, descricao = tx
        s = self.state
        faulty = s.tick()
        c = s.conn()
        c.execute("BEGIN IMMEDIATE")
        lim, saldo = c.execute("SELECT limite, saldo FROM clientes WHERE id=?", (cid,)).fetchone()
        new = saldo + valor if tipo == "c" else saldo - valor
        if new < -lim and not (faulty and s.fault == "overdraw"):
            c.execute("ROLLBACK")
            return self.answer(422)
        c.execute("UPDATE clientes SET saldo=? WHERE id=?", (new, cid))
        now = int(time.time() * 1e6)
        ins = "INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em) VALUES (?,?,?,?,?)"
        c.execute(ins, (cid, valor, tipo, descricao, now))
        if faulty and s.fault == "dup":
            c.execute(ins, (cid, valor, tipo, descricao, now))
            c.execute("UPDATE clientes SET saldo=saldo+? WHERE id=?", (valor if tipo == "c" else -valor, cid))
        if faulty and s.fault == "ghost":
            c.execute(ins, (cid, 1, "c", "fantasma", now))
            c.execute("UPDATE clientes SET saldo=saldo+1 WHERE id=?", (cid,))
        c.execute("ROLLBACK" if faulty and s.fault == "lose" else "COMMIT")
        self.answer(200, {"limite": lim, "saldo": new})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--port", type=int, default=9999)
    ap.add_argument("--fault", choices=["lose", "dup", "ghost", "overdraw"])
    ap.add_argument("--every", type=int, default=100)
    a = ap.parse_args()
    init_db(a.db)
    Handler.state = State(a.db, a.fault, a.every)
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.request_queue_size = 512
    srv.serve_forever()


if __name__ == "__main__":
    main()
