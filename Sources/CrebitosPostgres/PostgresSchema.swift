import CrebitosLedger
import Logging
import PostgresNIO

/// The schema on PostgreSQL: the same tables, columns and constraints as the SQLite file
/// (CrebitosStore's Schema), in PostgreSQL's types, plus `clientes.ultima_em` (the last
/// `realizada_em` given to the client, see ``PostgresLedger``).
enum PostgresSchema {
    /// The key of the advisory lock that start-up takes: any constant works, as long as
    /// every instance uses the same one (it spells "crebitos" in ASCII, cut to 63 bits).
    static let startupLockKey: Int64 = 0x6372_6562_6974_6F73

    static let statements: [String] = [
        // The CHECK constraints restate the invariants of docs/API.md, as in the SQLite file.
        """
        CREATE TABLE IF NOT EXISTS clientes (
            id        bigint PRIMARY KEY,
            limite    bigint NOT NULL CHECK (limite >= 0),
            saldo     bigint NOT NULL DEFAULT 0,
            ultima_em bigint NOT NULL DEFAULT 0, -- the newest realizada_em of the client
            CHECK (saldo >= -limite)
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS transacoes (
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            cliente_id   bigint NOT NULL REFERENCES clientes(id),
            valor        bigint NOT NULL CHECK (valor > 0),
            tipo         text   NOT NULL CHECK (tipo IN ('c', 'd')),
            descricao    text   NOT NULL CHECK (char_length(descricao) BETWEEN 1 AND 10),
            realizada_em bigint NOT NULL -- microseconds since the Unix epoch, UTC
        )
        """,
        // A statement walks this index backwards from the client's newest entry.
        "CREATE INDEX IF NOT EXISTS transacoes_por_cliente ON transacoes (cliente_id, id)",
        """
        CREATE TABLE IF NOT EXISTS idempotency_keys (
            cliente_id bigint NOT NULL REFERENCES clientes(id),
            key        text   NOT NULL,
            request    text   NOT NULL, -- the request it answered, to detect reuse
            outcome    text   NOT NULL, -- applied | insufficient_limit | balance_ceiling
            limite     bigint,
            saldo      bigint,
            created_at bigint NOT NULL, -- microseconds since the Unix epoch, UTC
            PRIMARY KEY (cliente_id, key)
        )
        """,
        "CREATE INDEX IF NOT EXISTS idempotency_keys_por_idade ON idempotency_keys (created_at)",
    ]

    /// Creates what is missing and seeds the five clients, in one transaction under a
    /// transaction-level advisory lock: instances starting at the same moment on an empty
    /// database take turns (CREATE TABLE IF NOT EXISTS is not safe against a concurrent
    /// CREATE of the same table), the first creates everything, the others find it done.
    /// Existing clients are left as they are (ON CONFLICT DO NOTHING).
    static func prepare(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("BEGIN", logger: logger)
        do {
            try await connection.query("SELECT pg_advisory_xact_lock(\(startupLockKey))", logger: logger)
            for statement in statements {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            for client in InitialClients.all {
                try await connection.query(
                    "INSERT INTO clientes (id, limite, saldo) VALUES (\(client.id), \(client.limit), 0) ON CONFLICT (id) DO NOTHING",
                    logger: logger)
            }
            try await connection.query("COMMIT", logger: logger)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }
}
