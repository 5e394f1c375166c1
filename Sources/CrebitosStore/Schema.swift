import CrebitosLedger
import GRDB

/// The database schema and the challenge's five clients.
///
/// Table and column names are the challenge's (Portuguese) so that people inspecting the
/// file with the sqlite3 CLI read the same words as in the API.
enum Schema {
    /// The clients every new database starts with (docs/API.md, "The five clients").
    static let initialClients = InitialClients.all

    /// The migrator is run by ``SQLiteLedger/open(_:)`` while it holds the cross-process
    /// lock, because GRDB's migrator is not safe when two processes migrate at once.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: clients, transactions, idempotency keys") { db in
            // The CHECK constraints restate the invariants of docs/API.md so that no code
            // path, and no hand-written SQL in the CLI, can store a broken ledger.
            try db.execute(sql: """
                CREATE TABLE clientes (
                    id     INTEGER PRIMARY KEY,
                    limite INTEGER NOT NULL CHECK (limite >= 0),
                    saldo  INTEGER NOT NULL DEFAULT 0 CHECK (saldo >= -limite)
                ) STRICT;

                CREATE TABLE transacoes (
                    id           INTEGER PRIMARY KEY,
                    cliente_id   INTEGER NOT NULL REFERENCES clientes(id),
                    valor        INTEGER NOT NULL CHECK (valor > 0),
                    tipo         TEXT    NOT NULL CHECK (tipo IN ('c', 'd')),
                    descricao    TEXT    NOT NULL CHECK (length(descricao) BETWEEN 1 AND 10),
                    realizada_em INTEGER NOT NULL -- microseconds since the Unix epoch, UTC
                ) STRICT;

                -- A statement reads the 10 newest rows of one client: walking this index
                -- backwards from the client's last entry costs the same whatever the
                -- number of rows. The rowid (id) is the commit order.
                CREATE INDEX transacoes_por_cliente ON transacoes (cliente_id, id);

                -- The recorded outcome of each request sent with an Idempotency-Key.
                CREATE TABLE idempotency_keys (
                    key          TEXT    PRIMARY KEY,
                    cliente_id   INTEGER NOT NULL,
                    request      TEXT    NOT NULL, -- the request it answered, to detect reuse
                    outcome      TEXT    NOT NULL, -- applied | insufficient_limit | balance_ceiling | unknown_client
                    limite       INTEGER,
                    saldo        INTEGER,
                    created_at   INTEGER NOT NULL
                ) STRICT, WITHOUT ROWID;
                """)
            for client in initialClients {
                try db.execute(
                    sql: "INSERT INTO clientes (id, limite, saldo) VALUES (?, ?, 0)",
                    arguments: [client.id, client.limit])
            }
        }
        migrator.registerMigration("v2: idempotency keys per client, with an expiry index") { db in
            // v1 keyed records by the key alone, so two clients could not use the same
            // key. The client is now part of the key, a record must name an existing
            // client (v1 recorded "unknown client" answers; they are dropped), and
            // created_at is indexed for the cleanup of expired records.
            try db.execute(sql: """
                CREATE TABLE idempotency_keys_v2 (
                    cliente_id   INTEGER NOT NULL REFERENCES clientes(id),
                    key          TEXT    NOT NULL,
                    request      TEXT    NOT NULL, -- the request it answered, to detect reuse
                    outcome      TEXT    NOT NULL, -- applied | insufficient_limit | balance_ceiling
                    limite       INTEGER,
                    saldo        INTEGER,
                    created_at   INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
                    PRIMARY KEY (cliente_id, key)
                ) STRICT, WITHOUT ROWID;

                INSERT INTO idempotency_keys_v2 (cliente_id, key, request, outcome, limite, saldo, created_at)
                SELECT cliente_id, key, request, outcome, limite, saldo, created_at FROM idempotency_keys
                WHERE cliente_id IN (SELECT id FROM clientes) AND outcome <> 'unknown_client';

                DROP TABLE idempotency_keys;
                ALTER TABLE idempotency_keys_v2 RENAME TO idempotency_keys;
                CREATE INDEX idempotency_keys_por_idade ON idempotency_keys (created_at);
                """)
        }
        return migrator
    }
}
