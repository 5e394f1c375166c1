"""The tooling's unit tests. SCHEMA is what the server creates in a new SQLite file, as
`sqlite3 FILE .schema` prints it (scripts/stack-test checks that the server still creates
exactly this); the tests build their databases from it, never from a schema of their own."""
import os
import sqlite3

from crebitos_tools.clients import LIMITS

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.sql")


def server_database(path):
    """A SQLite file at path with the server's schema and the five clients at saldo 0, as
    a new stack starts with; an autocommit connection to it."""
    db = sqlite3.connect(path, isolation_level=None)
    with open(SCHEMA) as fh:
        db.executescript(fh.read())
    db.executemany("INSERT INTO clientes (id, limite, saldo) VALUES (?, ?, 0)", LIMITS.items())
    return db
